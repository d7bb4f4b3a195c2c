"""Tests of uotisp_lib.features: backbones (offline), weights loading, Gram extractor, Descriptor, cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from uotisp_lib import features as F


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _no_hub(monkeypatch, tmp_path):
    # never see (or write) a real cache: empty HF/torch hub dirs, no weights env vars
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(F.DINOV2_ENV, raising=False)
    monkeypatch.delenv(F.VGG19_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torchhub"))


def _chelsea(size: int = 224) -> torch.Tensor:
    import skimage.data

    img = torch.from_numpy(skimage.data.chelsea()).permute(2, 0, 1)[None].float() / 255.0
    return F.resize_square(img, size)


def test_efficientnet_lite0_weights_are_real():
    net = F.build_efficientnet_lite0()
    x = F.Normalize(F.LITE_MEAN, F.LITE_STD)(_chelsea())
    with torch.no_grad():
        top = int(net(x).argmax())
    assert 281 <= top <= 285  # ImageNet cat classes (tabby .. Egyptian cat)



def test_fold_batchnorm_same_logits_no_norm_left():
    net = F.build_efficientnet_lite0()
    folded = F.fold_batchnorm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())  # the input is not changed
    n_act = lambda m: sum(isinstance(x, torch.nn.ReLU6) for x in m.modules())  # noqa: E731
    assert n_act(folded) == n_act(net) > 0  # activations kept
    x = F.Normalize(F.LITE_MEAN, F.LITE_STD)(_chelsea())
    with torch.no_grad():
        ref, got = net(x), folded(x)
        got_cl = folded.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(got, ref, rtol=0, atol=1e-4 * ref.abs().max())
    assert torch.allclose(got_cl, ref, rtol=0, atol=1e-4 * ref.abs().max())
    assert int(got.argmax()) == int(ref.argmax())


def test_fold_batchnorm_float64_exact_and_rejects_unknown_layouts():
    net = F.build_efficientnet_lite0().double()
    x = torch.rand(2, 3, 64, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(F.fold_batchnorm(net).forward_features(x), net.forward_features(x), rtol=1e-9, atol=1e-10)
    odd = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    with pytest.raises(ValueError, match="fold_batchnorm: batch norms outside the known EfficientNet blocks"):
        F.fold_batchnorm(odd)


def test_fast_efficientnet_descriptor_equals_stock():
    net = F.build_efficientnet_lite0()
    fast, stock = F.EfficientNetDescriptor(net), F.EfficientNetDescriptor(net, fast=False)
    x = torch.rand(5, 3, 96, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a, b = fast(x), stock(x)
    assert a.shape == b.shape == (5, 1280) and a.is_contiguous()
    assert torch.allclose(torch.nn.functional.normalize(a, dim=1), torch.nn.functional.normalize(b, dim=1), atol=1e-5)


def test_backbone_fallback_and_shapes(caplog, monkeypatch):
    monkeypatch.setattr(F, "_warned", set())  # the fallback is logged once per process
    with caplog.at_level("WARNING", logger="uotisp_lib.features"):
        mod, name = F.load_backbone("auto")
        F.load_backbone("auto")
    assert name == "efficientnet_lite0"
    assert "DINOv2 weights not found" in caplog.text and "falling back" in caplog.text
    assert caplog.text.count("DINOv2 weights not found") == 1
    with torch.no_grad():
        d = mod(torch.rand(2, 3, 48, 80))
    assert d.shape == (2, 1280) and torch.isfinite(d).all()
    assert not any(p.requires_grad for p in mod.parameters())
    _, name = F.load_backbone("dinov2")  # explicit request without weights also falls back
    assert name == "efficientnet_lite0"
    with pytest.raises(ValueError, match="unknown backend 'clip'; expected one of auto, dinov2, efficientnet_lite0"):
        F.load_backbone("clip")


@pytest.fixture(scope="module")
def dino_ckpt(tmp_path_factory):
    """A randomly initialised vit_small_patch14_dinov2 (518 px position grid) saved as safetensors."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = timm.create_model(F.DINOV2_ARCH, pretrained=False)
    path = tmp_path_factory.mktemp("dino") / "dinov2_vits14.safetensors"
    save_file(model.state_dict(), str(path))
    return path, model


