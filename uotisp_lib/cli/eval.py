"""``uotisp eval``: score an exported ISP on a split of a UP-ISP folder, one row per image.

Each RAW patch of ``<data>/<split>/raws`` is rendered; PSNR, SSIM and CIEDE2000 against
``<split>/gt`` are averaged over the patches of each image (``<img>_<idx>``), then over images.
Without ground truth the metrics cannot be computed: it says so in one line and reports the
ground-truth-free proxy instead (the colour-statistics distance of the renderings to the target
JPEGs ``train/jpegs``, :func:`uotisp_lib.train.colour_distance`; lower is better).

A folder of DNGs (:mod:`uotisp_lib.data.dng_folder`) is cut into ``--patch`` patches on the fly;
its images are the DNGs and the ground truth their renderings ``<name>.jpg`` (one row per DNG).
"""

from __future__ import annotations

import argparse
from pathlib import Path

METRIC_COLUMNS = ("image", "psnr", "ssim", "de2000")
PROXY_COLUMNS = ("image", "proxy")


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("eval", help="score an exported ISP on a split (PSNR, SSIM, dE2000 per image)",
                       description=__doc__.split("\n\n", 1)[1])
    p.add_argument("--checkpoint", required=True, help="an exported ISP folder (a run's export/ or best/)")
    p.add_argument("--data", required=True,
                   help="UP-ISP folder with <split>/raws (and <split>/gt for the metrics), a Zurich RAW-to-RGB folder, "
                        "or a folder of DNGs ([<split>/]<name>.dng, with <name>.jpg renderings for the metrics)")
    p.add_argument("--patch", type=int, default=None,
                   help="DNG folders only: packed pixels a side of the patches cut from each DNG (default 256)")
    p.add_argument("--split", default="test", help="split to score: train, val, dev or test (default test)")
    p.add_argument("--out", default=None, metavar="METRICS.csv", help="write one row per image here (atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--batch", type=int, default=16, help="patches rendered at once (>= 1)")
    return p


def _check_args(args: argparse.Namespace):
    """Options, data and output checked before rendering -> ``(layout, has_gt, out)``."""
    from uotisp_lib.cli.common import at_least
    from uotisp_lib.cli.train import check_patch
    from uotisp_lib.data.layouts import UPISP_SPLITS, scan_dataset
    from uotisp_lib.io import check_output_path

    at_least(args.batch, 1, "--batch")
    if args.split not in UPISP_SPLITS:
        raise ValueError(f"--split {args.split}: expected one of {', '.join(UPISP_SPLITS)}")
    out = None
    if args.out:
        out = check_output_path(Path(args.out), "--out", kind="file")
        if out.suffix.lower() != ".csv":
            raise ValueError(f"--out {out}: expected a .csv file name")
        if out.exists() and not args.overwrite:
            raise ValueError(f"--out {out}: file exists; expected a new file name (or --overwrite)")
    root = Path(args.data)
    if not root.is_dir():
        raise ValueError(f"--data {root}: {'is not a folder' if root.exists() else 'does not exist'}; expected a UP-ISP folder")
    if args.patch is not None:
        at_least(args.patch, 1, "--patch")
    layout = scan_dataset(root, **({"patch": args.patch} if args.patch else {}))  # UP-ISP, Zurich or DNG (detected)
    check_patch(args.patch, layout)
    if not layout.files.get(args.split, {}).get("raws"):
        raise ValueError(f"--data {root}: no {args.split}/raws; splits with RAW patches: "
                         f"{', '.join(s for s in layout.splits if 'raws' in layout.files[s]) or 'none'}")
    has_gt = bool(layout.files[args.split].get("gt"))
    if has_gt:
        layout.paired(args.split)  # every RAW patch needs its ground truth: one line listing those without
    return layout, has_gt, out


def run(args: argparse.Namespace) -> int:
    from uotisp_lib import io as uio
    from uotisp_lib.cli.common import device
    from uotisp_lib.data.datasets import load_raw_patches, load_srgb_patches
    from uotisp_lib.inference import load_isp, render
    from uotisp_lib.study import per_image_scores

    layout, has_gt, out = _check_args(args)
    bundle = load_isp(args.checkpoint, device(args.device))
    raw = load_raw_patches(layout, args.split)
    preds = render(bundle, raw.images, args.batch)
    n_img = len({s.rsplit("_", 1)[0] for s in raw.stems})
    where = f"{len(raw)} patches of {n_img} images in {layout.root / args.split}"
    if has_gt:
        gt = load_srgb_patches(layout, args.split, "gt")
        table = per_image_scores(preds, gt.select(raw.stems), raw.stems)[list(METRIC_COLUMNS)]
        print(f"{args.checkpoint} on {where}: PSNR {table.psnr.mean():.2f} dB, SSIM {table.ssim.mean():.4f}, "
              f"dE2000 {table.de2000.mean():.2f} (means over images)")
    else:
        print(f"metrics need ground truth: {layout.root / args.split / 'gt'} has no images; "
              "reporting the ground-truth-free proxy instead")
        table = _proxy_table(layout, raw.stems, preds, load_srgb_patches)
        if table is None:
            print(f"no proxy either: {layout.root / 'train' / 'jpegs'} has no target images to compare with")
            return 0
        print(f"{args.checkpoint} on {where}: proxy {table.attrs['overall']:.4f} (colour-statistics distance "
              "to train/jpegs over all patches; lower is better)")
    if out is not None:
        uio.atomic_write_text(out, table.to_csv(index=False, float_format="%.6g"))
        print(f"per-image rows: {out}")
    else:
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    return 0


def _proxy_table(layout, stems, preds, load_srgb_patches):
    """Per-image proxy rows (``image, proxy``) against train/jpegs; ``attrs["overall"]``: all patches
    at once. None without train/jpegs."""
    import pandas as pd

    from uotisp_lib.train import colour_distance

    if not layout.files.get("train", {}).get("jpegs"):
        return None
    targets = load_srgb_patches(layout, "train", "jpegs").images
    images: dict[str, list[int]] = {}
    for i, s in enumerate(stems):
        images.setdefault(s.rsplit("_", 1)[0], []).append(i)
    rows = [{"image": k, "proxy": colour_distance(preds[idx], targets)} for k, idx in sorted(images.items())]
    table = pd.DataFrame(rows, columns=list(PROXY_COLUMNS))
    table.attrs["overall"] = colour_distance(preds, targets)
    return table
