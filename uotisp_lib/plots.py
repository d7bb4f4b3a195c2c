"""Figures a reader of the papers expects: scalar maps with colour bars, colour histograms of outputs
against targets, dE2000 error maps, bar charts with standard-error bars.

Every scalar (one value per pixel) image gets a colour bar whose label names the quantity and its
unit; sRGB images are shown as photographs (no colour bar: the colours are the values). Every
function returns the matplotlib figure; notebooks save it with :func:`uotisp_lib.reporting.save_figure`.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from uotisp_lib.reporting import to_display

#: the label of sRGB values on an axis
SRGB_UNIT = "sRGB value (0-1)"
DE2000_UNIT = "ΔE2000 (CIEDE2000 units)"


def _np(img: Any) -> np.ndarray:
    import torch

    if isinstance(img, torch.Tensor):
        img = img.detach().float().cpu()
        if img.ndim == 3:
            img = img.permute(1, 2, 0)
        img = img.numpy()
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    return img


def scalar_image(
    ax,
    img: Any,
    label: str,
    *,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    **imshow: Any,
):
    """Show a scalar map (``[H,W]``, ``[1,H,W]`` tensor or array, not clipped) on ``ax`` with a colour
    bar labelled ``label`` (the quantity and its unit). Without axis labels the axes are hidden
    (a picture); with them, ticks stay (a matrix). Returns the colour bar."""
    a = _np(img)
    if a.ndim != 2:
        raise ValueError(f"scalar_image: expected one value per pixel, got shape {a.shape}")
    im = ax.imshow(a, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest", **imshow)
    cbar = ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label(label, fontsize=8)
    if title:
        ax.set_title(title, fontsize=9)
    if xlabel or ylabel:
        ax.set_xlabel(xlabel or "")
        ax.set_ylabel(ylabel or "")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    return cbar


def scalar_grid(
    images: Sequence[Any],
    titles: Sequence[str],
    label: str,
    *,
    ncols: int = 4,
    size: float = 3.0,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    shared: bool = True,
):
    """Scalar maps in a grid, each with a colour bar labelled ``label``; ``shared`` puts them all on
    one colour scale (``vmin``/``vmax`` default to the min / max over all maps)."""
    if not images:
        raise ValueError("scalar_grid needs at least one image")
    import matplotlib.pyplot as plt

    arrays = [_np(i) for i in images]
    if shared:
        vmin = float(min(a.min() for a in arrays)) if vmin is None else vmin
        vmax = float(max(a.max() for a in arrays)) if vmax is None else vmax
    n = len(arrays)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols * 1.2, size * nrows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        if k < n:
            scalar_image(ax, arrays[k], label, cmap=cmap, vmin=vmin, vmax=vmax, title=titles[k])
        else:
            ax.axis("off")
    fig.tight_layout()
    return fig


def channel_histograms(img: Any, bins: int = 32) -> np.ndarray:
    """Per-channel histograms of an sRGB image (``[3,H,W]`` tensor or ``HxWx3`` array, values in
    [0,1], clipped) as fractions of the pixels: ``[3, bins]``, each row summing to 1."""
    a = _np(img)
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"channel_histograms: expected an RGB image, got shape {a.shape}")
    a = np.clip(a, 0.0, 1.0)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.stack([np.histogram(a[..., c], bins=edges)[0] / a[..., c].size for c in range(3)])


def colour_histograms(images: Mapping[str, Any], target: str, *, bins: int = 32, size: float = 3.4):
    """One panel per sRGB channel: the histogram of every image in ``images`` (name -> image), the
    ``target`` entry filled grey and the others as lines. y: percent of the pixels per bin."""
    import matplotlib.pyplot as plt

    if target not in images:
        raise KeyError(f"colour_histograms: target {target!r} is not one of {list(images)}")
    hists = {name: channel_histograms(img, bins) for name, img in images.items()}
    centres = (np.arange(bins) + 0.5) / bins
    fig, axes = plt.subplots(1, 3, figsize=(3 * size, size * 0.8), sharey=True)
    for c, (ax, channel) in enumerate(zip(axes, ("red", "green", "blue"))):
        ax.fill_between(centres, 100 * hists[target][c], step="mid", color="0.7", label=target)
        for name, h in hists.items():
            if name != target:
                ax.step(centres, 100 * h[c], where="mid", label=name, linewidth=1.2)
        ax.set_title(f"{channel} channel", fontsize=9)
        ax.set_xlabel(SRGB_UNIT)
        ax.set_xlim(0, 1)
    axes[0].set_ylabel("pixels per bin (%)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def de2000_maps(outputs: Mapping[str, Any], target: Any, *, ncols: int = 4, size: float = 3.0, vmax: float | None = None):
    """Per-pixel CIEDE2000 of every output (name -> ``[3,H,W]`` sRGB) against ``target``, on one
    colour scale (``vmax``: the 99th percentile over all maps by default), titled with the mean."""
    import torch

    from uotisp_lib.metrics import delta_e2000_map

    tgt = torch.as_tensor(target, dtype=torch.float32)[None]
    maps = {name: delta_e2000_map(torch.as_tensor(o, dtype=torch.float32)[None], tgt)[0] for name, o in outputs.items()}
    if vmax is None:
        vmax = float(np.percentile(np.concatenate([m.numpy().ravel() for m in maps.values()]), 99))
    titles = [f"{name}: mean {float(m.mean()):.2f}" for name, m in maps.items()]
    return scalar_grid(list(maps.values()), titles, DE2000_UNIT, ncols=ncols, size=size, cmap="magma",
                       vmin=0.0, vmax=max(vmax, 1e-6))


def bar_chart(
    df: pd.DataFrame,
    value: str,
    *,
    label: str | Sequence[str],
    se: str | None = None,
    ylabel: str,
    ax=None,
    title: str | None = None,
):
    """A bar per row of ``df`` with height ``df[value]`` and, with ``se``, an error bar of one
    standard error (``df[se]``; NaN draws none). Bars are named by the ``label`` column(s)."""
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.7 * len(df) + 1.5), 3.4))
    cols = [label] if isinstance(label, str) else list(label)
    names = df[cols].astype(str).agg(" / ".join, axis=1).tolist()
    heights = pd.to_numeric(df[value], errors="coerce").to_numpy(dtype=float)
    yerr = None
    if se is not None:
        yerr = np.nan_to_num(pd.to_numeric(df[se], errors="coerce").to_numpy(dtype=float), nan=0.0)
    x = np.arange(len(df))
    ax.bar(x, heights, yerr=yerr, capsize=4 if yerr is not None else 0, color="tab:blue", alpha=0.8,
           error_kw={"elinewidth": 1.2})
    ax.set_xticks(x, names, fontsize=7, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=9)
    ax.figure.tight_layout()
    return ax.figure


def image_and_maps(images: Sequence[tuple[str, Any, str | None]], *, size: float = 3.2):
    """A row of panels: each ``(title, image, label)`` is an sRGB picture when ``label`` is None,
    else a scalar map with a colour bar labelled ``label``."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images) * 1.1, size), squeeze=False)
    for ax, (title, img, label) in zip(axes[0], images):
        if label is None:
            ax.imshow(to_display(img))
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        else:
            scalar_image(ax, img, label, title=title)
    fig.tight_layout()
    return fig


def colorbar_labels(fig) -> list[str]:
    """The labels of the colour bars of a figure (for tests and checks)."""
    return [ax.get_ylabel() or ax.get_xlabel() for ax in fig.axes if hasattr(ax, "_colorbar")]
