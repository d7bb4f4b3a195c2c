"""Dataset folder layouts, keyed by file stem (never by list position).

UP-ISP (NTIRE 2026 unpaired ISP challenge) and our synthetic benchmark::

    <root>/train/raws/<img>_<idx>.npy     packed RAW patches (uint16 HxWx4, [R, Gr, Gb, B], 0..1023)
    <root>/train/jpegs/<img>_<idx>.jpg    sRGB targets of other scenes (unpaired)
    <root>/train/gt/<img>_<idx>.png       optional paired ground truth (synthetic benchmark only)
    <root>/val|dev|test/raws/...          and optional .../gt/...

``<idx>`` is the 0-based row-major position of the patch in its parent image ``<img>`` (which may
itself contain underscores); an image's indices must be exactly ``0..N-1``.

Zurich RAW-to-RGB (Ignatov, Van Gool, Timofte, "Replacing Mobile Camera ISP with a Single Deep
Learning Model", CVPRW 2020, PyNET) -- paired Huawei P20 RAW / Canon 5D Mark IV sRGB::

    <root>/train/huawei_raw/<i>.png       16-bit 1-channel Bayer PNG, 10-bit data (max 1023), 448x448
    <root>/train/canon/<i>.jpg            448x448 sRGB target
    <root>/test/huawei_raw, <root>/test/canon

A folder of DNG files (optionally with split sub-folders and each DNG's rendering beside it) is
read too, cut into packed patches on the fly: :mod:`uotisp_lib.data.dng_folder`.

Errors are one line, name the folder or file and say what was expected. Scanning only lists files;
reading them is :mod:`uotisp_lib.io`'s job.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal, overload

import numpy as np

from uotisp_lib import io as uio

#: Split folders of the UP-ISP layout, in canonical order.
UPISP_SPLITS: tuple[str, ...] = ("train", "val", "dev", "test")
#: Kind folder -> accepted file suffixes (lower case).
UPISP_KINDS: dict[str, tuple[str, ...]] = {"raws": (".npy",), "jpegs": (".jpg", ".jpeg"), "gt": (".png",)}
UPISP_EXPECTED = (
    "expected <root>/<split>/raws/<img>_<idx>.npy for split in train, val, dev, test "
    "(optional <split>/jpegs/<img>_<idx>.jpg and <split>/gt/<img>_<idx>.png)"
)
#: Default side, in packed pixels, of the patches cut from each file of a DNG folder (the UP-ISP size).
DNG_PATCH = 256
ZURICH_SPLITS: tuple[str, ...] = ("train", "test")
ZURICH_EXPECTED = "expected <root>/train|test/huawei_raw/<i>.png paired with <root>/train|test/canon/<i>.jpg"

_STEM_RE = re.compile(r"(.+)_([0-9]+)")
_MAX_LISTED = 5


class LayoutError(ValueError):
    """A dataset folder does not have the expected layout; the message names the folder or image."""


@dataclass(frozen=True)
class LayoutProblem:
    """One problem found by :func:`group_stems` with ``strict=False``.

    ``kind`` is ``"unparseable"`` (no ``_<idx>`` suffix), ``"duplicate"`` or ``"missing"`` (indices).
    """

    image_id: str
    kind: str
    detail: str


# --------------------------------------------------------------------------------------------------
# Stems
# --------------------------------------------------------------------------------------------------


def parse_stem(stem: str) -> tuple[str, int]:
    """Split ``<img>_<idx>`` on its LAST underscore -> ``(img, idx)``; ``"a_b_12"`` -> ``("a_b", 12)``.

    ``idx`` is ASCII digits (leading zeros allowed: ``"x_007"`` -> ``("x", 7)``); ``img`` must be
    non-empty. Anything else raises ``ValueError`` naming the stem.
    """
    m = _STEM_RE.fullmatch(stem)
    if m is None:
        raise ValueError(f"stem {stem!r}: expected <image_id>_<index> with a non-negative integer index")
    return m.group(1), int(m.group(2))


def natural_key(stem: str) -> tuple:
    """Sort key ordering digit runs numerically (``img_2`` before ``img_10``); ties broken by text."""
    parts = re.split(r"([0-9]+)", stem)  # text, digits, text, ...: the same type at each position
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), stem


def _fmt_list(items: Iterable[object]) -> str:
    """``[a, b, c, d, e] and N more`` for at most :data:`_MAX_LISTED` items."""
    items = list(items)
    shown = ", ".join(str(i) for i in items[:_MAX_LISTED])
    more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
    return f"[{shown}]{more}"


def _index_problems(image_id: str, indices: list[int]) -> list[LayoutProblem]:
    """Duplicated and missing indices of one image (indices must be exactly 0..N-1)."""
    counts = np.bincount(np.asarray(indices, dtype=np.int64))
    problems = []
    dup = np.flatnonzero(counts > 1).tolist()
    missing = np.flatnonzero(counts == 0).tolist()
    if dup:
        problems.append(LayoutProblem(image_id, "duplicate", f"duplicated indices {_fmt_list(dup)}"))
    if missing:
        problems.append(
            LayoutProblem(
                image_id,
                "missing",
                f"missing indices {_fmt_list(missing)} (expected exactly 0..{len(counts) - 1})",
            )
        )
    return problems


@overload
def group_stems(stems: Iterable[str], *, strict: Literal[True] = ...) -> dict[str, list[str]]: ...
@overload
def group_stems(
    stems: Iterable[str], *, strict: Literal[False]
) -> tuple[dict[str, list[str]], list[LayoutProblem]]: ...


def group_stems(stems: Iterable[str], *, strict: bool = True):
    """Group patch stems by image id -> ``{image_id: [stems sorted by idx]}`` (ids in natural order).

    Each image's indices must be exactly ``0..N-1``. ``strict=True``: the first bad stem raises
    ``ValueError`` (:func:`parse_stem`) and the first bad image :class:`LayoutError` naming the image
    id and the duplicated/missing indices. ``strict=False``: returns ``(good_groups, problems)``
    where bad images are left out of ``good_groups`` and described by :class:`LayoutProblem` s.
    """
    by_image: dict[str, list[tuple[int, str]]] = {}
    problems: list[LayoutProblem] = []
    for stem in stems:
        try:
            image_id, idx = parse_stem(stem)
        except ValueError as err:
            if strict:
                raise
            problems.append(LayoutProblem(stem, "unparseable", str(err)))
            continue
        by_image.setdefault(image_id, []).append((idx, stem))
    groups: dict[str, list[str]] = {}
    for image_id in sorted(by_image, key=natural_key):
        members = sorted(by_image[image_id])
        bad = _index_problems(image_id, [i for i, _ in members])
        if bad and strict:
            raise LayoutError(f"image {image_id!r}: " + "; ".join(p.detail for p in bad))
        problems.extend(bad)
        if not bad:
            groups[image_id] = [s for _, s in members]
    return groups if strict else (groups, problems)


# --------------------------------------------------------------------------------------------------
# UP-ISP
# --------------------------------------------------------------------------------------------------


def _list_files(folder: Path, suffixes: tuple[str, ...]) -> dict[str, Path]:
    """``{stem: path}`` of the visible files in ``folder`` whose suffix (any case) is in ``suffixes``."""
    out: dict[str, Path] = {}
    for entry in os.scandir(folder):
        if entry.name.startswith(".") or not entry.is_file():
            continue  # hidden files, atomic-write temporaries, sub-folders
        p = Path(entry.path)
        if p.suffix.lower() not in suffixes:
            continue
        if p.stem in out:
            raise LayoutError(
                f"{folder}: stem {p.stem!r} appears twice ({out[p.stem].name}, {p.name}); expected one file per stem"
            )
        out[p.stem] = p
    return dict(sorted(out.items(), key=lambda kv: natural_key(kv[0])))


def _check_root(root: Path, expected: str) -> None:
    if not root.exists():
        raise FileNotFoundError(f"{root}: dataset folder does not exist; {expected}")
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: is not a folder; {expected}")


@dataclass(frozen=True)
class UpIspLayout:
    """Files of a UP-ISP style dataset: ``files[split][kind][stem] -> path`` (kinds raws/jpegs/gt).

    Only splits with at least one file appear; stems are in natural order. ``format`` is
    ``"upisp"`` (RAW patches ``<img>_<idx>.npy``), ``"zurich"`` (:func:`zurich_view`: each file a
    whole image, RAW as 16-bit Bayer PNG) or ``"dng"`` (the subclass
    :class:`uotisp_lib.data.dng_folder.DngFolderLayout`: each file cut into patches when read).
    """

    root: Path
    files: dict[str, dict[str, dict[str, Path]]]
    format: str = "upisp"

    @property
    def splits(self) -> tuple[str, ...]:
        """Splits present, in :data:`UPISP_SPLITS` order."""
        return tuple(s for s in UPISP_SPLITS if s in self.files)

    def paths(self, split: str, kind: str = "raws") -> dict[str, Path]:
        """``{stem: path}`` of one split and kind (empty when that kind folder is absent)."""
        if kind not in UPISP_KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(UPISP_KINDS)}")
        if split not in self.files:
            present = ", ".join(self.splits) or "none"
            raise LayoutError(f"{self.root / split}: no such split with files (present: {present}); {UPISP_EXPECTED}")
        return self.files[split].get(kind, {})

    def raw_stems(self, split: str) -> list[str]:
        """Stems of the RAW patches of ``split``, natural order (``img_2`` before ``img_10``)."""
        return list(self.paths(split, "raws"))

    def images(self, split: str, kind: str = "raws") -> dict[str, list[str]]:
        """``{image_id: [stems by idx]}`` of a split and kind; bad groups raise (:func:`group_stems`).
        Zurich: every file is one whole image, ``{stem: [stem]}``."""
        if self.format == "zurich":
            return {s: [s] for s in self.paths(split, kind)}
        try:
            return group_stems(self.paths(split, kind))
        except ValueError as err:
            raise type(err)(f"{self.root / split / kind}: {err}") from err

    def paired(self, split: str) -> list[tuple[str, Path, Path]]:
        """``[(stem, raw_path, gt_path)]`` matched by stem, natural order of stems.

        Every raw needs a gt of the same stem (extra gt files are ignored); otherwise
        :class:`LayoutError` lists up to 5 unmatched stems.
        """
        raws, gts = self.paths(split, "raws"), self.paths(split, "gt")
        gt_dir = self.root / split / "gt"
        if not gts:
            raise LayoutError(
                f"{gt_dir}: no ground truth; paired mode needs {split}/gt/<stem>.png for every {split}/raws/<stem>.npy"
            )
        lonely = [s for s in raws if s not in gts]
        if lonely:
            raise LayoutError(
                f"{gt_dir}: {len(lonely)} RAW patches have no ground truth <stem>.png: {_fmt_list(lonely)}"
            )
        return [(s, p, gts[s]) for s, p in raws.items()]

    def read_image(self, split: str, kind: str, image_id: str) -> np.ndarray:
        """The patches of one image, by idx: RAW ``[N,h,w,4]`` uint16 or sRGB ``[N,H,W,3]`` uint8."""
        groups = self.images(split, kind)
        if image_id not in groups:
            raise LayoutError(f"{self.root / split / kind}: no image {image_id!r} (have {_fmt_list(groups)})")
        paths = self.paths(split, kind)
        if kind == "raws":
            return self.read_raws([paths[s] for s in groups[image_id]])
        images = [uio.read_srgb(paths[s]) for s in groups[image_id]]
        shapes = [img.shape for img in images]
        common = max(set(shapes), key=shapes.count)  # the odd one out is named, not the first
        for s, shape in zip(groups[image_id], shapes):
            if shape != common:
                raise uio.ImageFormatError(
                    f"{paths[s]}: shape {shape} differs from {common} of the other patches of image "
                    f"{image_id!r}; patches of one image must be equal"
                )
        return np.stack(images)

    def read_raws(self, paths: list[Path]) -> np.ndarray:
        """Equally shaped RAW files -> ``uint16`` ``[N,h,w,4]`` ``[R, Gr, Gb, B]`` in 0..1023: ``.npy``
        patches (:func:`uotisp_lib.io.load_raw_batch`), or Zurich Bayer PNGs (:func:`read_zurich_raw`).
        A shape unlike the first file's raises naming both files."""
        if self.format != "zurich":
            return uio.load_raw_batch(paths)
        arrays = [read_zurich_raw(p) for p in paths]
        for p, a in zip(paths, arrays):
            if a.shape != arrays[0].shape:
                raise uio.RawFormatError(f"{p}: shape {a.shape} differs from {arrays[0].shape} of {paths[0]}; "
                                         "a batch needs equal shapes")
        return np.stack(arrays)

    def read_patches(self, split: str, kind: str, image_id: str):
        """:meth:`read_image` as a float32 tensor ``[N,C,h,w]``: RAW in raw units, sRGB in [0,1]."""
        import torch

        arr = self.read_image(split, kind, image_id)
        t = torch.from_numpy(arr.astype(np.float32)).permute(0, 3, 1, 2).contiguous()
        return t if kind == "raws" else t / 255.0

    def summary(self, read_values: bool = True) -> list[dict[str, object]]:
        """One row per split: images and patches per kind, and (``read_values``) the RAW min/max."""
        rows = []
        for split in self.splits:
            row: dict[str, object] = {"split": split}
            for kind, label in (("raws", "raw"), ("jpegs", "jpeg"), ("gt", "gt")):
                paths = self.files[split].get(kind, {})
                row[f"{label}_images"] = len(self.images(split, kind)) if paths else 0
                row[f"{label}_patches"] = len(paths)
            if read_values and self.files[split].get("raws"):
                values = [self.read_raws([p]) for p in self.files[split]["raws"].values()]
                row["raw_min"] = int(min(v.min() for v in values))
                row["raw_max"] = int(max(v.max() for v in values))
            rows.append(row)
        return rows


