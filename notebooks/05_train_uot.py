# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · UOT with a committee of expert discriminators
#
# **EGUOT-ISP** (Perevozchikov, Mehta, Ershov, Timofte, arXiv 2512.05635) trains *any* ISP network
# from RAW to sRGB with unbalanced optimal transport, from unpaired data or with pairs, and adds a
# committee of expert discriminators for colour, structure and frequency. The paper gives no formulas
# and its repository no code, so **what follows is our documented reconstruction**, built from the
# papers it stands on:
#
# * the semi-dual UOT objective of **UOTM** (Choi, Choi and Kang, arXiv 2305.14777): a potential $v$
#   on sRGB and a map $T$ (the ISP) trained in turn,
#
# $$\min_v\; \mathbb E_y\, \Psi_2^*\big(-v(y)\big) + \mathbb E_x\, \Psi_1^*\big(v(T(x)) - c(x, T(x))\big)
#   + \tfrac{\gamma}{2}\, HW\, \mathbb E_y \|\nabla_y v(y)\|^2, \qquad
#   \min_T\; \mathbb E_x \big[c(x, T(x)) - v(T(x))\big],$$
#
#   where a non-linear $\Psi_2^*$ (scaled by $\alpha$: $\Psi^*_\alpha(t) = \alpha\,\Psi^*(t/\alpha)$) relaxes the
#   target marginal so atypical targets can stay unmatched (`psi="semi"`, the EGUOT wording) and
#   $\Psi^*$ linear on both sides is balanced OT. The R1 term is multiplied by the number of pixels
#   $HW$, because the potential mean-pools a logit map and its per-pixel gradient is $O(1/HW)$;
# * the cost compares $T(x)$ with a **fixed naive ISP** $r(x)$ of the RAW, since RAW and sRGB live in
#   different spaces (Gazdieva et al., arXiv 2202.01116). With $\overline{\,\cdot\,}$ the mean over
#   pixels and channels, $Y$ the luma and $S$ the RMS-normalised band-pass of luma:
#
# $$c_{\text{quadratic}} = \tau\, \overline{(y - r(x))^2}, \qquad c_{\text{luma}} = \tau\, \overline{(Y(y) - Y(r(x)))^2}, \qquad
#   c_{\text{structure}} = \tfrac{\tau}{2}\, \overline{(S(y) - S(r(x)))^2}, \qquad
#   c_{\text{global colour}} = \tau \min_{f \in \mathcal P_d} \overline{(y - f(r(x)))^2},$$
#
#   plus `uotip` (likelihood through the camera forward model + quadratic, UOTIP, arXiv 2605.21094)
#   and `rcot` (pixel + Fourier residual); $\mathcal P_d$ are per-image polynomial colour maps. $\tau$
#   is per pixel-mean (`uotisp_lib.uot` relates it to the prototype's `1e-5` on a summed cost). The
#   reference white-balances with the camera's typical illuminant (`reference_wb="camera"`): gray
#   world removed the scenes' own warmth and put the cost's minimiser far from the truth (issue 10);
# * the **experts** (ours): colour (low-pass chroma), structure (Sobel gradients of gray), frequency
#   (log amplitude spectrum), each a small spectral-norm hinge discriminator $D_e$. Each generator
#   term is rescaled by gradient norms (as in the organisers' baseline),
#
# $$\mathcal L_T = c - v + \sum_e \lambda_e\, \frac{\|\nabla_T (-v)\|}{\|\nabla_T \mathcal L^{\text{adv}}_e\|}\, \mathcal L^{\text{adv}}_e,
#   \qquad \mathcal L^{\text{adv}}_e = -\mathbb E\, D_e(T(x)),$$
#
#   so an expert's pull is $\lambda_e$ (`expert_weight`) times the potential's. (Scaled to the
#   gradient of $c - v$ instead, the committee switched itself off as the map converged, since that
#   gradient vanishes at the optimum.) An optional parameter-free **colour OT expert** (`colour_ot`,
#   ours, off by default) adds $\lambda\, SW_2$ between the colours of the map's batch and of drawn
#   targets (sliced Wasserstein; notebook 06 measures it);
# * RAW-input networks (`tinyraw`, `unet_isp`) learn a **residual on the reference rendering**
#   (`base="reference"`, last layer at zero): no run starts from black;
# * **paired** mode adds `paired_l1` x L1 (+ SSIM) to the ground truth of a paired subset, and the
#   potential and experts see that ground truth as the target distribution (`paired_targets="gt"`,
#   ours: with the unpaired JPEGs, outliers included, the potential pulled away from the pairs).

# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | full
data_root = ""  # empty: the study's synthetic benchmark of the profile; else a UP-ISP, Zurich RAW-to-RGB or DNG folder
patch = 0  # DNG folders only: packed pixels a side of the patches cut from each DNG; 0: 256
device = "auto"
seed = 0
results_dir = ""  # empty: results/<profile>
mode = "unpaired"  # unpaired | paired
arch = ""  # empty: the profile's default (tinyraw, colornet, unet_isp)
experts = "colour,structure,frequency"  # comma-separated; empty: no committee
psi = "semi"  # semi | balanced | unbalanced
cost = ""  # empty: the study's cost; else quadratic | luma | uotip | rcot | structure
compare = True  # also run the seeded study (every arm x architecture x seed) and its verdict

# %%
import dataclasses
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown, display

from uotisp_lib import config, plots, reporting, study as uot_study
from uotisp_lib.data import ensure_dataset
from uotisp_lib.data.layouts import DNG_PATCH
from uotisp_lib.experiments import (
    has_ground_truth, image_layout, image_stems, load_training_data, model_inputs, relaxed_mass, render_image, run_uot,
)
from uotisp_lib.stitching import stitch
from uotisp_lib.uot import UOTConfig, naive_isp

t_start = time.perf_counter()
run = config.start_run(profile, data_root, device, seed, results_dir)
study = run.profile.uot
arch = arch or study.arch
cost = cost or study.cost
expert_names = tuple(e for e in experts.split(",") if e)
root = ensure_dataset(run, study.synth, "uot") if study.synth is not None else ensure_dataset(run)
data = load_training_data(root, proxy_fraction=run.profile.train.proxy_fraction, seed=run.seed, patch=patch or DNG_PATCH)
runs_dir = run.results_dir / "runs" / "uot"
print(f"profile={run.profile.name} mode={mode} arch={arch} experts={expert_names} psi={psi} cost={cost} device={run.device}")
print(f"{len(data.raw_train)} RAW patches, {len(data.targets)} target patches "
      f"({len(data.target_image_ids)} images, {len(data.outlier_images)} outlier images), "
      f"{len(data.raw_test) if data.raw_test is not None else 0} test patches")

# %% [markdown]
# ## The run
# Training curves: the transport cost `c(x, T(x))`, the potential gap `E v(y) - E v(T(x))`, the
# spread of the weights `Psi2*'(-v(y))` the relaxed marginal gives the real targets (0: balanced;
# outliers can only be left out when it is large), each expert's gradient norm, and the validation
# PSNR of the EMA map.

# %%
cfg = uot_study.base_config(study, arch, run.seed, cost, expert_names)
cfg = dataclasses.replace(cfg, mode=mode, uot=dataclasses.replace(UOTConfig.preset(psi), **{
    k: getattr(cfg.uot, k) for k in ("tau", "cost", "alpha", "r1_gamma", "r1_scale", "reference_wb", "map_steps_per_potential")}))
run_name = f"{mode}-{arch}-{psi}-{cost}-{'+'.join(expert_names) or 'no_experts'}"  # one folder per configuration
row, trainer = run_uot(data, cfg, runs_dir / run_name, run.device)
hist = pd.DataFrame(trainer.state.history)
table = pd.DataFrame([{"mode": mode, "psi": psi, "cost": cost, "experts": ",".join(expert_names) or "none", **row}])
reporting.write_table(table, run.results_dir, f"uot_run_{mode}_{arch}", metadata=config.run_metadata(run, uot=cfg))
table

