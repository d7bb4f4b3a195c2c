"""Camera model (Brooks et al. 2019 unprocessing) and target look: known values, invariants, gradients."""

from __future__ import annotations

import dataclasses
import math

import kornia.color as kc
import pytest
import torch

from uotisp_lib.data import camera as cm
from uotisp_lib.data.camera import CameraModel, TargetLook

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- colour round trips
@pytest.mark.parametrize("tone", ["none", "smoothstep"])
def test_srgb_camera_round_trip_float64(tone):
    cam = CameraModel(tone=tone)
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64, generator=gen(0))
    lin = cm.srgb_to_camera_linear(x, cam)
    assert lin.dtype == torch.float64 and lin.shape == x.shape
    torch.testing.assert_close(cm.camera_linear_to_srgb(lin, cam), x, atol=1e-6, rtol=0)


def test_white_maps_to_white_and_ccm_is_the_inverse():
    white = torch.ones(1, 3, 2, 2, dtype=torch.float64)
    torch.testing.assert_close(cm.srgb_to_camera_linear(white), white)
    # a pure sRGB red is seen by the camera as a mix: the first column of rgb_to_cam
    red = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).view(1, 3, 1, 1)
    expected = torch.tensor([r[0] for r in cm.DEFAULT_CAMERA.rgb_to_cam], dtype=torch.float64)
    torch.testing.assert_close(cm.srgb_to_camera_linear(red).flatten(), expected)


def test_camera_model_validates_its_constants():
    with pytest.raises(ValueError, match="rows of rgb_to_cam must sum to 1"):
        CameraModel(rgb_to_cam=((1.0, 0.1, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)))
    with pytest.raises(ValueError, match="unknown tone 'filmic'"):
        CameraModel(tone="filmic")
    with pytest.raises(ValueError, match="black_level < white_level"):
        CameraModel(black_level=1023, white_level=1023)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cm.DEFAULT_CAMERA.tone = "smoothstep"  # type: ignore[misc]


def test_inverse_smoothstep_known_values_and_finite_gradient():
    y = torch.tensor([0.0, 0.5, 1.0, cm.smoothstep(torch.tensor(0.3)).item()], dtype=torch.float64, requires_grad=True)
    x = cm.inverse_smoothstep(y)
    torch.testing.assert_close(x.detach(), torch.tensor([0.0, 0.5, 1.0, 0.3], dtype=torch.float64), atol=1e-7, rtol=0)
    x.sum().backward()
    assert torch.isfinite(y.grad).all()


# ----------------------------------------------------------------------------------------- Bayer
def test_mosaic_pack_hand_made_4x4():
    # channel c of pixel (i, j) holds 100 c + 10 i + j, so every sample names where it came from
    i = torch.arange(4).view(4, 1)
    j = torch.arange(4).view(1, 4)
    rgb = torch.stack([100 * c + 10 * i + j for c in range(3)]).float()[None]
    packed = cm.mosaic_pack(rgb)
    assert packed.shape == (1, 4, 2, 2)
    expected = torch.tensor(
        [
            [[0, 2], [20, 22]],  # R at (even, even)
            [[101, 103], [121, 123]],  # Gr at (even, odd)
            [[110, 112], [130, 132]],  # Gb at (odd, even)
            [[211, 213], [231, 233]],  # B at (odd, odd)
        ],
        dtype=torch.float32,
    )
    torch.testing.assert_close(packed[0], expected, atol=0, rtol=0)
    bayer = cm.unpack_mosaic(packed)
    assert bayer.shape == (1, 1, 4, 4)
    # the Bayer plane is the RGGB sampling of rgb: value of channel (R,G,G,B) at each site
    site_channel = torch.tensor([[0, 1], [1, 2]]).repeat(2, 2)
    want = torch.gather(rgb[0], 0, site_channel[None])[0]
    torch.testing.assert_close(bayer[0, 0], want, atol=0, rtol=0)


def test_unpack_then_pack_is_identity():
    packed = torch.rand(2, 4, 3, 5, generator=gen(1))
    bayer = cm.unpack_mosaic(packed)
    rgb = bayer.expand(-1, 3, -1, -1)  # every channel = the plane: packing must read it back exactly
    torch.testing.assert_close(cm.mosaic_pack(rgb), packed, atol=0, rtol=0)


