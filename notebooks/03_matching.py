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
#
# **The objectives.** With descriptors $x_i$ (N source images) and $y_j$ (M target images), uniform
# marginals $a = \mathbf 1/N$, $b = \mathbf 1/M$, the feature cost $C_{ij} = \lVert x_i - y_j \rVert^2$ and
# the intra-domain distances $D^X_{ik} = \lVert x_i - x_k \rVert^2$, $D^Y_{jl} = \lVert y_j - y_l \rVert^2$
# (each divided by its mean), entropic OT solves
#
# $$P^{\text{ot}} = \arg\min_{P \in \Pi(a, b)} \sum_{ij} C_{ij} P_{ij} - \varepsilon H(P), \qquad
#   H(P) = -\sum_{ij} P_{ij} (\log P_{ij} - 1),$$
#
# fused Gromov-Wasserstein adds the mismatch of the two sets' internal geometry,
#
# $$P^{\text{fgw}} = \arg\min_{P \in \Pi(a, b)} (1 - \alpha) \sum_{ij} C_{ij} P_{ij}
#   + \alpha \sum_{ijkl} \big(D^X_{ik} - D^Y_{jl}\big)^2 P_{ij} P_{kl} - \varepsilon H(P)
#   \qquad (\alpha = 0.5,\ \varepsilon = 0.05),$$
#
# and unbalanced OT replaces the hard marginals by KL penalties, so a target (an outlier look) may
# receive less mass than $1/M$:
#
# $$P^{\text{uot}} = \arg\min_{P \ge 0} \sum_{ij} C_{ij} P_{ij} - \varepsilon H(P)
#   + \rho\, \mathrm{KL}(P \mathbf 1 \,\|\, a) + \rho\, \mathrm{KL}(P^\top \mathbf 1 \,\|\, b).$$
#
# At patch level a source patch $s$ of image $I_s$ keeps the targets $t$ of its image's top-k target
# images with weight $w_{st} \propto P^{\text{patch}}_{st}\, P^{\text{image}}_{I_s I_t}$ (top 8, renormalised).
#
# **Papers** (restated in `docs/references.md`): Semantic Pseudo-Pairing, arXiv 2605.07495;
# Oquab et al., *DINOv2*, arXiv 2304.07193; Vayer et al., *Optimal Transport for structured data with
# application on graphs* (fused Gromov-Wasserstein), arXiv 1805.09114; Cuturi, *Sinkhorn
# Distances*, arXiv 1306.0895; Chizat et al., *Scaling algorithms for unbalanced optimal transport
# problems*, arXiv 1607.05816.

# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | full
data_root = ""  # empty: the synthetic benchmark of the profile; else a UP-ISP style folder
device = "auto"
seed = 0
results_dir = ""  # empty: results/<profile>

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown
from tqdm.auto import tqdm

from uotisp_lib import config, plots, reporting
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
if not run.synthetic:
    print(f"skipped pair_quality: {root} is not our synthetic benchmark, so the true scene of each image is unknown")
rows, matches = [], {}
for method in tqdm(study.methods, desc="methods"):
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
note = reporting.backends_note(backends)
reporting.write_table(table, run.results_dir, "matching_methods", note=note,
                      metadata=config.run_metadata(run, study=study, backends=backends))
table

# %% [markdown]
# What the table says (generated from its numbers; random pairing is the reference row), and which
# descriptor and Gram backends produced it:

# %%
quality = {"pair_quality": "lower", "ratio_to_floor": "lower"} if run.synthetic else {}
Markdown(note + "\n\n" + reporting.discuss_table(
    table, {"image_max_in_degree": "lower", "image_usage_entropy": "higher", "patch_max_in_degree": "lower",
            "patch_usage_entropy": "higher", **quality}, baseline="random"
))

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
reporting.save_figure(fig, run.results_dir, "matching_topk");

# %% [markdown]
# ## Transport plans
# Image-level plans (rows: RAW images, columns: target images). kNN puts all of a row's mass on one
# column; OT spreads each row so that every column receives its share.

# %%
shown = [m for m in ("knn", "ot", "fgw", "uot") if m in matches]
fig, axes = plt.subplots(1, len(shown), figsize=(4 * len(shown), 3.4), squeeze=False)
for ax, m in zip(axes[0], shown):
    plan = matches[m]["image_match"].plan
    plots.scalar_image(ax, plan / plan.sum(), "transport mass (fraction of total)", title=m,
                       xlabel="target image (index)", ylabel="source image (index)", aspect="auto")
fig.tight_layout()
reporting.save_figure(fig, run.results_dir, "transport_plans");
