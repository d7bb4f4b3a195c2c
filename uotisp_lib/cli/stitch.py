"""``uotisp stitch``: infer each image's grid from its patches and write the full images.

Input: a folder of ``<img>_<idx>.npy`` packed RAW patches (uint16 HxWx4) or ``<img>_<idx>.png|.jpg``
sRGB patches; ``idx`` is the 0-based row-major position (UP-ISP naming). The kind is inferred from
the files unless ``--kind`` is given. Output folder:

- RAW: ``<img>.npy``, the stitched packed mosaic (uint16 HxWx4), and ``<img>.png``, a quick preview:
  channels (R, (Gr+Gb)/2, B), divided by their joint 99.5th percentile (per image, no white
  balance, so usually greenish), clipped, gamma 1/2.2, 8 bit.
- RGB: ``<img>.png``.
- ``layouts.csv``: one row per image id (see :data:`CSV_COLUMNS`), written atomically.

With ``--layouts-only`` only ``layouts.csv`` is written; RAW patches then go through the fast path
(:func:`uotisp_lib.grid_scoring.iter_grids_from_files`: only the border strips are kept, headers are
checked per file, the 10-bit range only on the strips; one reader thread reads the next images
while the current one is scored), which gives the same grids.

An image whose indices are missing or duplicated, whose files cannot be read, or whose patches
differ in shape is never stitched (nothing is shifted to fill a gap): it gets a ``skipped: ...``
status naming the problem, a warning line on stderr, and the exit code becomes 1. A grid chosen
with low confidence is still written, with ``low_confidence = True`` and a warning line.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io as _stdio
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from uotisp_lib import grid_scoring
from uotisp_lib import io as uio
from uotisp_lib.data.layouts import group_stems, natural_key, parse_stem

# torch is imported only for sRGB patches (RAW grids are scored and stitched in NumPy by the
# one scoring implementation, uotisp_lib.grid_scoring): start-up 0.1 s instead of 2 s.

#: Columns of ``layouts.csv``, in order.
CSV_COLUMNS = (
    "image_id",
    "n_patches",
    "rows",
    "cols",
    "score",
    "confidence",
    "second_rows",
    "second_cols",
    "second_score",
    "low_confidence",
    "status",
)
#: Accepted suffixes per kind (lower case).
SUFFIXES = {"raw": (".npy",), "rgb": (".png", ".jpg", ".jpeg")}
#: Percentile used to normalise RAW previews.
PREVIEW_PERCENTILE = 99.5


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``stitch`` on a subparsers object."""
    p = sub.add_parser("stitch", help="infer patch grids by seam consistency and stitch full images")
    p.add_argument("--input", required=True, help="folder of <img>_<idx>.npy RAW or .png/.jpg sRGB patches")
    p.add_argument("--output", required=True, help="folder for <img>.npy/.png and layouts.csv")
    p.add_argument("--kind", choices=("raw", "rgb"), default=None, help="patch kind (default: from the files)")
    p.add_argument("--border", type=int, default=grid_scoring.DEFAULT_BORDER, help="seam strip width in pixels")
    p.add_argument(
        "--min-confidence",
        type=float,
        default=grid_scoring.DEFAULT_MIN_CONFIDENCE,
        help="grids below this confidence are flagged low_confidence",
    )
    p.add_argument("--method", choices=grid_scoring.METHODS, default="evidence", help="grid ranking")
    p.add_argument(
        "--layouts-only",
        action="store_true",
        help="write only layouts.csv (RAW: reads only the patches' border strips)",
    )
    return p


