"""A folder of DNG files as a dataset: each DNG is cut into packed RAW patches when it is read.

Layout (split sub-folders are optional)::

    <root>/[<split>/]<name>.dng                Bayer RAW, any 2x2 pattern (read with LibRaw)
    <root>/[<split>/]<name>.jpg|.jpeg|.png     optional: the camera's rendering of <name>.dng (ground truth)
    <root>/[train/]jpegs/<any>.jpg|.jpeg|.png  optional: unpaired sRGB targets of any size

``<split>`` is one of train, val, dev, test; DNGs directly in ``<root>`` (no split folders) form
the train split alone. Pairing goes by file stem, never by position.

Patches. A DNG is read once (:func:`uotisp_lib.io.read_dng`), normalised to [0, 1] with its own
per-channel black levels and white level (:func:`uotisp_lib.io.dng_to_unit`) and cut into
non-overlapping ``patch x patch`` packed ``[R, Gr, Gb, B]`` patches, row-major, stems
``<name>_<idx>``; the right and bottom remainders that do not fill a patch are dropped. Its
rendering is cut into the aligned ``2*patch`` sRGB tiles (same stems): a rendering must be exactly
twice the packed size, or the size of the visible Bayer mosaic (it is then cropped at the top/left
like the mosaic, which packing starts at a red site); any other size raises a one-line
:class:`~uotisp_lib.io.ImageFormatError` naming the rendering and the two sizes expected.

Targets (``jpegs``, what unpaired training matches the renderings to): the images of ``jpegs/``
beside the train DNGs, each cut into ``2*patch`` tiles from its top-left corner; without that
folder, the train split's renderings themselves (the same scenes drawn without their pairing, as
for the Zurich layout).

Nothing is converted on disk: :func:`scan_dng_folder` only lists files, and a
:class:`DngFolderLayout` reads a split's files on first use and keeps the patches in memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from uotisp_lib import io as uio
from uotisp_lib.data.datasets import PatchSet
from uotisp_lib.data.layouts import (
    DNG_PATCH,
    UPISP_SPLITS,
    LayoutError,
    UpIspLayout,
    _check_root,
    _fmt_list,
    _list_files,
)

RENDER_SUFFIXES = (".jpg", ".jpeg", ".png")
DNG_EXPECTED = (
    "expected <root>/[<split>/]<name>.dng for split in train, val, dev, test (optional <name>.jpg|.jpeg|.png "
    "beside it, its rendering, and unpaired targets in <root>/[train/]jpegs/)"
)


# --------------------------------------------------------------------------------------------------
# Arrays in, arrays out
# --------------------------------------------------------------------------------------------------


def cut_tiles(img: np.ndarray, tile: int, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Non-overlapping ``tile x tile`` tiles of ``img`` ``[H, W, C]`` -> ``[rows * cols, tile, tile, C]``.

    ``offset``: rows and columns dropped at the top / left first. Tiles are in row-major order
    (index ``r * cols + c``); the bottom / right remainder that does not fill a tile is dropped, so
    ``rows = (H - dy) // tile`` and ``cols = (W - dx) // tile`` (0 tiles when the image is smaller).
    """
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 1:
        raise ValueError(f"cut_tiles: tile must be a positive integer, got {tile!r}")
    dy, dx = offset
    img = np.asarray(img)[dy:, dx:]
    rows, cols = img.shape[0] // tile, img.shape[1] // tile
    t = img[: rows * tile, : cols * tile].reshape(rows, tile, cols, tile, img.shape[2])
    return np.ascontiguousarray(t.transpose(0, 2, 1, 3, 4).reshape(rows * cols, tile, tile, img.shape[2]))


def rendering_offset(
    rendering_hw: tuple[int, int], packed_hw: tuple[int, int], mosaic_hw: tuple[int, int], crop: tuple[int, int]
) -> tuple[int, int] | None:
    """Where a DNG's rendering lines up with its packed RAW: ``(0, 0)`` when the rendering is exactly
    twice the packed size ``2h x 2w``; ``crop`` (the rows / columns packing dropped at the top / left
    of the mosaic) when it has the size of the visible Bayer mosaic ``H x W``; None otherwise."""
    h, w = packed_hw
    if tuple(rendering_hw) == (2 * h, 2 * w):
        return 0, 0
    if tuple(rendering_hw) == tuple(mosaic_hw):
        return crop
    return None


