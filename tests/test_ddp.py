"""Data-parallel training under torchrun (issue 14): 2 gloo processes on the CPU end where one process
with the same global batch ends, a killed process stops the job with one clear line and the run
resumes (under another number of processes), and ``--amp`` is refused on the CPU.

Tolerance of "the same": every tensor of the final checkpoint (map, EMA, potential, experts /
discriminator) within ``atol=1e-5, rtol=1e-4``, and the history's metrics within ``rtol=1e-4``. The
two runs differ only in floating-point summation order (gradients of two halves summed by the
all-reduce instead of one batch); measured differences are about 1e-7.
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from uotisp_lib import distributed
from uotisp_lib.cli import main
from uotisp_lib.config import get_profile
from uotisp_lib.train import EpochTrainer, UOTTrainConfig, UOTTrainer

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.xdist_group("ddp")]

REPO = Path(__file__).resolve().parent.parent
ATOL, RTOL = 1e-5, 1e-4
#: history columns compared between runs (means over the global batch, or global by construction)
METRICS = ("val_psnr", "val_ssim", "proxy", "map/loss", "map/cost", "potential/loss", "r1", "total")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    from uotisp_lib.data import build_benchmark

    return build_benchmark(tmp_path_factory.mktemp("b") / "smoke", get_profile("smoke").synth, seed=3)


def _torchrun(argv: list[str], nproc: int = 2, wait: bool = True, timeout: float = 240):
    """``torchrun --nproc_per_node=nproc -m uotisp_lib.cli ARGV`` (the interpreter and tree of the tests)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "uotisp_lib.cli", *argv]
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _history(run: Path) -> list[dict]:
    with open(run / "history.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _weights(run: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    latest = (run / "ckpt" / "latest").read_text().strip()
    return load_file(str(run / "ckpt" / latest / "weights.safetensors"))


def _assert_same_run(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert sorted(wa) == sorted(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=ATOL, rtol=RTOL, msg=lambda m: f"{k}: {m}")
    ha, hb = _history(a), _history(b)
    assert [(r["epoch"], r["step"]) for r in ha] == [(r["epoch"], r["step"]) for r in hb]
    for ra, rb in zip(ha, hb):
        for k in METRICS:
            if k in ra:
                assert float(rb[k]) == pytest.approx(float(ra[k]), rel=RTOL, abs=1e-7), (ra["epoch"], k)


# paired mode on half the stems and the colour OT expert: the terms that are not plain means over
# samples; batch 9 of 22 stems: global batches 9, 9, 4, shards 5 + 4, 5 + 4, 2 + 2
UOT_ARGS = ["--mode", "paired", "--set", "paired_fraction=0.5", "--set", "colour_ot=0.5", "--set", "batch_size=9",
            "--device", "cpu"]


def test_uot_two_processes_end_where_one_process_ends(tmp_path, smoke, capsys):
    argv = ["train", "--data", str(smoke), "--set", "epochs=2", *UOT_ARGS]
    assert main(argv + ["--out", str(tmp_path / "one")]) == 0
    res = _torchrun(argv + ["--out", str(tmp_path / "two")])
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith(("train ", "done: "))]
    assert len(lines) == 2 and ", 2 processes -> " in lines[0]  # rank 0 alone prints
    _assert_same_run(tmp_path / "one", tmp_path / "two")
    assert {"paired", "colour_ot", "experts/colour/scale"} <= set(_history(tmp_path / "two")[0])
    assert not any(p.name.startswith(".") and p.name != ".lock" for p in (tmp_path / "two" / "ckpt").iterdir())


def test_pseudo_pairs_two_processes_end_where_one_process_ends(tmp_path, smoke, capsys):
    # stage 2 trains the discriminator too
    argv = ["train", "--trainer", "pseudo-pairs", "--pairs", "random", "--data", str(smoke), "--set", "stage1_epochs=1",
            "--set", "stage2_epochs=1", "--set", "batch_size=9", "--device", "cpu"]
    assert main(argv + ["--out", str(tmp_path / "one")]) == 0
    res = _torchrun(argv + ["--out", str(tmp_path / "two")])
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same_run(tmp_path / "one", tmp_path / "two")
    assert [r["stage2"] for r in _history(tmp_path / "two")] == ["0.0", "1.0"]
    assert "d_loss" in _history(tmp_path / "two")[1]
    # a global batch smaller than the number of processes: one line, from rank 0 only, exit 2
    res = _torchrun(argv + ["--out", str(tmp_path / "bad"), "--set", "batch_size=1"])
    assert res.returncode != 0
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("uotisp train: error:")]
    assert errors == ["uotisp train: error: --set batch_size=1: the global batch is split over 2 processes; "
                      "expected batch_size >= 2"]


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    """PID of the worker of ``rank`` among torchrun's children (from their environment)."""
    for task in Path(f"/proc/{launcher.pid}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in env:
                return int(pid)
    return None


def test_killed_process_stops_the_job_and_the_run_resumes_under_another_process_count(tmp_path, smoke, capsys, monkeypatch):
    argv = ["train", "--data", str(smoke), "--set", "epochs=4", *UOT_ARGS]
    out = tmp_path / "run"
    assert main(argv + ["--out", str(tmp_path / "ref")]) == 0  # uninterrupted, one process
    fit = EpochTrainer.fit
    with monkeypatch.context() as m:  # one process trains the first epoch and stops
        m.setattr(EpochTrainer, "fit", lambda self, **kw: fit(self, stop_after_epochs=1, **kw))
        assert main(argv + ["--out", str(out)]) == 0
    assert (out / "ckpt" / "latest").read_text().strip() == "step-00000003"
    # two processes resume it; rank 1 is killed once epoch 2 is checkpointed
    job = _torchrun(argv + ["--out", str(out)], wait=False)
    t0 = time.monotonic()
    while (out / "ckpt" / "latest").read_text().strip() != "step-00000006":
        assert job.poll() is None and time.monotonic() - t0 < 180, job.communicate()[1][-3000:]
        time.sleep(0.005)
    victim = _rank_pid(job, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = job.communicate(timeout=120)
    assert job.returncode != 0
    assert "resumed from step 3 (config hash " in stdout and ", epoch 1/4" in stdout
    lines = [ln for ln in re.split(r"[\r\n]", stderr) if ln.startswith("uotisp train: error:")]  # \r: after a bar
    assert len(lines) == 1, stderr[-3000:]
    assert re.fullmatch(r"uotisp train: error: process 0 of 2 (lost contact with another process \(it died or was killed\)"
                        r"|stopped by a signal \(exit \d+\): another process failed or the job was interrupted); the job "
                        r"stops\. Last checkpoint: step-000000(06|09); run the same command again to resume", lines[0]), lines[0]
    assert len(_history(out)) < 4
    # the same command in one process resumes and ends where the uninterrupted run ended
    assert main(argv + ["--out", str(out)]) == 0
    assert re.search(r"^resumed from step (6|9) \(config hash ", capsys.readouterr().out, re.M)
    _assert_same_run(tmp_path / "ref", out)


# ------------------------------------------------------------------------------------- --amp


def test_amp_is_refused_on_the_cpu_in_one_line(tmp_path, smoke, capsys):
    for mode in ("bf16", "fp16"):
        t0 = time.perf_counter()
        assert main(["train", "--data", str(smoke), "--out", str(tmp_path / "r"), "--device", "cpu", "--amp", mode]) == 2
        assert time.perf_counter() - t0 < 5
        assert capsys.readouterr().err.strip() == (
            f"uotisp train: error: --amp {mode}: mixed precision needs a CUDA device (got --device cpu); "
            "CPU training stays float32, expected --amp off")
    assert not (tmp_path / "r").exists()


def _tiny_trainer(tmp_path) -> UOTTrainer:
    from uotisp_lib.data.datasets import PatchSet
    from uotisp_lib.uot import UOTConfig

    g = torch.Generator().manual_seed(0)
    raw = PatchSet(tuple(f"r_{i}" for i in range(4)), torch.rand(4, 4, 8, 8, generator=g))
    tgt = PatchSet(tuple(f"t_{i}" for i in range(4)), torch.rand(4, 3, 16, 16, generator=g))
    cfg = UOTTrainConfig(arch="tinyraw", epochs=1, batch_size=4, potential_width=4, expert_width=4,
                         uot=UOTConfig(tau=1.0, r1_gamma=1.0))
    return UOTTrainer(cfg, raw, tgt, tmp_path)


@pytest.mark.parametrize("mode, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_amp_plumbing_autocasts_the_forward_passes_and_scales_fp16(tmp_path, mode, dtype):
    t = _tiny_trainer(tmp_path)
    with pytest.raises(ValueError, match=rf"^--amp {mode}: mixed precision needs a CUDA device \(got cpu\)"):
        t.set_amp(mode)
    with pytest.raises(ValueError, match=r"^--amp fp8: expected one of off, bf16, fp16$"):
        t.set_amp("fp8")
    t.set_amp(mode, allow_cpu=True)  # CPU autocast, only to exercise the plumbing here
    seen = []
    t.model.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    steps = 0
    # fp16: the GradScaler skips the steps whose scaled gradients overflow and halves its scale
    while all(torch.equal(before[k], v) for k, v in t.model.state_dict().items()) and steps < 20:
        logs = t.train_step(list(t.sources.stems), 0)
        steps += 1
        assert all(torch.isfinite(torch.tensor(v)) for v in logs.values()), logs
    assert dtype in seen  # the training forward passes ran in the low precision
    after = t.model.state_dict()
    assert all(after[k].dtype == torch.float32 for k in after)  # the weights stay float32
    assert any(not torch.equal(before[k], after[k]) for k in after)  # and were updated
    if mode == "fp16":
        assert sorted(t._scalers) == ["experts", "map", "potential"]
        scale = t._scalers["map"].get_scale()
        assert scale == 65536.0 / 2 ** (steps - 1)  # halved once per skipped step
        assert t.committee.norm_loss_scale == scale  # the committee's norms are taken on the scaled losses
    else:
        assert t._scalers is None and steps == 1
    t.set_amp("off")
    assert t._scalers is None and t.autocast().__class__.__name__ == "nullcontext"


# ------------------------------------------------------------------------------------- helpers


def test_shards_partition_every_global_batch_and_single_process_helpers_are_identities():
    for n in range(1, 30):
        for ranks in (1, 2, 3, 8):
            bounds = [distributed.shard_bounds(n, ranks, r) for r in range(ranks)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, disjoint
            assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1
    assert not distributed.is_distributed() and (distributed.rank(), distributed.world_size()) == (0, 1)
    assert distributed.global_norms([3.0, 4.0], 1.0) == [3.0, 4.0]
    assert distributed.sum_dicts({"a": 1.5}) == {"a": 1.5}
    x = torch.arange(3.0)
    assert distributed.gather_batch(x) is x and distributed.all_reduce_mean(2.5) == 2.5


def test_a_last_batch_smaller_than_the_process_count_is_dropped(tmp_path, monkeypatch):
    t = _tiny_trainer(tmp_path)  # 4 stems
    t.batch_size = 3  # global batches 3 + 1
    assert t.steps_per_epoch == 2
    monkeypatch.setattr(distributed, "world_size", lambda: 2)
    assert t.steps_per_epoch == 1  # a batch of 1 cannot be split over 2 processes: dropped
    t.batch_size = 2
    assert t.steps_per_epoch == 2
    monkeypatch.setattr(distributed, "shard_bounds", lambda n: (2, 3))  # the last rank's rows of 3
    t.shard_for(3)
    assert (t.share, t.local_rows(torch.arange(3)).tolist()) == (1 / 3, [2])