def _scan(folder: Path, kind: str | None) -> tuple[str, list[tuple[str, Path]]]:
    """``(kind, [(stem, path)])`` of the patch files in ``folder`` (hidden files ignored)."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: input folder does not exist; expected <img>_<idx>.npy or .png/.jpg patches")
    found: dict[str, list[tuple[str, Path]]] = {"raw": [], "rgb": []}
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        p = Path(entry.path)
        for k, suffixes in SUFFIXES.items():
            if p.suffix.lower() in suffixes:
                found[k].append((p.stem, p))
    if kind is None:
        present = [k for k in ("raw", "rgb") if found[k]]
        if len(present) == 2:
            raise ValueError(f"{folder}: holds both .npy RAW and .png/.jpg sRGB patches; pass --kind raw or --kind rgb")
        kind = present[0] if present else "raw"
    if not found[kind]:
        want = "<img>_<idx>.npy RAW" if kind == "raw" else "<img>_<idx>.png/.jpg sRGB"
        raise ValueError(f"{folder}: no patches found; expected {want} patch files")
    return kind, sorted(found[kind], key=lambda sp: natural_key(sp[0]))


def _read_group(kind: str, paths: list[Path]) -> np.ndarray:
    """Read one image's patches -> ``[N, h, w, C]`` (uint16 RAW or uint8 sRGB); shapes must agree."""
    read = uio.read_raw if kind == "raw" else uio.read_srgb
    arrays = [read(p) for p in paths]
    for p, a in zip(paths, arrays):
        if a.shape != arrays[0].shape:
            first = f"{paths[0].name} is {arrays[0].shape}"
            raise ValueError(f"patches of differing shapes: {p.name} is {a.shape}, {first}")
    return np.stack(arrays)


def raw_preview(mosaic: np.ndarray) -> np.ndarray:
    """Quick look at a packed RAW ``HxWx4`` -> uint8 ``HxWx3`` (see the module docstring)."""
    x = mosaic.astype(np.float32)
    rgb = np.stack([x[..., 0], 0.5 * (x[..., 1] + x[..., 2]), x[..., 3]], axis=-1)
    top = float(np.percentile(rgb, PREVIEW_PERCENTILE))
    if top <= 0:
        top = max(float(rgb.max()), 1.0)
    return np.rint(np.clip(rgb / top, 0.0, 1.0) ** (1 / 2.2) * 255).astype(np.uint8)


def _stitch_one(kind: str, stack: np.ndarray, args: argparse.Namespace) -> tuple[grid_scoring.GridChoice, np.ndarray]:
    """Grid choice and the stitched ``H x W x C`` array (dtype kept) of one image's patches."""
    if kind == "raw":  # NumPy: the scoring of --layouts-only, on the same strips
        strips = grid_scoring.raw_strips_of(stack, args.border)
        choice = grid_scoring.choose_from_raw_strips(strips, 1, args.min_confidence, args.method)[0]
        n, h, w, c = stack.shape
        full = stack.reshape(choice.rows, choice.cols, h, w, c).transpose(0, 2, 1, 3, 4)
        return choice, full.reshape(choice.rows * h, choice.cols * w, c)
    import torch

    from uotisp_lib import stitching

    x = torch.from_numpy(stack.astype(np.float32)).permute(0, 3, 1, 2)
    choice = stitching.infer_grid(
        x / 255, kind=kind, border=args.border, min_confidence=args.min_confidence, method=args.method
    )
    full = stitching.stitch(x, choice.rows, choice.cols).permute(1, 2, 0).numpy()
    return choice, full.astype(stack.dtype)  # integers below 2**24: exact in float32


def _results(
    kind: str, groups: list[list[Path]], args: argparse.Namespace, layouts_only: bool
) -> Iterator[tuple[grid_scoring.GridChoice, np.ndarray | None] | Exception]:
    """Per image of ``groups``, in order: ``(choice, stitched array or None)``, or the
    ``ValueError`` / ``OSError`` that names its unreadable or mismatched files. RAW with
    ``--layouts-only``: border strips only, read by a prefetching thread ahead of the scoring
    (:func:`uotisp_lib.grid_scoring.iter_grids_from_files`; the same choices as reading in turn)."""
    if layouts_only and kind == "raw":
        fast = grid_scoring.iter_grids_from_files(groups, args.border, args.min_confidence, args.method)
        with contextlib.closing(fast):  # closing this generator closes the reader thread too
            for res in fast:
                yield res if isinstance(res, Exception) else (res, None)
        return
    for group in groups:
        try:
            yield _stitch_one(kind, _read_group(kind, group), args)
        except (ValueError, OSError) as err:  # RawFormatError / ImageFormatError are ValueErrors
            yield err


