"""Tests for uotisp_lib.losses: known values, invariants, errors, float64 gradcheck."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from uotisp_lib import losses, metrics
from uotisp_lib.models import ColorNet
from uotisp_lib.stats import channel_moments, gram_matrix, soft_histogram_uv, soft_histogram_y

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F64 = torch.float64


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _shuffle_pixels(x: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """Same pixels, different places (statistics ignore positions)."""
    b, c, h, w = x.shape
    perm = torch.randperm(h * w, generator=torch.Generator().manual_seed(seed))
    return x.flatten(2)[..., perm].view(b, c, h, w)


class TinyExtractor(nn.Module):
    """Two random conv layers standing in for VGG19 (returns both feature maps)."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.c1 = nn.Conv2d(3, 4, 3, padding=1).to(dtype)
        self.c2 = nn.Conv2d(4, 5, 3, stride=2, padding=1).to(dtype)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        f1 = torch.tanh(self.c1(x))
        return [f1, torch.tanh(self.c2(f1))]


# --------------------------------------------------------------------------- moment
def test_moment_identical_is_zero_and_offset_gives_c() -> None:
    y = 0.3 + 0.4 * _rand(2, 3, 8, 8)
    assert float(losses.moment_loss(y, y)) == 0.0
    for c in (0.1, -0.2):
        torch.testing.assert_close(losses.moment_loss(y + c, y), torch.tensor(abs(c)), rtol=0, atol=1e-6)


def test_moment_ignores_positions_and_size() -> None:
    y = _rand(2, 3, 8, 8)
    torch.testing.assert_close(losses.moment_loss(_shuffle_pixels(y), y), torch.tensor(0.0), rtol=0, atol=1e-6)
    assert losses.moment_loss(y, _rand(2, 3, 6, 10, seed=4)).shape == ()


def test_moment_matches_stats_definition() -> None:
    a, b = _rand(3, 3, 6, 6, seed=1), _rand(3, 3, 5, 7, seed=2) ** 2
    (mu_a, sd_a), (mu_b, sd_b) = channel_moments(a), channel_moments(b)
    expected = (mu_a - mu_b).abs().mean() + (sd_a - sd_b).abs().mean()
    torch.testing.assert_close(losses.moment_loss(a, b), expected)


# --------------------------------------------------------------------------- histograms
def test_histogram_losses_zero_for_identical_and_shuffled() -> None:
    y = _rand(2, 3, 8, 8)
    for fn in (losses.y_histogram_loss, losses.uv_histogram_loss):
        assert float(fn(y, y)) == 0.0
        assert float(fn(_shuffle_pixels(y), y)) < 1e-12


def test_uv_histogram_ignores_gray_brightness_but_y_does_not() -> None:
    dark, bright = torch.full((1, 3, 6, 6), 0.2), torch.full((1, 3, 6, 6), 0.8)
    assert float(losses.uv_histogram_loss(dark, bright)) < 1e-10  # gray: U = V = 0.5 for both
    assert float(losses.y_histogram_loss(dark, bright)) > 1e-4


def test_uv_histogram_sees_colour() -> None:
    red = torch.zeros(1, 3, 6, 6)
    red[:, 0] = 0.8
    green = torch.zeros(1, 3, 6, 6)
    green[:, 1] = 0.8
    assert float(losses.uv_histogram_loss(red, green)) > 1e-5


def test_histogram_losses_are_mse_of_stats_histograms() -> None:
    a, b = _rand(2, 3, 8, 8, seed=1), _rand(2, 3, 4, 4, seed=2)
    y_expected = (soft_histogram_y(a) - soft_histogram_y(b)).pow(2).mean()
    uv_expected = (soft_histogram_uv(a) - soft_histogram_uv(b)).pow(2).mean()
    torch.testing.assert_close(losses.y_histogram_loss(a, b), y_expected)
    torch.testing.assert_close(losses.uv_histogram_loss(a, b), uv_expected)


def test_histogram_losses_symmetric_and_monotone() -> None:
    y = 0.2 + 0.3 * _rand(1, 3, 8, 8)
    near, far = losses.y_histogram_loss(y + 0.05, y), losses.y_histogram_loss(y + 0.3, y)
    torch.testing.assert_close(losses.y_histogram_loss(y, y + 0.05), near)
    assert float(far) > float(near) > 0


