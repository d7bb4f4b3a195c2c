from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from uotisp_lib import config


def test_profiles_are_frozen_and_ordered_by_size():
    sizes = [config.get_profile(p).synth.patch for p in config.PROFILES]
    assert sizes == sorted(sizes) and sizes[-1] == 256  # full = the challenge's RAW patch side
    prof = config.get_profile("smoke")
    with pytest.raises(dataclasses.FrozenInstanceError):
        prof.name = "x"  # type: ignore[misc]
    assert set(config.get_profile("full").synth.layouts) == set(config.CHALLENGE_LAYOUTS)


def test_unknown_profile_names_the_choices():
    with pytest.raises(ValueError, match="unknown profile 'gpu'; expected one of smoke, cpu, full"):
        config.get_profile("gpu")


def test_device_auto_is_cpu_without_cuda():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert config.resolve_device("auto") == expected
    assert config.resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            config.resolve_device("cuda")


def test_seed_everything_repeats_all_generators():
    config.seed_everything(7)
    a = (np.random.rand(3), torch.rand(3))
    rng = config.seed_everything(7)
    b = (np.random.rand(3), torch.rand(3))
    np.testing.assert_array_equal(a[0], b[0])
    assert torch.equal(a[1], b[1])
    assert rng.integers(0, 2**31) == np.random.default_rng(7).integers(0, 2**31)


def test_resolve_run_synthetic_default_and_real_root(tmp_path, monkeypatch):
    monkeypatch.setenv("UOTISP_CACHE", str(tmp_path / "cache"))
    run = config.resolve_run("smoke", data_root="", seed=3, results_dir=tmp_path / "res")
    assert run.synthetic and run.data_root == tmp_path / "cache" / "synth" / "smoke-seed3"
    assert run.tables_dir == tmp_path / "res" / "tables"
    real = config.resolve_run("cpu", data_root=str(tmp_path / "upisp"))
    assert not real.synthetic and real.data_root == tmp_path / "upisp"
    assert real.results_dir.name == "cpu"


def test_start_run_takes_notebook_literals_and_seeds(tmp_path, monkeypatch):
    monkeypatch.setenv("UOTISP_CACHE", str(tmp_path / "cache"))
    run = config.start_run("smoke", "", "cpu", 5, "")
    assert run.synthetic and run.seed == 5 and run.device == "cpu"
    assert run.results_dir == config.default_results_root() / "smoke"  # "" is the default, not the cwd
    first = torch.rand(3)
    config.start_run("smoke", "", "cpu", 5, str(tmp_path / "res"))
    torch.testing.assert_close(torch.rand(3), first)


def test_run_metadata_is_json_with_versions(tmp_path):
    run = config.resolve_run("smoke", results_dir=tmp_path)
    meta = json.loads(config.dumps(config.run_metadata(run, backend="malvar")))
    assert meta["backend"] == "malvar"
    assert meta["run"]["seed"] == 0 and meta["run"]["profile"]["synth"]["patch"] == 32
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0] or meta["versions"]["torch"].startswith(
        torch.__version__.split("+")[0]
    )


def test_run_metadata_saves_paths_without_this_machines_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("UOTISP_CACHE", str(tmp_path / "cache"))
    run = config.resolve_run("smoke", results_dir=config.default_results_root() / "smoke")
    meta = json.loads(config.dumps(config.run_metadata(run)))
    assert meta["run"]["data_root"] == "<cache>/synth/smoke-seed0"
    assert meta["run"]["results_dir"] == "results/smoke"
    assert config.portable_path(Path.home() / "x" / "y") == "~/x/y"
    assert config.portable_path("/") == "/"
    # the RunConfig itself keeps the real paths
    assert run.data_root == tmp_path / "cache" / "synth" / "smoke-seed0"