def _row(image_id: str, n: int, choice: grid_scoring.GridChoice | None, status: str) -> dict[str, object]:
    row: dict[str, object] = {c: "" for c in CSV_COLUMNS}
    row.update(image_id=image_id, n_patches=n, status=status)
    if choice is not None:
        row.update(
            rows=choice.rows,
            cols=choice.cols,
            score=f"{choice.score:.6g}",
            confidence=f"{choice.confidence:.4f}",
            low_confidence=choice.low_confidence,
        )
        if choice.second is not None:
            r2, c2, s2 = choice.second
            row.update(second_rows=r2, second_cols=c2, second_score=f"{s2:.6g}")
    return row


def _csv_text(rows: list[dict[str, object]]) -> str:
    buf = _stdio.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _write_one(
    kind: str, dst: Path, image_id: str, n: int, choice: grid_scoring.GridChoice, full: np.ndarray | None, args
) -> dict[str, object]:
    """Write one image's outputs (none for ``--layouts-only``), warn on low confidence; its CSV row."""
    if full is None:
        pass
    elif kind == "raw":
        uio.save_raw(dst / f"{image_id}.npy", full)
        uio.save_image(dst / f"{image_id}.png", raw_preview(full))
    else:
        uio.save_image(dst / f"{image_id}.png", full)
    if choice.low_confidence:
        print(
            f"warning: image {image_id!r}: grid {choice.rows}x{choice.cols} chosen with low confidence "
            f"{choice.confidence:.3f} (< {args.min_confidence}); runner-up {choice.second}",
            file=sys.stderr,
        )
    return _row(image_id, n, choice, "low_confidence" if choice.low_confidence else "ok")


def run(args: argparse.Namespace) -> int:
    """Stitch every image of ``args.input`` into ``args.output``; 0 if all were stitched, else 1."""
    src, dst = Path(args.input), Path(args.output)
    uio.check_output_path(dst, "--output")
    if args.border < 2:
        raise ValueError(f"--border must be at least 2 pixels, got {args.border}")
    kind, files = _scan(src, args.kind)
    if dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: output folder must differ from the input folder (outputs would mix with patches)")
    uio.clean_stale_temps(dst)  # half-written files of a killed run
    paths = {}
    for stem, p in files:
        paths.setdefault(stem, p)
    groups, problems = group_stems([s for s, _ in files], strict=False)
    rows: list[dict[str, object]] = []
    skipped: dict[str, list[str]] = {}
    for prob in problems:
        skipped.setdefault(prob.image_id, []).append(prob.detail)
    counts: dict[str, int] = {}  # files per image id (unparseable stems count as their own id)
    for stem, _ in files:
        try:
            image_id = parse_stem(stem)[0]
        except ValueError:
            image_id = stem
        counts[image_id] = counts.get(image_id, 0) + 1
    layouts_only = bool(getattr(args, "layouts_only", False))
    images = list(groups.items())
    results = _results(kind, [[paths[s] for s in stems] for _, stems in images], args, layouts_only)
    with contextlib.closing(results):  # stops the reader thread if writing fails
        for (image_id, stems), res in zip(images, results):
            if isinstance(res, Exception):
                skipped.setdefault(image_id, []).append(str(res))
                continue
            choice, full = res
            rows.append(_write_one(kind, dst, image_id, len(stems), choice, full, args))
    for image_id, details in skipped.items():
        reason = "; ".join(details)
        print(f"warning: image {image_id!r} skipped: {reason}", file=sys.stderr)
        rows.append(_row(image_id, counts.get(image_id, 1), None, f"skipped: {reason}"))
    rows.sort(key=lambda r: natural_key(str(r["image_id"])))
    uio.atomic_write_text(dst / "layouts.csv", _csv_text(rows))
    done = sum(1 for r in rows if not str(r["status"]).startswith("skipped"))
    verb = "inferred grids of" if layouts_only else "stitched"
    print(f"{verb} {done} of {len(rows)} images ({kind}); wrote {dst / 'layouts.csv'}")
    return 1 if skipped else 0
