"""Benchmark of the preprocessing backends: throughput and PSNR.

    python benchmarks/bench_preprocessing.py [--quick] [--threads 2]

Prints two markdown tables:

1. Throughput (output megapixels per second) of each demosaic and denoise backend on 2 packed RAW
   images of 256x256x4 (RGB 512x512); ``--quick``: 64x64x4.
2. PSNR (dB, linear RGB, 4-px border excluded) against the clean linear ground truth for skimage
   photographs (linearised with the inverse sRGB curve) mosaicked on RGGB, with no noise and with
   shot + read noise (variance ``a x + b``) and 10-bit quantisation. Denoisers get ``sigma`` = the
   noise std at the mean signal level. FFDNet is timed with random weights; its PSNR needs real
   weights in ``$UOTISP_FFDNET_WEIGHTS``. kornia's bilateral filter is a reference row, not a backend.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from uotisp_lib import preprocessing as pp  # noqa: E402

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


def timeit(fn, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def bilateral_reference(rgb: torch.Tensor, sigma: float) -> torch.Tensor:
    from kornia.filters import bilateral_blur

    return bilateral_blur(rgb, 7, 6 * sigma, (2.0, 2.0)).clamp(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="64x64x4 inputs, 128 px photos, fewer repeats")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    side = 64 if args.quick else 256
    repeats = 2 if args.quick else 3
    g = torch.Generator().manual_seed(0)
    packed = torch.rand(2, 4, side, side, generator=g)
    bayer = pp.unpack_bayer(packed)
    rgb = pp.demosaic(bayer, "malvar")
    mp = rgb.shape[0] * rgb.shape[-2] * rgb.shape[-1] / 1e6

    torch.manual_seed(0)
    ffdnet_random = pp.FFDNet().eval().requires_grad_(False)
    ffdnet_weights = os.environ.get(pp.FFDNET_ENV)
    ffdnet = pp.load_ffdnet(ffdnet_weights) if ffdnet_weights else ffdnet_random

    print(f"## Throughput: 2 x {side}x{side}x4 packed RAW -> 2 x {2 * side}x{2 * side} RGB, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}\n")
    print("| stage | backend | ms / batch | MP/s |")
    print("|---|---|---:|---:|")
    with torch.no_grad():
        for method in pp.DEMOSAIC_METHODS:
            t = timeit(lambda: pp.demosaic(bayer, method), 1 if method == "menon" else repeats)
            print(f"| demosaic | {method} | {1e3 * t:.1f} | {mp / t:.2f} |")
        rows = [
            ("guided", lambda: pp.denoise(rgb, "guided", 0.01)),
            ("ffdnet" + ("" if ffdnet_weights else " (random weights)"), lambda: ffdnet(rgb, 0.01)),
            ("bilateral 7x7 (reference)", lambda: bilateral_reference(rgb, 0.01)),
        ]
        for name, fn in rows:
            t = timeit(fn, repeats)
            print(f"| denoise | {name} | {1e3 * t:.1f} | {mp / t:.2f} |")
        t = timeit(lambda: pp.Preprocessor()(packed * 1023), repeats)
        print(f"| pipeline | default (malvar, none, gamma) | {1e3 * t:.1f} | {mp / t:.2f} |")

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


if __name__ == "__main__":
    main()
