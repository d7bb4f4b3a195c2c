"""File I/O at the edges: RAW patches, DNG, sRGB images, atomic writes.

Everything that touches disk goes through here (or :mod:`uotisp_lib.reporting`, :mod:`uotisp_lib.cli`).
Writes are atomic: data goes to a temporary file in the destination folder, is flushed and fsync'd,
then renamed over the target, so a crash never leaves a half-written file behind.

Readers validate what they load and raise one-line errors that start with the file's path and say
what was expected: :class:`RawFormatError` for RAW data (``.npy``, DNG, Bayer PNG) and
:class:`ImageFormatError` for sRGB images (both are ``ValueError``); a missing file raises
``FileNotFoundError``.

RAW convention (UP-ISP, NTIRE 2026): a patch is ``uint16`` ``HxWx4`` packed from a 2x2 Bayer mosaic
in the channel order ``[R, Gr, Gb, B]``, where ``Gr`` is the green on the red rows and ``Gb`` the
green on the blue rows, values ``0..1023`` (10-bit, black 0, white 1023). Readers return NumPy
arrays; turning them into normalised tensors is :mod:`uotisp_lib.preprocessing`'s job.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Sequence

import numpy as np

#: Bit depth and range of the UP-ISP RAW patches (Google Pixel 6, packed RGGB [R, Gr, Gb, B]).
RAW_BITS = 10
RAW_MAX = 2**RAW_BITS - 1


class RawFormatError(ValueError):
    """A RAW file is unreadable or not what was expected; the message names the file."""


class ImageFormatError(ValueError):
    """An sRGB image file is unreadable or not what was expected; the message names the file."""


def current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _host_tag() -> str:
    """This machine's name reduced to ``[A-Za-z0-9_]`` (part of temporary names)."""
    return re.sub(r"\W", "_", socket.gethostname(), flags=re.ASCII)


def temp_prefix(dest: Path, kind: str = "tmp") -> str:
    """Prefix of a temporary sibling of ``dest``: ``.<name>.<kind>-<pid>-<host>-``, so that
    :func:`clean_stale_temps` can tell the leftovers of dead processes from live work."""
    return f".{dest.name}.{kind}-{os.getpid()}-{_host_tag()}-"


def make_temp_dir(dest: str | os.PathLike, kind: str = "tmp") -> Path:
    """A new empty folder beside ``dest`` (see :func:`temp_prefix`), with the umask's permissions
    (mkdtemp makes 0700), to be renamed onto ``dest`` when complete."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(dest, kind), dir=dest.parent))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def apply_umask(root: str | os.PathLike) -> None:
    """Give ``root`` and everything under it the permissions the umask allows (0666 / 0777 masked):
    for what writers create 0600 (safetensors, mkstemp) or 0700 (mkdtemp) before it is published."""
    mask = current_umask()
    root = Path(root)
    for path in [root, *root.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<host>\w*)-")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def clean_stale_temps(folder: str | os.PathLike, name: str | None = None) -> list[Path]:
    """Remove the temporary files and folders in ``folder`` (those of ``name`` only, if given)
    left by processes of this machine that no longer run (killed with SIGKILL, power loss).
    Returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed, host = [], _host_tag()
    for entry in os.scandir(folder):
        m = _TEMP_NAME.match(entry.name)
        if m is None or m["host"] != host or (name is not None and m["name"] != name):
            continue
        pid = int(m["pid"])
        if pid == os.getpid() or _pid_alive(pid):
            continue
        if m["kind"] == "old" and not (folder / m["name"]).exists():
            continue  # killed between moving the old result aside and publishing: keep it to recover
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        removed.append(path)
    return removed


