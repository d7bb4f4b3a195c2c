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
# # 01 · Preprocessing: from packed RAW to pseudo-RGB
#
# The Borelli pipeline (NTIRE 2026 unpaired ISP, *semantic pseudo-pairing*) does not feed RAW to its
# network: it first turns each packed RGGB patch into a "pseudo-RGB" image, twice the size:
#
# 1. normalise `(x - black) / (white - black)` and clip (UP-ISP: black 0, white 1023);
# 2. white balance (Borelli: gains 1, 1, 1, i.e. none; we also offer gray-world and given gains);
# 3. rebuild the 2h x 2w RGGB mosaic (R even/even, Gr even/odd, Gb odd/even, B odd/odd);
# 4. demosaic (Borelli: DemosaicNet; here also bilinear, Malvar-He-Cutler and Menon);
# 5. denoise (Borelli: FFDNet at sigma 0.01, GPL weights, optional here; a guided filter offline);
# 6. gamma `x ** (1/2.2)`.
#
# In equations, with black level $b$, white level $w$ and white-balance gains $g$:
#
# $$\hat x = \operatorname{clip}_{[0,1]}\!\Big(\frac{x - b}{w - b}\Big) \odot g, \qquad
#   \text{out} = \Big(\operatorname{denoise}\big(\operatorname{demosaic}(\operatorname{mosaic}(\hat x))\big)\Big)^{1/2.2}.$$
#
# *Bilinear* demosaicing fills a missing colour with the mean of its nearest samples, e.g. green at a
# red site $(i, j)$: $\hat G_{\text{bl}}(i,j) = \tfrac14 \sum_{(k,l) \in \mathcal N_4(i,j)} G(k,l)$.
# *Malvar-He-Cutler* (ICASSP 2004) adds a fraction of the known channel's Laplacian, which carries
# the edges the missing channel shares:
#
# $$\hat G(i,j) = \hat G_{\text{bl}}(i,j) + \tfrac12\, \Delta_R(i,j), \qquad
#   \Delta_R(i,j) = R(i,j) - \tfrac14 \big(R(i\pm2, j) + R(i, j\pm2)\big)$$
#
# (5x5 kernels for every case). The *guided filter* (He et al., TPAMI 2013) denoises each window
# $\omega_k$ with a local linear model of the guide $I$ (here the image itself),
#
# $$q_i = \bar a_k I_i + \bar b_k, \qquad a_k = \frac{\operatorname{cov}_{\omega_k}(I, p)}{\operatorname{var}_{\omega_k}(I) + \epsilon}, \qquad
#   b_k = \bar p_k - a_k \bar I_k, \qquad \epsilon = 8\sigma^2,$$
#
# smoothing where the local variance is below $\epsilon$ and keeping edges. The scores:
# $\mathrm{PSNR} = 10 \log_{10} \big(1 / \mathrm{MSE}\big)$ on [0, 1] images, SSIM and CIEDE2000
# as stated in `uotisp_lib.metrics`.
#
# **Papers** (restated in `docs/references.md`): Semantic Pseudo-Pairing, arXiv 2605.07495 (the
# chain); Gharbi et al., *Deep Joint Demosaicking and Denoising*, SIGGRAPH Asia 2016 (DemosaicNet);
# Zhang et al., *FFDNet*, arXiv 1710.04026; Malvar, He, Cutler, ICASSP 2004; He, Sun, Tang, *Guided
# Image Filtering*, TPAMI 2013.
#
# Below, each stage on a RAW image of the dataset, then every demosaic x denoise backend scored
# against the clean sensor image the synthetic camera model knows (the white balance is given the
# true illuminant so only demosaicing and denoising differ).

# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | full
data_root = ""  # empty: the synthetic benchmark of the profile; else a UP-ISP style folder
device = "auto"
seed = 0
results_dir = ""  # empty: results/<profile>

# %%
import pandas as pd
import torch
from IPython.display import Markdown

from uotisp_lib import config, plots, reporting
from uotisp_lib.data import ensure_dataset
from uotisp_lib.data.layouts import scan_upisp
from uotisp_lib.preprocessing import PreprocessConfig, Preprocessor
from uotisp_lib.preprocessing.evaluation import compare_backends, default_backends, synthetic_scenes
from uotisp_lib.stitching import infer_grid, stitch

run = config.start_run(profile, data_root, device, seed, results_dir)
study = run.profile.preprocess
layout = scan_upisp(ensure_dataset(run))
print(f"profile={run.profile.name} device={run.device} study={study}")

# %% [markdown]
# ## Each stage on one RAW image
# The patches of the first RAW image are stitched (grid by seam consistency, notebook 02) and pushed
# through the default preprocessor with gray-world white balance.

