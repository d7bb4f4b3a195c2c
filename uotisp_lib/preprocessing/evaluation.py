"""Quality and speed of preprocessing backends against a known clean sensor image.

The synthetic camera model (:mod:`uotisp_lib.data.camera`) gives, for each scene, both the noisy
packed RAW and the clean full-resolution camera RGB it was sampled from. With the true illuminant
gains as white balance, a perfect demosaic + denoise would return exactly that clean image, so the
gap measures the demosaicing and denoising backends alone (the white balance is an oracle here).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from uotisp_lib import metrics
from uotisp_lib.data import camera, sources

from .pipeline import PreprocessConfig, Preprocessor
from .tone import apply_gamma

Tensor = torch.Tensor


@dataclass(frozen=True)
class SceneBatch:
    """RAW scenes with their clean reference.

    raw: packed RAW ``[N,4,s/2,s/2]`` in raw units (0..1023, float32).
    clean: white-balanced camera RGB ``[N,3,s,s]`` in [0,1], noise- and mosaic-free (linear).
    gains: the illuminant gains ``[N,3]`` the sensor saw (R, G, B).
    """

    raw: Tensor
    clean: Tensor
    gains: Tensor


def synthetic_scenes(
    n: int, size: int, seed: int, cam: camera.CameraModel = camera.DEFAULT_CAMERA, noise: bool = True
) -> SceneBatch:
    """``n`` scenes of ``size x size`` from scikit-image's photos and dead leaves, through the camera."""
    if size % 2 or size < 4:
        raise ValueError(f"synthetic_scenes: size must be even and >= 4, got {size}")
    rng = np.random.default_rng(seed)
    photos = sources.builtin_photos()
    srcs = [*photos, sources.DeadLeavesSource(palette=sources.natural_palette(photos, rng))]
    srgb = torch.stack([torch.from_numpy(sources.sample_scene(rng, size, size, srcs)).permute(2, 0, 1) for _ in range(n)])
    gen = torch.Generator().manual_seed(seed)
    gains = camera.sample_gains(n, cam, gen)
    packed = camera.forward(srgb, gains, cam, generator=gen, noise=noise)
    raw = camera.dequantize(camera.quantize(packed, cam).to(torch.int32), cam) * 1023.0
    clean = camera.srgb_to_camera_linear(srgb, cam).clamp(0.0, 1.0)
    return SceneBatch(raw=raw, clean=clean, gains=gains)


def compare_backends(
    scenes: SceneBatch,
    configs: Mapping[str, PreprocessConfig],
    repeats: int = 1,
    border: int = 4,
    progress: bool = False,
) -> list[dict[str, object]]:
    """One row per named config: PSNR / SSIM / dE2000 of its output against the clean reference
    (both through the config's gamma, ``border`` px cropped) and throughput in output MP/s.

    Each config runs with the scenes' true illuminant gains as white balance (oracle), so only
    demosaicing, denoising and gamma differ. Timing is the median of ``repeats`` full passes
    after one warm-up pass. ``progress`` shows a ``tqdm.auto`` bar over the configs.
    """
    from tqdm.auto import tqdm

    rows = []
    for name, cfg in tqdm(configs.items(), total=len(configs), desc="backends", disable=not progress):
        preps = [Preprocessor(dataclasses.replace(cfg, wb=tuple(g.tolist()))) for g in scenes.gains]

        def run() -> Tensor:
            with torch.no_grad():
                return torch.cat([p(scenes.raw[i : i + 1]) for i, p in enumerate(preps)])

        out = run()  # warm-up: first calls pay for kernel selection and model loading
        times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            out = run()
            times.append(time.perf_counter() - t0)
        ref = apply_gamma(scenes.clean, cfg.gamma)
        crop = (slice(None), slice(None), slice(border, -border or None), slice(border, -border or None))
        scores = metrics.summarise(metrics.evaluate(out[crop], ref[crop]))
        mp = out.shape[0] * out.shape[2] * out.shape[3] / 1e6
        rows.append(
            {
                "backend": name,
                "demosaic": cfg.demosaic,
                "denoise": cfg.denoise,
                "psnr": scores["psnr"],
                "ssim": scores["ssim"],
                "de2000": scores["de2000"],
                "mp_per_s": mp / float(np.median(times)),
            }
        )
    return rows


def default_backends(demosaic: Sequence[str], denoise: Sequence[str], sigma: float = 0.01) -> dict[str, PreprocessConfig]:
    """Configs for every ``demosaic x denoise`` pair, named ``"<demosaic>+<denoise>"``."""
    return {
        f"{dm}+{dn}": PreprocessConfig(demosaic=dm, denoise=dn, denoise_sigma=sigma) for dm in demosaic for dn in denoise
    }