def check_output_path(path: str | os.PathLike, option: str, kind: str = "folder") -> Path:
    """Fail early, in one line naming ``option``, when ``path`` cannot be written as a ``kind``
    (``"folder"`` or ``"file"``): a regular file in the way, or no write permission."""
    path = Path(path)
    if kind == "folder" and path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path}: is a regular file; expected a folder")
    if kind == "file" and path.is_dir():
        raise ValueError(f"{option} {path}: is a folder; expected a file name")
    for parent in ([path] if kind == "folder" else []) + list(path.absolute().parents):
        if not parent.exists():
            continue
        if not parent.is_dir():
            raise ValueError(f"{option} {path}: {parent} is a regular file; expected a folder there")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError(f"{option} {path}: {parent} is not writable")
        break
    return path


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside ``path``; on clean exit fsync and rename it onto ``path``.

    On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a published file follows the umask
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; return the path."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def save_raw(path: str | os.PathLike, raw: np.ndarray) -> Path:
    """Save a packed RAW patch (uint16, HxWx4, values 0..1023) as ``.npy``, atomically."""
    raw = np.asarray(raw)
    if raw.ndim != 3 or raw.shape[2] != 4:
        raise RawFormatError(f"{path}: expected a packed RAW array HxWx4, got shape {raw.shape}")
    if raw.dtype != np.uint16:
        raise RawFormatError(f"{path}: expected dtype uint16, got {raw.dtype}")
    if raw.size and int(raw.max()) > RAW_MAX:
        raise RawFormatError(f"{path}: values exceed the 10-bit range 0..{RAW_MAX} (max {int(raw.max())})")
    with atomic_open(path, "wb") as fh:
        np.save(fh, raw, allow_pickle=False)
    return Path(path)


def save_image(path: str | os.PathLike, img: np.ndarray, quality: int = 95, png_level: int | None = None) -> Path:
    """Save an sRGB image (uint8 HxWx3) as PNG or JPEG (by suffix; JPEG at ``quality``), atomically.

    ``png_level``: zlib level 0 to 9 of a PNG (``None``: Pillow's default, 6). PNG is lossless at every
    level; level 1 encodes about 3x faster than 6 for 14 to 42% more bytes (measured in benchmarks/README.md).
    """
    import imageio.v3 as iio

    path = Path(path)
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"{path}: expected uint8 HxWx3, got {img.dtype} {img.shape}")
    ext = path.suffix.lower()
    if ext in (".jpg", ".jpeg"):
        data = iio.imwrite("<bytes>", img, extension=".jpg", quality=int(quality))
    elif ext == ".png":
        if png_level is not None and not 0 <= int(png_level) <= 9:
            raise ValueError(f"{path}: png_level {png_level}: expected an integer from 0 to 9")
        kw = {} if png_level is None else {"compress_level": int(png_level)}
        data = iio.imwrite("<bytes>", img, extension=".png", **kw)
    else:
        raise ValueError(f"{path}: unsupported image suffix {ext!r}; expected .png, .jpg or .jpeg")
    return atomic_write_bytes(path, data)


# --------------------------------------------------------------------------------------------------
# Helpers shared by the readers
# --------------------------------------------------------------------------------------------------


def _one_line(err: BaseException) -> str:
    """An exception's message on one line (LibRaw gives ``bytes``; NumPy may give several lines)."""
    msg = err.args[0] if len(err.args) == 1 else str(err)
    if isinstance(msg, bytes):
        msg = msg.decode("utf-8", "replace")
    return " ".join(str(msg).split()) or type(err).__name__


