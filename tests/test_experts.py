"""Tests of uotisp_lib.models.experts: expert views, logits, committee losses and balancing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from uotisp_lib.models.experts import (
    EXPERTS,
    ColourExpert,
    ExpertCommittee,
    FrequencyExpert,
    StructureExpert,
    build_committee,
)


def _img(b: int = 2, h: int = 16, w: int = 16, seed: int = 0) -> torch.Tensor:
    return 0.1 + 0.8 * torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


class Stub(nn.Module):
    """Logit = a * mean(img) + b per image (a known-value expert)."""

    def __init__(self, a: float, b: float) -> None:
        super().__init__()
        self.a, self.b = nn.Parameter(torch.tensor(float(a))), nn.Parameter(torch.tensor(float(b)))

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return self.a * img.mean(dim=(1, 2, 3)) + self.b


# ------------------------------------------------------------------------------------------ shapes
@pytest.mark.parametrize("name", list(EXPERTS))
def test_expert_logit_shape_and_spectral_norm(name):
    torch.manual_seed(0)
    e = EXPERTS[name](width=4)
    out = e(_img(3, 16, 24))
    assert out.shape == (3,) and bool(torch.isfinite(out).all())
    assert any(hasattr(m, "parametrizations") for m in e.modules())


def test_view_shapes():
    img = _img(2, 16, 24)
    assert ColourExpert(width=4).view(img).shape == (2, 2, 4, 6)
    assert StructureExpert(width=4).view(img).shape == (2, 2, 16, 24)
    assert FrequencyExpert(width=4).view(img).shape == (2, 1, 16, 24)


def test_colour_expert_histogram_branch():
    torch.manual_seed(0)
    e = ColourExpert(width=4, hist_bins=8)
    out = e(_img())
    assert out.shape == (2,)
    out.sum().backward()
    assert e.hist_head.parametrizations.weight.original.grad is not None  # the branch is used


@pytest.mark.parametrize("name", list(EXPERTS))
def test_expert_bad_input(name):
    e = EXPERTS[name](width=4)
    with pytest.raises(ValueError, match=r"expected an sRGB image of shape \[B,3,H,W\], got \(2, 4, 16, 16\)"):
        e.view(torch.rand(2, 4, 16, 16))
    with pytest.raises(TypeError, match="floating-point"):
        e.view(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_colour_expert_bad_size():
    with pytest.raises(ValueError, match="multiples of pool=4, got 10x12"):
        ColourExpert(width=4).view(torch.rand(1, 3, 10, 12))


# ------------------------------------------------------------------------------------ invariances
def test_colour_view_ignores_block_zero_mean_texture_and_gray_shifts():
    img = _img(2, 16, 16)
    e = ColourExpert(width=4, pool=4)
    checker = ((torch.arange(16)[:, None] + torch.arange(16)[None, :]) % 2).float() * 2 - 1  # +-1, zero mean per 2x2
    texture = torch.stack([0.05 * checker, -0.03 * checker, 0.04 * checker])[None]
    torch.testing.assert_close(e.view(img + texture), e.view(img), atol=1e-6, rtol=0)
    torch.testing.assert_close(e.view(img + 0.07), e.view(img), atol=1e-6, rtol=0)
    # but a colour cast changes it
    cast = torch.tensor([0.1, 0.0, -0.1]).view(1, 3, 1, 1)
    assert float((e.view(img + cast) - e.view(img)).abs().max()) > 0.05


def test_colour_view_is_blur_insensitive_compared_to_structure():
    import kornia

    # smooth colour field + fine gray texture, a caricature of a natural image
    g = torch.Generator().manual_seed(3)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 4, 4, generator=g), size=(32, 32), mode="bilinear")
    img = 0.1 + 0.7 * base + 0.1 * torch.rand(1, 1, 32, 32, generator=g)
    blurred = kornia.filters.gaussian_blur2d(img, (5, 5), (1.0, 1.0), border_type="reflect")
    col, struct = ColourExpert(width=4), StructureExpert(width=4)

    def rel(view):
        return float((view(blurred) - view(img)).norm() / view(img).sub(view(img).mean()).norm())

    assert rel(col.view) < 0.1 and rel(col.view) < 0.2 * rel(struct.view)


def test_structure_view_ignores_constant_offset_and_luma_preserving_chroma():
    img = _img(2, 16, 16)
    e = StructureExpert(width=4)
    torch.testing.assert_close(e.view(img + 0.05), e.view(img), atol=1e-6, rtol=0)
    # a per-pixel chroma pattern with zero BT.601 luma
    pattern = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.05
    chroma = torch.cat([pattern, -pattern * 0.299 / 0.587, torch.zeros_like(pattern)], dim=1)
    torch.testing.assert_close(e.view(img + chroma), e.view(img), atol=1e-6, rtol=0)
    assert float((e.view(img * 1.5) - e.view(img)).abs().max()) > 1e-3


def test_frequency_view_is_shift_invariant():
    img = _img(2, 16, 16)
    e = FrequencyExpert(width=4)
    shifted = torch.roll(img, shifts=(3, -5), dims=(2, 3))
    torch.testing.assert_close(e.view(shifted), e.view(img), atol=1e-5, rtol=0)
    # the DC term sits at the centre: log1p(mean gray * sqrt(HW))
    gray = 0.299 * img[:, 0] + 0.587 * img[:, 1] + 0.114 * img[:, 2]
    dc = torch.log1p(gray.mean(dim=(1, 2)) * 16)
    torch.testing.assert_close(e.view(img)[:, 0, 8, 8], dc, atol=1e-4, rtol=1e-4)


def test_frequency_view_gradient_finite_on_flat_image():
    img = torch.full((1, 3, 8, 8), 0.5, requires_grad=True)
    FrequencyExpert(width=4).view(img).sum().backward()
    assert bool(torch.isfinite(img.grad).all())


# --------------------------------------------------------------------------------------- committee
def test_d_loss_hinge_known_value_with_stubs():
    real = torch.full((2, 3, 4, 4), 0.5)
    fake = torch.full((3, 3, 4, 4), 0.25)
    # expert a: D(real) = 2*0.5 - 0.5 = 0.5 -> relu(1 - 0.5) = 0.5; D(fake) = 0 -> relu(1 + 0) = 1: 1.5
    # expert b: D(real) = -21*0.5 + 3 = -7.5 -> 8.5; D(fake) = -21*0.25 + 3 = -2.25 -> relu(-1.25) = 0: 8.5
    com = ExpertCommittee({"a": Stub(2.0, -0.5), "b": Stub(-21.0, 3.0)}, balance="none")
    total, logs = com.d_loss(real, fake)
    assert logs["a/d_loss"] == pytest.approx(1.5)
    assert logs["b/d_loss"] == pytest.approx(8.5)
    assert total.item() == pytest.approx(10.0)
    assert logs["a/d_real"] == pytest.approx(0.5) and logs["a/d_fake"] == pytest.approx(0.0)


def test_d_loss_detaches_fake():
    fake = torch.full((2, 3, 4, 4), 0.25, requires_grad=True)
    com = ExpertCommittee({"a": Stub(2.0, -0.5)}, balance="none")
    total, _ = com.d_loss(torch.rand(2, 3, 4, 4), fake)
    total.backward()
    assert fake.grad is None and com.experts["a"].a.grad is not None


def test_g_loss_none_known_value_and_logs():
    fake = torch.full((2, 3, 4, 4), 0.5, requires_grad=True)
    com = ExpertCommittee({"a": Stub(2.0, 0.0), "b": Stub(-1.0, 1.0)}, weights={"a": 0.5}, balance="none")
    total, logs = com.g_loss(fake)
    # -mean D_a = -1, -mean D_b = -0.5; weights a 0.5, b 1 -> -1.0
    assert total.item() == pytest.approx(-1.0)
    assert logs["a/g_loss"] == pytest.approx(-1.0) and logs["b/g_loss"] == pytest.approx(-0.5)
    # d(-mean_b(a * mean(img_b)))/d img: -a / (B * numel per image) everywhere
    assert logs["a/grad_norm"] == pytest.approx(2.0 / (2 * 48) * math.sqrt(96))
    assert logs["a/scale"] == 1.0


def test_committee_logs_every_expert():
    torch.manual_seed(0)
    com = build_committee(width=4)
    real, fake = _img(2), _img(2, seed=1).requires_grad_(True)
    _, dlogs = com.d_loss(real, fake)
    _, glogs = com.g_loss(fake)
    for name in ("colour", "structure", "frequency"):
        assert f"{name}/d_loss" in dlogs
        assert f"{name}/g_loss" in glogs and glogs[f"{name}/grad_norm"] > 0


def test_grad_norm_balancing_gives_each_expert_its_weight():
    torch.manual_seed(0)
    weights = {"colour": 1.0, "structure": 0.5, "frequency": 2.0}
    com = build_committee(width=4, weights=weights, balance="grad_norm")
    fake = _img(2, seed=2).requires_grad_(True)
    _, logs = com.g_loss(fake)
    norms = [logs[f"{n}/grad_norm"] for n in weights]
    assert max(norms) / min(norms) > 1.5  # unbalanced without rescaling, so the test means something
    com.eval()  # freeze spectral-norm power iterations so each expert is the same function below
    for name, w in weights.items():
        solo = ExpertCommittee({name: com.experts[name]}, {name: w}, balance="grad_norm")
        total, _ = solo.g_loss(fake)
        (g,) = torch.autograd.grad(total, fake)
        assert g.norm().item() == pytest.approx(w, rel=1e-4)
    total, logs = com.g_loss(fake)
    (g,) = torch.autograd.grad(total, fake)
    assert all(logs[f"{n}/scale"] == pytest.approx(1 / logs[f"{n}/grad_norm"]) for n in weights)
    assert g.norm().item() <= sum(weights.values()) + 1e-4


def test_grad_norm_relative_to_reference_loss():
    # a reference loss with a known gradient: 3 * mean(img) has gradient 3/numel everywhere
    fake = torch.full((2, 3, 4, 4), 0.5, requires_grad=True)
    reference = 3.0 * fake.mean()
    ref_norm = 3.0 / 96 * math.sqrt(96)
    com = ExpertCommittee({"a": Stub(2.0, 0.0), "b": Stub(-1.0, 1.0)}, weights={"a": 0.5, "b": 0.1})
    total, logs = com.g_loss(fake, reference=reference)
    assert logs["reference_grad_norm"] == pytest.approx(ref_norm, rel=1e-5)
    for name, w in (("a", 0.5), ("b", 0.1)):
        assert logs[f"{name}/scale"] == pytest.approx(ref_norm / logs[f"{name}/grad_norm"], rel=1e-5)
    # both stubs' gradients are constant images: a's is -2/96, b's +1/96 per pixel, so the weighted,
    # rescaled sum is (-0.5 + 0.1) * ref_norm / sqrt(96) per pixel
    (g,) = torch.autograd.grad(total, fake)
    torch.testing.assert_close(g, torch.full_like(g, -0.4 * ref_norm / math.sqrt(96)))
    # the scale does not depend on the stubs' own gradient scale (only on the reference's)
    com10 = ExpertCommittee({"a": Stub(20.0, 0.0), "b": Stub(-1.0, 1.0)}, weights={"a": 0.5, "b": 0.1})
    total10, _ = com10.g_loss(fake, reference=reference)
    torch.testing.assert_close(torch.autograd.grad(total10, fake)[0], g)


def test_grad_norm_scale_is_capped():
    fake = torch.full((1, 3, 4, 4), 0.5, requires_grad=True)
    com = ExpertCommittee({"flat": Stub(1e-9, 0.0)}, balance="grad_norm", max_scale=100.0)
    _, logs = com.g_loss(fake, reference=fake.sum())
    assert logs["flat/scale"] == 100.0


def test_grad_norm_wrt_parameters():
    gen = nn.Conv2d(3, 3, 1)
    x = _img(2)
    com = ExpertCommittee({"a": Stub(2.0, 0.0), "b": Stub(-7.0, 0.0)}, balance="grad_norm")
    total, logs = com.g_loss(gen(x), params_for_grad_norm=list(gen.parameters()))
    grads = torch.autograd.grad(total, list(gen.parameters()))
    assert math.sqrt(sum(float(g.pow(2).sum()) for g in grads)) == pytest.approx(0.0, abs=1e-5)  # opposite, equal
    assert logs["b/grad_norm"] == pytest.approx(3.5 * logs["a/grad_norm"], rel=1e-5)


def test_committee_bad_configuration():
    with pytest.raises(ValueError, match="unknown balance 'mean'"):
        ExpertCommittee({"a": Stub(1, 0)}, balance="mean")
    with pytest.raises(ValueError, match=r"weights given for unknown experts \['z'\]"):
        ExpertCommittee({"a": Stub(1, 0)}, weights={"z": 1.0})
    with pytest.raises(ValueError, match=r"unknown experts \['texture'\]"):
        build_committee(names=("colour", "texture"))
    com = ExpertCommittee({"a": Stub(1, 0)}, balance="grad_norm")
    with pytest.raises(ValueError, match="needs fake .* to require grad"):
        com.g_loss(_img(2))
    bad = ExpertCommittee({"bad": nn.Identity()}, balance="none")
    with pytest.raises(ValueError, match=r"expert 'bad' must return logits of shape \[2\]"):
        bad.d_loss(_img(2), _img(2))


@pytest.mark.parametrize("name", list(EXPERTS))
def test_view_gradcheck(name):
    view = EXPERTS[name](width=4).view
    img = _img(1, 8, 8, seed=4).double().requires_grad_(True)
    assert torch.autograd.gradcheck(view, (img,), fast_mode=True)


def test_expert_is_deterministic_for_a_seed():
    img = _img(2, 16, 16)
    outs = []
    for _ in range(2):
        torch.manual_seed(11)
        outs.append(build_committee(width=4).eval()(img))
    for name in outs[0]:
        assert torch.equal(outs[0][name], outs[1][name])
