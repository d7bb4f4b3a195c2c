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
# # 04 · Losses and the lightweight ISP trained on pseudo-pairs
#
# Semantic Pseudo-Pairing (Borelli Image, NTIRE 2026 unpaired ISP challenge, arXiv 2605.07495) trains
# a 7,055-parameter colour-mapping CNN on pseudo-RGB inputs. Each source patch is paired, at every
# step, with a target JPEG patch drawn from its pseudo-pair distribution (notebook 03), and the pairs
# are compared by statistics that need no pixel alignment: channel moments, soft Y and joint UV
# histograms, Gram matrices of deep features, plus total variation; stage 2 lowers the moment and TV
# weights and adds a low-weight hinge GAN. This notebook shows each loss on an example, trains the
# network in two stages, and compares pairings (random, kNN, OT) and heads (1x1 colour matrix, 3D
# LUT) with a paired upper bound and the organisers' 3,060-parameter network.
#
# **The losses.** For a prediction $\hat y = f(x)$ and its pseudo-paired target $y$ (BT.601 YUV with
# $U, V$ shifted by $+\tfrac12$; $\mu_c, \sigma_c$ the mean and standard deviation of channel $c$;
# $h_Y$ the 64-bin soft histogram of $Y$, Gaussian kernel width 0.02; $h_{UV}$ the joint 32x32
# soft histogram of $(U, V)$, width 0.03; $F_l$ the feature map of layer $l$ with $C_l$ channels):
#
# $$\mathcal L_{\text{mom}} = \tfrac13 \sum_c \big(|\mu_c(\hat y) - \mu_c(y)| + |\sigma_c(\hat y) - \sigma_c(y)|\big), \qquad
#   \mathcal L_{Y} = \operatorname{MSE}\big(h_Y(\hat y), h_Y(y)\big), \qquad
#   \mathcal L_{UV} = \operatorname{MSE}\big(h_{UV}(\hat y), h_{UV}(y)\big),$$
#
# $$\mathcal L_{\text{Gram}} = \sum_l \operatorname{MSE}\big(G_l(\hat y), G_l(y)\big), \quad
#   G_l = \frac{F_l F_l^\top}{C_l H_l W_l}, \qquad
#   \mathcal L_{TV} = \overline{|\hat y_{i+1,j} - \hat y_{i,j}|} + \overline{|\hat y_{i,j+1} - \hat y_{i,j}|}.$$
#
# Stage 2 adds a hinge GAN with a discriminator $D$ (per-pixel logits, averaged):
#
# $$\mathcal L_D = \mathbb E\big[\operatorname{relu}(1 - D(y))\big] + \mathbb E\big[\operatorname{relu}(1 + D(\hat y))\big],
#   \qquad \mathcal L_{\text{adv}} = -\mathbb E\big[D(\hat y)\big],$$
#
# and the network minimises
#
# $$\mathcal L = \lambda_{\text{mom}} \mathcal L_{\text{mom}} + \mathcal L_Y + 1.5\, \mathcal L_{UV} + \mathcal L_{\text{Gram}}
#   + \lambda_{TV} \mathcal L_{TV} + \lambda_{\text{adv}} \mathcal L_{\text{adv}},$$
#
# with $(\lambda_{\text{mom}}, \lambda_{TV}, \lambda_{\text{adv}}) = (1, 0.05, 0)$ in stage 1 and
# $(0.2, 0.01, 0.001)$ in stage 2 (`uotisp_lib.losses.BORELLI_WEIGHTS`).
#
# **Papers** (restated in `docs/references.md`): Semantic Pseudo-Pairing, NTIRE 2026 unpaired ISP
# challenge, arXiv 2605.07495 (losses, weights, the 7,055-parameter network and its LUT head);
# Gatys et al., *A Neural Algorithm of Artistic Style*, arXiv 1508.06576 (Gram statistics); Lim and
# Ye, *Geometric GAN*, arXiv 1705.02894 (hinge loss); EGUOT-ISP, arXiv 2512.05635 (notebook 05
# trains the same networks with unbalanced OT instead).

# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | full
data_root = ""  # empty: the synthetic benchmark of the profile; else a UP-ISP, Zurich RAW-to-RGB or DNG folder
patch = 0  # DNG folders only: packed pixels a side of the patches cut from each DNG; 0: 256
device = "auto"
seed = 0
results_dir = ""  # empty: results/<profile>

# %%
import dataclasses

import matplotlib.pyplot as plt
import pandas as pd
import torch
from IPython.display import Markdown
from tqdm.auto import tqdm

from uotisp_lib import config, losses, plots, reporting, stats
from uotisp_lib.data import ensure_dataset
from uotisp_lib.data.layouts import DNG_PATCH
from uotisp_lib.experiments import (
    graph_pair_fn, has_ground_truth, image_layout, image_stems, load_training_data, model_inputs, random_pair_fn,
    render_image, run_pseudo_pair,
)
from uotisp_lib.features import load_gram_extractor
from uotisp_lib.matching import build_pair_graph
from uotisp_lib.stitching import stitch
from uotisp_lib.preprocessing import PreprocessConfig
from uotisp_lib.train import PseudoPairConfig

run = config.start_run(profile, data_root, device, seed, results_dir)
study = run.profile.train
root = ensure_dataset(run)
data = load_training_data(root, proxy_fraction=study.proxy_fraction, seed=run.seed, patch=patch or DNG_PATCH)
preprocess = PreprocessConfig()  # Malvar demosaicing, no denoising, gamma 1/2.2 (notebook 01)
extractor, gram_backend = load_gram_extractor("auto", run.device) if study.gram else (None, "none")
runs_dir = run.results_dir / "runs" / "pseudo_pairs"
print(f"profile={run.profile.name} device={run.device} gram backend={gram_backend} study={study}")

# %% [markdown]
# ## The losses on an example
# A pseudo-RGB source patch and a target JPEG patch: their soft Y histograms (64 bins, sigma 0.02),
# joint UV histograms (32 x 32, sigma 0.03), Gram matrices of the first feature layer and the TV map
# of the source. Each number is the loss between the two.

# %%
src = model_inputs(data.raw_train.subset(data.raw_train.stems[:1]), "rgb", preprocess).images
tgt = data.targets.images[:1]
values = {
    "moment": losses.moment_loss(src, tgt),
    "Y hist": losses.y_histogram_loss(src, tgt),
    "UV hist": losses.uv_histogram_loss(src, tgt),
    "TV (source)": losses.tv_loss(src),
}
if extractor is not None:
    values["Gram"] = losses.gram_loss(src, tgt, extractor)
fig, axes = plt.subplots(1, 6, figsize=(20, 3.2))
axes[0].imshow(reporting.to_display(src[0]))
axes[0].set_title("source (pseudo-RGB)")
axes[1].imshow(reporting.to_display(tgt[0]))
axes[1].set_title("target JPEG")
bins = torch.arange(64) / 64 + 0.5 / 64
axes[2].plot(bins, stats.soft_histogram_y(src)[0], label="source")
axes[2].plot(bins, stats.soft_histogram_y(tgt)[0], label="target")
axes[2].legend(fontsize=7)
axes[2].set_xlabel("Y (luma, 0-1)")
axes[2].set_ylabel("fraction of pixels per bin")
axes[2].set_title(f"soft Y histograms (loss {float(values['Y hist']):.2e})", fontsize=9)
for ax, img, name in ((axes[3], src, "source"), (axes[4], tgt, "target")):
    plots.scalar_image(ax, stats.soft_histogram_uv(img)[0].view(32, 32).T, "fraction of pixels per bin",
                       title=f"UV histogram, {name}", xlabel="U + 0.5", ylabel="V + 0.5",
                       origin="lower", extent=(0, 1, 0, 1))
