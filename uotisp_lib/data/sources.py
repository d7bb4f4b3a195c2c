"""Scene sources for the synthetic benchmark: bundled photographs, a user folder, dead leaves.

Sources are arrays in memory (float32 ``HxWx3`` sRGB in [0,1], HWC because they are NumPy images
before the camera model); :func:`sample_scene` turns a few of them into many distinct scenes by
random crops at random scales and horizontal flips.

- :data:`BUILTIN_PHOTOS`: colour photographs that ship inside pip-installable packages, loaded
  offline, with their credit and licence from the packages' own docs: scikit-image
  (``skimage/data``: :data:`SKIMAGE_PHOTOS` and the left view of the Middlebury motorcycle),
  scikit-learn (``sklearn/datasets/images``: ``china``, ``flower``) and matplotlib
  (``sample_data/grace_hopper.jpg``). imageio's standard images and ``scipy.datasets`` are *not*
  bundled (downloaded on first use), so they are not used.
- :func:`folder_source`: every JPEG/PNG in a user folder.
- :class:`DeadLeavesSource`: the dead-leaves model (Lee, Mumford & Huang 2001, "Occlusion models
  for natural images: a statistical study of a scale-invariant dead leaves model", IJCV 41):
  opaque disks with radii ``p(r) ~ r^-3`` (scale invariant) dropped front to back, coloured from a
  palette of pixels sampled from the real photographs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

#: Colour photographs bundled in the scikit-image wheel: name -> (loader in skimage.data, credit, licence).
SKIMAGE_PHOTOS: dict[str, dict[str, str]] = {
    "astronaut": {
        "credit": "Eileen Collins, NASA Great Images database",
        "licence": "public domain (no known copyright restrictions)",
    },
    "chelsea": {"credit": "Chelsea the cat, photo by Stefan van der Walt", "licence": "CC0"},
    "coffee": {"credit": "Coffee cup, photo by Rachel Michetti, courtesy of Pikolo Espresso Bar", "licence": "CC0"},
    "rocket": {"credit": "Falcon 9 / DSCOVR launch, SpaceX", "licence": "public domain (released by SpaceX)"},
}

#: Further photographs shipped by pip packages: name -> package, file inside it, credit, licence.
EXTRA_PHOTOS: dict[str, dict[str, str]] = {
    "motorcycle": {
        "package": "skimage",
        "file": "data/motorcycle_left.png",
        "credit": "Middlebury 2014 stereo benchmark (Scharstein et al., GCPR 2014), left view, via scikit-image",
        "licence": "research use, as redistributed by scikit-image",
    },
    "china": {
        "package": "sklearn",
        "file": "datasets/images/china.jpg",
        "credit": "danielbuechele (Flickr), via scikit-learn",
        "licence": "CC BY 2.0",
    },
    "flower": {
        "package": "sklearn",
        "file": "datasets/images/flower.jpg",
        "credit": "vultilion (Flickr), via scikit-learn",
        "licence": "CC BY 2.0",
    },
    "grace_hopper": {
        "package": "matplotlib",
        "file": "mpl-data/sample_data/grace_hopper.jpg",
        "credit": "Rear Admiral Grace Hopper, U.S. Navy photo, via matplotlib",
        "licence": "public domain (U.S. government work)",
    },
}

#: Every bundled photograph by short name (see the module docstring).
BUILTIN_PHOTOS: dict[str, dict[str, str]] = {
    **{n: {"package": "skimage", **v} for n, v in SKIMAGE_PHOTOS.items()},
    **EXTRA_PHOTOS,
}

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")

#: Dead-leaves radius exponent: p(r) ~ r^-3 makes the model scale invariant (Lee et al. 2001).
DEAD_LEAVES_ALPHA = 3.0


@dataclass(frozen=True, eq=False)
class PhotoSource:
    """A photograph: ``image`` float32 ``HxWx3`` sRGB in [0,1]; ``name`` is recorded in meta.json."""

    name: str
    image: np.ndarray = field(repr=False)
    credit: str = ""
    licence: str = ""


@dataclass(frozen=True, eq=False)
class DeadLeavesSource:
    """Procedural dead-leaves scenes (Lee, Mumford & Huang 2001).

    Attributes:
        palette: ``Kx3`` float32 sRGB colours the disks are drawn from.
        min_radius, max_radius: radius range as fractions of the shorter image side.
        coverage: expected number of disks over a pixel (the rest shows a background colour).
        shade: per-disk brightness jitter ``U[1 - shade, 1]`` and a global illumination ramp of
            the same amplitude (so flat disks are not perfectly flat between scenes).
        blur_sigma: Gaussian blur in pixels that softens the disk edges (anti-aliasing).
    """

    palette: np.ndarray = field(repr=False)
    name: str = "dead_leaves"
    min_radius: float = 0.01
    max_radius: float = 0.2
    coverage: float = 3.0
    shade: float = 0.25
    blur_sigma: float = 0.6


SceneSource = Union[PhotoSource, DeadLeavesSource]


# ------------------------------------------------------------------------------------- photos
def to_float_rgb(img: np.ndarray, where: str) -> np.ndarray:
    """uint8/uint16/float image (gray, RGB or RGBA) -> float32 ``HxWx3`` in [0,1]; ``where`` names it in errors."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"{where}: expected a gray, RGB or RGBA image, got shape {img.shape}")
    img = img[:, :, :3]
    if img.dtype == np.uint8:
        out = img.astype(np.float32) / 255.0
    elif img.dtype == np.uint16:
        out = img.astype(np.float32) / 65535.0
    elif np.issubdtype(img.dtype, np.floating):
        out = np.clip(img.astype(np.float32), 0.0, 1.0)
    else:
        raise ValueError(f"{where}: expected uint8, uint16 or float pixels, got {img.dtype}")
    if min(out.shape[:2]) < 8:
        raise ValueError(f"{where}: image too small ({out.shape[0]}x{out.shape[1]}); expected at least 8x8")
    return np.ascontiguousarray(out)