def scan_upisp(root: str | os.PathLike) -> UpIspLayout:
    """List a UP-ISP style dataset folder -> :class:`UpIspLayout` (no file is opened).

    Raises ``FileNotFoundError`` for a missing root and :class:`LayoutError` when no RAW patch is
    found anywhere (empty folder, wrong layout) or a stem appears twice in one folder. Hidden files
    and files with other suffixes are ignored.
    """
    root = Path(root)
    _check_root(root, UPISP_EXPECTED)
    files: dict[str, dict[str, dict[str, Path]]] = {}
    for split in UPISP_SPLITS:
        kinds = {}
        for kind, suffixes in UPISP_KINDS.items():
            folder = root / split / kind
            if folder.is_dir():
                found = _list_files(folder, suffixes)
                if found:
                    kinds[kind] = found
        if kinds:
            files[split] = kinds
    if not any("raws" in kinds for kinds in files.values()):
        raise LayoutError(f"{root}: no RAW patches found; {UPISP_EXPECTED}")
    return UpIspLayout(root=root, files=files)


# --------------------------------------------------------------------------------------------------
# Zurich RAW-to-RGB
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ZurichLayout:
    """Pairs of a Zurich RAW-to-RGB folder: ``pairs[split] -> [(stem, raw_png, canon_jpg)]``."""

    root: Path
    pairs: dict[str, list[tuple[str, Path, Path]]]

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(s for s in ZURICH_SPLITS if s in self.pairs)

    def paired(self, split: str) -> list[tuple[str, Path, Path]]:
        """``[(stem, raw_png, canon_jpg)]`` of ``split``, stems in numeric order."""
        if split not in self.pairs:
            present = ", ".join(self.splits) or "none"
            raise LayoutError(f"{self.root / split}: no such split (present: {present}); {ZURICH_EXPECTED}")
        return self.pairs[split]


