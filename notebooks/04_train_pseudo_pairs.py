# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
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

# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | full
data_root = ""  # empty: the synthetic benchmark of the profile; else a UP-ISP style folder
device = "auto"
seed = 0
results_dir = ""  # empty: results/<profile>

# %%
import dataclasses

import matplotlib.pyplot as plt
import pandas as pd
import torch

from uotisp_lib import config, losses, reporting, stats
from uotisp_lib.data import ensure_dataset
from uotisp_lib.experiments import graph_pair_fn, load_training_data, model_inputs, random_pair_fn, run_pseudo_pair
from uotisp_lib.features import load_gram_extractor
from uotisp_lib.matching import build_pair_graph
from uotisp_lib.preprocessing import PreprocessConfig
from uotisp_lib.train import PseudoPairConfig

run = config.start_run(profile, data_root, device, seed, results_dir)
study = run.profile.train
root = ensure_dataset(run)
data = load_training_data(root, proxy_fraction=study.proxy_fraction, seed=run.seed)
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
axes[2].set_title(f"soft Y histograms (loss {float(values['Y hist']):.2e})", fontsize=9)
for ax, img, name in ((axes[3], src, "source"), (axes[4], tgt, "target")):
    ax.imshow(stats.soft_histogram_uv(img)[0].view(32, 32).T, origin="lower", extent=(0, 1, 0, 1))
    ax.set_xlabel("U + 0.5")
    ax.set_ylabel("V + 0.5")
    ax.set_title(f"UV histogram, {name}", fontsize=9)
tv_map = (src[..., 1:, :-1] - src[..., :-1, :-1]).abs().sum(1) + (src[..., :-1, 1:] - src[..., :-1, :-1]).abs().sum(1)
axes[5].imshow(tv_map[0], cmap="magma")
axes[5].set_title(f"TV map of the source (loss {float(values['TV (source)']):.3f})", fontsize=9)
for ax in (axes[0], axes[1], axes[5]):
    ax.axis("off")
fig.tight_layout()
reporting.save_figure(fig, run.results_dir, "loss_examples")
pd.Series({k: float(v) for k, v in values.items()}, name="loss").to_frame()

# %% [markdown]
# ## Pseudo-pairs and training
# Pair graphs for OT (entropic fused Gromov-Wasserstein at image level, then patch-level OT) and kNN
# (notebook 03 compares them); random pairing draws any target uniformly. Target images held out for
# the ground-truth-free proxy are never drawn. Each run trains two stages (Borelli's weights,
# `uotisp_lib.losses.BORELLI_WEIGHTS`), checkpointing every epoch, and is scored on the test split.

# %%
allowed = set(data.targets.stems)
pairings = {"random": random_pair_fn(data.targets.stems)}
graph_diag = {}
for method, name in (("knn", "kNN"), ("fgw", "OT (FGW)")):
    graph, diag = build_pair_graph(root, method, k=run.profile.match.k_images, k_patch=run.profile.match.k_patches,
                                   backend=run.profile.match.backend, seed=run.seed, device=run.device,
                                   target_ids=data.target_image_ids)
    pairings[name] = graph_pair_fn(graph, allowed)
    graph_diag[name] = diag["backends"]
base = PseudoPairConfig(
    stage1_epochs=study.stage1_epochs, stage2_epochs=study.stage2_epochs, batch_size=study.batch_size,
    lr=study.lr, d_width=study.d_width, crop=study.crop, seed=run.seed,
)
rows, trainers = [], {}
for pairing, fn in pairings.items():
    for head in ("conv1x1", "lut3d"):
        cfg = dataclasses.replace(base, arch="colornet", arch_kwargs=(("head", head),))
        row, trainer = run_pseudo_pair(data, cfg, runs_dir / f"{pairing}-{head}".replace(" ", "_"), fn, run.device, preprocess, extractor)
        rows.append({"model": f"colornet ({head})", "pairing": pairing, **row})
        trainers[(pairing, head)] = trainer
tiny = dataclasses.replace(base, arch="tinyraw")
row, _ = run_pseudo_pair(data, tiny, runs_dir / "tinyraw-ot", pairings["OT (FGW)"], run.device, preprocess, extractor)
rows.append({"model": "tinyraw (organisers')", "pairing": "OT (FGW)", **row})
if data.gt_train is not None:
    upper = dataclasses.replace(base, paired=True, stage2_epochs=0, stage1_epochs=study.stage1_epochs + study.stage2_epochs)
    row, _ = run_pseudo_pair(data, upper, runs_dir / "paired", None, run.device, preprocess)
    rows.append({"model": "colornet (conv1x1)", "pairing": "true pairs (upper bound)", **row})
results = pd.DataFrame(rows)
reporting.write_table(
    results, run.results_dir, "pseudo_pair_results",
    metadata=config.run_metadata(run, study=study, gram_backend=gram_backend, descriptor_backends=graph_diag, preprocess=preprocess),
)
results

# %% [markdown]
# ## Training curves
# Stage 1 (statistic losses) then stage 2 (lower moment / TV weights, hinge GAN) of the OT-paired
# colornet: the total loss, the validation PSNR against ground truth, and the ground-truth-free proxy
# (colour-statistics distance to held-out targets) one would early-stop on with real unpaired data.

# %%
hist = pd.DataFrame(trainers[("OT (FGW)", "conv1x1")].state.history)
fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
for ax, col, title in zip(axes, ("total", "val_psnr", "proxy"), ("training loss", "validation PSNR (dB)", "proxy (lower is better)")):
    if col in hist:
        ax.plot(hist["epoch"], hist[col], marker="o")
    stage2 = hist.loc[hist["stage2"] > 0, "epoch"]
    if len(stage2):
        ax.axvspan(stage2.min() - 0.5, stage2.max() + 0.5, color="tab:orange", alpha=0.15, label="stage 2")
    ax.set_xlabel("epoch")
    ax.set_title(title, fontsize=9)
axes[0].legend(fontsize=7)
fig.tight_layout()
reporting.save_figure(fig, run.results_dir, "training_curves")
