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
# # 02 · Stitching: recovering the grid of each image
#
# UP-ISP ships patches named `<imageid>_<idx>`, with `idx` the 0-based row-major position in the
# parent image, but not the grid. Matching works on whole images (notebook 03), so the grid
# `rows x cols` with `rows * cols = N` must be recovered. The Borelli supplement scores every
# candidate grid by *seam consistency*: the mean absolute difference across the `b = 4` px strips on
# both sides of every seam, averaged over all seams (`method="mean"`). A single row (`1 x N`) has
# only horizontal seams, most of them right, so one wrong wrap-around seam barely moves the mean: it
# picks `1 x 14` for a true `2 x 7`. Our default (`method="evidence"`, see `uotisp_lib.stitching`)
# normalises each seam's jump by the pixel steps inside the patches beside it and scores each grid
# by how well it explains *every* candidate seam of every factor pair.
#
# **Borelli's mean score.** On a score map $M$ (RAW: $(G_r + G_b)/2$, RGB: the channel mean), with
# patches $h \times w$ and border $b$, a horizontal seam between patches $p$ (left) and $q$ (right)
# costs
#
# $$s_{pq} = \frac{1}{h\,b} \sum_{y=1}^{h} \sum_{j=0}^{b-1} \big| M_p[y,\ w - b + j] - M_q[y,\ j] \big|,
#   \qquad S_{\text{mean}}(R, C) = \frac{1}{R(C-1) + (R-1)C} \sum_{\text{seams of } (R, C)} s_{pq},$$
#
# vertical seams likewise; the grid with the lowest $S$ wins, with confidence $(S_2 - S_1)/S_2$.
#
# **Our evidence score.** Each candidate seam gets a ratio of the 1-pixel step across it to the
# 1-pixel steps inside the strips beside it ($a_k$: the last $b$ columns of $p$, $c_k$: the first $b$
# of $q$), turned into a soft test:
#
# $$r = \frac{\overline{|a_{b-1} - c_0|} + \epsilon}{\tfrac12\big(\overline{|a_{k+1} - a_k|} + \overline{|c_{k+1} - c_k|}\big) + \epsilon},
#   \qquad t = \kappa\,(\log r - \log \tau) \quad (\tau = 2,\ \kappa = 2,\ \epsilon = 2\cdot10^{-3}).$$
#
# Over the union $U$ of the seams claimed by any factor pair, a grid is scored by the logistic loss
# of its labelling (claimed: adjacent, $t < 0$; not claimed: not adjacent, $t > 0$):
#
# $$S_{\text{evidence}}(R, C) = \frac{1}{|U|} \sum_{s \in U}
#   \begin{cases} \operatorname{softplus}(t_s) & s \text{ claimed by } (R, C) \\ \operatorname{softplus}(-t_s) & \text{otherwise.} \end{cases}$$
#
# **Papers** (restated in `docs/references.md`): Semantic Pseudo-Pairing, NTIRE 2026 unpaired ISP
# challenge, arXiv 2605.07495 (the supplement's stitching score and the UP-ISP file naming).
#
# Below: the grid choice on the benchmark's own images, a sweep over every layout the challenge
# uses (6x7, 7x6, 5x7, 7x5, 2x7, 7x2) plus others, stitched images, the score landscape of one
# image, and the least confident cases.

# %% tags=["parameters"]
profile = "smoke"  # smoke | cpu | full
data_root = ""  # empty: the synthetic benchmark of the profile; else a UP-ISP style folder
device = "auto"
seed = 0
results_dir = ""  # empty: results/<profile>

# %%
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown

from uotisp_lib import config, plots, reporting
from uotisp_lib.data import ensure_dataset
from uotisp_lib.data.layouts import scan_upisp
from uotisp_lib.data.synth import grid_cases, read_meta
from uotisp_lib.preprocessing import PreprocessConfig, Preprocessor
from uotisp_lib.stitching import DEFAULT_MIN_CONFIDENCE, evaluate_grid_choice, infer_grid, seam_scores, stitch

run = config.start_run(profile, data_root, device, seed, results_dir)
study = run.profile.stitch
root = ensure_dataset(run)
layout = scan_upisp(root)
meta = read_meta(root) if run.synthetic else None
true_grid = {m["id"]: tuple(m["layout"]) for m in meta["images"]} if meta else {}
print(f"profile={run.profile.name} data={root} study={study}")

# %% [markdown]
# ## On the benchmark's images
# Every RAW image (packed, score map `(Gr + Gb) / 2`) and every target JPEG image (RGB mean) of the
# dataset. On the synthetic benchmark the true grid is in `meta.json`; on real data only the
# choice and its confidence can be reported.

# %%
def dataset_cases(split: str, kind: str) -> list:
    attr = "raw" if kind == "raws" else "rgb"
    cases = []
    for image_id in layout.images(split, kind):
        rows, cols = true_grid.get(image_id, (0, 0))
        cases.append(SimpleNamespace(image_id=image_id, rows=rows, cols=cols, **{attr: layout.read_patches(split, kind, image_id)}))
    return cases


records = []
for split in layout.splits:
    for kind in ("raws", "jpegs"):
        if kind not in layout.files[split]:
            continue
        res = evaluate_grid_choice(dataset_cases(split, kind), kinds=("raw" if kind == "raws" else "rgb",))
        for r in res:
            r["split"] = split
        records += res
