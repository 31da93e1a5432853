"""Silence the import-time noise of compressai's dependencies, and nothing else.

compressai imports torch_geometric, which calls the deprecated ``torch.jit.script`` and emits
DeprecationWarnings while it is imported. These filters match those messages only.
"""

import warnings


def quiet_third_party_imports() -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch_geometric(\.|$)")
    warnings.filterwarnings("ignore", message=r".torch\.jit\.script. is deprecated",
                            category=FutureWarning)
