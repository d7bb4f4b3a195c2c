"""The ``uotisp`` command. One module per subcommand, each with ``add_parser(sub)`` and ``run(args)``.

Subcommands: synth, stitch, match, infer, reproduce. Every subcommand takes ``--threads N`` and runs
inside :func:`uotisp_lib.threads.use_threads`. Subcommand modules import torch (and other heavy
libraries) inside ``run``, never at module level, so ``uotisp --help`` loads no torch.
"""

from __future__ import annotations

import argparse
import importlib
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
    "infer": "infer",
    "reproduce": "reproduce",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="uotisp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
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
        print(f"uotisp {args.command}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