# --------------------------------------------------------------------------- gram
def test_gram_known_value_with_identity_extractor() -> None:
    a, b = 0.5, 0.8
    x, y = torch.full((1, 3, 4, 4), a), torch.full((1, 3, 5, 3), b)
    # constant maps: every Gram entry is sum(a * a) / (C H W) = a^2 / 3
    expected = ((a * a - b * b) / 3) ** 2
    torch.testing.assert_close(losses.gram_loss(x, y, lambda t: [t]), torch.tensor(expected))
    torch.testing.assert_close(losses.gram_loss(x, y, lambda t: [t, t]), torch.tensor(2 * expected))


def test_gram_zero_for_identical_and_shuffled_pixels() -> None:
    y = _rand(2, 3, 8, 8)
    with torch.no_grad():
        assert float(losses.gram_loss(y, y, TinyExtractor())) == 0.0
    torch.testing.assert_close(
        losses.gram_loss(_shuffle_pixels(y), y, lambda t: [t]), torch.tensor(0.0), rtol=0, atol=1e-12
    )


def test_gram_matches_stats_definition() -> None:
    ext = TinyExtractor()
    a, b = _rand(2, 3, 8, 8, seed=1), _rand(2, 3, 8, 8, seed=2)
    with torch.no_grad():
        expected = sum((gram_matrix(fa) - gram_matrix(fb)).pow(2).mean() for fa, fb in zip(ext(a), ext(b)))
        torch.testing.assert_close(losses.gram_loss(a, b, ext), expected)
        torch.testing.assert_close(losses.GramLoss(ext)(a, b), expected)


def test_gram_target_branch_has_no_graph() -> None:
    ext = TinyExtractor()
    y_hat = _rand(1, 3, 8, 8).requires_grad_()
    losses.gram_loss(y_hat, _rand(1, 3, 8, 8, seed=2), ext).backward()
    assert y_hat.grad is not None and float(y_hat.grad.abs().sum()) > 0


def test_gram_errors() -> None:
    y = _rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"gram_loss: the extractor must return a non-empty list of \[B, C, H, W\]"):
        losses.gram_loss(y, y, lambda t: [])
    with pytest.raises(ValueError, match="gram_loss: the extractor must return"):
        losses.gram_loss(y, y, lambda t: [t.flatten()])
    with pytest.raises(TypeError, match="GramLoss: expected a callable feature extractor"):
        losses.GramLoss("vgg19")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- total variation
def test_tv_known_values() -> None:
    s, t = 0.01, 0.03
    j = torch.arange(16.0).view(1, 1, 1, 16).expand(2, 3, 9, 16)
    i = torch.arange(9.0).view(1, 1, 9, 1).expand(2, 3, 9, 16)
    torch.testing.assert_close(losses.tv_loss(s * j), torch.tensor(s))
    torch.testing.assert_close(losses.tv_loss(s * j + t * i), torch.tensor(s + t))
    assert float(losses.tv_loss(torch.full((1, 3, 5, 5), 0.7))) == 0.0


def test_tv_checkerboard() -> None:
    i, j = torch.meshgrid(torch.arange(6), torch.arange(6), indexing="ij")
    board = ((i + j) % 2).float().expand(1, 3, 6, 6)
    torch.testing.assert_close(losses.tv_loss(board), torch.tensor(2.0))


# --------------------------------------------------------------------------- hinge
def test_hinge_known_values() -> None:
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.5])
    # real: relu(1 - 2) = 0, relu(0.5) = 0.5 -> 0.25; fake: relu(-1) = 0, relu(1.5) = 1.5 -> 0.75
    torch.testing.assert_close(losses.hinge_d_loss(real, fake), torch.tensor(1.0))
    torch.testing.assert_close(losses.hinge_g_loss(fake), torch.tensor(0.75))
    # a perfect, confident discriminator pays nothing
    assert float(losses.hinge_d_loss(torch.full((2, 1, 4, 4), 3.0), torch.full((2, 1, 4, 4), -3.0))) == 0.0


def test_hinge_errors() -> None:
    with pytest.raises(ValueError, match="hinge_d_loss: expected real_logits as a non-empty floating-point"):
        losses.hinge_d_loss(torch.tensor([1, 2]), torch.tensor([0.0]))
    with pytest.raises(ValueError, match="hinge_g_loss: expected fake_logits"):
        losses.hinge_g_loss(torch.zeros(0))


