"""Profiles, run configuration, seeding, device choice and run metadata.

Three profiles size every experiment:

- ``smoke``: tiny (RAW patches 32x32x4, a few images and steps); every notebook in about a minute on
  2 CPU cores. What CI runs.
- ``cpu``: meaningful numbers on a laptop CPU in tens of minutes; its tables are committed.
- ``full``: the papers' sizes (RAW 256x256x4 patches, challenge grids), for a GPU.

All configs are frozen dataclasses; ``dataclasses.replace`` derives variants. A notebook's
``parameters`` cell holds literals only and :func:`resolve_run` turns them into a :class:`RunConfig`.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import platform
import random
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PROFILES = ("smoke", "cpu", "full")

#: Grid layouts (rows, cols) of the NTIRE 2026 UP-ISP challenge images (42, 35 and 14 patches).
CHALLENGE_LAYOUTS: tuple[tuple[int, int], ...] = ((6, 7), (7, 6), (5, 7), (7, 5), (2, 7), (7, 2))


@dataclass(frozen=True)
class SynthConfig:
    """Size of the synthetic UP-ISP benchmark (see :mod:`uotisp_lib.data.synth`).

    Counts are of *full images*; each is cut into ``rows x cols`` RAW patches of
    ``patch x patch x 4`` (packed RGGB, 10-bit), i.e. sRGB patches of ``2*patch`` pixels a side.
    """

    patch: int = 32
    layouts: tuple[tuple[int, int], ...] = ((2, 3), (3, 2), (2, 2))
    n_train_raw: int = 4  # full images whose RAW patches form train/raws
    n_train_jpeg: int = 4  # other scenes, rendered with the target look: train/jpegs
    n_val: int = 2
    n_test: int = 2
    outlier_fraction: float = 0.25  # fraction of train/jpegs given an atypical look
    jpeg_quality: int = 95
    procedural_fraction: float = 0.25  # fraction of scenes that are procedural (dead leaves)
    # bundled photos (uotisp_lib.data.sources.BUILTIN_PHOTOS) the scenes are cut from
    photos: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket")
    # photos kept out of training: only val (resp. test) scenes are cut from them, whole; empty:
    # every split crops the training photos (RAW side: left halves, JPEG side: right halves)
    val_photos: tuple[str, ...] = ()
    test_photos: tuple[str, ...] = ()
    # how the training photos are shared between the RAW and the JPEG side: "halves" (left / right)
    # or "quadrants" (diagonal quadrants each: both sides see tops and bottoms of every photo)
    regions: str = "halves"


@dataclass(frozen=True)
class PreprocessStudy:
    """Notebook 01: scenes through the camera model, scored per demosaic x denoise backend."""

    n_scenes: int = 2
    size: int = 64  # sRGB side of each scene (RAW is size/2 packed)
    demosaic: tuple[str, ...] = ("bilinear", "malvar", "menon", "demosaicnet")
    denoise: tuple[str, ...] = ("none", "guided")
    repeats: int = 1


@dataclass(frozen=True)
class StitchStudy:
    """Notebook 02: grid inference accuracy over layouts, on scenes made by the camera model."""

    images_per_layout: int = 2
    patch: int = 16  # packed RAW patch side
    layouts: tuple[tuple[int, int], ...] = CHALLENGE_LAYOUTS + ((3, 4), (4, 3), (1, 5), (5, 1), (2, 2), (1, 7), (7, 1))
    border: int = 4


@dataclass(frozen=True)
class MatchStudy:
    """Notebook 03: pseudo-pair matching between the train RAW and JPEG sets."""

    backend: str = "auto"  # descriptor backend: auto (DINOv2 if its weights are present) | dinov2 | efficientnet_lite0
    k_images: int = 3  # top-k target images per source image (paper: 10)
    k_patches: int = 8  # kept targets per source patch (paper: 8)
    methods: tuple[str, ...] = ("fgw", "ot", "uot", "knn", "random")


@dataclass(frozen=True)
class TrainStudy:
    """Notebook 04: the pseudo-pair ISP trainer (Borelli) and its baselines."""

    stage1_epochs: int = 1
    stage2_epochs: int = 1
    batch_size: int = 8
    lr: float = 1e-3  # paper: 1e-4 over far more steps
    d_width: int = 8  # discriminator num_feat (paper: 64, about 4.4M parameters)
    gram: bool = True  # Gram loss (VGG19 when its weights are local, else efficientnet_lite0 stages)
    proxy_fraction: float = 0.25  # target images held out for the ground-truth-free proxy
    crop: int | None = None  # random crops (output pixels) per step; None: whole patches


@dataclass(frozen=True)
class UOTStudy:
    """Notebook 05: UOT with the expert committee, and its seeded study (uotisp_lib.study)."""

    arch: str = "tinyraw"  # the main run's architecture when the notebook's `arch` is empty
    archs: tuple[str, ...] = ("tinyraw",)  # architectures of the study
    epochs: int = 1
    batch_size: int = 8
    tau: float = 1.0  # per-pixel-mean cost weight (the prototype's 1e-5 on a sum is ~7.9 at 512 px)
    alpha: float = 1.0  # weight of the marginal divergence (UOTConfig.alpha); smaller is looser
    cost: str = "quadratic"  # the study's transport cost (uotisp_lib.uot.COSTS), chosen by cost_check
    reference_wb: str = "camera"  # white balance of the cost's reference (uot.naive_isp)
    lr_map: float = 1e-3
    lr_potential: float = 1e-4
    map_steps: int = 1  # map updates per potential update (UOTConfig.map_steps_per_potential)
    potential_steps: int = 1  # potential updates per step (UOTConfig.potential_steps)
    lr_schedule: str = "constant"  # UOTTrainConfig.lr_schedule: constant | cosine
    r1_gamma: float = 5.0
    r1_scale: str = "pixels"  # UOTConfig.r1_scale
    potential_width: int = 8
    potential_pool: int = 1  # UOTTrainConfig.potential_pool: block means the potential sees
    expert_width: int = 8
    expert_weight: float = 0.05  # per expert, relative to the potential's pull (+ paired) gradient
    expert_reference: str = "potential"  # UOTTrainConfig.expert_reference
    paired_l1: float = 10.0  # paired mode's L1 weight (RCOT's Sigma); at 1 the potential out-pulls the pairs
    crop: int | None = None  # random crops (output pixels) per step; None: whole patches
    seeds: int = 1  # training seeds per arm (the same seeds in every arm)
    workers: int = 1  # study runs trained at once on CPU, one thread each (study.run_jobs); 1: in this process
    arch_seeds: tuple[tuple[str, int], ...] = ()  # fewer seeds for some architectures
    # constructor keywords per architecture: RAW-input networks start from the reference rendering
    arch_kwargs: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = (
        ("tinyraw", (("base", "reference"),)),
        ("unet_isp", (("base", "reference"),)),
    )
    synth: SynthConfig | None = None  # the study's own benchmark (None: the profile's)

    def seeds_for(self, arch: str) -> int:
        return int(dict(self.arch_seeds).get(arch, self.seeds))

    def kwargs_for(self, arch: str) -> tuple[tuple[str, object], ...]:
        return tuple(dict(self.arch_kwargs).get(arch, ()))


@dataclass(frozen=True)
class AblationStudy:
    """Notebook 06: one factor of the UOT method at a time (uotisp_lib.ablations), on the UOT study's
    benchmark and base configuration, ``seeds`` seeds per arm."""

    arch: str = "tinyraw"
    seeds: int = 3
    epochs: int | None = None  # None: the UOT study's
    groups: tuple[str, ...] = ("committee", "psi", "cost", "outliers", "bias")
    alphas: tuple[float, ...] = (0.01, 0.05, 0.2, 1.0)  # the psi group's alpha sweep (semi softplus)
    taus: tuple[float, ...] = (0.0, 0.3, 1.0, 3.0)  # the cost group's tau sweep (the study's cost)
    costs: tuple[str, ...] = ()  # the cost group's costs; empty: every cost of uotisp_lib.uot.COSTS
    outlier_fractions: tuple[float, ...] = (0.0, 0.1, 0.25, 0.4)
    colour_ot: float = 0.3  # weight of the committee group's colour sliced-Wasserstein arm (0: no such arm)
    bias_taus: tuple[float, ...] = (3.0,)  # the bias group's content weights besides the study's tau
    pairing_heads: tuple[str, ...] = ("1x1", "3D LUT")  # the pairing group's colornet heads (labels of ablations.HEADS)
    workers: int = 1  # training processes on CPU (one thread each); 1: in this process
    arms: tuple[str, ...] = ()  # only these arms ("group/name", their baselines added); empty: every arm of the groups


#: The benchmark of the UOT study (notebook 05, cpu profile; issue 10): >= 100 target images from
#: the RAW side's scene distribution (other crops of the same photos, other dead-leaves scenes), and
#: 40 test images whose photos appear nowhere in training. Small grids: many images, few patches each.
UOT_CPU_SYNTH = SynthConfig(
    patch=32,
    layouts=((2, 2), (2, 3), (3, 2)),
    n_train_raw=120,
    n_train_jpeg=120,
    n_val=20,
    n_test=40,
    photos=("astronaut", "chelsea", "coffee", "rocket", "flower", "china", "motorcycle", "grace_hopper"),
    val_photos=("china",),
    test_photos=("motorcycle", "grace_hopper"),
    regions="quadrants",
)


@dataclass(frozen=True)
class Profile:
    """Everything a profile fixes. Later sections add their own sub-configs here."""

    name: str
    synth: SynthConfig
    preprocess: PreprocessStudy = PreprocessStudy()
    stitch: StitchStudy = StitchStudy()
    match: MatchStudy = MatchStudy()
    train: TrainStudy = TrainStudy()
    uot: UOTStudy = UOTStudy()
    ablate: AblationStudy = AblationStudy()


_PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        synth=SynthConfig(
            patch=32,
            layouts=((2, 3), (3, 2), (2, 2)),
            n_train_raw=4,
            n_train_jpeg=4,
            n_val=2,
            n_test=2,
        ),
        # a plumbing check of every group: a few arms, 2 seeds (the full grid is the cpu profile's); pairing:
        # FGW against random pairs, 1x1 head (about 14 s on 2 cores with a cold descriptor cache)
        ablate=AblationStudy(seeds=2, alphas=(0.2,), taus=(0.0,), costs=("quadratic", "luma"), outlier_fractions=(0.0, 0.4),
                             groups=("committee", "psi", "cost", "outliers", "pairing", "bias"), bias_taus=(),
                             arms=("committee/no experts", "committee/all + colour OT (0.3)", "psi/balanced", "cost/luma, tau 1",
                                   "cost/quadratic, tau 0", "outliers/semi, 0% outliers", "outliers/semi, 40% outliers",
                                   "pairing/FGW, 1x1", "bias/GAN + content, tau 1")),
    ),
    "cpu": Profile(
        name="cpu",
        synth=SynthConfig(
            patch=64,
            layouts=((2, 7), (7, 2), (5, 7), (7, 5), (6, 7), (7, 6)),
            n_train_raw=24,
            n_train_jpeg=24,
            n_val=6,
            n_test=6,
        ),
        preprocess=PreprocessStudy(n_scenes=8, size=256, repeats=3),
        stitch=StitchStudy(images_per_layout=12, patch=64),
        match=MatchStudy(k_images=5),
        train=TrainStudy(stage1_epochs=6, stage2_epochs=3, batch_size=24, lr=5e-4, d_width=16, crop=64),
        # cost luma (lowest truth ratio in cost_check on val), R1 gamma 0.1 (scaled R1 at 5 flattened the
        # potential: val PSNR 21.9 vs 23.3 dB in pilots on the validation split), 32 px crops for speed
        uot=UOTStudy(arch="colornet", archs=("colornet", "tinyraw", "unet_isp"), epochs=10, batch_size=16, lr_map=5e-4, crop=32,
                     lr_potential=5e-4, alpha=0.05, cost="luma", r1_gamma=0.1, potential_width=16, expert_width=16, seeds=3,
                     arch_seeds=(("unet_isp", 2),), synth=UOT_CPU_SYNTH, workers=2),  # 2 one-thread runs at once
        # colornet (the study's main architecture), 3 seeds, 4 of the study's 10 epochs so that the UOT
        # groups (105 runs) fit in about an hour on 2 cores with 2 single-threaded workers; the pairing
        # group (notebook 04's pseudo-pair colornet, 4 to 8 min a run) with the 1x1 head only (12 runs,
        # about 40 min): the 3D-LUT head is the full profile's
        ablate=AblationStudy(arch="colornet", seeds=3, epochs=4, alphas=(0.01, 0.05, 0.2, 1.0), taus=(0.0, 0.3, 1.0, 3.0),
                             outlier_fractions=(0.0, 0.1, 0.25, 0.4), workers=2,
                             groups=("committee", "psi", "cost", "outliers", "pairing", "bias"), pairing_heads=("1x1",)),
    ),
    "full": Profile(
        name="full",
        synth=SynthConfig(
            patch=256,
            layouts=CHALLENGE_LAYOUTS,
            n_train_raw=120,
            n_train_jpeg=120,
            n_val=30,
            n_test=30,
        ),
        preprocess=PreprocessStudy(n_scenes=16, size=512, repeats=3),
        stitch=StitchStudy(images_per_layout=50, patch=256),
        match=MatchStudy(backend="dinov2", k_images=10),
        train=TrainStudy(stage1_epochs=10, stage2_epochs=5, batch_size=24, lr=1e-4, d_width=64),
        uot=UOTStudy(arch="unet_isp", archs=("tinyraw", "colornet", "unet_isp"), epochs=50, batch_size=32,
                     tau=7.86, lr_map=2e-4, potential_width=64, expert_width=32,
                     crop=256),  # the papers train on 256 px sRGB crops of the 512 px sRGB patches
    ),
}


def get_profile(name: str) -> Profile:
    """Return the named profile (``smoke``, ``cpu`` or ``full``)."""
    try:
        return _PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}") from None


def resolve_device(device: str = "auto") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; anything else is checked and returned."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'auto' or 'cpu'")
    torch.device(device)  # raises on malformed names
    return device


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python, NumPy and torch (CPU and CUDA); return a fresh NumPy generator for ``seed``."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return np.random.default_rng(seed)


def cache_dir() -> Path:
    """Root of cached artefacts (synthetic benchmarks, descriptors): ``$UOTISP_CACHE`` or
    ``~/.cache/uotisp``."""
    return Path(os.environ.get("UOTISP_CACHE", Path.home() / ".cache" / "uotisp")).expanduser()


@dataclass(frozen=True)
class RunConfig:
    """A resolved notebook/CLI run: the profile plus where data comes from and where results go."""

    profile: Profile
    seed: int
    device: str
    data_root: Path  # a real dataset, or the synthetic benchmark of the profile
    synthetic: bool  # True when data_root is our synthetic benchmark (ground truth exists)
    results_dir: Path  # results/<profile>
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tables_dir(self) -> Path:
        return self.results_dir / "tables"

    @property
    def figures_dir(self) -> Path:
        return self.results_dir / "figures"


def synthetic_root(profile: str, seed: int) -> Path:
    """Default cache folder of the synthetic benchmark for a profile and seed."""
    return cache_dir() / "synth" / f"{profile}-seed{seed}"


def resolve_run(
    profile: str = "smoke",
    data_root: str | os.PathLike | None = None,
    device: str = "auto",
    seed: int = 0,
    results_dir: str | os.PathLike | None = None,
    **extra: Any,
) -> RunConfig:
    """Turn a notebook's literal parameters into a :class:`RunConfig`.

    ``data_root=None`` (or ``""``) selects the synthetic benchmark of the profile, cached under
    :func:`cache_dir`; it is built on first use by :func:`uotisp_lib.data.ensure_dataset`.
    ``results_dir=None`` (or ``""``) selects ``results/<profile>`` beside the package's repository
    (or the current folder when installed elsewhere).
    """
    prof = get_profile(profile)
    synthetic = not data_root
    results_dir = results_dir or None
    root = synthetic_root(profile, seed) if synthetic else Path(data_root).expanduser()
    if results_dir is None:
        results_dir = default_results_root() / profile
    return RunConfig(
        profile=prof,
        seed=int(seed),
        device=resolve_device(device),
        data_root=Path(root),
        synthetic=synthetic,
        results_dir=Path(results_dir),
        extra=dict(extra),
    )


def start_run(*args: Any, **kwargs: Any) -> RunConfig:
    """A notebook's first call: :func:`resolve_run` on its literal parameters (same arguments),
    then :func:`seed_everything` with the run's seed."""
    run = resolve_run(*args, **kwargs)
    seed_everything(run.seed)
    return run


