"""The Recording: a lazy, calibrated series of frames from any supported source."""

from __future__ import annotations

import functools

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import dask.array as da
import numpy as np

from ..errors import CalibrationError, RecordingError
from . import calibration as cal
from .modes import guess_frame_mode
from .readers import Source, frame_file_calibration, open_source, read_sidecar

MODES = ("image", "diffraction")


@dataclass
class FrameChunk:
    """A block of consecutive frames, in memory.

    Attributes
    ----------
    start : int
        Index of the first frame of the chunk in the recording.
    frames : ndarray, shape (n, Y, X), float32
        The frames in detector counts.
    time_s : ndarray, shape (n,)
        Acquisition times in s (NaN when the recording has no time calibration).
    mode : ndarray of str, shape (n,)
        ``"image"`` or ``"diffraction"`` per frame.
    dose_e_per_px : ndarray, shape (n,) or None
        Mean electron dose per pixel per frame, when known.
    """

    start: int
    frames: np.ndarray
    time_s: np.ndarray
    mode: np.ndarray
    dose_e_per_px: np.ndarray | None

    @property
    def stop(self) -> int:
        return self.start + len(self.frames)

    @property
    def index(self) -> np.ndarray:
        """Frame numbers of the chunk."""
        return np.arange(self.start, self.stop)


@functools.lru_cache(maxsize=8)
def _ones(n: int) -> np.ndarray:
    """A read-only float32 vector of ``n`` ones (the finite check's summing vector)."""
    v = np.ones(n, np.float32)
    v.flags.writeable = False
    return v


