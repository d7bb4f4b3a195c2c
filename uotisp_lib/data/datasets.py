"""In-memory patch sets for training and evaluation, keyed by stem.

A :class:`PatchSet` is a list of stems and a tensor ``[N,C,H,W]`` in the same order; lookups go by
stem (:meth:`PatchSet.select`), never by position in some other list. The challenge-sized sets
(13k RAW patches of 256x256x4 as float32: 13 GiB) do not fit a laptop; the ``cpu`` and ``smoke``
profiles do, and ``full`` runs are expected on a machine with the memory for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

from uotisp_lib import io as uio
from uotisp_lib.data.layouts import UpIspLayout


@dataclass(frozen=True)
class PatchSet:
    """``stems[i]`` names ``images[i]`` (``[N,C,H,W]`` float32)."""

    stems: tuple[str, ...]
    images: torch.Tensor

    def __post_init__(self) -> None:
        if len(self.stems) != self.images.shape[0]:
            raise ValueError(f"PatchSet: {len(self.stems)} stems for {self.images.shape[0]} images")
        if len(set(self.stems)) != len(self.stems):
            raise ValueError("PatchSet: duplicate stems")

    def __len__(self) -> int:
        return len(self.stems)

    @property
    def index(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.stems)}

    def select(self, stems: Sequence[str]) -> torch.Tensor:
        """Images of ``stems`` in that order; an unknown stem raises ``KeyError`` naming it."""
        idx = self.index
        missing = [s for s in stems if s not in idx]
        if missing:
            raise KeyError(f"PatchSet: unknown stems {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        return self.images[torch.as_tensor([idx[s] for s in stems], dtype=torch.long)]

    def to(self, device: str | torch.device) -> "PatchSet":
        return PatchSet(self.stems, self.images.to(device))

    def subset(self, stems: Iterable[str]) -> "PatchSet":
        stems = tuple(stems)
        return PatchSet(stems, self.select(stems))


def load_raw_patches(layout: UpIspLayout, split: str, *, black: float = 0.0, white: float = float(uio.RAW_MAX)) -> PatchSet:
    """The packed RAW patches of ``split`` as ``[N,4,h,w]`` in [0,1] (``(x - black) / (white - black)``).
    A DNG folder's patches are normalised with each file's own levels (``black`` / ``white`` unused)."""
    if layout.format == "dng":
        return layout.patch_set(split, "raws")
    paths = layout.paths(split, "raws")
    if not paths:
        raise FileNotFoundError(f"{layout.root / split / 'raws'}: no RAW patches")
    arr = layout.read_raws(list(paths.values())).astype(np.float32)
    t = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
    return PatchSet(tuple(paths), ((t - black) / (white - black)).clamp(0.0, 1.0))


def load_srgb_patches(layout: UpIspLayout, split: str, kind: str = "jpegs") -> PatchSet:
    """The sRGB patches (``jpegs`` targets or ``gt`` ground truth) of ``split`` as ``[N,3,H,W]`` in [0,1]."""
    if layout.format == "dng":
        return layout.patch_set(split, kind)
    paths = layout.paths(split, kind)
    if not paths:
        raise FileNotFoundError(f"{layout.root / split / kind}: no {kind} images")
    first = uio.read_srgb(next(iter(paths.values())))
    out = np.empty((len(paths), *first.shape), dtype=np.uint8)
    for i, (stem, p) in enumerate(paths.items()):
        img = uio.read_srgb(p)
        if img.shape != first.shape:
            raise uio.ImageFormatError(f"{p}: shape {img.shape} differs from {first.shape}; patches must be equal")
        out[i] = img
    t = torch.from_numpy(out).permute(0, 3, 1, 2).float() / 255.0
    return PatchSet(tuple(paths), t.contiguous())