def _require_file(path: Path, what: str) -> None:
    """Raise ``FileNotFoundError`` (or ``IsADirectoryError``) naming ``path`` and what was expected."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file; expected {what}")
    if not path.is_file():
        raise IsADirectoryError(f"{path}: is not a regular file; expected {what}")


#: What Pillow (via imageio) raises on unknown, broken or truncated image files.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError)


def _check_bits(bits: int) -> int:
    if not isinstance(bits, (int, np.integer)) or isinstance(bits, bool) or not 1 <= int(bits) <= 16:
        raise ValueError(f"bits must be an integer in 1..16 (uint16 container), got {bits!r}")
    return int(bits)


# --------------------------------------------------------------------------------------------------
# Packed RAW patches (.npy)
# --------------------------------------------------------------------------------------------------


def check_raw(raw: np.ndarray, *, bits: int = RAW_BITS, name: str = "array") -> np.ndarray:
    """Validate a packed RAW array and return it as ``uint16`` ``HxWx4``.

    Accepts any integer dtype whose values lie in ``0..2**bits-1``; ``name`` (a path) starts every
    error message. Raises :class:`RawFormatError` on a wrong shape, a non-integer dtype or values
    out of range.
    """
    bits = _check_bits(bits)
    top = 2**bits - 1
    raw = np.asarray(raw)
    if raw.ndim != 3 or raw.shape[2] != 4 or raw.shape[0] == 0 or raw.shape[1] == 0:
        raise RawFormatError(f"{name}: expected HxWx4 packed RGGB [R, Gr, Gb, B] (H, W > 0), got shape {raw.shape}")
    if raw.dtype == np.bool_ or not np.issubdtype(raw.dtype, np.integer):
        raise RawFormatError(f"{name}: expected an integer dtype (uint16 values 0..{top}), got dtype {raw.dtype}")
    lo, hi = int(raw.min()), int(raw.max())
    if lo < 0 or hi > top:
        raise RawFormatError(
            f"{name}: values outside the {bits}-bit range 0..{top}: found min {lo}, max {hi}"
        )
    return raw.astype(np.uint16, copy=False)


def read_raw(path: str | os.PathLike, *, bits: int = RAW_BITS) -> np.ndarray:
    """Read a packed RAW patch ``.npy`` -> ``uint16`` ``HxWx4`` ``[R, Gr, Gb, B]`` in ``0..2**bits-1``.

    Raises ``FileNotFoundError`` for a missing file and :class:`RawFormatError` for a file that is not
    a plain ``.npy`` array (corrupt, truncated, pickled, ``.npz``) or fails :func:`check_raw`.
    Any integer dtype is accepted and converted to ``uint16``.
    """
    path = Path(path)
    bits = _check_bits(bits)
    _require_file(path, "a .npy packed RAW patch (HxWx4)")
    with open(path, "rb") as fh:
        magic = fh.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):  # PK: a zip, i.e. .npz (reported below)
        raise RawFormatError(f"{path}: could not be read as .npy (no NumPy header: not a .npy file or corrupt)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise RawFormatError(f"{path}: could not be read as .npy ({_one_line(err)})") from err
    if not isinstance(arr, np.ndarray):  # np.load returns an NpzFile for .npz archives
        arr.close()
        raise RawFormatError(f"{path}: could not be read as .npy (it is an .npz archive; expected one HxWx4 array)")
    return check_raw(arr, bits=bits, name=str(path))


def load_raw_batch(paths: Sequence[str | os.PathLike], *, bits: int = RAW_BITS) -> np.ndarray:
    """Read equally shaped RAW patches -> ``uint16`` ``[N, H, W, 4]`` (in the order given).

    Errors name the first bad file; a shape different from the first file's raises
    :class:`RawFormatError` naming both files.
    """
    paths = list(paths)
    if not paths:
        raise ValueError("load_raw_batch: no paths given; expected at least one .npy RAW patch")
    first = read_raw(paths[0], bits=bits)
    out = np.empty((len(paths), *first.shape), dtype=np.uint16)
    out[0] = first
    for i, p in enumerate(paths[1:], start=1):
        raw = read_raw(p, bits=bits)
        if raw.shape != first.shape:
            raise RawFormatError(
                f"{p}: shape {raw.shape} differs from {first.shape} of {paths[0]}; a batch needs equal shapes"
            )
        out[i] = raw
    return out


@dataclass(frozen=True, eq=False)
class RawStrips:
    """Border strips of ``N`` packed RAW patches, as read by :func:`read_raw_strips`.

    ``uint16`` copies in the patches' own ``HxWx4`` layout: ``right`` / ``left`` are the last / first
    ``border`` columns ``[N, h, border, 4]``, ``bottom`` / ``top`` the last / first ``border`` rows
    ``[N, border, w, 4]``. ``shape`` is the patches' ``(h, w, 4)``; ``paths`` the files, in order.
    """

    right: np.ndarray
    left: np.ndarray
    bottom: np.ndarray
    top: np.ndarray
    shape: tuple[int, int, int]
    paths: tuple[Path, ...]


def _npy_header(path: Path, fh: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """Parse the ``.npy`` header at the start of ``fh`` -> ``(shape, fortran_order, dtype, data offset)``.

    Raises :class:`RawFormatError` naming ``path`` when there is no valid NumPy header.
    """
    from numpy.lib import format as npformat

    try:
        version = npformat.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = npformat.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = npformat.read_array_header_2_0(fh)
        else:  # 3.0 (utf-8 field names) never holds a plain integer array
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, OSError, EOFError, SyntaxError) as err:
        raise RawFormatError(f"{path}: could not be read as .npy ({_one_line(err)})") from err
    return tuple(shape), bool(fortran), np.dtype(dtype), fh.tell()


def is_cached(path: str | os.PathLike) -> bool:
    """Whether the last byte of ``path`` is in the page cache: a one-byte ``preadv`` with
    ``RWF_NOWAIT``, which fails rather than wait for the disk. ``True`` where that cannot be asked
    (not Linux, a missing file: the read that follows reports it)."""
    flag = getattr(os, "RWF_NOWAIT", None)
    if flag is None:  # pragma: no cover - not Linux
        return True
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return True
    try:
        size = os.fstat(fd).st_size
        if size:
            os.preadv(fd, [bytearray(1)], size - 1, flag)
        return True
    except BlockingIOError:
        return False
    except OSError:  # pragma: no cover - e.g. a file system without RWF_NOWAIT
        return True
    finally:
        os.close(fd)


def advise_willneed(paths: Sequence[str | os.PathLike]) -> None:
    """Ask the kernel to start reading ``paths`` into the page cache now (``POSIX_FADV_WILLNEED``:
    asynchronous, returns at once; a no-op where unsupported). Missing or unreadable files are
    ignored here: the read that follows reports them."""
    if not hasattr(os, "posix_fadvise"):  # pragma: no cover - not POSIX
        return
    for p in paths:
        try:
            fd = os.open(p, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:  # pragma: no cover - e.g. a pipe
            pass
        finally:
            os.close(fd)


def _map_checked(path: Path, offset: int, header: bytes, nbytes: int, ref: tuple) -> mmap.mmap:
    """Memory-map one patch file whose first ``offset`` bytes must equal ``header`` and whose data
    holds ``nbytes``; errors name ``path`` (``ref``: the first file's shape, fortran, dtype, path)."""
    expected = "expected a .npy packed RAW patch (HxWx4)"
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file; {expected}") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"{path}: is not a regular file; {expected}") from None
    try:
        try:
            head = os.pread(fd, offset, 0)
        except IsADirectoryError:  # os.open opens folders
            raise IsADirectoryError(f"{path}: is not a regular file; {expected}") from None
        if head != header:
            shape, fortran, dtype, first = ref
            with open(path, "rb") as fh:
                s2, f2, d2, _ = _npy_header(path, fh)
            raise RawFormatError(
                f"{path}: .npy header (shape {s2}, dtype {d2}, fortran_order={f2}) differs from "
                f"(shape {shape}, dtype {dtype}, fortran_order={fortran}) of {first}; patches must agree"
            )
        size = os.fstat(fd).st_size
        if size < offset + nbytes:
            raise RawFormatError(
                f"{path}: could not be read as .npy (truncated: {size - offset} data bytes, expected {nbytes})"
            )
        return mmap.mmap(fd, 0, access=mmap.ACCESS_READ)
    finally:
        os.close(fd)


def read_raw_strips(
    paths: Sequence[str | os.PathLike], border: int, *, bits: int = RAW_BITS
) -> RawStrips:
    """Read only the four border strips of equally shaped packed RAW ``.npy`` patches -> :class:`RawStrips`.

    The fast path for grid inference (:func:`uotisp_lib.stitching.infer_grid_from_files`): each file
    is memory-mapped and only its ``border``-wide edges are copied (the columns touch every page of
    the file, so the disk reads as much as a full load, but from a warm page cache only the cache
    lines of the strips are read: about half the CPU of ``np.load``, less than one ``readinto`` of
    the whole file). The first file's header is parsed (it must be a plain ``.npy``
    ``HxWx4`` array of an integer dtype, C or Fortran order); every other file's header bytes must
    equal the first's, else its header is parsed to say why (a shape or dtype different from the
    first file raises :class:`RawFormatError` naming both files). A missing file raises
    ``FileNotFoundError``; a truncated, corrupt or pickled file :class:`RawFormatError`, naming it.
    Unlike :func:`read_raw`, the ``0..2**bits-1`` range is only checked on the strips read (values
    in the interior are never looked at); an out-of-range strip names its file. ``border`` larger
    than a side of the patch (or below 1) raises ``ValueError``. Output dtype is ``uint16``.
    """
    bits = _check_bits(bits)
    top_value = 2**bits - 1
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("read_raw_strips: no paths given; expected at least one .npy RAW patch")
    if isinstance(border, bool) or not isinstance(border, (int, np.integer)) or border < 1:
        raise ValueError(f"read_raw_strips: border must be a positive integer, got {border!r}")
    b = int(border)
    first = paths[0]
    _require_file(first, "a .npy packed RAW patch (HxWx4)")
    with open(first, "rb") as fh:
        shape, fortran, dtype, offset = _npy_header(first, fh)
        fh.seek(0)
        header = fh.read(offset)
    if len(shape) != 3 or shape[2] != 4 or shape[0] == 0 or shape[1] == 0:
        raise RawFormatError(f"{first}: expected HxWx4 packed RGGB [R, Gr, Gb, B] (H, W > 0), got shape {shape}")
    if dtype == np.bool_ or not np.issubdtype(dtype, np.integer) or dtype.hasobject:
        raise RawFormatError(f"{first}: expected an integer dtype (uint16 values 0..{top_value}), got dtype {dtype}")
    h, w = shape[0], shape[1]
    if b > min(h, w):
        raise ValueError(f"read_raw_strips: border {b} exceeds the {h}x{w} patches of {first}")
    nbytes = h * w * 4 * dtype.itemsize
    n = len(paths)
    right = np.empty((n, h, b, 4), np.uint16)
    left = np.empty((n, h, b, 4), np.uint16)
    bottom = np.empty((n, b, w, 4), np.uint16)
    top = np.empty((n, b, w, 4), np.uint16)
    lo = np.empty(n, np.int64)
    hi = np.empty(n, np.int64)
    order = "F" if fortran else "C"
    native = dtype == np.dtype(np.uint16)
    for k, p in enumerate(paths):
        m = _map_checked(p, offset, header, nbytes, (shape, fortran, dtype, first))
        try:
            a = np.frombuffer(m, dtype, count=h * w * 4, offset=offset).reshape(shape, order=order)
            r, le, bo, t = a[:, w - b :], a[:, :b], a[h - b :], a[:b]
            if not native:  # other integer dtypes: check before the (unsafe) cast to uint16
                lo[k] = min(int(x.min()) for x in (r, le, bo, t))
                hi[k] = max(int(x.max()) for x in (r, le, bo, t))
            right[k], left[k], bottom[k], top[k] = r, le, bo, t
            del a, r, le, bo, t
        finally:
            m.close()
    if native:  # uint16: one vectorised max per file over the copied strips
        lo[:] = 0
        hi[:] = np.max([x.reshape(n, -1).max(axis=1) for x in (right, left, bottom, top)], axis=0)
    bad = np.flatnonzero((lo < 0) | (hi > top_value))
    if bad.size:
        k = int(bad[0])
        raise RawFormatError(
            f"{paths[k]}: values outside the {bits}-bit range 0..{top_value} in its border strips: "
            f"found min {lo[k]}, max {hi[k]}"
        )
    return RawStrips(right, left, bottom, top, (h, w, 4), tuple(paths))


# --------------------------------------------------------------------------------------------------
# Bayer mosaics (DNG, Zurich PNG) -> packed [R, Gr, Gb, B]
# --------------------------------------------------------------------------------------------------

BAYER_PATTERNS = ("RGGB", "GRBG", "GBRG", "BGGR")


def bayer_offset(pattern: str) -> tuple[int, int]:
    """(row, col) of the red site in a 2x2 Bayer ``pattern`` (row-major letters, e.g. ``"GRBG"``).

    Raises ``ValueError`` unless ``pattern`` is one of :data:`BAYER_PATTERNS` (R and B on a
    diagonal, greens on the other).
    """
    if pattern not in BAYER_PATTERNS:
        choices = ", ".join(BAYER_PATTERNS)
        raise ValueError(f"CFA pattern {pattern!r} is not a 2x2 Bayer pattern; expected one of {choices}")
    r = pattern.index("R")
    return r // 2, r % 2


def pack_bayer(mosaic: np.ndarray, pattern: str = "RGGB") -> np.ndarray:
    """Pack a 2-D Bayer mosaic ``HxW`` into ``h x w x 4`` ``[R, Gr, Gb, B]`` (dtype kept).

    Whatever the pattern, the mosaic is first cropped by one row and/or one column at the top/left
    (see :func:`bayer_offset`) so that it starts at a red site, then trimmed at the bottom/right to
    even sides: ``h = (H - dy) // 2``, ``w = (W - dx) // 2``. After that crop every Bayer pattern is
    ``R Gr / Gb B``, so ``Gr`` is the green on the red rows and ``Gb`` the one on the blue rows.
    """
    dy, dx = bayer_offset(pattern)
    mosaic = np.asarray(mosaic)
    if mosaic.ndim != 2:
        raise ValueError(f"expected a 2-D Bayer mosaic HxW, got shape {mosaic.shape}")
    m = mosaic[dy:, dx:]
    h, w = m.shape[0] // 2, m.shape[1] // 2
    if h == 0 or w == 0:
        raise ValueError(f"Bayer mosaic {mosaic.shape} is too small to pack with pattern {pattern}")
    m = m[: 2 * h, : 2 * w]
    return np.stack([m[0::2, 0::2], m[0::2, 1::2], m[1::2, 0::2], m[1::2, 1::2]], axis=-1)


def read_bayer_png(path: str | os.PathLike, *, bits: int = RAW_BITS, pattern: str = "RGGB") -> np.ndarray:
    """Read a 16-bit 1-channel Bayer PNG (e.g. Zurich RAW-to-RGB) -> ``uint16`` ``HxWx4`` packed.

    The PNG holds ``bits``-bit data in a 16-bit container; sides must be even. Values above
    ``2**bits - 1`` raise :class:`RawFormatError` (a sign of a different bit depth or file kind).
    """
    import imageio.v3 as iio

    path = Path(path)
    bits = _check_bits(bits)
    _require_file(path, "a 16-bit 1-channel Bayer PNG")
    try:
        img = iio.imread(path, plugin="pillow")
    except _DECODE_ERRORS as err:
        raise RawFormatError(f"{path}: could not be read as PNG ({_one_line(err)})") from err
    if img.ndim != 2 or img.dtype != np.uint16:
        raise RawFormatError(f"{path}: expected a 16-bit 1-channel Bayer PNG, got dtype {img.dtype} shape {img.shape}")
    if img.shape[0] % 2 or img.shape[1] % 2:
        raise RawFormatError(f"{path}: expected even height and width for a 2x2 Bayer mosaic, got {img.shape}")
    return check_raw(pack_bayer(img, pattern), bits=bits, name=str(path))


# --------------------------------------------------------------------------------------------------
# DNG (and other LibRaw formats)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class DngRaw:
    """A Bayer RAW read by :func:`read_dng`, packed ``[R, Gr, Gb, B]``, sensor values not rescaled.

    ``packed``: ``uint16`` ``h x w x 4`` in sensor orientation (the file's Orientation flag is not
    applied). ``black_level``: per packed channel ``[R, Gr, Gb, B]``. ``white_level``: saturation
    value. ``bits``: bit length of ``white_level``. ``cfa_pattern``: the sensor's pattern at the
    top-left visible pixel (e.g. ``"GRBG"``); ``crop``: rows/cols dropped at top/left so the packed
    mosaic starts at red (see :func:`pack_bayer`). ``camera_wb``: as-shot gains ``(R, G, B)`` with
    ``G = 1`` (``None`` if absent). ``rgb_xyz_matrix``: 3x3 XYZ -> camera matrix (``None`` when LibRaw
    leaves it empty, which it does for DNG files: LibRaw issue #751). ``cam_to_srgb``: LibRaw's 3x3
    camera -> linear sRGB matrix (rows sum to 1; identity when the file carries no colour matrix).
    ``mosaic_shape``: ``(H, W)`` of the visible Bayer mosaic before the crop and packing (the size a
    full-resolution rendering of the file has).
    """

    path: Path
    packed: np.ndarray
    black_level: tuple[int, int, int, int]
    white_level: int
    bits: int
    cfa_pattern: str
    crop: tuple[int, int]
    camera_wb: tuple[float, float, float] | None
    rgb_xyz_matrix: np.ndarray | None
    cam_to_srgb: np.ndarray | None
    mosaic_shape: tuple[int, int] = (0, 0)


def _site_letters(colors: np.ndarray, desc: str) -> str:
    """Row-major letters of a 2x2 block of LibRaw colour indices (``desc`` e.g. ``'RGBG'``)."""
    return "".join(desc[int(c)] for c in colors.ravel())


def read_dng(path: str | os.PathLike) -> DngRaw:
    """Read a Bayer DNG with rawpy (LibRaw) -> :class:`DngRaw` packed ``[R, Gr, Gb, B]``.

    Works for any 2x2 Bayer pattern (RGGB, GRBG, GBRG, BGGR): the visible area is cropped by one
    row/column when needed so that it starts at a red site (:func:`pack_bayer`), and black levels are
    reordered to the packed channels. Other CFAs (X-Trans, CMYG, linear DNG) raise
    :class:`RawFormatError`, as does a file LibRaw cannot read. Any RAW format LibRaw reads works;
    DNG is what is tested. LibRaw rejects images smaller than 22 pixels a side.
    """
    import rawpy

    path = Path(path)
    _require_file(path, "a Bayer DNG file")
    try:
        with rawpy.imread(str(path)) as rp:
            mosaic = np.array(rp.raw_image_visible, dtype=np.uint16, copy=True)
            pattern_shape = None if rp.raw_pattern is None else tuple(rp.raw_pattern.shape)
            colors = np.array(rp.raw_colors_visible[:4, :4])
            desc = rp.color_desc.decode("ascii", "replace")
            num_colors = int(rp.num_colors)
            black_per_color = [int(b) for b in rp.black_level_per_channel]
            white = int(rp.white_level)
            wb = [float(g) for g in rp.camera_whitebalance]
            xyz_cam = np.array(rp.rgb_xyz_matrix, dtype=np.float64)[:3]
            rgb_cam = np.array(rp.color_matrix, dtype=np.float64)[:, :3]
    except rawpy.LibRawError as err:
        raise RawFormatError(f"{path}: could not be read as DNG/RAW by LibRaw ({_one_line(err)})") from err
    if pattern_shape != (2, 2) or num_colors != 3 or colors.shape != (4, 4):
        raise RawFormatError(
            f"{path}: expected a 2x2 Bayer CFA with 3 colours, got pattern {pattern_shape}, "
            f"{num_colors} colours ({desc})"
        )
    pattern = _site_letters(colors[:2, :2], desc)
    try:
        dy, dx = bayer_offset(pattern)
        packed = pack_bayer(mosaic, pattern)
    except ValueError as err:
        raise RawFormatError(f"{path}: {err}") from err
    sites = colors[dy : dy + 2, dx : dx + 2].ravel()  # colour index at R, Gr, Gb, B
    black = tuple(black_per_color[int(c)] for c in sites)
    r, g, b = (wb[desc.index(ch)] for ch in "RGB")
    camera_wb = (r / g, 1.0, b / g) if min(r, g, b) > 0 else None
    return DngRaw(
        path=path,
        packed=packed,
        black_level=black,  # type: ignore[arg-type]
        white_level=white,
        bits=max(white.bit_length(), 1),
        cfa_pattern=pattern,
        crop=(dy, dx),
        camera_wb=camera_wb,
        rgb_xyz_matrix=xyz_cam if np.any(xyz_cam) else None,
        cam_to_srgb=rgb_cam if np.any(rgb_cam) else None,
        mosaic_shape=(int(mosaic.shape[0]), int(mosaic.shape[1])),
    )


def dng_to_packed10(dng: DngRaw) -> np.ndarray:
    """Rescale a :class:`DngRaw` to the UP-ISP 10-bit convention -> ``uint16`` ``HxWx4`` in ``0..1023``.

    Per channel ``c``: ``round(clip((x - black_c) / (white - black_c), 0, 1) * 1023)``, so black maps to
    0 and white to 1023 (the UP-ISP patches use black 0, white 1023).
    """
    return np.rint(_dng_unit64(dng) * RAW_MAX).astype(np.uint16)


def dng_to_unit(dng: DngRaw) -> np.ndarray:
    """Normalise a :class:`DngRaw` with its own levels -> ``float32`` ``HxWx4`` ``[R, Gr, Gb, B]`` in [0, 1].

    Per channel ``c``: ``clip((x - black_c) / (white - black_c), 0, 1)``, without the 10-bit rounding
    of :func:`dng_to_packed10` (a 12- or 14-bit file keeps its precision).
    """
    return _dng_unit64(dng).astype(np.float32)


def _dng_unit64(dng: DngRaw) -> np.ndarray:
    """``clip((x - black_c) / (white - black_c), 0, 1)`` in float64; white must exceed every black."""
    black = np.asarray(dng.black_level, dtype=np.float64)
    span = float(dng.white_level) - black
    if np.any(span <= 0):
        raise RawFormatError(
            f"{dng.path}: white level {dng.white_level} must exceed the black levels {dng.black_level}"
        )
    x = (dng.packed.astype(np.float64) - black) / span
    return np.clip(x, 0.0, 1.0)


# --------------------------------------------------------------------------------------------------
# sRGB images
# --------------------------------------------------------------------------------------------------


def read_srgb(path: str | os.PathLike, *, allow_16bit: bool = False) -> np.ndarray:
    """Read an sRGB JPEG/PNG -> ``uint8`` ``HxWx3``.

    Rules: grayscale (``L``, 1-bit) is repeated to 3 channels; an alpha channel (RGBA, LA, palette
    with transparency) is dropped, not composited, since the datasets' images are opaque; palette
    images are expanded by imageio. 16-bit images raise :class:`ImageFormatError` unless
    ``allow_16bit`` (then ``round(x * 255 / 65535)``): a 16-bit PNG is more often RAW data (e.g. a
    Zurich Bayer PNG) than an sRGB target. CMYK, float and 32-bit images raise. No EXIF rotation.
    """
    path = Path(path)
    _require_file(path, "an sRGB JPEG or PNG image")
    fast = _decode_colour_jpeg(path)
    if fast is not None:
        return fast
    import imageio.v3 as iio

    try:
        img = np.asarray(iio.imread(path, plugin="pillow"))
    except _DECODE_ERRORS as err:
        raise ImageFormatError(f"{path}: could not be read as an image ({_one_line(err)})") from err
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    if img.dtype == np.uint16 and allow_16bit:
        img = np.rint(img.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
    if img.dtype != np.uint8:
        hint = " (pass allow_16bit=True to scale by 255/65535)" if img.dtype == np.uint16 else ""
        raise ImageFormatError(f"{path}: expected an 8-bit sRGB image, got dtype {img.dtype}{hint}")
    if img.ndim == 3 and img.shape[2] in (2, 4):
        if img.shape[2] == 4 and _is_cmyk(path):
            raise ImageFormatError(f"{path}: expected an RGB, RGBA or grayscale image, got CMYK")
        img = img[..., :-1]  # drop alpha
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] != 3 or img.shape[0] == 0 or img.shape[1] == 0:
        raise ImageFormatError(f"{path}: expected an HxW, HxWx3 or HxWx4 image, got shape {img.shape}")
    return np.ascontiguousarray(img)


def _decode_colour_jpeg(path: Path) -> np.ndarray | None:
    """``uint8`` ``HxWx3`` of a colour (YCbCr or RGB) JPEG decoded by simplejpeg's libjpeg-turbo,
    or ``None`` for anything else (not a JPEG, grayscale, CMYK, unreadable: the Pillow path then
    decodes it or names the problem). About 1.75x faster than imageio + Pillow here and
    bit-identical to it (both libjpeg-turbo with the accurate IDCT and fancy upsampling; tested on
    baseline, progressive and 4:2:0 JPEG and the synthetic benchmark's targets)."""
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        return None
    try:
        import simplejpeg
    except ImportError:  # an installation without it reads through Pillow, as before
        return None
    try:
        data = path.read_bytes()
        _h, _w, colorspace, _sub = simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "RGB"):
            return None
        img = simplejpeg.decode_jpeg(data, colorspace="RGB", fastdct=False, fastupsample=False)
    except (ValueError, OSError):
        return None
    return img if img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 else None


def _is_cmyk(path: Path) -> bool:
    import imageio.v3 as iio

    return iio.immeta(path, plugin="pillow").get("mode") == "CMYK"
