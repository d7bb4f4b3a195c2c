"""Time the evaluation metrics on random sRGB batches; prints a markdown table.

Usage: ``python benchmarks/bench_metrics.py [--quick] [--device auto|cpu|cuda]``.
Full run: batch 4 of 512x512 (the challenge's output size); ``--quick``: batch 2 of 64x64.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from _common import apply_threads, median_seconds, standard_parser
from uotisp_lib import metrics
from uotisp_lib.config import resolve_device


def _time(fn: Callable[[], object], device: str, repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds (two warm-up calls)."""
    return 1e3 * median_seconds(fn, device, repeats, warmup=2)


def main() -> None:
    args = standard_parser(__doc__, "tiny sizes, a few repeats").parse_args()
    apply_threads(args.threads)
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