def _to_patch_set(stems: list[str], arrays: list[np.ndarray], scale: float) -> PatchSet:
    """``[N, h, w, C]`` arrays -> one :class:`PatchSet` ``[N, C, h, w]`` float32 divided by ``scale``."""
    t = torch.from_numpy(np.concatenate(arrays)).permute(0, 3, 1, 2).float() / scale
    return PatchSet(tuple(stems), t.contiguous())


# --------------------------------------------------------------------------------------------------
# Reading (the edge)
# --------------------------------------------------------------------------------------------------


def read_dng_patches(
    dng_path: str | os.PathLike, rendering_path: str | os.PathLike | None, patch: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """One DNG (and its rendering, if any) -> ``(raw, srgb)``.

    ``raw``: float32 ``[N, patch, patch, 4]`` ``[R, Gr, Gb, B]`` in [0, 1] (the file's own levels);
    ``srgb``: uint8 ``[N, 2*patch, 2*patch, 3]``, tile ``i`` covering the scene of ``raw[i]``, or None
    without a rendering. A DNG smaller than one patch raises :class:`~uotisp_lib.io.RawFormatError`,
    a rendering of the wrong size :class:`~uotisp_lib.io.ImageFormatError`, each naming the file.
    """
    dng = uio.read_dng(dng_path)
    unit = uio.dng_to_unit(dng)
    raw = cut_tiles(unit, patch)
    h, w = unit.shape[:2]
    if not len(raw):
        raise uio.RawFormatError(
            f"{dng.path}: packed RAW {h}x{w} is smaller than one {patch}x{patch} patch; expected a smaller patch size"
        )
    if rendering_path is None:
        return raw, None
    img = uio.read_srgb(rendering_path)
    offset = rendering_offset(img.shape[:2], (h, w), dng.mosaic_shape, dng.crop)
    if offset is None:
        mh, mw = dng.mosaic_shape
        raise uio.ImageFormatError(
            f"{rendering_path}: {img.shape[0]}x{img.shape[1]} pixels do not match {dng.path.name}; expected "
            f"{2 * h}x{2 * w} (twice its packed RAW {h}x{w}) or {mh}x{mw} (its Bayer mosaic), height x width"
        )
    return raw, cut_tiles(img, 2 * patch, offset)


def read_target_tiles(path: str | os.PathLike, patch: int) -> np.ndarray:
    """An unpaired sRGB target -> uint8 ``[N, 2*patch, 2*patch, 3]`` tiles from its top-left corner;
    an image smaller than one tile raises :class:`~uotisp_lib.io.ImageFormatError` naming it."""
    img = uio.read_srgb(path)
    tiles = cut_tiles(img, 2 * patch)
    if not len(tiles):
        raise uio.ImageFormatError(
            f"{path}: {img.shape[0]}x{img.shape[1]} pixels are smaller than one {2 * patch}x{2 * patch} target tile "
            f"(twice the patch size {patch}); expected a larger image or a smaller patch size"
        )
    return tiles


def read_split(dngs: dict[str, Path], renderings: dict[str, Path], patch: int) -> tuple[PatchSet, PatchSet | None]:
    """Every DNG of a split (``{name: path}``), each read once -> ``(raw, gt)`` PatchSets keyed
    ``<name>_<idx>``: RAW ``[N, 4, patch, patch]`` in [0, 1], and the tiles of the renderings
    (``{name: path}``) ``[M, 3, 2*patch, 2*patch]`` in [0, 1] (None when there is none)."""
    raw_stems: list[str] = []
    gt_stems: list[str] = []
    raws, gts = [], []
    for name, path in dngs.items():
        raw, gt = read_dng_patches(path, renderings.get(name), patch)
        stems = [f"{name}_{i}" for i in range(len(raw))]
        raw_stems += stems
        raws.append(raw)
        if gt is not None:
            gt_stems += stems
            gts.append(gt)
    return _to_patch_set(raw_stems, raws, 1.0), (_to_patch_set(gt_stems, gts, 255.0) if gts else None)


def read_targets(paths: dict[str, Path], patch: int) -> PatchSet:
    """Unpaired targets (``{name: path}``) -> ``[N, 3, 2*patch, 2*patch]`` in [0, 1], stems ``<name>_<idx>``."""
    stems: list[str] = []
    tiles = []
    for name, path in paths.items():
        t = read_target_tiles(path, patch)
        stems += [f"{name}_{i}" for i in range(len(t))]
        tiles.append(t)
    return _to_patch_set(stems, tiles, 255.0)


# --------------------------------------------------------------------------------------------------
# The layout
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DngFolderLayout(UpIspLayout):
    """A DNG folder seen as a UP-ISP layout (``format="dng"``).

    ``files[split]`` lists the *files* by name: ``raws`` the DNGs, ``gt`` their renderings, and
    (train) ``jpegs`` the targets. :meth:`paths`, :meth:`images`, :meth:`paired` and
    :meth:`patch_set` speak of *patches* ``<name>_<idx>`` (``patch`` packed pixels a side) and read
    a split's files on first use, each file once; the patches are kept on the layout.
    """

    patch: int = DNG_PATCH
    _read: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def patch_set(self, split: str, kind: str = "raws") -> PatchSet:
        """The patches of a split and kind: ``raws`` ``[N, 4, patch, patch]`` in [0, 1] (each DNG
        normalised with its own levels); ``gt`` / ``jpegs`` ``[N, 3, 2*patch, 2*patch]`` in [0, 1].
        The same PatchSet is returned on every call (do not modify it in place)."""
        by_file = super().paths(split, kind)  # checks the split and kind names
        if not by_file:
            raise FileNotFoundError(f"{self.root}: no {kind} files in split {split}; {DNG_EXPECTED}")
        key = (split, kind)
        if key not in self._read:
            kinds = self.files[split]
            if kind == "jpegs" and kinds["jpegs"] == kinds.get("gt"):
                self._read[key] = self.patch_set(split, "gt")  # no jpegs/ folder: the renderings
            elif kind == "jpegs":
                self._read[key] = read_targets(kinds["jpegs"], self.patch)
            else:
                raw, gt = read_split(kinds["raws"], kinds.get("gt", {}), self.patch)
                self._read[(split, "raws")] = raw
                if gt is not None:
                    self._read[(split, "gt")] = gt
        return self._read[key]

    def paths(self, split: str, kind: str = "raws") -> dict[str, Path]:
        """``{patch stem: the file it is cut from}`` (empty when that kind is absent); reads the files."""
        by_file = super().paths(split, kind)
        if not by_file:
            return {}
        return {s: by_file[s.rsplit("_", 1)[0]] for s in self.patch_set(split, kind).stems}

    def check_rendered(self, split: str) -> None:
        """Raise :class:`LayoutError` listing up to 5 DNGs of ``split`` without a rendering (no file is
        read): paired training and the metrics need one per DNG."""
        dngs, renderings = super().paths(split, "raws"), super().paths(split, "gt")
        lonely = [s for s in dngs if s not in renderings]
        if lonely:
            folder = next(iter(dngs.values())).parent
            raise LayoutError(
                f"{folder}: {len(lonely)} DNG files have no rendering <name>.jpg|.jpeg|.png beside them "
                f"(paired mode and the metrics need one per DNG): {_fmt_list(lonely)}"
            )

    def paired(self, split: str) -> list[tuple[str, Path, Path]]:
        """``[(patch stem, dng, rendering)]``; raises as :meth:`check_rendered`, and a rendering of the
        wrong size as :func:`read_dng_patches` (reading the split)."""
        self.check_rendered(split)
        return super().paired(split)

    def read_image(self, split: str, kind: str, image_id: str) -> np.ndarray:
        """The patches of one DNG (``image_id`` its name), by idx: RAW ``[N, h, w, 4]`` uint16 in the
        10-bit units of the UP-ISP layout (``round(x * 1023)``), or sRGB ``[N, H, W, 3]`` uint8."""
        groups = self.images(split, kind)
        if image_id not in groups:
            raise LayoutError(f"{self.root}: no image {image_id!r} in {split} {kind} (have {_fmt_list(groups)})")
        x = self.patch_set(split, kind).select(groups[image_id]).permute(0, 2, 3, 1).numpy()
        scale, dtype = (uio.RAW_MAX, np.uint16) if kind == "raws" else (255, np.uint8)
        return np.rint(x * scale).astype(dtype)

    def grid(self, split: str, image_id: str, kind: str = "raws") -> tuple[int, int]:
        """The ``(rows, cols)`` patch grid of one image (its patches are row-major, so stitching
        needs no inference): from the packed size of the DNG ``image_id`` (``raws`` and ``gt``), or
        from the size of the target image (``jpegs`` of a ``jpegs/`` folder). The file's header and
        pixels are read once per image and the grid kept."""
        by_file = super().paths(split, kind)
        if image_id not in by_file:
            raise LayoutError(f"{self.root}: no image {image_id!r} in {split} {kind} (have {_fmt_list(by_file)})")
        key = ("grid", split, kind, image_id)
        if key not in self._read:
            kinds = self.files[split]
            if kind == "jpegs" and kinds["jpegs"] != kinds.get("gt"):
                h, w = uio.read_srgb(by_file[image_id]).shape[:2]
                self._read[key] = (h // (2 * self.patch), w // (2 * self.patch))
            else:
                h, w = uio.read_dng(kinds["raws"][image_id]).packed.shape[:2]
                self._read[key] = (h // self.patch, w // self.patch)
        return self._read[key]

    def summary(self, read_values: bool = True) -> list[dict[str, object]]:
        """One row per split, as :meth:`UpIspLayout.summary`, counting *patches* (``patch`` packed
        pixels a side) and images (DNGs, target images); the RAW min/max in the 10-bit units of
        :meth:`read_image` (each DNG normalised with its own levels). Reads every file."""
        rows = []
        for split in self.splits:
            row: dict[str, object] = {"split": split}
            for kind, label in (("raws", "raw"), ("jpegs", "jpeg"), ("gt", "gt")):
                has = bool(self.files[split].get(kind))
                row[f"{label}_images"] = len(self.images(split, kind)) if has else 0
                row[f"{label}_patches"] = len(self.patch_set(split, kind)) if has else 0
            if read_values and self.files[split].get("raws"):
                x = self.patch_set(split, "raws").images
                row["raw_min"] = int(np.rint(float(x.min()) * uio.RAW_MAX))
                row["raw_max"] = int(np.rint(float(x.max()) * uio.RAW_MAX))
            rows.append(row)
        return rows

    def read_raws(self, paths: list[Path]) -> np.ndarray:
        """Whole DNG files -> uint16 ``[N, h, w, 4]`` in 0..1023 (:func:`uotisp_lib.io.dng_to_packed10`);
        a packed shape unlike the first file's raises naming both files."""
        arrays = [uio.dng_to_packed10(uio.read_dng(p)) for p in paths]
        for p, a in zip(paths, arrays):
            if a.shape != arrays[0].shape:
                raise uio.RawFormatError(f"{p}: shape {a.shape} differs from {arrays[0].shape} of {paths[0]}; "
                                         "a batch needs equal shapes")
        return np.stack(arrays)


def has_dng(folder: Path) -> bool:
    """Whether ``folder`` directly holds a visible ``.dng`` file (any case)."""
    if not folder.is_dir():
        return False
    with os.scandir(folder) as entries:
        return any(e.name.lower().endswith(".dng") and not e.name.startswith(".") and e.is_file() for e in entries)


def scan_dng_folder(root: str | os.PathLike, patch: int = DNG_PATCH) -> DngFolderLayout:
    """List a DNG folder (see the module docstring) -> :class:`DngFolderLayout`; no file is opened.

    Renderings are matched to DNGs by stem (images of other stems beside the DNGs are ignored).
    Raises ``FileNotFoundError`` for a missing root and :class:`LayoutError` when no DNG is found,
    when DNGs lie both in ``<root>`` and in split folders, or a stem appears twice in one folder.
    """
    root = Path(root)
    _check_root(root, DNG_EXPECTED)
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1:
        raise ValueError(f"patch {patch!r}: expected a positive integer (packed pixels a side)")
    folders = {s: root / s for s in UPISP_SPLITS if has_dng(root / s)}
    if has_dng(root):
        if folders:
            raise LayoutError(f"{root}: DNG files both in the folder and in {', '.join(folders)}/; "
                              "expected either a flat folder (the train split) or split sub-folders")
        folders = {"train": root}
    if not folders:
        raise LayoutError(f"{root}: no .dng files found; {DNG_EXPECTED}")
    files: dict[str, dict[str, dict[str, Path]]] = {}
    for split, folder in folders.items():
        dngs = _list_files(folder, (".dng",))
        renderings = {s: p for s, p in _list_files(folder, RENDER_SUFFIXES).items() if s in dngs}
        files[split] = {"raws": dngs, **({"gt": renderings} if renderings else {})}
    if "train" in files:
        target_dir = folders["train"] / "jpegs"
        targets = _list_files(target_dir, RENDER_SUFFIXES) if target_dir.is_dir() else {}
        if targets or "gt" in files["train"]:
            files["train"]["jpegs"] = targets or dict(files["train"]["gt"])
    return DngFolderLayout(root=root, files=files, format="dng", patch=int(patch))
