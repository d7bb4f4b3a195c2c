"""The synthetic UP-ISP benchmark: same layout and file names as the NTIRE 2026 challenge.

::

    <out>/train/raws/<img>_<idx>.npy   uint16 HxWx4 [R,Gr,Gb,B] 0..1023 (camera model, noise on)
    <out>/train/jpegs/<img>_<idx>.jpg  target-look sRGB of OTHER scenes (unpaired), 2x RAW size
    <out>/train/gt/<img>_<idx>.png     target-look rendering of the train RAW scenes (paired mode)
    <out>/val|test/raws/..., <out>/val|test/gt/...  (ground truth: never for training)
    <out>/meta.json                    everything needed to reproduce or audit the build

Each full image gets a grid ``(rows, cols)`` from ``SynthConfig.layouts`` (seeded choice), is
rendered at ``2*patch*rows x 2*patch*cols`` sRGB, turned into RAW by
:func:`uotisp_lib.data.camera.forward` with a per-image illuminant and noise, and cut into
``rows*cols`` patches named ``<img>_<idx>`` in row-major order. The ground truth (gt) and the
target JPEGs are :func:`~uotisp_lib.data.camera.srgb_to_target` of their scenes (target look
:data:`~uotisp_lib.data.camera.DEFAULT_LOOK`; a fraction of the JPEGs gets an
:data:`~uotisp_lib.data.camera.OUTLIER_LOOKS` look instead).

Scenes come from :mod:`uotisp_lib.data.sources`. Photo crops of the RAW side (train raws, val,
test) use the left half of each photo and the JPEG side the right half, so RAW and JPEG scenes
never share pixels; a ``procedural_fraction`` of each set is dead leaves instead.

The build is deterministic: image ``k`` draws everything from ``numpy.random.default_rng([seed,
k])``, so the same seed and config give byte-identical files. It is written into a temporary
sibling folder and renamed at the end, ``meta.json`` last, so an interrupted build never looks
complete.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

import uotisp_lib
from uotisp_lib import io as uio
from uotisp_lib.config import RunConfig, SynthConfig, synthetic_root, to_jsonable
from uotisp_lib.data import camera as cm
from uotisp_lib.data.sources import (
    DeadLeavesSource,
    PhotoSource,
    builtin_photos,
    folder_source,
    natural_palette,
    sample_scene_info,
)

log = logging.getLogger(__name__)

FORMAT = "uotisp-synth-upisp"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
#: Photo column ranges: RAW-side scenes crop the left half, JPEG-side scenes the right half.
RAW_REGION = (0.0, 0.5)
JPEG_REGION = (0.5, 1.0)
#: ``SynthConfig.regions="quadrants"``: RAW scenes from the top-left and bottom-right quadrants,
#: JPEG scenes from the other two, so both sides see the tops and the bottoms of every photo.
RAW_QUADRANTS = ((0.0, 0.5, 0.0, 0.5), (0.5, 1.0, 0.5, 1.0))
JPEG_QUADRANTS = ((0.0, 0.5, 0.5, 1.0), (0.5, 1.0, 0.0, 0.5))


class BenchmarkExistsError(FileExistsError, ValueError):
    """The output folder exists and is not an (overwritable) synthetic benchmark."""


@dataclass(frozen=True)
class ImagePlan:
    """One full image of the benchmark: its id, split, role (``raw`` or ``jpeg``), grid and look."""

    index: int
    image_id: str
    split: str
    role: str
    rows: int
    cols: int
    procedural: bool
    look: str  # "phone" or an OUTLIER_LOOKS key


# ----------------------------------------------------------------------------------------- plan
def _check_cfg(cfg: SynthConfig) -> None:
    if not isinstance(cfg.patch, int) or cfg.patch < 2:
        raise ValueError(f"SynthConfig: patch must be an integer >= 2, got {cfg.patch}")
    if not cfg.layouts or any(len(l) != 2 or min(l) < 1 for l in cfg.layouts):
        raise ValueError(f"SynthConfig: layouts must be a non-empty list of (rows, cols) >= 1, got {cfg.layouts}")
    counts = (cfg.n_train_raw, cfg.n_train_jpeg, cfg.n_val, cfg.n_test)
    if min(counts) < 0:
        raise ValueError(f"SynthConfig: image counts must be >= 0, got {counts}")
    for name in ("outlier_fraction", "procedural_fraction"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"SynthConfig: {name} must lie in [0, 1], got {getattr(cfg, name)}")
    held = set(cfg.val_photos) | set(cfg.test_photos)
    if not held <= set(cfg.photos):
        raise ValueError(f"SynthConfig: val_photos and test_photos must be among photos {list(cfg.photos)}, got {sorted(held)}")
    if cfg.regions not in ("halves", "quadrants"):
        raise ValueError(f"SynthConfig: regions must be 'halves' or 'quadrants', got {cfg.regions!r}")
    if set(cfg.val_photos) & set(cfg.test_photos):
        raise ValueError("SynthConfig: val_photos and test_photos must be disjoint")
    if held and set(cfg.photos) <= held:
        raise ValueError("SynthConfig: every photo is held out; leave at least one for training")


def plan_images(cfg: SynthConfig, seed: int) -> list[ImagePlan]:
    """The images of a build, in id order: train raws, train jpegs, val, test (deterministic).

    Per group, ``round(procedural_fraction * n)`` images are dead leaves; among the train jpegs
    ``round(outlier_fraction * n_train_jpeg)`` get outlier looks (cycling through OUTLIER_LOOKS).
    """
    _check_cfg(cfg)
    rng = np.random.default_rng([seed, 10**9])  # stream of the plan, separate from image streams
    groups = [
        ("train", "raw", cfg.n_train_raw),
        ("train", "jpeg", cfg.n_train_jpeg),
        ("val", "raw", cfg.n_val),
        ("test", "raw", cfg.n_test),
    ]
    outlier_names = list(cm.OUTLIER_LOOKS)
    plans: list[ImagePlan] = []
    for split, role, n in groups:
        proc = set(rng.permutation(n)[: round(cfg.procedural_fraction * n)].tolist())
        looks = ["phone"] * n
        if role == "jpeg":
            out = rng.permutation(n)[: round(cfg.outlier_fraction * n)]
            for j, k in enumerate(sorted(out.tolist())):
                looks[k] = outlier_names[j % len(outlier_names)]
        layouts = rng.integers(0, len(cfg.layouts), size=n)
        for k in range(n):
            idx = len(plans)
            rows, cols = cfg.layouts[int(layouts[k])]
            plans.append(ImagePlan(idx, f"s{idx:04d}", split, role, int(rows), int(cols), k in proc, looks[k]))
    return plans


# ---------------------------------------------------------------------------------------- render
#: (split, role) -> (photos its scenes are cut from, their region: a column range or a list of boxes)
PhotoPools = dict[tuple[str, str], tuple[list[PhotoSource], tuple[float, float]]]


def photo_pools(cfg: SynthConfig, photos: Sequence[PhotoSource]) -> PhotoPools:
    """Which photos, and which part of them, each (split, role) crops its scenes from.

    Training photos: train RAW scenes from their left halves, train JPEG scenes from their right
    halves (``cfg.regions="quadrants"``: diagonal quadrants, :data:`RAW_QUADRANTS`). Val and test
    use their held-out photos whole (``cfg.val_photos`` / ``test_photos``, matched by short name)
    when given, else the training photos' RAW-side region.
    """
    def short(p: PhotoSource) -> str:
        return p.name.split(":", 1)[-1]

    held = set(cfg.val_photos) | set(cfg.test_photos)
    train = [p for p in photos if short(p) not in held]
    raw_region, jpeg_region = (RAW_QUADRANTS, JPEG_QUADRANTS) if cfg.regions == "quadrants" else (RAW_REGION, JPEG_REGION)
    pools: PhotoPools = {("train", "raw"): (train, raw_region), ("train", "jpeg"): (train, jpeg_region)}
    for split, names in (("val", cfg.val_photos), ("test", cfg.test_photos)):
        own = [p for p in photos if short(p) in set(names)]
        pools[(split, "raw")] = (own, (0.0, 1.0)) if own else (train, raw_region)
    return pools


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """sRGB ``[1,3,H,W]`` in [0,1] -> uint8 ``HxWx3``."""
    return (img[0].clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def cut_patches(img: np.ndarray, rows: int, cols: int) -> list[np.ndarray]:
    """``HxWxC`` -> ``rows*cols`` patches in row-major order (H, W divisible by rows, cols)."""
    h, w = img.shape[0] // rows, img.shape[1] // cols
    if h * rows != img.shape[0] or w * cols != img.shape[1]:
        raise ValueError(f"cut_patches: image {img.shape[:2]} is not divisible into a {rows}x{cols} grid")
    return [img[r * h : (r + 1) * h, c * w : (c + 1) * w] for r in range(rows) for c in range(cols)]


def render_image(
    plan: ImagePlan,
    cfg: SynthConfig,
    seed: int,
    photos: list[PhotoSource] | PhotoPools,
    dead: DeadLeavesSource,
    cam: cm.CameraModel = cm.DEFAULT_CAMERA,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Render one full image -> (arrays by kind: ``raw`` uint16 HxWx4 and/or ``gt``/``jpeg`` uint8
    HxWx3, meta record). ``photos``: a list (every split crops it, :func:`photo_pools`) or the
    pools themselves. Deterministic for (seed, plan.index)."""
    rng = np.random.default_rng([seed, plan.index])
    h, w = 2 * cfg.patch * plan.rows, 2 * cfg.patch * plan.cols
    pools = photos if isinstance(photos, dict) else photo_pools(cfg, photos)
    pool, region = pools.get((plan.split, plan.role), ([], RAW_REGION))
    sources = [dead] if plan.procedural or not pool else pool
    scene, info = sample_scene_info(rng, h, w, sources, region)
    x = torch.from_numpy(scene).permute(2, 0, 1)[None].contiguous()
    record: dict[str, Any] = {
        "id": plan.image_id,
        "split": plan.split,
        "role": plan.role,
        "layout": [plan.rows, plan.cols],
        "n_patches": plan.rows * plan.cols,
        "scene": info,
        "look": plan.look,
    }
    arrays: dict[str, np.ndarray] = {}
    if plan.role == "raw":
        gen = torch.Generator().manual_seed(int(rng.integers(0, 2**63 - 1)))
        gains = cm.sample_gains(1, cam, gen)
        shot, read = cm.sample_noise_levels(1, cam, gen)
        packed = cm.forward(x, gains, cam, generator=gen, noise=True, shot=shot, read=read)
        arrays["raw"] = cm.quantize(packed, cam)[0].permute(1, 2, 0).contiguous().numpy()
        arrays["gt"] = to_uint8(cm.srgb_to_target(x, cm.DEFAULT_LOOK, cam))
        record.update(gains=[round(float(v), 6) for v in gains[0]], noise={"shot": float(shot[0]), "read": float(read[0])})
    else:
        look = cm.DEFAULT_LOOK if plan.look == "phone" else cm.OUTLIER_LOOKS[plan.look]
        arrays["jpeg"] = to_uint8(cm.srgb_to_target(x, look, cam))
    return arrays, record