def default_results_root() -> Path:
    """``results/`` of the repository this package lives in, else ``./results``."""
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").is_file() and (repo / "results").is_dir():
        return repo / "results"
    return Path.cwd() / "results"


def _omitted(obj: Any, f: dataclasses.Field) -> bool:
    # a field marked ``metadata={"omit_default": True}`` (added after results and checkpoints were
    # stored) is left out at its default, so the setups, hashes and checkpoints of earlier runs hold
    return bool(f.metadata.get("omit_default")) and getattr(obj, f.name) == f.default


def config_dict(obj: Any) -> Any:
    """:func:`dataclasses.asdict` of a config (tuples kept), without the ``omit_default`` fields
    that are at their defaults: what checkpoints store and resumes compare."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: config_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not _omitted(obj, f)}
    if isinstance(obj, (list, tuple)):
        return type(obj)(config_dict(v) for v in obj)
    if isinstance(obj, dict):
        return {k: config_dict(v) for k, v in obj.items()}
    return copy.deepcopy(obj)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses, paths, tuples and NumPy scalars to plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not _omitted(obj, f)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def environment_versions() -> dict[str, str]:
    """Versions of Python and the packages whose behaviour shapes our numbers."""
    from importlib import metadata

    out = {"python": sys.version.split()[0], "platform": platform.platform()}
    for pkg in ("uotisp", "numpy", "torch", "torchvision", "kornia", "pot", "timm", "scikit-image"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def portable_path(path: str | os.PathLike) -> str:
    """A path as saved in results metadata, without this machine's folders: relative to the
    repository (``results/smoke``), or under ``<cache>`` (:func:`cache_dir`, e.g.
    ``<cache>/synth/smoke-seed0``), or under ``~``; otherwise absolute."""
    path = Path(path).expanduser().absolute()
    repo = Path(__file__).resolve().parent.parent
    for base, label in ((cache_dir().absolute(), "<cache>"), (repo, None), (Path.home(), "~")):
        try:
            rel = path.relative_to(base)
        except ValueError:
            continue
        return rel.as_posix() if label is None else f"{label}/{rel.as_posix()}"
    return path.as_posix()


def run_metadata(run: RunConfig | None = None, **extra: Any) -> dict[str, Any]:
    """Config, seed, versions and any backend choices, for saving beside a result."""
    meta: dict[str, Any] = {"versions": environment_versions()}
    if run is not None:
        meta["run"] = to_jsonable(run)
        for key in ("data_root", "results_dir"):
            meta["run"][key] = portable_path(getattr(run, key))
    meta.update(to_jsonable(extra))
    return meta


def dumps(obj: Any) -> str:
    """Stable JSON text (sorted keys, 2-space indent) of :func:`to_jsonable` values."""
    return json.dumps(to_jsonable(obj), indent=2, sort_keys=True) + "\n"
