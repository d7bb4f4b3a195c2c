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
# # 06 · Ablations: one factor of the UOT method at a time
#
# Notebook 05 trains a map $T$ (the ISP) and a potential $v$ on sRGB with the semi-dual UOT
# objective of UOTM (Choi, Choi and Kang, arXiv 2305.14777), as EGUOT-ISP (arXiv 2512.05635) uses it:
#
# $$\min_v\; \mathbb E_y\, \Psi_2^*\big(-v(y)\big) + \mathbb E_x\, \Psi_1^*\big(v(T(x)) - \tau\, c(x, T(x))\big)
#   + \tfrac{\gamma}{2}\, \mathbb E_y \|\nabla_y v(y)\|^2, \qquad
#   \min_T\; \mathbb E_x \big[\tau\, c(x, T(x)) - v(T(x))\big] + \sum_e \lambda_e\, \mathcal L^{\text{adv}}_e(T),$$
#
# with a transport cost $c$ against a fixed naive rendering $r(x)$ of the RAW (Gazdieva et al., arXiv
# 2202.01116), conjugates $\Psi^*$ of the divergences that relax each marginal (linear: balanced OT,
# a hard marginal), scaled by $\alpha$ as $\Psi^*_\alpha(t) = \alpha\, \Psi^*(t / \alpha)$, and a committee of
# expert discriminators $e$ (colour, structure, frequency), each generator term $\mathcal L^{\text{adv}}_e$
# rescaled so that its gradient is $\lambda_e$ times the potential's.
#
# Each arm below starts from notebook 05's unpaired configuration and changes **one** factor:
#
# | group | arms |
# | --- | --- |
# | committee | no experts, each expert alone, each left out, all; gradient balancing off; a parameter-free colour OT expert added |
# | psi | balanced ($\Psi_2^*$ linear), semi-relaxed with softplus / KL / $\chi^2$, unbalanced on both sides; the $\alpha$ sweep |
# | cost | each transport cost at the study's $\tau$; $\tau$ swept (0 included) for the study's cost |
# | outliers | the target set rebuilt with 0 to 40% atypical images, balanced vs semi-relaxed |
# | pairing | notebook 04's pseudo-pair colornet with pairs drawn at random or from the kNN, OT or FGW pair graph, 1x1 vs 3D-LUT head (baseline: random, 1x1) |
# | bias | the OT map against a content-regularised GAN with the same networks and the cost as its content loss, at two content weights |
#
# The **bias** group tests the OT-SR claim of Gazdieva et al. (arXiv 2202.01116): a GAN trained with
# a content loss $\tau\, c(x, T(x))$ solves
# $$\min_T\ \mathbb E_x\big[\tau\, c(x, T(x))\big] + \mathcal D\big(T_\# p,\ q\big),$$
# a trade-off in which the content term pulls the output distribution $T_\# p$ away from the target
# $q$, the more so the larger $\tau$; the OT map instead minimises the cost *subject to* the target
# marginal (here relaxed by $\Psi_2^*$). The GAN arm keeps the map, potential (now a logistic
# discriminator $v$), cost and committee, and trains with
# $\mathcal L_v = \mathbb E_y\,\mathrm{softplus}(-v(y)) + \mathbb E_x\,\mathrm{softplus}(v(T(x)))$ and
# $\mathcal L_T = \mathbb E_x\big[\tau\, c(x, T(x)) + \mathrm{softplus}(-v(T(x)))\big]$. The bias is
# measured by `colour_w`, the colour sliced-Wasserstein distance of the test outputs to the ground
# truth's distribution, paired by seed (`d_colour_w`).
#
# The **pairing** group is the exception to "starts from notebook 05": it ablates notebook 04's
# pseudo-pair trainer (Borelli's two stages, the profile's `train` settings, no Gram loss), whose pair
# graphs are built once per method from the *training* targets only (never the proxy's held-out
# images nor the test split). Its baseline is random pairing with the 1x1 head, the floor a pair
# graph has to beat. It trains another model family and is the slowest group (about 50 min of the cpu
# profile; smoke runs FGW against random as a plumbing check); `-p groups pairing` runs it alone.
#
# The **colour OT expert** (ours) adds to the map loss the sliced 2-Wasserstein distance between the
# colour distributions of the map's batch and of freshly drawn targets (Rabin et al. 2011; Bonneel
# et al. 2015), computed by POT:
#
# $$SW_2(\mu, \nu) = \Big(\mathbb E_{\theta \sim U(S^2)}\, W_2^2\big(\theta^\top_\# \mu,\; \theta^\top_\# \nu\big)\Big)^{1/2},$$
#
# an exact transport of the colour marginal that the learned potential only approximates. The same
# distance between the colours of all test outputs and all test ground truth is reported for every
# arm as `colour_w`: how far the *mapped distribution* is from the target distribution, whatever the
# pairing, the bias measure of the OT view of unpaired translation (Gazdieva et al.).
#
# Every arm x seed is trained, selected on the validation split and scored once on the test split
# per image, by notebook 05's own runner (`uotisp_lib.study.run_configured`); arms that are the same
# configuration share one run. Differences are paired by seed and image, with standard error
# $\sqrt{\mathrm{var}_i(\bar d_i)/n_i + \mathrm{var}_s(\bar d_s)/n_s}$, and count when they exceed two
# standard errors.

# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | full
data_root = ""  # empty: the UOT study's synthetic benchmark of the profile; else a UP-ISP style folder with ground truth
device = "auto"
seed = 0
results_dir = ""  # empty: results/<profile>
groups = ""  # comma-separated subset of committee,psi,cost,outliers,pairing,bias; empty: the profile's (smoke: a few arms of all six; cpu: all six)
workers = 0  # training processes on CPU; 0: the profile's

# %%
import dataclasses
import time

import matplotlib.pyplot as plt
from IPython.display import Markdown, display

from uotisp_lib import ablations, config, reporting
from uotisp_lib.data import ensure_dataset
from uotisp_lib.experiments import has_ground_truth, load_training_data

t_start = time.perf_counter()
run = config.start_run(profile, data_root, device, seed, results_dir)
study, ablate = run.profile.uot, run.profile.ablate
if groups:
    chosen = tuple(g.strip() for g in groups.split(",") if g.strip())
    # the profile's arm subset keeps its arms of the chosen groups (none left: every arm of them)
    ablate = dataclasses.replace(ablate, groups=chosen, arms=tuple(a for a in ablate.arms if a.split("/")[0] in chosen))
if workers:
    ablate = dataclasses.replace(ablate, workers=int(workers))
root = ensure_dataset(run, study.synth, "uot") if study.synth is not None else ensure_dataset(run)
data = load_training_data(root, proxy_fraction=run.profile.train.proxy_fraction, seed=run.seed)
arms = ablations.ablation_arms(study, ablate)
ready = has_ground_truth(data, "test", "the ablations (every arm is scored on test/gt)")
print(f"profile={run.profile.name} arch={ablate.arch} groups={','.join(ablate.groups)} seeds={ablate.seeds} "
      f"epochs={ablate.epochs or study.epochs} workers={ablate.workers} device={run.device}: {len(arms)} arms")

# %% [markdown]
# ## The runs
# Finished runs are read back from `runs/ablations` under the results folder, so an interrupted
# execution resumes where it stopped.

