"""Checks and helpers shared by the subcommands: options checked before any work, and folders
published whole (written beside the destination, then renamed onto it)."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path


def device(value: str, option: str = "--device") -> str:
    """:func:`uotisp_lib.config.resolve_device` with a one-line ValueError naming ``option``."""
    from uotisp_lib.config import resolve_device

    try:
        return resolve_device(value)
    except (RuntimeError, ValueError) as err:
        detail = str(err).split("\n")[0] if isinstance(err, ValueError) else "unknown device type"
        raise ValueError(f"{option} {value!r}: {detail}; expected auto, cpu, cuda, cuda:N or mps") from None


def at_least(value: int, low: int, option: str) -> int:
    """``value`` unless it is below ``low`` (ValueError naming ``option``)."""
    if value < low:
        raise ValueError(f"{option} {value}: expected an integer >= {low}")
    return value


def add_threads_option(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``--threads N`` (intra-op threads, :mod:`uotisp_lib.threads`) unless ``parser`` has it.

    ``uotisp`` runs every subcommand inside ``use_threads(args.threads)``; the default (``None``)
    is :func:`uotisp_lib.threads.default_threads`: ``$OMP_NUM_THREADS``, else the free cores."""
    if "--threads" not in parser._option_string_actions:
        parser.add_argument(
            "--threads",
            type=int,
            default=None,
            metavar="N",
            help="intra-op threads (default: $OMP_NUM_THREADS, else the cores not busy: cores - load average)",
        )
    return parser


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_fresh_folder(path: Path, option: str, overwrite: bool) -> None:
    """Refuse a non-empty ``path`` (stale files would mix with new ones) unless ``overwrite``."""
    if path.exists() and not is_empty_dir(path) and not overwrite:
        raise ValueError(f"{option} {path}: folder exists and is not empty; expected a new or empty folder (or --overwrite)")


def publish_dir(tmp: Path, dst: Path) -> None:
    """Rename the complete folder ``tmp`` onto ``dst``; an existing ``dst`` is moved aside first and
    deleted after, so ``dst`` holds either the old result or the new one, never a mix."""
    from uotisp_lib.io import make_temp_dir

    if is_empty_dir(dst):
        dst.rmdir()
    old = None
    if dst.exists():
        old = make_temp_dir(dst, "old")
        os.replace(dst, old / dst.name)
    os.replace(tmp, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