def test_dinov2_loads_local_weights(dino_ckpt, monkeypatch):
    path, ref = dino_ckpt
    mod, name = F.load_backbone("auto", weights=path)
    assert name == "dinov2"
    vit = mod.vit
    assert torch.equal(vit.blocks[3].attn.qkv.weight, ref.blocks[3].attn.qkv.weight)
    assert vit.pos_embed.shape == (1, 1 + 16 * 16, 384)  # resampled from 37x37 to 224 px
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        d = mod(x)
        tok = vit.forward_features(mod.norm(F.resize_square(x, 224)))
    assert d.shape == (2, 768)
    assert torch.allclose(d[:, :384], tok[:, 0]) and torch.allclose(d[:, 384:], tok[:, 1:].mean(1))
    monkeypatch.setenv(F.DINOV2_ENV, str(path))  # env var route
    assert F.find_dinov2_weights() == path


def test_dinov2_bad_weights(tmp_path, monkeypatch):
    with pytest.raises(F.WeightsError, match=r"nothere.pt: DINOv2 weights file \(from weights=\) does not exist"):
        F.load_backbone("dinov2", weights=tmp_path / "nothere.pt")
    monkeypatch.setenv(F.DINOV2_ENV, str(tmp_path / "env.pt"))
    with pytest.raises(F.WeightsError, match=r"env.pt: DINOv2 weights file \(from \$UOTISP_DINOV2_WEIGHTS\)"):
        F.find_dinov2_weights()
    junk = tmp_path / "junk.pth"
    torch.save({"foo": torch.zeros(3)}, junk)
    with pytest.raises(F.WeightsError, match=r"junk.pth: not a vit_small_patch14_dinov2 checkpoint"):
        F.load_backbone("dinov2", weights=junk)


def test_gram_extractor_offline_and_vgg_from_env(tmp_path, monkeypatch):
    g, name = F.load_gram_extractor("auto")
    assert name == "efficientnet_lite0"
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    feats = g(x)
    assert [f.shape[1] for f in feats] == [16, 24, 40, 112, 320]
    sum(f.square().mean() for f in feats).backward()  # differentiable w.r.t. the input (Gram loss)
    assert x.grad is not None and x.grad.abs().sum() > 0
    # VGG19 path: a random torchvision vgg19 state dict via $UOTISP_VGG19_WEIGHTS
    from torchvision.models.vgg import cfgs, make_layers

    vgg = torch.nn.Module()
    vgg.features = make_layers(cfgs["E"])  # same keys as torchvision vgg19().features, no classifier
    path = tmp_path / "vgg19.pth"
    torch.save(vgg.state_dict(), path)
    monkeypatch.setenv(F.VGG19_ENV, str(path))
    g2, name2 = F.load_gram_extractor("auto")
    assert name2 == "vgg19"
    with torch.no_grad():
        feats2 = g2(torch.rand(1, 3, 32, 32))
    assert [f.shape[1:] for f in feats2] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4), (512, 2, 2)]
    assert all((f >= 0).all() for f in feats2)  # ReLU outputs
    assert torch.equal(g2.features[0].weight, vgg.features[0].weight)
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    with pytest.raises(F.WeightsError, match=r"vgg19.pth: not torchvision vgg19 weights"):
        F.load_gram_extractor("vgg19")
    with pytest.raises(ValueError, match="unknown backend 'resnet'"):
        F.load_gram_extractor("resnet")


def test_gram_descriptor_size():
    feats = [torch.rand(2, 3, 4, 4), torch.rand(2, 5, 2, 2)]
    assert F.gram_descriptor(feats).shape == (2, 6 + 15)


@pytest.fixture(scope="module")
def descriptor():
    return F.Descriptor(backend="efficientnet_lite0", gram_backend="efficientnet_lite0", gram_size=64)


def test_descriptor_parts_and_weights(descriptor):
    x = torch.rand(3, 3, 40, 56, generator=torch.Generator().manual_seed(0))
    parts = descriptor.parts(x)
    assert set(parts) == {"backbone", "gram", "hist_y", "hist_uv"}
    for v in parts.values():
        assert torch.allclose(v.norm(dim=1), torch.ones(3), atol=1e-5)
    d = descriptor.describe(x)
    assert d.shape == (3, 1280 + 58944 + 64 + 1024) and d.dtype == torch.float32
    assert torch.allclose(d.norm(dim=1), torch.full((3,), 2.0), atol=1e-4)  # 4 unit parts, weight 1
    assert descriptor.backends == {"backbone": "efficientnet_lite0", "gram": "efficientnet_lite0",
                                   "hist_y": "soft_hist_y64", "hist_uv": "soft_hist_uv32"}
    # batching does not change values
    one = torch.cat([descriptor.describe(x[i : i + 1]) for i in range(3)])
    assert torch.allclose(one, d, atol=1e-5)
    pb = descriptor.describe_backbone(x)
    assert torch.allclose(pb, parts["backbone"], atol=1e-6)


