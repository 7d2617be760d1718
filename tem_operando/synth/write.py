"""Write a synthetic session as a recording in any supported format, plus its ground truth.

The recording carries its calibration the way real files do (axes of hspy/zspy/emd/tif/dm/ser,
voxel size of mrc, per-file units in folders). What a format cannot hold (per-frame modes of a
mixed session, doses, a frame rate for .npy/.mrc/videos) goes into a sidecar
``<stem>.meta.json`` that :func:`tem_operando.io.open_recording` reads. Ground truth goes to
``<stem>_truth/``: ``truth.json``, ``frames.csv``, ``objects.csv``, ``tracks.csv``,
``fronts.csv``, ``phases.csv`` and ``masks.zarr`` (``classes`` and ``instances``).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np

from ..io.readers import OWN_KEY
from .._files import atomic_write_text
from .._json import jsonable as _jsonable
from .session import Session

#: format name → file extension (folders have none)
FORMATS = {
    "hspy": ".hspy",
    "zspy": ".zspy",
    "emd": ".emd",          # NCEM / Berkeley EMD, written by RosettaSciIO
    "velox": ".emd",        # Thermo Fisher Velox EMD
    "dm4": ".dm4",
    "dm3": ".dm3",
    "ser": ".ser",
    "mrc": ".mrc",
    "tif": ".tif",
    "npy": ".npy",
    "avi": ".avi",
    "mp4": ".mp4",
    "gatan": "",            # folder: Hour_00/Minute_00/Second_00/..._Frame_0000.dm4
    "folder": "",           # folder of single-frame .tif files
}


def own_metadata(session: Session) -> dict:
    """tem-operando's facts about a session, as stored in files and sidecars."""
    modes = [str(m) for m in session.mode]
    own = {
        "nm_per_px": session.nm_per_px,
        "inv_nm_per_px": session.inv_nm_per_px,
        "fps": session.fps,
        "time_s": session.time_s,
        "mode": modes[0] if len(set(modes)) == 1 else modes,
        "counts_per_electron": 1.0,
        "synthetic": True,
    }
    if session.dose_e_per_px is not None:
        own["dose_e_per_px"] = session.dose_e_per_px
    return _jsonable(own)


def _main_mode(session: Session) -> str:
    modes = list(session.mode)
    return max(("image", "diffraction"), key=modes.count)


def _spatial(session: Session, mode: str) -> tuple[float, str]:
    if mode == "diffraction":
        return session.inv_nm_per_px, "1/nm"
    return session.nm_per_px, "nm"


def _signal(session: Session):
    import hyperspy.api as hs

    mode = _main_mode(session)
    scale, units = _spatial(session, mode)
    s = hs.signals.Signal2D(session.frames)
    t = s.axes_manager[0]
    t.name, t.units, t.scale = "time", "s", 1.0 / session.fps if math.isfinite(session.fps) else 1.0
    for ax, name in zip(s.axes_manager.signal_axes, ("x", "y")):
        ax.name, ax.units = name, units
        ax.scale = scale if math.isfinite(scale) else 1.0
    s.metadata.General.title = "tem-operando synthetic session"
    s.metadata.set_item("Signal.quantity", "Counts (e-)")
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", 200.0)
    s.original_metadata.add_dictionary({OWN_KEY: own_metadata(session)})
    return s


