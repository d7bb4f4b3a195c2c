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
# # 00 · The data
#
# Every later notebook learns a map from packed RAW patches to sRGB. This one looks at the data
# itself: the challenge layout, the four RAW channels, the camera model that turns real photographs
# into RAW for our synthetic benchmark, the target look, the outlier targets and the ground truth.
#
# **The embedded default** is a synthetic copy of the NTIRE 2026 unpaired ISP challenge (UP-ISP):
# same folders and file names (`train/raws/<img>_<idx>.npy`, `train/jpegs/<img>_<idx>.jpg`, ...),
# built from real photographs shipped with scikit-image and procedural dead-leaves scenes by a
# documented camera model (Brooks et al. 2019, *Unprocessing images for learned raw denoising*).
# Because we made the RAW, every RAW scene also has a ground-truth rendering in the target look, so
# metrics mean something. Point `data_root` at the real challenge folder to look at that instead.
#
# **Papers** (facts and constants restated in `docs/references.md`): Brooks et al., *Unprocessing
# Images for Learned Raw Denoising*, CVPR 2019, arXiv 1811.11127 (the camera model); Semantic
# Pseudo-Pairing, NTIRE 2026 unpaired ISP challenge, arXiv 2605.07495 (the UP-ISP data layout);
# EGUOT-ISP, arXiv 2512.05635 (outlier targets, the reason for unbalanced transport).

# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | full
data_root = ""  # empty: the synthetic benchmark of the profile; else a UP-ISP, Zurich RAW-to-RGB or DNG folder
patch = 0  # DNG folders only: packed pixels a side of the patches cut from each DNG; 0: 256
device = "auto"
seed = 0
results_dir = ""  # empty: results/<profile>

# %%
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from IPython.display import Markdown

from uotisp_lib import config, plots, reporting
from uotisp_lib.data import camera, ensure_dataset, sources
from uotisp_lib.data.layouts import DNG_PATCH, scan_dataset
from uotisp_lib.data.synth import read_meta
from uotisp_lib.preprocessing import PreprocessConfig, Preprocessor
from uotisp_lib.stitching import infer_grid, stitch

run = config.start_run(profile, data_root, device, seed, results_dir)
root = ensure_dataset(run)
layout = scan_dataset(root, patch=patch or DNG_PATCH)  # UP-ISP, Zurich RAW-to-RGB or DNG folder, detected
meta = read_meta(root) if run.synthetic else None
print(f"profile={run.profile.name} device={run.device} data={root} ({layout.format}) synthetic={run.synthetic}"
      + (f" patch={layout.patch}" if layout.format == "dng" else ""))

# %% [markdown]
# ## What is there
# One row per split: full images (groups of `<img>_<idx>` stems) and patches per kind, and the range
# of RAW values (10-bit: 0..1023). A DNG folder is cut into `patch` x `patch` packed patches as it is
# read (each DNG normalised with its own black and white levels, shown here in 10-bit units); its
# images are the DNGs, and their renderings `<name>.jpg` are the ground truth (and, without a
# `jpegs/` folder, the targets).

# %%
summary = pd.DataFrame(layout.summary())
reporting.write_table(summary, run.results_dir, "data_summary", metadata=config.run_metadata(run))
summary

# %% [markdown]
# What the table says (generated from its numbers):

# %%
Markdown(reporting.discuss_data_summary(summary))


# %% [markdown]
# ## One RAW image, channel by channel
# A RAW patch is `h x w x 4`, the RGGB Bayer mosaic packed as `[R, Gr, Gb, B]` at half resolution.
# The patches of one image are stitched back in row-major order; the grid comes from `meta.json`
# on the synthetic benchmark, from the DNG's size on a DNG folder (its patches are cut row-major),
# else from the seam-consistency score (notebook 02).

# %%
def full_image(split: str, kind: str, image_id: str) -> torch.Tensor:
    """Stitch one image's patches into a tensor [C, H, W] (RAW in raw units, sRGB in [0,1])."""
    patches = layout.read_image(split, kind, image_id)
    t = torch.from_numpy(patches.astype(np.float32)).permute(0, 3, 1, 2)
    if kind != "raws":
        t = t / 255.0
    if meta is not None:
        rows, cols = next(m["layout"] for m in meta["images"] if m["id"] == image_id)
    elif layout.format == "dng":
        rows, cols = layout.grid(split, image_id, kind)
    else:
        g = infer_grid(t, kind="raw" if kind == "raws" else "rgb")
        rows, cols = g.rows, g.cols
    return stitch(t, rows, cols)


split0 = "val" if "val" in layout.splits else layout.splits[-1]
image_id = next(iter(layout.images(split0, "raws")))
raw = full_image(split0, "raws", image_id)
names = ["R", "Gr", "Gb", "B"]
fig = plots.scalar_grid([raw[c] for c in range(4)], [f"{image_id}: {n}" for n in names], "RAW code (10-bit DN)",
                        ncols=4, cmap="gray", vmin=0, vmax=1023)
reporting.save_figure(fig, run.results_dir, "raw_channels");

# %% [markdown]
# The green channels are brightest and red/blue dimmer: the sensor sees the scene *before* white
# balance (our camera model divides by per-image illuminant gains, R in [1.9, 2.4], B in [1.5, 1.9]).

