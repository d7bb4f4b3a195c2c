"""The ablations of notebook 06 (issue 13): one factor of the UOT method changed at a time, seeded.

Every arm starts from the study's unpaired UOT configuration (:func:`uotisp_lib.study.base_config`)
and changes one thing; each arm x seed is trained, selected on validation and scored on the test
split per image by the study's own runner (:func:`uotisp_lib.study.run_configured`), so the numbers
are comparable with notebook 05's. Groups (:data:`GROUPS`):

- ``committee``: no experts, each expert alone, each left out, all; gradient balancing off; and the
  colour sliced-Wasserstein expert (``colour_ot``) added;
- ``psi``: the conjugates ``Psi*`` (balanced, semi-relaxed with softplus / KL / chi2, unbalanced on
  both sides) and the sweep of the divergence weight ``alpha``;
- ``cost``: each transport cost, and ``tau`` swept (0 included) for the study's cost;
- ``outliers``: the target set rebuilt at several outlier fractions (:func:`with_outlier_fraction`),
  balanced against semi-relaxed: the robustness claim as a curve;
- ``pairing``: notebook 04's pseudo-pair colornet (Borelli's two-stage trainer) with pairs drawn
  at random, from the kNN, OT or FGW pair graph (:func:`pairing_graph`, built once per method from
  the training targets only), with the 1x1 or the 3D-LUT head (``AblationStudy.pairing_heads``); baseline: random pairs, 1x1 head
  (the floor every graph must beat). Not in the cpu profile's groups (it trains another model
  family; smoke runs FGW vs random); select it with ``groups``;
- ``bias``: the OT-SR bias claim (Gazdieva et al., arXiv 2202.01116): the OT map against a
  content-regularised GAN (``UOTConfig.objective = "gan"``: the same map, potential, cost as content
  loss and committee, trained with the GAN's logistic losses) at the study's ``tau`` and at
  ``bias_taus``. The GAN's map minimises content loss plus a divergence, so the more content weight,
  the further its output distribution from the target's; the OT map's target marginal holds (up to
  the relaxation). Measured by ``colour_w``, paired by seed (``d_colour_w``), besides PSNR.

Identical configurations (the baseline appears in several groups) share one stored run: results are
keyed by a hash of the run's setup. Every row carries ``colour_w``, the colour sliced-Wasserstein
distance of the test outputs' distribution to the ground truth's (the OT-SR bias measure).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from uotisp_lib.config import AblationStudy, MatchStudy, TrainStudy, UOTStudy, to_jsonable

GROUPS: tuple[str, ...] = ("committee", "psi", "cost", "outliers", "pairing", "bias")
#: The pairing group's pair sources: arm label -> :mod:`uotisp_lib.matching` method ("random": uniform).
PAIRINGS: tuple[tuple[str, str], ...] = (("random", "random"), ("kNN", "knn"), ("OT", "ot"), ("FGW", "fgw"))
#: The pairing group's colornet heads: arm label -> ``head`` of the colornet's ``arch_kwargs``.
HEADS: tuple[tuple[str, str], ...] = (("1x1", "conv1x1"), ("3D LUT", "lut3d"))
#: The architecture the pairing group trains (notebook 04's pseudo-pair colornet).
PAIRING_ARCH = "colornet"
EXPERT_NAMES: tuple[str, ...] = ("colour", "structure", "frequency")
METRICS = ("psnr", "ssim", "de2000", "colour_w")
#: Columns of the ablation rows, in order.
ROW_COLUMNS = ("group", "arm", "arch", "seed", *METRICS, "n_test_images", "n_target_images", "outlier_fraction",
               "val_psnr", "epoch", "seconds")


@dataclass(frozen=True)
class AblationArm:
    """One arm: ``cfg`` overrides of the :class:`~uotisp_lib.train.UOTTrainConfig` (of the
    :class:`~uotisp_lib.train.PseudoPairConfig` when ``pairing`` is set), ``uot`` overrides of its
    :class:`~uotisp_lib.uot.UOTConfig`, an optional target outlier fraction, the pseudo-pair
    source (``pairing``: a method of :data:`PAIRINGS`; empty for UOT arms), and the arm it is
    compared with (``baseline``, paired by seed and image)."""

    group: str
    name: str
    cfg: tuple[tuple[str, object], ...] = ()
    uot: tuple[tuple[str, object], ...] = ()
    outliers: float | None = None
    baseline: str = ""
    pairing: str = ""

    @property
    def key(self) -> str:
        return f"{self.group}/{self.name}"


def ablation_arms(study: UOTStudy, ablate: AblationStudy) -> list[AblationArm]:
    """The arms of ``ablate.groups``, in table order (each group's first arm is its baseline, except
    in ``outliers`` where each semi arm is compared with the balanced arm at the same fraction)."""
    from uotisp_lib.uot import COSTS

    bad = [g for g in ablate.groups if g not in GROUPS]
    if bad:
        raise ValueError(f"ablation_arms: unknown groups {bad}; expected names from {', '.join(GROUPS)}")
    arms: list[AblationArm] = []
    if "committee" in ablate.groups:
        g, base = "committee", "all experts"
        arms.append(AblationArm(g, base))
        arms.append(AblationArm(g, "no experts", cfg=(("experts", ()),), baseline=base))
        arms += [AblationArm(g, f"only {e}", cfg=(("experts", (e,)),), baseline=base) for e in EXPERT_NAMES]
        arms += [AblationArm(g, f"without {e}", cfg=(("experts", tuple(x for x in EXPERT_NAMES if x != e)),), baseline=base)
                 for e in EXPERT_NAMES]
        arms.append(AblationArm(g, "all, no balancing", cfg=(("expert_balance", "none"),), baseline=base))
        if ablate.colour_ot > 0:
            arms.append(AblationArm(g, f"all + colour OT ({ablate.colour_ot:g})", cfg=(("colour_ot", ablate.colour_ot),),
                                    baseline=base))
    if "psi" in ablate.groups:
        g, base = "psi", f"semi softplus, alpha {study.alpha:g}"
        arms.append(AblationArm(g, base))
        arms.append(AblationArm(g, "balanced", uot=(("psi_target", "linear"),), baseline=base))
        arms += [AblationArm(g, f"semi {p}", uot=(("psi_target", p),), baseline=base) for p in ("kl", "chi2")]
        arms.append(AblationArm(g, "unbalanced (both softplus)", uot=(("psi_source", "softplus_norm"),), baseline=base))
        arms += [AblationArm(g, f"semi softplus, alpha {a:g}", uot=(("alpha", a),), baseline=base)
                 for a in ablate.alphas if a != study.alpha]
    if "cost" in ablate.groups:
        g, base = "cost", f"{study.cost}, tau {study.tau:g}"
        arms.append(AblationArm(g, base))
        arms += [AblationArm(g, f"{c}, tau {study.tau:g}", uot=(("cost", c),), baseline=base)
                 for c in (ablate.costs or tuple(COSTS)) if c != study.cost]
        arms += [AblationArm(g, f"{study.cost}, tau {t:g}", uot=(("tau", t),), baseline=base) for t in ablate.taus if t != study.tau]
    if "outliers" in ablate.groups:
        for f in ablate.outlier_fractions:
            bal = f"balanced, {100 * f:g}% outliers"
            arms.append(AblationArm("outliers", bal, uot=(("psi_target", "linear"),), outliers=f))
            arms.append(AblationArm("outliers", f"semi, {100 * f:g}% outliers", outliers=f, baseline=bal))
    if "pairing" in ablate.groups:
        g, base = "pairing", f"{PAIRINGS[0][0]}, {HEADS[0][0]}"
        bad = [h for h in ablate.pairing_heads if h not in dict(HEADS)]
        if bad or HEADS[0][0] not in ablate.pairing_heads:
            raise ValueError(f"ablation_arms: pairing_heads must name heads of {[h for h, _ in HEADS]} including the "
                             f"baseline's {HEADS[0][0]!r}, got {list(ablate.pairing_heads)}")
        for head_label, head in HEADS:
            if head_label not in ablate.pairing_heads:
                continue
            for label, method in PAIRINGS:
                name = f"{label}, {head_label}"
                arms.append(AblationArm(g, name, cfg=(("arch_kwargs", (("head", head),)),), pairing=method,
                                        baseline="" if name == base else base))
    if "bias" in ablate.groups:
        for t in (study.tau, *[t for t in ablate.bias_taus if t != study.tau]):
            ot, tau = f"OT map, tau {t:g}", (() if t == study.tau else (("tau", t),))
            arms.append(AblationArm("bias", ot, uot=tau))
            arms.append(AblationArm("bias", f"GAN + content, tau {t:g}", uot=(*tau, ("objective", "gan")), baseline=ot))
    if ablate.arms:
        keys = {a.key for a in arms}
        unknown = [k for k in ablate.arms if k not in keys]
        if unknown:
            raise ValueError(f"ablation_arms: unknown arms {unknown}; expected keys from {sorted(keys)}")
        wanted = set(ablate.arms) | {f"{a.group}/{a.baseline}" for a in arms if a.key in ablate.arms and a.baseline}
        arms = [a for a in arms if a.key in wanted]
    return arms


def with_outlier_fraction(data, fraction: float, seed: int = 0):
    """``data`` with its target set re-drawn so that ``fraction`` of the target *images* are outliers:
    below the benchmark's own fraction some outlier images are dropped, above it some typical images
    are (chosen with ``seed``; the outlier kind and the scenes stay the same, the set gets smaller).
    Returns ``(data, achieved fraction, number of target images)``."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"with_outlier_fraction: fraction must lie in [0, 1), got {fraction!r}")
    images = data.target_image_ids
    bad = sorted(set(data.outlier_images) & set(images))
    good = sorted(set(images) - set(bad))
    rng = np.random.default_rng(seed)
    if fraction > 0 and not bad:
        raise ValueError(f"{data.root}: no outlier target images to build a {fraction:g} outlier fraction from")
    if not bad or fraction <= len(bad) / len(images):
        n_bad = min(len(bad), round(fraction * len(good) / (1.0 - fraction)))
        keep = good + list(rng.permutation(bad)[:n_bad])
    else:
        n_good = max(1, round(len(bad) * (1.0 - fraction) / fraction))
        keep = bad + list(rng.permutation(good)[:n_good])
    keep_set = set(keep)
    stems = [s for s in data.targets.stems if s.rsplit("_", 1)[0] in keep_set]
    achieved = len(keep_set & set(bad)) / len(keep_set)
    return dataclasses.replace(data, targets=data.targets.subset(stems)), achieved, len(keep_set)