def scan_zurich(root: str | os.PathLike) -> ZurichLayout:
    """List a Zurich RAW-to-RGB folder, pairing ``huawei_raw/<i>.png`` with ``canon/<i>.jpg`` by stem.

    A split folder may be absent; a present one needs both sub-folders and a one-to-one match
    (otherwise :class:`LayoutError` lists up to 5 unmatched stems). No pair at all raises.
    """
    root = Path(root)
    _check_root(root, ZURICH_EXPECTED)
    pairs: dict[str, list[tuple[str, Path, Path]]] = {}
    for split in ZURICH_SPLITS:
        raw_dir, rgb_dir = root / split / "huawei_raw", root / split / "canon"
        if not raw_dir.is_dir() and not rgb_dir.is_dir():
            continue
        for folder in (raw_dir, rgb_dir):
            if not folder.is_dir():
                raise LayoutError(f"{folder}: missing folder; {ZURICH_EXPECTED}")
        raws = _list_files(raw_dir, (".png",))
        rgbs = _list_files(rgb_dir, (".jpg", ".jpeg"))
        only_raw = [s for s in raws if s not in rgbs]
        only_rgb = [s for s in rgbs if s not in raws]
        if only_raw:
            raise LayoutError(f"{rgb_dir}: {len(only_raw)} RAW files have no <stem>.jpg: {_fmt_list(only_raw)}")
        if only_rgb:
            raise LayoutError(f"{raw_dir}: {len(only_rgb)} sRGB files have no <stem>.png: {_fmt_list(only_rgb)}")
        if raws:
            pairs[split] = [(s, p, rgbs[s]) for s, p in raws.items()]
    if not pairs:
        raise LayoutError(f"{root}: no RAW/sRGB pairs found; {ZURICH_EXPECTED}")
    return ZurichLayout(root=root, pairs=pairs)