@lru_cache(maxsize=None)
def _load_builtin(name: str) -> np.ndarray:
    import importlib

    info = BUILTIN_PHOTOS[name]
    if name in SKIMAGE_PHOTOS:
        import skimage.data

        raw, where = getattr(skimage.data, name)(), f"skimage.data.{name}"
    else:
        import imageio.v3 as iio

        try:
            pkg = importlib.import_module(info["package"])
        except ImportError as exc:
            raise ImportError(f"photo {name!r} ships with the {info['package']!r} package; pip install it") from exc
        path = Path(pkg.__file__).parent / info["file"]
        raw, where = iio.imread(path, plugin="pillow"), str(path)
    img = to_float_rgb(raw, where)
    img.setflags(write=False)  # shared by the cache
    return img


def builtin_photos(names: Sequence[str] | None = None) -> list[PhotoSource]:
    """Bundled colour photographs by short name (:data:`BUILTIN_PHOTOS`), offline; by default the
    four scikit-image ones (:data:`SKIMAGE_PHOTOS`, what the profiles' main benchmarks use)."""
    names = list(SKIMAGE_PHOTOS) if names is None else list(names)
    unknown = [n for n in names if n not in BUILTIN_PHOTOS]
    if unknown:
        raise ValueError(f"builtin_photos: unknown photo(s) {unknown}; expected names from {list(BUILTIN_PHOTOS)}")
    return [
        PhotoSource(
            f"{BUILTIN_PHOTOS[n]['package']}:{n}", _load_builtin(n), BUILTIN_PHOTOS[n]["credit"], BUILTIN_PHOTOS[n]["licence"]
        )
        for n in names
    ]


def folder_source(path: str | Path) -> list[PhotoSource]:
    """Every ``*.jpg|*.jpeg|*.png`` directly in ``path`` (sorted by name) as photo sources.

    Raises FileNotFoundError for a missing folder, ValueError for a folder without photos or an
    unreadable file (the message names it).
    """
    import imageio.v3 as iio

    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: photo folder not found; expected a folder of JPEG/PNG photos")
    files = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES)
    if not files:
        raise ValueError(f"{root}: no photos found; expected JPEG or PNG files ({', '.join(PHOTO_SUFFIXES)})")
    out = []
    for f in files:
        try:
            img = iio.imread(f, plugin="pillow")  # JPEG/PNG only: no probing of other plugins
        except Exception as exc:  # imageio raises many types for corrupt files
            raise ValueError(f"{f}: cannot read image ({exc}); expected a valid JPEG or PNG") from exc
        out.append(PhotoSource(f"folder:{f.name}", to_float_rgb(img, str(f)), credit=str(f)))
    return out