class Recording:
    """A recorded (or growing) in situ TEM session: frames, times, calibration, modes.

    Use :func:`open_recording` to make one. Frames stay on disk until asked for:
    :attr:`data` is a lazy dask array (T, Y, X); :meth:`iter_chunks` streams them with memory
    bounded by the chunk size.

    Attributes
    ----------
    path : Path
        The file or folder the frames come from (opened read-only).
    data : dask.array.Array, shape (T, Y, X)
        The frames, lazily.
    time_s : ndarray, shape (T,) or None
        Acquisition time of each frame in s, or None when no time calibration is known.
    nm_per_px : float
        Pixel size of image frames in nm (NaN when unknown).
    inv_nm_per_px : float
        Pixel size of diffraction frames in 1/nm (NaN when unknown).
    format : str
        The source format.
    metadata : dict
        The file's metadata, its vendor tags under ``"original"`` and where each calibration came
        from under ``"calibration_source"``.
    """

    def __init__(self, path: Path, source: Source, *, nm_per_px: float, inv_nm_per_px: float,
                 time_s: np.ndarray | None, modes: np.ndarray, dose_e_per_px: np.ndarray | None,
                 counts_per_electron: float | None, metadata: dict, check_finite: bool = True):
        self.path = path
        self._source = source
        self.data: da.Array = source.data
        self.nm_per_px = nm_per_px
        self.inv_nm_per_px = inv_nm_per_px
        self.time_s = time_s
        self._modes = modes  # "" where not yet known (decided by the ring-pattern test on demand)
        self._dose = dose_e_per_px
        self.counts_per_electron = counts_per_electron
        self.format = source.format
        self.metadata = metadata
        self.check_finite = check_finite

    # -- shape ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.data.shape[0])

    @property
    def n_frames(self) -> int:
        return len(self)

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(int(n) for n in self.data.shape[1:])  # type: ignore[return-value]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.data.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def fps(self) -> float:
        """Frames per second from the median frame interval (NaN when unknown)."""
        if self.time_s is None or len(self.time_s) < 2:
            return float(self.metadata.get("fps", math.nan))
        dt = float(np.median(np.diff(self.time_s)))
        return 1.0 / dt if dt > 0 else math.nan

    def __repr__(self) -> str:
        return (f"Recording({str(self.path)!r}, frames={len(self)}, shape={self.frame_shape}, "
                f"nm_per_px={self.nm_per_px:.4g}, inv_nm_per_px={self.inv_nm_per_px:.4g}, fps={self.fps:.4g})")

    # -- modes ------------------------------------------------------------------------------
    @property
    def modes_known(self) -> bool:
        """True when every frame's mode is known without looking at the pixels."""
        return bool(np.all(self._modes != ""))

    @property
    def modes(self) -> np.ndarray:
        """``"image"`` or ``"diffraction"`` per frame (runs the ring-pattern test where needed)."""
        if not self.modes_known:
            for _ in self.iter_chunks(64):
                pass
        return self._modes.copy()

    # -- frames -----------------------------------------------------------------------------
    def _compute(self, start: int, stop: int) -> np.ndarray:
        try:
            raw = self._source.raw
            if raw is not None and raw.shape == tuple(self.data.shape):
                block = raw[start:stop]  # uncompressed frames: mapped directly, no task graph
            else:
                import dask.threaded  # the scheduler itself: the name "threads" makes dask import distributed

                block = self.data[start:stop].compute(scheduler=dask.threaded.get)
        except RecordingError:
            raise
        except Exception as exc:
            raise RecordingError(self.path, f"frames {start}-{stop - 1} cannot be read, the file may be "
                                 f"truncated or corrupt ({type(exc).__name__}: {exc})") from None
        integer = np.asarray(block[:0]).dtype.kind in "iub"  # integers cannot hold NaN or inf
        block = np.asarray(block, dtype=np.float32)
        if self.check_finite and not integer:
            # a frame's sum is finite unless the frame holds NaN/inf (or overflows: then look closer);
            # summed as a matrix-vector product, BLAS's vectorised loop (NaN and inf propagate)
            flat = block.reshape(len(block), -1)
            sums = flat @ _ones(flat.shape[1])
            bad = ~np.isfinite(sums)
            if bad.any():
                bad[bad] = ~np.isfinite(block[bad]).reshape(int(bad.sum()), -1).all(axis=1)
            if bad.any():
                i = start + int(np.flatnonzero(bad)[0])
                raise RecordingError(self.path, f"frame {i} contains NaN or infinite values "
                                     "(pass check_finite=False to replace them by 0)")
        else:
            block = np.nan_to_num(block, nan=0.0, posinf=0.0, neginf=0.0)
        return block

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as a float32 array (Y, X) in detector counts."""
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"{self.path}: frame {i} out of range (recording has {n} frames)")
        i %= n
        return self._compute(i, i + 1)[0]

    def iter_chunks(self, n: int = 32, start: int = 0, stop: int | None = None, *,
                    align: bool = True) -> Iterator[FrameChunk]:
        """Stream frames ``start:stop`` in chunks of at most ``n``; memory is bounded by the chunk.

        Parameters
        ----------
        n : int
            Frames per chunk (at most).
        start, stop : int
            Frame range (default: all).
        align : bool
            Also cut chunks where the file's storage is cut (e.g. between the chunks of an HDF5
            dataset), so each chunk is read without a copy. ``False`` yields exactly
            ``ceil((stop - start) / n)`` chunks of ``n`` frames (the last one shorter).

        Yields
        ------
        FrameChunk
        """
        if n < 1:
            raise ValueError("chunk size n must be >= 1")
        stop = len(self) if stop is None else min(stop, len(self))
        cuts = set(range(start, stop, n)) | {stop}
        raw = self._source.raw
        if align and raw is not None and raw.shape == tuple(self.data.shape):
            cuts |= {a for a, _, _ in raw.runs if start < a < stop}
        edges = sorted(cuts)
        for s, e in zip(edges[:-1], edges[1:]):
            frames = self._compute(s, e)
            for k in range(s, e):
                if self._modes[k] == "":
                    self._modes[k] = guess_frame_mode(frames[k - s])
            yield FrameChunk(start=s, frames=frames, time_s=self.times(s, e), mode=self._modes[s:e].copy(),
                             dose_e_per_px=self._chunk_dose(s, frames))

    def times(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Frame times in s for ``start:stop`` (NaN when the recording has no time calibration)."""
        stop = len(self) if stop is None else stop
        if self.time_s is None:
            return np.full(stop - start, np.nan)
        return self.time_s[start:stop].copy()

    def _chunk_dose(self, start: int, frames: np.ndarray) -> np.ndarray | None:
        if self._dose is not None:
            return self._dose[start:start + len(frames)].copy()
        if self.counts_per_electron:
            return frames.reshape(len(frames), -1).mean(axis=1) / self.counts_per_electron
        return None

    # -- checks -----------------------------------------------------------------------------
    def require_calibration(self, mode: str = "image", need_time: bool = True) -> None:
        """Raise :class:`CalibrationError` (saying how to give it) when a calibration is missing.

        Parameters
        ----------
        mode : {"image", "diffraction"}
            Which spatial calibration the caller needs.
        need_time : bool
            Whether frame times are needed too.
        """
        if mode == "image" and not cal.is_valid(self.nm_per_px):
            raise CalibrationError(self.path, "no spatial calibration (nm per pixel) in the file; give it "
                                   "with --nm-per-px X (or nm_per_px=X)")
        if mode == "diffraction" and not cal.is_valid(self.inv_nm_per_px):
            raise CalibrationError(self.path, "no diffraction calibration (1/nm per pixel) in the file; give "
                                   "it with --inv-nm-per-px Q (or inv_nm_per_px=Q), or calibrate with a "
                                   "standard (--calibrate-with Au)")
        if need_time and self.time_s is None:
            raise CalibrationError(self.path, "no frame times in the file; give the frame rate with --fps F "
                                   "(or fps=F)")

    def close(self) -> None:
        """Release open file handles."""
        for close in self._source.closers:
            try:
                close()
            except Exception:  # closing twice or a handle the library closed already
                pass

    def __enter__(self) -> "Recording":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def info(self) -> dict:
        """A summary for ``tem-operando info``: shape, dtype, calibration, modes."""
        modes = self._modes
        counts = {m: int((modes == m).sum()) for m in MODES}
        counts["unknown"] = int((modes == "").sum())
        return {
            "path": str(self.path),
            "format": self.format,
            "frames": len(self),
            "frame_shape": list(self.frame_shape),
            "dtype": str(self.dtype),
            "nm_per_px": self.nm_per_px,
            "inv_nm_per_px": self.inv_nm_per_px,
            "fps": self.fps,
            "duration_s": float(self.time_s[-1] - self.time_s[0]) if self.time_s is not None else math.nan,
            "modes": counts,
            "dose_known": self._dose is not None or bool(self.counts_per_electron),
            "calibration_source": self.metadata.get("calibration_source", {}),
        }


