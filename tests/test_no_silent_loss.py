"""No silent loss (issue 12): run locks, exports that follow their checkpoint, checkpoint fallback,
whole-or-nothing outputs, temporary folders cleaned, output paths and options checked first.

The kill tests run tests/workers.py in a real subprocess and kill it with SIGKILL at a chosen
point (a hook calls ``kill -9`` on itself), then resume or rerun.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import uotisp_lib
from cli_helpers import one_line_error
from uotisp_lib import io as uio
from uotisp_lib.checkpoint import CheckpointError, RunLockedError, run_lock
from uotisp_lib.cli import main
from uotisp_lib.inference import export_isp, load_isp, stale_export
from uotisp_lib.models import build_isp

sys.path.insert(0, str(Path(__file__).parent))
from workers import tiny_trainer, weights_sha  # noqa: E402

WORKER = Path(__file__).with_name("workers.py")
REPO = Path(uotisp_lib.__file__).resolve().parents[1]


def _spawn(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    p = _spawn(*args)
    out, err = p.communicate(timeout=timeout)
    return subprocess.CompletedProcess(p.args, p.returncode, out, err)


def _meta(export: Path) -> dict:
    return json.loads((export / "isp.json").read_text())["meta"]


@pytest.fixture(scope="module")
def reference_sha(tmp_path_factory):
    """Weights of an uninterrupted tiny run (in this process, one torch thread like the workers)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = tiny_trainer(tmp_path_factory.mktemp("ref") / "run")
        trainer.fit()
        return weights_sha(trainer.model)
    finally:
        torch.set_num_threads(n)


# ------------------------------------------------------------------------------------- training


def test_kill_mid_epoch_then_resume_is_bit_identical(tmp_path, reference_sha):
    run = tmp_path / "run"
    killed = _run("train", str(run), "--kill-at-step", "4")  # step 4 of 6: in the second epoch
    assert killed.returncode == -signal.SIGKILL
    assert (run / "ckpt" / "latest").read_text().strip() == "step-00000003"
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # as the worker
    try:
        resumed = tiny_trainer(run)
        resumed.fit()
    finally:
        torch.set_num_threads(n)
    assert weights_sha(resumed.model) == reference_sha
    assert _meta(run / "export")["step"] == 6