def arm_setup(arm: AblationArm, study: UOTStudy, ablate: AblationStudy, arch: str, seed: int, data,
              train: TrainStudy | None = None):
    """``(config, data, extra)`` of one arm: the study's unpaired configuration with the arm's
    overrides (``ablate.epochs`` when set), its target set, and what the record stores besides.
    A pairing arm starts instead from notebook 04's pseudo-pair configuration of ``train``
    (:func:`~uotisp_lib.experiments.pseudo_pair_config`, :data:`PAIRING_ARCH`; ``arch`` and
    ``ablate.epochs`` do not apply) and stores its ``pairing`` method in ``extra``."""
    from uotisp_lib.study import base_config

    if arm.pairing:
        from uotisp_lib.experiments import pseudo_pair_config

        cfg = pseudo_pair_config(train or TrainStudy(), PAIRING_ARCH, seed)
    else:
        cfg = base_config(dataclasses.replace(study, epochs=ablate.epochs or study.epochs), arch, seed)
    if arm.uot:
        cfg = dataclasses.replace(cfg, uot=dataclasses.replace(cfg.uot, **dict(arm.uot)))
    if arm.cfg:
        cfg = dataclasses.replace(cfg, **dict(arm.cfg))
    if arm.outliers is not None:
        arm_data, frac, n_images = with_outlier_fraction(data, arm.outliers, seed=0)
    else:
        ids = data.target_image_ids
        arm_data, frac, n_images = data, len(set(data.outlier_images) & set(ids)) / len(ids), len(ids)
    extra = {"outlier_fraction": frac, "n_target_images": n_images}
    if arm.pairing:
        extra["pairing"] = arm.pairing
    return cfg, arm_data, extra