def test_bayer_bad_input_messages():
    with pytest.raises(ValueError, match="mosaic_pack: expected even height and width, got 3x4"):
        cm.mosaic_pack(torch.rand(1, 3, 3, 4))
    with pytest.raises(ValueError, match=r"mosaic_pack: expected an RGB image of shape \[B,3,H,W\], got shape \(1, 4, 4, 4\)"):
        cm.mosaic_pack(torch.rand(1, 4, 4, 4))
    with pytest.raises(ValueError, match=r"unpack_mosaic: expected packed RAW of shape \[B,4,h,w\]"):
        cm.unpack_mosaic(torch.rand(4, 2, 2))
    with pytest.raises(TypeError, match="srgb_to_camera_linear|scene_to_linear: expected a floating-point"):
        cm.srgb_to_camera_linear(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))


# ------------------------------------------------------------------------------- forward + noise
def test_forward_clean_is_mosaic_of_camera_rgb_over_gains():
    x = torch.rand(2, 3, 6, 4, generator=gen(2))
    gains = torch.tensor([[2.0, 1.0, 1.6], [2.3, 1.0, 1.5]])
    raw = cm.forward(x, gains, noise=False)
    assert raw.shape == (2, 4, 3, 2) and raw.dtype == torch.float32
    want = cm.mosaic_pack(cm.srgb_to_camera_linear(x) / gains[:, :, None, None])
    torch.testing.assert_close(raw, want)
    # a white scene: R = 1/red gain, greens = 1, B = 1/blue gain
    w = cm.forward(torch.ones(1, 3, 2, 2), gains[:1], noise=False).flatten()
    torch.testing.assert_close(w, torch.tensor([0.5, 1.0, 1.0, 1 / 1.6]))


def test_forward_gradcheck_float64():
    x = (0.2 + 0.6 * torch.rand(1, 3, 2, 2, dtype=torch.float64, generator=gen(3))).requires_grad_()
    g = torch.tensor([2.1, 1.0, 1.7], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda t: cm.forward(t, g, noise=False), (x,))
    y = (0.2 + 0.3 * torch.rand(1, 3, 2, 2, dtype=torch.float64, generator=gen(4))).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: cm.camera_linear_to_srgb(t), (y,))
    assert torch.autograd.gradcheck(lambda t: cm.render_target(t), (y,))


def test_forward_bad_gains():
    with pytest.raises(ValueError, match=r"forward: expected gains of shape \[3\] or \[2,3\]"):
        cm.forward(torch.rand(2, 3, 2, 2), torch.ones(2, 4))
    with pytest.raises(ValueError, match="gains must be positive"):
        cm.forward(torch.rand(1, 3, 2, 2), torch.tensor([0.0, 1.0, 1.0]))


@pytest.mark.parametrize("level", [0.3, 0.6])
def test_noise_statistics_match_shot_read_model(level):
    shot, read = 0.01, 1e-4
    clean = torch.full((1, 4, 128, 128), level, dtype=torch.float64)
    noisy = cm.add_noise(clean, shot, read, gen(5))
    n = clean.numel()
    var = shot * level + read
    assert abs(noisy.mean().item() - level) < 4 * math.sqrt(var / n)
    # sample variance of n Gaussians: relative std sqrt(2/n) ~ 1.1%; allow 5%
    assert noisy.var().item() == pytest.approx(var, rel=0.05)


def test_forward_noise_is_seeded_and_clipped():
    x = torch.rand(2, 3, 8, 8, generator=gen(6))
    g = cm.sample_gains(2, generator=gen(7))
    a = cm.forward(x, g, generator=gen(8))
    b = cm.forward(x, g, generator=gen(8))
    c = cm.forward(x, g, generator=gen(9))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    assert (a - cm.forward(x, g, noise=False)).abs().mean() > 0  # noise was added


def test_sampled_gains_and_noise_levels_follow_brooks():
    g = cm.sample_gains(500, generator=gen(10))
    assert g.shape == (500, 3) and torch.all(g[:, 1] == 1)
    assert 1.9 <= g[:, 0].min() and g[:, 0].max() <= 2.4 and 1.5 <= g[:, 2].min() and g[:, 2].max() <= 1.9
    cam = CameraModel(read_jitter=0.0)
    shot, read = cm.sample_noise_levels(100, cam, gen(11))
    assert shot.min() >= 1e-4 * (1 - 1e-6) and shot.max() <= 4e-3 * (1 + 1e-6)
    torch.testing.assert_close(read.log(), 2.18 * shot.log() + 1.20, rtol=1e-5, atol=1e-4)


