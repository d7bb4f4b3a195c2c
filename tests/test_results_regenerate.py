"""CI regenerates the committed smoke tables (results/smoke) and fails on a changed cell.

``uotisp reproduce --profile smoke --device cpu`` runs every notebook into a temporary results
folder; :func:`uotisp_lib.regen.compare_tables` then compares each regenerated table with the
committed one: numbers within ``atol + rtol * |committed|`` (rtol = 1e-3, atol = 1e-6), text equal,
timing / thread / version / path columns skipped (``regen.NONDETERMINISTIC``). The executed
notebooks are copied to ``results/smoke/executed/`` (git-ignored) for a look after a failure.

After an intended change of a result: ``make results-smoke`` and commit ``results/smoke``.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from uotisp_lib import regen, reporting

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "results" / "smoke"


def test_tolerance_is_the_stated_one():
    # the numbers this module's docstring and results/smoke/README.md state
    assert (regen.RTOL, regen.ATOL) == (1e-3, 1e-6)
    assert {"seconds", "seconds_match", "mp_per_s"} <= regen.NONDETERMINISTIC


def test_committed_index_is_regenerated_from_the_committed_tables(tmp_path):
    copy = tmp_path / "smoke"
    shutil.copytree(COMMITTED / "tables", copy / "tables")
    if (COMMITTED / "figures").is_dir():  # present after a local run (not committed): not indexed
        shutil.copytree(COMMITTED / "figures", copy / "figures")
    expected = reporting.write_index(copy).read_text()
    assert (COMMITTED / "README.md").read_text() == expected, "results/smoke/README.md is stale: run `make results-smoke`"
    assert "rtol = 0.001, atol = 1e-06" in expected


@pytest.mark.slow
@pytest.mark.notebook
@pytest.mark.xdist_group("results_regenerate")
def test_smoke_tables_regenerate_as_committed(tmp_path, monkeypatch, capsys):
    from uotisp_lib.cli import reproduce

    monkeypatch.setenv("UOTISP_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "smoke"
    parser = reproduce.add_parser(argparse.ArgumentParser().add_subparsers())
    args = parser.parse_args(["--profile", "smoke", "--device", "cpu", "--results-dir", str(out)])
    assert reproduce.run(args) == 0
    executed = sorted(p.name for p in (out / "executed").glob("*.ipynb"))
    assert executed == [p.name for p in reproduce.notebook_paths()]
    keep = COMMITTED / "executed"
    keep.mkdir(parents=True, exist_ok=True)
    for name in executed:
        shutil.copyfile(out / "executed" / name, keep / name)

    diffs = regen.compare_tables(COMMITTED, out)
    with capsys.disabled():
        if diffs:
            print("\n" + regen.format_differences(diffs))
    assert not diffs, (
        regen.format_differences(diffs)
        + "\nIf the change is intended: `make results-smoke` and commit results/smoke."
    )
