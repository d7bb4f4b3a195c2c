"""The ``full`` profile's cost per step and per epoch: counted FLOPs and measured memory of one UOT step.

Usage: ``python benchmarks/bench_full_profile.py [--steps 1] [--batches 2,4] [--arch unet_isp] [--threads 0]``

One :meth:`uotisp_lib.train.UOTTrainer.train_step` of the ``full`` profile's UOT configuration
(:func:`uotisp_lib.study.base_config`: its architecture, widths, cost, committee; sRGB patches
of the profile's patch size) on random data, in float32, at each of ``--batches`` in its own process;
the profile's global batch (32), too large for this machine's memory, is extrapolated linearly
from the two largest (FLOPs and activations grow linearly with the batch):

- **FLOPs**: counted by the torch profiler (``with_flops=True``) over one whole step: every
  convolution and matmul it records (forward and backward of the map, the potential with its R1
  double backward, the experts; 1 MAC = 2 FLOPs; elementwise ops are not counted;
  ``FlopCounterMode`` cannot run over the R1 ``autograd.grad``), times the steps of an epoch on the
  challenge's 13,420 RAW patches (``ceil(13420 / batch)``).
- **Memory**: the peak RSS of this process over a step minus its RSS before the trainer was built
  (``ru_maxrss``): the float32 weights, optimiser states, activations and gradients of a step, what
  a GPU holds on the device for the same step (plus the CUDA context and allocator slack, not
  measured here).
- **Time**: the step's wall seconds on this machine, and the epoch time implied at several
  *assumed* sustained GPU rates (FLOPs / rate): estimates, not measurements, until ``make gpu-check``
  or ``benchmarks/bench_ddp.py`` has run on a GPU.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from uotisp_lib.config import get_profile  # noqa: E402
from uotisp_lib.data.datasets import PatchSet  # noqa: E402
from uotisp_lib.models import count_parameters  # noqa: E402
from uotisp_lib.study import base_config  # noqa: E402
from uotisp_lib.train import UOTTrainer  # noqa: E402

CHALLENGE_RAW = 13_420  # RAW patches of the challenge's training split
ASSUMED_TFLOPS = (20.0, 50.0, 100.0)  # sustained float32/TF32 / bf16 rates to translate FLOPs into time


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def measure(arch: str, batch: int, steps: int) -> dict:
    """One child's measurement: counted FLOPs, peak RSS over the baseline, step walls, parameters."""
    prof = get_profile("full")
    side = 2 * prof.synth.patch
    cfg = base_config(prof.uot, arch, 0)
    gen = torch.Generator().manual_seed(0)
    before = rss_gib()
    raw = torch.rand(batch, 4, side // 2, side // 2, generator=gen) * 0.8 + 0.1
    tgt = torch.rand(batch, 3, side, side, generator=gen)
    stems = [f"r{i}" for i in range(batch)]
    with tempfile.TemporaryDirectory() as tmp:
        tr = UOTTrainer(cfg, PatchSet(tuple(stems), raw), PatchSet(tuple(f"t{i}" for i in range(batch)), tgt), tmp)
        t0 = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof_run:
            tr.train_step(stems, 0)
        first = time.perf_counter() - t0
        walls = []
        for _ in range(steps):
            t0 = time.perf_counter()
            tr.train_step(stems, 0)
            walls.append(time.perf_counter() - t0)
        params = {"map": count_parameters(tr.model), "potential": count_parameters(tr.potential),
                  "experts": count_parameters(tr.committee) if getattr(tr, "committee", None) is not None else 0}
    return {"batch": batch, "side": side, "crop": cfg.crop, "experts": list(cfg.experts), "first": first, "walls": walls,
            "peak_gib": rss_gib() - before, "flops": sum(e.flops for e in prof_run.key_averages() if e.flops),
            "params": params, "threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1, help="timed steps after the counted one (>= 1)")
    ap.add_argument("--batches", default="2,4", help="batch sizes measured (each in its own process); the "
                    "profile's batch is extrapolated linearly from the two largest when it is not among them")
    ap.add_argument("--arch", default=None, help="architecture (default: the full profile's)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    prof = get_profile("full")
    arch = args.arch or prof.uot.arch
    if args.child is not None:
        print(json.dumps(measure(arch, args.child, args.steps)))
        return
    batches = sorted({int(b) for b in args.batches.split(",")})
    runs = []
    for b in batches:
        cmd = [sys.executable, __file__, "--child", str(b), "--steps", str(args.steps), "--arch", arch, "--threads", str(args.threads)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        runs.append(json.loads(out.strip().splitlines()[-1]))
    target = prof.uot.batch_size
    r0 = runs[0]
    print(f"full profile UOT step: {arch}, sRGB {r0['side']}x{r0['side']} (RAW {r0['side'] // 2}x{r0['side'] // 2}x4), crop {r0['crop']}, "
          f"experts {', '.join(r0['experts']) or 'none'}; parameters map {r0['params']['map']:,}, potential "
          f"{r0['params']['potential']:,}, experts {r0['params']['experts']:,}; float32, {r0['threads']} CPU thread(s); "
          f"each batch size measured in its own process\n")
    cols = [str(r["batch"]) for r in runs]
    fit = None
    if target not in [r["batch"] for r in runs] and len(runs) >= 2:
        a, b = runs[-2], runs[-1]
        per = {k: (b[k] - a[k]) / (b["batch"] - a["batch"]) for k in ("flops", "peak_gib")}
        fit = {k: b[k] + per[k] * (target - b["batch"]) for k in per}
        fit["step"] = statistics.median(b["walls"]) * target / b["batch"]
        cols.append(f"{target} (linear from {a['batch']} and {b['batch']})")
    print("| batch | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    rows = {
        "counted TFLOP per step": [f"{r['flops'] / 1e12:.3f}" for r in runs] + ([f"{fit['flops'] / 1e12:.2f}"] if fit else []),
        "memory of a step, GiB (peak RSS over the baseline)": [f"{r['peak_gib']:.2f}" for r in runs]
        + ([f"{fit['peak_gib']:.1f}"] if fit else []),
        "step wall s on this CPU (median)": [f"{statistics.median(r['walls']):.1f}" for r in runs] + ([f"{fit['step']:.0f}"] if fit else []),
    }
    for k, v in rows.items():
        print(f"| {k} | " + " | ".join(v) + " |")
    flops = fit["flops"] if fit else next(r["flops"] for r in runs if r["batch"] == target)
    steps_per_epoch = math.ceil(CHALLENGE_RAW / target)
    epoch = flops * steps_per_epoch
    print(f"\nOne epoch of the full profile (batch {target}, {steps_per_epoch} steps on the challenge's "
          f"{CHALLENGE_RAW:,} RAW patches): {epoch / 1e15:.1f} PFLOP counted; at an assumed sustained "
          + ", ".join(f"{r:g} TFLOP/s: {epoch / (r * 1e12) / 60:.1f} min" for r in ASSUMED_TFLOPS)
          + f" (estimates); {prof.uot.epochs} epochs: "
          + ", ".join(f"{epoch * prof.uot.epochs / (r * 1e12) / 3600:.1f} h" for r in ASSUMED_TFLOPS) + ".")


if __name__ == "__main__":
    main()
