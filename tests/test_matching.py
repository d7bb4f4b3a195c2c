"""Tests of uotisp_lib.matching: image/patch OT, PairGraph, PairSampler, diagnostics, CLI."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from uotisp_lib import matching as M


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _permuted(n: int = 12, d: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    perm = torch.randperm(n, generator=g)
    return x, x[perm], torch.argsort(perm)  # y[inv[i]] == x[i]


# --- image level ----------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fgw", "ot", "knn", "uot"])
def test_identity_on_permuted_targets(method):
    x, y, inv = _permuted()
    r = M.match_images(x, y, method, k=3)
    assert torch.equal(r.topk_idx[:, 0], inv)
    assert r.topk_idx.shape == (12, 3) and r.topk_w.shape == (12, 3)
    assert torch.allclose(r.topk_w.sum(1), torch.ones(12, dtype=r.topk_w.dtype))
    assert r.method == method and r.seconds >= 0


@pytest.mark.parametrize("method", ["fgw", "ot", "knn", "random"])
def test_balanced_marginals_rectangular(method):
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(9, 5, generator=g), torch.randn(6, 5, generator=g)
    r = M.match_images(x, y, method, k=4)
    assert r.plan.shape == (9, 6)
    assert torch.allclose(r.plan.sum(1), torch.full((9,), 1 / 9, dtype=r.plan.dtype), atol=1e-6)
    if method in ("fgw", "ot"):  # POT's inner (non-log) Sinkhorn of FGW stops at 1000 iterations: ~1e-4
        tol = 5e-4 if method == "fgw" else 1e-6
        assert torch.allclose(r.plan.sum(0), torch.full((6,), 1 / 6, dtype=r.plan.dtype), atol=tol)
    assert (r.plan >= 0).all()


def test_uot_relaxes_marginals_and_drops_outlier():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(8, 4, generator=g)
    y = torch.cat([x + 0.01 * torch.randn(8, 4, generator=g), torch.full((1, 4), 40.0)])  # one far outlier
    bal = M.match_images(x, y, "ot", eps=0.05)
    unb = M.match_images(x, y, "uot", eps=0.05, reg_m=0.1)
    # balanced OT must send 1/9 of the mass to the outlier; UOT leaves it (almost) unmatched
    assert bal.plan[:, -1].sum() == pytest.approx(1 / 9, rel=1e-3)
    assert unb.plan[:, -1].sum() < 1e-3
    assert not torch.allclose(unb.plan.sum(0), torch.full((9,), 1 / 9, dtype=unb.plan.dtype), atol=1e-3)


def test_knn_collapses_ot_spreads():
    # many-to-one case on a line: sources at -5 .. -0.95, targets at 0 .. 9; every source's
    # nearest target is 0, while OT's monotone coupling sends source i to target i
    x = torch.stack([-5 + 0.45 * torch.arange(10.0), torch.zeros(10)], 1)
    y = torch.stack([torch.arange(10.0), torch.zeros(10)], 1)
    knn = M.match_images(x, y, "knn", k=1)
    ot_ = M.match_images(x, y, "ot", k=1, eps=0.005)
    assert knn.topk_idx[:, 0].tolist() == [0] * 10
    assert ot_.topk_idx[:, 0].tolist() == list(range(10))
    s_knn = M.collapse_stats(knn.topk_idx, n_targets=10)
    s_ot = M.collapse_stats(ot_.topk_idx, n_targets=10)
    assert s_knn["max_in_degree"] == 10 and s_knn["unused_fraction"] == pytest.approx(0.9)
    assert s_knn["usage_entropy"] == pytest.approx(0.0)
    assert s_ot["max_in_degree"] == 1 and s_ot["usage_entropy"] == pytest.approx(1.0)


def test_random_is_seeded_and_distinct():
    x, y, _ = _permuted()
    a, b = M.match_images(x, y, "random", k=4, seed=5), M.match_images(x, y, "random", k=4, seed=5)
    c = M.match_images(x, y, "random", k=4, seed=6)
    assert torch.equal(a.topk_idx, b.topk_idx) and not torch.equal(a.topk_idx, c.topk_idx)
    assert all(len(set(row.tolist())) == 4 for row in a.topk_idx)


def test_match_images_errors():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match="unknown method 'sinkhorn'; expected one of fgw, ot, uot, knn, random"):
        M.match_images(x, x, "sinkhorn")
    with pytest.raises(ValueError, match=r"descriptor sizes differ: src D=3, tgt D=2"):
        M.match_images(x, torch.randn(4, 2))
    with pytest.raises(ValueError, match=r"tgt_desc must be a non-empty \[n,D\]"):
        M.match_images(x, torch.randn(0, 3))
    with pytest.raises(ValueError, match="src_desc contains NaN"):
        M.match_images(torch.full((2, 3), float("nan")), x)
    with pytest.raises(ValueError, match="eps must be > 0"):
        M.match_images(x, x, "ot", eps=0)


# --- patch level ----------------------------------------------------------------------------------


def _patch_sets(n_img: int, n_patch: int, d: int, prefix: str, g: torch.Generator, base=None):
    sets = []
    for i in range(n_img):
        desc = torch.randn(n_patch, d, generator=g) if base is None else base[i][1] + 0.01 * torch.randn(n_patch, d, generator=g)
        sets.append(([f"{prefix}{i}_{j}" for j in range(n_patch)], desc))
    return sets


def test_match_patches_finds_true_patches_and_keys_by_stem():
    g = torch.Generator().manual_seed(4)
    src = _patch_sets(5, 6, 8, "raw", g)
    # target image j is a noisy copy of source image perm[j], patch order reversed
    perm = [3, 0, 4, 1, 2]
    tgt = [([f"jpg{j}_{p}" for p in range(6)], src[perm[j]][1].flip(0) + 0.01 * torch.randn(6, 8, generator=g)) for j in range(5)]
    img_src = torch.stack([d.mean(0) for _, d in src])
    img_tgt = torch.stack([d.mean(0) for _, d in tgt])
    im = M.match_images(img_src, img_tgt, "ot", k=2)
    graph = M.match_patches(src, tgt, im, k_patch=3)
    assert len(graph) == 30 and graph.targets.shape == (30, 3)
    for i, s in enumerate(graph.sources):
        img, p = map(int, s[3:].split("_"))
        j = perm.index(img)
        assert graph.targets[i, 0] == f"jpg{j}_{5 - p}"
    assert np.allclose(graph.weights.sum(1), 1.0)
    graph.validate()


def test_match_patches_batches_agree():
    g = torch.Generator().manual_seed(5)
    src, tgt = _patch_sets(4, 3, 5, "s", g), _patch_sets(3, 4, 5, "t", g)
    im = M.match_images(torch.stack([d.mean(0) for _, d in src]), torch.stack([d.mean(0) for _, d in tgt]), "ot", k=2)
    a = M.match_patches(src, tgt, im, k_patch=4)
    b = M.match_patches(src, tgt, im, k_patch=4, max_batch_elems=1)  # one source image per batch
    assert (a.targets == b.targets).all() and np.allclose(a.weights, b.weights)


def test_match_patches_errors():
    g = torch.Generator().manual_seed(6)
    src, tgt = _patch_sets(2, 3, 4, "s", g), _patch_sets(2, 3, 4, "t", g)
    im = M.match_images(torch.randn(2, 4), torch.randn(2, 4), "ot", k=1)
    with pytest.raises(ValueError, match="image_match is 2x2 images but got 1 source"):
        M.match_patches(src[:1], tgt, im)
    bad = [(["a", "b"], torch.randn(3, 4)), src[1]]
    with pytest.raises(ValueError, match=r"source image 0: expected \[n,D\] descriptors for its 2 stems"):
        M.match_patches(bad, tgt, im)


def _hand_sinkhorn_log(cost, mask_a, mask_b, eps, n_iter=100):
    """Reference: the hand-written batched log-domain Sinkhorn that match_patches used before
    ot.solve_batch (issue 11; benchmarks/bench_solve_batch.py times both). Padding is -inf."""
    dt = cost.dtype
    neg = torch.tensor(-torch.inf, dtype=dt)
    log_a = torch.where(mask_a, -torch.log(mask_a.sum(1, keepdim=True).to(dt)), neg)
    log_b = torch.where(mask_b, -torch.log(mask_b.sum(1, keepdim=True).to(dt)), neg)
    k = torch.where(mask_a[:, :, None] & mask_b[:, None, :], -cost / eps, neg)
    f, g = torch.zeros_like(log_a), torch.zeros_like(log_b)
    for _ in range(n_iter):
        f = torch.where(mask_a, log_a - torch.logsumexp(k + g[:, None, :], dim=2), neg)
        g = torch.where(mask_b, log_b - torch.logsumexp(k + f[:, :, None], dim=1), neg)
    return torch.exp(k + f[:, :, None] + g[:, None, :])


def test_batched_sinkhorn_marginals():
    g = torch.Generator().manual_seed(7)
    cost = torch.rand(2, 3, 5, generator=g, dtype=torch.float64)
    ma = torch.tensor([[True, True, True], [True, True, False]])
    mb = torch.tensor([[True] * 5, [True, True, True, False, False]])
    p = M.solve_batch_sinkhorn(cost, ma, mb, eps=0.1, n_iter=500)
    assert torch.allclose(p[0].sum(1), torch.full((3,), 1 / 3, dtype=p.dtype), atol=1e-8)
    assert torch.allclose(p[0].sum(0), torch.full((5,), 1 / 5, dtype=p.dtype), atol=1e-8)
    assert torch.allclose(p[1, :2].sum(1), torch.full((2,), 1 / 2, dtype=p.dtype), atol=1e-8)
    assert p[1, 2].abs().sum() == 0 and p[1, :, 3:].abs().sum() == 0
    import ot

    ref = ot.sinkhorn(torch.full((3,), 1 / 3, dtype=p.dtype), torch.full((5,), 0.2, dtype=p.dtype), cost[0], 0.1,
                      method="sinkhorn_log", numItermax=2000, stopThr=1e-12)
    assert torch.allclose(p[0], ref, atol=1e-8)


def test_solve_batch_agrees_with_the_hand_written_sinkhorn_on_a_padded_batch():
    # POT's ot.solve_batch (padding as zero weight) and the former hand-written solver (padding -inf)
    g = torch.Generator().manual_seed(8)
    cost = torch.rand(3, 4, 6, generator=g, dtype=torch.float64)
    ma = torch.tensor([[True] * 4, [True, True, True, False], [True, False, False, False]])
    mb = torch.tensor([[True] * 6, [True] * 4 + [False] * 2, [True, True, False, False, False, False]])
    cost[~(ma[:, :, None] & mb[:, None, :])] = 7.0  # whatever the padding holds
    hand = _hand_sinkhorn_log(cost, ma, mb, eps=0.05, n_iter=300)
    pot = M.solve_batch_sinkhorn(cost, ma, mb, eps=0.05, n_iter=300)
    for p in (hand, pot):
        assert torch.isfinite(p).all() and (p >= 0).all()
        for gi in range(3):
            n, m = int(ma[gi].sum()), int(mb[gi].sum())
            assert p[gi, n:].abs().sum() == 0 and p[gi, :, m:].abs().sum() == 0  # nothing on padding
            torch.testing.assert_close(p[gi, :n, :m].sum(1), torch.full((n,), 1 / n, dtype=p.dtype), rtol=0, atol=1e-9)
            torch.testing.assert_close(p[gi, :n, :m].sum(0), torch.full((m,), 1 / m, dtype=p.dtype), rtol=0, atol=1e-12)
    # known answer: a single source row has nothing to choose, its plan is the target marginal
    torch.testing.assert_close(pot[2, 0, :2], torch.full((2,), 0.5, dtype=pot.dtype), rtol=0, atol=1e-12)
    torch.testing.assert_close(pot, hand, rtol=0, atol=1e-10)
    torch.testing.assert_close((pot * cost).sum((1, 2)), (hand * cost).sum((1, 2)), rtol=0, atol=1e-10)


def test_match_patches_with_solve_batch_equals_the_hand_written_solver(monkeypatch):
    g = torch.Generator().manual_seed(9)
    src, tgt = _patch_sets(5, 6, 16, "s", g), _patch_sets(4, 9, 16, "t", g)
    src[1] = (src[1][0][:3], src[1][1][:3])  # uneven images: padded rows ...
    tgt[2] = (tgt[2][0][:4], tgt[2][1][:4])  # ... and columns
    im = M.match_images(torch.stack([d.mean(0) for _, d in src]), torch.stack([d.mean(0) for _, d in tgt]), "ot", k=2)
    pot = M.match_patches(src, tgt, im, k_patch=4)
    assert len({len(pot[s][0]) for s in pot.sources}) == 1 and len(set(map(str, pot.targets[:, 0]))) > 3
    monkeypatch.setattr(M, "solve_batch_sinkhorn", _hand_sinkhorn_log)
    hand = M.match_patches(src, tgt, im, k_patch=4)
    assert (pot.sources == hand.sources).all() and (pot.targets == hand.targets).all()
    np.testing.assert_allclose(pot.weights, hand.weights, rtol=0, atol=1e-9)


# --- PairGraph ------------------------------------------------------------------------------------


def _graph():
    return M.PairGraph(
        np.array(["a_0", "a_1"]),
        np.array([["x_3", "x_1", ""], ["x_0", "y_2", "x_3"]]),
        np.array([[0.75, 0.25, 0.0], [0.5, 0.3, 0.2]]),
        {"method": "test"},
    )


def test_pair_graph_round_trip(tmp_path):
    g = _graph()
    path = g.save(tmp_path / "g.npz")
    h = M.PairGraph.load(path)
    assert (h.sources == g.sources).all() and (h.targets == g.targets).all()
    assert np.array_equal(h.weights, g.weights) and h.meta == {"method": "test"}
    assert h["a_0"][0] == ["x_3", "x_1"] and np.allclose(h["a_0"][1], [0.75, 0.25])
    lines = (tmp_path / "g.csv").read_text().splitlines()
    assert lines[0] == "source,target,weight,rank"
    assert lines[1:3] == ["a_0,x_3,0.75,0", "a_0,x_1,0.25,1"] and len(lines) == 6


def test_pair_graph_validation(tmp_path):
    with pytest.raises(M.PairGraphError, match="weights of source 'a' sum to 0.5, expected 1"):
        M.PairGraph(np.array(["a"]), np.array([["x"]]), np.array([[0.5]]))
    with pytest.raises(M.PairGraphError, match="finite and >= 0"):
        M.PairGraph(np.array(["a"]), np.array([["x", "y"]]), np.array([[1.5, -0.5]]))
    with pytest.raises(M.PairGraphError, match="source stems must be unique"):
        M.PairGraph(np.array(["a", "a"]), np.array([["x"], ["x"]]), np.ones((2, 1)))
    with pytest.raises(M.PairGraphError, match="positive weight has an empty target"):
        M.PairGraph(np.array(["a"]), np.array([[""]]), np.ones((1, 1)))
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(M.PairGraphError, match=r"bad.npz: could not be read as a pair graph"):
        M.PairGraph.load(bad)
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(M.PairGraphError, match=r"other.npz: not a pair graph; missing arrays"):
        M.PairGraph.load(tmp_path / "other.npz")
    with pytest.raises(FileNotFoundError, match="missing.npz: no such pair graph file"):
        M.PairGraph.load(tmp_path / "missing.npz")
    with pytest.raises(KeyError, match="no source stem 'zz'"):
        _graph()["zz"]


def test_from_topk_uses_stems_not_positions():
    g = M.PairGraph.from_topk(["r_5", "r_1"], ["j_9", "j_2", "j_7"], torch.tensor([[2, 0], [1, 2]]), torch.tensor([[3.0, 1.0], [1.0, 1.0]]))
    assert g["r_5"][0] == ["j_7", "j_9"] and np.allclose(g["r_5"][1], [0.75, 0.25])
    assert g["r_1"][0] == ["j_2", "j_7"]


# --- sampler --------------------------------------------------------------------------------------


def test_sampler_reproducible_and_proportional():
    g = _graph()
    a = M.PairSampler(g, seed=3).sample(["a_1"] * 50 + ["a_0"] * 50)
    b = M.PairSampler(g, seed=3).sample(["a_1"] * 50 + ["a_0"] * 50)
    c = M.PairSampler(g, seed=4).sample(["a_1"] * 50 + ["a_0"] * 50)
    assert a == b and a != c
    n = 20000
    draws = M.PairSampler(g, seed=0).sample(["a_1"] * n)
    counts = np.array([draws.count(t) for t in ("x_0", "y_2", "x_3")])
    expected = np.array([0.5, 0.3, 0.2]) * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 13.8  # chi-square, 2 dof, p = 0.001
    assert "" not in M.PairSampler(g, seed=1).sample(["a_0"] * 2000)
    with pytest.raises(KeyError, match="source stem 'nope' is not in the pair graph"):
        M.PairSampler(g).sample(["nope"])


def test_uniform_random_pairs():
    g = M.uniform_random_pairs([f"s_{i}" for i in range(30)], ["t_0", "t_1", "t_2"], seed=1, k=2)
    assert g.targets.shape == (30, 2) and np.allclose(g.weights, 0.5)
    assert all(len(set(r)) == 2 for r in g.targets.tolist())
    h = M.uniform_random_pairs([f"s_{i}" for i in range(30)], ["t_0", "t_1", "t_2"], seed=1, k=2)
    assert (g.targets == h.targets).all()
    with pytest.raises(ValueError, match="no target stems"):
        M.uniform_random_pairs(["s"], [])


# --- diagnostics ----------------------------------------------------------------------------------


def test_collapse_stats_known():
    s = M.collapse_stats(np.array([[0], [0], [0], [1]]), n_targets=4)
    assert s["max_in_degree"] == 3 and s["unused_fraction"] == 0.5
    p = np.array([0.75, 0.25])
    assert s["usage_entropy"] == pytest.approx(float(-(p * np.log(p)).sum() / np.log(4)))
    spread = M.collapse_stats(np.arange(5)[:, None])
    assert spread["usage_entropy"] == pytest.approx(1.0) and spread["max_in_degree"] == 1
    gs = M.collapse_stats(_graph())  # universe: x_0, x_1, x_3, y_2
    assert gs["n_targets"] == 4 and gs["max_in_degree"] == 1 and gs["unused_fraction_soft"] == 0.0


def test_signature_distance_zero_on_self():
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    sig = M.colour_signature(x)
    d = M.signature_distance(sig, sig)
    assert torch.allclose(torch.diagonal(d), torch.zeros(3, dtype=d.dtype), atol=1e-6)
    assert (d[~torch.eye(3, dtype=bool)] > 0).all()


# --- end to end on the smoke benchmark ------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory):
    from uotisp_lib.config import get_profile
    from uotisp_lib.data import build_benchmark

    return build_benchmark(tmp_path_factory.mktemp("bench") / "b", get_profile("smoke").synth, 0)


@pytest.fixture(scope="module")
def descriptor():
    from uotisp_lib.features import Descriptor

    return Descriptor(backend="efficientnet_lite0", gram_backend="efficientnet_lite0", gram_size=64)


def test_build_pair_graph_and_quality(smoke_root, descriptor, tmp_path):
    from uotisp_lib.data.layouts import scan_upisp
    from uotisp_lib.features import DescriptorCache

    cache = DescriptorCache(tmp_path / "cache")
    graph, diag = M.build_pair_graph(smoke_root, "ot", k=2, descriptor=descriptor, cache=cache)
    lay = scan_upisp(smoke_root)
    assert sorted(graph.sources) == sorted(lay.paths("train", "raws"))
    jpeg_stems = set(lay.paths("train", "jpegs"))
    assert set(graph.targets[graph.targets != ""].tolist()) <= jpeg_stems
    assert diag["backends"]["backbone"] == "efficientnet_lite0"
    assert diag["n_source_patches"] == len(graph) and diag["patch_level"]["n_targets"] == len(jpeg_stems)
    n_cached = len(list((tmp_path / "cache").glob("*.npy")))
    assert n_cached == 3 * (diag["n_source_images"] + diag["n_target_images"])  # image, patches, grid
    again, _ = M.build_pair_graph(smoke_root, "ot", k=2, descriptor=descriptor, cache=cache)  # from cache
    assert (again.targets == graph.targets).all() and np.allclose(again.weights, graph.weights, atol=1e-6)
    q = M.pair_quality(smoke_root, graph)
    assert 0 < q["quality"] and 0 < q["random_floor"]
    rnd = M.uniform_random_pairs(graph.sources, sorted(jpeg_stems), seed=0, k=len(jpeg_stems))
    assert M.pair_quality(smoke_root, rnd)["quality"] == pytest.approx(q["random_floor"], rel=1e-9)


def test_cli_match(smoke_root, tmp_path, monkeypatch, capsys):
    from uotisp_lib.cli import match

    monkeypatch.setenv("UOTISP_CACHE", str(tmp_path / "cache"))
    parser = argparse.ArgumentParser()
    match.add_parser(parser.add_subparsers())
    out = tmp_path / "g.npz"
    args = parser.parse_args(["match", "--data", str(smoke_root), "--out", str(out), "--method", "knn",
                              "--k", "2", "--backend", "efficientnet_lite0", "--device", "cpu"])
    assert match.run(args) == 0
    g = M.PairGraph.load(out)
    assert g.meta["method"] == "knn" and (tmp_path / "g.csv").is_file()
    meta = json.loads((tmp_path / "g.json").read_text())
    assert "pair_quality" in meta["match"] and meta["match"]["backends"]["backbone"] == "efficientnet_lite0"
    assert "match knn (efficientnet_lite0)" in capsys.readouterr().out
    bad = parser.parse_args(["match", "--data", str(smoke_root), "--out", str(tmp_path / "g.txt")])
    with pytest.raises(ValueError, match=r"g.txt: --out must name a .npz file"):
        match.run(bad)


def test_build_pair_graph_errors(tmp_path, descriptor):
    from uotisp_lib.data.layouts import LayoutError
    from uotisp_lib.io import save_raw

    save_raw(tmp_path / "train" / "raws" / "img_0.npy", np.zeros((8, 8, 4), np.uint16))
    with pytest.raises(LayoutError, match=r"train/jpegs: no files; matching needs train/jpegs"):
        M.build_pair_graph(tmp_path, "ot", descriptor=descriptor, cache=None)
    with pytest.raises(LayoutError, match=r"train/gt: pair_quality needs ground truth"):
        M.pair_quality(tmp_path, _graph())
    with pytest.raises(FileNotFoundError, match="nowhere"):
        M.build_pair_graph(tmp_path / "nowhere", "ot", descriptor=descriptor, cache=None)


def test_describe_split_equals_loading_everything_then_describing(smoke_root, descriptor):
    """The streamed describe_split gives the values of load_image_set + describe_image_set."""
    from uotisp_lib.preprocessing import Preprocessor

    pre = Preprocessor()
    for kind in ("raws", "jpegs"):
        full = M.load_image_set(smoke_root, "train", kind, pre if kind == "raws" else None)
        img, patches = M.describe_image_set(full, descriptor)
        got = M.describe_split(smoke_root, "train", kind, descriptor, pre)
        assert got.ids == full.ids and got.stems == full.stems and got.files == full.files
        assert got.low_confidence == full.low_confidence
        assert torch.allclose(got.image_desc, img, atol=1e-6)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got.patch_desc, patches))
    sub = M.describe_split(smoke_root, "train", "jpegs", descriptor, image_ids=full.ids[1:2])
    assert sub.ids == full.ids[1:2] and torch.allclose(sub.image_desc, img[1:2], atol=1e-6)


def test_build_pair_graph_resumes_from_the_cache(smoke_root, descriptor, tmp_path, monkeypatch):
    """A rerun reads no pixels of the images already described; after a kill (entries of some
    images missing) only those are described again; the graph is the same each time."""
    from uotisp_lib.features import DescriptorCache

    cache = DescriptorCache(tmp_path / "cache")
    first, _ = M.build_pair_graph(smoke_root, "fgw", k=2, descriptor=descriptor, cache=cache)
    described = []
    real = M._describe_one
    monkeypatch.setattr(M, "_describe_one", lambda raw, *a: described.append(raw.shape[0]) or real(raw, *a))
    again, _ = M.build_pair_graph(smoke_root, "fgw", k=2, descriptor=descriptor, cache=cache)
    assert described == []
    assert (again.sources == first.sources).all() and (again.targets == first.targets).all()
    assert np.array_equal(again.weights, first.weights)
    entries = sorted((tmp_path / "cache").glob("*.npy"))
    for e in entries[:4]:  # as if killed before these were written
        e.unlink()
    resumed, _ = M.build_pair_graph(smoke_root, "fgw", k=2, descriptor=descriptor, cache=cache)
    assert 1 <= len(described) <= 4
    assert (resumed.targets == first.targets).all() and np.array_equal(resumed.weights, first.weights)
