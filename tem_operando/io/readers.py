"""Format readers: each turns a path into a lazy array plus the axes and metadata it carries.

Vendor and community formats go through RosettaSciIO (the I/O library behind hyperspy),
uncompressed TIFF and .npy through memory maps, videos through OpenCV, and folders of frames
one file per frame. Every reader opens the data read-only and returns a :class:`Source`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import dask.array as da
import numpy as np

from ..errors import RecordingError

#: Extension → RosettaSciIO plugin module.
RSCIIO_PLUGINS = {
    ".hspy": "rsciio.hspy",
    ".hdf5": "rsciio.hspy",
    ".zspy": "rsciio.zspy",
    ".emd": "rsciio.emd",
    ".dm3": "rsciio.digitalmicrograph",
    ".dm4": "rsciio.digitalmicrograph",
    ".ser": "rsciio.tia",
    ".mrc": "rsciio.mrc",
    ".tif": "rsciio.tiff",
    ".tiff": "rsciio.tiff",
}
VIDEO_EXTENSIONS = {".avi", ".mp4", ".mov", ".mkv"}
#: Single-frame files that a folder of frames may hold.
FRAME_FILE_EXTENSIONS = {".dm3", ".dm4", ".tif", ".tiff", ".png", ".npy", ".mrc"}
SUPPORTED_EXTENSIONS = sorted(set(RSCIIO_PLUGINS) | VIDEO_EXTENSIONS | {".npy"})

#: Name of the key (in original_metadata or in a sidecar file) where tem-operando keeps its
#: own per-recording facts: nm_per_px, inv_nm_per_px, fps, time_s, mode, dose_e_per_px, ...
OWN_KEY = "tem_operando"
FOLDER_SIDECAR = "tem_operando.json"


@dataclass
class Axis:
    """One axis of the array as the file describes it (scale per px, units, name)."""

    size: int
    scale: float = 1.0
    offset: float = 0.0
    units: str = ""
    name: str = ""
    navigate: bool | None = None


@dataclass
class Source:
    """What a reader found: the lazy array, its axes, metadata and per-frame facts.

    Attributes
    ----------
    data : dask.array.Array
        The frames, (Y, X) or (T, Y, X) (other shapes are rejected later with a clear error).
    axes : list of Axis
        One per array dimension.
    format : str
        A short format name for messages and ``info``.
    metadata : dict
        The file's metadata (hyperspy's ``metadata`` tree where there is one).
    original_metadata : dict
        The vendor tags as read.
    own : dict
        tem-operando's facts (``OWN_KEY``), from the file or a sidecar.
    frame_units : list of str or None
        For folders: the spatial units of each frame's file, so modes can be told per frame.
    frame_scales : list of float or None
        For folders: the spatial scale of each frame's file in those units.
    frame_times_s : ndarray or None
        Per-frame times in s when the layout or the file gives them.
    raw : RawFrames or FolderFrames or None
        Direct access to uncompressed frames or to a folder's frame files (the fast path that
        bypasses dask).
    closers : list of callables
        Called by :meth:`Recording.close`.
    """

    data: da.Array
    axes: list[Axis]
    format: str
    metadata: dict = field(default_factory=dict)
    original_metadata: dict = field(default_factory=dict)
    own: dict = field(default_factory=dict)
    frame_units: list[str] | None = None
    frame_scales: list[float] | None = None
    frame_times_s: np.ndarray | None = None
    raw: "RawFrames | FolderFrames | None" = None
    closers: list[Callable[[], None]] = field(default_factory=list)


def sidecar_path(path: Path) -> Path:
    """Where tem-operando looks for (and writes) calibration beside a file or in a folder."""
    if path.is_dir() and path.suffix.lower() != ".zspy":
        return path / FOLDER_SIDECAR
    return path.with_name(path.name.split(".")[0] + ".meta.json")


def read_sidecar(path: Path) -> dict:
    """Read the sidecar JSON of ``path`` if there is one (a broken one is a clear error)."""
    sc = sidecar_path(path)
    if not sc.is_file():
        return {}
    try:
        with open(sc, encoding="utf-8") as fh:
            own = json.load(fh)
    except (OSError, ValueError) as exc:
        raise RecordingError(sc, f"calibration sidecar is not valid JSON ({exc})") from None
    if not isinstance(own, dict):
        raise RecordingError(sc, "calibration sidecar must hold a JSON object")
    return own.get(OWN_KEY, own)


def _axes_from_dicts(axes: list[dict], shape: tuple[int, ...]) -> list[Axis]:
    out = []
    for ax, n in zip(axes, shape):
        out.append(
            Axis(
                size=int(ax.get("size", n)),
                scale=float(ax.get("scale", 1.0) or 1.0),
                offset=float(ax.get("offset", 0.0) or 0.0),
                units=str(ax.get("units", "") or ""),
                name=str(ax.get("name", "") or ""),
                navigate=ax.get("navigate"),
            )
        )
    return out


class RawFrames:
    """Frames stored uncompressed in a file, in one or more runs of whole frames.

    Each read maps just the frames asked for (``numpy.memmap`` at an offset) and lets the mapping
    go with the returned array, so streaming a 20 GB file keeps memory bounded by the chunk
    while reading as fast as a memory map. The object has ``shape``, ``dtype``, ``ndim`` and
    ``__getitem__`` for :func:`dask.array.from_array`.

    Parameters
    ----------
    path : Path
        The file.
    offset : int or list of (first_frame, n_frames, byte_offset)
        Byte offset of frame 0 when the frames are contiguous, else the runs (e.g. the chunks
        of an uncompressed HDF5 dataset).
    shape : tuple
        (T, Y, X).
    dtype : numpy dtype
    """

    def __init__(self, path: Path, offset, shape: tuple[int, ...], dtype: np.dtype):
        self.path = Path(path)
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.ndim = len(self.shape)
        self.frame_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        if isinstance(offset, (int, np.integer)):
            runs = [(0, self.shape[0], int(offset))]
        else:
            runs = []
            for a, n, o in sorted((int(a), int(n), int(o)) for a, n, o in offset):
                if runs and runs[-1][0] + runs[-1][1] == a and runs[-1][2] + runs[-1][1] * self.frame_bytes == o:
                    runs[-1] = (runs[-1][0], runs[-1][1] + n, runs[-1][2])  # adjacent in the file: one run
                else:
                    runs.append((a, n, o))
        self.runs = runs
        self.offset = runs[0][2] if runs else 0
        need = max((o + n * self.frame_bytes for _, n, o in runs), default=0)
        have = os.path.getsize(self.path)
        if have < need:
            raise RecordingError(self.path, f"file is truncated: {have} bytes, its header announces "
                                 f"{need} ({self.shape[0]} frames of {self.shape[1:]} {self.dtype})")

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            i = int(first) % self.shape[0]
            block = self._read(i, i + 1)[0]
        else:
            start, stop, step = first.indices(self.shape[0])
            block = self._read(start, stop)[::step] if stop > start else np.empty((0,) + self.shape[1:], self.dtype)
        return block[rest] if rest else block

    def _map(self, byte_offset: int, n: int) -> np.ndarray:
        return np.memmap(self.path, dtype=self.dtype, mode="r", offset=byte_offset, shape=(n,) + self.shape[1:])

    def _read(self, start: int, stop: int) -> np.ndarray:
        parts = []
        for a, n, o in self.runs:
            lo, hi = max(start, a), min(stop, a + n)
            if lo < hi:
                parts.append(self._map(o + (lo - a) * self.frame_bytes, hi - lo))
        if sum(len(p) for p in parts) != stop - start:
            raise RecordingError(self.path, f"frames {start}-{stop - 1} are not all stored in the file")
        return parts[0] if len(parts) == 1 else np.concatenate(parts)


def hdf5_raw_frames(path: Path, dataset: str) -> RawFrames | None:
    """Direct reads of an unfiltered HDF5 dataset of frames (None when compressed, shuffled or partial).

    Contiguous datasets have one offset; chunked ones whose chunks hold whole frames give one
    run per chunk (``h5py`` ``get_chunk_info``).
    """
    import h5py

    with h5py.File(path, "r") as f:
        d = f.get(dataset)
        if not isinstance(d, h5py.Dataset) or d.ndim != 3 or d._filters or d.dtype.byteorder == ">":
            return None
        if d.chunks is None:
            off = d.id.get_offset()
            return None if off is None else RawFrames(path, off, d.shape, d.dtype)
        if tuple(d.chunks[1:]) != tuple(d.shape[1:]) or d.id.get_num_chunks() != -(-d.shape[0] // d.chunks[0]):
            return None
        runs = []
        for k in range(d.id.get_num_chunks()):
            info = d.id.get_chunk_info(k)
            if info.filter_mask:
                return None
            first = info.chunk_offset[0]
            runs.append((first, min(d.chunks[0], d.shape[0] - first), info.byte_offset))
        return RawFrames(path, runs, d.shape, d.dtype)


def raw_dask(raw: RawFrames, frames_per_chunk: int | None = None) -> da.Array:
    """A dask array over :class:`RawFrames`, chunked by whole frames (about 16 MB a chunk)."""
    if frames_per_chunk is None:
        frames_per_chunk = max(1, int(16e6 // max(raw.frame_bytes, 1)))
    chunks = (min(frames_per_chunk, raw.shape[0]),) + raw.shape[1:]
    return da.from_array(raw, chunks=chunks, asarray=False, fancy=False, name=f"raw-{raw.path}-{raw.offset}")


def _pick_image_dataset(signals: list[dict], path: Path) -> dict:
    """Choose the frames among the datasets of a file: the largest 2D/3D non-thumbnail one."""
    candidates = []
    for s in signals:
        data = s.get("data")
        if data is None or getattr(data, "ndim", 0) < 2:
            continue
        title = str(s.get("metadata", {}).get("General", {}).get("title", "")).lower()
        if "thumbnail" in title:
            continue
        candidates.append(s)
    if not candidates:
        raise RecordingError(path, "holds no image or diffraction frames (no 2D or 3D dataset)")
    return max(candidates, key=lambda s: int(np.prod(s["data"].shape)))


def _as_dask(data: Any) -> da.Array:
    if isinstance(data, da.Array):
        return data
    return da.from_array(data, chunks=(1,) * (data.ndim - 2) + tuple(data.shape[-2:]))


def read_rsciio(path: Path) -> Source:
    """Open a file with its RosettaSciIO plugin, lazily and read-only."""
    import importlib

    ext = path.suffix.lower()
    plugin = importlib.import_module(RSCIIO_PLUGINS[ext])
    kwargs: dict[str, Any] = {"lazy": True}
    if ext in (".hspy", ".hdf5", ".zspy"):
        kwargs["mode"] = "r"  # rsciio opens these r+ when lazy; raw data is never written
    if ext in (".tif", ".tiff"):
        return _read_tiff(path, plugin)
    raw = _mrc_raw_frames(path) if ext == ".mrc" else None
    signals = plugin.file_reader(str(path), **kwargs)
    if isinstance(signals, dict):
        signals = [signals]
    sig = _pick_image_dataset(list(signals), path)
    data = _as_dask(sig["data"])
    if ext in (".hspy", ".hdf5") and data.ndim == 3:
        title = sig.get("metadata", {}).get("General", {}).get("title") or "__unnamed__"
        raw = hdf5_raw_frames(path, f"Experiments/{title.replace('/', '-')}/data")
        if raw is None or raw.shape != tuple(data.shape):
            raw = None
        else:
            data = raw_dask(raw)
    omd = sig.get("original_metadata", {}) or {}
    own = dict(omd.get(OWN_KEY, {}) or {})
    return Source(
        data=data,
        axes=_axes_from_dicts(sig.get("axes", []), data.shape),
        format=ext.lstrip("."),
        metadata=sig.get("metadata", {}) or {},
        original_metadata=omd,
        own=own,
        raw=raw if raw is not None and tuple(raw.shape) == tuple(data.shape) else None,
    )


def _mrc_raw_frames(path: Path) -> RawFrames | None:
    """Direct reads of an MRC stack's data block (after the 1024-byte header and extended header)."""
    import mrcfile

    try:
        with mrcfile.open(str(path), mode="r", header_only=True, permissive=True) as m:
            h = m.header
            dtype = mrcfile.utils.data_dtype_from_header(h)
            shape = (int(h.nz), int(h.ny), int(h.nx))
            offset = 1024 + int(h.nsymbt)
    except Exception:  # let RosettaSciIO's reader give the verdict on odd files
        return None
    if dtype.byteorder == ">" or min(shape) < 1:
        return None
    return RawFrames(path, offset, shape, dtype)