def natural_palette(photos: Sequence[PhotoSource], rng: np.random.Generator, k: int = 512) -> np.ndarray:
    """``k`` colours (float32 ``kx3``) sampled uniformly from the pixels of ``photos``."""
    if not photos:
        raise ValueError("natural_palette: expected at least one photo")
    which = rng.integers(0, len(photos), size=k)
    cols = np.empty((k, 3), dtype=np.float32)
    for i, p in enumerate(photos):
        sel = np.flatnonzero(which == i)
        h, w = p.image.shape[:2]
        cols[sel] = p.image[rng.integers(0, h, sel.size), rng.integers(0, w, sel.size)]
    return cols


# -------------------------------------------------------------------------------- dead leaves
def _radii(rng: np.random.Generator, n: int, rmin: float, rmax: float) -> np.ndarray:
    """Inverse-CDF samples of ``p(r) ~ r^-3`` on [rmin, rmax]."""
    u = rng.random(n)
    return (rmin**-2 - u * (rmin**-2 - rmax**-2)) ** -0.5


def dead_leaves(rng: np.random.Generator, h: int, w: int, src: DeadLeavesSource) -> np.ndarray:
    """A dead-leaves scene float32 ``hxwx3`` sRGB in [0,1] (Lee, Mumford & Huang 2001).

    Disks are painted back to front, each only inside its bounding box (NumPy has no "first
    covering disk" primitive; a dense disks x pixels test would need gigabytes at full size).
    """
    from scipy.ndimage import gaussian_filter

    side = min(h, w)
    rmin, rmax = max(1.0, src.min_radius * side), max(1.5, src.max_radius * side)
    mean_r2 = 2.0 * math.log(rmax / rmin) / (rmin**-2 - rmax**-2)  # E[r^2] for p(r) ~ r^-3
    n = int(min(50_000, math.ceil(src.coverage * h * w / (math.pi * mean_r2))))
    r = _radii(rng, n, rmin, rmax)
    cy, cx = rng.random(n) * h, rng.random(n) * w
    pal = np.asarray(src.palette, dtype=np.float32)
    cols = pal[rng.integers(0, len(pal), n)] * rng.uniform(1.0 - src.shade, 1.0, (n, 1)).astype(np.float32)
    img = np.empty((h, w, 3), dtype=np.float32)
    img[:] = pal[rng.integers(0, len(pal))]
    for i in range(n - 1, -1, -1):  # the first disk dropped ends on top
        y0, y1 = max(0, int(cy[i] - r[i])), min(h, int(math.ceil(cy[i] + r[i])) + 1)
        x0, x1 = max(0, int(cx[i] - r[i])), min(w, int(math.ceil(cx[i] + r[i])) + 1)
        if y0 >= y1 or x0 >= x1:
            continue
        yy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - cy[i])[:, None]
        xx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - cx[i])[None, :]
        img[y0:y1, x0:x1][yy * yy + xx * xx <= r[i] * r[i]] = cols[i]
    ang = rng.uniform(0, 2 * math.pi)
    ramp = np.cos(ang) * np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :] + np.sin(ang) * np.linspace(
        -0.5, 0.5, h, dtype=np.float32
    )[:, None]
    img *= (1.0 + src.shade * ramp)[:, :, None]
    if src.blur_sigma > 0:
        img = gaussian_filter(img, sigma=(src.blur_sigma, src.blur_sigma, 0), mode="nearest")
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# -------------------------------------------------------------------------------------- scenes
def resize(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """float32 ``HxWx3`` -> ``hxwx3`` by bilinear interpolation with antialiasing (torch)."""
    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]
    out = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return out[0].permute(1, 2, 0).clamp(0.0, 1.0).contiguous().numpy()


