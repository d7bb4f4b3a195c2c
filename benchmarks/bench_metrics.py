"""Time the evaluation metrics on random sRGB batches; prints a markdown table.

Usage: ``python benchmarks/bench_metrics.py [--quick] [--device auto|cpu|cuda]``.
Full run: batch 4 of 512x512 (the challenge's output size); ``--quick``: batch 2 of 64x64.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from uotisp_lib import metrics
from uotisp_lib.config import resolve_device


def _time(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds (two warm-up calls)."""
    fn()
    fn()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few repeats")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    batch, side, repeats = (2, 64, 3) if args.quick else (4, 512, 5)
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(batch, 3, side, side, generator=gen)
    target = (pred + 0.05 * torch.randn(pred.shape, generator=gen)).clamp(0, 1)
    pred, target = pred.to(device), target.to(device)
    cases: dict[str, Callable[[], object]] = {
        "psnr": lambda: metrics.psnr(pred, target),
        "ssim": lambda: metrics.ssim(pred, target),
        "delta_e2000": lambda: metrics.delta_e2000(pred, target),
        "evaluate (all, no grad)": lambda: metrics.evaluate(pred, target),
    }
    print(f"device: {device}, threads: {torch.get_num_threads()}, input: {batch}x3x{side}x{side} float32\n")
    print("| metric | median ms / batch | ms / image |")
    print("|---|---:|---:|")
    for name, fn in cases.items():
        ms = _time(fn, device, repeats)
        print(f"| {name} | {ms:.2f} | {ms / batch:.2f} |")


if __name__ == "__main__":
    main()
