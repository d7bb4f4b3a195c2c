"""Tests of uotisp_lib.preprocessing: per op smoke, exceptions, shapes, known values, gradcheck."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from uotisp_lib import preprocessing as pp
from uotisp_lib.preprocessing import demosaicing as dm

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
COLOUR = (0.8, 0.5, 0.2)


def flat(rgb: tuple[float, float, float], h: int = 8, w: int = 8, dtype=torch.float32) -> torch.Tensor:
    """A flat RGB scene [1,3,h,w]."""
    return torch.tensor(rgb, dtype=dtype).view(1, 3, 1, 1).expand(1, 3, h, w).contiguous()


def psnr(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(-10 * torch.log10(((x - y) ** 2).mean()))


@pytest.fixture(scope="module")
def photo_linear() -> torch.Tensor:
    """A 96x96 crop of skimage's astronaut, linear light, [1,3,96,96]."""
    import kornia
    import skimage.data

    img = torch.from_numpy(skimage.data.astronaut()[120:216, 160:256]).permute(2, 0, 1)[None].float() / 255
    return kornia.color.rgb_to_linear_rgb(img)


# ----------------------------------------------------------------------------- packing, order
def test_unpack_bayer_positions():
    packed = torch.arange(1.0, 5.0).view(1, 4, 1, 1).expand(2, 4, 3, 5)
    bayer = pp.unpack_bayer(packed)
    assert bayer.shape == (2, 1, 6, 10)
    assert (bayer[:, 0, 0::2, 0::2] == 1).all()  # R even/even
    assert (bayer[:, 0, 0::2, 1::2] == 2).all()  # Gr even/odd
    assert (bayer[:, 0, 1::2, 0::2] == 3).all()  # Gb odd/even
    assert (bayer[:, 0, 1::2, 1::2] == 4).all()  # B odd/odd


def test_pack_unpack_round_trip():
    g = torch.Generator().manual_seed(0)
    packed = torch.rand(3, 4, 5, 7, generator=g)
    assert torch.equal(pp.pack_bayer(pp.unpack_bayer(packed)), packed)
    bayer = torch.rand(2, 1, 6, 8, generator=g)
    assert torch.equal(pp.unpack_bayer(pp.pack_bayer(bayer)), bayer)


def test_pack_unpack_errors():
    with pytest.raises(ValueError, match=r"unpack_bayer: expected packed RAW of shape \[B,4,h,w\], got shape \(1, 3, 4, 4\)"):
        pp.unpack_bayer(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"pack_bayer: expected a Bayer mosaic with even height and width"):
        pp.pack_bayer(torch.zeros(1, 1, 5, 4))
    with pytest.raises(TypeError, match="floating-point"):
        pp.unpack_bayer(torch.zeros(1, 4, 2, 2, dtype=torch.int32))
    with pytest.raises(TypeError, match="expected a torch.Tensor"):
        pp.unpack_bayer(np.zeros((1, 4, 2, 2)))


def _mosaic_with_pattern(rgb: torch.Tensor, pattern: str) -> torch.Tensor:
    """Sample [B,3,H,W] on the 2x2 ``pattern`` (e.g. 'GRBG') and pack row-major (TL, TR, BL, BR)."""
    idx = {"R": 0, "G": 1, "B": 2}
    out = torch.zeros_like(rgb[:, :1])
    for k, ch in enumerate(pattern):
        a, b = divmod(k, 2)
        out[..., a::2, b::2] = rgb[:, idx[ch] : idx[ch] + 1, a::2, b::2]
    return F.pixel_unshuffle(out, 2)


@pytest.mark.parametrize("order", ["RGGB", "GRBG", "BGGR", "GBRG"])
def test_reorder_channels_to_canonical(order):
    packed = _mosaic_with_pattern(flat(COLOUR), order)
    canonical = pp.reorder_channels(packed, order)
    expected = torch.tensor([0.8, 0.5, 0.5, 0.2]).view(1, 4, 1, 1).expand_as(canonical)
    assert torch.equal(canonical, expected)
    # inverse round trip
    assert torch.equal(pp.reorder_channels(canonical, order, inverse=True), packed)