def _crop_photo(
    rng: np.random.Generator, h: int, w: int, src: PhotoSource, region: tuple[float, ...]
) -> tuple[np.ndarray, dict[str, Any]]:
    ph, pw = src.image.shape[:2]
    if len(region) == 2:  # a column range
        region = (0.0, 1.0, *region)
    r0, r1 = int(round(region[0] * ph)), int(round(region[1] * ph))
    c0, c1 = int(round(region[2] * pw)), int(round(region[3] * pw))
    rh, rw = r1 - r0, c1 - c0
    if rw < 2 or rh < 2:
        raise ValueError(f"sample_scene: region {region} of {src.name} ({ph}x{pw}) is empty")
    zmin = max(h / rh, w / rw)  # output pixels per photo pixel when the crop fills the region
    zmax = max(1.0, 1.5 * zmin)
    z = math.exp(rng.uniform(math.log(zmin), math.log(zmax)))
    ch, cw = min(rh, max(1, round(h / z))), min(rw, max(1, round(w / z)))
    top = r0 + int(rng.integers(0, rh - ch + 1))
    left = c0 + int(rng.integers(0, rw - cw + 1))
    flip = bool(rng.random() < 0.5)
    crop = src.image[top : top + ch, left : left + cw]
    out = resize(crop, h, w)
    if flip:
        out = out[:, ::-1]
    info = {"source": src.name, "kind": "photo", "crop": [top, left, ch, cw], "flip": flip}
    return np.ascontiguousarray(out), info


def sample_scene_info(
    rng: np.random.Generator,
    h: int,
    w: int,
    sources: Sequence[SceneSource],
    region: tuple[float, float] | Sequence[tuple[float, float, float, float]] = (0.0, 1.0),
) -> tuple[np.ndarray, dict[str, Any]]:
    """One scene (float32 ``hxwx3`` sRGB in [0,1]) from a uniformly chosen source, and how it was made.

    Photos: a crop at a random log-uniform scale (from the whole ``region`` to 1.5x the smallest
    zoom or 1:1, upsampled with antialiasing when the photo is too small), flipped left-right with
    probability 1/2; ``region`` = (first, last) fraction of the photo's columns to crop from, so two
    callers can use disjoint halves, or a list of boxes ``(top, bottom, left, right)`` in fractions
    of the photo, one of them drawn uniformly per scene (e.g. two diagonal quadrants). Dead leaves: a fresh scene from a seed drawn from ``rng``.
    The info dict (JSON-ready) names the source and the crop box ``[top, left, height, width]``
    in photo pixels, or the dead-leaves seed.
    """
    if h < 2 or w < 2:
        raise ValueError(f"sample_scene: expected a scene of at least 2x2 pixels, got {h}x{w}")
    if not sources:
        raise ValueError("sample_scene: expected at least one scene source")
    boxes = [tuple(region)] if not isinstance(region[0], (tuple, list)) else [tuple(b) for b in region]
    for box in boxes:
        pairs = [box] if len(box) == 2 else [box[:2], box[2:]]
        if len(box) not in (2, 4) or not all(0.0 <= a < b <= 1.0 for a, b in pairs):
            raise ValueError(f"sample_scene: region must satisfy 0 <= first < last <= 1, got {region}")
    src = sources[int(rng.integers(0, len(sources)))]
    if isinstance(src, DeadLeavesSource):
        seed = int(rng.integers(0, 2**63 - 1))
        info = {"source": src.name, "kind": "procedural", "seed": seed}
        return dead_leaves(np.random.default_rng(seed), h, w, src), info
    if isinstance(src, PhotoSource):
        box = boxes[0] if len(boxes) == 1 else boxes[int(rng.integers(0, len(boxes)))]
        return _crop_photo(rng, h, w, src, box)
    raise TypeError(f"sample_scene: unknown source type {type(src).__name__}; expected PhotoSource or DeadLeavesSource")


def sample_scene(
    rng: np.random.Generator,
    h: int,
    w: int,
    sources: Sequence[SceneSource],
    region: tuple[float, float] = (0.0, 1.0),
) -> np.ndarray:
    """A scene float32 ``hxwx3`` sRGB in [0,1]; see :func:`sample_scene_info`. Deterministic for ``rng``."""
    return sample_scene_info(rng, h, w, sources, region)[0]
