"""Tests of uotisp_lib.stats: YUV, soft histograms, moments, Gram matrices."""

from __future__ import annotations

import math

import pytest
import torch

from uotisp_lib import stats


def _const(rgb: tuple[float, float, float], b: int = 1, h: int = 4, w: int = 5, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(rgb, dtype=dtype).view(1, 3, 1, 1).expand(b, 3, h, w).contiguous()


# --- rgb_to_yuv -----------------------------------------------------------------------------------


def test_yuv_known_values():
    yuv = stats.rgb_to_yuv(_const((0.4, 0.4, 0.4)))
    assert torch.allclose(yuv[:, 0], torch.full_like(yuv[:, 0], 0.4), atol=1e-6)
    assert torch.allclose(yuv[:, 1:], torch.full_like(yuv[:, 1:], 0.5), atol=1e-6)
    red = stats.rgb_to_yuv(_const((1.0, 0.0, 0.0)))[0, :, 0, 0]
    # BT.601: Y = 0.299, U = -0.147 + 0.5, V = 0.615 + 0.5
    assert torch.allclose(red, torch.tensor([0.299, 0.353, 1.115]), atol=1e-3)


def test_yuv_errors():
    with pytest.raises(ValueError, match=r"rgb_to_yuv: expected a tensor of shape \[B,3,H,W\]"):
        stats.rgb_to_yuv(torch.rand(1, 4, 2, 2))
    with pytest.raises(TypeError, match="floating"):
        stats.rgb_to_yuv(torch.ones(1, 3, 2, 2, dtype=torch.uint8))


# --- histograms -----------------------------------------------------------------------------------


def test_hist_shapes_and_sums():
    x = torch.rand(3, 3, 8, 6, generator=torch.Generator().manual_seed(0))
    hy, huv = stats.soft_histogram_y(x), stats.soft_histogram_uv(x)
    assert hy.shape == (3, 64) and huv.shape == (3, 32 * 32)
    assert torch.allclose(hy.sum(1), torch.ones(3), atol=1e-5)
    assert torch.allclose(huv.sum(1), torch.ones(3), atol=1e-5)
    assert (hy >= 0).all() and (huv >= 0).all()


def test_hist_y_constant_peaks_at_right_bin():
    # Y = 0.4 -> bin floor(0.4*64) = 25 (centre 0.3984); symmetric neighbours about 0.4
    h = stats.soft_histogram_y(_const((0.4, 0.4, 0.4)))[0]
    assert int(h.argmax()) == 25
    # exactly on a centre: Y = 10.5/64 -> bin 10, neighbours 9 and 11 equal
    v = 10.5 / 64
    h = stats.soft_histogram_y(_const((v, v, v), dtype=torch.float64))[0]
    assert int(h.argmax()) == 10
    assert torch.isclose(h[9], h[11])
    # Gaussian ratio between the peak and the next bin: exp(-0.5 * (1/64 / 0.02)^2)
    ratio = torch.exp(torch.tensor(-0.5 * (1 / 64 / 0.02) ** 2, dtype=torch.float64))
    assert torch.isclose(h[11] / h[10], ratio, rtol=1e-6)


def test_hist_uv_gray_is_at_centre():
    h = stats.soft_histogram_uv(_const((0.3, 0.3, 0.3)), bins=32).view(32, 32)
    iu, iv = divmod(int(h.argmax()), 32)
    # 0.5 is the border between bins 15 and 16: the four central bins share the peak
    assert {iu, iv} <= {15, 16}
    centre = h[15:17, 15:17]
    assert torch.allclose(centre, centre[0, 0].expand(2, 2), rtol=1e-4)
    assert centre.sum() > 0.4


def test_hist_uv_separates_colours():
    red, blue = stats.soft_histogram_uv(_const((1, 0, 0))), stats.soft_histogram_uv(_const((0, 0, 1)))
    iu_r, iv_r = divmod(int(red.argmax()), 32)
    iu_b, iv_b = divmod(int(blue.argmax()), 32)
    assert iv_r > iv_b  # red has high V
    assert iu_b > iu_r  # blue has high U


def test_hist_errors():
    with pytest.raises(ValueError, match="bins must be a positive integer"):
        stats.soft_histogram_y(torch.rand(1, 3, 2, 2), bins=0)
    with pytest.raises(ValueError, match="sigma must be > 0"):
        stats.soft_histogram_uv(torch.rand(1, 3, 2, 2), sigma=0.0)
    with pytest.raises(ValueError, match=r"soft_histogram_uv: expected a tensor of shape \[B,3,H,W\], got \(3, 2, 2\)"):
        stats.soft_histogram_uv(torch.rand(3, 2, 2))
    with pytest.raises(ValueError, match="non-empty"):
        stats.soft_histogram_y(torch.rand(1, 3, 0, 2))


def test_hist_gradcheck():
    x = torch.rand(1, 3, 2, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: stats.soft_histogram_y(t, bins=8, sigma=0.1), (x,))
    assert torch.autograd.gradcheck(lambda t: stats.soft_histogram_uv(t, bins=4, sigma=0.2), (x,))


# --- moments and Gram -----------------------------------------------------------------------------


def test_channel_moments_known():
    x = torch.zeros(1, 3, 2, 2)
    x[0, 0] = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    x[0, 1] = 0.25
    mean, std = stats.channel_moments(x)
    assert torch.allclose(mean, torch.tensor([[0.5, 0.25, 0.0]]))
    assert torch.allclose(std, torch.tensor([[0.5, 0.0, 0.0]]), atol=1e-4)
    xg = torch.rand(2, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: torch.cat(stats.channel_moments(t), 1), (xg,))
    # flat image: gradient finite
    flat = torch.full((1, 3, 2, 2), 0.3, requires_grad=True)
    stats.channel_moments(flat)[1].sum().backward()
    assert torch.isfinite(flat.grad).all()


def test_gram_known_and_upper():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)  # C=2, H=1, W=2
    g = stats.gram_matrix(f)
    expect = torch.tensor([[1 + 4, 3 + 8], [3 + 8, 9 + 16]]) / 4.0
    assert torch.allclose(g[0], expect)
    assert torch.allclose(stats.gram_upper(g)[0], torch.tensor([5.0, 11.0, 25.0]) / 4)
    g3 = stats.gram_matrix(torch.rand(2, 5, 3, 3))
    assert stats.gram_upper(g3).shape == (2, 15)
    assert torch.allclose(g3, g3.transpose(1, 2))
    fg = torch.rand(1, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: stats.gram_upper(stats.gram_matrix(t)), (fg,))
    with pytest.raises(ValueError, match=r"gram_upper: expected square matrices \[B,C,C\]"):
        stats.gram_upper(torch.rand(1, 2, 3))
    with pytest.raises(ValueError, match=r"gram_matrix: expected a tensor of shape \[B,C,H,W\]"):
        stats.gram_matrix(torch.rand(2, 3))