def pairing_graph(data, method: str, match: MatchStudy | None = None, cache: str | Path | None = None, *,
                  seed: int = 0, device: str = "cpu"):
    """The pair graph of ``method`` (kNN / OT / FGW, :func:`uotisp_lib.matching.build_pair_graph`)
    from ``data``'s train RAW to its *training* targets only (the proxy's held-out images and the
    test split never enter), with ``match``'s k and descriptor backend. Stored in ``cache`` (a
    folder) under a hash of its settings and read back from there, so each method's graph is built
    once. Returns ``(graph, digest)``; ``digest`` identifies the graph's settings."""
    from uotisp_lib.matching import PairGraph, build_pair_graph

    match = match or MatchStudy()
    settings = {"root": str(Path(data.root).resolve()), "method": method, "k": match.k_images, "k_patch": match.k_patches,
                "backend": match.backend, "seed": seed, "targets": data.target_image_ids}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache) / f"{method}-{digest}.npz" if cache is not None else None
    if path is not None and path.is_file():
        return PairGraph.load(path), digest
    graph, _ = build_pair_graph(data.root, method, k=match.k_images, k_patch=match.k_patches, backend=match.backend,
                                seed=seed, device=device, target_ids=data.target_image_ids)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        graph.save(path)
    return graph, digest