def test_descriptor_hist_only_weights():
    d = F.Descriptor(weights={"hist_y": 2.0, "hist_uv": 1.0})
    assert set(d.backends) == {"hist_y", "hist_uv"}
    v = d.describe(torch.rand(2, 3, 8, 8))
    assert v.shape == (2, 64 + 1024)
    assert torch.allclose(v[:, :64].norm(dim=1), torch.full((2,), 2.0))
    with pytest.raises(ValueError, match="describe_backbone: the backbone part is disabled"):
        d.describe_backbone(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match=r"unknown parts \['dino'\]"):
        F.Descriptor(weights={"dino": 1.0})
    with pytest.raises(ValueError, match="weights must be >= 0 and not all 0"):
        F.Descriptor(weights={"hist_y": 0.0})
    with pytest.raises(ValueError, match=r"Descriptor.describe: expected float RGB images \[B,3,H,W\]"):
        d.describe(torch.rand(2, 4, 8, 8))


def test_descriptor_separates_colour_casts():
    d = F.Descriptor(weights={"hist_y": 1.0, "hist_uv": 1.0})
    base = _chelsea(64)
    warm = (base * torch.tensor([1.2, 1.0, 0.7]).view(1, 3, 1, 1)).clamp(0, 1)
    v = d.describe(torch.cat([base, base.flip(-1), warm]))
    assert (v[0] - v[1]).norm() < 1e-4 < (v[0] - v[2]).norm()  # a mirror keeps colour statistics


def test_descriptor_cache(tmp_path):
    files = [tmp_path / "a.npy", tmp_path / "b.npy"]
    for i, f in enumerate(files):
        np.save(f, np.arange(4) + i)
    cache = F.DescriptorCache(tmp_path / "cache")
    calls = []

    def compute():
        calls.append(1)
        return torch.tensor([1.0, 2.0], dtype=torch.float64)

    v1 = cache.get_or_compute(files, {"x": 1}, compute)
    v2 = cache.get_or_compute(files, {"x": 1}, compute)
    assert len(calls) == 1 and torch.equal(v1, v2) and v2.dtype == torch.float32
    cache.get_or_compute(files, {"x": 2}, compute)  # settings are part of the key
    assert len(calls) == 2
    np.save(files[0], np.arange(4) + 7)  # content change invalidates
    cache.get_or_compute(files, {"x": 1}, compute)
    assert len(calls) == 3
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3
    assert not list((tmp_path / "cache").glob(".*tmp"))  # atomic writes leave no temp files
    # a corrupted entry is recomputed, not trusted
    key = cache.key(files, {"x": 1})
    (tmp_path / "cache" / f"{key}.npy").write_bytes(b"garbage")
    cache.get_or_compute(files, {"x": 1}, compute)
    assert len(calls) == 4


def test_descriptor_cache_entries_read_write(tmp_path):
    """The per-image entry API (files hashed once for several entries) uses the same keys as
    get_or_compute, so caches written by either are read by the other; a missing or corrupted
    entry reads as None."""
    files = [tmp_path / "a.npy", tmp_path / "b.npy"]
    for i, f in enumerate(files):
        np.save(f, np.arange(4) + i)
    cache = F.DescriptorCache(tmp_path / "cache")
    settings = [{"x": 1, "part": "image"}, {"x": 1, "part": "patches"}]
    entries = cache.entries(files, settings)
    assert [e.name for e in entries] == [f"{cache.key(files, s)}.npy" for s in settings]
    assert cache.read(entries) is None
    cache.write(entries, [torch.tensor([1.0, 2.0], dtype=torch.float64), torch.ones(3, 2)])
    got = cache.read(entries)
    assert got[0].dtype == torch.float32 and torch.equal(got[0], torch.tensor([1.0, 2.0])) and torch.equal(got[1], torch.ones(3, 2))
    assert torch.equal(cache.get_or_compute(files, settings[0], lambda: torch.zeros(2)), got[0])  # same key
    entries[1].write_bytes(b"garbage")
    assert cache.read(entries) is None
    assert not list((tmp_path / "cache").glob(".*tmp"))


def test_descriptor_batch_size_does_not_change_descriptors():
    """Batches of 4 (the default: no page-faulting 77 MB activations) and of 16 give the same
    backbone descriptors within float32 round-off."""
    d = F.Descriptor(backend="efficientnet_lite0", weights={"backbone": 1.0})
    x = torch.rand(9, 3, 48, 40, generator=torch.Generator().manual_seed(0))
    assert d.batch_size == 4
    small = d.describe_backbone(x)
    d.batch_size = 16
    assert torch.allclose(small, d.describe_backbone(x), atol=1e-5)
