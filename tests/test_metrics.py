"""Tests for uotisp_lib.metrics: known values, references (colour-science, scikit-image), edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from uotisp_lib import metrics

colour = pytest.importorskip("colour")
skmetrics = pytest.importorskip("skimage.metrics")

# Sharma, Wu, Dalal (2005), Table 1: L1 a1 b1 L2 a2 b2 dE00 (k_L = k_C = k_H = 1).
SHARMA_2005 = np.array(
    [
        [50.0000, 2.6772, -79.7751, 50.0000, 0.0000, -82.7485, 2.0425],
        [50.0000, 3.1571, -77.2803, 50.0000, 0.0000, -82.7485, 2.8615],
        [50.0000, 2.8361, -74.0200, 50.0000, 0.0000, -82.7485, 3.4412],
        [50.0000, -1.3802, -84.2814, 50.0000, 0.0000, -82.7485, 1.0000],
        [50.0000, -1.1848, -84.8006, 50.0000, 0.0000, -82.7485, 1.0000],
        [50.0000, -0.9009, -85.5211, 50.0000, 0.0000, -82.7485, 1.0000],
        [50.0000, 0.0000, 0.0000, 50.0000, -1.0000, 2.0000, 2.3669],
        [50.0000, -1.0000, 2.0000, 50.0000, 0.0000, 0.0000, 2.3669],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0009, 7.1792],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0010, 7.1792],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0011, 7.2195],
        [50.0000, 2.4900, -0.0010, 50.0000, -2.4900, 0.0012, 7.2195],
        [50.0000, -0.0010, 2.4900, 50.0000, 0.0009, -2.4900, 4.8045],
        [50.0000, -0.0010, 2.4900, 50.0000, 0.0010, -2.4900, 4.8045],
        [50.0000, -0.0010, 2.4900, 50.0000, 0.0011, -2.4900, 4.7461],
        [50.0000, 2.5000, 0.0000, 50.0000, 0.0000, -2.5000, 4.3065],
        [50.0000, 2.5000, 0.0000, 73.0000, 25.0000, -18.0000, 27.1492],
        [50.0000, 2.5000, 0.0000, 61.0000, -5.0000, 29.0000, 22.8977],
        [50.0000, 2.5000, 0.0000, 56.0000, -27.0000, -3.0000, 31.9030],
        [50.0000, 2.5000, 0.0000, 58.0000, 24.0000, 15.0000, 19.4535],
        [50.0000, 2.5000, 0.0000, 50.0000, 3.1736, 0.5854, 1.0000],
        [50.0000, 2.5000, 0.0000, 50.0000, 3.2972, 0.0000, 1.0000],
        [50.0000, 2.5000, 0.0000, 50.0000, 1.8634, 0.5757, 1.0000],
        [50.0000, 2.5000, 0.0000, 50.0000, 3.2592, 0.3350, 1.0000],
        [60.2574, -34.0099, 36.2677, 60.4626, -34.1751, 39.4387, 1.2644],
        [63.0109, -31.0961, -5.8663, 62.8187, -29.7946, -4.0864, 1.2630],
        [61.2901, 3.7196, -5.3901, 61.4292, 2.2480, -4.9620, 1.8731],
        [35.0831, -44.1164, 3.7933, 35.0232, -40.0716, 1.5901, 1.8645],
        [22.7233, 20.0904, -46.6940, 23.0331, 14.9730, -42.5619, 2.0373],
        [36.4612, 47.8580, 18.3852, 36.2715, 50.5065, 21.2231, 1.4146],
        [90.8027, -2.0831, 1.4410, 91.1528, -1.6435, 0.0447, 1.4441],
        [90.9257, -0.5406, -0.9208, 88.6381, -0.8985, -0.7239, 1.5381],
        [6.7747, -0.2908, -2.4247, 5.8714, -0.0985, -2.2286, 0.6377],
        [2.0776, 0.0795, -1.1350, 0.9033, -0.0636, -0.5514, 0.9082],
    ]
)


def _srgb_to_lab_colour(rgb: np.ndarray) -> np.ndarray:
    """colour-science reference: sRGB (D65) -> XYZ -> CIELAB (D65), on [..., 3] arrays."""
    d65 = colour.CCS_ILLUMINANTS["CIE 1931 2 Degree Standard Observer"]["D65"]
    return colour.XYZ_to_Lab(colour.sRGB_to_XYZ(rgb, illuminant=d65), illuminant=d65)


def _pair(b=2, c=3, h=16, w=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g, dtype=dtype)
    y = (x + 0.1 * torch.randn(b, c, h, w, generator=g, dtype=dtype)).clamp(0, 1)
    return x, y


# --------------------------------------------------------------------------- CIEDE2000 formula
def test_ciede2000_sharma_table_matches_published_values():
    data = torch.from_numpy(SHARMA_2005)
    de = metrics.ciede2000_lab(data[:, 0:3], data[:, 3:6])
    assert de.shape == (34,) and de.dtype == torch.float64
    torch.testing.assert_close(de, data[:, 6], atol=1e-4, rtol=0)  # the table is rounded to 4 decimals
    ref = colour.difference.delta_E_CIE2000(SHARMA_2005[:, 0:3], SHARMA_2005[:, 3:6])
    np.testing.assert_allclose(de.numpy(), ref, atol=1e-9, rtol=0)


def test_ciede2000_sharma_table_in_float32_and_symmetric():
    data = torch.from_numpy(SHARMA_2005).float()
    de12 = metrics.ciede2000_lab(data[:, 0:3], data[:, 3:6])
    de21 = metrics.ciede2000_lab(data[:, 3:6], data[:, 0:3])
    assert de12.dtype == torch.float32
    torch.testing.assert_close(de12, data[:, 6], atol=2e-4, rtol=0)
    torch.testing.assert_close(de12, de21, atol=1e-5, rtol=0)


def test_ciede2000_random_lab_pairs_match_colour_science_float64():
    rng = np.random.default_rng(1)
    n = 2000
    lab1 = np.stack([rng.uniform(0, 100, n), rng.uniform(-110, 110, n), rng.uniform(-110, 110, n)], -1)
    lab2 = lab1 + rng.normal(0, 15, (n, 3))
    lab2[:, 0] = lab2[:, 0].clip(0, 100)
    # hue-rule corner cases: greys, one achromatic side, opposite hues, hues across the 0/360 cut
    lab1[:20, 1:] = 0.0
    lab2[20:40, 1:] = 0.0
    # near-opposite hues (rotated by 175..179.5 deg either way); exactly 180 is the formula's own
    # discontinuity (Sharma et al. 2005, sec. 3), where round-off decides the branch
    ang = np.deg2rad(rng.uniform(175.0, 179.5, 20) * rng.choice([-1.0, 1.0], 20))
    cos, sin = np.cos(ang), np.sin(ang)
    a, b = lab1[40:60, 1], lab1[40:60, 2]
    lab2[40:60, 1], lab2[40:60, 2] = cos * a - sin * b, sin * a + cos * b
    lab1[60:80, 2], lab2[60:80, 2] = 1e-3, -1e-3
    ours = metrics.ciede2000_lab(torch.from_numpy(lab1), torch.from_numpy(lab2)).numpy()
    ref = colour.difference.delta_E_CIE2000(lab1, lab2)
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)


def test_ciede2000_any_leading_shape_and_identity():
    lab = torch.tensor([[50.0, 10.0, -20.0], [0.0, 0.0, 0.0]]).reshape(2, 1, 1, 3).expand(2, 4, 5, 3)
    de = metrics.ciede2000_lab(lab, lab.clone())
    assert de.shape == (2, 4, 5)
    assert torch.equal(de, torch.zeros(2, 4, 5))


def test_ciede2000_bad_shapes():
    with pytest.raises(ValueError, match=r"same shape \[\.\.\., 3\].*\(4, 2\) and \(4, 2\)"):
        metrics.ciede2000_lab(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(5, 3\)"):
        metrics.ciede2000_lab(torch.zeros(4, 3), torch.zeros(5, 3))
    with pytest.raises(TypeError, match="torch.Tensors"):
        metrics.ciede2000_lab(np.zeros((4, 3)), torch.zeros(4, 3))


def test_ciede2000_gradients_finite_at_identical_and_achromatic_colours():
    lab = torch.tensor(
        [[50.0, 0.0, 0.0], [50.0, 10.0, -20.0], [0.0, 0.0, 0.0], [70.0, -5.0, 0.0], [60.0, 0.0, 3.0]],
        dtype=torch.float64,
        requires_grad=True,
    )
    other = lab.detach().clone().requires_grad_(True)
    metrics.ciede2000_lab(lab, other).sum().backward()
    assert torch.isfinite(lab.grad).all() and torch.isfinite(other.grad).all()
    assert torch.equal(lab.grad, torch.zeros_like(lab.grad))  # zero (sub)gradient at the minimum
    # one side grey, the other chromatic: still finite
    grey = torch.tensor([[50.0, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    col = torch.tensor([[55.0, 3.0, -4.0]], dtype=torch.float64, requires_grad=True)
    metrics.ciede2000_lab(grey, col).sum().backward()
    assert torch.isfinite(grey.grad).all() and torch.isfinite(col.grad).all()


def test_ciede2000_gradcheck():
    g = torch.Generator().manual_seed(3)
    lab1 = torch.stack(
        [torch.rand(6, generator=g) * 80 + 10, torch.randn(6, generator=g) * 30, torch.randn(6, generator=g) * 30], -1
    ).double()
    lab2 = (lab1 + torch.randn(6, 3, generator=g, dtype=torch.float64) * 5).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: metrics.ciede2000_lab(a, b), (lab1.requires_grad_(True), lab2))


# --------------------------------------------------------------------------- dE2000 on sRGB
def test_delta_e2000_on_srgb_matches_colour_science_pipeline():
    g = torch.Generator().manual_seed(4)
    pred = torch.rand(3, 3, 8, 8, generator=g, dtype=torch.float64)
    target = (pred + 0.15 * torch.randn(3, 3, 8, 8, generator=g, dtype=torch.float64)).clamp(0, 1)
    ours = metrics.delta_e2000(pred, target)
    ours_map = metrics.delta_e2000_map(pred, target)
    assert ours.shape == (3,) and ours_map.shape == (3, 8, 8)
    torch.testing.assert_close(ours, ours_map.mean(dim=(1, 2)))
    to_np = lambda t: t.permute(0, 2, 3, 1).numpy()  # noqa: E731
    ref_map = colour.difference.delta_E_CIE2000(_srgb_to_lab_colour(to_np(pred)), _srgb_to_lab_colour(to_np(target)))
    # kornia's rounded Lab constants vs colour-science's exact ones: ~1e-3 per image, a bit more per pixel
    np.testing.assert_allclose(ours.numpy(), ref_map.mean(axis=(1, 2)), atol=1e-3, rtol=0)
    np.testing.assert_allclose(ours_map.numpy(), ref_map, atol=5e-2, rtol=0)


def test_delta_e2000_on_srgb_equals_skimage_pipeline():
    from skimage.color import deltaE_ciede2000, rgb2lab

    pred, target = _pair(b=2, h=8, w=8, seed=6, dtype=torch.float64)
    to_np = lambda t: t.permute(0, 2, 3, 1).numpy()  # noqa: E731
    ref = deltaE_ciede2000(rgb2lab(to_np(pred), channel_axis=-1), rgb2lab(to_np(target), channel_axis=-1))
    np.testing.assert_allclose(metrics.delta_e2000_map(pred, target).numpy(), ref, atol=1e-9, rtol=0)


def test_srgb_to_lab_conventions_match_colour_science():
    # Known colours: white -> L 100, a = b = 0; sRGB red / mid-grey vs colour-science's D65 pipeline.
    rgb = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.02, 0.03, 0.01]], dtype=torch.float64)
    from kornia.color import rgb_to_lab

    lab = rgb_to_lab(rgb.T.reshape(1, 3, 1, 4)).reshape(3, 4).T.numpy()
    # kornia: 6-digit sRGB matrix, white (0.95047, 1, 1.08883); colour: matrix and white from xy primaries
    np.testing.assert_allclose(lab, _srgb_to_lab_colour(rgb.numpy()), atol=3e-2, rtol=0)
    np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=1e-2)


def test_delta_e2000_zero_for_identical_and_grows_with_error():
    x, _ = _pair()
    assert torch.equal(metrics.delta_e2000(x, x.clone()), torch.zeros(2))
    small = metrics.delta_e2000(x, (x + 0.02).clamp(0, 1))
    large = metrics.delta_e2000(x, (x + 0.2).clamp(0, 1))
    assert (small > 0).all() and (large > small).all()


def test_delta_e2000_gradients_finite_at_identical_images():
    x, _ = _pair(b=1, h=4, w=4, dtype=torch.float64)
    x[..., 0, 0] = 0.5  # a grey pixel
    x[..., 0, 1] = 0.0  # black
    pred = x.clone().requires_grad_(True)
    metrics.delta_e2000(pred, x).sum().backward()
    assert torch.isfinite(pred.grad).all()
    assert torch.equal(pred.grad, torch.zeros_like(pred.grad))


def test_delta_e2000_gradcheck():
    g = torch.Generator().manual_seed(5)
    target = torch.rand(1, 3, 3, 3, generator=g, dtype=torch.float64) * 0.8 + 0.1
    pred = (target + 0.05 * torch.randn(1, 3, 3, 3, generator=g, dtype=torch.float64)).clamp(0.05, 0.95)
    assert torch.autograd.gradcheck(lambda p: metrics.delta_e2000(p, target), (pred.requires_grad_(True),))


def test_delta_e2000_needs_rgb():
    with pytest.raises(ValueError, match=r"delta_e2000: expected 3 \(RGB\) channels, got shape \(1, 4, 8, 8\)"):
        metrics.delta_e2000(torch.rand(1, 4, 8, 8), torch.rand(1, 4, 8, 8))


# --------------------------------------------------------------------------- PSNR
def test_psnr_constant_offset_is_20db():
    target = torch.full((3, 3, 8, 8), 0.4, dtype=torch.float64)
    out = metrics.psnr(target + 0.1, target)
    assert out.shape == (3,) and out.dtype == torch.float64
    torch.testing.assert_close(out, torch.full((3,), 20.0, dtype=torch.float64))
    # float32, offset 0.01 -> 40 dB
    t32 = torch.full((1, 3, 8, 8), 0.25)
    torch.testing.assert_close(metrics.psnr(t32 + 0.01, t32), torch.tensor([40.0]), atol=1e-3, rtol=0)


def test_psnr_per_image_symmetric_and_inf_for_identical():
    x, y = _pair(b=3)
    y[1] = x[1]
    out = metrics.psnr(x, y)
    assert out.shape == (3,)
    assert math.isinf(out[1].item()) and out[1] > 0
    torch.testing.assert_close(out, metrics.psnr(y, x))
    mse0 = ((x[0] - y[0]) ** 2).mean()
    torch.testing.assert_close(out[0], -10 * torch.log10(mse0))
    # per image, not pooled over the batch: a sub-batch gives the same values
    torch.testing.assert_close(metrics.psnr(x[2:], y[2:])[0], out[2])
    torch.testing.assert_close(metrics.psnr(x[[2, 0]], y[[2, 0]]), out[[2, 0]])


def test_psnr_matches_skimage():
    x, y = _pair(b=2)
    ours = metrics.psnr(x.double(), y.double()).numpy()
    for i in range(2):
        ref = skmetrics.peak_signal_noise_ratio(y[i].double().numpy(), x[i].double().numpy(), data_range=1.0)
        assert ours[i] == pytest.approx(ref, abs=1e-9)


def test_inputs_are_clamped_and_quantize_rounds_to_8bit():
    target = torch.full((1, 3, 4, 4), 0.5)
    # 1.7 is clamped to 1.0 -> error 0.5 -> 6.0206 dB
    assert metrics.psnr(torch.full_like(target, 1.7), target).item() == pytest.approx(20 * math.log10(2), abs=1e-4)
    # 0.5 + 0.001 rounds to the same 8-bit level as 0.5 (128/255)
    assert math.isinf(metrics.psnr(target + 0.001, target, quantize=True).item())
    assert not math.isinf(metrics.psnr(target + 0.001, target).item())


def test_psnr_gradcheck():
    x, y = _pair(b=2, h=3, w=3, dtype=torch.float64)
    x = x.clamp(0.05, 0.95)
    assert torch.autograd.gradcheck(lambda p: metrics.psnr(p, y), (x.requires_grad_(True),))


# --------------------------------------------------------------------------- SSIM
def test_ssim_identical_is_one_and_noise_lowers_it():
    x, y = _pair(b=2, h=16, w=16)
    torch.testing.assert_close(metrics.ssim(x, x.clone()), torch.ones(2))
    g = torch.Generator().manual_seed(9)
    light = (x + 0.02 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    heavy = (x + 0.2 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    s_light, s_heavy = metrics.ssim(light, x), metrics.ssim(heavy, x)
    assert s_light.shape == (2,)
    assert (s_light < 1).all() and (s_heavy < s_light).all()
    torch.testing.assert_close(metrics.ssim(x, y), metrics.ssim(y, x))


@pytest.mark.parametrize("dtype,atol", [(torch.float64, 1e-8), (torch.float32, 1e-4)])
def test_ssim_matches_skimage_valid_border(dtype, atol):
    x, y = _pair(b=2, h=20, w=17, dtype=dtype)
    ours = metrics.ssim(x, y).double().numpy()
    for i in range(2):
        ref = skmetrics.structural_similarity(
            x[i].double().numpy(),
            y[i].double().numpy(),
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=0,
        )
        assert ours[i] == pytest.approx(ref, abs=atol)


def test_ssim_same_padding_differs_from_valid_and_small_images_refused():
    x, y = _pair(b=1, h=16, w=16)
    assert metrics.ssim(x, y, padding="same").item() != pytest.approx(metrics.ssim(x, y).item(), abs=1e-6)
    with pytest.raises(ValueError, match=r"ssim: images must be at least 11x11 for padding='valid', got 8x12"):
        metrics.ssim(torch.rand(1, 3, 8, 12), torch.rand(1, 3, 8, 12))
    with pytest.raises(ValueError, match="padding must be 'valid' or 'same'"):
        metrics.ssim(x, y, padding="full")


def test_ssim_gradcheck():
    x, y = _pair(b=1, c=1, h=11, w=12, dtype=torch.float64)
    x = x.clamp(0.05, 0.95)
    assert torch.autograd.gradcheck(lambda p: metrics.ssim(p, y), (x.requires_grad_(True),))


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("fn", [metrics.psnr, metrics.ssim, metrics.delta_e2000, metrics.evaluate])
def test_bad_inputs_raise_clear_errors(fn):
    a = torch.rand(1, 3, 12, 12)
    with pytest.raises(ValueError, match=r"same shape, got \(1, 3, 12, 12\) and \(1, 3, 12, 13\)"):
        fn(a, torch.rand(1, 3, 12, 13))
    with pytest.raises(ValueError, match=r"expected pred of shape Bx.xHxW \(4-D\), got shape \(3, 12, 12\)"):
        fn(a[0], a[0])
    with pytest.raises(TypeError, match=r"floating-point tensor in \[0, 1\], got dtype torch.uint8"):
        fn((a * 255).to(torch.uint8), a)
    with pytest.raises(TypeError, match="expected target to be a torch.Tensor, got ndarray"):
        fn(a, a.numpy())
    bad = a.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="pred contains NaN or inf"):
        fn(bad, a)
    with pytest.raises(ValueError, match="non-empty"):
        fn(torch.rand(0, 3, 12, 12), torch.rand(0, 3, 12, 12))


def test_finite_check_fast_path_keeps_overflowing_finite_inputs_and_refuses_inf():
    # The NaN/inf check sums first; finite values whose sum overflows must still be accepted (and clamped).
    target = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    big = torch.full_like(target, 3e38)
    assert torch.isinf(big.sum())
    torch.testing.assert_close(metrics.psnr(big, target), metrics.psnr(torch.ones_like(target), target))
    bad = target.clone()
    bad[0, 1, 2, 3] = -float("inf")
    with pytest.raises(ValueError, match="target contains NaN or inf"):
        metrics.ssim(target, bad)


def test_half_precision_is_computed_in_float32():
    x, y = _pair(b=1, h=12, w=12)
    out = metrics.evaluate(x.half(), y.half())
    assert all(v.dtype == torch.float32 for v in out.values())
    torch.testing.assert_close(out["ssim"], metrics.ssim(x.half().float(), y.half().float()))


# --------------------------------------------------------------------------- evaluate / summarise
def test_evaluate_returns_per_image_metrics_without_grad():
    x, y = _pair(b=3, h=12, w=12)
    pred = x.clone().requires_grad_(True)
    out = metrics.evaluate(pred, y)
    assert set(out) == {"psnr", "ssim", "de2000"}
    assert all(v.shape == (3,) and not v.requires_grad for v in out.values())
    torch.testing.assert_close(out["psnr"], metrics.psnr(x, y))
    torch.testing.assert_close(out["ssim"], metrics.ssim(x, y))
    torch.testing.assert_close(out["de2000"], metrics.delta_e2000(x, y))


def test_summarise_means_caps_inf_psnr_and_accepts_batches():
    m = {"psnr": torch.tensor([20.0, math.inf]), "ssim": torch.tensor([0.5, 1.0]), "de2000": torch.tensor([4.0, 0.0])}
    s = metrics.summarise(m)
    assert s == {"psnr": pytest.approx(60.0), "ssim": pytest.approx(0.75), "de2000": pytest.approx(2.0), "n": 2}
    assert metrics.summarise(m, psnr_cap=40.0)["psnr"] == pytest.approx(30.0)
    batched = {"psnr": [torch.tensor([20.0]), torch.tensor([30.0, 40.0])], "ssim": [0.1, 0.2, 0.3]}
    assert metrics.summarise(batched) == {"psnr": pytest.approx(30.0), "ssim": pytest.approx(0.2), "n": 3}


def test_summarise_bad_input():
    with pytest.raises(ValueError, match="empty mapping"):
        metrics.summarise({})
    with pytest.raises(ValueError, match="'ssim' has no values"):
        metrics.summarise({"ssim": torch.zeros(0)})
    with pytest.raises(ValueError, match="'ssim' has 1 values, expected 2"):
        metrics.summarise({"psnr": torch.ones(2), "ssim": torch.ones(1)})
    with pytest.raises(ValueError, match="'de2000' contains NaN"):
        metrics.summarise({"de2000": torch.tensor([1.0, math.nan])})


def test_deterministic_and_device_preserving():
    x, y = _pair(b=2, h=12, w=12)
    a, b = metrics.evaluate(x, y), metrics.evaluate(x, y)
    assert all(torch.equal(a[k], b[k]) and a[k].device == x.device for k in a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x, y = _pair(b=2, h=12, w=12)
    cpu = metrics.evaluate(x, y)
    gpu = metrics.evaluate(x.cuda(), y.cuda())
    for k in cpu:
        assert gpu[k].device.type == "cuda"
        torch.testing.assert_close(gpu[k].cpu(), cpu[k], atol=1e-4, rtol=1e-5)
