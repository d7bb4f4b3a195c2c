"""Issue 10: the cost's reference colour, the structure cost, cost_check, scaled R1, residual starts."""

from __future__ import annotations

import pytest
import torch

from uotisp_lib import uot
from uotisp_lib.data.camera import DEFAULT_CAMERA, forward
from uotisp_lib.models import build_isp


def _scene(b=2, side=16, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(b, 3, side // 4, side // 4, generator=g, dtype=dtype)
    return torch.nn.functional.interpolate(base, size=(side, side), mode="bilinear", align_corners=False) * 0.7 + 0.15


# ------------------------------------------------------------------------------ reference colour
def test_camera_illuminant_is_the_middle_of_the_gain_ranges():
    r, g, b = uot.camera_illuminant()
    assert (r, g, b) == pytest.approx((2.15, 1.0, 1.7))


def test_reference_gains_modes():
    x = torch.rand(3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    cam = uot.reference_gains(x, "camera")
    assert cam.shape == (3, 3)
    torch.testing.assert_close(cam, torch.tensor([[2.15, 1.0, 1.7]] * 3))
    given = torch.tensor([1.5, 1.0, 2.0])
    torch.testing.assert_close(uot.reference_gains(x, given), given.expand(3, 3))
    with pytest.raises(ValueError, match="unknown white balance 'auto'"):
        uot.reference_gains(x, "auto")
    with pytest.raises(ValueError, match=r"positive gains of shape \[3\] or \[3,3\]"):
        uot.reference_gains(x, torch.tensor([1.0, -1.0, 1.0]))


def test_camera_reference_inverts_a_capture_under_the_typical_illuminant():
    """A clean RAW taken under the camera's typical illuminant renders back to the scene (up to
    demosaicing), and a warm scene stays warm, which gray world undoes."""
    warm = torch.zeros(1, 3, 16, 16)
    warm[:, 0], warm[:, 1], warm[:, 2] = 0.7, 0.45, 0.3
    x = forward(warm, torch.tensor(uot.camera_illuminant()), noise=False)
    ref = uot.naive_isp(x, wb="camera")
    torch.testing.assert_close(ref, warm, atol=2e-3, rtol=0)
    gw = uot.naive_isp(x, wb="gray_world")
    assert float((gw[:, 0] - gw[:, 2]).abs().max()) < 0.02  # gray world made it gray
    # explicit gains (a DNG's 1 / AsShotNeutral) equal to the capture's are exact too
    g = torch.tensor([2.3, 1.0, 1.55])
    torch.testing.assert_close(uot.naive_isp(forward(warm, g, noise=False), wb=g), warm, atol=2e-3, rtol=0)


def test_uot_config_reference_and_r1_fields():
    cfg = uot.UOTConfig()
    assert cfg.reference_wb == "camera" and cfg.r1_scale == "pixels"
    x = torch.rand(2, 4, 4, 4)
    torch.testing.assert_close(cfg.reference(x), uot.naive_isp(x, wb="camera"))
    with pytest.raises(ValueError, match="reference_wb must be one of camera, gray_world"):
        uot.UOTConfig(reference_wb="none")
    with pytest.raises(ValueError, match="r1_scale must be one of pixels, none"):
        uot.UOTConfig(r1_scale="batch")


# ------------------------------------------------------------------------------- structure cost
def test_structure_cost_zero_at_reference_and_near_one_for_unrelated():
    x = torch.rand(4, 4, 16, 16)
    ref = _scene(4, 32, seed=1)
    other = _scene(4, 32, seed=2)
    c = uot.structure_cost(x, ref, reference=ref)
    assert c.shape == (4,)
    torch.testing.assert_close(c, torch.zeros(4), atol=1e-7, rtol=0)
    far = uot.structure_cost(x, other, reference=ref)
    assert bool(((far > 0.5) & (far < 1.5)).all()), far


def test_structure_cost_ignores_global_colour_and_exposure():
    x = torch.rand(2, 4, 16, 16)
    ref = _scene(2, 32, seed=3)
    # exposure and black offset (an affine luma change) leave it unchanged up to eps
    assert float(uot.structure_cost(x, 0.6 * ref + 0.2, reference=ref).max()) < 1e-4
    # a chroma change that keeps BT.601 luma: add d * (1, -0.299/0.587 * ... ) with zero luma weight
    w = torch.tensor([0.299, 0.587, 0.114])
    direction = torch.tensor([1.0, 0.0, -0.299 / 0.114]).view(1, 3, 1, 1)
    assert abs(float((w.view(1, 3, 1, 1) * direction).sum())) < 1e-6
    tinted = ref + 0.02 * direction
    assert float(uot.structure_cost(x, tinted, reference=ref).max()) < 1e-6
    # a global colour cast (per-channel gains) changes it much less than moving the structure
    cast = ref * torch.tensor([1.15, 1.0, 0.8]).view(1, 3, 1, 1)
    shifted = torch.roll(ref, 3, dims=-1)
    assert float(uot.structure_cost(x, cast, reference=ref).max()) < 0.05 * float(
        uot.structure_cost(x, shifted, reference=ref).min()
    )
    # whereas the quadratic cost is not blind to the cast
    assert float(uot.quadratic_cost(x, cast, reference=ref).min()) > 1e-3


def test_structure_cost_exceptions():
    x = torch.rand(1, 4, 8, 8)
    ref = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"sigmas 0 <= s1 < s2"):
        uot.structure_cost(x, ref, reference=ref, sigmas=(3.0, 1.0))
    with pytest.raises(ValueError, match="structure_cost: tau must be"):
        uot.structure_cost(x, ref, reference=ref, tau=-1.0)
    with pytest.raises(ValueError, match=r"structure_cost: expected y and reference of shape \(1, 3, 16, 16\)"):
        uot.structure_cost(x, torch.rand(1, 3, 8, 8), reference=ref)


@pytest.mark.parametrize("name", sorted(uot.COSTS))
def test_cost_float64_gradcheck(name):
    x = (0.1 + 0.8 * torch.rand(1, 4, 4, 4, generator=torch.Generator().manual_seed(4))).double()
    ref = _scene(1, 8, seed=5, dtype=torch.float64)
    y = (ref + 0.05 * torch.randn(ref.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64))
    y = y.clamp(0.05, 0.95).requires_grad_(True)
    kw = {"sigmas": (0.8, 2.0)} if name == "structure" else {}
    cost = uot.get_cost(name, **kw)
    assert torch.autograd.gradcheck(lambda t: cost(x, t, reference=ref), (y,), eps=1e-6, atol=1e-5)


# ---------------------------------------------------------------------------------- cost_check
def test_cost_check_known_values():
    x = torch.rand(6, 4, 8, 8)
    gt = _scene(6, 16, seed=7)
    costs = {"quadratic": uot.get_cost("quadratic")}
    rows = uot.cost_check(x, gt, costs, {"truth": gt}, mapped=gt * 0 + 0.5, generator=torch.Generator().manual_seed(0))
    (r,) = rows
    assert r["cost"] == "quadratic" and r["reference"] == "truth"
    assert r["c_gt"] == 0.0 and r["c_ref"] == 0.0 and r["truth_ratio"] == 0.0
    assert r["c_map"] == pytest.approx(float(((gt - 0.5) ** 2).mean()), rel=1e-5)
    # a derangement: every patch is compared with another patch's ground truth, never its own
    assert r["c_wrong"] > 0.0


def test_cost_check_ranks_a_good_reference_above_a_bad_one():
    x = torch.rand(8, 4, 8, 8)
    gt = _scene(8, 16, seed=8)
    bad = gt.flip(-1)
    rows = uot.cost_check(x, gt, {"q": uot.get_cost("quadratic")}, {"good": gt + 0.01, "bad": bad})
    by = {r["reference"]: r for r in rows}
    assert by["good"]["truth_ratio"] < 0.1 < by["bad"]["truth_ratio"]
    assert all(r["c_map"] != r["c_map"] for r in rows)  # NaN without a mapped output
    with pytest.raises(ValueError, match="at least 2 patches"):
        uot.cost_check(x[:1], gt[:1], {"q": uot.get_cost("quadratic")}, {"g": gt[:1]})


# --------------------------------------------------------------------------------------- R1
def test_r1_scale_is_the_pixel_count():
    cfg = uot.UOTConfig()
    y = torch.rand(2, 3, 8, 12)
    assert uot.r1_scale_of(cfg, y) == 96.0
    assert uot.r1_scale_of(uot.UOTConfig(r1_scale="none"), y) == 1.0
    # mean-pooled linear potential: gradient w / (C H W) per entry; scaled penalty is size-free
    for side in (8, 16):
        t = torch.rand(2, 3, side, side)
        r1 = uot.r1_penalty(lambda z: z.mean(dim=(1, 2, 3)), t, gamma=2.0, scale=uot.r1_scale_of(cfg, t))
        # ||grad||^2 = 3 HW / (3 HW)^2 = 1 / (3 HW); times HW and gamma/2 = 1: 1/3
        assert float(r1) == pytest.approx(1.0 / 3.0, rel=1e-6)


# ------------------------------------------------------------------------ residual on reference
@pytest.mark.parametrize("arch", ["tinyraw", "unet_isp"])
def test_raw_networks_can_start_at_the_reference(arch):
    x = torch.rand(2, 4, 8, 8, generator=torch.Generator().manual_seed(9)) * 0.8 + 0.1
    net = build_isp(arch, base="reference")
    out = net(x)
    torch.testing.assert_close(out, uot.naive_isp(x, wb="camera"))
    out.mean().backward()
    grads = [p.grad for p in net.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0  # the residual learns
    plain = build_isp(arch)
    assert float(plain(x).detach().mean()) != pytest.approx(float(out.detach().mean()), abs=1e-3)


def test_residual_base_exceptions():
    with pytest.raises(ValueError, match="UNetISP: base must be one of"):
        build_isp("unet_isp", base="naive")
    with pytest.raises(ValueError, match="TinyRawNet: base='reference' needs width 12"):
        build_isp("tinyraw", base="reference", width=8)
    assert sum(p.numel() for p in build_isp("tinyraw", base="reference").parameters()) == 3060


def test_expert_reference_option_is_checked():
    from uotisp_lib.train import UOTTrainConfig

    assert UOTTrainConfig().expert_reference == "potential"
    with pytest.raises(ValueError, match="expert_reference must be 'potential' or 'objective'"):
        UOTTrainConfig(expert_reference="cost")


def test_default_camera_unchanged():
    assert DEFAULT_CAMERA.red_gain == (1.9, 2.4) and DEFAULT_CAMERA.blue_gain == (1.5, 1.9)