def _read_tiff(path: Path, plugin: Any) -> Source:
    """TIFF stacks: calibration from RosettaSciIO, pixels from a tifffile memory map or zarr store.

    RosettaSciIO's lazy TIFF reader loads the whole stack on first access; tifffile can map an
    uncompressed file directly and serve a compressed one page by page.
    """
    import logging

    import tifffile

    problems: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                problems.append(record.getMessage())

    handler = _Collect()
    log = logging.getLogger("tifffile")
    log.addHandler(handler)
    try:
        sig = plugin.file_reader(str(path), lazy=True)
        sig = sig[0] if isinstance(sig, list) else sig
        tif = tifffile.TiffFile(str(path))
        tif.pages.useframes = True
        len(tif.pages)  # walks the chain of pages: a cut file shows up as an invalid page offset
    finally:
        log.removeHandler(handler)
    if problems:
        tif.close()
        raise RecordingError(path, f"TIFF is truncated or corrupt ({problems[0].strip()})")
    closers = [tif.close]
    series = tif.series[0]
    offset = series.dataoffset
    raw = None
    if offset is not None and series.dtype.isnative:
        raw = RawFrames(path, offset, series.shape, series.dtype)
        data = raw_dask(raw)
    else:  # compressed or not contiguous: page by page through zarr
        import zarr

        store = series.aszarr()
        closers.append(store.close)
        data = da.from_zarr(zarr.open(store, mode="r"))
    if tuple(data.shape) != tuple(sig["data"].shape):
        data = data.reshape(sig["data"].shape)
    omd = sig.get("original_metadata", {}) or {}
    own = {}
    desc = omd.get("ImageDescription")
    if isinstance(desc, str) and OWN_KEY in desc:
        try:
            own = json.loads(desc).get(OWN_KEY, {})
        except ValueError:
            own = {}
    return Source(
        data=data,
        axes=_axes_from_dicts(sig.get("axes", []), data.shape),
        format="tif",
        metadata=sig.get("metadata", {}) or {},
        original_metadata=omd,
        own=own,
        closers=closers,
        raw=raw if raw is not None and tuple(raw.shape) == tuple(data.shape) else None,
    )