# %% [markdown]
# ## Is the truth the cost's minimiser?
# On the validation split (never the test split), for each cost and reference white balance:
# $c(x, \mathrm{GT})$, the cost's floor $c(x, r(x))$, the trained map's $c(x, T(x))$, and
# $c(x, \mathrm{GT}')$ with $\mathrm{GT}'$ the ground truth of another patch. Costs have different
# units, so they are ranked by the **truth ratio** $c(x,\mathrm{GT}) / c(x,\mathrm{GT}')$: how much
# cheaper the true output is than a wrong one (lower is better; 1 means the cost cannot tell the
# truth apart). A map whose cost is far below the truth's has been pulled towards the reference
# rather than towards the truth.

# %%
if has_ground_truth(data, "val", "the cost check"):
    mapped = trainer.predict(model_inputs(data.raw_val, getattr(trainer.model, "input_kind", "rgb"), trainer.preprocess))
    checks = uot_study.cost_check_table(data, mapped=mapped)
    reporting.write_table(checks, run.results_dir, "uot_cost_check", metadata=config.run_metadata(run, split="val", uot=cfg))
    print(checks.to_string(index=False))
    best = checks.iloc[0]
    print(f"\nlowest truth ratio: {best.cost} with the {best.reference} reference; "
          f"this profile's study uses {study.cost} with the {study.reference_wb} reference")

# %%
panels = [
    ("map/cost", "transport cost c(x, T(x))"),
    ("potential/potential_gap", "potential gap E v(y) - E v(T(x))"),
    ("potential/target_weight_cv", "spread (CV) of the relaxed target weights"),
    ("val_psnr", "validation PSNR (dB, EMA map)"),
]
grad_cols = [c for c in hist.columns if c.endswith("/grad_norm")]
fig, axes = plt.subplots(1, len(panels) + 1, figsize=(16, 3.2))
for ax, (col, title) in zip(axes, panels):
    if col in hist:
        ax.plot(hist["epoch"], hist[col], marker="o")
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("epoch")
for col in grad_cols:
    axes[-1].plot(hist["epoch"], hist[col], marker="o", label=col.split("/")[1])
axes[-1].set_title("expert gradient norms", fontsize=9)
axes[-1].set_xlabel("epoch")
if grad_cols:
    axes[-1].legend(fontsize=7)
fig.tight_layout()
reporting.save_figure(fig, run.results_dir, f"uot_curves_{mode}")

# %% [markdown]
# ## Sample outputs
# Test patches: the reference rendering the cost compares with, the EMA map's output, and the ground truth.