tv_map = (src[..., 1:, :-1] - src[..., :-1, :-1]).abs().sum(1) + (src[..., :-1, 1:] - src[..., :-1, :-1]).abs().sum(1)
plots.scalar_image(axes[5], tv_map[0], "|dx| + |dy| summed over RGB (sRGB units)", cmap="magma",
                   title=f"TV map of the source (loss {float(values['TV (source)']):.3f})")
for ax in (axes[0], axes[1]):
    ax.axis("off")
fig.tight_layout()
reporting.save_figure(fig, run.results_dir, "loss_examples")
pd.Series({k: float(v) for k, v in values.items()}, name="loss").to_frame()

# %% [markdown]
# ## Pseudo-pairs and training
# Pair graphs for OT (entropic fused Gromov-Wasserstein at image level, then patch-level OT) and kNN
# (notebook 03 compares them); random pairing draws any target uniformly. Target images held out for
# the ground-truth-free proxy are never drawn. A DNG folder has no pair graphs (they are built from
# the patch files of a UP-ISP folder): its runs use random pairing, and the paired upper bound when
# its DNGs have renderings. Each run trains two stages (Borelli's weights,
# `uotisp_lib.losses.BORELLI_WEIGHTS`), checkpointing every epoch, and is scored on the test split.

# %%
allowed = set(data.targets.stems)
pairings = {"random": random_pair_fn(data.targets.stems)}
graph_diag = {}
graph_methods = (("knn", "kNN"), ("fgw", "OT (FGW)"))
if data.layout is not None:  # a DNG folder: its patches are cut in memory, no patch files to describe
    print(f"skipped the kNN and OT (FGW) pair graphs: {root} is a DNG folder (pair graphs are built on UP-ISP "
          "patch files); random pairing only")
    graph_methods = ()
for method, name in graph_methods:
    graph, diag = build_pair_graph(root, method, k=run.profile.match.k_images, k_patch=run.profile.match.k_patches,
                                   backend=run.profile.match.backend, seed=run.seed, device=run.device,
                                   target_ids=data.target_image_ids)
    pairings[name] = graph_pair_fn(graph, allowed)
    graph_diag[name] = diag["backends"]
base = PseudoPairConfig(
    stage1_epochs=study.stage1_epochs, stage2_epochs=study.stage2_epochs, batch_size=study.batch_size,
    lr=study.lr, d_width=study.d_width, crop=study.crop, seed=run.seed,
)
# (model, pairing, config, pair sampler, Gram extractor, run folder) of every run
runs = [
    (f"colornet ({head})", pairing, dataclasses.replace(base, arch="colornet", arch_kwargs=(("head", head),)), fn,
     extractor, f"{pairing}-{head}".replace(" ", "_"))
    for pairing, fn in pairings.items() for head in ("conv1x1", "lut3d")
]
main_pairing = "OT (FGW)" if "OT (FGW)" in pairings else "random"  # the pairing of tinyraw and of the curves
runs.append(("tinyraw (organisers')", main_pairing, dataclasses.replace(base, arch="tinyraw"), pairings[main_pairing], extractor,
             "tinyraw-ot" if main_pairing == "OT (FGW)" else "tinyraw-random"))
if has_ground_truth(data, "train", "the paired upper bound"):
    upper = dataclasses.replace(base, paired=True, stage2_epochs=0, stage1_epochs=study.stage1_epochs + study.stage2_epochs)
    runs.append(("colornet (conv1x1)", "true pairs (upper bound)", upper, None, None, "paired"))
rows, trainers = [], {}
for model, pairing, cfg, fn, ext, folder in tqdm(runs, desc="training runs"):
    row, trainers[(model, pairing)] = run_pseudo_pair(data, cfg, runs_dir / folder, fn, run.device, preprocess, ext)
    rows.append({"model": model, "pairing": pairing, **row})
