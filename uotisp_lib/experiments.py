"""Experiment runners behind notebooks 04 and 05: load a benchmark, train, score on the test split.

This is an edge module (it reads the dataset); the trainers in :mod:`uotisp_lib.train` stay pure.
Each runner returns one table row (a dict) plus the trainer, so a notebook only loops and plots.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from uotisp_lib import metrics
from uotisp_lib.data.datasets import PatchSet, load_raw_patches, load_srgb_patches
from uotisp_lib.data.layouts import DNG_PATCH, scan_dataset
from uotisp_lib.models import count_parameters
from uotisp_lib.preprocessing import PreprocessConfig


@dataclass(frozen=True)
class TrainingData:
    """Everything a training run reads, keyed by stem.

    ``raw_*``: packed RAW in [0,1]; ``targets``: train JPEG patches used for training;
    ``proxy``: held-out JPEG patches (whole images) for the ground-truth-free proxy; ``gt_*``: ground
    truth where the benchmark has it (None on real unpaired data); ``outlier_images``: ids of JPEG
    images with an atypical look (synthetic benchmark only); ``layout``: the scanned folder, kept
    for a DNG folder (:func:`image_layout` reads its patch grids from it), else None.
    """

    root: Path
    raw_train: PatchSet
    targets: PatchSet
    proxy: PatchSet
    raw_val: PatchSet | None
    gt_val: PatchSet | None
    raw_test: PatchSet | None
    gt_test: PatchSet | None
    gt_train: PatchSet | None
    outlier_images: tuple[str, ...]
    layout: object = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def target_image_ids(self) -> list[str]:
        """Ids of the target images used for training (the proxy's held-out images excluded)."""
        return sorted({s.rsplit("_", 1)[0] for s in self.targets.stems})

    def without_outliers(self) -> "TrainingData":
        """The same data with the outlier target images removed from ``targets``."""
        bad = set(self.outlier_images)
        keep = [s for s in self.targets.stems if s.rsplit("_", 1)[0] not in bad]
        return dataclasses.replace(self, targets=self.targets.subset(keep))


def load_training_data(root: str | Path, proxy_fraction: float = 0.25, seed: int = 0,
                       patch: int = DNG_PATCH, stream: bool = False) -> TrainingData:
    """Read a benchmark (UP-ISP, Zurich RAW-to-RGB, or a folder of DNGs cut into ``patch`` x ``patch``
    packed patches: the layout is detected, :func:`scan_dataset`); hold out ``proxy_fraction`` of
    the target *images* (all their patches, chosen with ``seed``) for the proxy. Splits without
    files become None.

    ``stream=True`` (UP-ISP layouts): every set is a
    :class:`~uotisp_lib.data.streaming.StreamingPatches` that reads its files per batch (memory-mapped
    ``.npy``, decoded images) instead of a tensor of the whole split; the same stems, order and
    values (see :mod:`uotisp_lib.data.streaming` for what differs)."""
    from uotisp_lib.data.synth import read_meta

    layout = scan_dataset(root, patch=patch)
    if stream:
        from uotisp_lib.data.streaming import stream_raw_patches, stream_srgb_patches

        load_raw, load_srgb = stream_raw_patches, stream_srgb_patches
    else:
        load_raw, load_srgb = load_raw_patches, load_srgb_patches
    jpegs = load_srgb(layout, "train", "jpegs")
    groups = layout.images("train", "jpegs")
    images = sorted(groups)
    n_proxy = max(1, round(proxy_fraction * len(images))) if len(images) > 1 else 0
    held_ids = set(np.random.default_rng(seed).permutation(images)[:n_proxy].tolist())
    held = {s for i in held_ids for s in groups[i]}
    proxy_stems = [s for s in jpegs.stems if s in held]
    train_stems = [s for s in jpegs.stems if s not in held]

    def opt(split: str, kind: str) -> PatchSet | None:
        if split not in layout.files or kind not in layout.files[split]:
            return None
        return load_raw(layout, split) if kind == "raws" else load_srgb(layout, split, kind)

    meta = read_meta(root)
    outliers = tuple(meta["outliers"]) if meta else ()
    eval_split = "val" if "val" in layout.files else ("dev" if "dev" in layout.files else None)
    return TrainingData(
        root=Path(root),
        raw_train=load_raw(layout, "train"),
        targets=jpegs.subset(train_stems),
        proxy=jpegs.subset(proxy_stems) if proxy_stems else jpegs,
        raw_val=opt(eval_split, "raws") if eval_split else None,
        gt_val=opt(eval_split, "gt") if eval_split else None,
        raw_test=opt("test", "raws"),
        gt_test=opt("test", "gt"),
        gt_train=opt("train", "gt"),
        outlier_images=outliers,
        layout=layout if layout.format == "dng" else None,
    )


#: RAW patches of the train split the proxy renders when the data has no val / dev split
PROXY_TRAIN_PATCHES = 64


def validation_raw(data: TrainingData) -> tuple[PatchSet, PatchSet | None]:
    """``(RAW, ground truth or None)`` a trainer scores each epoch: the val (or dev) split with its
    ground truth when it has one; without a val / dev split, the first :data:`PROXY_TRAIN_PATCHES`
    train RAW patches and no ground truth (the proxy compares renderings with held-out *targets*,
    so rendering train sources leaks nothing)."""
    if data.raw_val is not None:
        return data.raw_val, data.gt_val
    return data.raw_train.subset(data.raw_train.stems[:PROXY_TRAIN_PATCHES]), None


def has_ground_truth(data: TrainingData, split: str, what: str, log=print) -> bool:
    """Whether ``data`` has the ground truth of ``split`` (``train``, ``val`` or ``test``); if not,
    ``log`` one line: ``skipped <what>: <root>/<split>/gt has no ground truth``. Notebooks guard
    every ground-truth cell with it, so real unpaired data skips them with one printed reason."""
    if split not in ("train", "val", "test"):
        raise ValueError(f"has_ground_truth: split must be train, val or test, got {split!r}")
    raw, gt = {"train": (data.raw_train, data.gt_train), "val": (data.raw_val, data.gt_val),
               "test": (data.raw_test, data.gt_test)}[split]
    if raw is not None and gt is not None:
        return True
    folder = next((s for s in ("val", "dev") if (data.root / s).is_dir()), "val") if split == "val" else split
    log(f"skipped {what}: {data.root}/{folder}/gt has no ground truth")
    return False


def predict_on(trainer, raw: PatchSet) -> torch.Tensor:
    """A trainer's evaluated map on the RAW patches ``raw`` (sRGB ``[N,3,h,w]``, in ``raw``'s order)."""
    from uotisp_lib.inference import model_input

    model = trainer.eval_model()
    kind = getattr(model, "input_kind", "rgb")
    if not isinstance(raw, PatchSet):  # streamed: inputs computed per batch
        return trainer.predict(raw.map(lambda t: model_input(t, kind, trainer.preprocess)))
    inputs = PatchSet(raw.stems, model_input(raw.images, kind, trainer.preprocess))
    return trainer.predict(inputs)


def score_on(trainer, raw: PatchSet | None, gt: PatchSet | None, *, se: bool = False) -> dict[str, float]:
    """PSNR / SSIM / dE2000 of a trainer's evaluated map on ``raw`` against ``gt`` (keyed): means over
    the patches. ``se=True`` adds ``psnr_se``, ``ssim_se``, ``de2000_se``: the standard error of the
    mean over the test *images* (patches averaged per image first; NaN with one image). Without
    ``raw`` or ``gt`` every value is NaN (the same columns, so a table keeps its schema)."""
    if raw is None or gt is None:
        names = ("psnr", "ssim", "de2000") + (("psnr_se", "ssim_se", "de2000_se") if se else ())
        return dict.fromkeys(names, float("nan"))
    per = metrics.evaluate(predict_on(trainer, raw), gt.select(raw.stems))
    s = metrics.summarise(per)
    row = {"psnr": s["psnr"], "ssim": s["ssim"], "de2000": s["de2000"]}
    if se:
        row.update(image_standard_errors(raw.stems, per))
    return row


def image_standard_errors(stems: list[str], per_patch: dict[str, torch.Tensor]) -> dict[str, float]:
    """``{<metric>_se}``: the standard error over images (``<img>`` of ``<img>_<idx>`` stems) of the
    per-image means of per-patch metrics (PSNR capped like :func:`metrics.summarise`)."""
    df = pd.DataFrame({k: v.detach().cpu().double().numpy() for k, v in per_patch.items()})
    if "psnr" in df:
        df["psnr"] = df["psnr"].clip(upper=metrics.PSNR_CAP)
    df["image"] = [st.rsplit("_", 1)[0] for st in stems]
    by_image = df.groupby("image").mean()
    n = len(by_image)
    return {f"{k}_se": float(by_image[k].std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan") for k in per_patch}


def render_image(trainer, raw: PatchSet, image_id: str, grid: tuple[int, int]) -> torch.Tensor:
    """The trainer's sRGB rendering of one whole image (its ``<image_id>_<idx>`` patches, stitched on
    the ``(rows, cols)`` grid): ``[3, H, W]``."""
    from uotisp_lib.stitching import stitch

    stems = image_stems(raw, image_id)
    return stitch(predict_on(trainer, raw.subset(stems)).cpu(), *grid)


def image_layout(data: TrainingData, patches: PatchSet, image_id: str, split: str | None = None) -> tuple[int, int]:
    """The ``(rows, cols)`` patch grid of one image: on a DNG folder, from the size of the DNG
    ``image_id`` of ``split`` (the patches are cut row-major, so the grid is known; ``split`` None:
    the first of test, val, dev, train holding that DNG); on the synthetic benchmark from its
    ``meta.json``; else inferred from the seam consistency of ``patches`` (sRGB;
    :func:`stitching.infer_grid`)."""
    from uotisp_lib.data.synth import read_meta
    from uotisp_lib.stitching import infer_grid

    layout = data.layout
    if layout is not None and getattr(layout, "format", None) == "dng":
        splits = [split] if split is not None else [s for s in ("test", "val", "dev", "train") if s in layout.files]
        for s in splits:
            if image_id in layout.files.get(s, {}).get("raws", {}):
                return layout.grid(s, image_id)
        raise KeyError(f"no DNG {image_id!r} in {' or '.join(splits)} of {layout.root}")
    meta = read_meta(data.root)
    if meta:
        for m in meta["images"]:
            if m["id"] == image_id:
                return tuple(m["layout"])
    g = infer_grid(patches.select(image_stems(patches, image_id)), kind="rgb")
    return g.rows, g.cols


def image_stems(patches: PatchSet, image_id: str) -> list[str]:
    """The stems ``<image_id>_<idx>`` of one image, in patch-index order (row-major); ``[image_id]``
    when that stem itself is present (Zurich: each file is a whole image)."""
    if image_id in patches.index:
        return [image_id]
    stems = sorted((s for s in patches.stems if s.rsplit("_", 1)[0] == image_id), key=lambda s: int(s.rsplit("_", 1)[1]))
    if not stems:
        raise KeyError(f"no patches of image {image_id!r}")
    return stems


def model_inputs(raw: PatchSet, arch_input_kind: str, preprocess: PreprocessConfig | None) -> PatchSet:
    """Keyed network inputs for a RAW patch set (pseudo-RGB for ``rgb`` models)."""
    from uotisp_lib.inference import model_input

    if not isinstance(raw, PatchSet):  # streamed: inputs computed per batch
        return raw.map(lambda t: model_input(t, arch_input_kind, preprocess))
    with torch.no_grad():
        return PatchSet(raw.stems, model_input(raw.images, arch_input_kind, preprocess))


def pseudo_pair_config(study, arch: str = "colornet", seed: int = 0, paired: bool = False, arch_kwargs=()):
    """The :class:`~uotisp_lib.train.PseudoPairConfig` of a profile's
    :class:`~uotisp_lib.config.TrainStudy` (notebook 04): its epochs, batch, lr, discriminator width
    and crops; ``paired``: the true-pairs upper bound, all epochs in stage 1 (no GAN stage)."""
    from uotisp_lib.train import PseudoPairConfig

    cfg = PseudoPairConfig(
        arch=arch, arch_kwargs=tuple(arch_kwargs), stage1_epochs=study.stage1_epochs, stage2_epochs=study.stage2_epochs,
        batch_size=study.batch_size, lr=study.lr, d_width=study.d_width, crop=study.crop, seed=seed,
    )
    if paired:
        cfg = dataclasses.replace(cfg, paired=True, stage1_epochs=study.stage1_epochs + study.stage2_epochs, stage2_epochs=0)
    return cfg


def run_uot(data: TrainingData, cfg, run_dir: str | Path, device: str = "cpu", preprocess: PreprocessConfig | None = None,
            amp: str = "off", num_workers: int = 0, channels_last: bool = False, compile: bool = False, **fit_kw):
    """Train a :class:`~uotisp_lib.train.UOTTrainer` on ``data``; return ``(row, trainer)``.
    ``amp``: :meth:`~uotisp_lib.train.EpochTrainer.set_amp`; ``channels_last`` / ``compile``:
    :meth:`~uotisp_lib.train.EpochTrainer.set_channels_last` / ``set_compile`` (off: eager NCHW);
    ``num_workers``: DataLoader workers
    reading streamed sources ahead (``load_training_data(..., stream=True)``; unused in memory);
    ``fit_kw`` (``progress``, ``log``) go to :meth:`~uotisp_lib.train.EpochTrainer.fit`."""
    from uotisp_lib.train import UOTTrainer

    if cfg.mode == "paired" and data.gt_train is None:
        raise ValueError(f"{data.root}/train/gt: no ground truth; mode 'paired' needs train/gt/<stem>.png for every "
                         "train/raws/<stem>.npy (use mode 'unpaired')")
    trainer = UOTTrainer(
        cfg,
        data.raw_train,
        data.targets,
        run_dir,
        paired=data.gt_train,
        val=validation_raw(data),
        proxy_targets=data.proxy.images,
        preprocess=preprocess,
        device=device,
    )
    trainer.set_amp(amp)
    trainer.num_workers = num_workers
    _speed_options(trainer, channels_last, compile)
    hist = trainer.fit(**fit_kw)
    row = {"arch": cfg.arch, "params": count_parameters(trainer.model), **score_on(trainer, data.raw_test, data.gt_test)}
    row["proxy"] = hist[-1].get("proxy", float("nan"))
    return row, trainer


def _speed_options(trainer, channels_last: bool, compile: bool) -> None:
    """``--channels-last`` / ``--compile`` on a trainer (nothing when both are off)."""
    if channels_last:
        trainer.set_channels_last(True)
    if compile:
        trainer.set_compile("inductor")


def run_pseudo_pair(
    data: TrainingData,
    cfg,
    run_dir: str | Path,
    pair_fn=None,
    device: str = "cpu",
    preprocess: PreprocessConfig | None = None,
    extractor=None,
    amp: str = "off",
    num_workers: int = 0,
    channels_last: bool = False,
    compile: bool = False,
    **fit_kw,
):
    """Train a :class:`~uotisp_lib.train.PseudoPairTrainer` (paired when ``cfg.paired``); return ``(row, trainer)``.
    ``amp``, ``num_workers``, ``channels_last``, ``compile``: as in :func:`run_uot`;
    ``fit_kw`` (``progress``, ``log``) go to :meth:`~uotisp_lib.train.EpochTrainer.fit`."""
    from uotisp_lib.models import build_isp
    from uotisp_lib.train import PseudoPairTrainer

    kind = getattr(build_isp(cfg.arch, **dict(cfg.arch_kwargs)), "input_kind", "rgb")
    sources = model_inputs(data.raw_train, kind, preprocess)
    targets = data.gt_train if cfg.paired else data.targets
    if cfg.paired and targets is None:
        raise ValueError(f"{data.root}: the paired baseline needs train/gt (the synthetic benchmark has it)")
    val_raw, val_gt = validation_raw(data)
    val = (model_inputs(val_raw, kind, preprocess), val_gt)
    trainer = PseudoPairTrainer(
        cfg, sources, targets, pair_fn, run_dir, val=val, proxy_targets=data.proxy.images,
        extractor=extractor, preprocess=preprocess, device=device,
    )
    trainer.set_amp(amp)
    trainer.num_workers = num_workers
    _speed_options(trainer, channels_last, compile)
    hist = trainer.fit(**fit_kw)
    row = {"arch": cfg.arch, "params": count_parameters(trainer.model),
           **score_on(trainer, data.raw_test, data.gt_test, se=True)}
    row["proxy"] = hist[-1].get("proxy", float("nan"))
    return row, trainer


def graph_pair_fn(graph, allowed_targets: set[str] | None = None):
    """A resumable pair sampler over a :class:`~uotisp_lib.matching.PairGraph`: one target per
    source stem with probability proportional to its weight, drawn from the trainer's (checkpointed)
    torch generator. Targets outside ``allowed_targets`` (e.g. the proxy's held-out images) get
    weight 0; a source left with no target raises ``KeyError`` naming it."""
    w = torch.as_tensor(np.asarray(graph.weights, dtype=np.float64))
    targets = np.asarray(graph.targets)
    if allowed_targets is not None:
        keep = torch.as_tensor(np.isin(targets, list(allowed_targets)))
        w = w * keep
    empty = (w.sum(1) <= 0).nonzero().flatten().tolist()
    if empty:
        raise KeyError(f"pair graph: source {str(graph.sources[empty[0]])!r} has no allowed target")
    cum = torch.cumsum(w / w.sum(1, keepdim=True), 1)
    index = graph.index

    def pair(stems, gen: torch.Generator) -> list[str]:
        rows = torch.as_tensor([index[s] for s in stems], dtype=torch.long)
        u = torch.rand(len(rows), generator=gen, dtype=torch.float64)
        col = (u[:, None] >= cum[rows]).sum(1).clamp(max=cum.shape[1] - 1)
        return [str(t) for t in targets[rows.numpy(), col.numpy()]]

    return pair


def random_pair_fn(target_stems):
    """Uniform random pairing (the floor baseline), from the trainer's generator."""
    stems = list(target_stems)

    def pair(sources, gen: torch.Generator) -> list[str]:
        return [stems[i] for i in torch.randint(0, len(stems), (len(sources),), generator=gen).tolist()]

    return pair


def pseudo_pair_fn(method: str, target_stems, graph=None):
    """The pair sampler of a pairing ``method`` over the training targets ``target_stems``:
    :func:`random_pair_fn` for ``"random"``, else :func:`graph_pair_fn` over ``graph`` (a
    :class:`~uotisp_lib.matching.PairGraph` built with that method) restricted to those stems."""
    if method == "random":
        return random_pair_fn(target_stems)
    if graph is None:
        raise ValueError(f"pseudo_pair_fn: pairing {method!r} needs its pair graph")
    return graph_pair_fn(graph, set(target_stems))


def relaxed_mass(trainer, data: TrainingData, batch: int = 256) -> tuple[pd.DataFrame, torch.Tensor, list[bool]]:
    """Where the relaxed target marginal puts its mass after UOT training: the trained potential on
    every training target patch, the weights ``Psi2*'(-v(y)/alpha)`` (:func:`uotisp_lib.uot.relaxed_target_weights`),
    and per kind of target image (``typical`` / ``outlier``, from ``data.outlier_images``) the number
    of patches, their share of the patches and of the mass, and their mean weight. Returns
    ``(table, weights [N], is_outlier)``; a share of the mass below the share of the patches means
    the relaxation leaves that kind partly unmatched."""
    from uotisp_lib.uot import relaxed_target_weights

    cfg = trainer.cfg.uot
    with torch.no_grad():
        v = torch.cat([trainer.potential(y.to(trainer.device)).cpu() for y in data.targets.images.split(batch)])
    w = relaxed_target_weights(v.double(), cfg.psi_target, cfg.alpha)
    bad = set(data.outlier_images)
    is_out = [s.rsplit("_", 1)[0] in bad for s in data.targets.stems]
    mask = torch.tensor(is_out)
    rows = []
    for kind, m in (("typical", ~mask), ("outlier", mask)):
        if bool(m.any()):
            rows.append({"targets": kind, "patches": int(m.sum()), "share_of_patches": float(m.double().mean()),
                         "share_of_mass": float(w[m].sum() / w.sum()), "mean_weight": float(w[m].mean())})
    return pd.DataFrame(rows), w, is_out