# --------------------------------------------------------------------------- paired
def test_paired_losses_known_values() -> None:
    y = 0.2 + 0.5 * _rand(2, 3, 16, 16)
    for fn in (losses.l1_loss, losses.ssim_loss, losses.de2000_loss):
        torch.testing.assert_close(fn(y, y), torch.tensor(0.0), rtol=0, atol=1e-6)
    torch.testing.assert_close(losses.l1_loss(y + 0.1, y), torch.tensor(0.1))
    other = _rand(2, 3, 16, 16, seed=3)
    torch.testing.assert_close(losses.ssim_loss(other, y), 1 - metrics.ssim(other, y).mean())
    torch.testing.assert_close(losses.de2000_loss(other, y), metrics.delta_e2000(other, y).mean() / 100)
    torch.testing.assert_close(losses.de2000_loss(other, y, scale=1.0), metrics.delta_e2000(other, y).mean())


def test_paired_errors() -> None:
    a, b = _rand(1, 3, 16, 16), _rand(1, 3, 12, 16)
    for fn in (losses.l1_loss, losses.ssim_loss, losses.de2000_loss):
        with pytest.raises(ValueError, match=rf"{fn.__name__}: expected pred and target of the same shape"):
            fn(a, b)
    with pytest.raises(ValueError, match="scale must be > 0"):
        losses.de2000_loss(a, a, scale=0)


# --------------------------------------------------------------------------- shared input checks
@pytest.mark.parametrize(
    "fn", [losses.moment_loss, losses.y_histogram_loss, losses.uv_histogram_loss, losses.gram_loss]
)
def test_statistic_losses_input_errors(fn) -> None:  # noqa: ANN001
    args = (lambda t: [t],) if fn is losses.gram_loss else ()
    name = fn.__name__
    with pytest.raises(ValueError, match=rf"{name}: expected y_hat and y with the same batch size.*got 2 and 3"):
        fn(_rand(2, 3, 8, 8), _rand(3, 3, 8, 8), *args)
    with pytest.raises(ValueError, match=rf"{name}: expected y of shape \[B, 3, H, W\] \(sRGB\), got shape \(2, 4, 8, 8\)"):
        fn(_rand(2, 3, 8, 8), _rand(2, 4, 8, 8), *args)
    with pytest.raises(TypeError, match=rf"{name}: expected y_hat as a floating-point tensor.*uint8"):
        fn(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), _rand(2, 3, 8, 8), *args)


def test_tv_input_error() -> None:
    with pytest.raises(ValueError, match=r"tv_loss: expected y_hat of shape \[B, 3, H, W\]"):
        losses.tv_loss(torch.rand(3, 8, 8))


# --------------------------------------------------------------------------- gradcheck
def test_gradcheck_statistic_losses() -> None:
    a = _rand(2, 3, 4, 4, seed=1, dtype=F64).requires_grad_()
    b = _rand(2, 3, 5, 3, seed=2, dtype=F64).requires_grad_()
    ext = TinyExtractor(F64)
    for fn in (
        losses.moment_loss,
        losses.y_histogram_loss,
        losses.uv_histogram_loss,
        lambda p, q: losses.gram_loss(p, q, ext),
    ):
        assert torch.autograd.gradcheck(fn, (a, b))
    assert torch.autograd.gradcheck(losses.tv_loss, (a,))