def _check_user_value(path: Path, name: str, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise CalibrationError(path, f"{name} must be a number, got {value!r}") from None
    if not cal.is_valid(v):
        raise CalibrationError(path, f"{name} must be a positive, finite number, got {value!r}")
    return v


def _frames_view(path: Path, source: Source) -> tuple[da.Array, list]:
    """Bring the array to (T, Y, X): a single image becomes one frame, grey-level RGB is averaged."""
    data, axes = source.data, list(source.axes)
    if data.ndim == 3 and data.shape[-1] in (3, 4) and data.shape[0] > 4 and data.shape[1] > 4:
        # an RGB(A) image: average the colour channels
        data = data[..., :3].mean(axis=-1)
        axes = axes[:2]
    if data.ndim == 2:
        data = data[None]
        axes = [None] + axes
    if data.ndim != 3:
        raise RecordingError(path, f"holds a {data.ndim}D dataset of shape {tuple(data.shape)}; expected a "
                             "single frame (Y, X) or a series of frames (T, Y, X), not e.g. a 4D-STEM scan")
    if data.shape[0] == 0 or data.shape[1] == 0 or data.shape[2] == 0:
        raise RecordingError(path, f"the recording is empty (shape {tuple(data.shape)})")
    if data.dtype.kind not in "uifb":
        raise RecordingError(path, f"frames have dtype {data.dtype}; expected real numbers")
    return data, axes


def _resolve_modes(path: Path, source: Source, own: dict, n: int, spatial_kind: str, mode: str | None) -> np.ndarray:
    modes = np.full(n, "", dtype=object)
    if mode not in (None, "auto"):
        if mode not in MODES:
            raise ValueError(f"mode must be 'auto', 'image' or 'diffraction', got {mode!r}")
        modes[:] = mode
        return modes.astype("<U11")
    given = own.get("mode")
    if isinstance(given, str) and given in MODES:
        modes[:] = given
    elif isinstance(given, (list, tuple)) and len(given) == n:
        modes[:] = [m if m in MODES else "" for m in given]
    elif spatial_kind == "length":
        modes[:] = "image"
    elif spatial_kind in ("reciprocal", "angle"):
        modes[:] = "diffraction"
    return modes.astype("<U11")


def open_recording(path: str | os.PathLike, nm_per_px: float | None = None, fps: float | None = None, *,
                   inv_nm_per_px: float | None = None, mode: str | None = "auto",
                   counts_per_electron: float | None = None, check_finite: bool = True) -> Recording:
    """Open a recording lazily, read-only, with its calibration.

    Parameters
    ----------
    path : str or PathLike
        A file (.hspy, .zspy, .emd, .dm3, .dm4, .ser, .mrc, .tif, .npy, .avi, .mp4) or a folder of
        frame files (Gatan's ``Hour_00/Minute_00/Second_00/..._Frame_0000.dm4`` layout included).
    nm_per_px : float, optional
        Pixel size of image frames in nm; overrides the file's metadata.
    fps : float, optional
        Frame rate in frames per second; overrides the file's time axis.
    inv_nm_per_px : float, optional
        Pixel size of diffraction frames in 1/nm; overrides the file's metadata.
    mode : {"auto", "image", "diffraction"}
        Force every frame's mode; ``"auto"`` (default) uses the metadata's calibration units and,
        where they are missing, a ring-pattern test per frame.
    counts_per_electron : float, optional
        Detector counts per incident electron, to give each frame's dose in e⁻/px.
    check_finite : bool
        Raise on frames holding NaN or inf (default) or replace those values by 0.

    Returns
    -------
    Recording

    Raises
    ------
    RecordingError
        The path does not exist, is not a supported or readable recording, is empty, truncated
        or has the wrong dimensionality. The message names the file and the problem.

    Examples
    --------
    >>> rec = open_recording("session.hspy")                     # doctest: +SKIP
    >>> for chunk in rec.iter_chunks(64):                          # doctest: +SKIP
    ...     print(chunk.start, chunk.frames.shape, chunk.mode[0])
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise RecordingError(path, "no such file or folder")
    if path.is_dir() and path.suffix.lower() == ".zspy" and not any(path.iterdir()):
        raise RecordingError(path, "the .zspy folder is empty")
    if path.is_file() and path.stat().st_size == 0:
        raise RecordingError(path, "the file is empty (0 bytes)")
    user_nm = _check_user_value(path, "nm_per_px", nm_per_px)
    user_inv = _check_user_value(path, "inv_nm_per_px", inv_nm_per_px)
    user_fps = _check_user_value(path, "fps", fps)
    cpe = _check_user_value(path, "counts_per_electron", counts_per_electron)

    try:
        source = open_source(path)
    except RecordingError:
        raise
    except Exception as exc:
        raise RecordingError(path, f"cannot be read as {path.suffix or 'a recording'}: the file may be "
                             f"truncated or corrupt ({type(exc).__name__}: {exc})") from None
    own = dict(source.own)
    own.update(read_sidecar(path))
    data, axes = _frames_view(path, source)
    source.data = data
    n = int(data.shape[0])

    # spatial calibration from the x axis
    x_axis = axes[-1]
    spatial_kind = cal.axis_kind(x_axis.units) if x_axis is not None else ""
    voltage = _beam_energy_kv(source.metadata)
    file_nm = cal.to_nm(x_axis.scale, x_axis.units) if spatial_kind == "length" else math.nan
    file_inv = (cal.to_inv_nm(x_axis.scale, x_axis.units, voltage)
                if spatial_kind in ("reciprocal", "angle") else math.nan)
    sources: dict[str, str] = {}

    def pick(name: str, user: float | None, from_own: object, from_file: float) -> float:
        if user is not None:
            sources[name] = "user"
            return user
        if from_own is not None and cal.is_valid(from_own):  # type: ignore[arg-type]
            sources[name] = "tem_operando metadata"
            return float(from_own)  # type: ignore[arg-type]
        if cal.is_valid(from_file):
            sources[name] = "file axes"
            return from_file
        return math.nan

    nm = pick("nm_per_px", user_nm, own.get("nm_per_px"), file_nm)
    inv = pick("inv_nm_per_px", user_inv, own.get("inv_nm_per_px"), file_inv)
    modes = _resolve_modes(path, source, own, n, spatial_kind, mode)

    # folders: each file carries its own units, so modes and calibrations come per frame
    if source.frame_times_s is not None or source.format.startswith("folder"):
        files = source.metadata.get("files", [])
        if mode in (None, "auto") and own.get("mode") is None and files:
            modes[:] = ""  # each file's own units decide, not the first file's
            nm, inv = _folder_modes(files, modes, nm, inv, sources)

    time_s = _resolve_times(path, source, own, axes[0], n, user_fps, sources)

    dose = None
    if own.get("dose_e_per_px") is not None:
        d = np.asarray(own["dose_e_per_px"], dtype=np.float64)
        dose = np.broadcast_to(d, (n,)).copy() if d.ndim == 0 or len(d) == n else None
    if cpe is None and own.get("counts_per_electron") is not None and cal.is_valid(own["counts_per_electron"]):
        cpe = float(own["counts_per_electron"])

    metadata = {"original": source.original_metadata, "hyperspy": source.metadata, "tem_operando": own,
                "calibration_source": sources, "axes": [a.__dict__ if a is not None else None for a in axes]}
    if "fps" in own:
        metadata["fps"] = own["fps"]
    rec = Recording(path, source, nm_per_px=nm, inv_nm_per_px=inv, time_s=time_s, modes=modes,
                    dose_e_per_px=dose, counts_per_electron=cpe, metadata=metadata, check_finite=check_finite)
    # read the first and last frames now: a truncated file fails here, with its name, not mid-analysis
    rec._compute(0, 1)
    if n > 1:
        rec._compute(n - 1, n)
    return rec


def _beam_energy_kv(metadata: dict) -> float | None:
    try:
        return float(metadata["Acquisition_instrument"]["TEM"]["beam_energy"])
    except (KeyError, TypeError, ValueError):
        return None


def _folder_modes(files: list[str], modes: np.ndarray, nm: float, inv: float, sources: dict) -> tuple[float, float]:
    """Per-file units decide each frame's mode and supply the calibration of each mode."""
    kinds: dict[str, str] = {}  # units → kind, worked out once per distinct units of the folder
    for k, f in enumerate(files):
        try:
            scale, units, own = frame_file_calibration(f)
        except Exception as exc:
            raise RecordingError(f, f"frame file cannot be read ({type(exc).__name__}: {exc})") from None
        u = units if isinstance(units, str) else repr(units)
        kind = kinds.get(u)
        if kind is None:
            kind = kinds[u] = cal.axis_kind(units)
        m = own.get("mode") if own.get("mode") in MODES else None
        if m is None and kind == "length":
            m = "image"
        elif m is None and kind in ("reciprocal", "angle"):
            m = "diffraction"
        if m is not None and modes[k] == "":
            modes[k] = m
        if kind == "length" and not cal.is_valid(nm):
            nm = cal.to_nm(scale, units)
            sources["nm_per_px"] = "frame file axes"
        if kind == "reciprocal" and not cal.is_valid(inv):
            inv = cal.to_inv_nm(scale, units)
            sources["inv_nm_per_px"] = "frame file axes"
    return nm, inv


def _resolve_times(path: Path, source: Source, own: dict, t_axis, n: int, user_fps: float | None,
                   sources: dict) -> np.ndarray | None:
    if user_fps is not None:
        sources["time"] = "user fps"
        return np.arange(n) / user_fps
    given = own.get("time_s")
    if given is not None and len(given) == n:
        t = np.asarray(given, dtype=np.float64)
        sources["time"] = "tem_operando metadata"
    elif own.get("fps") is not None and cal.is_valid(own["fps"]):
        sources["time"] = "tem_operando metadata fps"
        return np.arange(n) / float(own["fps"])
    elif source.frame_times_s is not None:
        t = source.frame_times_s - source.frame_times_s[0]
        sources["time"] = "folder layout"
    elif t_axis is not None and cal.axis_kind(t_axis.units) == "time" and cal.is_valid(t_axis.scale):
        dt = cal.to_s(t_axis.scale, t_axis.units)
        sources["time"] = "file axes"
        return np.arange(n) * dt
    else:
        return None
    if not np.all(np.isfinite(t)) or (n > 1 and np.any(np.diff(t) <= 0)):
        raise CalibrationError(path, "frame times are not finite and strictly increasing; give --fps F")
    return t