# ----------------------------------------------------------------------------------- quantise
def test_quantize_range_dtype_and_values():
    q = cm.quantize(torch.tensor([-0.1, 0.0, 0.5, 1.0, 1.2]))
    assert q.dtype == torch.uint16
    assert q.to(torch.int32).tolist() == [0, 0, 512, 1023, 1023]  # 511.5 rounds half to even
    cam = CameraModel(black_level=64, white_level=1023)
    q = cm.quantize(torch.tensor([0.0, 1.0]), cam).to(torch.int32)
    assert q.tolist() == [64, 1023]
    x = torch.rand(100, generator=gen(12))
    assert (cm.dequantize(cm.quantize(x)) - x).abs().max() <= 0.5 / 1023 + 1e-7
    with pytest.raises(TypeError, match="quantize: expected a floating-point"):
        cm.quantize(torch.zeros(3, dtype=torch.int64))


# -------------------------------------------------------------------------------- target look
def test_identity_look_is_plain_srgb_gamma():
    ident = TargetLook(name="id", wb=(1.0, 1.0, 1.0), saturation=1.0, exposure=1.0, contrast=0.0)
    lin = torch.rand(1, 3, 4, 4, dtype=torch.float64, generator=gen(13))
    torch.testing.assert_close(cm.render_target(lin, ident), kc.linear_rgb_to_rgb(lin))


def test_neutral_look_keeps_gray_with_known_value():
    look = TargetLook(name="t", wb=(1.0, 1.0, 1.0), saturation=1.4, exposure=1.2, contrast=0.5)
    out = cm.render_target(torch.full((1, 3, 1, 1), 0.2, dtype=torch.float64), look).flatten()
    x = 1.055 * 0.24 ** (1 / 2.4) - 0.055
    want = x + 0.5 * (3 * x * x - 2 * x**3 - x)
    torch.testing.assert_close(out, torch.full((3,), want, dtype=torch.float64))


def test_default_look_is_warm_saturated_and_not_the_camera_inverse():
    gray = torch.full((1, 3, 1, 1), 0.18)
    r, g, b = cm.render_target(gray).flatten().tolist()
    assert r > g > b  # wb (1.04, 1, 0.95): warm
    colour = torch.tensor([0.30, 0.15, 0.08]).view(1, 3, 1, 1)
    plain = kc.linear_rgb_to_rgb(colour).flatten()
    looked = cm.render_target(colour).flatten()
    assert (looked.max() - looked.min()) > (plain.max() - plain.min())  # more saturated
    x = torch.rand(1, 3, 8, 8, generator=gen(14))
    lin_cam = cm.srgb_to_camera_linear(x)
    assert (cm.camera_linear_to_target(lin_cam) - x).abs().mean() > 0.02
    torch.testing.assert_close(cm.camera_linear_to_target(lin_cam), cm.srgb_to_target(x), atol=1e-5, rtol=0)


def test_outlier_looks_are_far_from_the_default():
    x = torch.rand(1, 3, 16, 16, generator=gen(15))
    base = cm.srgb_to_target(x)
    assert len(cm.OUTLIER_LOOKS) >= 4
    for name, look in cm.OUTLIER_LOOKS.items():
        assert look.name == name
        assert (cm.srgb_to_target(x, look) - base).abs().mean() > 0.04, name


def test_target_look_validation():
    with pytest.raises(ValueError, match="contrast must lie in"):
        TargetLook(contrast=1.5)
    with pytest.raises(ValueError, match="wb must be 3 positive values"):
        TargetLook(wb=(1.0, 0.0, 1.0))


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_the_input_device(device):
    x = torch.rand(1, 3, 4, 4, generator=gen(16)).to(device)
    raw = cm.forward(x, torch.tensor([2.0, 1.0, 1.7]), generator=gen(17))
    assert raw.device.type == device and raw.shape == (1, 4, 2, 2)
    cpu = cm.forward(x.cpu(), torch.tensor([2.0, 1.0, 1.7]), generator=gen(17))
    torch.testing.assert_close(raw.cpu(), cpu, atol=1e-5, rtol=0)  # same seed, same noise on any device
    assert cm.render_target(x).device.type == device