def test_reorder_channels_identifies_the_greens():
    """Gr (green on red rows) must land in channel 1 for every pattern."""
    g = torch.Generator().manual_seed(1)
    bayer = torch.rand(1, 1, 8, 8, generator=g)  # an RGGB sensor
    canonical = F.pixel_unshuffle(bayer, 2)
    # Cropping one column turns RGGB into GRBG; its Gr is the RGGB Gr of the same cell.
    grbg = F.pixel_unshuffle(bayer[..., 1:-1], 2)
    out = pp.reorder_channels(grbg, "GRBG")
    assert torch.equal(out[:, 1], canonical[:, 1, :, :-1])  # Gr
    assert torch.equal(out[:, 0], canonical[:, 0, :, 1:])  # R one cell to the right
    assert torch.equal(out[:, 2], canonical[:, 2, :, 1:])  # Gb one cell to the right


def test_reorder_channels_errors_and_int():
    raw = torch.arange(16).view(1, 4, 2, 2)
    assert pp.reorder_channels(raw, "bggr").dtype == torch.int64
    with pytest.raises(ValueError, match="unknown Bayer order 'RGBG'; expected one of RGGB, GRBG, BGGR, GBRG"):
        pp.reorder_channels(raw, "RGBG")
    with pytest.raises(ValueError, match=r"expected packed RAW of shape \[B,4,h,w\]"):
        pp.reorder_channels(torch.zeros(4, 2, 2), "RGGB")


# ----------------------------------------------------------------------------- normalise
def test_normalize_known_values():
    raw = torch.tensor([0.0, 64.0, 543.5, 1023.0, 2000.0]).view(1, 1, 1, 5).expand(1, 4, 1, 5)
    out = pp.normalize(raw, black=64, white=1023)
    assert torch.allclose(out[0, 0, 0], torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    assert out.dtype == torch.float32


def test_normalize_per_channel_and_integer_input():
    raw = torch.full((2, 4, 3, 3), 100, dtype=torch.int32)
    out = pp.normalize(raw, black=(0, 50, 100, 0), white=(200, 150, 300, 100))
    assert out.dtype == torch.float32
    assert torch.allclose(out[:, :, 0, 0], torch.tensor([[0.5, 0.5, 0.0, 1.0]] * 2))
    already01 = torch.rand(1, 4, 2, 2)
    assert torch.equal(pp.normalize(already01, 0, 1), already01)


def test_normalize_errors():
    with pytest.raises(ValueError, match=r"normalize: expected packed RAW of shape \[B,4,h,w\], got shape \(2, 4, 4\)"):
        pp.normalize(torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="white level must exceed black level"):
        pp.normalize(torch.zeros(1, 4, 2, 2), black=10, white=10)
    with pytest.raises(ValueError, match=r"black must be a scalar or have 4 values \[R,Gr,Gb,B\]"):
        pp.normalize(torch.zeros(1, 4, 2, 2), black=(0, 0, 0))


# ----------------------------------------------------------------------------- white balance
def test_white_balance_known_values():
    packed = torch.full((2, 4, 2, 2), 0.25)
    out = pp.white_balance(packed, (2.0, 1.0, 3.0))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.5, 0.25, 0.25, 0.75]))
    per_image = pp.white_balance(packed, torch.tensor([[1.0, 1.0, 1.0], [4.0, 2.0, 1.0]]))
    assert torch.allclose(per_image[1, :, 0, 0], torch.tensor([1.0, 0.5, 0.5, 0.25]))
    assert torch.equal(per_image[0], packed[0])
    assert pp.white_balance(packed, (8.0, 1.0, 1.0), clip=False)[0, 0, 0, 0] == 2.0