# %%
split = "val" if "val" in layout.splits else layout.splits[0]
image_id = next(iter(layout.images(split, "raws")))
patches = torch.from_numpy(layout.read_image(split, "raws", image_id).astype("float32")).permute(0, 3, 1, 2)
grid = infer_grid(patches, kind="raw")
raw = stitch(patches, grid.rows, grid.cols)[None].to(run.device)
stages = Preprocessor(PreprocessConfig(wb="gray_world")).stages(raw)
shown = {
    "white-balanced (R, Gr, B)": stages["white_balanced"][0, [0, 1, 3]],
    "Bayer mosaic": stages["bayer"][0],
    "demosaiced (linear)": stages["demosaiced"][0],
    "output (gamma 1/2.2)": stages["output"][0],
}
fig = plots.image_and_maps([("normalised (Gr)", stages["normalized"][0, 1], "normalised RAW (0-1)"),
                            *((k, v, None) for k, v in shown.items())])
reporting.save_figure(fig, run.results_dir, "preprocessing_stages")
print(f"{image_id}: grid {grid.rows}x{grid.cols} (confidence {grid.confidence:.2f})")

# %% [markdown]
# ## Demosaicing and denoising backends
# `study.n_scenes` scenes (scikit-image photographs and dead leaves) of `study.size` pixels go through
# the camera model (illuminant, mosaic, shot + read noise, 10 bits). PSNR / SSIM / CIEDE2000 compare
# each backend's output with the clean white-balanced sensor image (both through gamma 1/2.2, 4 px
# border cropped); MP/s is output megapixels per second on this machine (one image at a time).

# %%
scenes = synthetic_scenes(study.n_scenes, study.size, run.seed)
scenes = type(scenes)(raw=scenes.raw.to(run.device), clean=scenes.clean.to(run.device), gains=scenes.gains)
configs = default_backends(study.demosaic, study.denoise)
table = pd.DataFrame(compare_backends(scenes, configs, repeats=study.repeats, progress=True)).set_index("backend")
reporting.write_table(
    table,
    run.results_dir,
    "preprocessing_quality",
    metadata=config.run_metadata(run, threads=torch.get_num_threads(), n_scenes=study.n_scenes, size=study.size),
)
table.sort_values("psnr", ascending=False)

# %% [markdown]
# What the table says (generated from its numbers; the default, Malvar without denoising, is the
# reference row):

# %%
Markdown(reporting.discuss_table(
    table, {"psnr": "higher", "ssim": "higher", "de2000": "lower", "mp_per_s": "higher"}, baseline="malvar+none"
))

# %%
import matplotlib.pyplot as plt

fig, ax = plt.subplots(figsize=(6, 4))
for name, row in table.iterrows():
    ax.scatter(row["mp_per_s"], row["psnr"], label=name)
ax.set_xscale("log")
ax.set_xlabel("throughput (output MP/s, log)")
ax.set_ylabel("PSNR vs clean sensor image (dB)")
ax.legend(fontsize=7)
ax.set_title("quality vs speed per backend")
reporting.save_figure(fig, run.results_dir, "preprocessing_tradeoff");

# %% [markdown]
# ## Side by side
# A crop of one scene through each demosaic backend (no denoising), beside the clean reference.

# %%
crop = slice(0, min(64, study.size))
one = type(scenes)(raw=scenes.raw[:1], clean=scenes.clean[:1], gains=scenes.gains[:1])
gains = tuple(one.gains[0].tolist())
outs = {dm: Preprocessor(PreprocessConfig(demosaic=dm, wb=gains))(one.raw)[0] for dm in study.demosaic}
ref = one.clean[0] ** (1 / 2.2)
fig = reporting.image_grid(
    [ref[:, crop, crop], *[o[:, crop, crop] for o in outs.values()]], ["clean reference", *outs], ncols=len(outs) + 1
)
reporting.save_figure(fig, run.results_dir, "demosaic_crops");

# %% [markdown]
# Where each backend errs on that crop: the per-pixel CIEDE2000 against the clean reference, on one
# colour scale (the title gives each map's mean).

# %%
fig = plots.de2000_maps({dm: o[:, crop, crop].clamp(0, 1) for dm, o in outs.items()}, ref[:, crop, crop].clamp(0, 1),
                        ncols=len(outs))
reporting.save_figure(fig, run.results_dir, "demosaic_de2000");

# %% [markdown]
# Reading the table: learned demosaicing (DemosaicNet) is the most accurate and by far the slowest on
# a CPU; Malvar-He-Cutler is the fast default (a few 5x5 convolutions); the guided filter removes
# part of the shot and read noise at a modest cost in speed. FFDNet joins the table when its
# (GPL) weights are given via `$UOTISP_FFDNET_WEIGHTS`.
