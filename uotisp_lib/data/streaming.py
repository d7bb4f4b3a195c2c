"""Streaming patch sets: the :class:`~uotisp_lib.data.datasets.PatchSet` read interface over files
read on demand, so that memory does not grow with the dataset (issue 11, part 6).

A :class:`StreamingPatches` holds only the stems and file paths. Rows are read when asked for:
``.npy`` RAW patches with ``np.load(mmap_mode="r")`` (only the pages of the rows read are touched),
JPEG / PNG patches with :func:`uotisp_lib.io.read_srgb`, each converted to float32 exactly as
:func:`~uotisp_lib.data.datasets.load_raw_patches` / :func:`~uotisp_lib.data.datasets.load_srgb_patches`
convert the whole split (the same elementwise operations, so the values are bit-identical).

What the trainers use from a ``PatchSet`` works here too: ``stems``, ``len``, ``index``,
``select(stems)``, ``subset(stems)``, ``images[rows]`` (a lazy view: an integer, a slice, a list or a
``LongTensor`` of rows returns the stacked ``[B,C,H,W]`` float32 tensor) and ``to(device)``.
:meth:`StreamingPatches.map` derives a set whose rows are ``fn(rows of the parent)`` computed per
batch (the network inputs and the UOT cost's reference rendering, precomputed over the whole set
in memory, are computed per batch when streaming).

Differences from the in-memory path:

- files are read per batch, in the order of the training batches (random), not once in stem order;
  a file that turns unreadable during training fails that step, naming the file;
- a derived set (:meth:`map`) recomputes ``fn`` on every access (per-row functions only: ``fn`` of a
  batch must equal ``fn`` of the whole set restricted to those rows);
- a batch read in this process is written into a pooled buffer that nothing references any more
  (:meth:`PatchFiles._buffer`), so a step does not pay the page faults of a fresh allocation; a
  batch held anywhere (a view, the autograd graph) is never overwritten;
- :meth:`StreamingPatches.prefetch` reads a known sequence of batches ahead of use with a
  ``torch.utils.data.DataLoader`` (``num_workers`` processes, ``pin_memory`` on CUDA); a
  :meth:`select` that does not match the next prefetched batch reads its files directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from uotisp_lib import io as uio

#: file reader kinds: packed RAW ``.npy`` (normalised to [0,1]) and 8-bit sRGB images ([0,1])
KINDS = ("raws", "srgb")


def read_raw_mmap(path: str | os.PathLike) -> np.ndarray:
    """One packed RAW ``.npy`` patch -> ``uint16`` ``HxWx4``, memory-mapped (``np.load(mmap_mode="r")``)
    and validated like :func:`uotisp_lib.io.read_raw` (errors name the file)."""
    path = Path(path)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as err:
        raise uio.RawFormatError(f"{path}: could not be read as .npy ({err})") from err
    if not isinstance(arr, np.ndarray):
        raise uio.RawFormatError(f"{path}: could not be read as .npy (expected one HxWx4 array)")
    return uio.check_raw(arr, name=str(path))


class PatchFiles(Dataset):
    """A ``torch.utils.data.Dataset``: row ``i`` is the float32 ``[C,H,W]`` tensor of ``paths[i]``.

    ``kind="raws"``: ``(x - black) / (white - black)`` clamped to [0,1], as :func:`load_raw_patches`;
    ``kind="srgb"``: ``x / 255``, as :func:`load_srgb_patches`."""

    def __init__(self, paths: Sequence[Path], kind: str, black: float = 0.0, white: float = float(uio.RAW_MAX)) -> None:
        if kind not in KINDS:
            raise ValueError(f"PatchFiles: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.paths, self.kind, self.black, self.white = tuple(Path(p) for p in paths), kind, black, white

    def __len__(self) -> int:
        return len(self.paths)

    def _decode(self, i: int) -> np.ndarray:
        """File ``i`` as read (``uint16`` ``HxWx4`` or ``uint8`` ``HxWx3``)."""
        return read_raw_mmap(self.paths[i]) if self.kind == "raws" else uio.read_srgb(self.paths[i])

    def _convert_into(self, arr: np.ndarray, out: torch.Tensor) -> None:
        """Write the float32 ``[C,H,W]`` of ``arr`` into ``out`` in place: the elementwise operations
        of the in-memory loaders, in float32 (so the same bits), without a temporary per patch."""
        if self.kind == "raws":
            np.copyto(out.numpy(), arr.transpose(2, 0, 1), casting="unsafe")  # exact: integers -> float32
            out.sub_(self.black).div_(self.white - self.black).clamp_(0.0, 1.0)
        else:  # one pass: uint8 -> float32 / 255 (the same float32 division as ``.float() / 255.0``)
            torch.div(torch.from_numpy(arr).permute(2, 0, 1), 255.0, out=out)

    def __getitem__(self, i: int) -> torch.Tensor:
        arr = self._decode(int(i))
        out = torch.empty((arr.shape[2], arr.shape[0], arr.shape[1]), dtype=torch.float32)
        self._convert_into(arr, out)
        return out

    def read(self, rows: Sequence[int], reuse: bool = False) -> torch.Tensor:
        """The rows ``[B,C,H,W]`` as one tensor, each patch converted straight into it; a shape
        unlike the first file's raises naming the file. ``reuse``: write into a batch buffer of an
        earlier read that nothing references any more (:meth:`_buffer`), sparing the page faults of
        a fresh allocation."""
        rows = [int(r) for r in rows]
        if not rows:
            return torch.empty(0)
        first = self._decode(rows[0])
        shape = (len(rows), first.shape[2], first.shape[0], first.shape[1])
        out = self._buffer(shape) if reuse else torch.empty(shape, dtype=torch.float32)
        for k, r in enumerate(rows):
            arr = first if k == 0 else self._decode(r)
            if arr.shape != first.shape:
                raise uio.ImageFormatError(f"{self.paths[r]}: shape {arr.shape} differs from {first.shape} of "
                                           f"{self.paths[rows[0]]}; patches must be equal")
            self._convert_into(arr, out[k])
        return out


    #: batch buffers kept per shape for ``read(..., reuse=True)``
    POOL = 4

    def _buffer(self, shape: tuple[int, ...]) -> torch.Tensor:
        """A view of a pooled ``float32`` buffer of ``shape`` whose storage no tensor outside the pool
        uses (its use count is back to the count it had when pooled), else a fresh tensor (pooled
        while fewer than :attr:`POOL` buffers of that shape exist). Without torch's storage use
        count (a private function), always a fresh tensor."""
        count = getattr(torch._C, "_storage_Use_Count", None)
        if count is None:
            return torch.empty(shape, dtype=torch.float32)
        pool = self.__dict__.setdefault("_pool", {}).setdefault(shape, [])
        for buf, base in pool:
            if count(buf.untyped_storage()._cdata) == base:
                return buf.view(shape)  # a new tensor on the same storage: holding it marks the buffer used
        buf = torch.empty(shape, dtype=torch.float32)
        if len(pool) < self.POOL:
            pool.append((buf, count(buf.untyped_storage()._cdata)))
        return buf.view(shape)

    def __getstate__(self) -> dict:  # DataLoader workers get the paths, not the buffers
        return {k: v for k, v in self.__dict__.items() if k != "_pool"}


class _Batches(Dataset):
    """Item ``k`` of a ``DataLoader`` over it is the whole batch ``batches[k]`` read by
    :meth:`PatchFiles.read` (in a worker process: the batch is assembled there, not collated)."""

    def __init__(self, files: PatchFiles, batches: Sequence[Sequence[int]]) -> None:
        self.files, self.batches = files, [list(b) for b in batches]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, k: int) -> torch.Tensor:
        return self.files.read(self.batches[k])


class _Rows:
    """``images`` of a :class:`StreamingPatches`: indexing reads the rows (never the whole set at once
    unless asked for with ``[:]``)."""

    def __init__(self, owner: "StreamingPatches") -> None:
        self._owner = owner

    def __len__(self) -> int:
        return len(self._owner)

    def __getitem__(self, key) -> torch.Tensor:
        n = len(self._owner)
        if isinstance(key, slice):
            rows = list(range(n))[key]
        elif isinstance(key, int):
            return self._owner.rows([key if key >= 0 else n + key])[0]
        else:
            rows = torch.as_tensor(key, dtype=torch.long).reshape(-1).tolist()
        return self._owner.rows(rows)

    def split(self, size: int) -> Iterator[torch.Tensor]:
        for i in range(0, len(self), size):
            yield self[i : i + size]

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self._owner.sample_shape)


class StreamingPatches:
    """``stems[i]`` names row ``i``, read from ``files`` on demand (see the module docstring).

    ``fn`` (set by :meth:`map`): a per-row function applied to each batch read; ``parent``: the set
    the rows come from (``files`` and the one-batch cache live there)."""

    def __init__(self, stems: Sequence[str], files: PatchFiles | None, *, parent: "StreamingPatches | None" = None,
                 rows_of_parent: Sequence[int] | None = None, fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 device: str | torch.device = "cpu") -> None:
        self.stems = tuple(stems)
        if len(set(self.stems)) != len(self.stems):
            raise ValueError("StreamingPatches: duplicate stems")
        if files is not None and len(files) != len(self.stems):
            raise ValueError(f"StreamingPatches: {len(self.stems)} stems for {len(files)} files")
        self.files, self.parent, self.fn, self.device = files, parent, fn, torch.device(device)
        self._rows_of_parent = None if rows_of_parent is None else list(rows_of_parent)
        self._index: dict[str, int] | None = None
        self._cache: tuple[tuple[int, ...], torch.Tensor] | None = None  # the last batch read
        self._pending: Iterator[torch.Tensor] | None = None  # prefetched batches, in order
        self._pending_rows: list[tuple[int, ...]] = []
        self.reads = 0  # files read (for tests and benchmarks)

    # ------------------------------------------------------------------ PatchSet interface
    def __len__(self) -> int:
        return len(self.stems)

    @property
    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {s: i for i, s in enumerate(self.stems)}
        return self._index

    @property
    def images(self) -> _Rows:
        return _Rows(self)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.rows([0]).shape[1:])

    def select(self, stems: Sequence[str]) -> torch.Tensor:
        """Rows of ``stems`` in that order; an unknown stem raises ``KeyError`` naming it."""
        idx = self.index
        missing = [s for s in stems if s not in idx]
        if missing:
            raise KeyError(f"StreamingPatches: unknown stems {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        return self.rows([idx[s] for s in stems])

    def subset(self, stems: Iterable[str]) -> "StreamingPatches":
        """The rows of ``stems`` (no file is read)."""
        stems = tuple(stems)
        idx = self.index
        missing = [s for s in stems if s not in idx]
        if missing:
            raise KeyError(f"StreamingPatches: unknown stems {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        return StreamingPatches(stems, None, parent=self, rows_of_parent=[idx[s] for s in stems], device=self.device)

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "StreamingPatches":
        """The same stems, each batch of rows being ``fn(rows of self)`` (computed per access)."""
        return StreamingPatches(self.stems, None, parent=self, rows_of_parent=None, fn=fn, device=self.device)

    def to(self, device: str | torch.device) -> "StreamingPatches":
        """The same rows delivered on ``device``."""
        out = StreamingPatches(self.stems, None, parent=self, device=device)
        return out

    def materialise(self):
        """The whole set as an in-memory :class:`~uotisp_lib.data.datasets.PatchSet` (for small sets)."""
        from uotisp_lib.data.datasets import PatchSet

        return PatchSet(self.stems, self.rows(range(len(self))))

    # ------------------------------------------------------------------ reads
    def root(self) -> "StreamingPatches":
        return self if self.parent is None else self.parent.root()

    def rows(self, rows: Sequence[int]) -> torch.Tensor:
        """The stacked rows ``rows`` (positions in this set) as ``[B,C,H,W]``."""
        rows = tuple(int(r) for r in rows)
        if self.parent is None:
            out = self._read(rows)
        else:
            prow = rows if self._rows_of_parent is None else tuple(self._rows_of_parent[r] for r in rows)
            out = self.parent.rows(prow)
            if self.fn is not None:
                with torch.no_grad():
                    out = self.fn(out)
        return out if out.device == self.device else out.to(self.device)

    def _read(self, rows: tuple[int, ...]) -> torch.Tensor:
        if self._cache is not None and self._cache[0] == rows:
            return self._cache[1]
        out = None
        while self._pending_rows:  # prefetched batches skipped over are dropped
            want = self._pending_rows.pop(0)
            batch = next(self._pending)
            if want == rows:
                out = batch
                break
        if out is None:
            out = self.files.read(rows, reuse=True)
        self.reads += len(rows)
        self._cache = (rows, out)
        return out

    def prefetch(self, batches: Sequence[Sequence[str]], num_workers: int = 0, pin_memory: bool | None = None,
                 prefetch_factor: int = 2) -> None:
        """Read ``batches`` (lists of stems, in the order they will be selected) ahead of use with a
        ``DataLoader``; ``pin_memory`` defaults to ``torch.cuda.is_available()``."""
        root = self.root()
        pos = [self._root_rows([self.index[s] for s in b]) for b in batches]
        root._pending_rows = [tuple(p) for p in pos]
        root._pending = iter(root.loader(pos, num_workers=num_workers, pin_memory=pin_memory, prefetch_factor=prefetch_factor))

    def _root_rows(self, rows: Sequence[int]) -> list[int]:
        if self.parent is None:
            return list(rows)
        prow = list(rows) if self._rows_of_parent is None else [self._rows_of_parent[r] for r in rows]
        return self.parent._root_rows(prow)

    def loader(self, batches: Sequence[Sequence[int]], num_workers: int = 0, pin_memory: bool | None = None,
               prefetch_factor: int = 2) -> DataLoader:
        """A ``DataLoader`` yielding the stacked rows of each batch of ``batches`` (positions in the
        root set), read by ``num_workers`` worker processes."""
        if self.files is None:
            raise ValueError("StreamingPatches.loader: only the root set (the one with the files) has a loader")
        pin = torch.cuda.is_available() if pin_memory is None else pin_memory
        kw = {"prefetch_factor": prefetch_factor, "persistent_workers": False} if num_workers > 0 else {}
        return DataLoader(_Batches(self.files, batches), batch_size=None, shuffle=False, num_workers=num_workers,
                          pin_memory=pin, **kw)


def stream_raw_patches(layout, split: str, *, black: float = 0.0, white: float = float(uio.RAW_MAX)) -> StreamingPatches:
    """:func:`~uotisp_lib.data.datasets.load_raw_patches`, streamed (UP-ISP ``.npy`` layouts only)."""
    if layout.format != "upisp":
        raise ValueError(f"{layout.root}: streaming reads .npy RAW patches (the UP-ISP layout); "
                         f"a {layout.format} dataset is loaded in memory (leave out --stream)")
    paths = layout.paths(split, "raws")
    if not paths:
        raise FileNotFoundError(f"{layout.root / split / 'raws'}: no RAW patches")
    return StreamingPatches(tuple(paths), PatchFiles(list(paths.values()), "raws", black, white))


def stream_srgb_patches(layout, split: str, kind: str = "jpegs") -> StreamingPatches:
    """:func:`~uotisp_lib.data.datasets.load_srgb_patches`, streamed."""
    if layout.format == "dng":
        raise ValueError(f"{layout.root}: a DNG folder is cut into patches when read; it is loaded in memory")
    paths = layout.paths(split, kind)
    if not paths:
        raise FileNotFoundError(f"{layout.root / split / kind}: no {kind} images")
    return StreamingPatches(tuple(paths), PatchFiles(list(paths.values()), "srgb"))
