"""Semantic pseudo-pairs: image- and patch-level optimal transport between RAW and sRGB sets.

After Borelli's "Semantic Pseudo-Pairing" (arXiv 2605.07495; docs/references.md "Matching"):

1. image level: descriptors of the stitched source images (preprocessed RAW) and target images
   (sRGB JPEG) are matched by entropic fused Gromov-Wasserstein (:func:`match_images`, ``fgw``);
   every source image keeps its top-k target images. Baselines: plain entropic OT, unbalanced OT,
   nearest neighbours, random.
2. patch level: for each source image, Sinkhorn between its patches and all patches of its top-k
   target images; weight ``w_st = P_patch(s,t) * P_image(I_s, I_t)``, renormalised per source
   patch, top-8 kept (:func:`match_patches`).
3. a :class:`PairGraph` keyed by file stems; :class:`PairSampler` draws one target per source with
   probability ``w``.

Tensors in, tensors out; every solver runs on the descriptors' device (POT's torch backend).
"""

from __future__ import annotations

import csv
import io as _io
import json
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from uotisp_lib.threads import use_threads

Tensor = torch.Tensor
log = logging.getLogger(__name__)

METHODS = ("fgw", "ot", "uot", "knn", "random")


# --------------------------------------------------------------------------------------------------
# image level
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageMatch:
    """Image-level matching result.

    plan: ``[N,M]`` transport plan (float64; balanced methods have row sums 1/N and column sums 1/M).
    topk_idx: ``[N,k]`` target indices per source, best first. topk_w: ``[N,k]`` their plan
    values renormalised to sum 1 per row. seconds: solver wall time.
    """

    plan: Tensor
    topk_idx: Tensor
    topk_w: Tensor
    method: str
    seconds: float


def _check_desc(x: object, name: str) -> Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"match_images: {name} must be a torch.Tensor [n,D], got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"match_images: {name} must be a non-empty [n,D] descriptor matrix, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"match_images: {name} contains NaN or inf")
    return x.to(torch.float64)


def sq_dists(x: Tensor, y: Tensor) -> Tensor:
    """Squared Euclidean distances ``[N,D] x [M,D] -> [N,M]`` (clamped at 0)."""
    d = (x * x).sum(1, keepdim=True) + (y * y).sum(1)[None] - 2.0 * x @ y.T
    return d.clamp_min(0.0)


def mean_normalised(c: Tensor) -> Tensor:
    """Divide a cost matrix by its mean (left unchanged when the mean is 0)."""
    m = c.mean()
    return c / m if m > 0 else c


def _topk(plan: Tensor, k: int) -> tuple[Tensor, Tensor]:
    k = min(k, plan.shape[1])
    w, idx = torch.topk(plan, k, dim=1)
    w = w.clamp_min(0.0)
    s = w.sum(1, keepdim=True)
    w = torch.where(s > 0, w / s.clamp_min(1e-300), torch.full_like(w, 1.0 / k))
    return idx, w