# %%
if ready:
    rows, per_image = ablations.run_ablations(data, study, ablate, run.results_dir / "runs" / "ablations", device=run.device,
                                              seed0=run.seed, workers=ablate.workers, train=run.profile.train,
                                              match=run.profile.match)
    summary = ablations.summarise_ablations(rows, per_image, arms)
    wall = time.perf_counter() - t_start
    meta = config.run_metadata(run, study=study, ablate=ablate, wall_seconds_notebook=round(wall, 1),
                               train_seconds_all_runs=round(float(rows.drop_duplicates(["seed", "seconds"]).seconds.sum()), 1),
                               n_seeds=ablate.seeds, n_test_images=int(rows.n_test_images.max()))
    note = (f"{', '.join(dict.fromkeys(rows.arch))}, {ablate.seeds} seeds per arm, {int(rows.n_test_images.max())} test images, "
            f"{ablate.epochs or study.epochs} epochs per run (notebook 05's study: {study.epochs}); `d_psnr` is the "
            "difference to the arm named in `vs`, paired by seed and image; `colour_w` is the colour sliced-Wasserstein "
            "distance of the test outputs to the test ground truth (lower is closer).")
    if "pairing" in set(rows.group):
        tr = run.profile.train
        note += (f" The pairing group trains notebook 04's pseudo-pair {ablations.PAIRING_ARCH} instead "
                 f"({tr.stage1_epochs} + {tr.stage2_epochs} epochs; pair graphs with k = {run.profile.match.k_images} "
                 f"images, {run.profile.match.k_patches} patches; heads: {', '.join(ablate.pairing_heads)}"
                 + ("" if len(ablate.pairing_heads) == len(ablations.HEADS) else ", the other heads in the full profile")
                 + ").")
    reporting.write_table(rows, run.results_dir, "ablation_runs", metadata=meta, markdown=False)
    reporting.write_table(per_image, run.results_dir, "ablation_per_image", metadata=meta, markdown=False)
    cols = ["group", "arm", "n_seeds", "psnr", "psnr_se", "de2000", "colour_w", "vs", "d_psnr", "d_psnr_se", "d_colour_w"]
    reporting.write_table(summary, run.results_dir, "ablation_summary", metadata=meta, note=note)
    print(f"{len(rows)} rows in {wall / 60:.1f} min")
    display(summary[cols].round(3))

# %% [markdown]
# ## Each group against its baseline
# PSNR on the test split, mean over seeds with its standard error; the grey bar is the group's
# baseline (notebook 05's unpaired configuration at this budget).

# %%
if ready:
    order = [g for g in ablations.GROUPS if g in set(summary.group)]
    fig, axes = plt.subplots(1, len(order), figsize=(4.6 * len(order), 4.2), squeeze=False)
    for ax, group in zip(axes[0], order):
        g = summary[summary.group == group]
        ax.barh(g.arm, g.psnr, xerr=g.psnr_se, color=["0.6" if v == "" else "C0" for v in g.vs], capsize=2)
        ax.invert_yaxis()
        ax.set_xlim(max(0.0, g.psnr.min() - 1.5), g.psnr.max() + 1.0)
        ax.set_xlabel("test PSNR (dB)")
        ax.set_title(f"{group} ({int(g.n_seeds.min())} seeds)", fontsize=10)
        ax.tick_params(axis="y", labelsize=8)
    fig.tight_layout()
    reporting.save_figure(fig, run.results_dir, "ablation_groups")

# %% [markdown]
# ## Robustness to outlier targets
# The relaxation's claim as a curve: test PSNR of balanced and semi-relaxed UOT as the fraction of
# atypical target images grows (the target set is rebuilt from the benchmark's own typical and
# outlier images), and the mapped distribution's colour distance to the truth.

# %%
if ready and "outliers" in set(summary.group):
    curve = ablations.outlier_curve(summary)
    reporting.write_table(curve, run.results_dir, "ablation_outliers", metadata=meta, note=note)
    g = summary[summary.group == "outliers"]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, col in (("balanced", "C1"), ("semi", "C0")):
        ax.errorbar(100 * curve.outlier_fraction, curve[name], yerr=curve[f"{name}_se"], marker="o", color=col,
                    capsize=3, label=name)
        s = g[g.arm.str.startswith(name)]
        ax2.errorbar(100 * s.outlier_fraction, s.colour_w, yerr=s.colour_w_se, marker="o", color=col, capsize=3, label=name)
    ax.set_xlabel("outlier target images (%)")
    ax.set_ylabel("test PSNR (dB)")
    ax2.set_xlabel("outlier target images (%)")
    ax2.set_ylabel("colour sliced-W to the truth")
    for a in (ax, ax2):
        a.legend()
    fig.tight_layout()
    reporting.save_figure(fig, run.results_dir, "ablation_outliers")
    print(curve.to_string(index=False, float_format=lambda v: f"{v:.3f}"))

# %% [markdown]
# ## What the tables say
# Generated from `ablation_summary` (a difference counts when it exceeds two standard errors).

# %%
if ready:
    display(Markdown(ablations.discuss(summary)))
