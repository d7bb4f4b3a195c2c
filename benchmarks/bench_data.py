"""Streaming patches (issue 11, part 6): peak RSS and samples/s of one colornet-style epoch.

Builds a synthetic UP-ISP train split of ``--scale`` times the challenge's size (13,420 RAW patches
256x256x4 uint16 ``.npy`` + 13,421 JPEG patches 512x512; images of 6x7 = 42 patches), then measures,
each in a fresh child process (its own ``ru_maxrss``), alternating A B A B ... ``--repeats`` times
on a warm page cache:

- ``bare``: ``np.load`` of every RAW file and the decode of every JPEG (:func:`uotisp_lib.io.read_srgb`),
  in a random order, nothing kept: the rate the streaming loader is held to (target: >= 80%);
- ``bare32``: the same plus the conversion to float32 in [0, 1] that any trainer needs (one
  multiply per array, nothing kept): what separates the bare rate from a usable one;
- ``stream``: one epoch of colornet-style batches from ``load_training_data(..., stream=True)``
  (:class:`~uotisp_lib.data.streaming.StreamingPatches`): the epoch's shuffled source batches of
  ``--batch`` RAW patches, read ahead by a ``DataLoader`` with ``--workers`` processes, and one
  uniformly drawn JPEG target per source, as float32 tensors (what a trainer's step receives);
- ``memory``: ``load_training_data(...)`` as before (whole splits as float32 tensors), once.

A sample is one RAW patch and one JPEG patch. Peak RSS of the in-memory load grows with the
dataset: it is extrapolated linearly to the full size from the measured scale (``base + (peak -
base) / scale``, ``base`` the RSS of a child that only imports); the streaming peak is reported as
measured (it holds a few batches, whatever the dataset's size). Files are deleted afterwards unless
``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FULL_RAW, FULL_JPEG, PER_IMAGE = 13_420, 13_421, 42
GIB = 1024**3


def build(root: Path, scale: float, seed: int = 0) -> tuple[int, int]:
    """Write ``round(scale * 13,420)`` RAW and ``round(scale * 13,421)`` JPEG patches under ``root/train``."""
    from uotisp_lib import io as uio

    n_raw, n_jpg = max(PER_IMAGE, round(scale * FULL_RAW)), max(PER_IMAGE, round(scale * FULL_JPEG))
    rng = np.random.default_rng(seed)
    (root / "train" / "raws").mkdir(parents=True, exist_ok=True)
    (root / "train" / "jpegs").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:512, 0:512].astype(np.float32) / 512.0
    for i in range(n_raw):
        raw = rng.integers(40, 1000, (256, 256, 4), dtype=np.uint16)
        uio.save_raw(root / "train" / "raws" / f"r{i // PER_IMAGE}_{i % PER_IMAGE}.npy", raw)
    for i in range(n_jpg):
        c = rng.random(3)  # a smooth gradient with mild noise: a photo-like JPEG size
        img = 255 * (0.5 * c[None, None] + 0.3 * np.stack([xx, yy, 1 - xx], -1)) + rng.normal(0, 4, (512, 512, 3))
        uio.save_image(root / "train" / "jpegs" / f"t{i // PER_IMAGE}_{i % PER_IMAGE}.jpg",
                       img.clip(0, 255).astype(np.uint8), quality=95)
    return n_raw, n_jpg


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def measure(what: str, root: Path, batch: int, workers: int, seed: int, crop: int | None = None) -> dict:
    """One measurement in this (child) process -> ``{"seconds", "samples", "peak"}``."""
    import torch

    torch.set_num_threads(1)
    from uotisp_lib import io as uio
    from uotisp_lib.experiments import load_training_data, random_pair_fn

    if what == "base":
        return {"seconds": 0.0, "samples": 0, "peak": _peak_bytes()}
    if what in ("bare", "bare32"):
        raws = sorted((root / "train" / "raws").glob("*.npy"))
        jpgs = sorted((root / "train" / "jpegs").glob("*.jpg"))
        order = np.random.default_rng(seed).permutation(len(raws))
        pick = np.random.default_rng(seed + 1).integers(0, len(jpgs), len(raws))
        t0 = time.perf_counter()
        convert = what == "bare32"
        for i, j in zip(order, pick):
            x, y = np.load(raws[i]), uio.read_srgb(jpgs[j])
            if convert:  # the least a trainer needs: float32 in [0, 1]
                np.multiply(x, np.float32(1 / uio.RAW_MAX), dtype=np.float32)
                np.multiply(y, np.float32(1 / 255), dtype=np.float32)
        return {"seconds": time.perf_counter() - t0, "samples": len(raws), "peak": _peak_bytes()}
    if what == "memory":
        t0 = time.perf_counter()
        data = load_training_data(root, proxy_fraction=0.0, seed=seed)
        n = len(data.raw_train)
        return {"seconds": time.perf_counter() - t0, "samples": n, "peak": _peak_bytes()}
    if what == "stream":
        data = load_training_data(root, proxy_fraction=0.0, seed=seed, stream=True)  # lists files, reads none
        raw, targets = data.raw_train, data.targets
        t0 = time.perf_counter()  # like bare: the file listing is not timed, the loader's start is
        stems = list(raw.stems)
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(stems), generator=gen).tolist()
        batches = [[stems[i] for i in order[b : b + batch]] for b in range(0, len(stems), batch)]
        raw.prefetch(batches, num_workers=workers)
        pair = random_pair_fn(targets.stems)
        total = 0.0
        for b in batches:
            x = raw.select(b)
            y = targets.select(pair(b, gen))
            total += float(x[:, :, 0, 0].sum() + y[:, :, 0, 0].sum())  # touch the tensors
        return {"seconds": time.perf_counter() - t0, "samples": len(stems), "peak": _peak_bytes()}
    if what.startswith("train"):  # train<N>: N colornet pseudo-pair steps on streamed data (batch --batch)
        from uotisp_lib.experiments import model_inputs
        from uotisp_lib.train import PseudoPairConfig, PseudoPairTrainer

        steps = int(what[5:])
        data = load_training_data(root, proxy_fraction=0.0, seed=seed, stream=True)
        cfg = PseudoPairConfig(arch="colornet", batch_size=batch, stage1_epochs=1, stage2_epochs=0, seed=seed, crop=crop)
        trainer = PseudoPairTrainer(cfg, model_inputs(data.raw_train, "rgb", None), data.targets,
                                    random_pair_fn(data.targets.stems), root / "run")  # deleted with the files
        stems = list(trainer.sources.stems)
        batches = [stems[b * batch : (b + 1) * batch] for b in range(steps)]
        trainer.sources.prefetch(batches, num_workers=workers)
        t0 = time.perf_counter()
        for b in batches:
            trainer.train_step(b, 0)
        return {"seconds": time.perf_counter() - t0, "samples": steps * batch, "peak": _peak_bytes()}
    raise ValueError(what)


def child(what: str, args) -> dict:
    cmd = [sys.executable, __file__, "--child", what, "--root", str(args.root), "--batch", str(args.batch),
           "--workers", str(args.workers)] + (["--crop", str(args.crop)] if args.crop else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=0.05, help="fraction of the challenge's size (default 0.05)")
    p.add_argument("--batch", type=int, default=24, help="patches per batch (colornet pseudo-pairs: 24)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the streaming loader (default 0, as `uotisp train`)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--root", type=Path, default=None, help="folder for the files (default: a temporary one)")
    p.add_argument("--keep", action="store_true", help="keep the files")
    p.add_argument("--train-steps", type=int, default=0,
                   help="also run this many colornet pseudo-pair training steps on the streamed data (peak RSS, s/step)")
    p.add_argument("--crop", type=int, default=None,
                   help="training crops (sRGB pixels) of the --train-steps steps (default: whole 512x512 patches)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.root, args.batch, args.workers, seed=0, crop=args.crop)))
        return 0
    made = args.root is None
    args.root = Path(tempfile.mkdtemp(prefix="bench_data_")) if made else args.root
    try:
        t0 = time.perf_counter()
        n_raw, n_jpg = build(args.root, args.scale)
        size = sum(f.stat().st_size for f in args.root.rglob("*") if f.is_file())
        print(f"built {n_raw} RAW + {n_jpg} JPEG patches ({size / GIB:.2f} GiB on disk) in {time.perf_counter() - t0:.0f} s "
              f"(scale {args.scale}); batch {args.batch}, {args.workers} worker(s), {args.repeats} repeats, 1 torch thread, "
              f"load average {os.getloadavg()[0]:.1f}")
        child("bare", args)  # warm the page cache
        base = child("base", args)["peak"]
        runs: dict[str, list[dict]] = {"bare": [], "bare32": [], "stream": []}
        for _ in range(args.repeats):
            for what in ("bare", "bare32", "stream"):
                runs[what].append(child(what, args))
        mem = child("memory", args)
        rate = {w: [r["samples"] / r["seconds"] for r in rs] for w, rs in runs.items()}
        ratios = [s / b for s, b in zip(rate["stream"], rate["bare"])]
        ratios32 = [s / b for s, b in zip(rate["stream"], rate["bare32"])]
        peak = {w: max(r["peak"] for r in rs) for w, rs in runs.items()}
        mem_full = base + (mem["peak"] - base) / (n_raw / FULL_RAW)
        fmt = lambda v: " / ".join(f"{x:.1f}" for x in (min(v), statistics.median(v), max(v)))  # noqa: E731
        print()
        print("| measurement | samples/s min / median / max | peak RSS GiB (measured) | peak RSS GiB at full size | target |")
        print("|---|---:|---:|---:|---|")
        print(f"| child that only imports | | {base / GIB:.2f} | {base / GIB:.2f} | |")
        print(f"| bare np.load + JPEG decode | {fmt(rate['bare'])} | {peak['bare'] / GIB:.2f} | {peak['bare'] / GIB:.2f} | |")
        print(f"| bare + float32 conversion | {fmt(rate['bare32'])} | {peak['bare32'] / GIB:.2f} | {peak['bare32'] / GIB:.2f} | |")
        print(f"| streaming epoch ({args.workers} worker(s)) | {fmt(rate['stream'])} | {peak['stream'] / GIB:.2f} | "
              f"{peak['stream'] / GIB:.2f} (does not grow) | < 4 GiB: {'met' if peak['stream'] < 4 * GIB else 'NOT met'} |")
        print(f"| in-memory load (before) | {mem['samples'] / mem['seconds']:.1f} (load only) | {mem['peak'] / GIB:.2f} | "
              f"{mem_full / GIB:.1f} (linear) | |")
        if args.train_steps:
            tr = child(f"train{args.train_steps}", args)
            print(f"| colornet training, {args.train_steps} steps of {args.batch}, "
                  f"{f'{args.crop} px crops' if args.crop else 'whole patches'} (streamed) | "
                  f"{tr['samples'] / tr['seconds']:.2f} ({tr['seconds'] / args.train_steps:.1f} s/step) | "
                  f"{tr['peak'] / GIB:.2f} | {tr['peak'] / GIB:.2f} (per step: does not grow) | "
                  f"< 4 GiB: {'met' if tr['peak'] < 4 * GIB else 'NOT met'} |")
        med = statistics.median(ratios)
        print(f"| streaming / bare (pair by pair) | {min(ratios):.2f} / {med:.2f} / {max(ratios):.2f} | | | "
              f">= 0.80: {'met' if med >= 0.8 else 'NOT met'} |")
        print(f"| streaming / (bare + float32) (pair by pair) | {min(ratios32):.2f} / {statistics.median(ratios32):.2f} / "
              f"{max(ratios32):.2f} | | | |")
        print("\nPeak RSS: ru_maxrss of the measuring process; the streaming loader's DataLoader worker(s) are "
              "separate processes holding a few batches each (not counted).")
    finally:
        if made and not args.keep:
            shutil.rmtree(args.root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
