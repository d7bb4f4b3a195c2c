"""Streaming patch sets (issue 11, part 6): the same patches as the in-memory path, and the same
training runs."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from uotisp_lib import io as uio
from uotisp_lib.data import streaming
from uotisp_lib.data.datasets import PatchSet, load_raw_patches, load_srgb_patches
from uotisp_lib.data.layouts import scan_dataset
from uotisp_lib.data.streaming import StreamingPatches, stream_raw_patches, stream_srgb_patches
from uotisp_lib.experiments import load_training_data, model_inputs, random_pair_fn, validation_raw
from uotisp_lib.train import PseudoPairConfig, PseudoPairTrainer, UOTTrainConfig, UOTTrainer
from uotisp_lib.uot import UOTConfig


def _write(root, n_img: int = 3, per: int = 4, h: int = 8, seed: int = 0):
    """A tiny UP-ISP folder: ``n_img`` images of ``per`` RAW patches ``h x h x 4`` and JPEG patches
    ``2h x 2h``; stems ``a<i>_<j>`` (natural order differs from the order of writing)."""
    rng = np.random.default_rng(seed)
    for split in ("train",):
        for i in reversed(range(n_img)):
            for j in reversed(range(per)):
                uio.save_raw(root / split / "raws" / f"a{i * 5}_{j}.npy",
                             rng.integers(100, 900, (h, h, 4)).astype(np.uint16))
                img = (rng.random((2 * h, 2 * h, 3)) * 160 + 40).astype(np.uint8)
                uio.save_image(root / split / "jpegs" / f"t{i * 5}_{j}.jpg", img)
    return root


@pytest.fixture()
def root(tmp_path):
    (tmp_path / "d" / "train" / "raws").mkdir(parents=True)
    (tmp_path / "d" / "train" / "jpegs").mkdir(parents=True)
    return _write(tmp_path / "d")


def test_streamed_sets_equal_the_in_memory_patches(root):
    layout = scan_dataset(root)
    for mem, st in ((load_raw_patches(layout, "train"), stream_raw_patches(layout, "train")),
                    (load_srgb_patches(layout, "train", "jpegs"), stream_srgb_patches(layout, "train", "jpegs"))):
        assert st.stems == mem.stems and len(st) == len(mem) == 12
        assert st.stems[:3] == (mem.stems[0], mem.stems[1], mem.stems[2])
        torch.testing.assert_close(st.images[:], mem.images, rtol=0, atol=0)  # bit-identical, same order
        assert st.images.shape == tuple(mem.images.shape)
        picks = [mem.stems[7], mem.stems[0], mem.stems[7]]
        torch.testing.assert_close(st.select(picks), mem.select(picks), rtol=0, atol=0)
        rows = torch.tensor([3, 11, 0])
        torch.testing.assert_close(st.images[rows], mem.images[rows], rtol=0, atol=0)
        torch.testing.assert_close(st.images[5], mem.images[5], rtol=0, atol=0)
        torch.testing.assert_close(st.images[-1], mem.images[-1], rtol=0, atol=0)
        sub = st.subset(picks[:2])
        assert sub.stems == tuple(picks[:2])
        torch.testing.assert_close(sub.images[:], mem.subset(picks[:2]).images, rtol=0, atol=0)
        torch.testing.assert_close(st.materialise().images, mem.images, rtol=0, atol=0)
        with pytest.raises(KeyError, match="nope"):
            st.select(["nope"])
        with pytest.raises(KeyError, match="nope"):
            st.subset(["nope"])


def test_streamed_set_memory_maps_and_holds_no_full_tensor(root, monkeypatch):
    calls = []
    real = np.load

    def spy(*a, **k):
        calls.append(k.get("mmap_mode"))
        return real(*a, **k)

    monkeypatch.setattr(streaming.np, "load", spy)
    st = stream_raw_patches(scan_dataset(root), "train")
    assert calls == []  # building the set reads no file
    x = st.select([st.stems[2], st.stems[4]])
    assert x.shape == (2, 4, 8, 8) and calls == ["r", "r"] and st.reads == 2
    # the object keeps the stems, the paths and at most the last batch read: no tensor of the set
    held = [v for v in vars(st).values() if isinstance(v, torch.Tensor)]
    held += [t for v in vars(st).values() if isinstance(v, tuple) for t in v if isinstance(t, torch.Tensor)]
    assert all(t.shape[0] <= 2 for t in held) and held
    st.select([st.stems[2], st.stems[4]])  # the same batch again: the cache, no read
    assert st.reads == 2 and len(calls) == 2


def test_map_is_per_batch_and_prefetch_feeds_the_selects(root):
    st = stream_raw_patches(scan_dataset(root), "train")
    mem = load_raw_patches(scan_dataset(root), "train")
    doubled = st.map(lambda t: t * 2)
    torch.testing.assert_close(doubled.select(["a5_1", "a0_3"]), mem.select(["a5_1", "a0_3"]) * 2, rtol=0, atol=0)
    batches = [["a10_0", "a0_1"], ["a5_2"], ["a0_0", "a10_3", "a5_0"]]
    doubled.prefetch(batches, num_workers=1, pin_memory=False)
    before = st.reads
    for b in batches:
        torch.testing.assert_close(doubled.select(b), mem.select(b) * 2, rtol=0, atol=0)
    assert st.reads - before == 6 and st._pending_rows == []


def _stream_and_memory(root):
    return load_training_data(root, proxy_fraction=0.34, seed=0), load_training_data(root, proxy_fraction=0.34, seed=0, stream=True)


def _same_weights(a, b, names, atol):
    for name in names:
        for (k, p), q in zip(a.state.models[name].state_dict().items(), b.state.models[name].state_dict().values()):
            torch.testing.assert_close(p, q, rtol=0, atol=atol, msg=f"{name}.{k}")


def test_streamed_pseudo_pair_run_equals_the_in_memory_run(root, tmp_path):
    mem, st = _stream_and_memory(root)
    assert isinstance(st.raw_train, StreamingPatches) and isinstance(mem.raw_train, PatchSet)
    assert st.targets.stems == mem.targets.stems and st.proxy.stems == mem.proxy.stems
    cfg = PseudoPairConfig(stage1_epochs=1, stage2_epochs=1, batch_size=4, lr=1e-3, d_width=8)
    runs = []
    for data, name in ((mem, "m"), (st, "s")):
        val_raw, _ = validation_raw(data)
        trainer = PseudoPairTrainer(cfg, model_inputs(data.raw_train, "rgb", None), data.targets,
                                    random_pair_fn(data.targets.stems), tmp_path / name,
                                    val=(model_inputs(val_raw, "rgb", None), None), proxy_targets=data.proxy.images)
        runs.append((trainer, trainer.fit()))
    (a, ha), (b, hb) = runs
    assert isinstance(b.sources, StreamingPatches)
    _same_weights(a, b, ("map", "disc"), atol=0)  # the same reads, the same arithmetic: exact
    for ra, rb in zip(ha, hb):
        assert {k: v for k, v in ra.items() if k not in ("seconds", "proxy")} == \
               {k: v for k, v in rb.items() if k not in ("seconds", "proxy")}
        assert rb["proxy"] == pytest.approx(ra["proxy"], rel=1e-5, abs=1e-6)  # proxy stats summed in chunks


@pytest.mark.parametrize("mode", ["unpaired", "paired"])
def test_streamed_uot_run_equals_the_in_memory_run(root, tmp_path, mode):
    mem, st = _stream_and_memory(root)
    cfg = UOTTrainConfig(arch="tinyraw", epochs=2, batch_size=4, potential_width=4, expert_width=4,
                         uot=UOTConfig(tau=1.0, r1_gamma=1.0), crop=8 if mode == "paired" else 0, mode=mode,
                         paired_targets="unpaired", paired_fraction=0.5)
    trainers = []
    for data, name in ((mem, "m"), (st, "s")):
        paired = None
        if mode == "paired":  # any sRGB set keyed by the RAW stems serves as the "ground truth"
            from uotisp_lib.uot import naive_isp

            gt = data.raw_train.map(naive_isp) if isinstance(data.raw_train, StreamingPatches) else \
                PatchSet(data.raw_train.stems, naive_isp(data.raw_train.images))
            paired = gt
        trainer = UOTTrainer(cfg, data.raw_train, data.targets, tmp_path / name, paired=paired,
                             val=validation_raw(data), proxy_targets=data.proxy.images)
        trainer.fit()
        trainers.append(trainer)
    a, b = trainers
    assert isinstance(b.references, StreamingPatches)
    _same_weights(a, b, ("map", "ema", "potential", "experts"), atol=0)  # exact
    torch.testing.assert_close(b.predict(b.sources), a.predict(a.sources), rtol=0, atol=0)


def test_streaming_refuses_layouts_it_cannot_map(tmp_path):
    class Fake:
        format, root = "zurich", tmp_path

    with pytest.raises(ValueError, match="loaded in memory"):
        stream_raw_patches(Fake(), "train")


def test_cli_train_with_stream_writes_the_same_run(tmp_path):
    """``uotisp train --stream --workers 1`` on the smoke benchmark: the same history and export as
    the in-memory run (the proxy within float rounding: the held-out statistics are summed in chunks)."""
    import csv

    from safetensors.torch import load_file

    from uotisp_lib.cli import main
    from uotisp_lib.config import get_profile
    from uotisp_lib.data import build_benchmark

    smoke = build_benchmark(tmp_path / "smoke", get_profile("smoke").synth, seed=3)
    hist = {}
    for name, extra in (("mem", []), ("stream", ["--stream", "--workers", "1"])):
        out = tmp_path / name
        argv = ["train", "--trainer", "pseudo-pairs", "--pairs", "random", "--data", str(smoke), "--out", str(out),
                "--set", "stage2_epochs=0", "--device", "cpu", *extra]
        assert main(argv) == 0
        with open(out / "history.csv", newline="") as fh:
            hist[name] = list(csv.DictReader(fh))
    a, b = load_file(tmp_path / "mem" / "export" / "model.safetensors"), load_file(tmp_path / "stream" / "export" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    for ra, rb in zip(hist["mem"], hist["stream"], strict=True):
        skip = ("seconds", "proxy")
        assert {k: v for k, v in ra.items() if k not in skip} == {k: v for k, v in rb.items() if k not in skip}
        if ra.get("proxy"):
            assert float(rb["proxy"]) == pytest.approx(float(ra["proxy"]), rel=1e-5, abs=1e-6)


def test_batch_buffers_are_reused_only_when_nothing_holds_them(root):
    st = stream_raw_patches(scan_dataset(root), "train")
    mem = load_raw_patches(scan_dataset(root), "train")
    a_stems, b_stems, c_stems = list(st.stems[:3]), list(st.stems[3:6]), list(st.stems[6:9])
    a = st.select(a_stems)
    kept = a[1:]  # a view of the first batch, held by the caller
    del a
    b = st.select(b_stems)  # the cache drops the first batch; the view still holds its buffer
    c = st.select(c_stems)
    torch.testing.assert_close(kept, mem.select(a_stems)[1:], rtol=0, atol=0)
    torch.testing.assert_close(b, mem.select(b_stems), rtol=0, atol=0)
    torch.testing.assert_close(c, mem.select(c_stems), rtol=0, atol=0)
    if hasattr(torch._C, "_storage_Use_Count"):
        ptr = b.data_ptr()
        del b  # nothing holds the second batch now (the cache holds the third)
        d = st.select(a_stems)
        assert d.data_ptr() == ptr  # its buffer is written again, not a fresh allocation
        torch.testing.assert_close(d, mem.select(a_stems), rtol=0, atol=0)
        torch.testing.assert_close(c, mem.select(c_stems), rtol=0, atol=0)