def match_images(
    src_desc: Tensor,
    tgt_desc: Tensor,
    method: str = "fgw",
    k: int = 10,
    alpha: float = 0.5,
    eps: float = 0.05,
    reg_m: float = 1.0,
    max_iter: int = 1000,
    seed: int = 0,
) -> ImageMatch:
    """Match ``N`` source to ``M`` target descriptors (``[N,D]``, ``[M,D]``; ``N != M`` allowed).

    Costs: ``C_ij = ||x_i - y_j||^2``; structure ``D_X``, ``D_Y`` = intra-domain squared distances;
    each divided by its mean. Uniform marginals ``a = 1/N``, ``b = 1/M``. Methods:

    - ``fgw``: entropic fused Gromov-Wasserstein, ``(1 - alpha) <C, P> + alpha GW(D_X, D_Y, P)``,
      entropy ``eps`` (POT ``ot.gromov.entropic_fused_gromov_wasserstein``, PGD solver).
    - ``ot``: entropic OT on ``C`` (POT ``ot.sinkhorn``, log-domain ``sinkhorn_log``).
    - ``uot``: unbalanced entropic OT, KL marginal penalty ``reg_m``
      (``ot.unbalanced.sinkhorn_unbalanced``, stabilised): outlier targets may get little mass.
    - ``knn``: each source's nearest target; plan one-hot per row (mass 1/N). top-k by cost.
    - ``random``: ``k`` distinct uniform random targets per source (seeded), equal weights.
    """
    import ot

    if method not in METHODS:
        raise ValueError(f"match_images: unknown method {method!r}; expected one of {', '.join(METHODS)}")
    x, y = _check_desc(src_desc, "src_desc"), _check_desc(tgt_desc, "tgt_desc")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"match_images: descriptor sizes differ: src D={x.shape[1]}, tgt D={y.shape[1]}")
    if k < 1:
        raise ValueError(f"match_images: k must be >= 1, got {k}")
    if not eps > 0:
        raise ValueError(f"match_images: eps must be > 0, got {eps}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"match_images: alpha must be in [0, 1], got {alpha}")
    n, m = x.shape[0], y.shape[0]
    a = torch.full((n,), 1.0 / n, dtype=x.dtype, device=x.device)
    b = torch.full((m,), 1.0 / m, dtype=x.dtype, device=x.device)
    t0 = time.perf_counter()
    cost = mean_normalised(sq_dists(x, y))
    if method == "fgw":
        dx, dy = mean_normalised(sq_dists(x, x)), mean_normalised(sq_dists(y, y))
        with warnings.catch_warnings():  # POT's inner Sinkhorn warns on every capped outer step
            warnings.filterwarnings("ignore", message="Sinkhorn did not converge")
            plan = ot.gromov.entropic_fused_gromov_wasserstein(
                cost, dx, dy, a, b, loss_fun="square_loss", epsilon=eps, alpha=alpha, symmetric=True, max_iter=max_iter
            )
    elif method == "ot":
        plan = ot.sinkhorn(a, b, cost, reg=eps, method="sinkhorn_log", numItermax=max_iter, stopThr=1e-7)
    elif method == "uot":
        plan = ot.unbalanced.sinkhorn_unbalanced(
            a, b, cost, reg=eps, reg_m=reg_m, method="sinkhorn_stabilized", numItermax=max_iter
        )
    elif method == "knn":
        nn_idx = cost.argmin(1)
        plan = torch.zeros_like(cost)
        plan[torch.arange(n, device=x.device), nn_idx] = 1.0 / n
    else:  # random
        g = torch.Generator().manual_seed(int(seed))
        kk = min(k, m)
        idx = torch.stack([torch.randperm(m, generator=g)[:kk] for _ in range(n)]).to(x.device)
        plan = torch.zeros_like(cost)
        plan.scatter_(1, idx, 1.0 / (n * kk))
    plan = torch.as_tensor(plan)
    if not torch.isfinite(plan).all():
        raise FloatingPointError(f"match_images: {method} produced a non-finite plan; increase eps (now {eps})")
    if method == "knn":
        idx = torch.argsort(cost, dim=1)[:, : min(k, m)]
        w = torch.gather(plan, 1, idx)
        w = w / w.sum(1, keepdim=True)
    elif method == "random":
        w = torch.full(idx.shape, 1.0 / idx.shape[1], dtype=x.dtype, device=x.device)
    else:
        idx, w = _topk(plan, k)
    seconds = time.perf_counter() - t0
    return ImageMatch(plan=plan, topk_idx=idx, topk_w=w, method=method, seconds=seconds)


# --------------------------------------------------------------------------------------------------
# pair graph
# --------------------------------------------------------------------------------------------------


class PairGraphError(ValueError):
    """A pair graph (or its file) is malformed; the message names the file or the offending stem."""


@dataclass
class PairGraph:
    """Source stem -> weighted target stems.

    sources: ``[S]`` source stems (unique). targets: ``[S,K]`` target stems, best first, ``""``
    padding. weights: ``[S,K]`` float64, 0 on padding, each row sums to 1. meta: settings and
    backends (JSON-able).
    """

    sources: np.ndarray
    targets: np.ndarray
    weights: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sources = np.asarray(self.sources, dtype=str)
        self.targets = np.asarray(self.targets, dtype=str)
        self.weights = np.asarray(self.weights, dtype=np.float64)
        if self.targets.ndim == 1:
            self.targets = self.targets[:, None]
        if self.weights.ndim == 1:
            self.weights = self.weights[:, None]
        self.validate()

    def validate(self, where: str = "PairGraph") -> None:
        """Raise :class:`PairGraphError` unless shapes agree, stems are unique, weights are finite,
        >= 0, 0 exactly on padding, and each row sums to 1."""
        s, t, w = self.sources, self.targets, self.weights
        if s.ndim != 1 or t.shape != w.shape or t.shape[0] != s.shape[0]:
            raise PairGraphError(
                f"{where}: expected sources [S], targets and weights [S,K]; got {s.shape}, {t.shape}, {w.shape}"
            )
        if len(set(s.tolist())) != len(s):
            raise PairGraphError(f"{where}: source stems must be unique")
        if not np.isfinite(w).all() or (w < 0).any():
            raise PairGraphError(f"{where}: weights must be finite and >= 0")
        if ((t == "") & (w > 0)).any():
            raise PairGraphError(f"{where}: a positive weight has an empty target stem")
        sums = w.sum(1)
        bad = np.flatnonzero(np.abs(sums - 1.0) > 1e-6)
        if bad.size:
            raise PairGraphError(f"{where}: weights of source {str(s[bad[0]])!r} sum to {sums[bad[0]]:.6g}, expected 1")

    def __len__(self) -> int:
        return len(self.sources)

    @property
    def index(self) -> dict[str, int]:
        return {str(k): i for i, k in enumerate(self.sources)}

    def __getitem__(self, stem: str) -> tuple[list[str], np.ndarray]:
        """``(target stems, weights)`` of a source stem, padding dropped."""
        i = self.index.get(stem)
        if i is None:
            raise KeyError(f"PairGraph: no source stem {stem!r}")
        keep = self.targets[i] != ""
        return self.targets[i][keep].tolist(), self.weights[i][keep]

    def target_universe(self) -> list[str]:
        """All target stems used (sorted); ``meta['target_stems']`` when recorded."""
        if "target_stems" in self.meta:
            return list(self.meta["target_stems"])
        return sorted(set(self.targets[self.targets != ""].tolist()))

    def rows(self) -> list[tuple[str, str, float, int]]:
        """``(source, target, weight, rank)`` for every non-padding entry."""
        out = []
        for i, s in enumerate(self.sources):
            for r, (t, w) in enumerate(zip(self.targets[i], self.weights[i])):
                if t:
                    out.append((str(s), str(t), float(w), r))
        return out

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path`` (.npz: sources, targets, weights, meta JSON) and a CSV beside it
        (``source,target,weight,rank``), both atomically."""
        from uotisp_lib.io import atomic_open, atomic_write_text

        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"{path}: a pair graph is saved as .npz")
        from uotisp_lib.config import dumps

        with atomic_open(path, "wb") as fh:
            np.savez(fh, sources=self.sources, targets=self.targets, weights=self.weights, meta=np.array(dumps(self.meta)))
        buf = _io.StringIO()
        wr = csv.writer(buf, lineterminator="\n")
        wr.writerow(["source", "target", "weight", "rank"])
        for s, t, w, r in self.rows():
            wr.writerow([s, t, f"{w:.8g}", r])
        atomic_write_text(path.with_suffix(".csv"), buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "PairGraph":
        """Read a graph written by :meth:`save`; a malformed file raises :class:`PairGraphError`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such pair graph file (expected a .npz from PairGraph.save)")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = {"sources", "targets", "weights"} - set(z.files)
                if missing:
                    raise PairGraphError(f"{path}: not a pair graph; missing arrays {sorted(missing)}")
                meta = json.loads(str(z["meta"])) if "meta" in z.files else {}
                g = cls.__new__(cls)
                g.sources, g.targets, g.weights, g.meta = z["sources"], z["targets"], z["weights"], meta
        except PairGraphError:
            raise
        except (OSError, ValueError, EOFError) as err:
            raise PairGraphError(f"{path}: could not be read as a pair graph .npz ({err})") from err
        try:
            g.__post_init__()
        except PairGraphError as err:
            raise PairGraphError(f"{path}: {err}") from err
        return g

    @classmethod
    def from_topk(
        cls,
        sources: Sequence[str],
        targets: Sequence[str],
        idx: Tensor | np.ndarray,
        w: Tensor | np.ndarray,
        meta: Mapping[str, Any] | None = None,
    ) -> "PairGraph":
        """Graph from per-source top-k target *positions* ``idx [S,K]`` into ``targets`` and weights
        (renormalised per row). Positions are turned into stems here, once."""
        idx = np.asarray(torch.as_tensor(idx).cpu())
        w = np.asarray(torch.as_tensor(w).double().cpu())
        tg = np.asarray(list(targets), dtype=str)
        w = w / w.sum(1, keepdims=True)
        m = dict(meta or {})
        m.setdefault("target_stems", list(map(str, targets)))
        return cls(np.asarray(list(sources), dtype=str), tg[idx], w, m)


# --------------------------------------------------------------------------------------------------
# patch level
# --------------------------------------------------------------------------------------------------


PatchDescriptors = tuple[Sequence[str], Tensor]  # (stems of one image's patches, [n, D] descriptors)


def solve_batch_sinkhorn(cost: Tensor, mask_a: Tensor, mask_b: Tensor, eps: float, n_iter: int = 100) -> Tensor:
    """Entropic OT plans for a batch of padded problems by POT's ``ot.solve_batch`` (POT >= 0.9.6):
    ``cost [G,n,m]`` with valid rows ``mask_a [G,n]`` and columns ``mask_b [G,m]`` (bool), uniform
    marginals over the valid entries and zero weight on padding; log-domain Sinkhorn with entropy
    ``eps``, exactly ``n_iter`` iterations (``tol=0``: POT's marginal check never stops it early).
    Returns plans ``[G,n,m]`` (0 on padding).

    It replaced a hand-written batched log-domain Sinkhorn (issue 11). On the batches
    :func:`match_patches` solves (``benchmarks/bench_solve_batch.py``, one run on a 2-core machine
    loaded by another job, median of 5 interleaved pairs) it takes 1.03, 0.86 and 0.89 x the
    hand-written solver's time per call at the cpu, full and challenge sizes (1.56 x, about 6 ms
    more, on the smoke profile's one 4x6x18 batch); plans equal within 5e-18, transport costs within
    1.2e-15. ``tests/test_matching.py`` keeps the old solver as the reference: plans within 1e-10,
    pair graphs with the same targets and weights within 1e-9.
    """
    import ot

    dt = cost.dtype
    a = mask_a.to(dt) / mask_a.sum(1, keepdim=True).to(dt)
    b = mask_b.to(dt) / mask_b.sum(1, keepdim=True).to(dt)
    res = ot.solve_batch(cost, reg=eps, a=a, b=b, max_iter=n_iter, tol=0.0, method="log_sinkhorn", grad="detach")
    return res.plan


def match_patches(
    src_patches: Sequence[PatchDescriptors],
    tgt_patches: Sequence[PatchDescriptors],
    image_match: ImageMatch,
    k_patch: int = 8,
    eps: float = 0.05,
    n_iter: int = 100,
    max_batch_elems: int = 2**22,
) -> PairGraph:
    """Patch-level pair graph.

    ``src_patches[i]`` / ``tgt_patches[j]`` are ``(stems, [n,D] descriptors)`` of source image i /
    target image j, in the row / column order of ``image_match``. For each source image, the
    candidates are all patches of its top-k target images; cost = squared distance of
    L2-normalised descriptors divided by its row mean; entropic OT (``eps``, uniform marginals,
    ``n_iter`` log-domain Sinkhorn iterations by POT's ``ot.solve_batch``, :func:`solve_batch_sinkhorn`);
    ``w_st = P_patch(s,t) * P_image(I_s, I_t)`` (image weight = ``image_match.topk_w``),
    renormalised per source patch; the ``k_patch`` best kept and renormalised.

    Source images are processed in padded batches of at most ``max_batch_elems`` float64 values
    (cost entries plus gathered descriptors), which bounds memory: with 2**22, 13,420 source
    patches (768-D) take ~6 s and ~350 MB on one CPU core (benchmarks/bench_matching.py).
    """
    n_img, m_img = image_match.plan.shape
    if len(src_patches) != n_img or len(tgt_patches) != m_img:
        raise ValueError(
            f"match_patches: image_match is {n_img}x{m_img} images but got {len(src_patches)} source and "
            f"{len(tgt_patches)} target patch sets"
        )
    if k_patch < 1:
        raise ValueError(f"match_patches: k_patch must be >= 1, got {k_patch}")
    for side, sets in (("source", src_patches), ("target", tgt_patches)):
        for i, (stems, d) in enumerate(sets):
            if d.ndim != 2 or d.shape[0] != len(stems) or d.shape[0] == 0:
                raise ValueError(
                    f"match_patches: {side} image {i}: expected [n,D] descriptors for its {len(stems)} stems, "
                    f"got {tuple(d.shape)}"
                )
    dev = image_match.plan.device
    norm = lambda d: torch.nn.functional.normalize(d.to(device=dev, dtype=torch.float64), dim=1)  # noqa: E731
    tgt_desc = [norm(d) for _, d in tgt_patches]
    tgt_stems = [list(s) for s, _ in tgt_patches]
    topk_idx = image_match.topk_idx.to(dev)
    topk_w = image_match.topk_w.to(device=dev, dtype=torch.float64)

    sources: list[str] = []
    rows_t: list[np.ndarray] = []
    rows_w: list[np.ndarray] = []
    order = list(range(n_img))
    # candidate counts per source image, for batching
    n_src = [len(src_patches[i][0]) for i in order]
    n_cand = [sum(len(tgt_stems[j]) for j in topk_idx[i].tolist()) for i in order]
    dim = tgt_desc[0].shape[1]
    start = 0
    while start < n_img:
        stop, nmax, mmax = start, 0, 0
        while stop < n_img:
            nn_, mm_ = max(nmax, n_src[stop]), max(mmax, n_cand[stop])
            if stop > start and (stop - start + 1) * (nn_ * mm_ + (nn_ + mm_) * dim) > max_batch_elems:
                break
            nmax, mmax, stop = nn_, mm_, stop + 1
        batch = order[start:stop]
        g_n = len(batch)
        xs = torch.zeros(g_n, nmax, tgt_desc[0].shape[1], dtype=torch.float64, device=dev)
        ys = torch.zeros(g_n, mmax, tgt_desc[0].shape[1], dtype=torch.float64, device=dev)
        img_w = torch.zeros(g_n, mmax, dtype=torch.float64, device=dev)
        mask_a = torch.zeros(g_n, nmax, dtype=torch.bool, device=dev)
        mask_b = torch.zeros(g_n, mmax, dtype=torch.bool, device=dev)
        cand_stems: list[list[str]] = []
        for gi, i in enumerate(batch):
            d = norm(src_patches[i][1])
            xs[gi, : d.shape[0]] = d
            mask_a[gi, : d.shape[0]] = True
            stems_i: list[str] = []
            pos = 0
            for j, wj in zip(topk_idx[i].tolist(), topk_w[i]):
                dj = tgt_desc[j]
                ys[gi, pos : pos + dj.shape[0]] = dj
                img_w[gi, pos : pos + dj.shape[0]] = wj
                stems_i += tgt_stems[j]
                pos += dj.shape[0]
            mask_b[gi, :pos] = True
            cand_stems.append(stems_i)
        cost = torch.cdist(xs, ys).pow(2)
        valid = mask_a[:, :, None] & mask_b[:, None, :]
        row_mean = (cost * valid).sum(2, keepdim=True) / mask_b.sum(1).view(-1, 1, 1)
        cost = torch.where(row_mean > 0, cost / row_mean.clamp_min(1e-300), cost)
        plan = solve_batch_sinkhorn(cost, mask_a, mask_b, eps, n_iter)
        w = plan * img_w[:, None, :]
        kk = min(k_patch, mmax)
        top_w, top_i = torch.topk(w, kk, dim=2)
        top_w = top_w.cpu().numpy()
        top_i = top_i.cpu().numpy()
        for gi, i in enumerate(batch):
            stems_src = list(src_patches[i][0])
            cs = np.asarray(cand_stems[gi] + [""], dtype=str)
            for r, s in enumerate(stems_src):
                ww, ii = top_w[gi, r].copy(), top_i[gi, r].copy()
                ii[ww <= 0] = len(cs) - 1
                ww[ww <= 0] = 0.0
                tot = ww.sum()
                if tot <= 0:  # every weight underflowed: fall back to the cheapest candidate
                    ii[:] = len(cs) - 1
                    ii[0] = int(torch.argmin(cost[gi, r, : len(cs) - 1]))
                    ww[:] = 0.0
                    ww[0] = 1.0
                    tot = 1.0
                sources.append(s)
                t_row = np.full(k_patch, "", dtype=object)
                w_row = np.zeros(k_patch)
                t_row[:kk] = cs[ii]
                w_row[:kk] = ww / tot
                rows_t.append(t_row)
                rows_w.append(w_row)
        start = stop
    all_t = sorted({s for st in tgt_stems for s in st})
    meta = {"level": "patch", "k_patch": k_patch, "eps": eps, "n_iter": n_iter, "image_method": image_match.method,
            "target_stems": all_t}
    return PairGraph(np.asarray(sources, dtype=str), np.asarray(rows_t, dtype=str), np.asarray(rows_w), meta)


# --------------------------------------------------------------------------------------------------
# sampling and baselines
# --------------------------------------------------------------------------------------------------


class PairSampler:
    """Draw one target per source with probability proportional to its weight; reproducible:
    the same graph, seed and sequence of calls give the same draws."""

    def __init__(self, graph: PairGraph, seed: int = 0) -> None:
        self.graph = graph
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self._index = graph.index
        self._cum = np.cumsum(graph.weights, axis=1)

    def sample(self, source_stems: Sequence[str]) -> list[str]:
        """One target stem per source stem (unknown stems raise ``KeyError`` naming the stem)."""
        try:
            rows = np.fromiter((self._index[s] for s in source_stems), dtype=np.int64, count=len(source_stems))
        except KeyError as err:
            raise KeyError(f"PairSampler: source stem {err.args[0]!r} is not in the pair graph") from None
        u = self.rng.random(len(rows))
        cum = self._cum[rows]
        col = (u[:, None] >= cum).sum(1)
        col = np.minimum(col, cum.shape[1] - 1)
        # never land on zero-weight padding (float round-off at the end of a row)
        w = self.graph.weights[rows, col]
        last = (self.graph.weights[rows] > 0).cumsum(1).argmax(1)
        col = np.where(w > 0, col, last)
        return self.graph.targets[rows, col].tolist()


def uniform_random_pairs(
    source_stems: Sequence[str], target_stems: Sequence[str], seed: int = 0, k: int = 1
) -> PairGraph:
    """Random-pairing baseline: ``k`` distinct uniform random targets per source, equal weights."""
    if not len(target_stems):
        raise ValueError("uniform_random_pairs: no target stems")
    rng = np.random.default_rng(seed)
    tg = np.asarray(list(target_stems), dtype=str)
    k = min(k, len(tg))
    idx = np.stack([rng.choice(len(tg), size=k, replace=False) for _ in source_stems]) if len(source_stems) else np.zeros((0, k), int)
    w = np.full(idx.shape, 1.0 / k)
    return PairGraph(np.asarray(list(source_stems), dtype=str), tg[idx], w,
                     {"method": "random", "seed": seed, "target_stems": tg.tolist()})


# --------------------------------------------------------------------------------------------------
# diagnostics
# --------------------------------------------------------------------------------------------------


def collapse_stats(
    graph: PairGraph | Tensor | np.ndarray, n_targets: int | None = None, weights: Tensor | np.ndarray | None = None
) -> dict[str, float]:
    """Many-to-one collapse diagnostics of a pair graph or a top-k index matrix ``[N,k]``.

    Hard in-degree = number of sources whose best (rank-0) target is t; soft usage = sum of
    weights into t. Returns max / mean / p90 hard in-degree, ``usage_entropy`` (entropy of the
    soft usage over all targets / log(n_targets): 1 = perfectly spread, 0 = one target),
    ``unused_fraction`` (targets that are nobody's best) and ``unused_fraction_soft`` (targets with
    no weight at all). ``n_targets`` defaults to the graph's target universe / ``max idx + 1``.
    """
    if isinstance(graph, PairGraph):
        universe = graph.target_universe()
        pos = {t: i for i, t in enumerate(universe)}
        idx = np.vectorize(lambda t: pos.get(t, -1), otypes=[np.int64])(graph.targets) if graph.targets.size else np.zeros((0, 1), np.int64)
        w = graph.weights
        n_t = len(universe) if n_targets is None else n_targets
    else:
        idx = np.asarray(torch.as_tensor(graph).cpu()).astype(np.int64)
        if idx.ndim == 1:
            idx = idx[:, None]
        w = np.ones(idx.shape) / idx.shape[1] if weights is None else np.asarray(torch.as_tensor(weights).double().cpu())
        n_t = int(idx.max()) + 1 if n_targets is None else n_targets
    if n_t < 1 or idx.shape[0] == 0:
        raise ValueError("collapse_stats: need at least one source and one target")
    best = idx[:, 0]
    indeg = np.bincount(best[best >= 0], minlength=n_t)[:n_t]
    ok = idx >= 0
    usage = np.bincount(idx[ok], weights=w[ok], minlength=n_t)[:n_t]
    p = usage / usage.sum() if usage.sum() > 0 else usage
    nz = p[p > 0]
    ent = float(-(nz * np.log(nz)).sum() / math.log(n_t)) + 0.0 if n_t > 1 else 1.0  # + 0.0: no "-0"
    return {
        "n_sources": int(idx.shape[0]),
        "n_targets": int(n_t),
        "max_in_degree": int(indeg.max()),
        "mean_in_degree": float(indeg.mean()),
        "p90_in_degree": float(np.percentile(indeg, 90)),
        "usage_entropy": ent,
        "unused_fraction": float((indeg == 0).mean()),
        "unused_fraction_soft": float((usage <= 0).mean()),
    }


def colour_signature(rgb: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image colour statistics for :func:`pair_quality`: (channel mean|std ``[B,6]``, UV
    histogram ``[B,1024]``)."""
    from uotisp_lib import stats

    mean, std = stats.channel_moments(rgb)
    return torch.cat([mean, std], 1), stats.soft_histogram_uv(rgb)


def signature_distance(a: tuple[Tensor, Tensor], b: tuple[Tensor, Tensor]) -> Tensor:
    """Colour-statistics distance ``[N] x [M] -> [N,M]``: mean |moment difference| (6 values) +
    half the L1 distance of UV histograms (total variation, in [0,1])."""
    mom = torch.cdist(a[0].double(), b[0].double(), p=1) / a[0].shape[1]
    hist = 0.5 * torch.cdist(a[1].double(), b[1].double(), p=1)
    return mom + hist


def check_ground_truth(root: str | os.PathLike, split: str = "train") -> None:
    """Raise a LayoutError naming the first ground-truth PNG of ``root/split/gt`` whose size is not
    twice that of its RAW patch (``<split>/raws/<stem>.npy``); reads headers only."""
    from PIL import Image

    from uotisp_lib.data.layouts import LayoutError, scan_upisp

    lay = scan_upisp(root)
    raws, gts = lay.paths(split, "raws"), lay.paths(split, "gt")
    for stem, gt in gts.items():
        if stem not in raws:
            continue
        h, w = np.load(raws[stem], mmap_mode="r", allow_pickle=False).shape[:2]
        try:
            with Image.open(gt) as im:
                size = im.size
        except OSError as err:
            raise LayoutError(f"{gt}: unreadable ground truth ({' '.join(str(err).split())})") from None
        if size != (2 * w, 2 * h):
            raise LayoutError(
                f"{gt}: ground truth is {size[1]}x{size[0]}; expected {2 * h}x{2 * w}, twice its RAW patch {raws[stem].name}"
            )


def pair_quality(root: str | os.PathLike, graph: PairGraph, split: str = "train") -> dict[str, float]:
    """How well pseudo-pairs match colour statistics, on a benchmark with ground truth
    (``<root>/<split>/gt/<stem>.png``): expected :func:`signature_distance` between the
    ground-truth rendering of each source patch and its matched targets (``<split>/jpegs``),
    weighted by ``w`` and averaged over sources. ``random_floor`` = the same expectation under
    uniform pairing with all targets (exact). Lower is better; ``ratio`` = quality / floor.
    """
    from uotisp_lib.data.layouts import LayoutError, scan_upisp
    from uotisp_lib.io import read_srgb

    lay = scan_upisp(root)
    gts, jpgs = lay.paths(split, "gt"), lay.paths(split, "jpegs")
    if not gts:
        raise LayoutError(f"{Path(root) / split / 'gt'}: pair_quality needs ground truth <stem>.png (synthetic benchmark)")
    missing = [s for s in graph.sources if s not in gts]
    if missing:
        raise LayoutError(f"{Path(root) / split / 'gt'}: no ground truth for source stem {str(missing[0])!r}")
    check_ground_truth(root, split)
    load = lambda p: torch.from_numpy(read_srgb(p)).permute(2, 0, 1)[None].float() / 255.0  # noqa: E731
    t_stems = list(jpgs)
    t_pos = {s: i for i, s in enumerate(t_stems)}
    sig_t = [colour_signature(load(jpgs[s])) for s in t_stems]
    sig_t = (torch.cat([s[0] for s in sig_t]), torch.cat([s[1] for s in sig_t]))
    sig_s = [colour_signature(load(gts[s])) for s in graph.sources]
    sig_s = (torch.cat([s[0] for s in sig_s]), torch.cat([s[1] for s in sig_s]))
    d = signature_distance(sig_s, sig_t).numpy()  # [S, T]
    q = []
    for i, (row_t, row_w) in enumerate(zip(graph.targets, graph.weights)):
        cols = [t_pos[t] for t in row_t if t]
        if len(cols) != int((row_t != "").sum()):
            raise LayoutError(f"{Path(root) / split / 'jpegs'}: a target of {str(graph.sources[i])!r} is not in the folder")
        q.append(float((d[i, cols] * row_w[row_t != ""]).sum()))
    quality, floor = float(np.mean(q)), float(d.mean())
    return {"quality": quality, "random_floor": floor, "ratio": quality / floor if floor > 0 else float("nan")}


# --------------------------------------------------------------------------------------------------
# end to end over a UP-ISP layout
# --------------------------------------------------------------------------------------------------


@dataclass
class ImageSet:
    """One side of the matching: per image id, its patch stems, patch files and (pseudo-)RGB
    patches ``[n,3,H,W]`` in [0,1], plus the stitched image ``[3,R*H,C*W]``."""

    ids: list[str]
    stems: list[list[str]]
    files: list[list[Path]]
    patches: list[Tensor]
    stitched: list[Tensor]
    low_confidence: list[bool]


def _open_side(root, split: str, kind: str, preprocessor):
    """``(layout, paths, preprocessor)`` of one side of a dataset for matching: the files of
    ``split/kind`` (none is a one-line :class:`LayoutError`), and for ``raws`` the default
    :class:`~uotisp_lib.preprocessing.Preprocessor` when none is given."""
    from uotisp_lib.data.layouts import LayoutError, scan_dataset

    lay = scan_dataset(root)
    paths = lay.paths(split, kind)
    if not paths:
        raise LayoutError(f"{Path(root) / split / kind}: no files; matching needs {split}/{kind}")
    if kind == "raws" and preprocessor is None:
        from uotisp_lib.preprocessing import Preprocessor

        preprocessor = Preprocessor()
    return lay, paths, preprocessor


def _rgb_and_grid(raw: Tensor, kind: str, preprocessor):
    """One image's patches ``[n,C,h,w]`` -> ``(rgb [n,3,H,W], grid)``: ``raws`` through
    ``preprocessor`` to pseudo-RGB (the grid inferred on the packed RAW), ``jpegs`` as they are."""
    from uotisp_lib.stitching import infer_grid

    if kind == "raws":
        grid = infer_grid(raw, kind="raw")
        with torch.no_grad():
            return preprocessor(raw).clamp(0, 1), grid
    return raw, infer_grid(raw, kind="rgb")


def load_image_set(
    root: str | os.PathLike, split: str = "train", kind: str = "raws", preprocessor: Any = None
) -> ImageSet:
    """Read one side of a UP-ISP layout: ``raws`` go through ``preprocessor`` (default
    :class:`uotisp_lib.preprocessing.Preprocessor`) to pseudo-RGB; ``jpegs`` are read as sRGB.
    Each image is stitched with the grid from :func:`uotisp_lib.stitching.infer_grid` (on the
    packed RAW for ``raws``)."""
    from uotisp_lib.stitching import stitch

    lay, paths, preprocessor = _open_side(root, split, kind, preprocessor)
    out = ImageSet([], [], [], [], [], [])
    for image_id, stems in lay.images(split, kind).items():
        raw = lay.read_patches(split, kind, image_id)
        rgb, grid = _rgb_and_grid(raw, kind, preprocessor)
        out.ids.append(image_id)
        out.stems.append(list(stems))
        out.files.append([paths[s] for s in stems])
        out.patches.append(rgb)
        out.stitched.append(stitch(rgb, grid.rows, grid.cols))
        out.low_confidence.append(bool(grid.low_confidence))
    return out


def describe_image_set(
    images: ImageSet, descriptor: Any, cache: Any = None, settings_extra: Mapping[str, Any] | None = None
) -> tuple[Tensor, list[Tensor]]:
    """Image descriptors ``[n_images,D]`` (stitched images, :meth:`Descriptor.describe`) and
    patch descriptors (per image ``[n_patches,D_b]``, backbone only), through ``cache``
    (a :class:`uotisp_lib.features.DescriptorCache`, or None)."""
    base = dict(descriptor.settings(), **(settings_extra or {}))

    def cached(files: list[Path], what: str, fn) -> Tensor:
        if cache is None:
            return fn().float().cpu()
        return cache.get_or_compute(files, dict(base, part=what), fn)

    img_desc, patch_desc = [], []
    for files, st, pt in zip(images.files, images.stitched, images.patches):
        img_desc.append(cached(files, "image", lambda st=st: descriptor.describe(st[None])[0]))
        patch_desc.append(cached(files, "patches", lambda pt=pt: descriptor.describe_backbone(pt)))
    return torch.stack(img_desc), patch_desc


@dataclass
class DescribedSet:
    """One side of the matching, described image by image (:func:`describe_split`): per image id,
    its patch stems and files, its image descriptor (row of ``image_desc [n_images,D]``), its patch
    descriptors ``[n_patches,D_b]`` and whether its grid was a low-confidence guess."""

    ids: list[str]
    stems: list[list[str]]
    files: list[list[Path]]
    image_desc: Tensor
    patch_desc: list[Tensor]
    low_confidence: list[bool]


def _describe_one(raw: Tensor, kind: str, descriptor: Any, preprocessor: Any) -> tuple[Tensor, Tensor, Tensor]:
    """One image's patches ``[n,C,h,w]`` (RAW units or sRGB in [0,1]) -> (image descriptor ``[D]``,
    patch descriptors ``[n,D_b]``, grid ``[rows, cols, low_confidence]`` int64), exactly as
    :func:`load_image_set` + :func:`describe_image_set` compute them."""
    from uotisp_lib.stitching import stitch

    rgb, grid = _rgb_and_grid(raw, kind, preprocessor)
    img = descriptor.describe(stitch(rgb, grid.rows, grid.cols)[None])[0].float().cpu()
    patches = descriptor.describe_backbone(rgb).float().cpu()
    return img, patches, torch.tensor([grid.rows, grid.cols, int(bool(grid.low_confidence))])


def describe_split(
    root: str | os.PathLike,
    split: str,
    kind: str,
    descriptor: Any,
    preprocessor: Any = None,
    cache: Any = None,
    settings_extra: Mapping[str, Any] | None = None,
    image_ids: Sequence[str] | None = None,
) -> DescribedSet:
    """Descriptors of one side of a UP-ISP layout, streamed one image at a time: each image is
    read, preprocessed (``raws``), stitched, described and dropped, so memory holds one image and
    the descriptors, never the whole set. With ``cache`` (a
    :class:`~uotisp_lib.features.DescriptorCache`) each image's descriptors and grid are looked up
    first, by the content of its files, and written as soon as computed: a rerun, or a run resumed
    after a kill, reads no pixels of the images already described. Same values as
    :func:`load_image_set` + :func:`describe_image_set`. ``image_ids``: only these images."""
    lay, paths, preprocessor = _open_side(root, split, kind, preprocessor)
    base = dict(descriptor.settings(), **(settings_extra or {}))
    wanted = None if image_ids is None else set(image_ids)
    out = DescribedSet([], [], [], torch.empty(0), [], [])
    img_rows: list[Tensor] = []
    for image_id, stems in lay.images(split, kind).items():
        if wanted is not None and image_id not in wanted:
            continue
        files = [paths[s] for s in stems]
        entries = None if cache is None else cache.entries(files, [dict(base, part=p) for p in ("image", "patches", "grid")])
        got = None if cache is None else cache.read(entries)
        if got is None:
            got = _describe_one(lay.read_patches(split, kind, image_id), kind, descriptor, preprocessor)
            if cache is not None:
                cache.write(entries, got)
        img, patches, grid = got
        out.ids.append(image_id)
        out.stems.append(list(stems))
        out.files.append(files)
        img_rows.append(img.float())
        out.patch_desc.append(patches.float())
        out.low_confidence.append(bool(grid[2]))
    if not out.ids:
        raise ValueError(f"describe_split: none of the {len(wanted or ())} image_ids is an image of {Path(root) / split / kind}")
    out.image_desc = torch.stack(img_rows)
    return out


@use_threads()  # the thread policy: an enclosing --threads, else the free cores
def build_pair_graph(
    root: str | os.PathLike,
    method: str = "fgw",
    k: int = 10,
    k_patch: int = 8,
    backend: str = "auto",
    seed: int = 0,
    device: str = "cpu",
    descriptor: Any = None,
    preprocessor: Any = None,
    cache: Any = "default",
    eps: float = 0.05,
    alpha: float = 0.5,
    split: str = "train",
    target_ids: Sequence[str] | None = None,
) -> tuple[PairGraph, dict[str, Any]]:
    """End to end over a UP-ISP layout: RAW patches -> preprocessing -> stitched images ->
    descriptors (streamed one image at a time, :func:`describe_split`) -> :func:`match_images`
    (``method``) -> :func:`match_patches` -> patch :class:`PairGraph`. Returns ``(graph, diagnostics)`` with timings, backends and
    :func:`collapse_stats` at image and patch level. ``cache="default"`` uses
    :class:`~uotisp_lib.features.DescriptorCache` under ``cache_dir()``; ``None`` disables it.
    ``target_ids`` restricts the targets to those images (e.g. to hold some out for validation).
    """
    from uotisp_lib.data.layouts import LayoutError, scan_dataset
    from uotisp_lib.features import Descriptor, DescriptorCache

    t0 = time.perf_counter()
    lay = scan_dataset(root)  # both sides checked before the long work
    for kind in ("raws", "jpegs"):
        if not lay.paths(split, kind):
            raise LayoutError(f"{Path(root) / split / kind}: no files; matching needs {split}/{kind}")
    if target_ids is not None and not set(target_ids) & set(lay.images(split, "jpegs")):
        raise ValueError(f"build_pair_graph: none of the {len(set(target_ids))} target_ids is a target image of {root}")
    if descriptor is None:
        descriptor = Descriptor(backend=backend, device=device)
    if cache == "default":
        cache = DescriptorCache()
    if preprocessor is None:
        from uotisp_lib.preprocessing import Preprocessor

        preprocessor = Preprocessor()
    t_load = time.perf_counter()  # reading is streamed with describing (describe_split)
    pre = {"preprocessor": repr(preprocessor)}
    src = describe_split(root, split, "raws", descriptor, preprocessor, cache, pre)
    tgt = describe_split(root, split, "jpegs", descriptor, None, cache, None, target_ids)
    src_img, src_patch, tgt_img, tgt_patch = src.image_desc, src.patch_desc, tgt.image_desc, tgt.patch_desc
    t_desc = time.perf_counter()
    im = match_images(src_img.to(device), tgt_img.to(device), method, k=k, alpha=alpha, eps=eps, seed=seed)
    graph = match_patches(
        list(zip(src.stems, src_patch)), list(zip(tgt.stems, tgt_patch)), im, k_patch=k_patch, eps=eps
    )
    t_match = time.perf_counter()
    graph.meta.update(
        {"method": method, "k": k, "alpha": alpha, "seed": seed, "backends": descriptor.backends,
         "descriptor": descriptor.settings(), "root": str(root)}
    )
    diag = {
        "method": method,
        "backends": dict(descriptor.backends),
        "n_source_images": len(src.ids),
        "n_target_images": len(tgt.ids),
        "n_source_patches": len(graph),
        "low_confidence_grids": int(sum(src.low_confidence) + sum(tgt.low_confidence)),
        "seconds_load": t_load - t0,
        "seconds_describe": t_desc - t_load,
        "seconds_match": t_match - t_desc,
        "seconds_image_solver": im.seconds,
        "image_level": collapse_stats(im.topk_idx, n_targets=len(tgt.ids), weights=im.topk_w),
        "patch_level": collapse_stats(graph),
        "image_match": im,
        "source_ids": src.ids,
        "target_ids": tgt.ids,
    }
    return graph, diag