def _setup_hash(cfg, arm_data, extra: dict) -> str:
    text = json.dumps(to_jsonable({"config": cfg, "targets": list(arm_data.targets.stems), **extra}), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_ablations(
    data,
    study: UOTStudy,
    ablate: AblationStudy,
    out_dir: str | Path,
    *,
    device: str = "cpu",
    seed0: int = 0,
    workers: int = 1,
    train: TrainStudy | None = None,
    match: MatchStudy | None = None,
    log: Callable[[str], None] | None = print,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every arm of :func:`ablation_arms` x seed (``seed0 .. seed0 + ablate.seeds - 1``) on
    ``ablate.arch`` (pairing arms: :data:`PAIRING_ARCH`, configured by ``train``, their graphs by
    ``match`` and built once per method under ``out_dir/graphs``) -> ``(rows, per_image)``. Runs
    are stored under ``out_dir/results/<arch>/`` by a hash of their setup, so an interrupted run
    resumes and identical arms train once. With ``workers > 1`` (CPU only) distinct runs train in
    that many processes of one thread each."""
    from uotisp_lib.study import run_jobs

    out_dir = Path(out_dir)
    if workers < 1:
        raise ValueError(f"run_ablations: workers must be >= 1, got {workers!r}")
    plan, jobs, graphs = [], {}, {}
    for arm in ablation_arms(study, ablate):
        arch, kind, more = (PAIRING_ARCH, "pseudo_pair", {}) if arm.pairing else (ablate.arch, "uot", {})
        if arm.pairing and arm.pairing != "random":
            if arm.pairing not in graphs:
                graphs[arm.pairing] = pairing_graph(data, arm.pairing, match, out_dir / "graphs", seed=seed0, device=device)
            more = {"pair_graph": graphs[arm.pairing][0]}
        for seed in range(seed0, seed0 + ablate.seeds):
            cfg, arm_data, extra = arm_setup(arm, study, ablate, arch, seed, data, train)
            if "pair_graph" in more:
                extra["graph"] = graphs[arm.pairing][1]
            h = f"{_setup_hash(cfg, arm_data, extra)}-seed{seed}"
            plan.append((arm, arch, seed, h))
            jobs.setdefault(h, dict(kind=kind, cfg=cfg, arm_data=arm_data, data=data, study=study, arch=arch, variant=arm.key,
                                    seed=seed, path=out_dir / "results" / arch / f"{h}.json",
                                    run_dir=out_dir / "runs" / arch / h, device=device, extra=extra, **more))
    recs = run_jobs(jobs, workers, device)
    rows, per_image = [], []
    for arm, arch, seed, h in plan:
        rec = recs[h]
        if log is not None:
            log(f"{arm.key:45s} seed {seed}: PSNR {rec['psnr']:.2f} dB  dE {rec['de2000']:.2f}  "
                f"colour W {rec['colour_w']:.4f}  ({rec['seconds']:.0f} s)")
        row = {k: rec.get(k, float("nan")) for k in ROW_COLUMNS}
        row.update(group=arm.group, arm=arm.name, arch=arch, seed=seed)
        rows.append(row)
        per_image += [{"group": arm.group, "arm": arm.name, "arch": arch, "variant": arm.key, "seed": seed,
                       **{k: r[k] for k in ("image", "psnr", "ssim", "de2000")}} for r in rec["per_image"]]
    return pd.DataFrame(rows, columns=list(ROW_COLUMNS)), pd.DataFrame(per_image)


def summarise_ablations(rows: pd.DataFrame, per_image: pd.DataFrame, arms: Sequence[AblationArm]) -> pd.DataFrame:
    """One row per arm: ``n_seeds, n_test_images``, mean and standard error over seeds of each
    metric (``psnr_se``...), and ``d_psnr`` / ``d_de2000`` (with ``_se``): the difference to the
    arm's baseline paired by seed and image (:func:`uotisp_lib.study.paired_difference`; 0 for a
    group's baseline itself), and ``vs`` naming that baseline."""
    from uotisp_lib.study import _se, paired_difference

    out = []
    for arm in arms:
        g = rows[(rows.group == arm.group) & (rows.arm == arm.name)]
        if g.empty:
            continue
        r: dict = {"group": arm.group, "arm": arm.name, "n_seeds": int(g.seed.nunique()),
                   "n_test_images": int(g.n_test_images.max()), "n_target_images": int(g.n_target_images.max()),
                   "outlier_fraction": float(g.outlier_fraction.mean())}
        for k in METRICS:
            r[k], r[f"{k}_se"] = float(g[k].mean()), _se(g[k].to_numpy())
        r["vs"] = arm.baseline
        for k in ("psnr", "de2000"):
            if arm.baseline:
                r[f"d_{k}"], r[f"d_{k}_se"] = paired_difference(per_image, arm_arch(g), arm.key,
                                                                f"{arm.group}/{arm.baseline}", k)
            else:
                r[f"d_{k}"], r[f"d_{k}_se"] = 0.0, 0.0
        if arm.baseline:
            b = rows[(rows.group == arm.group) & (rows.arm == arm.baseline)]
            r["d_colour_w"], r["d_colour_w_se"] = seed_paired_difference(g, b, "colour_w")
        else:
            r["d_colour_w"], r["d_colour_w_se"] = 0.0, 0.0
        out.append(r)
    return pd.DataFrame(out)


def seed_paired_difference(arm_rows: pd.DataFrame, base_rows: pd.DataFrame, metric: str) -> tuple[float, float]:
    """Mean and standard error over seeds of ``arm - baseline`` on a per-run ``metric`` (one value per
    seed, e.g. ``colour_w``), paired by seed; NaN without a shared seed (SE NaN with one)."""
    from uotisp_lib.study import _se

    m = arm_rows[["seed", metric]].merge(base_rows[["seed", metric]], on="seed", suffixes=("", "_base"))
    if m.empty:
        return float("nan"), float("nan")
    d = (m[metric] - m[f"{metric}_base"]).to_numpy(dtype=np.float64)
    return float(d.mean()), _se(d)


def arm_arch(rows: pd.DataFrame) -> str:
    """The one architecture of an arm's rows (a ValueError when they mix several)."""
    archs = rows.arch.unique()
    if len(archs) != 1:
        raise ValueError(f"summarise_ablations: expected one architecture, got {list(archs)}")
    return str(archs[0])


def outlier_curve(summary: pd.DataFrame) -> pd.DataFrame:
    """The robustness curve: per target outlier fraction, balanced and semi PSNR (mean +- SE over
    seeds) and semi minus balanced, paired by seed and image."""
    g = summary[summary.group == "outliers"]
    out = []
    for r in g[g.arm.str.startswith("semi")].itertuples():
        b = g[g.arm == r.vs].iloc[0]
        out.append({"outlier_fraction": r.outlier_fraction, "n_target_images": r.n_target_images,
                    "balanced": b.psnr, "balanced_se": b.psnr_se, "semi": r.psnr, "semi_se": r.psnr_se,
                    "semi_minus_balanced": r.d_psnr, "se": r.d_psnr_se})
    return pd.DataFrame(out)


def _fmt(d: float, se: float) -> str:
    return f"{d:+.2f} +- {se:.2f} dB"


def discuss(summary: pd.DataFrame) -> str:
    """What the ablation summary says, as Markdown generated from its numbers: per group, the
    baseline, the arms that beat or lose to it by more than two standard errors (paired by seed and
    image), the ties; for ``outliers``, semi minus balanced at each fraction."""
    from uotisp_lib.study import _call

    lines = []
    for group, g in summary.groupby("group", sort=False):
        n_seeds, n_img = int(g.n_seeds.min()), int(g.n_test_images.max())
        if group == "outliers":
            curve = outlier_curve(g)
            parts = [f"{100 * r.outlier_fraction:.0f}%: {_fmt(r.semi_minus_balanced, r.se)} "
                     f"({_call(r.semi_minus_balanced, r.se)})" for r in curve.itertuples()]
            lines.append(f"- **outliers** (semi minus balanced, {n_seeds} seeds x {n_img} test images): " + "; ".join(parts) + ".")
            continue
        if group == "bias":
            parts = []
            for r in g[g.vs != ""].itertuples():
                where = {"better": "farther from the target distribution than the OT map's",
                         "worse": "closer to the target distribution than the OT map's"}.get(
                    _call(r.d_colour_w, r.d_colour_w_se), "within two standard errors of the OT map's")
                parts.append(f"*{r.arm}* vs *{r.vs}*: colour W {r.d_colour_w:+.4f} +- {r.d_colour_w_se:.4f} ({where}), "
                             f"PSNR {_fmt(r.d_psnr, r.d_psnr_se)} ({_call(r.d_psnr, r.d_psnr_se)})")
            lines.append(f"- **bias** (the OT-SR claim, {n_seeds} seeds x {n_img} test images; colour W is the colour "
                         "sliced-Wasserstein distance of the outputs to the ground truth, paired by seed): " + "; ".join(parts) + ".")
            continue
        base = g[g.vs == ""].iloc[0]
        rest = g[g.vs != ""]
        calls = {r.arm: _call(r.d_psnr, r.d_psnr_se) for r in rest.itertuples()}
        better = [f"{r.arm} ({_fmt(r.d_psnr, r.d_psnr_se)})" for r in rest.itertuples() if calls[r.arm] == "better"]
        worse = [f"{r.arm} ({_fmt(r.d_psnr, r.d_psnr_se)})" for r in rest.itertuples() if calls[r.arm] == "worse"]
        ties = [r.arm for r in rest.itertuples() if calls[r.arm] not in ("better", "worse")]
        text = (f"- **{group}** (baseline *{base.arm}*: {base.psnr:.2f} +- {base.psnr_se:.2f} dB, colour W "
                f"{base.colour_w:.4f}; {n_seeds} seeds x {n_img} test images): ")
        text += ("better: " + "; ".join(better) + ". ") if better else "no arm beats the baseline by two standard errors. "
        text += ("Worse: " + "; ".join(worse) + ". ") if worse else "None is worse by two standard errors. "
        if ties:
            text += f"Within two standard errors: {'; '.join(ties)}."
        lines.append(text.strip())
    return "\n".join(lines)
