"""Test helper shared by the CLI tests: run ``uotisp`` and expect one refusal line."""

from __future__ import annotations

import time

from uotisp_lib.cli import main


def one_line_error(capsys, argv: list[str]) -> str:
    """Run ``uotisp argv``: exit code 2 within 5 s (before any long work) and exactly one line on
    stderr, which is returned."""
    t0 = time.perf_counter()
    assert main(argv) == 2
    assert time.perf_counter() - t0 < 5  # refused before any long work
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]