def read_npy(path: Path) -> Source:
    """A .npy array through a read-only memory map."""
    from numpy.lib import format as npformat

    try:
        with open(path, "rb") as fh:
            version = npformat.read_magic(fh)
            reader = npformat.read_array_header_1_0 if version == (1, 0) else npformat.read_array_header_2_0
            shape, fortran, dtype = reader(fh)
            offset = fh.tell()
    except (ValueError, OSError, EOFError) as exc:
        raise RecordingError(path, f"is not a readable .npy array ({exc})") from None
    if len(shape) < 2:
        raise RecordingError(path, f"holds a {len(shape)}D array of shape {shape}; frames need (T, Y, X) or (Y, X)")
    if fortran or dtype.hasobject:
        raise RecordingError(path, "holds a Fortran-ordered or object array; save frames C-ordered")
    if len(shape) == 2:
        shape = (1,) + tuple(shape)
    raw = RawFrames(path, offset, shape, dtype)
    return Source(data=raw_dask(raw), axes=[Axis(size=n) for n in shape], format="npy", raw=raw)


class _VideoFrames:
    """Read frame ranges of a video file with OpenCV (one capture per call, grey levels)."""

    def __init__(self, path: Path):
        self.path = path

    def read(self, start: int, stop: int) -> np.ndarray:
        import cv2

        cap = cv2.VideoCapture(str(self.path))
        try:
            if start:
                cap.set(cv2.CAP_PROP_POS_FRAMES, start)
            frames = []
            for _ in range(start, stop):
                ok, img = cap.read()
                if not ok:
                    raise RecordingError(self.path, f"video ends early: frame {start + len(frames)} "
                                                    "cannot be decoded (truncated or corrupt file)")
                if img.ndim == 3:
                    img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
                frames.append(img)
            return np.stack(frames)
        finally:
            cap.release()