# %% [markdown]
# ## The camera model, step by step
# sRGB scene -> inverse sRGB gamma -> linear camera RGB (inverse colour matrix) -> divided by the
# illuminant gains -> RGGB mosaic -> shot + read noise -> 10-bit codes (Brooks et al. 2019, run
# backwards from an sRGB photograph). For a scene $y$ in sRGB:
#
# $$x_{\text{lin}} = \operatorname{sRGB}^{-1}(y), \qquad
#   x_{\text{cam}} = M\, x_{\text{lin}}, \qquad
#   x_{\text{sensor}} = x_{\text{cam}} \oslash (g_R, 1, g_B)$$
#
# where $M$ (rows summing to 1) is the inverse of the camera's colour-correction matrix and the
# illuminant gains are drawn per image, $g_R \sim \mathcal U[1.9, 2.4]$, $g_B \sim \mathcal U[1.5, 1.9]$.
# The mosaic keeps one colour per pixel, noise is heteroscedastic and the result is quantised to 10 bits:
#
# $$m = \operatorname{mosaic}_{\text{RGGB}}(x_{\text{sensor}}), \qquad
#   \tilde m = m + n, \quad n \sim \mathcal N\big(0,\ \sigma_s\, m + \sigma_r\big), \qquad
#   \text{raw} = \operatorname{round}\big(1023 \cdot \operatorname{clip}_{[0,1]}(\tilde m)\big)$$
#
# with $\log \sigma_s \sim \mathcal U[\log 10^{-4}, \log 4\cdot 10^{-3}]$ and
# $\log \sigma_r = 2.18 \log \sigma_s + 1.20 + \mathcal N(0, 0.26^2)$ (Brooks' fit). The constants
# live in `uotisp_lib.data.camera.CameraModel` and in every benchmark's `meta.json`.

# %%
rng = np.random.default_rng(run.seed)
scene = sources.sample_scene(rng, 128, 128, sources.builtin_photos())
srgb = torch.from_numpy(scene).permute(2, 0, 1)[None]
cam = camera.DEFAULT_CAMERA
gen = torch.Generator().manual_seed(run.seed)
gains = camera.sample_gains(1, cam, gen)
lin = camera.srgb_to_camera_linear(srgb, cam)
sensor = lin / gains[:, :, None, None]
packed = camera.forward(srgb, gains, cam, generator=gen, noise=True)
codes = camera.quantize(packed, cam)
bayer = camera.unpack_mosaic(packed)
fig = plots.image_and_maps([
    ("sRGB scene", srgb[0], None),
    ("camera RGB (linear)", lin[0], None),
    (f"/ gains {gains[0].numpy().round(2)}", sensor[0], None),
    ("RGGB mosaic + noise", bayer[0], None),
    ("10-bit Gr plane", codes[0, 1].float(), "RAW code (10-bit DN)"),
])
reporting.save_figure(fig, run.results_dir, "camera_model");

# %% [markdown]
# ## The target look and the outliers
# The target JPEGs are not the camera's inverse: the benchmark's "phone ISP" (`TargetLook`) adds its
# own white-balance tint, a saturation boost, exposure and an S-curve. A fraction of the target JPEGs
# gets an atypical look instead (sepia, washed out, a cyan cast, punchy): unbalanced transport may
# leave those unmatched.

# %%
looks = [camera.DEFAULT_LOOK, *camera.OUTLIER_LOOKS.values()]
renders = [camera.srgb_to_target(srgb, look, cam)[0] for look in looks]
fig = reporting.image_grid([srgb[0], *renders], ["scene (plain sRGB)", *[l.name for l in looks]], ncols=len(looks) + 1)
reporting.save_figure(fig, run.results_dir, "target_look");

# %%
jpeg_ids = list(layout.images("train", "jpegs")) if layout.files.get("train", {}).get("jpegs") else []
outlier_ids = set(meta["outliers"]) if meta else set()
if jpeg_ids:
    typical = [i for i in jpeg_ids if i not in outlier_ids][:3]
    atypical = [i for i in jpeg_ids if i in outlier_ids][:3]
    shown = typical + atypical
    fig = reporting.image_grid(
        [full_image("train", "jpegs", i) for i in shown],
        [f"{i} ({'outlier' if i in outlier_ids else 'typical'})" for i in shown],
        ncols=3,
    )
    reporting.save_figure(fig, run.results_dir, "outliers")
    print(f"{len(outlier_ids)} of {len(jpeg_ids)} target images are outliers")
else:
    print(f"skipped the target images: {root} has no train targets (train/jpegs, or renderings beside train DNGs)")

# %% [markdown]
# ## Ground truth
# Each evaluation RAW image has its ground truth: the target look applied to the scene it was made
# from. Beside it, a naive rendering of the RAW (gray-world white balance, Malvar demosaicing, gamma
# 1/2.2; notebook 01 studies these stages): the gap between the two is what an ISP has to learn.

# %%
if "gt" in layout.files.get(split0, {}):
    naive = Preprocessor(PreprocessConfig(wb="gray_world"))(raw[None])[0]
    gt = full_image(split0, "gt", image_id)
    fig = reporting.image_grid([naive, gt], [f"{image_id}: naive RAW rendering", "ground truth (target look)"], ncols=2, size=4)
    reporting.save_figure(fig, run.results_dir, "ground_truth")
else:
    print(f"skipped the ground-truth figure: {root}/{split0}/gt has no ground truth")
