"""The ``uotisp`` command. One module per subcommand, each with ``add_parser(sub)`` and ``run(args)``.

Subcommands: synth, stitch, match, infer, reproduce.
"""

from __future__ import annotations

import argparse
import importlib
import sys

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
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code. Errors that are the user's are one line."""
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:  # bad input: one clear line, no traceback
        print(f"uotisp {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