def read_zurich_raw(path: str | os.PathLike) -> np.ndarray:
    """Read a Zurich ``huawei_raw`` PNG -> ``uint16`` ``HxWx4`` ``[R, Gr, Gb, B]`` in ``0..1023``.

    The PNG is 10-bit Bayer data in a 16-bit 1-channel container (448x448 -> 224x224x4). Assumption:
    red at (0, 0), i.e. RGGB. Nothing official states the Huawei P20 pattern; this is what the PyNET
    reference loader implies: it takes R = ``[0::2, 0::2]``, B = ``[1::2, 1::2]`` and the greens
    ``[0::2, 1::2]`` (named "Gb" there, "Gr" here: green on the red rows) and ``[1::2, 0::2]``, packs
    them as ``[B, G(0,1), R, G(1,0)]`` and divides by 4 * 255 = 1020 (not 1023). Our packing is the
    UP-ISP order ``[R, G(0,1), G(1,0), B]``; normalisation is left to preprocessing.
    """
    return uio.read_bayer_png(path, bits=10, pattern="RGGB")


def zurich_view(z: ZurichLayout) -> UpIspLayout:
    """A Zurich folder seen as a UP-ISP layout (``format="zurich"``): per split, ``raws`` are the
    ``huawei_raw`` PNGs and ``gt`` their paired ``canon`` JPEGs (by stem); the train split's
    ``canon`` JPEGs also serve as its ``jpegs`` (the target set of unpaired training: the same
    scenes, drawn without their pairing)."""
    files: dict[str, dict[str, dict[str, Path]]] = {}
    for split in z.splits:
        pairs = z.paired(split)
        files[split] = {"raws": {s: r for s, r, _ in pairs}, "gt": {s: g for s, _, g in pairs}}
        if split == "train":
            files[split]["jpegs"] = dict(files[split]["gt"])
    return UpIspLayout(root=z.root, files=files, format="zurich")


def scan_dataset(root: str | os.PathLike, *, patch: int = DNG_PATCH) -> UpIspLayout:
    """List a dataset folder, detecting its layout: Zurich RAW-to-RGB when ``<root>/train`` or
    ``<root>/test`` holds ``huawei_raw`` (:func:`scan_zurich`, seen through :func:`zurich_view`);
    a DNG folder when ``<root>`` or one of its split folders holds ``.dng`` files
    (:func:`uotisp_lib.data.dng_folder.scan_dng_folder`, cut into ``patch`` x ``patch`` packed
    patches; ``patch`` is used by that layout only); else UP-ISP (:func:`scan_upisp`). Errors are
    those of the detected layout's scanner."""
    from uotisp_lib.data.dng_folder import has_dng, scan_dng_folder

    root = Path(root)
    if any((root / s / "huawei_raw").is_dir() for s in ZURICH_SPLITS):
        return zurich_view(scan_zurich(root))
    if has_dng(root) or any(has_dng(root / s) for s in UPISP_SPLITS):
        return scan_dng_folder(root, patch)
    return scan_upisp(root)