def write_recording(session: Session, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write the frames of ``session`` as a recording at ``path``.

    Parameters
    ----------
    session : Session
    path : path-like
        Output file (or folder for ``gatan``/``folder``). Its extension picks the format when
        ``fmt`` is None.
    fmt : str, optional
        One of :data:`FORMATS`.

    Returns
    -------
    Path
        The recording's path.
    """
    path = Path(path)
    if fmt is None:
        matches = [f for f, ext in FORMATS.items() if ext and ext == path.suffix.lower()]
        if not matches:
            raise ValueError(f"{path}: cannot tell the format from the extension; pass fmt, one of {sorted(FORMATS)}")
        fmt = matches[0]
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {sorted(FORMATS)}")
    if fmt == "ser" and not path.stem.endswith("_1"):
        path = path.with_name(path.stem + "_1.ser")  # TIA names a series <name>_1.ser beside <name>.emi
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    own = own_metadata(session)
    mode = _main_mode(session)
    scale, units = _spatial(session, mode)
    frames = np.asarray(session.frames, dtype=np.float32)
    dt = 1.0 / session.fps if math.isfinite(session.fps) else 1.0
    sidecar: dict = {}
    mixed = not isinstance(own["mode"], str)

    if fmt == "hspy":  # uncompressed, one chunk per frame: what a fast in situ pipeline reads best
        _signal(session).save(path, overwrite=True, compression=None, shuffle=False, chunks=(1,) + frames.shape[1:])
    elif fmt == "zspy":
        _signal(session).save(path, overwrite=True)
    elif fmt == "emd":
        _signal(session).save(path, overwrite=True)
        sidecar = {k: own[k] for k in ("mode", "dose_e_per_px", "counts_per_electron", "time_s") if k in own}
    elif fmt == "tif":
        _signal(session).save(path, overwrite=True)
        sidecar = {k: own[k] for k in ("mode", "dose_e_per_px", "counts_per_electron", "time_s") if k in own}
    elif fmt == "mrc":
        import mrcfile

        with mrcfile.new(str(path), overwrite=True) as m:
            m.set_data(frames)
            vs = (scale * 10.0) if mode == "image" else 1.0  # Å per voxel
            m.voxel_size = (vs, vs, vs)
        sidecar = dict(own) if mode != "image" else {k: v for k, v in own.items() if k != "nm_per_px"}
    elif fmt == "npy":
        np.save(path, frames)
        sidecar = dict(own)
    elif fmt in ("dm3", "dm4", "ser", "velox"):
        from . import vendor_formats as vf

        if fmt in ("dm3", "dm4"):
            vf.write_dm(path, frames, scale=scale, units=units, time_step_s=dt, version=int(fmt[-1]))
        elif fmt == "ser":
            vf.write_ser(path, frames, scale_m=scale * 1e-9 if units == "nm" else scale * 1e9, time_step_s=dt,
                         units="m" if units == "nm" else "1/m")
        else:
            vf.write_velox_emd(path, frames, scale_m=scale * 1e-9 if units == "nm" else scale * 1e9,
                               time_step_s=dt, units="m" if units == "nm" else "1/m", mode=mode)
        sidecar = {k: own[k] for k in ("mode", "dose_e_per_px", "counts_per_electron", "time_s") if k in own}
    elif fmt in ("avi", "mp4"):
        _write_video(path, frames, session.fps, fmt)
        sidecar = {k: v for k, v in own.items() if k not in ("dose_e_per_px", "counts_per_electron")}
    elif fmt == "gatan":
        from . import vendor_formats as vf

        path.mkdir(parents=True)
        _write_gatan(path, session, vf)
        sidecar = {}
    elif fmt == "folder":
        _write_tif_folder(path, session)
        sidecar = dict(own)  # bare TIFF frames carry no calibration
    if mixed and fmt not in ("hspy", "zspy", "gatan", "folder"):
        sidecar.update({k: own[k] for k in ("mode", "nm_per_px", "inv_nm_per_px") if own.get(k) is not None})
    if sidecar:
        from ..io.readers import sidecar_path

        _atomic_json(sidecar_path(path), {OWN_KEY: sidecar})
    return path


def _write_video(path: Path, frames: np.ndarray, fps: float, fmt: str) -> None:
    import cv2

    lo, hi = np.percentile(frames, [0.1, 99.9])
    scaled = np.clip((frames - lo) / max(hi - lo, 1e-9) * 255, 0, 255).astype(np.uint8)
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if fmt == "avi" else "mp4v"))
    h, w = frames.shape[1:]
    writer = cv2.VideoWriter(str(path), fourcc, float(fps), (w, h), isColor=False)
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write {fmt} here")
    for f in scaled:
        writer.write(f)
    writer.release()


def _write_gatan(root: Path, session: Session, vf) -> None:
    """One DM4 per frame in Gatan's in situ layout; each file carries its mode's calibration."""
    vf.write_gatan_insitu_folder(
        root, np.asarray(session.frames, dtype=np.float32),
        scale=[_spatial(session, str(m))[0] for m in session.mode],
        units=[_spatial(session, str(m))[1] for m in session.mode],
        fps=session.fps, version=4)


def _write_tif_folder(root: Path, session: Session) -> None:
    import tifffile

    root.mkdir(parents=True)
    width = len(str(session.n_frames))
    for k, frame in enumerate(np.asarray(session.frames, dtype=np.float32)):
        tifffile.imwrite(root / f"frame_{k:0{max(4, width)}d}.tif", frame)


def _atomic_json(path: Path, obj: dict) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=1))


def truth_dir(recording_path: str | os.PathLike) -> Path:
    """The ground-truth folder written beside a synthetic recording."""
    p = Path(recording_path)
    stem = p.name.split(".")[0] if p.suffix else p.name
    return p.with_name(stem + "_truth")


def write_truth(session: Session, folder: str | os.PathLike) -> Path:
    """Write the session's exact ground truth (tables, masks, parameters) to ``folder``."""
    import zarr

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in ("frame_table", "objects", "tracks", "fronts", "phases"):
        df = getattr(session, name)
        fname = "frames.csv" if name == "frame_table" else f"{name}.csv"
        df.to_csv(tmp / fname, index=False)
    truth = {
        "n_frames": session.n_frames,
        "frame_shape": list(session.frames.shape[1:]),
        "nm_per_px": session.nm_per_px,
        "inv_nm_per_px": session.inv_nm_per_px,
        "fps": session.fps,
        "params": session.params,
    }
    with open(tmp / "truth.json", "w", encoding="utf-8") as fh:
        json.dump(_jsonable(truth), fh, indent=1)
    if session.classes is not None:
        g = zarr.open_group(str(tmp / "masks.zarr"), mode="w")
        shape = session.classes.shape
        chunks = (1,) + tuple(shape[1:])
        g.create_dataset("classes", data=np.asarray(session.classes, dtype=np.uint8), chunks=chunks)
        g.create_dataset("instances", data=np.asarray(session.instances, dtype=np.uint32), chunks=chunks)
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(tmp, folder)
    return folder


def write_session(session: Session, path: str | os.PathLike, fmt: str | None = None) -> Path:
    """Write the recording (any format of :data:`FORMATS`) and its ground truth beside it.

    Returns the recording's path; the truth is in :func:`truth_dir` of it.
    """
    out = write_recording(session, path, fmt)
    write_truth(session, truth_dir(out))
    return out
