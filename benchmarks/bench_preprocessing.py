"""The preprocessing backends as notebook 01 calls them, interleaved with a reference; then PSNR.

    python benchmarks/bench_preprocessing.py [--quick] [--threads N] [--repeats 5]

Threads: ``--threads N``, else the library's policy (:func:`uotisp_lib.threads.default_threads`).
Prints two markdown tables:

1. Throughput (output megapixels per second) on 2 packed RAW images of 256x256x4 (RGB 512x512;
   ``--quick``: 64x64x4). Each row times a library call as a user makes it, default options
   included (:func:`uotisp_lib.preprocessing.demosaic`, :func:`~uotisp_lib.preprocessing.denoise`,
   :class:`~uotisp_lib.preprocessing.Preprocessor` with a :class:`~uotisp_lib.preprocessing.PreprocessConfig`,
   as notebook 01 and ``uotisp infer`` do), and a reference, in turn (call, reference, call, ...)
   ``--repeats`` times after one warm-up each: MP/s min / median / max of each and the pair-by-pair
   ratio reference time / call time (> 1: the call is faster). References: ``colour_demosaicing``'s
   NumPy bilinear and Malvar (2004) for ours (same output: the last column is the largest
   difference away from the 1- or 2-pixel border where the padding differs, tested by
   ``tests/test_preprocessing.py::test_demosaic_equals_colour_demosaicing_inside_border``);
   ``colour_demosaicing``'s Menon (2007) called directly for our wrapper of it; bilinear for
   DemosaicNet (another method: the ratio is its cost); kornia's 7x7 bilateral filter for the
   denoisers; the demosaic stage alone for the default pipeline (the ratio is the share of the
   other stages); the default pipeline for Borelli's chain (DemosaicNet + FFDNet). FFDNet runs
   through ``denoise(..., "ffdnet", weights=...)`` with random weights saved to a temporary file
   (speed does not depend on the values). Memory: the process's peak RSS at the end.
2. PSNR (dB, linear RGB, 4-px border excluded) against the clean linear ground truth for skimage
   photographs (linearised with the inverse sRGB curve) mosaicked on RGGB, with no noise and with
   shot + read noise (variance ``a x + b``) and 10-bit quantisation. Denoisers get ``sigma`` = the
   noise std at the mean signal level. FFDNet's PSNR needs real weights in
   ``$UOTISP_FFDNET_WEIGHTS``. kornia's bilateral filter is a reference row, not a backend.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import interleaved, load_average, mmm, peak_rss_mib  # noqa: E402
from uotisp_lib import preprocessing as pp  # noqa: E402
from uotisp_lib.threads import default_threads, use_threads  # noqa: E402

#: Shot/read noise levels (variance a*x + b on the [0,1] mosaic).
NOISE_LEVELS = {"clean": (0.0, 0.0), "mid (a=1e-3, b=1e-5)": (1e-3, 1e-5), "high (a=4e-3, b=4e-5)": (4e-3, 4e-5)}
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def photos_linear(side: int) -> torch.Tensor:
    """Centre crops ``side x side`` of skimage photos, linear light, ``[N,3,side,side]``."""
    import kornia
    import skimage.data

    out = []
    for name in PHOTOS:
        img = getattr(skimage.data, name)()
        h, w = img.shape[:2]
        top, left = (h - side) // 2, (w - side) // 2
        crop = torch.from_numpy(img[top : top + side, left : left + side]).permute(2, 0, 1).float() / 255
        out.append(crop)
    return kornia.color.rgb_to_linear_rgb(torch.stack(out))


def add_noise(bayer: torch.Tensor, a: float, b: float, seed: int = 0) -> torch.Tensor:
    """Shot + read noise (std sqrt(a x + b)), clip, 10-bit quantisation."""
    g = torch.Generator().manual_seed(seed)
    noisy = bayer + torch.randn(bayer.shape, generator=g) * torch.sqrt(a * bayer + b)
    return torch.round(noisy.clamp(0, 1) * 1023) / 1023


def psnr(x: torch.Tensor, y: torch.Tensor, border: int = 4) -> float:
    x, y = x[..., border:-border, border:-border], y[..., border:-border, border:-border]
    mse = ((x - y) ** 2).mean(dim=(1, 2, 3))
    return float((-10 * torch.log10(mse)).mean())


def colour_demosaic(name: str) -> Callable[[torch.Tensor], np.ndarray]:
    """``colour_demosaicing``'s RGGB demosaic ``name`` as a call ``[B,1,H,W]`` -> ``[B,H,W,3]`` float64,
    image by image (NumPy on the CPU: its users' form)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its scipy.ndimage.filters imports warn
        import colour_demosaicing as cd
    fn = getattr(cd, f"demosaicing_CFA_Bayer_{name}")
    return lambda bayer: np.stack([fn(b[0], "RGGB") for b in bayer.numpy()])


def interior_diff(ours: torch.Tensor, ref: np.ndarray, border: int) -> float:
    """Largest |ours - ref| (ours ``[B,3,H,W]``, ref ``[B,H,W,3]`` clipped to [0,1]) ``border`` px in."""
    diff = np.abs(ours.permute(0, 2, 3, 1).double().numpy() - np.clip(ref, 0, 1))
    return float(diff[:, border : diff.shape[1] - border, border : diff.shape[2] - border].max())


def bilateral_reference(rgb: torch.Tensor, sigma: float) -> torch.Tensor:
    from kornia.filters import bilateral_blur

    return bilateral_blur(rgb, 7, 6 * sigma, (2.0, 2.0)).clamp(0, 1)


def throughput_rows(packed: torch.Tensor, repeats: int, ffdnet_file: str) -> list[str]:
    """Table 1's rows: each (call, reference) pair interleaved ``repeats`` times on ``packed`` [B,4,h,w] in [0,1]."""
    bayer = pp.unpack_bayer(packed)
    rgb = pp.demosaic(bayer, "malvar")
    raw = packed * 1023  # raw units, as PreprocessConfig's default levels expect
    mp = rgb.shape[0] * rgb.shape[-2] * rgb.shape[-1] / 1e6
    menon_ref = colour_demosaic("Menon2007")
    default = pp.Preprocessor()
    borelli = pp.Preprocessor(pp.PreprocessConfig.borelli(ffdnet_weights=ffdnet_file))
    # (stage, call, its code, reference, its code, interior border of the equality check or None)
    cases = [
        ("demosaic", "bilinear", lambda: pp.demosaic(bayer, "bilinear"),
         "colour_demosaicing bilinear", lambda: colour_demosaic("bilinear")(bayer), 1),
        ("demosaic", "malvar", lambda: pp.demosaic(bayer, "malvar"),
         "colour_demosaicing Malvar2004", lambda: colour_demosaic("Malvar2004")(bayer), 2),
        ("demosaic", "menon", lambda: pp.demosaic(bayer, "menon"), "colour_demosaicing Menon2007", lambda: menon_ref(bayer), 0),
        ("demosaic", "demosaicnet", lambda: pp.demosaic(bayer, "demosaicnet"),
         "bilinear (pp.demosaic)", lambda: pp.demosaic(bayer, "bilinear"), None),
        ("denoise", "guided", lambda: pp.denoise(rgb, "guided", 0.01),
         "kornia bilateral 7x7", lambda: bilateral_reference(rgb, 0.01), None),
        ("denoise", "ffdnet (random weights)", lambda: pp.denoise(rgb, "ffdnet", 0.01, weights=ffdnet_file),
         "kornia bilateral 7x7", lambda: bilateral_reference(rgb, 0.01), None),
        ("pipeline", "default (malvar, none, gamma)", lambda: default(raw),
         "its demosaic stage alone", lambda: pp.demosaic(bayer, "malvar"), None),
        ("pipeline", "borelli (demosaicnet, ffdnet, gamma)", lambda: borelli(raw),
         "default pipeline", lambda: default(raw), None),
    ]
    rows = []
    with torch.no_grad():
        for stage, name, call, ref_name, ref, border in cases:
            t_call, t_ref = interleaved(call, ref, "cpu", repeats)
            ratio = [r / c for c, r in zip(t_call, t_ref)]
            diff = f"{interior_diff(call(), ref(), border):.1e}" if border is not None else "— (other method)"
            rows.append(f"| {stage} | {name} | {ref_name} | {mmm([mp / t for t in t_call], '.3g')} | {mmm([mp / t for t in t_ref], '.3g')} | "
                        f"{mmm(ratio, '.3g')} | {diff} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64x64x4 inputs, 128 px photos")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: the library's policy)")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved pairs (>= 5 for the README)")
    args = ap.parse_args()
    if args.repeats < 1:
        ap.exit(2, f"--repeats: expected an integer >= 1, got {args.repeats}\n")
    with use_threads(args.threads or default_threads()):
        run(args)


def run(args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    side = 64 if args.quick else 256
    g = torch.Generator().manual_seed(0)
    packed = torch.rand(2, 4, side, side, generator=g)

    torch.manual_seed(0)
    ffdnet_random = pp.FFDNet().eval().requires_grad_(False)
    ffdnet_weights = os.environ.get(pp.FFDNET_ENV)
    ffdnet = pp.load_ffdnet(ffdnet_weights) if ffdnet_weights else ffdnet_random

    load = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        ffdnet_file = f"{tmp}/ffdnet_random.pth"
        torch.save(ffdnet_random.state_dict(), ffdnet_file)
        rows = throughput_rows(packed, args.repeats, ffdnet_file)
    print(f"## Throughput: 2 x {side}x{side}x4 packed RAW -> 2 x {2 * side}x{2 * side} RGB, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, {args.repeats} interleaved pairs, "
          f"1-minute load average {load:.2f} at the start\n")
    print("| stage | call | reference | call MP/s min / med / max | reference MP/s min / med / max | "
          "ratio reference / call time min / med / max (pairs) | max abs diff (inside the border) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for row in rows:
        print(row)

    photo_side = 128 if args.quick else 256
    gt = photos_linear(photo_side)
    clean_bayer = pp.mosaic(gt)
    noisy = {name: (add_noise(clean_bayer, a, b), (a * float(gt.mean()) + b) ** 0.5) for name, (a, b) in NOISE_LEVELS.items()}
    print(f"\n## PSNR (dB) vs clean linear RGB: {len(PHOTOS)} skimage photos ({', '.join(PHOTOS)}), "
          f"{photo_side}x{photo_side}, RGGB mosaic, 10-bit\n")
    print("| demosaic | denoise | " + " | ".join(f"{k} (sigma {s:.4f})" if s else k for k, (_, s) in noisy.items()) + " |")
    print("|---|---|" + "---:|" * len(noisy))
    denoisers = {
        "none": lambda x, s: x,
        "guided": lambda x, s: pp.denoise(x, "guided", s),
        "bilateral 7x7 (reference)": lambda x, s: bilateral_reference(x, s) if s else x,
    }
    if ffdnet_weights:
        denoisers["ffdnet"] = lambda x, s: ffdnet(x, s).clamp(0, 1)
    with torch.no_grad():
        for method in pp.DEMOSAIC_METHODS:
            demosaicked = {k: pp.demosaic(b, method) for k, (b, _) in noisy.items()}
            for dname, fn in denoisers.items():
                if dname != "none" and method not in ("malvar", "demosaicnet"):
                    continue
                cells = [f"{psnr(fn(demosaicked[k], s), gt):.2f}" for k, (_, s) in noisy.items()]
                print(f"| {method} | {dname} | " + " | ".join(cells) + " |")
    if not ffdnet_weights:
        print(f"\nFFDNet PSNR not measured: set ${pp.FFDNET_ENV} to KAIR's ffdnet_color.pth.")
    print(f"\npeak RSS of the process: {peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
