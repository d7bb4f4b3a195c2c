"""The evaluation metrics as the study calls them, interleaved with scikit-image's; prints a markdown table.

Usage: ``python benchmarks/bench_metrics.py [--quick] [--device auto|cpu|cuda] [--threads N] [--repeats 5]``.
Full run: batch 4 of 512x512 sRGB float32 (the challenge's output size); ``--quick``: batch 2 of 64x64.
Threads: ``--threads N``, else the library's policy (:func:`uotisp_lib.threads.default_threads`).

User call: :func:`uotisp_lib.metrics.psnr`, :func:`~uotisp_lib.metrics.ssim`,
:func:`~uotisp_lib.metrics.delta_e2000` and :func:`~uotisp_lib.metrics.evaluate` (all three without
gradients, what ``study``, ``train`` and ``experiments`` call) on ``[B,3,H,W]`` tensors, default
options (clamp, no 8-bit quantisation). PSNR and CIEDE2000 are the project's own code; SSIM wraps
:func:`kornia.metrics.ssim`.

Reference: scikit-image, image by image, on the same pixels as ``H x W x 3`` float32 NumPy arrays
(converted before timing, as a NumPy user holds them): ``peak_signal_noise_ratio(data_range=1)``,
``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
data_range=1)`` and ``deltaE_ciede2000(rgb2lab(pred), rgb2lab(target))`` averaged per image;
``evaluate``'s reference is the three together. Each pair runs in turn (library, scikit-image, ...)
``--repeats`` times after one warm-up each: ms per batch min / median / max, the pair-by-pair ratio
scikit-image / library (> 1: the library is faster), and the largest per-image difference between
the two values (float32 against scikit-image's float64). Equality is tested in float64 by
``tests/test_metrics.py`` (``test_psnr_matches_skimage``, ``test_ssim_matches_skimage_valid_border``,
``test_delta_e2000_on_srgb_equals_skimage_pipeline``). Memory: the process's peak RSS at the end.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import numpy as np
import torch

from _common import interleaved, load_average, mmm, peak_rss_mib, standard_parser
from uotisp_lib import metrics
from uotisp_lib.config import resolve_device
from uotisp_lib.threads import default_threads, use_threads


def skimage_metrics(pred: list[np.ndarray], target: list[np.ndarray]) -> dict[str, Callable[[], np.ndarray]]:
    """name -> a call returning per-image values from scikit-image on ``H x W x 3`` arrays."""
    from skimage.color import deltaE_ciede2000, rgb2lab
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    def psnr() -> np.ndarray:
        return np.array([peak_signal_noise_ratio(t, p, data_range=1.0) for p, t in zip(pred, target)])

    def ssim() -> np.ndarray:
        return np.array([
            structural_similarity(p, t, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
                                  channel_axis=-1)
            for p, t in zip(pred, target)
        ])

    def de2000() -> np.ndarray:
        return np.array([deltaE_ciede2000(rgb2lab(p), rgb2lab(t)).mean() for p, t in zip(pred, target)])

    def evaluate() -> dict[str, np.ndarray]:
        return {"psnr": psnr(), "ssim": ssim(), "de2000": de2000()}

    return {"psnr": psnr, "ssim": ssim, "delta_e2000": de2000, "evaluate": evaluate}


def max_diff(ours: object, ref: object) -> float:
    """Largest absolute difference of per-image values (over every metric for ``evaluate``)."""
    if isinstance(ours, dict):
        return max(max_diff(ours[k], ref[k]) for k in ref)
    return float(np.abs(ours.double().cpu().numpy() - ref).max())


def main() -> None:
    parser = standard_parser(__doc__, "batch 2 of 64x64")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved pairs (>= 5 for the README)")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.exit(2, f"--repeats: expected an integer >= 1, got {args.repeats}\n")
    device = resolve_device(args.device)
    batch, side = (2, 64) if args.quick else (4, 512)
    gen = torch.Generator().manual_seed(0)
    pred = torch.rand(batch, 3, side, side, generator=gen)
    target = (pred + 0.05 * torch.randn(pred.shape, generator=gen)).clamp(0, 1)
    to_np = lambda t: list(t.permute(0, 2, 3, 1).contiguous().numpy())  # noqa: E731
    ref_calls = skimage_metrics(to_np(pred), to_np(target))
    pred, target = pred.to(device), target.to(device)
    ours_calls: dict[str, Callable[[], object]] = {
        "psnr": lambda: metrics.psnr(pred, target),
        "ssim": lambda: metrics.ssim(pred, target),
        "delta_e2000": lambda: metrics.delta_e2000(pred, target),
        "evaluate": lambda: metrics.evaluate(pred, target),
    }
    with use_threads(args.threads or default_threads()):
        load = load_average()
        rows = []
        for name, ours in ours_calls.items():
            with torch.no_grad():
                t_ours, t_ref = interleaved(ours, ref_calls[name], device, args.repeats)
                diff = max_diff(ours(), ref_calls[name]())
            ratio = [r / o for o, r in zip(t_ours, t_ref)]
            rows.append(f"| {name} | {mmm([1e3 * t for t in t_ours], '.3g')} | {mmm([1e3 * t for t in t_ref], '.3g')} | "
                        f"{mmm(ratio)} | {1e3 * statistics.median(t_ours) / batch:.3g} | {diff:.1e} |")
        print(f"device: {device}, threads: {torch.get_num_threads()}, input: {batch}x3x{side}x{side} float32, "
              f"{args.repeats} interleaved pairs, 1-minute load average {load:.2f} at the start\n")
        print("| call | library ms / batch min / med / max | scikit-image ms / batch min / med / max | "
              "ratio scikit-image / library min / med / max (pairs) | library ms / image (median) | max abs diff |")
        print("|---|---:|---:|---:|---:|---:|")
        for row in rows:
            print(row)
        print(f"\npeak RSS of the process: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