def test_blocked_histograms_equal_the_direct_ones():
    """Without gradients, images larger than HIST_BLOCK pixels take the blocked in-place path
    (clamped exponent): same histograms as the direct path within float32 round-off."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 150, 131, generator=g)  # 19,650 pixels: one full block and a partial one
    x[1, :, :40] = torch.tensor([0.9, 0.05, 0.1]).view(3, 1, 1)  # far from most bins: underflowing weights
    assert x.shape[2] * x.shape[3] > stats.HIST_BLOCK
    xg = x.clone().requires_grad_(True)
    with torch.no_grad():
        hy, huv = stats.soft_histogram_y(x), stats.soft_histogram_uv(x)
    ry, ruv = stats.soft_histogram_y(xg), stats.soft_histogram_uv(xg)  # the direct (differentiable) path
    assert ry.requires_grad and not hy.requires_grad
    assert torch.allclose(hy, ry.detach(), rtol=1e-5, atol=1e-9)
    assert torch.allclose(huv, ruv.detach(), rtol=1e-5, atol=1e-9)
    assert torch.allclose(hy.sum(1), torch.ones(2)) and torch.allclose(huv.sum(1), torch.ones(2))


def _unfloored_uv(rgb: torch.Tensor, bins: int = 32, sigma: float = 0.03) -> torch.Tensor:
    """The joint U-V histogram written out without the exponent floor (float64 reference)."""
    yuv = stats.rgb_to_yuv(rgb)
    c = stats.bin_centres(bins, yuv)
    ku = torch.exp(-0.5 * ((yuv[:, 1].flatten(1).unsqueeze(-1) - c) / sigma) ** 2)
    kv = torch.exp(-0.5 * ((yuv[:, 2].flatten(1).unsqueeze(-1) - c) / sigma) ** 2)
    j = torch.einsum("bpi,bpj->bij", ku, kv).flatten(1)
    return j / j.sum(1, keepdim=True)


def test_kernel_floor_keeps_products_normal_and_histograms_unchanged():
    """Weights are floored at exp(LOG_FLOOR), so the product of two (the U-V matmul) is a normal
    float32, never a subnormal (the slow path on Intel cores); histograms and their gradients stay
    those of the unfloored formula (float64) within 1e-12."""
    w = stats._kernel(torch.tensor([[0.0, 1.0]]), 32, 0.03)  # far from most of the 32 centres
    assert float(w.min()) == pytest.approx(math.exp(stats.LOG_FLOOR), rel=1e-6)
    assert float(w.min()) ** 2 >= torch.finfo(torch.float32).tiny
    assert float(w.max()) == pytest.approx(math.exp(-0.5 * (0.5 / 32 / 0.03) ** 2), rel=1e-6)  # bin 0 at 1/64
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 9, 7, dtype=torch.float64, generator=g)
    x[1, :, :4] = torch.tensor([0.95, 0.0, 0.05], dtype=torch.float64).view(3, 1, 1)  # saturated red
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    got, ref = stats.soft_histogram_uv(xa), _unfloored_uv(xb)
    assert torch.allclose(got, ref, rtol=0, atol=1e-12)
    wts = torch.rand(got.shape, dtype=torch.float64, generator=g)
    (got * wts).sum().backward()
    (ref * wts).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, rtol=1e-9, atol=1e-12)