def test_gradcheck_hinge_and_paired() -> None:
    real = torch.tensor([0.3, -1.7, 2.5], dtype=F64, requires_grad=True)
    fake = torch.tensor([-0.4, 1.2, -2.2], dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(losses.hinge_d_loss, (real, fake))
    assert torch.autograd.gradcheck(losses.hinge_g_loss, (fake,))
    p = (0.2 + 0.6 * _rand(1, 3, 11, 11, seed=1, dtype=F64)).requires_grad_()
    q = 0.2 + 0.6 * _rand(1, 3, 11, 11, seed=2, dtype=F64)
    for fn in (losses.l1_loss, losses.ssim_loss):
        assert torch.autograd.gradcheck(fn, (p, q))
    assert torch.autograd.gradcheck(losses.de2000_loss, (p[..., :3, :3].detach().requires_grad_(), q[..., :3, :3]))


# --------------------------------------------------------------------------- StatisticLoss
def test_borelli_weights() -> None:
    assert losses.BORELLI_WEIGHTS["stage1"] == {
        "moment": 1.0, "y_hist": 1.0, "uv_hist": 1.5, "gram": 1.0, "tv": 0.05, "adv": 0.0
    }
    assert losses.BORELLI_WEIGHTS["stage2"] == {
        "moment": 0.2, "y_hist": 1.0, "uv_hist": 1.5, "gram": 1.0, "tv": 0.01, "adv": 0.001
    }


def test_statistic_loss_stage1_is_weighted_sum() -> None:
    ext = TinyExtractor()
    crit = losses.StatisticLoss("stage1", ext)
    a, b = _rand(2, 3, 8, 8, seed=1), _rand(2, 3, 8, 8, seed=2)
    total, terms = crit(a, b)
    assert set(terms) == {"moment", "y_hist", "uv_hist", "gram", "tv", "total"}
    assert all(isinstance(v, float) for v in terms.values())
    expected = (
        losses.moment_loss(a, b)
        + losses.y_histogram_loss(a, b)
        + 1.5 * losses.uv_histogram_loss(a, b)
        + losses.gram_loss(a, b, ext)
        + 0.05 * losses.tv_loss(a)
    )
    torch.testing.assert_close(total, expected)
    assert terms["total"] == pytest.approx(float(expected.detach()), rel=1e-6)
    assert terms["tv"] == pytest.approx(float(losses.tv_loss(a)), rel=1e-6)


def test_statistic_loss_identical_inputs_leave_only_tv() -> None:
    y = _rand(2, 3, 8, 8)
    total, terms = losses.StatisticLoss("stage1", TinyExtractor())(y, y)
    torch.testing.assert_close(total, 0.05 * losses.tv_loss(y))
    assert terms["moment"] == terms["y_hist"] == terms["uv_hist"] == terms["gram"] == 0.0


def test_statistic_loss_stage2_adversarial_term() -> None:
    crit = losses.StatisticLoss("stage2", TinyExtractor())
    a, b = _rand(1, 3, 8, 8, seed=1), _rand(1, 3, 8, 8, seed=2)
    with pytest.raises(ValueError, match=r"adv term has weight > 0, so fake_logits = D\(y_hat\) is required"):
        crit(a, b)
    logits = torch.full((1, 1, 8, 8), 2.0)
    total, terms = crit(a, b, fake_logits=logits)
    total0, _ = crit(a, b, fake_logits=torch.zeros(1, 1, 8, 8))
    assert terms["adv"] == -2.0
    torch.testing.assert_close(total - total0, torch.tensor(-0.002), rtol=0, atol=1e-6)


def test_statistic_loss_custom_weights_and_errors() -> None:
    crit = losses.StatisticLoss({"moment": 2.0})
    a, b = _rand(1, 3, 8, 8, seed=1), _rand(1, 3, 8, 8, seed=2)
    total, terms = crit(a, b)
    assert set(terms) == {"moment", "total"}
    torch.testing.assert_close(total, 2 * losses.moment_loss(a, b))
    with pytest.raises(ValueError, match=r"unknown stage 'stage3'; expected one of \['stage1', 'stage2'\]"):
        losses.StatisticLoss("stage3")
    with pytest.raises(ValueError, match=r"unknown loss terms \['perceptual'\]"):
        losses.StatisticLoss({"perceptual": 1.0})
    with pytest.raises(ValueError, match="weights must be >= 0"):
        losses.StatisticLoss({"tv": -1.0})
    with pytest.raises(ValueError, match="gram term has weight > 0, so an extractor is required"):
        losses.StatisticLoss("stage1")
    with pytest.raises(ValueError, match="StatisticLoss: expected y_hat and y with the same batch size"):
        crit(_rand(2, 3, 8, 8), b)


@pytest.mark.parametrize("device", DEVICES)
def test_statistic_loss_trains_colornet(device: str) -> None:
    torch.manual_seed(0)
    net = ColorNet(width=8).to(device)
    crit = losses.StatisticLoss("stage1", TinyExtractor().to(device))
    x = _rand(2, 3, 8, 8, seed=1).to(device)
    target = (0.5 * _rand(2, 3, 8, 8, seed=2) + 0.4).to(device)
    total, _ = crit(net(x), target)
    assert total.device.type == device
    total.backward()
    assert float(net.conv1.weight.grad.abs().sum()) > 0 and float(net.head.weight.grad.abs().sum()) > 0