def read_video(path: Path, chunk: int = 64) -> Source:
    """An AVI/MP4 video through OpenCV, read lazily in chunks of frames."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise RecordingError(path, "cannot be opened as a video (corrupt file or unknown codec)")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        ok, first = cap.read()
        if not ok:
            raise RecordingError(path, "holds no decodable frame (empty, truncated or corrupt)")
    finally:
        cap.release()
    if first.ndim == 3:
        first = cv2.cvtColor(first, cv2.COLOR_BGR2GRAY)
    if n <= 0:  # some containers do not store a count: decode through once
        n = _count_video_frames(path)
    reader = _VideoFrames(path)
    import dask

    blocks = []
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        blocks.append(da.from_delayed(dask.delayed(reader.read, pure=True)(s, e),
                                      shape=(e - s,) + first.shape, dtype=first.dtype))
    data = da.concatenate(blocks, axis=0)
    axes = [Axis(size=n, scale=1.0 / fps if fps > 0 else 1.0, units="s" if fps > 0 else "", name="time"),
            Axis(size=first.shape[0]), Axis(size=first.shape[1])]
    return Source(data=data, axes=axes, format=path.suffix.lower().lstrip("."),
                  original_metadata={"fps": fps, "frame_count": n})


def _count_video_frames(path: Path) -> int:
    import cv2

    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.grab():
        n += 1
    cap.release()
    return n


_GATAN_RE = re.compile(r"Hour_(\d+).*?Minute_(\d+).*?Second_(\d+).*?Frame_(\d+)", re.IGNORECASE)


def _natural_key(p: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(p))]


#: folder listings already made, by folder: (the set of frame-file paths, those paths sorted). A folder is
#: opened again for every chunk and every poll of ``--follow``; building, checking and naturally sorting
#: tens of thousands of paths each time cost ~20 µs per file (0.4 s for a 20,000-frame capture, per chunk)
_LISTINGS: dict[str, tuple[frozenset, list[Path]]] = {}
_LISTINGS_MAX = 8


def _scan_frame_files(folder: Path) -> list[str]:
    """Paths of the frame files below ``folder``, unsorted: what ``folder.rglob("*")`` finds (symbolic
    links to folders are not followed; hidden files are skipped), from ``os.scandir``'s entry types,
    without a ``stat`` per file where the file system reports them."""
    out: list[str] = []
    stack = [str(folder)]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError:  # a folder removed or unreadable while listing: skipped, as rglob does
            continue
        with it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif (not e.name.startswith(".") and os.path.splitext(e.name)[1].lower() in FRAME_FILE_EXTENSIONS
                      and e.is_file()):
                    out.append(e.path)
    return out


def list_frame_files(folder: Path) -> list[Path]:
    """The frame files of a folder, in acquisition order (natural sort of their paths).

    The folder is scanned every time (names and entry types only); when it holds the same files as at the
    last call, that call's sorted list is returned (a copy), so opening a large folder again is cheap.
    """
    names = _scan_frame_files(folder)
    key, seen = str(folder), frozenset(names)
    hit = _LISTINGS.get(key)
    if hit is not None and hit[0] == seen:
        return list(hit[1])
    files = sorted((Path(n) for n in names), key=lambda p: (_natural_key(p), str(p)))  # ties: by name
    if len(_LISTINGS) >= _LISTINGS_MAX:
        _LISTINGS.clear()
    _LISTINGS[key] = (seen, files)
    return list(files)


def gatan_times_s(files: list[Path]) -> np.ndarray | None:
    """Acquisition times from Gatan's in situ layout ``Hour_hh/Minute_mm/Second_ss/..._Frame_nnnn``.

    Frames in one ``Second_ss`` folder are spread evenly over that second.
    """
    parsed = []
    for f in files:
        m = _GATAN_RE.search(str(f))
        if not m:
            return None
        h, mi, s, k = (int(g) for g in m.groups())
        parsed.append((h * 3600 + mi * 60 + s, k))
    per_second: dict[int, int] = {}
    for sec, _ in parsed:
        per_second[sec] = per_second.get(sec, 0) + 1
    rate = max(per_second.values())
    return np.array([sec + k / rate for sec, k in parsed], dtype=np.float64)


def _read_single_frame(path: Path) -> tuple[np.ndarray, Axis, Axis, dict]:
    """Read one frame file fully (frames of a folder are small)."""
    ext = path.suffix.lower()
    if ext == ".npy":
        arr = np.load(path, allow_pickle=False)
        return arr, Axis(arr.shape[-2]), Axis(arr.shape[-1]), {}
    if ext == ".png":
        import cv2

        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise RecordingError(path, "is not a readable PNG image")
        if arr.ndim == 3:
            arr = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
        return arr, Axis(arr.shape[0]), Axis(arr.shape[1]), {}
    import importlib

    plugin = importlib.import_module(RSCIIO_PLUGINS[ext])
    sig = plugin.file_reader(str(path), lazy=False)
    sig = _pick_image_dataset(sig if isinstance(sig, list) else [sig], path)
    arr = np.asarray(sig["data"])
    axes = _axes_from_dicts(sig.get("axes", []), arr.shape)
    own = dict((sig.get("original_metadata") or {}).get(OWN_KEY, {}) or {})
    return arr, axes[-2], axes[-1], own


def _load_frame(path: Path, shape: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    try:
        arr, _, _, _ = _read_single_frame(path)
    except RecordingError:
        raise
    except Exception as exc:  # the reader's own error, named with the file
        raise RecordingError(path, f"frame file cannot be read ({type(exc).__name__}: {exc})") from None
    arr = np.squeeze(arr)
    if arr.shape != shape:
        raise RecordingError(path, f"frame has shape {arr.shape}, the folder's first frame {shape}")
    return arr.astype(dtype, copy=False)


class FolderFrames:
    """The frames of a folder of frame files, read file by file on demand.

    The folder's counterpart of :class:`RawFrames`: ``shape``, ``dtype``, ``ndim`` and
    ``__getitem__`` (for :func:`dask.array.from_array` and the direct path of
    :meth:`Recording.iter_chunks`). Reading frames ``a:b`` opens just those files (in a few
    threads), so the cost of a chunk does not grow with the number of files in the folder --
    a one-hour capture holds tens of thousands.

    Parameters
    ----------
    files : list of Path
        One file per frame, in acquisition order.
    shape : (int, int)
        (Y, X) of every frame (a file with another shape is an error naming it).
    dtype : numpy dtype
    """

    def __init__(self, files: list[Path], shape: tuple[int, int], dtype: np.dtype):
        self.files = list(files)
        self.shape = (len(self.files),) + tuple(int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.ndim = 3
        self.frame_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
        self.runs = [(0, self.shape[0], 0)]  # no storage cuts inside a folder

    def __getitem__(self, key):
        key = key if isinstance(key, tuple) else (key,)
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            block = self._read([int(first) % self.shape[0]])[0]
        else:
            block = self._read(list(range(*first.indices(self.shape[0]))))
        return block[rest] if rest else block

    def _read(self, idx: list[int]) -> np.ndarray:
        out = np.empty((len(idx),) + self.shape[1:], self.dtype)

        def one(k: int) -> None:
            out[k] = _load_frame(self.files[idx[k]], self.shape[1:], self.dtype)

        if len(idx) > 2:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(4, len(idx))) as pool:
                list(pool.map(one, range(len(idx))))
        else:
            for k in range(len(idx)):
                one(k)
        return out


def read_folder(folder: Path) -> Source:
    """A folder of single-frame files (e.g. Gatan's in situ capture), read file by file on demand
    (:class:`FolderFrames`)."""
    import dask

    files = list_frame_files(folder)
    if not files:
        raise RecordingError(folder, "folder holds no frame files "
                             f"({', '.join(sorted(FRAME_FILE_EXTENSIONS))})")
    try:
        first, ay, ax, own0 = _read_single_frame(files[0])
    except RecordingError:
        raise
    except Exception as exc:
        raise RecordingError(files[0], f"frame file cannot be read ({type(exc).__name__}: {exc})") from None
    first = np.squeeze(first)
    if first.ndim != 2:
        raise RecordingError(files[0], f"a folder's frame files must hold one 2D frame, this has shape {first.shape}")
    shape, dtype = first.shape, first.dtype
    frames = FolderFrames(files, shape, dtype)
    data = da.from_array(frames, chunks=(max(1, min(64, len(files))),) + shape, asarray=False, fancy=False,
                         name=f"folder-{dask.base.tokenize(folder, len(files), files[-1])}")
    fmt = {p.suffix.lower().lstrip(".") for p in files}
    return Source(
        data=data,
        axes=[Axis(size=len(files), name="frame"), ay, ax],
        format="folder of " + "/".join(sorted(fmt)),
        own=own0,
        frame_times_s=gatan_times_s(files),
        metadata={"files": [str(f) for f in files]},
        raw=frames,
    )


#: per-file calibrations already read, by (path, mtime, size): a folder is opened again for every
#: chunk and every poll of ``--follow``, and its files do not change once written
_CALIBRATION_CACHE: dict[tuple, tuple[float, str, dict]] = {}
_CALIBRATION_CACHE_MAX = 200_000


def _file_calibration(path: Path) -> tuple[float, str, dict]:
    """Scale, units and own facts of one frame file, from its header (the pixels are not read)."""
    ext = path.suffix.lower()
    if ext == ".npy":
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
        if arr.ndim < 2:
            raise ValueError(f"holds an array of shape {arr.shape}, not a frame")
        return 1.0, "", {}
    if ext == ".png":
        return 1.0, "", {}
    import importlib

    plugin = importlib.import_module(RSCIIO_PLUGINS[ext])
    try:
        sig = plugin.file_reader(str(path), lazy=True)
    except TypeError:  # a plugin without lazy reading
        sig = plugin.file_reader(str(path))
    sig = _pick_image_dataset(sig if isinstance(sig, list) else [sig], path)
    axes = _axes_from_dicts(sig.get("axes", []), tuple(sig["data"].shape))
    own = dict((sig.get("original_metadata") or {}).get(OWN_KEY, {}) or {})
    return axes[-1].scale, axes[-1].units, own


def frame_file_calibration(path: str | os.PathLike) -> tuple[float, str, dict]:
    """Spatial scale, units and tem-operando facts of one frame file of a folder.

    Read from the file's header and remembered for the process (keyed by path, inode, size and
    modification/change times), so opening a folder again costs a ``stat`` per file.
    """
    name = os.fspath(path)
    st = os.stat(name)
    key = (name, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    hit = _CALIBRATION_CACHE.get(key)
    if hit is None:
        hit = _file_calibration(Path(name))
        if len(_CALIBRATION_CACHE) >= _CALIBRATION_CACHE_MAX:
            _CALIBRATION_CACHE.clear()
        _CALIBRATION_CACHE[key] = hit
    return hit[0], hit[1], dict(hit[2]) if hit[2] else {}


def open_source(path: Path) -> Source:
    """Dispatch on the path: folder, video, .npy or a RosettaSciIO format."""
    ext = path.suffix.lower()
    if path.is_dir() and ext != ".zspy":
        return read_folder(path)
    if ext == ".npy":
        return read_npy(path)
    if ext in VIDEO_EXTENSIONS:
        return read_video(path)
    if ext in RSCIIO_PLUGINS:
        return read_rsciio(path)
    raise RecordingError(path, f"unsupported file type {ext or '(no extension)'}; supported: "
                         f"{', '.join(SUPPORTED_EXTENSIONS)} or a folder of frames")


def file_size_mb(path: Path) -> float:
    """Total size in MB of a file or of every file in a folder."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
    return os.path.getsize(path) / 1e6


__all__ = ["Axis", "Source", "open_source", "read_sidecar", "sidecar_path", "list_frame_files",
           "gatan_times_s", "frame_file_calibration", "file_size_mb", "SUPPORTED_EXTENSIONS",
           "OWN_KEY"]
