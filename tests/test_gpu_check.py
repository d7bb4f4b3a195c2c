"""The offline GPU check's plumbing (issue 14, part 6), without a GPU, notebooks or downloads:
the wheelhouse's pin list, the no-CUDA refusal, the table and the step runner's timeout."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


wheelhouse = _load("wheelhouse")
gpu_check = _load("gpu_check")

FREEZE = """\
absl-py==2.5.1
colour-demosaicing==0.2.7
cuda-bindings==13.5.0
cuda-toolkit==13.0.3.0
Jinja2==3.1.6
numpy==2.4.6
nvidia-cublas==13.1.1.3
nvidia_cudnn_cu13==9.24.0.43
pip==26.3
POT==0.9.7.post1
pytorch-triton==3.1.0
setuptools==80.10.2
torch==2.14.1
torchvision==0.29.1
triton==3.8.0
typing_extensions==4.16.0
# Editable Git install with no remote (uotisp==0.1.0)
-e /work/main
uotisp @ file:///work/main
"""


def test_freeze_filter_drops_the_torch_stack_pip_and_the_project():
    assert wheelhouse.filter_freeze(FREEZE.splitlines()) == [
        "absl-py==2.5.1", "colour-demosaicing==0.2.7", "Jinja2==3.1.6", "numpy==2.4.6", "POT==0.9.7.post1",
        "setuptools==80.10.2", "typing_extensions==4.16.0",
    ]
    # restricted to the run-time closure (normalised names): absl-py is not needed
    needed = {"colour-demosaicing", "jinja2", "numpy", "pot", "setuptools", "typing-extensions", "torch", "uotisp"}
    assert wheelhouse.filter_freeze(FREEZE.splitlines(), needed=needed) == [
        "colour-demosaicing==0.2.7", "Jinja2==3.1.6", "numpy==2.4.6", "POT==0.9.7.post1", "setuptools==80.10.2",
        "typing_extensions==4.16.0",
    ]


def test_freeze_filter_refuses_a_direct_reference():
    with pytest.raises(ValueError, match=r"^'mynet @ file:///src/mynet': not a name==version pin"):
        wheelhouse.filter_freeze(["numpy==2.4.6", "mynet @ file:///src/mynet"])


def test_install_list_leaves_torch_and_its_installed_deps_alone():
    pins = ["filelock==4.3.1", "Jinja2==3.1.6", "numpy==2.4.6", "sympy==1.14.0", "torch==2.14.1", "uotisp==0.1.0"]
    assert gpu_check.install_list(pins, keep={"jinja2", "sympy", "filelock"}) == ["numpy==2.4.6", "uotisp==0.1.0"]


def test_without_cuda_the_check_refuses_in_one_line_and_exits_2():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--no-install"],
                         capture_output=True, text=True, timeout=120, env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    lines = res.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("gpu-check: no CUDA device (torch ")
    assert lines[0].endswith("torch.cuda.is_available() is False); nothing checked (--allow-cpu runs the same steps on the CPU)")


def test_cpu_run_may_not_write_the_gpu_table():
    res = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--no-install", "--allow-cpu",
                          "--out", str(REPO / "results" / "gpu_check.md")],
                         capture_output=True, text=True, timeout=120, env={"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 2
    assert res.stderr.strip() == "gpu-check: results/gpu_check.md is for a GPU run; a CPU run writes elsewhere (--out)"


def test_table_formatter():
    rows = [
        gpu_check.Row("install", "-", 12.345, "ok (140 packages)"),
        gpu_check.Row("notebook 00_data", "cuda", 7.04, "ok"),
        gpu_check.Row("amp fp16", "cpu", 0.0, "skipped: CPU (mixed precision is CUDA only)"),
        gpu_check.Row("ddp train", "cuda", 180.0, "failed: exit 1 | see log"),
    ]
    assert gpu_check.format_table(rows) == (
        "| step | device | seconds | status |\n"
        "|---|---|---:|---|\n"
        "| install | - | 12.3 | ok (140 packages) |\n"
        "| notebook 00_data | cuda | 7.0 | ok |\n"
        "| amp fp16 | cpu | 0.0 | skipped: CPU (mixed precision is CUDA only) |\n"
        "| ddp train | cuda | 180.0 | failed: exit 1 \\| see log |\n"
    )
    assert [r.ok for r in rows] == [True, True, True, False]


def test_step_runner_records_a_timeout_as_a_failed_row():
    row = gpu_check.run_step("sleepy", "cpu", [sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"],
                             timeout=1.0)
    assert row.step == "sleepy" and row.device == "cpu"
    assert row.status == "failed: timeout after 1 s"
    assert not row.ok
    assert 1.0 <= row.seconds < 10.0
    assert row.output.strip() == "up"


def test_step_runner_records_exit_status_and_success():
    bad = gpu_check.run_step("bad", "cpu", [sys.executable, "-c", "import sys; sys.exit(3)"], timeout=30)
    assert bad.status == "failed: exit 3" and not bad.ok
    good = gpu_check.run_step("good", "cpu", [sys.executable, "-c", "print('hi')"], timeout=30)
    assert good.status == "ok" and good.ok and good.output == "hi\n"
    assert gpu_check.run_step("late", "cpu", [sys.executable, "-c", "pass"], timeout=0).status == \
        "failed: no time left in the budget"


def test_history_check(tmp_path):
    hist = tmp_path / "history.csv"
    hist.write_text("epoch,step,map/loss,total,val_psnr\n1,3,0.5,0.7,20.1\n2,6,0.4,0.6,21.0\n")
    assert gpu_check.history_ok(hist, 2) == ""
    assert gpu_check.history_ok(hist, 3) == "2 epochs in history.csv, expected 3"
    hist.write_text("epoch,step,map/loss,total\n1,3,nan,0.7\n")
    assert gpu_check.history_ok(hist, 1) == "epoch 1: map/loss = nan"


@pytest.mark.parametrize("mode, dtype", [("bf16", "torch.bfloat16"), ("fp16", "torch.float16")])
def test_amp_probe_runs_one_isp_under_autocast(mode, dtype):
    # on the CPU here (the check itself runs it on CUDA only): five finite, falling losses, every step taken
    import math

    import torch

    torch.set_num_threads(1)
    r = gpu_check.amp_probe(mode, "cpu")
    assert r["output_dtypes"] == [dtype]
    assert len(r["losses"]) == 5 and all(math.isfinite(v) for v in r["losses"])
    assert r["losses"][-1] < r["losses"][0]
    assert r["steps_taken"] == 5
    assert r["cuda_max_memory"] == 0