# ------------------------------------------------------------------------------------------ files
_KIND_DIR = {"raw": ("raws", ".npy"), "gt": ("gt", ".png"), "jpeg": ("jpegs", ".jpg")}


def write_image(root: Path, plan: ImagePlan, arrays: dict[str, np.ndarray], cfg: SynthConfig) -> None:
    """Cut each array of one image into its grid and save the patches under ``root/<split>/``."""
    for kind, arr in arrays.items():
        folder, ext = _KIND_DIR[kind]
        for idx, patch in enumerate(cut_patches(arr, plan.rows, plan.cols)):
            path = root / plan.split / folder / f"{plan.image_id}_{idx}{ext}"
            if kind == "raw":
                uio.save_raw(path, np.ascontiguousarray(patch))
            else:
                uio.save_image(path, np.ascontiguousarray(patch), quality=cfg.jpeg_quality)


def count_files(root: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Number of files per split and kind folder: ``{"train": {"raws": n, ...}, ...}``."""
    root = Path(root)
    return {
        split: {
            k: len(list((root / split / k).glob("*"))) for k, _ in _KIND_DIR.values() if (root / split / k).is_dir()
        }
        for split in SPLITS
        if (root / split).is_dir()
    }


def read_meta(root: str | os.PathLike) -> dict[str, Any] | None:
    """The benchmark's meta.json if present, complete and ours; else None."""
    path = Path(root) / "meta.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("complete") is not True:
        return None
    return meta


def is_complete(root: str | os.PathLike, cfg: SynthConfig, seed: int, photo_dir: str | os.PathLike | None = None) -> bool:
    """True when ``root`` holds a complete benchmark built from exactly this config, seed and photos."""
    meta = read_meta(root)
    return (
        meta is not None
        and meta.get("format_version") == FORMAT_VERSION
        and meta.get("seed") == seed
        and meta.get("synth_config") == json.loads(json.dumps(to_jsonable(cfg)))
        and meta.get("photo_dir") == (str(Path(photo_dir).expanduser()) if photo_dir else None)
    )


def _check_out(out: Path, overwrite: bool) -> str:
    """``"new"``, ``"empty"`` or ``"replace"`` for the output folder, else BenchmarkExistsError.

    An existing benchmark is replaced only when ``overwrite`` and its meta.json marks it as ours:
    a user's folder is never deleted.
    """
    if not out.exists():
        return "new"
    if out.is_dir() and not any(out.iterdir()):
        return "empty"
    if overwrite and out.is_dir() and json_format(out) == FORMAT:
        return "replace"
    raise BenchmarkExistsError(
        f"{out}: folder exists and is not empty; expected a new or empty folder "
        "(or overwrite=True / --overwrite to replace a previous synthetic benchmark)"
    )


def _publish(tmp: Path, out: Path, overwrite: bool) -> None:
    """Rename the finished ``tmp`` onto ``out`` (an old benchmark of ours is moved aside, then deleted)."""
    state = _check_out(out, overwrite)
    if state == "empty":
        out.rmdir()
    elif state == "replace":
        old = uio.make_temp_dir(out, "old")
        os.replace(out, old / "data")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
        return
    try:
        os.replace(tmp, out)
    except OSError as exc:  # another process published between our check and the rename
        raise BenchmarkExistsError(f"{out}: folder appeared during the build; expected a new or empty folder") from exc


def json_format(root: Path) -> str | None:
    """The ``format`` field of ``root/meta.json`` (complete or not), or None."""
    try:
        return json.loads((root / "meta.json").read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError):
        return None


def build_benchmark(
    out: str | os.PathLike,
    cfg: SynthConfig,
    seed: int,
    *,
    photo_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    cam: cm.CameraModel = cm.DEFAULT_CAMERA,
    photos_only: bool = False,
) -> Path:
    """Build the synthetic UP-ISP benchmark into ``out`` (see the module docstring); return ``out``.

    ``photo_dir`` adds a folder of the user's JPEG/PNG photos to the bundled photos
    (``cfg.photos``); with ``photos_only`` every split is cut from that folder alone (no bundled
    photos, no procedural scenes; RAW and JPEG sides from the left and right halves).
    Raises :class:`BenchmarkExistsError` if ``out`` is a non-empty folder (unless ``overwrite`` and
    it is a previous synthetic benchmark), and ValueError for ``photos_only`` without ``photo_dir``.
    """
    import dataclasses

    out = Path(out).expanduser()
    if photos_only:
        if not photo_dir:
            raise ValueError("build_benchmark: photos_only needs a photo folder (--photos DIR)")
        cfg = dataclasses.replace(cfg, photos=(), val_photos=(), test_photos=(), procedural_fraction=0.0)
    _check_out(out, overwrite)  # fail before rendering; checked again at the rename
    plans = plan_images(cfg, seed)
    photos = builtin_photos(cfg.photos) + (folder_source(photo_dir) if photo_dir else [])
    dead = DeadLeavesSource(natural_palette(photos, np.random.default_rng([seed, 10**9 + 1])))
    uio.clean_stale_temps(out.parent, out.name)  # leftovers of killed builds
    tmp = uio.make_temp_dir(out)  # permissions from the umask, like an ordinary folder
    t0 = time.perf_counter()
    try:
        records = []
        pools = photo_pools(cfg, photos)
        for plan in plans:
            arrays, record = render_image(plan, cfg, seed, pools, dead, cam)
            write_image(tmp, plan, arrays, cfg)
            records.append(record)
        for split in SPLITS:  # empty splits still get their folders, like the challenge layout
            for sub in (("raws", "jpegs", "gt") if split == "train" else ("raws", "gt")):
                (tmp / split / sub).mkdir(parents=True, exist_ok=True)
        meta = build_meta(cfg, seed, photo_dir, photos, dead, cam, records, count_files(tmp), pools)
        uio.atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
        _publish(tmp, out, overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("built synthetic benchmark %s in %.1f s", out, time.perf_counter() - t0)
    return out


def build_meta(
    cfg: SynthConfig,
    seed: int,
    photo_dir: str | os.PathLike | None,
    photos: list[PhotoSource],
    dead: DeadLeavesSource,
    cam: cm.CameraModel,
    records: list[dict[str, Any]],
    counts: dict[str, dict[str, int]],
    pools: PhotoPools,
) -> dict[str, Any]:
    """meta.json content (JSON-ready, deterministic: no times, no absolute output paths)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "complete": True,
        "generator": f"uotisp_lib {uotisp_lib.__version__}",
        "seed": seed,
        "synth_config": json.loads(json.dumps(to_jsonable(cfg))),
        "photo_dir": str(Path(photo_dir).expanduser()) if photo_dir else None,
        "camera": to_jsonable(cam),
        "target_look": to_jsonable(cm.DEFAULT_LOOK),
        "outlier_looks": {k: to_jsonable(v) for k, v in cm.OUTLIER_LOOKS.items()},
        "regions": {"raw": list(RAW_REGION), "jpeg": list(JPEG_REGION)},
        "photo_pools": {
            f"{split}/{role}": {"photos": [p.name for p in pool], "region": to_jsonable(region)}
            for (split, role), (pool, region) in pools.items()
        },
        "sources": {
            **{p.name: {"credit": p.credit, "licence": p.licence, "shape": list(p.image.shape)} for p in photos},
            dead.name: {
                "credit": "dead leaves (Lee, Mumford & Huang 2001), palette sampled from the photos",
                "min_radius": dead.min_radius,
                "max_radius": dead.max_radius,
                "coverage": dead.coverage,
            },
        },
        "images": records,
        "outliers": {r["id"]: r["look"] for r in records if r["role"] == "jpeg" and r["look"] != "phone"},
        "counts": counts,
    }


# ---------------------------------------------------------------------------------------- ensure
def ensure_dataset(run: RunConfig, synth: SynthConfig | None = None, name: str = "") -> Path:
    """Return the run's data folder, building the synthetic benchmark first if needed.

    Synthetic: if ``run.data_root`` lacks a complete meta.json for this profile's config and seed,
    build it (a stale benchmark of ours is replaced). ``synth`` builds another config instead, in a
    sibling cache folder ``<profile>-<name>-seed<seed>`` (notebook 05's study benchmark). Real
    data: the folder must exist and hold a ``train/`` or ``test/`` split (or ``.dng`` files), else a
    clear error naming it.
    """
    root = Path(run.data_root).expanduser()
    if run.synthetic:
        cfg = run.profile.synth if synth is None else synth
        if synth is not None:
            root = synthetic_root(f"{run.profile.name}-{name or 'alt'}", run.seed)
        if is_complete(root, cfg, run.seed):
            return root
        log.info("building the synthetic %s benchmark (seed %d) into %s", run.profile.name, run.seed, root)
        try:
            return build_benchmark(root, cfg, run.seed, overwrite=True)
        except BenchmarkExistsError:
            if is_complete(root, cfg, run.seed):  # a concurrent build finished first
                return root
            raise
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data folder not found; expected a dataset folder with train/ or test/")
    from uotisp_lib.data.dng_folder import has_dng

    if not any((root / s).is_dir() for s in ("train", "test")) and not has_dng(root):
        raise ValueError(
            f"{root}: no train/ or test/ split; expected <root>/train/raws/*.npy (UP-ISP layout), "
            "<root>/train|test/huawei_raw (Zurich layout) or <root>/*.dng (DNG folder)"
        )
    return root


__all__ = [
    "BenchmarkExistsError",
    "ImagePlan",
    "build_benchmark",
    "count_files",
    "cut_patches",
    "ensure_dataset",
    "is_complete",
    "plan_images",
    "read_meta",
    "render_image",
]


# ------------------------------------------------------------------------------ grid-choice cases
@dataclass(frozen=True)
class GridCase:
    """One full image cut into its true grid, for testing grid inference.

    raw: packed RAW patches ``[N,4,h,w]`` in raw units (float32); rgb: its ground-truth sRGB
    patches ``[N,3,2h,2w]`` in [0,1]; ``rows x cols`` the true grid, row-major.
    """

    image_id: str
    rows: int
    cols: int
    procedural: bool
    raw: torch.Tensor
    rgb: torch.Tensor


def grid_cases(
    layouts: Sequence[tuple[int, int]],
    per_layout: int,
    patch: int,
    seed: int,
    procedural_every: int = 4,
    cam: cm.CameraModel = cm.DEFAULT_CAMERA,
) -> list[GridCase]:
    """``per_layout`` images for every layout, rendered like the benchmark's test split (photo crops,
    every ``procedural_every``-th a dead-leaves scene), cut into RAW and sRGB patches."""
    cfg = SynthConfig(patch=patch, layouts=tuple(layouts))
    photos = builtin_photos()
    dead = DeadLeavesSource(natural_palette(photos, np.random.default_rng([seed, 10**9 + 1])))
    cases = []
    for rows, cols in layouts:
        for k in range(per_layout):
            idx = len(cases)
            proc = procedural_every > 0 and k % procedural_every == procedural_every - 1
            plan = ImagePlan(idx, f"g{idx:04d}", "test", "raw", int(rows), int(cols), proc, "phone")
            arrays, _ = render_image(plan, cfg, seed, photos, dead, cam)
            raw = torch.from_numpy(np.stack(cut_patches(arrays["raw"], rows, cols)).astype(np.float32))
            rgb = torch.from_numpy(np.stack(cut_patches(arrays["gt"], rows, cols))).float() / 255.0
            cases.append(GridCase(plan.image_id, int(rows), int(cols), proc, raw.permute(0, 3, 1, 2), rgb.permute(0, 3, 1, 2)))
    return cases
