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
# # 03 · Semantic pseudo-pairs by optimal transport
#
# With unpaired RAW and sRGB sets, Borelli's pipeline (arXiv 2605.07495) builds *pseudo-pairs*:
#
# 1. an image descriptor per stitched image: a backbone (DINOv2 ViT-S/14, CLS + mean patch token;
#    offline here, efficientnet_lite0 with its bundled ImageNet weights), Gram style statistics and
#    soft Y / UV histograms, each part L2-normalised and weighted;
# 2. an entropic **fused Gromov-Wasserstein** plan between the RAW and the sRGB image sets (feature
#    cost plus the mismatch of intra-domain distances, alpha 0.5; POT), top-k target images per
#    source image;
# 3. patch-level entropic OT between a source image's patches and all patches of its top-k target
#    images, weights `w = P_patch * P_image`, top-8 kept: a sparse weighted graph that a sampler
#    draws one target from per step.
#
# The claim: OT spreads the sources over the targets, where kNN collapses many sources onto a few
# targets, and OT pseudo-pairs beat random ones. On the synthetic benchmark the ground-truth
# rendering of each RAW patch exists, so pair quality can be measured: the colour-statistics distance
# between a source's ground truth and its matched targets (lower is better; random pairing is the
# floor).

# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | full
data_root = ""  # empty: the synthetic benchmark of the profile; else a UP-ISP style folder
device = "auto"
seed = 0
results_dir = ""  # empty: results/<profile>

# %%
import matplotlib.pyplot as plt
import pandas as pd

from uotisp_lib import config, reporting
from uotisp_lib.data import ensure_dataset
from uotisp_lib.matching import build_pair_graph, load_image_set, pair_quality

run = config.start_run(profile, data_root, device, seed, results_dir)
study = run.profile.match
root = ensure_dataset(run)
print(f"profile={run.profile.name} device={run.device} study={study}")

# %% [markdown]
# ## Every method
# `fgw` (entropic fused Gromov-Wasserstein), `ot` (entropic OT, log-domain Sinkhorn), `uot`
# (unbalanced Sinkhorn: outlier targets may keep little mass), `knn`, `random`. Collapse: the largest
# number of source images (patches) whose best target is the same one, and the entropy of target
# usage (1 = every target used equally).

# %%
rows, matches = [], {}
for method in study.methods:
    graph, diag = build_pair_graph(root, method, k=study.k_images, k_patch=study.k_patches, backend=study.backend,
                                   seed=run.seed, device=run.device)
    matches[method] = diag
    row = {
        "method": method,
        "image_max_in_degree": diag["image_level"]["max_in_degree"],
        "image_usage_entropy": diag["image_level"]["usage_entropy"],
        "patch_max_in_degree": diag["patch_level"]["max_in_degree"],
        "patch_usage_entropy": diag["patch_level"]["usage_entropy"],
        "seconds_match": diag["seconds_match"],
    }
    if run.synthetic:
        q = pair_quality(root, graph)
        row.update(pair_quality=q["quality"], random_floor=q["random_floor"], ratio_to_floor=q["ratio"])
    rows.append(row)
table = pd.DataFrame(rows).set_index("method")
backends = matches[study.methods[0]]["backends"]
reporting.write_table(table, run.results_dir, "matching_methods", metadata=config.run_metadata(run, study=study, backends=backends))
print("descriptor backends:", backends)
table

# %% [markdown]
# ## A source image and its top-3 targets, kNN against OT

# %%
src = load_image_set(root, "train", "raws")
tgt = load_image_set(root, "train", "jpegs")
methods_shown = [m for m in ("knn", "fgw") if m in matches]
i = 0
imgs, titles = [], []
for m in methods_shown:
    im = matches[m]["image_match"]
    imgs.append(src.stitched[i])
    titles.append(f"{m}: source {src.ids[i]} (pseudo-RGB)")
    for r, (j, w) in enumerate(zip(im.topk_idx[i][:3].tolist(), im.topk_w[i][:3].tolist())):
        imgs.append(tgt.stitched[j])
        titles.append(f"#{r + 1} {tgt.ids[j]} (w {w:.2f})")
    imgs += [src.stitched[i] * 0] * (4 - 1 - min(3, im.topk_idx.shape[1]))
    titles += [""] * (4 - 1 - min(3, im.topk_idx.shape[1]))
fig = reporting.image_grid(imgs, titles, ncols=4, size=3)
reporting.save_figure(fig, run.results_dir, "matching_topk")

# %% [markdown]
# ## Transport plans
# Image-level plans (rows: RAW images, columns: target images). kNN puts all of a row's mass on one
# column; OT spreads each row so that every column receives its share.

# %%
shown = [m for m in ("knn", "ot", "fgw", "uot") if m in matches]
fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.4), squeeze=False)
for ax, m in zip(axes[0], shown):
    plan = matches[m]["image_match"].plan
    ax.imshow(plan / plan.max(), cmap="viridis", aspect="auto")
    ax.set_title(m)
    ax.set_xlabel("target image")
    ax.set_ylabel("source image")
fig.tight_layout()
reporting.save_figure(fig, run.results_dir, "transport_plans")