def test_white_balance_errors():
    packed = torch.zeros(2, 4, 2, 2)
    with pytest.raises(ValueError, match=r"expected gains of shape \[3\] or \[2,3\] \(R, G, B\), got \(4,\)"):
        pp.white_balance(packed, (1.0, 1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="gains must be finite and positive"):
        pp.white_balance(packed, (1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="unknown mode 'auto'"):
        pp.apply_white_balance(packed, "auto")


def test_gray_world_gains_known_values_and_clipped_pixels():
    packed = torch.empty(1, 4, 4, 4)
    packed[:, 0], packed[:, 1], packed[:, 2], packed[:, 3] = 0.2, 0.3, 0.5, 0.8  # G mean 0.4
    gains = pp.gray_world_gains(packed)
    assert torch.allclose(gains, torch.tensor([[2.0, 1.0, 0.5]]))
    # A saturated highlight (a quad with a clipped channel) must not change the gains.
    with_highlight = packed.clone()
    with_highlight[:, :, :2, :2] = torch.tensor([1.0, 0.9, 0.9, 0.1]).view(1, 4, 1, 1)
    assert torch.allclose(pp.gray_world_gains(with_highlight), gains)
    # Everything clipped -> all quads are used, still G = 1.
    saturated = torch.ones(1, 4, 2, 2)
    assert torch.allclose(pp.gray_world_gains(saturated), torch.ones(1, 3))


def test_gray_world_equalises_channel_means():
    g = torch.Generator().manual_seed(2)
    packed = torch.rand(2, 4, 6, 6, generator=g) * torch.tensor([0.3, 0.6, 0.6, 0.45]).view(1, 4, 1, 1)
    out = pp.apply_white_balance(packed, "gray_world")
    means = out.mean(dim=(2, 3))
    assert torch.allclose(means[:, 0], (means[:, 1] + means[:, 2]) / 2, atol=1e-6)
    assert torch.allclose(means[:, 3], (means[:, 1] + means[:, 2]) / 2, atol=1e-6)
    assert torch.equal(pp.apply_white_balance(packed, "none"), packed)


# ----------------------------------------------------------------------------- demosaic
@pytest.mark.parametrize("method", pp.DEMOSAIC_METHODS)
def test_demosaic_constant_gray_and_flat_colour(method):
    tol = 5e-3 if method == "demosaicnet" else 1e-6
    for colour in [(0.5, 0.5, 0.5), COLOUR]:
        scene = flat(colour, 12, 12)
        out = pp.demosaic(pp.mosaic(scene), method)
        assert out.shape == (1, 3, 12, 12) and out.dtype == torch.float32
        assert (out - scene).abs().max() < tol, (method, colour)


def test_bilinear_cfa_naming_pure_red_is_red():
    """kornia's CFA.BG must be our RGGB: a pure red scene comes out pure red."""
    out = pp.demosaic(pp.mosaic(flat((1.0, 0.0, 0.0))), "bilinear")
    assert torch.equal(out, flat((1.0, 0.0, 0.0)))


def _ramps(h: int, w: int, dtype=torch.float32) -> torch.Tensor:
    """Channels are different linear ramps in [0.1, 0.9]: R along x, G diagonal, B along y."""
    y, x = torch.meshgrid(torch.linspace(0, 1, h, dtype=dtype), torch.linspace(0, 1, w, dtype=dtype), indexing="ij")
    return torch.stack([0.1 + 0.8 * x, 0.2 + 0.3 * x + 0.3 * y, 0.9 - 0.7 * y])[None]


@pytest.mark.parametrize("method", ["bilinear", "malvar"])
def test_demosaic_exact_on_linear_ramps(method):
    scene = _ramps(16, 20, torch.float64)
    out = pp.demosaic(pp.mosaic(scene), method)
    assert torch.allclose(out[..., 2:-2, 2:-2], scene[..., 2:-2, 2:-2], atol=1e-12)


@pytest.mark.parametrize("method,name,border", [("bilinear", "bilinear", 1), ("malvar", "Malvar2004", 2)])
def test_demosaic_equals_colour_demosaicing_inside_border(method, name, border):
    """Ours (one conv2d, reflect padding) against colour_demosaicing's NumPy reference (scipy's
    symmetric padding): equal to round-off away from the ``border`` px where the paddings differ."""
    cd = pytest.importorskip("colour_demosaicing")
    bayer = torch.rand(2, 1, 24, 30, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    ref = np.stack([getattr(cd, f"demosaicing_CFA_Bayer_{name}")(b[0], "RGGB") for b in bayer.numpy()])
    ours = pp.demosaic(bayer, method, clip=False).permute(0, 2, 3, 1).numpy()
    inside = (slice(None), slice(border, -border), slice(border, -border))
    np.testing.assert_allclose(ours[inside], ref[inside], atol=1e-12, rtol=0)
    # float32, as the pipeline runs it
    ours32 = pp.demosaic(bayer.float(), method, clip=False).permute(0, 2, 3, 1).double().numpy()
    np.testing.assert_allclose(ours32[inside], ref[inside], atol=1e-5, rtol=0)


def test_malvar_gradient_correction_on_shared_curvature():
    """Channels sharing a curved (quadratic) component: bilinear errs by the curvature, Malvar's
    cross-channel Laplacian correction removes at least half of it."""
    y, x = torch.meshgrid(*(torch.linspace(-1, 1, 16, dtype=torch.float64),) * 2, indexing="ij")
    q = 0.3 * (x**2 + 0.5 * y**2)
    scene = torch.stack([0.2 + q, 0.3 + q, 0.1 + q])[None]
    err = {m: (pp.demosaic(pp.mosaic(scene), m) - scene)[..., 2:-2, 2:-2].abs().max() for m in ("bilinear", "malvar")}
    assert err["malvar"] <= 0.5 * err["bilinear"] + 1e-12, err  # the G gain alpha = 1/2 halves it
    assert err["malvar"] > 0


def test_demosaic_quality_ordering_on_a_photo(photo_linear):
    bayer = pp.mosaic(photo_linear)
    scores = {m: psnr(pp.demosaic(bayer, m)[..., 4:-4, 4:-4], photo_linear[..., 4:-4, 4:-4]) for m in pp.DEMOSAIC_METHODS}
    assert scores["malvar"] > scores["bilinear"] + 1.0, scores
    assert scores["menon"] >= scores["bilinear"], scores
    assert scores["demosaicnet"] > scores["malvar"], scores  # also proves its flip/crop alignment
    assert scores["bilinear"] > 25, scores


def test_demosaicnet_colour_chart():
    """Six flat patches: DemosaicNet keeps each colour (checks the RGGB->GRBG flip)."""
    chart = [(0.8, 0.1, 0.1), (0.1, 0.7, 0.1), (0.1, 0.1, 0.8), (0.7, 0.7, 0.1), (0.1, 0.6, 0.7), (0.6, 0.2, 0.6)]
    scene = torch.cat([torch.cat([flat(c, 16, 16) for c in chart[:3]], 3), torch.cat([flat(c, 16, 16) for c in chart[3:]], 3)], 2)
    out = pp.demosaic(pp.mosaic(scene), "demosaicnet")
    for i, c in enumerate(chart):
        r, k = divmod(i, 3)
        centre = out[0, :, r * 16 + 4 : r * 16 + 12, k * 16 + 4 : k * 16 + 12].mean(dim=(1, 2))
        assert torch.allclose(centre, torch.tensor(c), atol=0.02), (c, centre)


def test_demosaicnet_is_cached_frozen_and_differentiable():
    assert pp.load_demosaicnet("cpu") is pp.load_demosaicnet(torch.device("cpu"))
    assert not any(p.requires_grad for p in pp.load_demosaicnet("cpu").parameters())
    bayer = torch.rand(1, 1, 8, 8, requires_grad=True)
    pp.demosaic(bayer, "demosaicnet", clip=False).sum().backward()
    assert bayer.grad is not None and bayer.grad.abs().sum() > 0


def test_demosaicnet_missing_package_names_backend(monkeypatch):
    monkeypatch.setitem(sys.modules, "demosaicnet", None)
    monkeypatch.setattr(dm, "_DEMOSAICNET_CACHE", {})
    with pytest.raises(ImportError, match=r"demosaic backend 'demosaicnet' needs the demosaicnet package.*pip install"):
        pp.demosaic(torch.rand(1, 1, 8, 8), "demosaicnet")


def test_menon_keeps_device_and_dtype():
    bayer = torch.rand(2, 1, 8, 10, dtype=torch.float64)
    out = pp.demosaic(bayer, "menon")
    assert out.shape == (2, 3, 8, 10) and out.dtype == torch.float64 and out.device == bayer.device
    # each image demosaicked separately
    assert torch.allclose(out[1:], pp.demosaic(bayer[1:], "menon"))


@pytest.mark.parametrize("method", pp.DEMOSAIC_METHODS)
def test_demosaic_errors(method):
    with pytest.raises(ValueError, match=r"expected a Bayer mosaic of shape \[B,1,H,W\], got shape \(1, 3, 8, 8\)"):
        pp.demosaic(torch.zeros(1, 3, 8, 8), method)
    with pytest.raises(ValueError, match="even height and width >= 4, got 8x7"):
        pp.demosaic(torch.zeros(1, 1, 8, 7), method)
    with pytest.raises(ValueError, match="even height and width >= 4, got 2x2"):
        pp.demosaic(torch.zeros(1, 1, 2, 2), method)


def test_demosaic_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'ahd'; expected one of bilinear, malvar, menon, demosaicnet"):
        pp.demosaic(torch.zeros(1, 1, 4, 4), "ahd")


@pytest.mark.parametrize("fn", [pp.demosaic_bilinear, pp.demosaic_malvar])
def test_demosaic_gradcheck(fn):
    bayer = torch.rand(1, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (bayer,))


def test_reflect_pad_even_small_images():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    padded = dm.reflect_pad_even(x, 32)
    assert padded.shape == (1, 1, 68, 68)
    # CFA phase kept: every pixel at even offset from the origin copies an even-indexed pixel
    assert set(padded[0, 0, 0::2, 0::2].unique().tolist()) <= {0.0, 2.0, 8.0, 10.0}
    with pytest.raises(ValueError, match="pad must be even"):
        dm.reflect_pad_even(x, 3)


# ----------------------------------------------------------------------------- denoise
def test_denoise_none_is_identity_and_errors():
    rgb = torch.rand(1, 3, 8, 8)
    assert pp.denoise(rgb, "none") is rgb
    assert pp.denoise(rgb, "guided", sigma=0.0) is rgb
    with pytest.raises(ValueError, match="unknown method 'bm3d'; expected one of none, guided, ffdnet"):
        pp.denoise(rgb, "bm3d")
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        pp.denoise(rgb, "guided", sigma=-0.1)
    with pytest.raises(ValueError, match=r"denoise: expected an RGB image of shape \[B,3,H,W\]"):
        pp.denoise(torch.rand(1, 4, 8, 8), "guided")


def test_guided_denoise_improves_psnr_and_keeps_flat(photo_linear):
    g = torch.Generator().manual_seed(3)
    clean = photo_linear
    noisy = (clean + 0.03 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    out = pp.denoise(noisy, "guided", sigma=0.03)
    assert out.shape == clean.shape
    assert psnr(out, clean) > psnr(noisy, clean) + 2.0
    scene = flat(COLOUR, 8, 8)
    assert torch.allclose(pp.denoise(scene, "guided", 0.01), scene, atol=1e-6)


KAIR_FFDNET_KEYS = [f"model.{i}.{p}" for i in range(0, 23, 2) for p in ("weight", "bias")]


@pytest.fixture()
def ffdnet_file(tmp_path):
    """A randomly initialised colour FFDNet saved as KAIR would (plain state dict)."""
    torch.manual_seed(0)
    net = pp.FFDNet()
    path = tmp_path / "ffdnet_color.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_ffdnet_layout_matches_kair():
    net = pp.FFDNet()
    sd = net.state_dict()
    assert list(sd) == KAIR_FFDNET_KEYS
    assert sd["model.0.weight"].shape == (96, 13, 3, 3)
    assert sd["model.22.weight"].shape == (12, 96, 3, 3)
    assert sum(p.numel() for p in net.parameters()) == 96 * 13 * 9 + 96 + 10 * (96 * 96 * 9 + 96) + 12 * 96 * 9 + 12


def test_ffdnet_load_round_trip_and_sigma(ffdnet_file, monkeypatch):
    net, path = ffdnet_file
    loaded = pp.load_ffdnet(path)
    assert loaded is pp.load_ffdnet(str(path))  # cached
    x = torch.rand(2, 3, 10, 14)
    with torch.no_grad():
        ref = net.eval()(x, 0.01)
        out = loaded(x, 0.01)
        assert out.shape == (2, 3, 10, 14)
        assert torch.allclose(out, ref)
        odd = loaded(torch.rand(1, 3, 9, 7), 0.02)
        assert odd.shape == (1, 3, 9, 7)
        # the noise map is an input: another sigma changes the output; per-image sigma works
        assert not torch.allclose(loaded(x, 0.1), out)
        per_image = loaded(x, torch.tensor([0.01, 0.1]))
        assert torch.allclose(per_image[0], out[0]) and torch.allclose(per_image[1], loaded(x[1:], 0.1)[0])
    monkeypatch.setenv(pp.FFDNET_ENV, str(path))
    via_env = pp.denoise(x, "ffdnet", sigma=0.01)
    assert torch.allclose(via_env, ref.clamp(0, 1))


def test_ffdnet_missing_and_bad_weights(tmp_path, monkeypatch):
    monkeypatch.delenv(pp.FFDNET_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=r"KAIR's colour weights \(GPL-3.0, never bundled\).*UOTISP_FFDNET_WEIGHTS"):
        pp.denoise(torch.rand(1, 3, 8, 8), "ffdnet")
    missing = tmp_path / "nope.pth"
    with pytest.raises(FileNotFoundError, match=f"weights file {missing} does not exist"):
        pp.load_ffdnet(missing)
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=f"{corrupt}: not a readable PyTorch state dict"):
        pp.load_ffdnet(corrupt)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match=f"{wrong}: expected an FFDNet state dict with keys model.0.weight"):
        pp.load_ffdnet(wrong)
    grey = tmp_path / "ffdnet_gray.pth"
    torch.save(pp.FFDNet(in_channels=1, width=8, n_layers=3).state_dict(), grey)
    with pytest.raises(ValueError, match=f"{grey}: state dict does not match the colour FFDNet layout"):
        pp.load_ffdnet(grey)


def test_ffdnet_input_errors():
    net = pp.FFDNet(width=8, n_layers=3)
    with pytest.raises(ValueError, match=r"FFDNet: expected an image of shape \[B,3,H,W\]"):
        net(torch.rand(1, 1, 8, 8), 0.01)
    with pytest.raises(ValueError, match="one value per image"):
        net(torch.rand(2, 3, 8, 8), torch.tensor([0.1, 0.2, 0.3]))


# ----------------------------------------------------------------------------- tone
def test_gamma_known_values_and_finite_gradient_at_zero():
    x = torch.tensor([0.0, 0.5, 1.0, 1.5, -0.2], requires_grad=True)
    out = pp.gamma(x, 1 / 2.2)
    assert torch.allclose(out, torch.tensor([0.0, 0.5 ** (1 / 2.2), 1.0, 1.0, 0.0]))
    out.sum().backward()
    assert torch.isfinite(x.grad).all()
    assert abs(float(pp.gamma(torch.tensor(1e-7))) - 1e-7 ** (1 / 2.2)) < 2.5e-3  # linear toe stays close
    with pytest.raises(ValueError, match="exponent must be > 0"):
        pp.gamma(x, 0.0)
    with pytest.raises(TypeError, match="floating-point"):
        pp.gamma(torch.tensor([1, 2]))


def test_srgb_known_values():
    out = pp.apply_gamma(flat((0.002, 0.5, 1.0), 2, 2), "srgb")
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.002 * 12.92, 1.055 * 0.5 ** (1 / 2.4) - 0.055, 1.0]))
    assert torch.equal(pp.apply_gamma(flat((0.2, 1.5, -1.0)), "none"), flat((0.2, 1.0, 0.0)))
    with pytest.raises(ValueError, match="unknown mode 'log'; expected one of borelli, srgb, none"):
        pp.apply_gamma(flat(COLOUR), "log")


