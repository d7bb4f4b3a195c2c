"""The seeded UOT study of notebook 05 (issue 10): every arm x architecture x seed, resumable.

One runner that notebook 05, ``uotisp reproduce`` (through the notebook) and the tests share:

- :data:`VARIANTS`: the study's arms, named exactly as in the tables;
- :func:`arm_config`: the :class:`~uotisp_lib.train.UOTTrainConfig` (or paired-L1
  :class:`~uotisp_lib.train.PseudoPairConfig`) and the training data of one arm;
- :func:`run_study`: trains each (arch, arm, seed) once, scores it on the test split **per image**
  (metrics averaged over an image's patches, then over images), and writes one JSON result per
  run atomically, so an interrupted study resumes where it stopped and a finished run is never
  recomputed (its configuration is stored with it and checked);
- :func:`summarise_study`: mean and standard error over seeds per arm, and the paired per-image
  difference of each arm to ``paired L1`` with its standard error.

Selection happens on the validation split only (each trainer's history); the test split is
scored once per finished run.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch

from uotisp_lib import io as uio
from uotisp_lib import metrics
from uotisp_lib.config import UOTStudy, to_jsonable
from uotisp_lib.uot import UOTConfig, naive_isp

#: The study's arms, in table order (issue 10).
VARIANTS: tuple[str, ...] = (
    "reference",
    "paired L1",
    "paired UOT",
    "unpaired UOT",
    "unpaired no cost",
    "unpaired balanced",
    "unpaired no experts",
    "unpaired outliers removed",
    "unpaired true targets",
)

METRICS = ("psnr", "ssim", "de2000")
#: Columns of the study's rows (``uot_study.csv``), in order.
ROW_COLUMNS = ("arch", "variant", "seed", *METRICS, "colour_w", "psnr_no_offset", "n_test_images", "params", "val_psnr", "epoch",
               "seconds")


def image_id(stem: str) -> str:
    """``s0012_3`` -> ``s0012`` (a patch's full image)."""
    return stem.rsplit("_", 1)[0]


def per_image_scores(preds: torch.Tensor, gt: torch.Tensor, stems: Sequence[str]) -> pd.DataFrame:
    """Per-image PSNR / SSIM / dE2000: each metric on every patch ``[N,3,H,W]`` (keyed by ``stems``),
    then averaged over the patches of each full image -> one row per image (``image`` column),
    sorted by image id. PSNR is capped as in :func:`uotisp_lib.metrics.summarise`."""
    if len(stems) != preds.shape[0] or preds.shape != gt.shape:
        raise ValueError(f"per_image_scores: {len(stems)} stems, preds {tuple(preds.shape)}, gt {tuple(gt.shape)}")
    m = metrics.evaluate(preds, gt)
    df = pd.DataFrame({k: m[k].double().cpu().numpy() for k in METRICS})
    df["psnr"] = df["psnr"].clip(upper=metrics.PSNR_CAP)
    df["image"] = [image_id(s) for s in stems]
    return df.groupby("image", sort=True)[list(METRICS)].mean().reset_index()


def remove_image_offsets(preds: torch.Tensor, gt: torch.Tensor, stems: Sequence[str]) -> torch.Tensor:
    """``preds`` ``[N,3,H,W]`` with each full image's mean colour error removed: per image (the
    patches ``<img>_<k>`` of ``stems``), the mean over its patches and pixels of ``preds - gt`` per
    channel is subtracted, then clipped to [0, 1]. An oracle diagnostic (it reads the ground truth):
    the PSNR it gives, against the plain PSNR, tells how much of a map's error is one colour cast per
    image (white balance, exposure) and how much is local (issue 10)."""
    if len(stems) != preds.shape[0] or preds.shape != gt.shape or preds.ndim != 4:
        raise ValueError(f"remove_image_offsets: {len(stems)} stems, preds {tuple(preds.shape)}, gt {tuple(gt.shape)}")
    ids = [image_id(s) for s in stems]
    index = {i: k for k, i in enumerate(dict.fromkeys(ids))}
    group = torch.tensor([index[i] for i in ids], device=preds.device)
    diff = (preds - gt).double().mean(dim=(2, 3))  # [N, 3], patches of one image have one size
    sums = torch.zeros(len(index), preds.shape[1], dtype=torch.float64, device=preds.device).index_add_(0, group, diff)
    counts = torch.bincount(group, minlength=len(index)).to(torch.float64).unsqueeze(1)
    offset = (sums / counts)[group].to(preds.dtype)
    return (preds - offset[:, :, None, None]).clamp(0.0, 1.0)


def offset_free_psnr(preds: torch.Tensor, gt: torch.Tensor, stems: Sequence[str]) -> pd.Series:
    """Per-image PSNR (patches averaged, capped like :func:`per_image_scores`) after
    :func:`remove_image_offsets`, indexed by image id, sorted."""
    fixed = remove_image_offsets(preds, gt, stems)
    p = metrics.psnr(fixed, gt).double().cpu().numpy().clip(max=metrics.PSNR_CAP)
    return pd.Series(p, index=[image_id(s) for s in stems]).groupby(level=0, sort=True).mean()


# ------------------------------------------------------------------------------------------- arms
def base_config(study: UOTStudy, arch: str, seed: int, cost: str | None = None, experts: Sequence[str] | None = None):
    """The study's unpaired UOT configuration of ``arch`` (semi-relaxed, committee, study's cost)."""
    from uotisp_lib.train import UOTTrainConfig

    uot_cfg = UOTConfig.preset(
        "semi", tau=study.tau, cost=cost or study.cost, alpha=study.alpha, r1_gamma=study.r1_gamma,
        r1_scale=study.r1_scale, reference_wb=study.reference_wb, map_steps_per_potential=study.map_steps,
        potential_steps=study.potential_steps,
    )
    return UOTTrainConfig(
        arch=arch, arch_kwargs=study.kwargs_for(arch), mode="unpaired", uot=uot_cfg, epochs=study.epochs,
        batch_size=study.batch_size, lr_map=study.lr_map, lr_potential=study.lr_potential,
        potential_width=study.potential_width, potential_pool=study.potential_pool,
        experts=tuple(experts) if experts is not None else UOTTrainConfig().experts,
        expert_width=study.expert_width, expert_weight=study.expert_weight, expert_reference=study.expert_reference,
        crop=study.crop, paired_l1=study.paired_l1, lr_schedule=study.lr_schedule, seed=seed,
    )


def arm_config(name: str, study: UOTStudy, arch: str, seed: int, data, cost: str | None = None):
    """``(kind, config, data)`` of one arm: kind ``"reference"`` (no training), ``"paired_l1"``
    (:class:`~uotisp_lib.train.PseudoPairConfig`) or ``"uot"`` (:class:`~uotisp_lib.train.UOTTrainConfig`);
    ``data`` is the :class:`~uotisp_lib.experiments.TrainingData` the arm trains on."""
    from uotisp_lib.train import PseudoPairConfig

    base = base_config(study, arch, seed, cost)
    if name == "reference":
        return "reference", None, data
    if name == "paired L1":
        cfg = PseudoPairConfig(arch=arch, arch_kwargs=study.kwargs_for(arch), paired=True, ssim_weight=0.0,
                               stage1_epochs=study.epochs, stage2_epochs=0, batch_size=study.batch_size,
                               lr=study.lr_map, crop=study.crop, seed=seed)
        return "paired_l1", cfg, data
    if name == "paired UOT":
        return "uot", dataclasses.replace(base, mode="paired"), data
    if name == "unpaired UOT":
        return "uot", base, data
    if name == "unpaired no cost":
        return "uot", dataclasses.replace(base, uot=dataclasses.replace(base.uot, tau=0.0)), data
    if name == "unpaired balanced":
        return "uot", dataclasses.replace(base, uot=dataclasses.replace(base.uot, psi_target="linear")), data
    if name == "unpaired no experts":
        return "uot", dataclasses.replace(base, experts=()), data
    if name == "unpaired outliers removed":
        return "uot", base, data.without_outliers()
    if name == "unpaired true targets":
        if data.gt_train is None:
            raise ValueError(f"{data.root}: 'unpaired true targets' needs train/gt (the synthetic benchmark has it)")
        return "uot", base, dataclasses.replace(data, targets=data.gt_train)
    raise ValueError(f"unknown study arm {name!r}; expected one of {', '.join(VARIANTS)}")


def slug(name: str) -> str:
    return name.replace(" ", "_").replace(",", "")


# ------------------------------------------------------------------------------------------- runs
def _result_path(out_dir: Path, arch: str, name: str, seed: int) -> Path:
    return out_dir / "results" / arch / f"{slug(name)}-seed{seed}.json"


def colour_distance(preds: torch.Tensor, gt: torch.Tensor, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between the colour distribution of a split's outputs and that of
    its ground truth (all patches pooled, 4 x 4 block means, 64 directions; ``uot.colour_sliced_wasserstein``):
    how far the *mapped distribution* is from the target distribution, whatever the pairing (the
    distribution-level bias measure of the OT-SR view, Gazdieva et al., arXiv 2202.01116)."""
    from uotisp_lib.uot import colour_sliced_wasserstein

    with torch.no_grad():
        d = colour_sliced_wasserstein(preds.double(), gt.double(), n_projections=64, pool=4,
                                      generator=torch.Generator().manual_seed(seed))
    return float(d)


def run_configured(kind: str, cfg, arm_data, *, data, study: UOTStudy, arch: str, variant: str, seed: int,
                   path: Path, run_dir: Path, device: str = "cpu", extra: dict | None = None, pair_graph=None) -> dict:
    """Train (or read back) one configured run and score it on the test split (the shared core of
    :func:`run_arm` and the ablations of notebook 06): ``kind`` and ``cfg`` as from
    :func:`arm_config`, trained on ``arm_data``, scored on ``data``'s test split. Kind
    ``"pseudo_pair"`` trains a :class:`~uotisp_lib.train.PseudoPairTrainer` on pseudo-pairs of
    ``extra["pairing"]`` drawn from ``arm_data``'s targets (:func:`~uotisp_lib.experiments.pseudo_pair_fn`,
    over ``pair_graph`` unless random; built here, since a sampler does not pickle). The record (see
    :func:`run_arm`; plus ``colour_w``, :func:`colour_distance` on the test split, and ``extra``) is
    written atomically to ``path``; a stored record of the same setup is returned as it is, one of
    another setup is refused."""
    from uotisp_lib.experiments import pseudo_pair_fn, run_pseudo_pair, run_uot
    from uotisp_lib.inference import load_isp, render
    from uotisp_lib.models import build_isp, count_parameters

    if data.raw_test is None or data.gt_test is None:
        raise ValueError(f"{data.root}: the study needs test/raws and test/gt")
    wanted = json.loads(json.dumps(to_jsonable({"kind": kind, "config": cfg, "n_targets": len(arm_data.targets),
                                                **({"extra": extra} if extra else {})})))
    if path.is_file():
        rec = json.loads(path.read_text(encoding="utf-8"))
        if rec.get("setup") == wanted:
            return rec
        raise ValueError(f"{path}: a result of another configuration is stored here; delete it or use another results folder")
    t0 = time.perf_counter()
    gt_test = data.gt_test.select(data.raw_test.stems)
    val_psnr, selected_epoch = float("nan"), 0
    if kind == "reference":
        preds = naive_isp(data.raw_test.images, wb=study.reference_wb)
        params = count_parameters(build_isp(arch, **dict(study.kwargs_for(arch))))  # the arch's untrained size
        if data.raw_val is not None and data.gt_val is not None:
            v = per_image_scores(naive_isp(data.raw_val.images, wb=study.reference_wb),
                                 data.gt_val.select(data.raw_val.stems), data.raw_val.stems)
            val_psnr = float(v["psnr"].mean())
    else:
        if kind == "pseudo_pair":
            fn = pseudo_pair_fn((extra or {}).get("pairing", ""), arm_data.targets.stems, pair_graph)
            _, trainer = run_pseudo_pair(arm_data, cfg, run_dir, fn, device=device)
        else:
            _, trainer = (run_pseudo_pair if kind == "paired_l1" else run_uot)(arm_data, cfg, run_dir, device=device)
        best = trainer.run_dir / "best"
        preds = render(load_isp(best if (best / "isp.json").is_file() else trainer.run_dir / "export"), data.raw_test.images)
        selected_epoch = int(trainer.state.extra.get("best_epoch", trainer.state.extra["epoch"]))
        params = count_parameters(trainer.model)
        val_psnr = float(trainer.state.extra.get("best_val_psnr", trainer.state.history[-1].get("val_psnr", float("nan"))))
    scores = per_image_scores(preds, gt_test, data.raw_test.stems)
    scores["psnr_no_offset"] = offset_free_psnr(preds, gt_test, data.raw_test.stems).reindex(scores.image).to_numpy()
    rec = {
        "arch": arch,
        "variant": variant,
        "seed": seed,
        **{k: float(scores[k].mean()) for k in METRICS},
        "colour_w": colour_distance(preds, gt_test),
        "psnr_no_offset": float(scores["psnr_no_offset"].mean()),
        "n_test_images": int(len(scores)),
        "params": int(params),
        "val_psnr": val_psnr,
        "epoch": selected_epoch,
        "seconds": time.perf_counter() - t0,
        "per_image": scores.to_dict(orient="records"),
        "setup": wanted,
        **(extra or {}),
    }
    uio.atomic_write_text(path, json.dumps(rec, indent=1, sort_keys=True) + "\n")
    return rec


def run_arm(name: str, study: UOTStudy, arch: str, seed: int, data, out_dir: str | Path, device: str = "cpu",
            cost: str | None = None) -> dict:
    """Train (or load the finished result of) one arm and seed; return its result record:
    ``arch, variant, seed, psnr, ssim, de2000, colour_w, n_test_images, params, val_psnr, epoch, seconds``
    and ``per_image`` (a list of per-image dicts). Trained arms are scored with the map of the epoch
    of highest validation PSNR (``epoch``; model selection on validation, never on test).
    Written to ``out_dir/results/<arch>/<arm>-seed<s>.json``."""
    if data.raw_test is None or data.gt_test is None:
        raise ValueError(f"{data.root}: the study needs test/raws and test/gt")
    out_dir = Path(out_dir)
    kind, cfg, arm_data = arm_config(name, study, arch, seed, data, cost)
    return run_configured(kind, cfg, arm_data, data=data, study=study, arch=arch, variant=name, seed=seed,
                          path=_result_path(out_dir, arch, name, seed),
                          run_dir=out_dir / "runs" / arch / f"{slug(name)}-seed{seed}", device=device)


def run_job(job: dict) -> dict:
    """One stored run of :func:`run_configured` from a dict of its arguments (``kind`` first; a
    worker process's unit of work, with one intra-op thread when ``threads`` is set)."""
    job = dict(job)
    if job.pop("threads", None):
        torch.set_num_threads(1)
    return run_configured(job.pop("kind"), job.pop("cfg"), job.pop("arm_data"), **job)


def run_jobs(jobs: dict[str, dict], workers: int = 1, device: str = "cpu") -> dict[str, dict]:
    """Run every job of ``jobs`` (key -> :func:`run_job` arguments) -> key -> record: in this
    process, or with ``workers > 1`` on CPU in that many spawned processes of one thread each
    (faster than one process with as many threads for these small networks). Finished runs are
    read back either way; jobs must write distinct paths."""
    if workers < 1:
        raise ValueError(f"run_jobs: workers must be >= 1, got {workers!r}")
    if workers > 1 and len(jobs) > 1 and not device.startswith("cuda"):
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            return dict(zip(jobs, pool.map(run_job, [dict(j, threads=True) for j in jobs.values()])))
    return {k: run_job(j) for k, j in jobs.items()}


def run_study(
    data,
    study: UOTStudy,
    out_dir: str | Path,
    *,
    archs: Sequence[str] | None = None,
    variants: Sequence[str] = VARIANTS,
    device: str = "cpu",
    cost: str | None = None,
    seed0: int = 0,
    workers: int = 1,
    log: Callable[[str], None] | None = print,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every (arch, arm, seed) of the study -> ``(rows, per_image)`` DataFrames.

    Seeds are ``seed0 .. seed0 + study.seeds_for(arch) - 1``, the same in every arm. ``rows``: one
    row per run with :data:`ROW_COLUMNS`; ``per_image``: one row per run and test image. Finished
    runs are read back. ``workers > 1`` trains that many runs at once (:func:`run_jobs`).
    """
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ValueError(f"run_study: unknown arms {bad}; expected names from {', '.join(VARIANTS)}")
    if data.raw_test is None or data.gt_test is None:
        raise ValueError(f"{data.root}: the study needs test/raws and test/gt")
    out_dir = Path(out_dir)
    plan, jobs = [], {}
    for arch in archs or study.archs:
        for seed in range(seed0, seed0 + study.seeds_for(arch)):
            for name in variants:
                kind, cfg, arm_data = arm_config(name, study, arch, seed, data, cost)
                key = f"{arch}/{slug(name)}-seed{seed}"
                plan.append((arch, name, seed, key))
                jobs[key] = dict(kind=kind, cfg=cfg, arm_data=arm_data, data=data, study=study, arch=arch, variant=name,
                                 seed=seed, path=_result_path(out_dir, arch, name, seed),
                                 run_dir=out_dir / "runs" / arch / f"{slug(name)}-seed{seed}", device=device)
    todo = sum(not j["path"].is_file() for j in jobs.values())
    t0 = time.perf_counter()
    recs = run_jobs(jobs, workers, device)
    if todo:
        record_wall(out_dir, time.perf_counter() - t0, todo, workers)
    rows, per_image = [], []
    for arch, name, seed, key in plan:
        rec = recs[key]
        if log is not None:
            log(f"{arch:9s} {name:26s} seed {seed}: PSNR {rec['psnr']:.2f} dB  SSIM {rec['ssim']:.3f}  "
                f"dE {rec['de2000']:.2f}  ({rec['seconds']:.0f} s)")
        rows.append({k: rec.get(k, float("nan")) for k in ROW_COLUMNS})
        per_image += [{"arch": arch, "variant": name, "seed": seed, "image": r["image"], **{k: r[k] for k in METRICS}}
                      for r in rec["per_image"]]
    return pd.DataFrame(rows), pd.DataFrame(per_image)


def record_wall(out_dir: str | Path, seconds: float, runs_trained: int, workers: int = 1) -> None:
    """Append one execution's wall time to ``out_dir/wall.jsonl`` (an execution that trained
    ``runs_trained`` runs; read back by :func:`study_wall`). Written whole or not at all."""
    path = Path(out_dir) / "wall.jsonl"
    entry = {"seconds": round(float(seconds), 1), "runs_trained": int(runs_trained), "workers": int(workers),
             "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    uio.atomic_write_text(path, old + json.dumps(entry) + "\n")


def study_wall(out_dir: str | Path) -> dict:
    """Wall time the study's runs took to train, over the executions that trained any (a study
    resumed after an interruption sums its parts): ``{"seconds", "runs_trained", "executions"}``;
    zeros when ``out_dir/wall.jsonl`` does not exist. A notebook that only reads finished runs back
    reports this, not its own (short) wall time, as the cost of the study."""
    path = Path(out_dir) / "wall.jsonl"
    entries = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()] if path.is_file() else []
    return {"seconds": round(sum(e["seconds"] for e in entries), 1), "runs_trained": sum(e["runs_trained"] for e in entries),
            "executions": len(entries)}


# ---------------------------------------------------------------------------------------- summary
def _se(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")


def paired_difference(per_image: pd.DataFrame, arch: str, arm: str, baseline: str, metric: str) -> tuple[float, float]:
    """Mean and standard error of ``arm - baseline`` on ``metric``, paired by seed and test image.

    The difference ``d[s, i]`` is taken per seed ``s`` and image ``i`` (both arms share seeds and
    images). Its standard error combines the spread over images of the seed-averaged difference
    and the spread over seeds of the image-averaged difference:
    ``SE^2 = var_i(mean_s d) / n_i + var_s(mean_i d) / n_s`` (the second term is absent with one seed).
    """
    a = per_image[(per_image.arch == arch) & (per_image.variant == arm)]
    b = per_image[(per_image.arch == arch) & (per_image.variant == baseline)]
    m = a.merge(b, on=["seed", "image"], suffixes=("", "_base"))
    if m.empty:
        return float("nan"), float("nan")
    d = m[metric] - m[f"{metric}_base"]
    m = m.assign(d=d)
    by_image = m.groupby("image")["d"].mean().to_numpy()
    by_seed = m.groupby("seed")["d"].mean().to_numpy()
    var = (by_image.var(ddof=1) / len(by_image) if len(by_image) > 1 else 0.0) + (
        by_seed.var(ddof=1) / len(by_seed) if len(by_seed) > 1 else 0.0
    )
    return float(d.mean()), float(math.sqrt(var)) if len(by_image) > 1 else float("nan")


def summarise_study(rows: pd.DataFrame, per_image: pd.DataFrame, baseline: str = "paired L1") -> pd.DataFrame:
    """One row per (arch, arm): ``n_seeds, n_test_images``, mean and standard error over seeds of
    PSNR / SSIM / dE2000 (``psnr_se``...), and the paired per-image difference to ``baseline``
    (``d_psnr``, ``d_psnr_se``, ...; :func:`paired_difference`)."""
    out = []
    order = {v: i for i, v in enumerate(VARIANTS)}
    for (arch, arm), g in rows.groupby(["arch", "variant"], sort=False):
        r: dict = {"arch": arch, "variant": arm, "n_seeds": int(g.seed.nunique()), "n_test_images": int(g.n_test_images.max())}
        for k in METRICS:
            r[k] = float(g[k].mean())
            r[f"{k}_se"] = _se(g[k].to_numpy())
        if "psnr_no_offset" in g:  # the oracle per-image colour-cast fix (remove_image_offsets)
            r["psnr_no_offset"] = float(g["psnr_no_offset"].mean())
        for k in METRICS:
            if arm == baseline:
                r[f"d_{k}"], r[f"d_{k}_se"] = 0.0, 0.0
            else:
                r[f"d_{k}"], r[f"d_{k}_se"] = paired_difference(per_image, arch, arm, baseline, k)
        out.append(r)
    df = pd.DataFrame(out)
    df["_o"] = df.variant.map(order)
    archs = list(dict.fromkeys(rows.arch))
    df["_a"] = df.arch.map({a: i for i, a in enumerate(archs)})
    return df.sort_values(["_a", "_o"]).drop(columns=["_a", "_o"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------- verdict
def _call(d: float, se: float, higher_is_better: bool = True) -> str:
    """``better`` / ``worse`` when ``|d| > 2 SE`` (in the good / bad direction), else ``tie``."""
    if not (math.isfinite(d) and math.isfinite(se)):
        return "n/a"
    if abs(d) <= 2 * se:
        return "tie"
    return "better" if (d > 0) == higher_is_better else "worse"


def verdict(summary: pd.DataFrame, per_image: pd.DataFrame) -> list[dict]:
    """The EGUOT-ISP claims, judged from the study (a difference counts when it exceeds 2 standard
    errors, paired by seed and image; :func:`paired_difference`). One dict per (claim, arch):
    ``claim, arch, holds`` (``"yes"``, ``"no"`` or ``"not shown"``) and ``evidence`` (a sentence)."""
    out = []
    s = summary.set_index(["arch", "variant"])
    for arch in dict.fromkeys(summary.arch):
        def has(v: str) -> bool:
            return (arch, v) in s.index

        if has("paired UOT") and has("paired L1"):
            r = s.loc[(arch, "paired UOT")]
            calls = [_call(r.d_psnr, r.d_psnr_se), _call(r.d_ssim, r.d_ssim_se), _call(r.d_de2000, r.d_de2000_se, False)]
            holds = "yes" if all(c == "better" for c in calls) else ("no" if "worse" in calls else "not shown")
            out.append({"claim": "paired UOT beats paired training", "arch": arch, "holds": holds,
                        "evidence": f"PSNR {r.d_psnr:+.2f} +- {r.d_psnr_se:.2f} dB, SSIM {r.d_ssim:+.3f} +- {r.d_ssim_se:.3f}, "
                                    f"dE2000 {r.d_de2000:+.2f} +- {r.d_de2000_se:.2f} vs paired L1"})
        if has("unpaired UOT") and has("paired L1"):
            r = s.loc[(arch, "unpaired UOT")]
            gap = r.psnr - s.loc[(arch, "paired L1")].psnr
            out.append({"claim": "unpaired rivals paired (within 1 dB)", "arch": arch,
                        "holds": "yes" if gap >= -1.0 else "no",
                        "evidence": f"unpaired UOT {r.psnr:.2f} dB vs paired L1 {r.psnr - gap:.2f} dB "
                                    f"(paired difference {r.d_psnr:+.2f} +- {r.d_psnr_se:.2f} dB)"})
        for claim, arm, other in (
            ("the unbalanced relaxation resists outlier targets (semi vs balanced)", "unpaired UOT", "unpaired balanced"),
            ("the committee helps (with vs without experts)", "unpaired UOT", "unpaired no experts"),
            ("the transport cost helps (with vs without cost)", "unpaired UOT", "unpaired no cost"),
        ):
            if has(arm) and has(other):
                d, se = paired_difference(per_image, arch, arm, other, "psnr")
                c = _call(d, se)
                out.append({"claim": claim, "arch": arch,
                            "holds": {"better": "yes", "worse": "no"}.get(c, "not shown"),
                            "evidence": f"PSNR {d:+.2f} +- {se:.2f} dB ({arm} minus {other})"})
        if has("reference"):
            # "no" only when an arm is below by more than 2 SE (paired by seed and image); arms whose
            # mean is below but within the noise make it "not shown"
            floor = s.loc[(arch, "reference")].psnr
            below = [v for v in VARIANTS if v.startswith("unpaired") and has(v) and s.loc[(arch, v)].psnr < floor]
            diffs = {v: paired_difference(per_image, arch, v, "reference", "psnr") for v in below}
            worse = [v for v in below if _call(*diffs[v]) == "worse"]
            listed = ", ".join(f"{v} {d:+.2f} +- {se:.2f} dB" for v, (d, se) in diffs.items())
            out.append({"claim": "no unpaired arm below the reference rendering", "arch": arch,
                        "holds": "no" if worse else ("not shown" if below else "yes"),
                        "evidence": f"reference {floor:.2f} dB" + (f"; below it (paired difference): {listed}" if below else "")
                                    + (f"; by more than 2 SE: {', '.join(worse)}" if worse else "")})
    return out


def cost_check_table(data, costs: Sequence[str] | None = None, wbs: Sequence[str] = ("camera", "gray_world"),
                     mapped: torch.Tensor | None = None, seed: int = 0) -> pd.DataFrame:
    """:func:`uotisp_lib.uot.cost_check` on the validation split, for every cost (``tau = 1``) and
    reference white balance; sorted by the truth ratio (best first)."""
    from uotisp_lib import uot

    if data.raw_val is None or data.gt_val is None:
        raise ValueError(f"{data.root}: cost_check needs a validation split with ground truth (val/raws, val/gt)")
    x, gt = data.raw_val.images, data.gt_val.select(data.raw_val.stems)
    refs = {wb: uot.naive_isp(x, wb=wb) for wb in wbs}
    fns = {c: uot.get_cost(c, tau=1.0) for c in (costs or uot.COSTS)}
    rows = uot.cost_check(x, gt, fns, refs, mapped=mapped, generator=torch.Generator().manual_seed(seed))
    return pd.DataFrame(rows).sort_values("truth_ratio").reset_index(drop=True)


def discuss_offsets(summary: pd.DataFrame, arm: str = "unpaired UOT", baseline: str = "paired L1") -> str:
    """How much of ``arm``'s gap to ``baseline`` is one colour cast per test image, per architecture,
    from the summary's ``psnr`` and ``psnr_no_offset`` (:func:`remove_image_offsets`), as Markdown
    bullets; empty when the column is missing."""
    if "psnr_no_offset" not in summary or summary["psnr_no_offset"].isna().all():
        return ""
    lines = []
    for arch, g in summary.groupby("arch", sort=False):
        a, b = g[g.variant == arm], g[g.variant == baseline]
        if a.empty or b.empty:
            continue
        a, b = a.iloc[0], b.iloc[0]
        gap, gap_fixed = b.psnr - a.psnr, b.psnr_no_offset - a.psnr_no_offset
        lines.append(f"- **{arch}**: removing each test image's mean colour error lifts {baseline} from {b.psnr:.2f} to "
                     f"{b.psnr_no_offset:.2f} dB and {arm} from {a.psnr:.2f} to {a.psnr_no_offset:.2f} dB; the gap goes "
                     f"from {gap:+.2f} to {gap_fixed:+.2f} dB, so per-image colour casts account for {gap - gap_fixed:+.2f} dB of it.")
    return "\n".join(lines)


def discuss_verdict(rows: Sequence[dict]) -> str:
    """The verdict as Markdown generated from :func:`verdict`'s rows: one bullet per claim, saying
    for which architectures it holds, fails or is not shown, each with its evidence."""
    by_claim: dict[str, list[dict]] = {}
    for r in rows:
        by_claim.setdefault(r["claim"], []).append(r)
    lines = []
    for claim, rs in by_claim.items():
        parts = []
        for word, label in (("yes", "holds"), ("no", "does not hold"), ("not shown", "not shown")):
            hit = [r for r in rs if r["holds"] == word]
            if hit:
                parts.append(f"{label} for " + "; ".join(f"{r['arch']} ({r['evidence']})" for r in hit))
        lines.append(f"- **{claim}**: " + ". ".join(parts) + ".")
    return "\n".join(lines)
