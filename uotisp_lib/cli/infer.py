"""``uotisp infer``: RAW patches (``<img>_<idx>.npy``) or DNG files -> sRGB images.

Patches of one image are rendered patch by patch and stitched (grid by seam consistency on the RAW,
:mod:`uotisp_lib.stitching`) into ``<img>.png`` (or ``.jpg``); ``--patches`` also writes one file
per patch ``<stem>.png`` (the challenge's submission format). A DNG is packed to 10 bits (its
CFA pattern and levels read by LibRaw) and rendered in overlapping tiles. Everything is written into a temporary folder and moved into
``--output`` only when every input succeeded: a failure writes nothing.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

FORMATS = ("png", "jpg")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("infer", help="render RAW patches or DNG files with a trained ISP")
    p.add_argument("--checkpoint", required=True, help="an exported ISP folder (isp.json + model.safetensors)")
    p.add_argument("--input", required=True, help="folder of <img>_<idx>.npy RAW patches and/or .dng files")
    p.add_argument("--output", required=True)
    p.add_argument("--format", choices=FORMATS, default="png")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (>= 95)")
    p.add_argument("--patches", action="store_true", help="also write one image per patch, <stem>.<format>")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch", type=int, default=16)
    return p


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    return (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def run(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from uotisp_lib import io as uio
    from uotisp_lib.config import resolve_device
    from uotisp_lib.data.layouts import group_stems
    from uotisp_lib.inference import load_isp, render, render_tiled
    from uotisp_lib.stitching import infer_grid, stitch

    if args.quality < 95 and args.format == "jpg":
        raise ValueError(f"--quality {args.quality}: use 95 or more (lower qualities distort the metrics)")
    src, dst = Path(args.input), Path(args.output)
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: input folder does not exist")
    npys = {p.stem: p for p in sorted(src.glob("*.npy"))}
    dngs = sorted(p for p in src.iterdir() if p.suffix.lower() == ".dng")
    if not npys and not dngs:
        raise FileNotFoundError(f"{src}: no <img>_<idx>.npy RAW patches or .dng files found")
    bundle = load_isp(args.checkpoint, resolve_device(args.device))
    groups = group_stems(npys) if npys else {}
    ext = "." + args.format
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dst.name}.tmp-", dir=dst.parent))
    try:
        for image_id, stems in tqdm(groups.items(), desc="images", unit="img", disable=None):
            raw = torch.from_numpy(uio.load_raw_batch([npys[s] for s in stems]).astype(np.float32) / uio.RAW_MAX)
            raw = raw.permute(0, 3, 1, 2).contiguous()
            out = render(bundle, raw, args.batch)
            grid = infer_grid(raw, kind="raw")
            if grid.low_confidence:
                print(f"warning: {image_id}: low-confidence grid {grid.rows}x{grid.cols} ({grid.confidence:.3f})", file=sys.stderr)
            uio.save_image(tmp / f"{image_id}{ext}", _to_uint8(stitch(out, grid.rows, grid.cols)), quality=args.quality)
            if args.patches:
                for s, o in zip(stems, out):
                    uio.save_image(tmp / "patches" / f"{s}{ext}", _to_uint8(o), quality=args.quality)
        for path in tqdm(dngs, desc="dng", unit="file", disable=None):
            packed = uio.dng_to_packed10(uio.read_dng(path))
            raw = torch.from_numpy(packed.astype(np.float32) / uio.RAW_MAX).permute(2, 0, 1)[None]
            uio.save_image(tmp / f"{path.stem}{ext}", _to_uint8(render_tiled(bundle, raw)[0]), quality=args.quality)
        dst.mkdir(parents=True, exist_ok=True)
        written = 0
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                target = dst / f.relative_to(tmp)
                target.parent.mkdir(parents=True, exist_ok=True)
                f.replace(target)
                written += 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"rendered {len(groups)} patch images and {len(dngs)} DNG files -> {dst} ({written} files)")
    return 0
