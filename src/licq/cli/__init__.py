"""``licq`` command line: one command, subcommands, CompressAI's ``-a/-q/-m`` flags.

Logs and progress go to stderr, results to files (and tables to stdout). A user mistake ends with
one line on stderr and exit status 2, never a traceback. One module per command group
(:mod:`.eval`, :mod:`.ptq`, :mod:`.qat`, :mod:`.export`, :mod:`.codec`, :mod:`.train`); each adds
its subcommands to the parser and calls the library API that Python users call too.
"""

from __future__ import annotations

import argparse
import sys

from licq.cli import codec, export, ptq, qat, train
from licq.cli import eval as evaluation
from licq.cli._common import EXIT_USER_ERROR

__all__ = ["EXIT_USER_ERROR", "build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="licq", description="mixed-precision quantization of learned "
                                "image codecs: evaluate, quantize, search, train, export, compress")
    sub = p.add_subparsers(dest="command", required=True)
    for group in (evaluation, ptq, qat, export, codec, train):
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from licq.errors import LicqError

    try:
        return int(args.func(args) or 0)
    except (LicqError, ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"licq {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("licq: interrupted", file=sys.stderr)
        return 130