per_image = pd.DataFrame(records)
bench = (
    per_image.groupby(["split", "kind", "method"])
    .agg(images=("image_id", "count"), correct=("correct", "mean"), min_confidence=("confidence", "min"), low_confidence=("low_confidence", "sum"))
    .reset_index()
)
if not run.synthetic:
    bench = bench.drop(columns="correct")  # no ground-truth grid on real data
    print(f"skipped the column 'correct': {root} is not our synthetic benchmark, so the true grids are unknown")
reporting.write_table(bench, run.results_dir, "stitching_benchmark", metadata=config.run_metadata(run))
bench

# %% [markdown]
# What the table says (generated from its numbers):

# %%
Markdown(reporting.discuss_table(
    bench, {c: "higher" for c in ("correct", "min_confidence") if c in bench}, label=["split", "kind", "method"]
))

# %% [markdown]
# ## Every layout
# `study.images_per_layout` scenes per layout rendered by the camera model (RAW with noise) and in
# the target look (sRGB), patches of `study.patch` px (RAW) / twice that (sRGB).

# %%
cases = grid_cases(study.layouts, study.images_per_layout, study.patch, run.seed)
sweep = pd.DataFrame(evaluate_grid_choice(cases, border=study.border, progress=True))
accuracy = (
    sweep.groupby(["layout", "kind", "method"])
    .agg(images=("image_id", "count"), correct=("correct", "mean"), min_confidence=("confidence", "min"), median_confidence=("confidence", "median"))
    .unstack("method")
)
accuracy.columns = [f"{a}_{m}" for a, m in accuracy.columns]
accuracy = accuracy.drop(columns="images_mean").rename(columns={"images_evidence": "images"}).reset_index()
reporting.write_table(
    accuracy,
    run.results_dir,
    "stitching_accuracy",
    metadata=config.run_metadata(run, min_confidence_threshold=DEFAULT_MIN_CONFIDENCE),
)
accuracy

# %% [markdown]
# What the table says (generated from its numbers), after the accuracy of each ranking over all
# layouts:

# %%
overall = sweep.groupby("method")["correct"].mean().rename("correct over all layouts").to_frame()
Markdown(
    reporting.table_markdown(overall) + "\n"
    + reporting.discuss_table(accuracy, dict.fromkeys(("correct_evidence", "correct_mean", "min_confidence_evidence",
                                                       "min_confidence_mean"), "higher"), label=["layout", "kind"])
)

# %% [markdown]
# ## Stitched images
# A RAW image (rendered naively: gray-world white balance, Malvar, gamma) and a target JPEG image,
# each stitched with the grid chosen above.

# %%
def stitched(split: str, kind: str, image_id: str):
    patches = layout.read_patches(split, kind, image_id)
    g = infer_grid(patches, kind="raw" if kind == "raws" else "rgb")
    img = stitch(patches, g.rows, g.cols)
    if kind == "raws":
        img = Preprocessor(PreprocessConfig(wb="gray_world"))(img[None])[0]
    return img, g


raw_id = next(iter(layout.images("train", "raws")))
jpg_id = next(iter(layout.images("train", "jpegs"))) if "jpegs" in layout.files["train"] else None
shown = [(raw_id, "raws")] + ([(jpg_id, "jpegs")] if jpg_id else [])
imgs, titles = [], []
for image_id, kind in shown:
    img, g = stitched("train", kind, image_id)
    imgs.append(img)
    titles.append(f"{image_id} ({kind}): {g.rows}x{g.cols}, confidence {g.confidence:.2f}")
fig = reporting.image_grid(imgs, titles, ncols=2, size=5)
reporting.save_figure(fig, run.results_dir, "stitched_images");

# %% [markdown]
# ## The score landscape of one image
# All factor pairs of a 2x7 image (N = 14), under both rankings (lower is better). The Borelli mean
# barely separates `1 x 14` from `2 x 7`; the evidence score does.

# %%
case = next(c for c in cases if (c.rows, c.cols) == (2, 7)) if any((c.rows, c.cols) == (2, 7) for c in cases) else cases[0]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for ax, method in zip(axes, ("mean", "evidence")):
    scores = seam_scores(case.raw, kind="raw", border=study.border, method=method)
    labels = [f"{r}x{c}" for r, c in scores]
    colors = ["tab:green" if (r, c) == (case.rows, case.cols) else "tab:gray" for r, c in scores]
    ax.bar(labels, list(scores.values()), color=colors)
    ax.set_title(f"{method}: true grid {case.rows}x{case.cols} in green")
    ax.set_xlabel("candidate grid (rows x columns of patches)")
    ax.set_ylabel("score (lower is better)")
fig.tight_layout()
reporting.save_figure(fig, run.results_dir, "seam_landscape");

# %% [markdown]
# ## The least confident choices
# The lowest-confidence choices of the evidence ranking in the sweep; anything under the threshold
# is flagged `low_confidence` (and the `uotisp stitch` CLI marks it in `layouts.csv`).

# %%
ev = sweep[sweep.method == "evidence"].sort_values("confidence").head(4)
low_imgs, low_titles = [], []
for _, r in ev.iterrows():
    c = next(c for c in cases if c.image_id == r.image_id)
    patches = c.raw if r.kind == "raw" else c.rgb
    rows, cols = map(int, r.chosen.split("x"))
    img = stitch(patches, rows, cols)
    img = Preprocessor(PreprocessConfig(wb="gray_world"))(img[None])[0] if r.kind == "raw" else img
    low_imgs.append(img)
    low_titles.append(f"{r.image_id} {r.kind}: true {r.layout}, chose {r.chosen}, conf {r.confidence:.2f}")
fig = reporting.image_grid(low_imgs, low_titles, ncols=4, size=3.5)
reporting.save_figure(fig, run.results_dir, "low_confidence")
ev
