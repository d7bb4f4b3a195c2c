"""Tests for uotisp_lib.models: parameter counts, identity inits, LUT axis order, shapes, errors, gradcheck."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call

from uotisp_lib.models import (
    ISP_REGISTRY,
    ColorNet,
    Lut3d,
    TinyRawNet,
    UNetDiscriminatorSN,
    UNetISP,
    build_isp,
    clamp01,
    colornet_strips,
    count_parameters,
    identity_lut,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --------------------------------------------------------------------------- parameter counts
@pytest.mark.parametrize(
    ("name", "kwargs", "expected"),
    [
        ("colornet", {}, 7_055),
        ("colornet", {"head": "lut3d"}, 7_055 + 107_811),
        ("tinyraw", {}, 3_060),
        ("unet_isp", {}, 991_980),
    ],
)
def test_parameter_counts(name: str, kwargs: dict, expected: int) -> None:
    assert count_parameters(build_isp(name, **kwargs)) == expected


def test_lut_adds_3_times_33_cubed() -> None:
    assert count_parameters(Lut3d(33)) == 3 * 33**3 == 107_811


def test_discriminator_parameter_count() -> None:
    assert count_parameters(UNetDiscriminatorSN(num_feat=64)) == 4_376_897


def test_count_parameters_trainable_only() -> None:
    net = ColorNet()
    net.conv1.requires_grad_(False)
    assert count_parameters(net, trainable_only=True) == 7_055 - (3 * 128 * 9 + 128)
    assert count_parameters(net) == 7_055


def test_registry_input_kinds() -> None:
    assert set(ISP_REGISTRY) == {"colornet", "tinyraw", "unet_isp"}
    kinds = {name: build_isp(name).input_kind for name in ISP_REGISTRY}
    assert kinds == {"colornet": "rgb", "tinyraw": "packed", "unet_isp": "packed"}


def test_build_is_deterministic_for_a_seed() -> None:
    torch.manual_seed(3)
    a = build_isp("tinyraw")
    torch.manual_seed(3)
    b = build_isp("tinyraw")
    x = _rand(1, 4, 6, 6)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


# --------------------------------------------------------------------------- colornet
def test_colornet_identity_when_residual_zeroed() -> None:
    net = ColorNet()
    with torch.no_grad():
        net.conv2.weight.zero_()
        net.conv2.bias.zero_()
    x = _rand(2, 3, 9, 11) * 1.4 - 0.2  # some values outside [0, 1] to see the clamp
    torch.testing.assert_close(net(x), x.clamp(0, 1), rtol=0, atol=1e-7)


def test_colornet_head_starts_at_identity() -> None:
    net = ColorNet()
    torch.testing.assert_close(net.head.weight.view(3, 3), torch.eye(3), rtol=0, atol=0)
    assert torch.count_nonzero(net.head.bias) == 0


def test_colornet_lut_identity_when_residual_zeroed() -> None:
    net = ColorNet(head="lut3d")
    with torch.no_grad():
        net.conv2.weight.zero_()
        net.conv2.bias.zero_()
    x = _rand(1, 3, 7, 5)
    torch.testing.assert_close(net(x), x, rtol=0, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_colornet_shape_range_device(device: str) -> None:
    torch.manual_seed(0)
    net = ColorNet().to(device)
    with torch.no_grad():
        net.conv2.weight.mul_(50.0)  # force values beyond [0, 1]
    with torch.no_grad():
        y = net(_rand(2, 3, 12, 10).to(device))
    assert y.shape == (2, 3, 12, 10) and y.device.type == device
    assert float(y.min()) == 0.0 and float(y.max()) == 1.0


def test_colornet_errors() -> None:
    net = ColorNet()
    with pytest.raises(ValueError, match=r"ColorNet: expected a pseudo-RGB batch of shape \[B, 3, H, W\]"):
        net(torch.rand(1, 4, 8, 8))
    with pytest.raises(TypeError, match="ColorNet: expected a floating-point tensor.*uint8"):
        net(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="head must be 'conv1x1' or 'lut3d'"):
        ColorNet(head="mlp")
    with pytest.raises(ValueError, match="clamp must be one of"):
        ColorNet(clamp="soft")


def test_colornet_gradcheck() -> None:
    torch.manual_seed(0)
    net = ColorNet(width=4).double()
    with torch.no_grad():  # keep outputs inside (0, 1), away from the clamp's kinks
        for p in (net.conv1.weight, net.conv2.weight):
            p.mul_(0.1)
    x = (0.3 + 0.4 * _rand(1, 3, 5, 5, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(net, (x,))


@pytest.mark.parametrize("head,clamp", [("conv1x1", "hard"), ("lut3d", "ste")])
@pytest.mark.parametrize("h,w", [(13, 9), (2, 7), (5, 2), (17, 17)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_colornet_strips_equal_the_dense_pass(head: str, clamp: str, h: int, w: int, channels_last: bool) -> None:
    """The no-grad strip path (4-row strips here: a 1-row last strip, images of 2 rows, of 2
    columns) gives the dense pass's outputs: the halo rows and conv2's reflect edges are right."""
    torch.manual_seed(1)
    net = ColorNet(width=16, head=head, clamp=clamp).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    x = _rand(2, 3, h, w, seed=2, dtype=torch.float64)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    dense = ColorNet(width=16, head=head, clamp=clamp).double()
    dense.load_state_dict(net.state_dict())
    dense.strip_pixels = 0
    with torch.no_grad():
        ref = dense(x)
        net.strip_pixels = 1  # more than 2 pixels: the strip path, max(4, 1 // w) = 4 rows a strip
        got = net(x)
    assert 0.1 < float(((ref > 0) & (ref < 1)).double().mean())  # not all clamped
    assert torch.allclose(got, ref, rtol=0, atol=1e-12)
    assert torch.equal(colornet_strips(net, x, 1), got)


def test_colornet_strips_only_without_gradients() -> None:
    """With gradients enabled the dense pass runs (the strips would copy every hidden strip for
    autograd); both give the same values, and the gradient flows."""
    net = ColorNet(width=8).eval()
    net.strip_pixels = 1
    x = _rand(1, 3, 10, 6).requires_grad_()
    y = net(x)
    assert y.grad_fn is not None and y.grad_fn.name() != "CopySlices"
    y.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    with torch.no_grad():
        assert torch.allclose(net(x), y.detach(), atol=1e-6)


# --------------------------------------------------------------------------- 3-D LUT
def test_identity_lut_is_identity_map() -> None:
    lut = Lut3d(33)
    x = _rand(2, 3, 16, 16)
    torch.testing.assert_close(lut(x), x, rtol=0, atol=1e-6)


def _lut_from(fn, size: int) -> torch.Tensor:  # noqa: ANN001
    """Table [3, L, L, L] indexed [c, b, g, r] holding fn(r, g, b) at the lattice points."""
    axis = torch.arange(size, dtype=torch.float64) / (size - 1)
    b, g, r = torch.meshgrid(axis, axis, axis, indexing="ij")
    return torch.stack(fn(r, g, b))


def test_identity_lut_layout() -> None:
    lut = identity_lut(5)
    assert lut.shape == (3, 5, 5, 5)
    torch.testing.assert_close(lut[:, 1, 2, 3], torch.tensor([0.75, 0.5, 0.25]))  # [c, b, g, r] -> (r, g, b)


def _colour_fn(r: torch.Tensor, g: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return r * r, 0.5 * g + 0.25 * b, b * (1 - r)  # asymmetric: catches a swapped axis


def test_lut_reproduces_known_function_at_lattice_points() -> None:
    size = 5
    lut = Lut3d(size).double()
    with torch.no_grad():
        lut.lut.copy_(_lut_from(_colour_fn, size))
    idx = torch.tensor([[0, 1, 4, 2, 3, 1], [3, 0, 2, 4, 1, 1], [1, 4, 0, 2, 3, 2]], dtype=torch.float64)
    rgb = (idx / (size - 1)).view(1, 3, 2, 3)
    expected = torch.stack(_colour_fn(*rgb.unbind(1)), dim=1)
    torch.testing.assert_close(lut(rgb), expected, rtol=0, atol=1e-12)


def test_lut_trilinear_is_exact_for_affine_functions() -> None:
    lut = Lut3d(4).double()
    with torch.no_grad():
        lut.lut.copy_(_lut_from(lambda r, g, b: (0.2 * r + 0.7 * g + 0.1 * b, 1 - b, 0.5 * r + 0.1), 4))
    x = _rand(1, 3, 6, 6, dtype=torch.float64)
    r, g, b = x.unbind(1)
    expected = torch.stack([0.2 * r + 0.7 * g + 0.1 * b, 1 - b, 0.5 * r + 0.1], dim=1)
    torch.testing.assert_close(lut(x), expected, rtol=0, atol=1e-12)


def test_lut_gradcheck() -> None:
    lut = Lut3d(3).double()
    with torch.no_grad():
        lut.lut.add_(0.05 * torch.randn(lut.lut.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    # stay away from lattice planes (0, 0.5, 1) where trilinear interpolation has kinks
    x = (0.1 + 0.3 * _rand(1, 3, 2, 3, dtype=torch.float64)).requires_grad_()
    table = lut.lut.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda inp, t: functional_call(lut, {"lut": t}, (inp,)), (x, table))


def test_lut_errors() -> None:
    with pytest.raises(ValueError, match="identity_lut: size must be >= 2"):
        Lut3d(1)
    with pytest.raises(ValueError, match=r"Lut3d: expected an RGB batch of shape \[B, 3, H, W\]"):
        Lut3d(3)(torch.rand(3, 8, 8))


# --------------------------------------------------------------------------- tinyraw and unet_isp
@pytest.mark.parametrize("name", ["tinyraw", "unet_isp"])
def test_packed_models_double_the_size(name: str) -> None:
    torch.manual_seed(0)
    net = build_isp(name)
    for h, w in [(8, 8), (10, 14), (5, 7)]:
        with torch.no_grad():
            y = net(_rand(2, 4, h, w))
        assert y.shape == (2, 3, 2 * h, 2 * w)
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


@pytest.mark.parametrize("name", ["tinyraw", "unet_isp"])
def test_packed_models_errors(name: str) -> None:
    net = build_isp(name)
    with pytest.raises(ValueError, match=r"expected a packed RAW batch \[R, Gr, Gb, B\] of shape \[B, 4, H, W\]"):
        net(torch.rand(1, 3, 8, 8))
    with pytest.raises(TypeError, match="expected a floating-point tensor.*int16"):
        net(torch.zeros(1, 4, 8, 8, dtype=torch.int16))


def test_tinyraw_ste_clamp_keeps_gradient() -> None:
    torch.manual_seed(0)
    net = TinyRawNet()
    with torch.no_grad():
        net.conv3.bias.fill_(5.0)  # every output saturates at 1
    y = net(_rand(1, 4, 6, 6))
    assert torch.all(y == 1.0)
    y.sum().backward()
    assert net.conv3.bias.grad is not None and float(net.conv3.bias.grad.abs().sum()) > 0
    hard = TinyRawNet(clamp="hard")
    hard.load_state_dict(net.state_dict())
    hard(_rand(1, 4, 6, 6)).sum().backward()
    assert float(hard.conv3.bias.grad.abs().sum()) == 0.0


def test_clamp01_modes() -> None:
    x = torch.tensor([-0.5, 0.25, 1.5], requires_grad=True)
    ste = clamp01(x, "ste")
    torch.testing.assert_close(ste, torch.tensor([0.0, 0.25, 1.0]))
    ste.sum().backward()
    torch.testing.assert_close(x.grad, torch.ones(3))
    with pytest.raises(ValueError, match="clamp01: mode must be one of"):
        clamp01(x, "tanh")


@pytest.mark.parametrize("cls", [TinyRawNet, UNetISP])
def test_packed_models_gradcheck(cls: type) -> None:
    torch.manual_seed(0)
    net = cls(width=4).double() if cls is UNetISP else cls().double()
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(0.3)
        net.get_submodule("conv3" if cls is TinyRawNet else "tail.0").bias.fill_(0.5)  # outputs inside (0, 1)
    x = _rand(1, 4, 4, 4, dtype=torch.float64).requires_grad_()
    y = net(x).detach()
    assert 0.0 < float(y.min()) and float(y.max()) < 1.0
    assert torch.autograd.gradcheck(net, (x,))


def test_tinyraw_width_error() -> None:
    with pytest.raises(ValueError, match="multiple of 4"):
        TinyRawNet(width=10)


def test_build_isp_unknown_name() -> None:
    with pytest.raises(KeyError, match=r"unknown ISP 'pynet'; expected one of \['colornet', 'tinyraw', 'unet_isp'\]"):
        build_isp("pynet")


# --------------------------------------------------------------------------- discriminator
def test_discriminator_shapes_and_errors() -> None:
    torch.manual_seed(0)
    disc = UNetDiscriminatorSN(num_feat=4)
    assert disc(_rand(2, 3, 16, 24)).shape == (2, 1, 16, 24)
    with pytest.raises(ValueError, match="multiples of 8"):
        disc(_rand(1, 3, 12, 16))
    with pytest.raises(ValueError, match=r"expected images \[B, 3, H, W\]"):
        disc(_rand(1, 4, 16, 16))


def test_discriminator_spectral_norm_bounds_sigma() -> None:
    torch.manual_seed(0)
    disc = UNetDiscriminatorSN(num_feat=4).train()
    x = _rand(1, 3, 8, 8)
    for _ in range(30):  # power iteration: one step per training forward
        disc(x)
    for conv in [*disc.down, *disc.up, *disc.refine]:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1.0) < 1e-2


def test_discriminator_gradcheck() -> None:
    torch.manual_seed(0)
    disc = UNetDiscriminatorSN(num_feat=2).double().eval()
    x = _rand(1, 3, 8, 8, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(disc, (x,))


def test_potential_net_shapes_and_gradient():
    from uotisp_lib.models import PotentialNet

    torch.manual_seed(0)
    v = PotentialNet(width=4, levels=2)
    y = torch.rand(3, 3, 16, 20, requires_grad=True)
    out = v(y)
    assert out.shape == (3,)
    (g,) = torch.autograd.grad(out.sum(), y)
    assert g.abs().sum() > 0 and torch.isfinite(g).all()
    with pytest.raises(ValueError, match=r"expected sRGB \[B,3,H,W\]"):
        v(torch.rand(3, 4, 16, 16))


def test_potential_net_pool_sees_block_means_only() -> None:
    from uotisp_lib.models import PotentialNet

    torch.manual_seed(0)
    pooled = PotentialNet(width=4, levels=2, pool=4).double()
    plain = PotentialNet(width=4, levels=2).double()
    plain.load_state_dict(pooled.state_dict())
    y = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    # the pooled potential is the plain one on the 4x4 block means
    torch.testing.assert_close(pooled(y), plain(torch.nn.functional.avg_pool2d(y, 4)))
    # so a zero-mean pattern inside each block (noise, demosaicing texture) does not change it
    checker = (torch.arange(16).view(-1, 1) + torch.arange(24).view(1, -1)) % 2 * 2.0 - 1.0
    torch.testing.assert_close(pooled(y + 0.05 * checker), pooled(y))
    assert not torch.allclose(plain(y + 0.05 * checker), plain(y))
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: pooled(t), (y[:1].detach().clone().requires_grad_(True),), fast_mode=True)
    with pytest.raises(ValueError, match="multiples of pool=4"):
        pooled(torch.rand(1, 3, 16, 18, dtype=torch.float64))
    with pytest.raises(ValueError, match="pool must be an integer >= 1"):
        PotentialNet(pool=0)