def test_kill_between_checkpoint_and_export_rebuilds_the_export(tmp_path, capsys):
    run = tmp_path / "run"
    killed = _run("train", str(run), "--kill-before-export")
    assert killed.returncode == -signal.SIGKILL
    assert (run / "ckpt" / "latest").read_text().strip() == "step-00000006"
    assert _meta(run / "export") == {**_meta(run / "export"), "epoch": 1, "step": 3}  # one epoch behind
    # infer warns when handed the stale export
    src = tmp_path / "in"
    rng = np.random.default_rng(0)
    for i in range(4):
        uio.save_raw(src / f"img_{i}.npy", rng.integers(0, 1024, (8, 8, 4), dtype=np.uint16))
    assert main(["infer", "--checkpoint", str(run / "export"), "--input", str(src), "--output", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert f"{run / 'export'}: export is from step 3 but its run has a checkpoint at step 6" in err
    # the rerun (nothing left to train) rebuilds the export from the final checkpoint
    trainer = tiny_trainer(run)
    trainer.fit()
    meta = _meta(run / "export")
    assert (meta["epoch"], meta["step"], meta["role"]) == (2, 6, "latest")
    assert stale_export(run / "export") is None
    torch.testing.assert_close(load_isp(run / "export").model.state_dict(), trainer.model.state_dict(), rtol=0, atol=0)


def test_two_concurrent_trainings_the_second_is_refused_naming_the_holder(tmp_path):
    run, go = tmp_path / "run", tmp_path / "go"
    first = _spawn("train", str(run), "--lr", "0.005", "--wait", str(go))
    try:
        assert first.stdout.readline().strip() == "waiting"  # inside its first step, before any checkpoint
        with pytest.raises(RunLockedError) as info:  # a second training, another learning rate
            tiny_trainer(run, lr=1e-3).fit()
    finally:
        go.touch()
        out, err = first.communicate(timeout=60)
    assert str(info.value) == (
        f"{run}: run folder in use by another training (PID {first.pid}); wait for it or use another run folder"
    )
    assert first.returncode == 0, err
    saved = torch.load(run / "ckpt" / "step-00000006" / "state.pt", weights_only=False)
    assert saved["extra"]["config"]["lr"] == 0.005


def test_run_lock_is_exclusive_and_released(tmp_path):
    with run_lock(tmp_path):
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(RunLockedError, match=f"PID {os.getpid()}"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # released
        pass


@pytest.mark.parametrize("bad", ["weights.safetensors", "state.pt"])
def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, bad):
    first = tiny_trainer(tmp_path / "run")
    first.fit()
    latest = tmp_path / "run" / "ckpt" / "step-00000006" / bad
    with open(latest, "r+b") as fh:
        fh.truncate(latest.stat().st_size // 2)
    again = tiny_trainer(tmp_path / "run")
    with pytest.warns(RuntimeWarning, match=f"{latest}: truncated or damaged.*resuming from step-00000003"):
        again.fit()
    assert weights_sha(again.model) == weights_sha(first.model)  # epoch 2 retrained identically
    assert again.state.step == 6


def test_no_intact_checkpoint_names_every_bad_file(tmp_path):
    tiny_trainer(tmp_path / "run").fit()
    for p in (tmp_path / "run" / "ckpt").glob("step-*/weights.safetensors"):
        p.write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointError, match="no intact checkpoint") as info:
        tiny_trainer(tmp_path / "run").fit()
    assert "step-00000003/weights.safetensors" in str(info.value) and "step-00000006/weights.safetensors" in str(info.value)


# ----------------------------------------------------------------------------------------- infer


@pytest.fixture()
def infer_setup(tmp_path):
    """An export and an input folder of two images (6 and 4 patches) of random RAW."""
    export_isp(tmp_path / "isp", build_isp("colornet"), "colornet")
    src = tmp_path / "in"
    rng = np.random.default_rng(1)
    for image, n in (("a", 6), ("b", 4)):
        for i in range(n):
            uio.save_raw(src / f"{image}_{i}.npy", rng.integers(0, 1024, (8, 8, 4), dtype=np.uint16))
    return tmp_path / "isp", src


def _infer(isp: Path, src: Path, out: Path, *extra: str) -> list[str]:
    return ["infer", "--checkpoint", str(isp), "--input", str(src), "--output", str(out), "--patches", *extra]


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_infer_killed_during_its_move_leaves_nothing_partial(tmp_path, infer_setup):
    isp, src = infer_setup
    assert main(_infer(isp, src, tmp_path / "ref")) == 0
    whole = _files(tmp_path / "ref")
    assert len(whole) == 12  # 2 stitched images + 10 patches
    out = tmp_path / "out"
    # killed (SIGKILL) as it moves its first file or folder into the output folder
    r = _run("cli", "--kill-before-move", "1", "--into", str(out), "--", *_infer(isp, src, out))
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert not out.exists(), _files(out)  # not an empty or partial folder
    assert len(list(tmp_path.glob(".out.tmp-*"))) == 1  # SIGKILL leaves the temporary folder ...
    assert main(_infer(isp, src, out)) == 0  # ... which the next run removes
    assert _files(out) == whole and not list(tmp_path.glob(".out.*"))


def test_infer_refuses_a_non_empty_output_unless_overwrite(tmp_path, infer_setup, capsys):
    isp, src = infer_setup
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.png").write_bytes(b"old")
    assert main(_infer(isp, src, out)) == 2
    assert capsys.readouterr().err.strip() == (
        f"uotisp infer: error: --output {out}: folder exists and is not empty; expected a new or empty folder (or --overwrite)"
    )
    assert main(_infer(isp, src, out, "--overwrite")) == 0
    assert "stale.png" not in _files(out) and len(_files(out)) == 12
    assert main(_infer(isp, src, src, "--overwrite")) == 2  # never replaces its own input
    assert "must not be or contain the input folder" in capsys.readouterr().err


def test_sigterm_removes_the_temporary_folder(tmp_path):
    out = tmp_path / "bench"
    p = _spawn("cli", "--hang", "uotisp_lib.data.synth:write_image", "--", "synth", "--out", str(out))
    assert p.stdout.readline().strip() == "hanging"
    assert len(list(tmp_path.glob(".bench.tmp-*"))) == 1
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == 128 + signal.SIGTERM
    assert not list(tmp_path.iterdir())


def test_next_run_removes_temporary_folders_of_dead_processes_only(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = uio._host_tag()
    stale = tmp_path / f".x.tmp-{dead.pid}-{host}-abc"
    live = tmp_path / f".x.tmp-{os.getppid()}-{host}-abc"
    other = tmp_path / f".y.tmp-{dead.pid}-{host}-abc"
    for d in (stale, live, other):
        (d / "sub").mkdir(parents=True)
    assert uio.clean_stale_temps(tmp_path, "x") == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name])


# --------------------------------------------------------------------- output paths, one line, exit 2


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from uotisp_lib.config import get_profile
    from uotisp_lib.data import build_benchmark

    return build_benchmark(tmp_path_factory.mktemp("b") / "smoke", get_profile("smoke").synth, seed=3)




def test_output_under_a_regular_file_is_refused_first(tmp_path, smoke, infer_setup, capsys):
    isp, src = infer_setup
    (tmp_path / "file").write_text("x")
    bad = tmp_path / "file" / "sub"
    cases = {
        "stitch": ["stitch", "--input", str(src), "--output", str(bad)],
        "infer": ["infer", "--checkpoint", str(isp), "--input", str(src), "--output", str(bad)],
        "match": ["match", "--data", str(smoke), "--out", str(bad / "g.npz")],
        "synth": ["synth", "--out", str(bad)],
    }
    for cmd, argv in cases.items():
        line = one_line_error(capsys, argv)
        assert line.startswith(f"uotisp {cmd}: error: --")
        assert f"{tmp_path / 'file'} is a regular file; expected a folder there" in line
    line = one_line_error(capsys, ["match", "--data", str(tmp_path / "file"), "--out", str(tmp_path / "g.npz")])
    assert f"--data {tmp_path / 'file'}: is not a folder" in line


def _broken_exports(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (export folder, what its one-line error must say)."""
    out = {}
    trunc = export_isp(tmp / "trunc", build_isp("colornet"), "colornet")
    with open(trunc / "model.safetensors", "r+b") as fh:
        fh.truncate(100)
    out["truncated"] = (trunc, f"{trunc / 'model.safetensors'}: not a readable safetensors file")
    arch = export_isp(tmp / "arch", build_isp("colornet"), "colornet")
    spec = json.loads((arch / "isp.json").read_text())
    (arch / "isp.json").write_text(json.dumps({**spec, "arch": "resnet9000"}))
    out["arch"] = (arch, f"{arch / 'isp.json'}: unknown architecture 'resnet9000'; expected one of")
    fit = export_isp(tmp / "fit", build_isp("tinyraw"), "colornet")
    out["fit"] = (fit, f"{fit / 'model.safetensors'}: weights do not fit architecture 'colornet'")
    return out


def test_bad_exports_and_options_are_one_line_naming_the_file_or_option(tmp_path, infer_setup, capsys):
    isp, src = infer_setup
    for export, want in _broken_exports(tmp_path).values():
        line = one_line_error(capsys, ["infer", "--checkpoint", str(export), "--input", str(src), "--output", str(tmp_path / "o")])
        assert want in line, line
    base = ["infer", "--checkpoint", str(isp), "--input", str(src), "--output", str(tmp_path / "o")]
    assert "--device 'tpu': unknown device type" in one_line_error(capsys, base + ["--device", "tpu"])
    assert "--batch 0: expected an integer >= 1" in one_line_error(capsys, base + ["--batch", "0"])
    assert "--png-level 10: expected an integer from 0 to 9" in one_line_error(capsys, base + ["--png-level", "10"])
    assert "--seed -1: expected an integer >= 0" in one_line_error(capsys, ["synth", "--out", str(tmp_path / "s"), "--seed", "-1"])
    assert not (tmp_path / "o").exists() and not (tmp_path / "s").exists()


def test_reproduce_reports_the_failing_notebook_cell_in_one_line(tmp_path, monkeypatch):
    import papermill as pm

    from uotisp_lib.cli.reproduce import NotebookError, run_notebook

    def failing(*args, **kwargs):  # what papermill raises for a failing cell (a 67-line traceback)
        tb = ["Traceback (most recent call last):"] + [f"  frame {i}" for i in range(60)]
        raise pm.PapermillExecutionError(4, 5, "load()", "RawFormatError", "s0001_2.npy: could not\nbe read", tb)

    monkeypatch.setattr(pm, "execute_notebook", failing)
    path = tmp_path / "00_data.ipynb"
    with pytest.raises(NotebookError) as info:
        run_notebook(path, tmp_path / "executed" / path.name, {}, cwd=tmp_path)
    assert str(info.value) == (
        f"00_data.ipynb: cell 4 (In [5]) failed: RawFormatError: s0001_2.npy: could not be read "
        f"(executed notebook: {tmp_path / 'executed' / path.name})"
    )


# ----------------------------------------------------------------------------------- silent input


def test_match_refuses_ground_truth_of_the_wrong_size_before_matching(tmp_path, smoke, capsys):
    from uotisp_lib.data.layouts import scan_upisp

    data = tmp_path / "data"
    shutil.copytree(smoke, data)
    gt = sorted((data / "train" / "gt").glob("*.png"))[0]
    uio.save_image(gt, np.zeros((10, 12, 3), np.uint8))
    line = one_line_error(capsys, ["match", "--data", str(data), "--out", str(tmp_path / "g.npz"), "--no-cache"])
    assert f"{gt}: ground truth is 10x12; expected" in line
    # a target JPEG of another size than its image's other patches is named
    jpg = sorted((data / "train" / "jpegs").glob("*.jpg"))[0]
    uio.save_image(jpg, np.zeros((10, 12, 3), np.uint8))
    lay = scan_upisp(data)
    image_id = jpg.stem.rsplit("_", 1)[0]
    with pytest.raises(uio.ImageFormatError, match=f"{jpg}: shape \\(10, 12, 3\\) differs"):
        lay.read_image("train", "jpegs", image_id)


def test_infer_grid_refuses_nan_and_out_of_range_values():
    from uotisp_lib.stitching import infer_grid

    x = torch.rand(6, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert infer_grid(x).rows * infer_grid(x).cols == 6
    assert infer_grid(x * 1023).rows * infer_grid(x * 1023).cols == 6  # RAW units are fine
    nan = x.clone()
    nan[3, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="patch 3 holds NaN or infinite values"):
        infer_grid(nan)
    with pytest.raises(ValueError, match=r"values span -0\.5\.\.\S+; expected \[0, 1\] \(or raw units 0\.\.1023\)"):
        infer_grid(torch.cat([x[:5], torch.full((1, 4, 8, 8), -0.5)]).clamp(max=1))
    with pytest.raises(ValueError, match=r"values span \S+\.\.2000; expected"):
        infer_grid(torch.cat([x[:5], torch.full((1, 4, 8, 8), 2000.0)]).clamp(min=0))
    with pytest.raises(ValueError, match=r"\(or rgb units 0\.\.255\)"):
        infer_grid(torch.full((4, 3, 8, 8), 300.0), kind="rgb")


# --------------------------------------------------------------------------------------- umask


def test_outputs_respect_the_umask(tmp_path):
    from uotisp_lib.checkpoint import TrainState, save_checkpoint

    old = os.umask(0o027)
    try:
        export_isp(tmp_path / "isp", build_isp("colornet"), "colornet")
        save_checkpoint(tmp_path / "ckpt", TrainState(models={"m": torch.nn.Linear(2, 2)}))
        uio.save_image(tmp_path / "a.png", np.zeros((4, 4, 3), np.uint8))
    finally:
        os.umask(old)
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "a.png") == 0o640
    assert mode(tmp_path / "isp") == 0o750 and mode(tmp_path / "isp" / "model.safetensors") == 0o640
    step = tmp_path / "ckpt" / "step-00000000"
    assert mode(step) == 0o750 and mode(tmp_path / "ckpt" / "latest") == 0o640
