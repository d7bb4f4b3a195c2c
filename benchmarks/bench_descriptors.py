"""Descriptor costs: the efficientnet_lite0 backbone per patch and the soft histograms per image, against their earlier forms.

Usage: ``python benchmarks/bench_descriptors.py [--quick] [--threads N] [--repeats 5] [--patches 64] [--side 128]``.

Table 1, the backbone.

``uotisp match`` without DINOv2 weights describes every patch with
:class:`uotisp_lib.features.EfficientNetDescriptor` (``load_backbone("efficientnet_lite0")``), in
batches of ``Descriptor.batch_size`` (4) under ``torch.no_grad``, as :meth:`Descriptor.describe_backbone`
calls it. Four variants of that module, built from the same bundled weights:

- ``stock``: the timm module in NCHW (``EfficientNetDescriptor(net, fast=False)``, the earlier default);
- ``channels_last``: stock weights, module and input in ``channels_last``;
- ``folded``: batch norms folded into the convolutions (:func:`uotisp_lib.features.fold_batchnorm`), NCHW;
- ``folded + channels_last``: what the library runs (``fast=True``, the default).

Each round describes ``--patches`` random sRGB patches of ``--side`` px (resized to 224 px inside
the module) with every variant in turn (``repeats`` rounds after one warm-up each). Printed:
patches/s min / median / max, the median over rounds of stock time / variant time (> 1: faster than
stock), and the largest absolute difference of the variant's descriptors from stock's.

Table 2, the soft histograms (:mod:`uotisp_lib.stats`), with the kernel's exponent floored at
``LOG_FLOOR`` (-40, today) against the floor they had before (-80 on the no-gradient blocked path,
none on the differentiable path), in turn: the image descriptor's Y and U-V histograms of one
stitched 768x896 image (a 6x7 grid of 128 px patches; no gradient) and a training step's histogram
loss on a 4x3x128x128 batch (forward and backward, the differentiable path). A floor of -80 lets
products of two weights (the U-V matmul) underflow to subnormal numbers, which some CPUs compute
far more slowly. Printed: ms min / median / max, the median of the pair-by-pair ratios before /
now, and the largest absolute difference of the histograms.
"""

from __future__ import annotations

import statistics
import time

import torch

from _common import load_average, mmm, standard_parser
from uotisp_lib import stats
from uotisp_lib.features import EfficientNetDescriptor, build_efficientnet_lite0, fold_batchnorm
from uotisp_lib.threads import default_threads, use_threads


def variants() -> dict[str, torch.nn.Module]:
    """The four forms, each an ``EfficientNetDescriptor`` whose ``net`` and ``fast`` (the input's
    layout) are set by hand where the constructor has no such combination."""
    net = build_efficientnet_lite0()
    folded_nchw = EfficientNetDescriptor(net, fast=False)
    folded_nchw.net = fold_batchnorm(net)
    cl_only = EfficientNetDescriptor(build_efficientnet_lite0(), fast=False)
    cl_only.net, cl_only.fast = cl_only.net.to(memory_format=torch.channels_last), True
    return {
        "stock (NCHW)": EfficientNetDescriptor(net, fast=False).eval(),
        "channels_last": cl_only.eval(),
        "folded (NCHW)": folded_nchw.eval(),
        "folded + channels_last (library default)": EfficientNetDescriptor(net).eval(),
    }


