"""Figure helpers: colour bars with labels, axis labels, histogram and bar values equal to the data."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch

from uotisp_lib import plots


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_scalar_image_has_a_labelled_colorbar_on_the_data_range():
    fig, ax = plt.subplots()
    img = torch.tensor([[0.0, 512.0], [1023.0, 3.0]])
    cbar = plots.scalar_image(ax, img[None], "RAW code (DN)", title="R")
    assert plots.colorbar_labels(fig) == ["RAW code (DN)"]
    assert cbar.mappable.get_clim() == (0.0, 1023.0)  # not clipped to [0, 1]
    np.testing.assert_array_equal(ax.images[0].get_array(), img.numpy())
    assert ax.get_xticks().size == 0  # a picture: no ticks
    fig2, ax2 = plt.subplots()
    plots.scalar_image(ax2, np.eye(3), "mass", xlabel="target image", ylabel="source image")
    assert (ax2.get_xlabel(), ax2.get_ylabel()) == ("target image", "source image")
    with pytest.raises(ValueError, match="one value per pixel"):
        plots.scalar_image(ax2, np.zeros((2, 2, 3)), "x")


def test_scalar_grid_shares_one_scale_and_every_panel_has_a_colorbar():
    a, b = np.zeros((4, 4)), np.full((4, 4), 2.0)
    b[0, 0] = 5.0
    fig = plots.scalar_grid([a, b, a], ["a", "b", "c"], "TV (sum |grad|)", ncols=2)
    assert plots.colorbar_labels(fig) == ["TV (sum |grad|)"] * 3
    assert {im.get_clim() for ax in fig.axes for im in ax.images} == {(0.0, 5.0)}
    a[1, 1] = 1.0
    fig = plots.scalar_grid([a, b], ["a", "b"], "x", shared=False)
    assert [im.get_clim() for ax in fig.axes for im in ax.images] == [(0.0, 1.0), (2.0, 5.0)]


def test_channel_histograms_are_fractions_of_the_pixels():
    img = torch.zeros(3, 2, 2)
    img[0] = 1.0  # red all at the top bin
    img[1, 0, 0] = 0.3  # green: 3 pixels at 0, 1 at 0.3
    h = plots.channel_histograms(img, bins=10)
    assert h.shape == (3, 10)
    np.testing.assert_allclose(h.sum(1), 1.0)
    assert h[0, 9] == 1.0 and h[1, 0] == 0.75 and h[1, 3] == 0.25 and h[2, 0] == 1.0


def test_colour_histograms_plot_the_histograms_with_labelled_axes():
    rng = np.random.default_rng(0)
    out, gt = rng.random((8, 8, 3)), rng.random((8, 8, 3)) ** 2
    fig = plots.colour_histograms({"ground truth": gt, "OT": out}, target="ground truth", bins=8)
    axes = fig.axes
    assert [ax.get_xlabel() for ax in axes] == [plots.SRGB_UNIT] * 3
    assert axes[0].get_ylabel() == "pixels per bin (%)"
    line = axes[1].get_lines()[0]  # the green histogram of "OT"
    np.testing.assert_allclose(line.get_ydata(), 100 * plots.channel_histograms(out, 8)[1])
    assert [t.get_text() for t in axes[-1].get_legend().get_texts()] == ["ground truth", "OT"]
    with pytest.raises(KeyError, match="target 'gt'"):
        plots.colour_histograms({"OT": out}, target="gt")


def test_de2000_maps_are_zero_for_the_target_and_titled_with_the_mean():
    from uotisp_lib.metrics import delta_e2000

    gt = torch.rand(3, 12, 12, generator=torch.Generator().manual_seed(0))
    off = (gt + 0.1).clamp(0, 1)
    fig = plots.de2000_maps({"perfect": gt, "offset": off}, gt)
    assert plots.colorbar_labels(fig) == [plots.DE2000_UNIT] * 2
    maps = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert float(np.abs(maps[0]).max()) == 0.0 and float(maps[1].mean()) > 1.0
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["perfect: mean 0.00", f"offset: mean {float(delta_e2000(off[None], gt[None])):.2f}"]


def test_bar_chart_heights_and_error_bars_are_the_tables_values():
    df = pd.DataFrame({"variant": ["a", "b", "c"], "psnr": [20.0, 21.5, 19.0], "psnr_se": [0.5, np.nan, 0.25]})
    fig = plots.bar_chart(df, "psnr", label="variant", se="psnr_se", ylabel="PSNR (dB)")
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == [20.0, 21.5, 19.0]
    assert ax.get_ylabel() == "PSNR (dB)" and [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    (bars,) = [c for c in ax.containers if getattr(c, "errorbar", None) is not None]
    segs = bars.errorbar.lines[2][0].get_segments()
    np.testing.assert_allclose([s[1, 1] - s[0, 1] for s in segs], [1.0, 0.0, 0.5])  # 2 x SE, NaN -> none
    plain = plots.bar_chart(df, "psnr", label="variant", ylabel="PSNR (dB)")
    assert all(getattr(c, "errorbar", None) is None for c in plain.axes[0].containers)


def test_image_and_maps_mixes_pictures_and_labelled_maps():
    fig = plots.image_and_maps([("photo", torch.rand(3, 8, 8), None), ("TV", torch.rand(8, 8), "TV (sum |grad|)")])
    assert plots.colorbar_labels(fig) == ["TV (sum |grad|)"]
    assert fig.axes[0].get_title() == "photo" and not fig.axes[0].axison