results = pd.DataFrame(rows)
note = reporting.backends_note({**graph_diag.get("OT (FGW)", {}), "gram_loss": gram_backend})
reporting.write_table(
    results, run.results_dir, "pseudo_pair_results", note=note,
    metadata=config.run_metadata(run, study=study, gram_backend=gram_backend, descriptor_backends=graph_diag, preprocess=preprocess),
)
results

# %% [markdown]
# What the table says (generated from its numbers; random pairing of the 1x1 colornet is the
# reference row), and which descriptor (for the kNN and OT pair graphs) and Gram-loss backends ran:

# %%
Markdown(note + "\n\n" + reporting.discuss_table(
    results, {"psnr": "higher", "ssim": "higher", "de2000": "lower", "proxy": "lower"},
    label=["model", "pairing"], baseline="colornet (conv1x1) / random",
))

# %% [markdown]
# ## The comparison as bars
# Means over the test patches; error bars are one standard error over the test *images* (patches
# averaged per image first), so they say how much the ranking could move with other test images.

# %%
if has_ground_truth(data, "test", "the bar chart of the test metrics"):
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (col, unit) in zip(axes, (("psnr", "PSNR (dB, higher is better)"), ("ssim", "SSIM (0-1, higher is better)"),
                                      ("de2000", "mean ΔE2000 (lower is better)"))):
        plots.bar_chart(results, col, label=["model", "pairing"], se=f"{col}_se", ylabel=unit, ax=ax)
    reporting.save_figure(fig, run.results_dir, "pseudo_pair_bars");

# %% [markdown]
# ## Outputs beside the ground truth
# One test image rendered whole (its patches stitched) by every trained ISP, beside its ground
# truth; then the colour histograms of the outputs against the ground truth's, and the per-pixel
# CIEDE2000 error maps on one colour scale (the title gives each map's mean).

# %%
if has_ground_truth(data, "test", "the test renderings beside the ground truth"):
    test_id = sorted({s.rsplit("_", 1)[0] for s in data.raw_test.stems})[0]  # the first test image
    grid = image_layout(data, data.gt_test, test_id, split="test")
    gt_image = stitch(data.gt_test.select(image_stems(data.gt_test, test_id)), *grid)
    outputs = {f"{model} / {pairing}": render_image(tr, data.raw_test, test_id, grid) for (model, pairing), tr in trainers.items()}
    fig = reporting.image_grid([gt_image, *outputs.values()], [f"{test_id}: ground truth", *outputs], ncols=3, size=3.5)
    reporting.save_figure(fig, run.results_dir, "test_outputs")
    fig = plots.colour_histograms({"ground truth": gt_image, **outputs}, target="ground truth")
    reporting.save_figure(fig, run.results_dir, "colour_histograms")
    fig = plots.de2000_maps(outputs, gt_image, ncols=3)
    reporting.save_figure(fig, run.results_dir, "de2000_maps");

# %% [markdown]
# ## Training curves
# Stage 1 (statistic losses) then stage 2 (lower moment / TV weights, hinge GAN) of the OT-paired
# colornet: the total loss, the validation PSNR against ground truth, and the ground-truth-free proxy
# (colour-statistics distance to held-out targets) one would early-stop on with real unpaired data.

# %%
hist = pd.DataFrame(trainers[("colornet (conv1x1)", main_pairing)].state.history)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
for ax, col, title in zip(axes, ("total", "val_psnr", "proxy"), ("training loss", "validation PSNR (dB)", "proxy (lower is better)")):
    if col in hist:
        ax.plot(hist["epoch"], hist[col], marker="o")
    stage2 = hist.loc[hist["stage2"] > 0, "epoch"]
    if len(stage2):
        ax.axvspan(stage2.min() - 0.5, stage2.max() + 0.5, color="tab:orange", alpha=0.15, label="stage 2")
    ax.set_xlabel("epoch")
    ax.set_ylabel(title)
    ax.set_title(title, fontsize=9)
axes[0].legend(fontsize=7)
fig.tight_layout()
reporting.save_figure(fig, run.results_dir, "training_curves");
