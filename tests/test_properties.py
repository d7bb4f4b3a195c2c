"""Property tests (hypothesis): RAW reading, layout scanning, stitch / unstitch, PairGraph files."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra.numpy import arrays  # noqa: E402

from uotisp_lib import io as uio  # noqa: E402
from uotisp_lib.data.layouts import LayoutError, group_stems, parse_stem, scan_upisp  # noqa: E402
from uotisp_lib.matching import PairGraph  # noqa: E402
from uotisp_lib.stitching import stitch, unstitch  # noqa: E402

FAST = settings(max_examples=40, deadline=None)
IDS = st.text("abcXYZ019_-", min_size=1, max_size=8)


def _shape(max_side: int = 6):
    return st.tuples(st.integers(1, max_side), st.integers(1, max_side), st.just(4))


@FAST
@given(arrays(np.uint16, _shape(), elements=st.integers(0, uio.RAW_MAX)))
def test_read_raw_round_trips_every_valid_patch(raw):
    with tempfile.TemporaryDirectory() as d:
        path = uio.save_raw(Path(d) / "p_0.npy", raw)
        back = uio.read_raw(path)
    assert back.dtype == np.uint16 and np.array_equal(back, raw)


@FAST
@given(
    arrays(np.int32, _shape(), elements=st.integers(-5, 3000)),
    st.sampled_from(["values", "shape", "bytes"]),
)
def test_read_raw_rejects_bad_files_in_one_line_naming_them(arr, how):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "bad_0.npy"
        if how == "values":
            arr[0, 0, 0] = 1024 if arr[0, 0, 0] >= 0 else arr[0, 0, 0]  # at least one value out of range
            np.save(path, arr)
        elif how == "shape":
            np.save(path, np.clip(arr, 0, 1023)[..., :3])
        else:
            path.write_bytes(arr.tobytes()[:17])
        with pytest.raises(uio.RawFormatError) as info:
            uio.read_raw(path)
    msg = str(info.value)
    assert msg.startswith(str(path)) and "\n" not in msg


@FAST
@given(IDS, st.integers(0, 10**6), st.integers(0, 3))
def test_parse_stem_inverts_formatting(image_id, idx, zeros):
    assert parse_stem(f"{image_id}_{'0' * zeros}{idx}") == (image_id, idx)


@FAST
@given(st.dictionaries(IDS, st.integers(1, 5), min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_group_stems_recovers_each_image_in_index_order(counts, rnd):
    stems = [f"{i}_{k}" for i, n in counts.items() for k in range(n)]
    rnd.shuffle(stems)
    groups = group_stems(stems)
    assert groups == {i: [f"{i}_{k}" for k in range(n)] for i, n in counts.items()}
    victim = rnd.choice(sorted(counts))
    if counts[victim] > 1:  # a gap in the indices is refused, naming the image
        with pytest.raises(LayoutError, match=f"image {victim!r}"):
            group_stems([s for s in stems if s != f"{victim}_0"])


@settings(max_examples=15, deadline=None)
@given(st.dictionaries(IDS, st.integers(1, 4), min_size=1, max_size=3))
def test_scan_upisp_lists_exactly_the_patch_files(counts):
    with tempfile.TemporaryDirectory() as d:
        raws = Path(d) / "train" / "raws"
        raws.mkdir(parents=True)
        for i, n in counts.items():
            for k in range(n):
                (raws / f"{i}_{k}.npy").write_bytes(b"")
        (raws / ".hidden_0.npy").write_bytes(b"")  # hidden files (temporaries) are ignored
        lay = scan_upisp(d)
        assert set(lay.paths("train", "raws")) == {f"{i}_{k}" for i, n in counts.items() for k in range(n)}
        assert lay.images("train", "raws") == {i: [f"{i}_{k}" for k in range(n)] for i, n in counts.items()}


@FAST
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5), st.integers(0, 2**31))
def test_stitch_and_unstitch_are_inverse(rows, cols, c, h, w, seed):
    x = torch.randint(0, 1024, (rows * cols, c, h, w), generator=torch.Generator().manual_seed(seed))
    image = stitch(x, rows, cols)
    assert image.shape == (c, rows * h, cols * w)
    assert torch.equal(image[:, :h, :w], x[0]) and torch.equal(image[:, -h:, -w:], x[-1])
    assert torch.equal(unstitch(image, (h, w)), x)
    assert torch.equal(stitch(unstitch(image, (h, w)), rows, cols), image)


@st.composite
def pair_graphs(draw):
    sources = draw(st.lists(IDS, min_size=1, max_size=5, unique=True))
    k = draw(st.integers(1, 4))
    pool = draw(st.lists(IDS, min_size=1, max_size=6, unique=True))
    targets, weights = [], []
    for _ in sources:
        n = draw(st.integers(1, k))
        row = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
        raw = np.array(draw(st.lists(st.floats(0.01, 10.0), min_size=n, max_size=n)))
        targets.append(row + [""] * (k - n))
        weights.append(list(raw / raw.sum()) + [0.0] * (k - n))
    meta = draw(st.dictionaries(st.text("abc", min_size=1, max_size=3), st.integers(-5, 5), max_size=3))
    return PairGraph(np.array(sources), np.array(targets), np.array(weights), meta)


@FAST
@given(pair_graphs())
def test_pair_graph_save_load_round_trip(graph):
    with tempfile.TemporaryDirectory() as d:
        path = graph.save(Path(d) / "g.npz")
        back = PairGraph.load(path)
        csv_rows = (Path(d) / "g.csv").read_text().splitlines()
    assert back.sources.tolist() == graph.sources.tolist()
    assert back.targets.tolist() == graph.targets.tolist()
    assert np.array_equal(back.weights, graph.weights) and back.meta == graph.meta
    assert len(csv_rows) == 1 + len(graph.rows())
