"""The seam scoring of :mod:`uotisp_lib.stitching`, written once for NumPy and torch arrays.

:func:`score_strips` is the only implementation of both rankings (``"evidence"`` and ``"mean"``,
described in :mod:`uotisp_lib.stitching`). It is written against a small namespace of array
operations (:data:`NUMPY_OPS`, or the torch one that :mod:`uotisp_lib.stitching` passes), so the
torch path (differentiable, any device) and the NumPy path give the same scores up to float32
rounding. This module imports NumPy only: ``uotisp stitch --layouts-only`` scores RAW ``.npy``
files through :func:`infer_grids_from_files` without loading torch (start-up 0.1 s instead of 2 s);
:func:`iter_grids_from_files` does it image by image with a reader thread ahead of the scoring.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Iterator, Sequence

import numpy as np

from uotisp_lib.io import RAW_MAX, RawStrips, advise_willneed, is_cached, read_raw_strips

#: Default border width ``b`` (pixels of the score map), as in the Borelli supplement.
DEFAULT_BORDER = 4
#: Below this confidence a :class:`GridChoice` is flagged ``low_confidence``.
DEFAULT_MIN_CONFIDENCE = 0.05
#: Ranking methods of :func:`uotisp_lib.stitching.seam_scores`.
METHODS = ("evidence", "mean")
#: Images whose strips :func:`iter_grids_from_files` reads ahead of the one being scored.
DEFAULT_PREFETCH = 2
#: Errors of one image's files that :func:`iter_grids_from_files` yields instead of raising.
READ_ERRORS = (ValueError, OSError)

# Constants of the "evidence" ranking (see uotisp_lib.stitching).
_EPS = 2e-3  # about half an 8-bit step: keeps r ~ 1 on flat, noise-free patches
_TAU = 2.0  # r at which a seam is as likely adjacent as not
_SLOPE = 2.0  # steepness of the soft test in log r
_TIE_RTOL = 1e-6  # relative score difference below which two grids tie


@dataclass(frozen=True)
class GridChoice:
    """The chosen grid of one image.

    ``score``: the winner's score (lower is better); ``confidence``: ``(S2 - S1) / S2`` in
    ``[0, 1]``; ``candidates``: every factor pair as ``(rows, cols, score)``, best first;
    ``low_confidence``: ``confidence < min_confidence`` (ties always are).
    """

    rows: int
    cols: int
    score: float
    confidence: float
    candidates: tuple[tuple[int, int, float], ...]
    low_confidence: bool = False
    method: str = "evidence"

    @property
    def second(self) -> tuple[int, int, float] | None:
        """The runner-up ``(rows, cols, score)``, or ``None`` when there was one candidate."""
        return self.candidates[1] if len(self.candidates) > 1 else None


def factor_pairs(n: int) -> list[tuple[int, int]]:
    """All ``(rows, cols)`` with ``rows * cols == n``, rows ascending: ``12 -> (1,12), (2,6), ...``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"factor_pairs: expected a positive integer number of patches, got {n!r}")
    small = [r for r in range(1, math.isqrt(n) + 1) if n % r == 0]
    rows = small + [n // r for r in reversed(small) if r * r != n]
    return [(r, n // r) for r in rows]


def validate_method(method: str, fn: str) -> None:
    if method not in METHODS:
        raise ValueError(f"{fn}: unknown method {method!r}; expected one of {', '.join(METHODS)}")


@functools.lru_cache(maxsize=64)
def seam_index(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seam union of ``n`` patches and every grid's claim on it (cached per ``n``; read-only arrays).

    Horizontal pairs ``(i, i+1)``, ``i < n-1``; vertical pairs ``(i, i+C)`` for every factor
    ``C < n``. Returns ``(h_a, h_b, v_a, v_b, claim [K, n-1+P_v])`` (int64 indices, boolean claim:
    true where a grid, ``K`` of them in :func:`factor_pairs` order, has that seam).
    """
    cols = np.array([c for _, c in factor_pairs(n)], np.int64)
    i = np.arange(n - 1, dtype=np.int64)
    # A horizontal pair (i, i+1) is a seam of (R, C) unless i ends a row.
    claim_h = (i[None, :] % cols[:, None]) != (cols[:, None] - 1)
    widths = [int(c) for c in cols if c < n]
    v_a = np.concatenate([np.arange(n - c, dtype=np.int64) for c in widths] or [np.zeros(0, np.int64)])
    step = np.concatenate([np.full(n - c, c, np.int64) for c in widths] or [np.zeros(0, np.int64)])
    # A vertical pair (i, i+C') is a seam of (R, C) iff C' == C.
    claim_v = step[None, :] == cols[:, None]
    out = (i, i + 1, v_a, v_a + step, np.concatenate([claim_h, claim_v], axis=1))
    for a in out:
        a.flags.writeable = False
    return out


#: Array operations of :func:`score_strips` for NumPy arrays.
NUMPY_OPS = SimpleNamespace(
    take=lambda x, idx: np.take(x, idx, axis=1),
    cat=lambda xs, axis: np.concatenate(xs, axis=axis),
    log=np.log,
    softplus=lambda x: np.logaddexp(x.dtype.type(0), x),
    index=lambda n, like: tuple(a if k < 4 else a.astype(like.dtype) for k, a in enumerate(seam_index(n))),
    zeros=lambda like, b: np.zeros((b, 1), like.dtype),
)


def _inner_step(s):
    """Mean 1-pixel step across the lines of strips ``[B, N, b, L]`` -> ``[B, N]``."""
    return abs(s[..., 1:, :] - s[..., :-1, :]).mean(axis=(-1, -2))


def _pair_costs(first, second, ia, ib, method: str, ops):
    """Costs ``[B, P]`` of the seams ``(first[:, ia], second[:, ib])``; strips ``[B, N, b, L]``.

    ``mean``: the Borelli strip cost; ``evidence``: the soft test ``t`` (only the two seam lines
    are gathered per pair; the inner steps once per patch).
    """
    if method == "mean":
        return abs(ops.take(first, ia) - ops.take(second, ib)).mean(axis=(-1, -2))
    # gathering the seam lines gives contiguous [B, P, L] operands (indexing mixed with an integer
    # index gives a strided result that is ~10x slower to subtract)
    jump = abs(ops.take(first[:, :, -1], ia) - ops.take(second[:, :, 0], ib)).mean(axis=-1)
    inner = 0.5 * (ops.take(_inner_step(first), ia) + ops.take(_inner_step(second), ib))
    ratio = (jump + _EPS) / (inner + _EPS)
    return _SLOPE * (ops.log(ratio) - math.log(_TAU))


def score_strips(right, left, bottom, top, method: str = "evidence", ops=NUMPY_OPS):
    """Scores ``[B, K]`` of the ``K`` factor pairs of ``N`` (:func:`factor_pairs` order; lower is
    better; ``N = 1`` scores 0) from seam-oriented strips ``right, left [B, N, b, h]`` and
    ``bottom, top [B, N, b, w]`` (see :class:`uotisp_lib.stitching.Strips`)."""
    bsz, n = right.shape[:2]
    if n == 1:
        return ops.zeros(right, bsz)
    h_a, h_b, v_a, v_b, claim = ops.index(n, right)
    if right.shape == bottom.shape:  # square patches: one pass over both orientations
        first = ops.cat([right, bottom], 1)
        second = ops.cat([left, top], 1)
        cost = _pair_costs(first, second, ops.cat([h_a, v_a + n], 0), ops.cat([h_b, v_b + n], 0), method, ops)
    else:
        cost = ops.cat(
            [_pair_costs(right, left, h_a, h_b, method, ops), _pair_costs(bottom, top, v_a, v_b, method, ops)], 1
        )
    if method == "mean":
        return (cost @ claim.T) / claim.sum(1)
    # logistic loss of labelling a seam "adjacent" = softplus(t), "not adjacent" = softplus(-t)
    loss = ops.softplus(cost) @ claim.T + ops.softplus(-cost) @ (1 - claim).T
    return loss / cost.shape[1]


def choose(pairs: list[tuple[int, int]], scores: list[float], min_confidence: float, method: str) -> GridChoice:
    """Rank one image's scores into a :class:`GridChoice` (stable: ties keep factor-pair order)."""
    order = sorted(range(len(pairs)), key=lambda k: scores[k])
    cands = tuple((pairs[k][0], pairs[k][1], float(scores[k])) for k in order)
    if len(cands) == 1:
        return GridChoice(cands[0][0], cands[0][1], 0.0, 1.0, cands, False, method)
    s1, s2 = cands[0][2], cands[1][2]
    conf = 0.0 if s2 <= 0 or (s2 - s1) <= _TIE_RTOL * s2 else (s2 - s1) / s2
    return GridChoice(cands[0][0], cands[0][1], s1, conf, cands, not conf >= min_confidence, method)  # NaN: low


def raw_strip_maps(raw, images: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seam-oriented float32 strips ``(right, left, bottom, top)`` ``[images, N, b, L]`` of the
    ``(Gr + Gb) / 2`` score map in ``[0, 1]`` from the ``uint16`` strips of
    :func:`uotisp_lib.io.read_raw_strips` (``images * N`` files, image-major).

    Elementwise as the full path (``x / RAW_MAX`` in float32, then ``0.5 * (Gr + Gb)``), so the
    values equal those of :func:`uotisp_lib.stitching.border_strips` on the fully loaded patches.
    """
    n_files = raw.right.shape[0]
    if images < 1 or n_files % images:
        raise ValueError(f"strips_from_raw: {n_files} files cannot be split into {images} images of equal N")

    def gmap(a: np.ndarray, transpose: bool) -> np.ndarray:
        x = a[..., 1:3].astype(np.float32) / np.float32(RAW_MAX)  # [M, ., ., 2] (Gr, Gb)
        m = np.float32(0.5) * (x[..., 0] + x[..., 1])
        m = m.reshape(images, n_files // images, *m.shape[1:])
        return np.ascontiguousarray(m.swapaxes(-1, -2)) if transpose else m

    return gmap(raw.right, True), gmap(raw.left, True), gmap(raw.bottom, False), gmap(raw.top, False)


def raw_strips_of(stack: np.ndarray, border: int = DEFAULT_BORDER) -> RawStrips:
    """The :func:`uotisp_lib.io.read_raw_strips` strips of a loaded packed RAW stack ``[N, h, w, 4]``."""
    n, h, w = stack.shape[:3]
    if isinstance(border, bool) or not isinstance(border, int) or not 2 <= border <= min(h, w):
        raise ValueError(f"border_strips: border must be an integer in [2, {min(h, w)}] for {h}x{w} patches, got {border!r}")
    b = border
    cut = (stack[:, :, w - b :], stack[:, :, :b], stack[:, h - b :], stack[:, :b])
    return RawStrips(*(np.ascontiguousarray(x, dtype=np.uint16) for x in cut), (h, w, 4), ())


def choose_from_raw_strips(
    raw, images: int = 1, min_confidence: float = DEFAULT_MIN_CONFIDENCE, method: str = "evidence"
) -> list[GridChoice]:
    """Grid choices of ``images`` images from their RAW border strips (NumPy scoring)."""
    right, left, bottom, top = raw_strip_maps(raw, images)
    pairs = factor_pairs(right.shape[1])
    scores = score_strips(right, left, bottom, top, method)
    return [choose(pairs, row, min_confidence, method) for row in scores.tolist()]


def infer_grids_from_files(
    images: Sequence[Sequence],
    border: int = DEFAULT_BORDER,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    method: str = "evidence",
    bits: int = 10,
) -> list[GridChoice]:
    """Batched :func:`infer_grid_from_files` for images with the same number of patches: ``images``
    is a sequence of row-major path lists. All files must share one shape (one header parse)."""
    _check_file_args(border, method, "infer_grids_from_files")
    groups = [list(g) for g in images]
    if not groups:
        return []
    sizes = sorted({len(g) for g in groups})
    if sizes[0] == 0 or len(sizes) > 1:
        raise ValueError(f"infer_grids_from_files: every image needs the same N >= 1 patch files, got N in {sizes}")
    raw = read_raw_strips([p for g in groups for p in g], border, bits=bits)
    return choose_from_raw_strips(raw, len(groups), min_confidence, method)


def infer_grid_from_files(
    paths: Sequence,
    border: int = DEFAULT_BORDER,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    method: str = "evidence",
    bits: int = 10,
) -> GridChoice:
    """The grid of one image from its row-major packed RAW ``.npy`` patch files, reading only their
    border strips (:func:`uotisp_lib.io.read_raw_strips`: headers checked per file, the ``bits``
    range only on the strips). Same choice as :func:`uotisp_lib.stitching.infer_grid` on the fully
    loaded patches divided by ``RAW_MAX`` (``kind="raw"``), scores equal up to float32 rounding."""
    return infer_grids_from_files([paths], border, min_confidence, method, bits)[0]


def _check_file_args(border: int, method: str, fn: str) -> None:
    """One-line ValueErrors naming ``fn`` for an unknown method or a border below 2."""
    validate_method(method, fn)
    if isinstance(border, bool) or not isinstance(border, int) or border < 2:
        raise ValueError(f"{fn}: border must be an integer >= 2, got {border!r}")


class _Reader:
    """Reads one image's strips at a time (in one thread). Before each image it checks whether the
    next image's last file is in the page cache (:func:`uotisp_lib.io.is_cached`, ~10 us); if not,
    it advises the kernel (``WILLNEED``) to fetch that image's files while this one is read and
    scored: a deeper disk queue when cold, no cost when warm (the advice itself costs ~12 us a
    file). Read errors (:data:`READ_ERRORS`) are returned, not raised."""

    def __init__(self, groups: list[list], border: int, bits: int):
        self.groups, self.border, self.bits = groups, border, bits

    def __call__(self, j: int) -> RawStrips | Exception:
        ahead = self.groups[j + 1] if j + 1 < len(self.groups) else []
        if ahead and not is_cached(ahead[-1]):
            advise_willneed(ahead)
        try:
            return read_raw_strips(self.groups[j], self.border, bits=self.bits)
        except READ_ERRORS as err:
            return err


def iter_grids_from_files(
    images: Sequence[Sequence],
    border: int = DEFAULT_BORDER,
    min_confidence: float = DEFAULT_MIN_CONFIDENCE,
    method: str = "evidence",
    bits: int = 10,
    prefetch: int = DEFAULT_PREFETCH,
) -> Iterator[GridChoice | Exception]:
    """:func:`infer_grid_from_files` of every image of ``images`` (row-major path lists, any N each),
    in order, with reading overlapped with scoring.

    Yields per image its :class:`GridChoice`, or the exception (one of :data:`READ_ERRORS`: missing,
    corrupt, mismatched or out-of-range files, named in its one-line message) that reading or
    scoring it raised; other exceptions propagate. With ``prefetch >= 1`` one reader thread reads the
    strips of up to ``prefetch`` images ahead of the one being scored (file reads and NumPy copies
    release the GIL) and, when the next image's files are not in the page cache, advises the kernel
    to fetch them (``WILLNEED``), so a cold disk and the scorer work at once; ``prefetch=0`` reads
    in the calling thread. The results are the same either way, bitwise. Closing the generator early
    (``break``, an exception in the caller) cancels the reads not started and waits for the one
    running (one image at most).
    """
    _check_file_args(border, method, "iter_grids_from_files")
    if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0:
        raise ValueError(f"iter_grids_from_files: prefetch must be an integer >= 0, got {prefetch!r}")
    groups = [list(g) for g in images]

    read = _Reader(groups, border, bits)

    def score(raw: RawStrips | Exception) -> GridChoice | Exception:
        if isinstance(raw, Exception):
            return raw
        try:
            return choose_from_raw_strips(raw, 1, min_confidence, method)[0]
        except READ_ERRORS as err:
            return err

    if prefetch == 0 or len(groups) < 2:
        for j in range(len(groups)):
            yield score(read(j))
        return
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="uotisp-strips")
    pending: deque = deque()
    try:
        submitted = 0
        for _ in range(len(groups)):
            while submitted < len(groups) and len(pending) <= prefetch:
                pending.append(pool.submit(read, submitted))
                submitted += 1
            yield score(pending.popleft().result())
    finally:
        for fut in pending:
            fut.cancel()
        pool.shutdown(wait=True)