# %%
if has_ground_truth(data, "test", "the sample outputs beside the ground truth"):
    show = data.raw_test.subset(data.raw_test.stems[:: max(1, len(data.raw_test) // 4)][:4])
    preds = trainer.predict(model_inputs(show, getattr(trainer.model, "input_kind", "rgb"), trainer.preprocess))
    naive = naive_isp(show.images, wb=cfg.uot.reference_wb)
    gt = data.gt_test.select(show.stems)
    imgs, titles = [], []
    for i, s in enumerate(show.stems):
        imgs += [naive[i], preds[i], gt[i]]
        titles += [f"{s}: reference", f"{mode} UOT ({arch})", "ground truth"]
    fig = reporting.image_grid(imgs, titles, ncols=3, size=2.6)
    reporting.save_figure(fig, run.results_dir, f"uot_samples_{mode}")

# %% [markdown]
# Colour histograms of the shown test patches (all pixels pooled) against the ground truth, and the
# per-pixel CIEDE2000 error of the reference and of the map on the first patch.

# %%
if data.raw_test is not None and data.gt_test is not None:
    mosaic = lambda t: torch.cat(list(t), dim=-1)  # noqa: E731  [N,3,H,W] -> [3,H,N*W]
    fig = plots.colour_histograms({"reference": mosaic(naive), f"{mode} UOT": mosaic(preds), "ground truth": mosaic(gt)},
                                  target="ground truth")
    reporting.save_figure(fig, run.results_dir, f"uot_colour_histograms_{mode}")
    fig = plots.de2000_maps({"reference": naive[0], f"{mode} UOT": preds[0]}, gt[0], ncols=2)
    reporting.save_figure(fig, run.results_dir, f"uot_de2000_{mode}")

# %% [markdown]
# ## Whole test images
# The trained map renders every patch of a test image, and the patches are stitched back on the
# image's grid (from the benchmark's `meta.json`, from the DNG's size on a DNG folder, else inferred
# from the seams, notebook 02): the
# full image beside its reference rendering and its ground truth, with the CIEDE2000 error of the map.

# %%
if has_ground_truth(data, "test", "the whole test images beside the ground truth"):
    ids = sorted({s.rsplit("_", 1)[0] for s in data.raw_test.stems})[:2]
    for k, image_id in enumerate(ids):
        grid = image_layout(data, data.gt_test, image_id, split="test")
        stems = image_stems(data.raw_test, image_id)
        whole = render_image(trainer, data.raw_test, image_id, grid)
        ref_whole = stitch(naive_isp(data.raw_test.select(stems), wb=cfg.uot.reference_wb), *grid)
        gt_whole = stitch(data.gt_test.select(stems), *grid)
        fig = plots.image_and_maps([(f"{image_id}: reference", ref_whole, None), (f"{mode} UOT ({arch})", whole, None),
                                    ("ground truth", gt_whole, None)])
        reporting.save_figure(fig, run.results_dir, f"uot_whole_{k}_{mode}")
        fig = plots.de2000_maps({"reference": ref_whole, f"{mode} UOT ({arch})": whole}, gt_whole, ncols=2, size=3.6)
        reporting.save_figure(fig, run.results_dir, f"uot_whole_de2000_{k}_{mode}")

# %% [markdown]
# ## Where the relaxed marginal puts its mass
# The trained potential on every training target patch gives each the weight
# $\Psi_2^{*\prime}(-v(y)/\alpha)$: at the optimum the transported mass has this density with respect
# to the target distribution. Balanced OT gives every target weight 1; a relaxation that resists
# outliers gives the atypical target images a share of the mass below their share of the patches.

# %%
if data.outlier_images:
    mass, weights, is_out = relaxed_mass(trainer, data)
    reporting.write_table(mass, run.results_dir, f"uot_target_mass_{mode}", metadata=config.run_metadata(run, uot=cfg))
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    w = weights.numpy()
    out = np.asarray(is_out)
    bins = np.linspace(w.min(), w.max() + 1e-9, 30)
    ax.hist(w[~out], bins=bins, alpha=0.7, label="typical targets")
    ax.hist(w[out], bins=bins, alpha=0.7, label="outlier targets")
    ax.set_xlabel("relaxed weight $\\Psi_2^{*\\prime}(-v(y)/\\alpha)$ (1 = balanced)")
    ax.set_ylabel("target patches")
    ax.legend(fontsize=8)
    fig.tight_layout()
    reporting.save_figure(fig, run.results_dir, f"uot_target_weights_{mode}")
    display(mass)

# %% [markdown]
# ## The study: every arm, architecture and seed
# All arms train on the same data with the same seeds (a quarter of the target images have an
# atypical look), and are scored on the test split per image (metrics averaged over an image's
# patches, then over images):
#
# | arm | what |
# | --- | --- |
# | reference | the cost's reference rendering $r(x)$ alone, untrained (the floor) |
# | paired L1 | the architecture's plain supervised training (L1 to the ground truth) |
# | paired UOT | the UOT objective + experts towards the paired ground truth, + L1 on the pairs |
# | unpaired UOT | semi-relaxed UOT (`semi`) + experts, no pairs |
# | unpaired no cost | $\tau = 0$: the potential and experts alone |
# | unpaired balanced | $\Psi_2^*$ linear: both marginals hard |
# | unpaired no experts | no committee |
# | unpaired outliers removed | the atypical target images dropped |
# | unpaired true targets | targets drawn (unpaired, shuffled) from the train ground truth: the unpaired ceiling |
#
# The summary gives the mean over seeds with its standard error, and the difference of each arm to
# `paired L1` paired by seed and test image, with its standard error
# $\sqrt{\mathrm{var}_i(\bar d_i)/n_i + \mathrm{var}_s(\bar d_s)/n_s}$.

# %%
compare = compare and (has_ground_truth(data, "train", "the study (its paired arms train on train/gt)")
                       and has_ground_truth(data, "test", "the study (every arm is scored on test/gt)"))
if compare:
    rows, per_image = uot_study.run_study(data, study, runs_dir / "study", device=run.device, cost=cost, workers=study.workers)
    wall = time.perf_counter() - t_start
    trained = uot_study.study_wall(runs_dir / "study")  # the executions that trained the runs (this one or earlier)
    meta = config.run_metadata(run, study=study, cost=cost, wall_seconds_notebook=round(wall, 1),
                               study_wall_seconds=trained["seconds"], study_executions=trained["executions"],
                               train_seconds_all_runs=round(float(rows.seconds.sum()), 1),
                               n_seeds={a: study.seeds_for(a) for a in study.archs},
                               n_test_images=int(rows.n_test_images.max()))
    reporting.write_table(rows, run.results_dir, "uot_study", metadata=meta)
    reporting.write_table(per_image, run.results_dir, "uot_study_per_image", metadata=meta, markdown=False)
    summary = uot_study.summarise_study(rows, per_image)
    reporting.write_table(summary, run.results_dir, "uot_study_summary", metadata=meta)
    print(f"study done: {len(rows)} runs, {rows.seconds.sum() / 60:.1f} min of training and scoring, "
          f"{trained['seconds'] / 60:.1f} min of wall time over the {trained['executions']} execution(s) that trained them "
          f"(this execution: {wall / 60:.1f} min; finished runs are read back, not retrained)")
    cols = ["arch", "variant", "n_seeds", "n_test_images", "psnr", "psnr_se", "ssim", "de2000", "d_psnr", "d_psnr_se"]
    print(summary[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))

# %%
if compare:
    archs = list(dict.fromkeys(summary.arch))
    fig, axes = plt.subplots(1, len(archs), figsize=(5.5 * len(archs), 3.6), squeeze=False)
    for ax, a in zip(axes[0], archs):
        g = summary[summary.arch == a]
        ax.barh(g.variant, g.psnr, xerr=g.psnr_se, color=["0.6" if v == "reference" else "C0" for v in g.variant])
        ax.invert_yaxis()
        ax.set_xlim(max(0.0, g.psnr.min() - 3), g.psnr.max() + 1.5)
        ax.set_title(f"{a}: test PSNR (dB), mean +- SE over {int(g.n_seeds.max())} seed(s)", fontsize=9)
    fig.tight_layout()
    reporting.save_figure(fig, run.results_dir, "uot_study")

# %% [markdown]
# ## Verdict
# Each EGUOT-ISP claim, judged from the study: a difference counts when it exceeds two standard
# errors (paired by seed and image).

# %%
if compare:
    verdict = pd.DataFrame(uot_study.verdict(summary, per_image))
    reporting.write_table(verdict, run.results_dir, "uot_verdict", metadata=meta)
    for r in verdict.itertuples():
        print(f"[{r.holds:9s}] {r.arch:9s} {r.claim}: {r.evidence}")

# %% [markdown]
# ## What the tables say
# Generated from this execution's summary and verdict (no hand-typed numbers): the per-arm means,
# then each claim with its evidence.

# %%
if compare:
    note = (f"{int(summary.n_test_images.max())} test images; seeds per architecture: "
            + ", ".join(f"{a} {study.seeds_for(a)}" for a in study.archs) + ".")
    display(Markdown(note + "\n\n" + "\n\n".join(
        f"**{a}**\n\n" + reporting.discuss_table(summary[summary.arch == a].set_index("variant"),
                                                  {"psnr": "higher", "de2000": "lower"}, baseline="paired L1")
        for a in dict.fromkeys(summary.arch))))
    display(Markdown(uot_study.discuss_verdict(verdict.to_dict("records"))))
    offsets = uot_study.discuss_offsets(summary)
    if offsets:  # the oracle per-image colour-cast fix: how much of the unpaired gap is one cast per image
        display(Markdown("**Where the unpaired gap lies** (`psnr_no_offset`: each test image's mean colour error "
                         "removed with its ground truth, a diagnostic, not a method)\n\n" + offsets))

# %% [markdown]
# ## Discussion
# What the committed `cpu` study shows (`results/cpu/tables/uot_study_summary.md` and `results/cpu/tables/uot_verdict.md`;
# the numbers are in the generated cell above and in `results/cpu/README.md`), and why:
#
# * **The cost now points at the truth, and it helps.** With the camera-illuminant reference,
#   `cost_check` ranks `luma` first on validation, and unpaired UOT beats its no-cost ablation for
#   colornet. The trained map still sits closer to the reference than the truth does (its
#   $c(x, T(x))$ is below $c(x, \mathrm{GT})$): the cost still out-pulls the potential.
# * **Unpaired does not rival paired at this budget.** The target set is not the main cause: with
#   the outliers removed, and even with targets drawn unpaired from the train ground truth (the
#   unpaired ceiling), the gap to paired L1 stays well above 1 dB. The learned potential's colour
#   signal is weak after a few hundred steps (potential gap $10^{-3}$ to $10^{-2}$, validation PSNR
#   swinging between epochs). Stronger, more direct colour signals did not close it on validation:
#   a global-colour cost, more potential steps, a cosine schedule, a pooled potential and the colour
#   OT expert (notebook 06 measures it over seeds on the test split).
# * **The unpaired error is colour casts that vary with content.** In pilots (colornet, seed 0,
#   scored against the ground truth of the *training* RAW images, which unpaired training never
#   sees) the unpaired map is about 4 dB below the paired fit, and removing each *patch's* mean colour
#   error recovers most of that; its chroma errors differ by source photo and correlate only weakly
#   with the illuminant, whereas paired L1's residual casts follow the illuminant closely. The
#   potential judges colour together with content, so the map learns content-dependent casts; they
#   remain even with the true target distribution ("unpaired true targets"). They vary *within* an
#   image: `psnr_no_offset` (each test image's mean colour error removed) closes little or none of the
#   colornet gap on the test split (generated line above), so a per-image white-balance fix would not help.
# * **Validation does not predict test well.** The validation split is one photo; the test photos
#   are more saturated, so the validation gap (about 0.7 dB in pilots) understates the test gap.
# * **Paired UOT ties or slightly loses to paired L1**, and the committee and the relaxation help
#   colornet more than the RAW networks, which are undertrained at this budget (paired L1 itself
#   gains only about 2 dB over the reference for tinyraw and unet_isp). Why paired UOT cannot win
#   here, measured in pilots (colornet, seed 0, validation and the training RAW's ground truth, never
#   test): it follows paired L1 within noise (validation 25.02 vs 25.07 dB, training ground truth
#   27.94 vs 27.87 dB), and neither an L1 weight of 30 or 100 instead of 10 (validation curves equal
#   to 0.01 dB), nor dropping the weight EMA (27.53), nor paired L1's Adam betas (27.70) lifts it: once
#   pairs are given, the potential adds no signal the L1 term does not already carry.
# * **Nothing collapses.** Where an unpaired arm's mean falls below the reference rendering (the RAW
#   networks without the cost, or balanced), the generated verdict above gives its paired
#   difference to the reference: within two standard errors of it in the committed study. Those
#   are the arms that lose the anchor to the input (no cost) or must also transport the outlier
#   targets' mass (balanced).