def describe(module: torch.nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([module(x[i : i + batch]) for i in range(0, x.shape[0], batch)])


def main() -> None:
    parser = standard_parser(__doc__, "16 patches, 2 rounds")
    parser.add_argument("--repeats", type=int, default=5, help="rounds over the variants (>= 5 for the README)")
    parser.add_argument("--patches", type=int, default=64, help="patches per round")
    parser.add_argument("--side", type=int, default=128, help="patch side in px (bench_match_scale.py's sRGB patches: 128)")
    parser.add_argument("--batch", type=int, default=4, help="patches per backbone call (Descriptor.batch_size)")
    args = parser.parse_args()
    if args.quick:
        args.patches, args.repeats = 16, 2
    if args.repeats < 1 or args.patches < 1:
        parser.error("--repeats and --patches must be >= 1")
    threads = args.threads or default_threads()
    with use_threads(threads):
        mods = variants()
        x = torch.rand(args.patches, 3, args.side, args.side, generator=torch.Generator().manual_seed(0))
        ref = describe(mods["stock (NCHW)"], x, args.batch)
        diffs = {k: float((describe(m, x, args.batch) - ref).abs().max()) for k, m in mods.items()}  # + warm-up
        times: dict[str, list[float]] = {k: [] for k in mods}
        for _ in range(args.repeats):
            for k, m in mods.items():
                t0 = time.perf_counter()
                describe(m, x, args.batch)
                times[k].append(time.perf_counter() - t0)
        print(f"threads: {torch.get_num_threads()}, {args.patches} patches of {args.side} px per round (224 px into the "
              f"network), batch {args.batch}, {args.repeats} rounds in turn, torch {torch.__version__}, "
              f"1-minute load average {load_average():.2f} at the end\n")
        print("| variant | patches/s min / median / max | ms per patch (median) | stock / variant time (median of rounds) | max abs diff from stock |")
        print("|---|---:|---:|---:|---:|")
        stock = times["stock (NCHW)"]
        for k, ts in times.items():
            ratio = statistics.median(s / t for s, t in zip(stock, ts))
            print(f"| {k} | {mmm([args.patches / t for t in ts], '.1f')} | {1e3 * statistics.median(ts) / args.patches:.1f} "
                  f"| {ratio:.2f} | {diffs[k]:.1e} |")
        print("\n| histogram | floor before | ms before min / median / max | floor now | ms now min / median / max "
              "| before / now time (median of pairs) | max abs diff |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for row in histogram_rows(args.repeats):
            print(row)


def histogram_rows(repeats: int) -> list[str]:
    """Table 2's rows (see the module docstring)."""
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 768, 896, generator=g) * 0.6 + 0.2
    batch = (torch.rand(4, 3, 128, 128, generator=g) * 0.6 + 0.2).requires_grad_(True)

    def loss_step(fn):
        def step() -> torch.Tensor:
            batch.grad = None
            h = fn(batch)
            h.square().sum().backward()
            return h.detach()
        return step

    def nograd(fn):
        def call() -> torch.Tensor:
            with torch.no_grad():
                return fn(image)
        return call

    cases = [
        ("Y histogram, 768x896 image (descriptor)", nograd(stats.soft_histogram_y), -80.0),
        ("U-V histogram, 768x896 image (descriptor)", nograd(stats.soft_histogram_uv), -80.0),
        ("Y histogram loss, 4x128x128, fwd+bwd", loss_step(stats.soft_histogram_y), float("-inf")),
        ("U-V histogram loss, 4x128x128, fwd+bwd", loss_step(stats.soft_histogram_uv), float("-inf")),
    ]
    now_floor, rows = stats.LOG_FLOOR, []
    try:
        for label, fn, before in cases:
            t_old, t_new, diff = [], [], 0.0
            for floor in (before, now_floor):  # warm-up
                stats.LOG_FLOOR = floor
                fn()
            for _ in range(repeats):
                for floor, ts in ((before, t_old), (now_floor, t_new)):
                    stats.LOG_FLOOR = floor
                    t0 = time.perf_counter()
                    out = fn()
                    ts.append(time.perf_counter() - t0)
                    if floor == before:
                        ref = out
                    else:
                        diff = max(diff, float((out - ref).abs().max()))
            ratio = statistics.median(o / n for o, n in zip(t_old, t_new))
            rows.append(f"| {label} | {before:g} | {mmm([1e3 * t for t in t_old], '.1f')} | {now_floor:g} | "
                        f"{mmm([1e3 * t for t in t_new], '.1f')} | {ratio:.2f} | {diff:.1e} |")
    finally:
        stats.LOG_FLOOR = now_floor
    return rows


if __name__ == "__main__":
    main()
