"""Error types.

Every mistake a user can make (a wrong path, a corrupt checkpoint, an unknown model name) raises a
subclass of :class:`LicqError`; the CLI prints its message as one line and exits non-zero.
"""


class LicqError(Exception):
    """Base class of licq's user-facing errors."""


class CheckpointError(LicqError):
    """A checkpoint file is missing, corrupt, or does not match the architecture."""


class UnknownModelError(LicqError, KeyError):
    """An architecture name that no adapter is registered under."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class DataError(LicqError):
    """An image folder is empty or an image cannot be read."""
