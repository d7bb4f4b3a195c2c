"""Thread policy (uotisp_lib.threads), ``--threads`` on every subcommand, and lazy start-up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from uotisp_lib import threads as th
from uotisp_lib.cli import SUBCOMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parent.parent


def test_use_threads_sets_and_restores_torch_threads():
    before = torch.get_num_threads()
    other = 3 if before != 3 else 2
    with th.use_threads(other) as n:
        assert n == other and torch.get_num_threads() == other and th.active_threads() == other
        with th.use_threads() as inner:  # None: keeps the enclosing count
            assert inner == other and torch.get_num_threads() == other
        with th.use_threads(1):
            assert torch.get_num_threads() == 1 and th.active_threads() == 1
        assert torch.get_num_threads() == other and th.active_threads() == other
    assert torch.get_num_threads() == before and th.active_threads() is None
    with pytest.raises(RuntimeError, match="boom"):
        with th.use_threads(other):
            raise RuntimeError("boom")
    assert torch.get_num_threads() == before


def test_default_threads_is_the_free_cores_or_the_environment(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    for load, want in ((0.2, 4), (1.4, 3), (2.6, 1), (3.6, 1), (9.0, 1)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, 0.0, 0.0))
        assert th.free_cores() == max(1, 4 - round(load)) and th.default_threads() == want
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert [th.default_threads(workers=w) for w in (1, 2, 3, 4, 8)] == [4, 2, 1, 1, 1]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert th.default_threads() == 2 and th.default_threads(workers=4) == 2  # the user's choice wins
    monkeypatch.setenv("OMP_NUM_THREADS", "0")  # not a usable count: ignored
    assert th.default_threads() == 4
    with pytest.raises(ValueError, match=r"^workers 0: expected an integer >= 1"):
        th.default_threads(workers=0)


def test_every_subcommand_takes_threads():
    parser = build_parser()
    subs = parser._subparsers._group_actions[0].choices
    assert set(subs) == set(SUBCOMMANDS)
    for name, sub in subs.items():
        action = sub._option_string_actions["--threads"]
        assert action.default is None and action.type is int, name


@pytest.mark.parametrize("value", ["0", "-2"])
def test_cli_threads_below_one_is_one_line_and_exit_2(tmp_path, capsys, value):
    code = main(["stitch", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--threads", value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == [f"uotisp stitch: error: --threads {value}: expected an integer >= 1 (threads per process)"]


def test_cli_threads_option_reaches_torch(monkeypatch):
    from uotisp_lib.cli import synth

    seen = []

    def fake_run(args):
        seen.append((args.threads, th.active_threads(), torch.get_num_threads()))
        return 0

    monkeypatch.setattr(synth, "run", fake_run)
    before = torch.get_num_threads()
    other = 3 if before != 3 else 2
    assert main(["synth", "--out", "x", "--threads", str(other)]) == 0
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert main(["synth", "--out", "x"]) == 0  # default: the policy ($OMP_NUM_THREADS here)
    assert seen == [(other, other, other), (None, 1, 1)]
    assert torch.get_num_threads() == before and th.active_threads() is None


def test_match_choices_are_the_library_ones():
    from uotisp_lib import features, matching
    from uotisp_lib.cli import match

    assert match.BACKENDS == features.BACKENDS and match.METHODS == matching.METHODS


def _python(code: str, **env: str) -> str:
    full = {k: v for k, v in os.environ.items() if k not in th.THREAD_ENV}
    full.update(PYTHONPATH=str(ROOT), **env)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_help_and_layouts_only_import_no_torch(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        np.save(src / f"img_{i}.npy", rng.integers(0, 1024, (8, 8, 4), dtype=np.uint16))
    code = f"""
import sys
from uotisp_lib.cli import main
for argv in (["--help"], ["stitch", "--help"], ["infer", "--help"], ["match", "--help"]):
    try:
        main(argv)
    except SystemExit as e:
        assert e.code == 0, argv
assert "torch" not in sys.modules, "help"
assert main(["stitch", "--input", {str(src)!r}, "--output", {str(tmp_path / 'out')!r}, "--layouts-only"]) == 0
assert main(["stitch", "--input", {str(src)!r}, "--output", {str(tmp_path / 'full')!r}]) == 0
print(sorted(m for m in ("torch", "kornia", "pandas", "scipy") if m in sys.modules))
"""
    assert _python(code).strip().splitlines()[-1] == "[]"
    lay, full = (tmp_path / d / "layouts.csv" for d in ("out", "full"))
    assert lay.read_text() == full.read_text() and "img,6," in lay.read_text()


def test_use_threads_before_torch_is_imported_sets_the_environment():
    code = """
import os, sys
from uotisp_lib.threads import use_threads
with use_threads(1):
    assert os.environ["OMP_NUM_THREADS"] == "1"
    import torch
    print(torch.get_num_threads())
print(os.environ.get("OMP_NUM_THREADS"), os.environ.get("MKL_NUM_THREADS"))
"""
    assert _python(code).split() == ["1", "None", "None"]
