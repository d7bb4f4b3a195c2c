"""The ``uotisp`` command. One module per subcommand, each with ``add_parser(sub)`` and ``run(args)``.

Subcommands: synth, stitch, match, train, eval, infer, reproduce. Every subcommand takes ``--threads N`` and runs
inside :func:`uotisp_lib.threads.use_threads`. Subcommand modules import torch (and other heavy
libraries) inside ``run``, never at module level, so ``uotisp --help`` loads no torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

from uotisp_lib.cli.common import add_threads_option
from uotisp_lib.threads import use_threads

#: subcommand name -> module under uotisp_lib.cli
SUBCOMMANDS = {
    "synth": "synth",
    "stitch": "stitch",
    "match": "match",
    "train": "train",
    "eval": "eval",
    "infer": "infer",
    "reproduce": "reproduce",
}


#: what ``uotisp --help`` tells a user (the module docstring is for developers)
DESCRIPTION = """Learn a camera ISP (packed RAW -> sRGB) with optimal transport, and use it.

A typical session: `uotisp synth` (or bring a UP-ISP folder: train/raws, train/jpegs, test/raws),
`uotisp train --data DIR --out RUN`, `uotisp eval --checkpoint RUN/export --data DIR`,
`uotisp infer --checkpoint RUN/export --input RAWS --output PNGS`.
Run `uotisp COMMAND --help` for the options of each command."""


def build_parser() -> argparse.ArgumentParser:
    from uotisp_lib import __version__

    parser = argparse.ArgumentParser(prog="uotisp", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"uotisp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    for name, module in SUBCOMMANDS.items():
        mod = importlib.import_module(f"uotisp_lib.cli.{module}")
        p = mod.add_parser(sub)
        add_threads_option(p)
        p.set_defaults(_run=mod.run)
    return parser


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM -> SystemExit, so that ``finally`` blocks remove temporary folders."""
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code. Errors that are the user's are one line."""
    args = build_parser().parse_args(argv)
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if main_thread else None
    try:
        with use_threads(args.threads):
            return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # bad input: one clear line, no traceback
        if os.environ.get("RANK", "0") in ("", "0"):  # under torchrun every process checks; rank 0 says it
            print(f"uotisp {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
