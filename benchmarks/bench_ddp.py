"""Data-parallel UOT training throughput: samples/s for 1 and 2 gloo processes on the CPU and, on a
GPU machine, for 1..N GPUs with and without mixed precision; with the scaling efficiency.

Usage: ``python benchmarks/bench_ddp.py [--quick] [--steps N] [--batch B] [--side S] [--arch A]``.
Each row launches ``torchrun --nproc_per_node=N`` on this script in worker mode: every process
builds a :class:`~uotisp_lib.train.UOTTrainer` on random data (sRGB ``S x S``, packed RAW
``S/2``), takes the rows of the global batch ``B`` its rank trains on (as ``EpochTrainer.fit``
does) and runs ``train_step`` (potential + R1, committee, map with grad-norm balancing, the
gradients all-reduced); rank 0 times the steps after one warm-up between barriers. Strong
scaling: the global batch is fixed (``batch_size`` is the global batch), so N processes split it.
samples/s = B x steps / seconds; efficiency = (samples/s at N) / (N x samples/s at 1 process of the
same kind). CPU rows use one intra-op thread per process. ``--quick``: 3 steps, 32 px, batch 8.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def worker(args: argparse.Namespace) -> None:
    import torch

    from uotisp_lib import distributed
    from uotisp_lib.data.datasets import PatchSet
    from uotisp_lib.train import UOTTrainConfig, UOTTrainer

    device = distributed.local_device(args.device)
    with distributed.process_group(device), tempfile.TemporaryDirectory() as tmp:
        gen = torch.Generator().manual_seed(0)
        n, side = args.batch, args.side
        raw = PatchSet(tuple(f"r{i}" for i in range(n)), torch.rand(n, 4, side // 2, side // 2, generator=gen) * 0.8 + 0.1)
        tgt = PatchSet(tuple(f"t{i}" for i in range(n)), torch.rand(n, 3, side, side, generator=gen))
        cfg = UOTTrainConfig(arch=args.arch, batch_size=n, potential_width=16, expert_width=16)
        tr = UOTTrainer(cfg, raw, tgt, tmp, device=device)
        tr.set_amp(args.amp)
        stems = list(raw.stems)
        tr.shard_for(n)
        tr.train_step(stems, 0)  # warm-up
        distributed.barrier()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(args.steps):
            tr.train_step(stems, 0)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        distributed.barrier()
        seconds = time.perf_counter() - t0
        if distributed.is_main():
            Path(args.result).write_text(json.dumps({"seconds": seconds, "samples_per_s": n * args.steps / seconds}))


def launch(nproc: int, device: str, amp: str, args: argparse.Namespace) -> float | None:
    """samples/s of one configuration (None if the run failed; its error is printed)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "r.json"
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        if device == "cpu":
            env["OMP_NUM_THREADS"] = "1"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", __file__,
               "--worker", "--device", device, "--amp", amp, "--result", str(result), "--steps", str(args.steps),
               "--batch", str(args.batch), "--side", str(args.side), "--arch", args.arch]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if res.returncode != 0 or not result.is_file():
            print(f"<!-- {nproc} x {device} {amp} failed: {res.stderr.strip().splitlines()[-1:] } -->")
            return None
        return json.loads(result.read_text())["samples_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 steps, 32 px sRGB, batch 8")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch", type=int, default=16, help="global batch")
    p.add_argument("--side", type=int, default=64, help="sRGB side in pixels (packed RAW: half)")
    p.add_argument("--arch", default="tinyraw")
    p.add_argument("--cpu-procs", type=int, default=2, help="largest number of CPU processes (default 2)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    p.add_argument("--amp", default="off", help=argparse.SUPPRESS)
    p.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    if args.quick:
        args.steps, args.side, args.batch = 3, 32, 8
    import torch

    rows = [(n, "cpu", "off") for n in range(1, args.cpu_procs + 1)]
    if torch.cuda.is_available():
        rows += [(n, "cuda", amp) for amp in ("off", "bf16", "fp16") for n in range(1, torch.cuda.device_count() + 1)]
    else:
        print("<!-- no CUDA device: GPU rows skipped -->")
    print(f"UOT train_step, arch {args.arch}, sRGB {args.side}x{args.side}, global batch {args.batch}, {args.steps} timed steps\n")
    print("| processes | device | amp | per-rank batch | samples/s | scaling efficiency |")
    print("|---:|---|---|---:|---:|---:|")
    base: dict[tuple[str, str], float] = {}
    for n, device, amp in rows:
        sps = launch(n, device, amp, args)
        if sps is None:
            continue
        base.setdefault((device, amp), sps / n if n == 1 else float("nan"))
        eff = sps / (n * base[(device, amp)])
        print(f"| {n} | {device} | {amp} | {args.batch / n:g} | {sps:.1f} | {eff:.2f} |", flush=True)


if __name__ == "__main__":
    main()