# ----------------------------------------------------------------------------- gradcheck (float64)
def test_gradcheck_normalize_white_balance_gamma():
    g = torch.Generator().manual_seed(4)
    raw = (100 + 800 * torch.rand(1, 4, 2, 2, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(lambda r: pp.normalize(r, 0.0, 1023.0), (raw,))
    packed = (0.1 + 0.3 * torch.rand(1, 4, 2, 2, generator=g, dtype=torch.float64)).requires_grad_()
    gains = torch.tensor([1.5, 1.0, 1.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pp.white_balance, (packed, gains))
    x = (0.1 + 0.8 * torch.rand(1, 3, 2, 2, generator=g, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(pp.gamma, (x,))
    assert torch.autograd.gradcheck(pp.srgb, (x,))


# ----------------------------------------------------------------------------- pipeline
def test_config_defaults_preset_and_validation():
    cfg = pp.PreprocessConfig()
    assert (cfg.black, cfg.white, cfg.order, cfg.wb, cfg.demosaic, cfg.denoise, cfg.gamma) == (
        0.0, 1023.0, "RGGB", "none", "malvar", "none", "borelli")
    b = pp.PreprocessConfig.borelli()
    assert (b.wb, b.demosaic, b.denoise, b.denoise_sigma) == ((1.0, 1.0, 1.0), "demosaicnet", "ffdnet", 0.01)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.demosaic = "menon"  # type: ignore[misc]
    assert pp.PreprocessConfig(wb=[2, 1, 1.5]).wb == (2.0, 1.0, 1.5)
    for kw, msg in [
        ({"demosaic": "vng"}, "unknown demosaic 'vng'; expected one of bilinear, malvar, menon, demosaicnet"),
        ({"denoise": "bm3d"}, "unknown denoise 'bm3d'"),
        ({"gamma": "2.2"}, "unknown gamma '2.2'"),
        ({"order": "RGBG"}, "unknown order 'RGBG'"),
        ({"wb": "auto"}, "unknown wb 'auto'"),
        ({"wb": (1.0, 0.0, 1.0)}, "wb gains must be 3 positive numbers"),
        ({"black": (0, 0)}, r"black must be a number or 4 values \[R,Gr,Gb,B\]"),
        ({"denoise_sigma": -1.0}, "denoise_sigma must be >= 0"),
    ]:
        with pytest.raises(ValueError, match=msg):
            pp.PreprocessConfig(**kw)


def test_preprocessor_known_values_and_stages():
    raw = torch.full((2, 4, 3, 5), 512, dtype=torch.int16)
    linear = pp.Preprocessor(pp.PreprocessConfig(gamma="none"))(raw)
    assert linear.shape == (2, 3, 6, 10)
    assert torch.allclose(linear, torch.full_like(linear, 512 / 1023))
    st = pp.Preprocessor().stages(raw)
    assert tuple(st) == pp.Preprocessor.STAGES
    assert st["normalized"].shape == st["white_balanced"].shape == (2, 4, 3, 5)
    assert st["bayer"].shape == (2, 1, 6, 10)
    assert st["demosaiced"].shape == st["denoised"].shape == st["output"].shape == (2, 3, 6, 10)
    assert torch.allclose(st["output"], torch.full_like(linear, (512 / 1023) ** (1 / 2.2)))


def test_preprocessor_order_black_levels_and_wb():
    g = torch.Generator().manual_seed(5)
    canonical = 64 + torch.randint(0, 900, (1, 4, 4, 4), generator=g).float()
    grbg = pp.reorder_channels(canonical, "GRBG", inverse=True)
    a = pp.Preprocessor(pp.PreprocessConfig(black=64, wb=(2.0, 1.0, 1.5)))(canonical)
    b = pp.Preprocessor(pp.PreprocessConfig(black=64, order="GRBG", wb=(2.0, 1.0, 1.5)))(grbg)
    assert torch.equal(a, b)
    wb = pp.Preprocessor(pp.PreprocessConfig(black=64, wb=(2.0, 1.0, 1.5), demosaic="bilinear", gamma="none")).stages(canonical)
    expected = ((canonical - 64) / (1023 - 64)).clamp(0, 1) * torch.tensor([2.0, 1, 1, 1.5]).view(1, 4, 1, 1)
    assert torch.allclose(wb["white_balanced"], expected.clamp(0, 1))


@pytest.mark.parametrize("device", DEVICES)
def test_preprocessor_differentiable_and_device(device):
    raw = (1023 * torch.rand(1, 4, 4, 4)).to(device).requires_grad_()
    for demosaic in ("bilinear", "malvar", "demosaicnet"):
        cfg = pp.PreprocessConfig(demosaic=demosaic, denoise="guided", wb="gray_world")
        out = pp.Preprocessor(cfg)(raw)
        assert out.device == raw.device and out.dtype == torch.float32
        assert 0 <= float(out.detach().min()) and float(out.detach().max()) <= 1
        (grad,) = torch.autograd.grad(out.sum(), raw)
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    menon = pp.Preprocessor(pp.PreprocessConfig(demosaic="menon"))(raw.detach())
    assert menon.device == raw.device


def test_preprocessor_borelli_without_weights_says_where(monkeypatch):
    monkeypatch.delenv(pp.FFDNET_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match="UOTISP_FFDNET_WEIGHTS"):
        pp.Preprocessor(pp.PreprocessConfig.borelli())(torch.zeros(1, 4, 4, 4))
