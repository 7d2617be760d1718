"""``analyze``: every stage on one recording, chunk by chunk, into a results folder.

Image frames go through segmentation → object measurement (per chunk, in parallel) and then
drift chaining → linking → kinetics (once, on the small tables). Diffraction frames go through
radial profiles → phase unmixing → rings (per chunk) and the phase timeline (once). Chunks run
as Dask tasks (local threads by default, or a ``dask.distributed`` cluster); each finished
chunk is saved under ``.work/`` so ``resume=True`` continues after an interruption and gives
the same tables. ``summary.json`` says ``partial`` until the run completes.
"""

from __future__ import annotations

import math
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import __version__, schema
from .._files import atomic_write_text, exclusive_folder, remove_stale_temporaries
from ..errors import CalibrationError, TemOperandoError
from ..results import MASKS, ResultStore
from .chunks import WORK, ChunkSpec, check_scheduler, chunk_ranges, clear_work, gather, is_done, run_chunks
from .context import cumulative_dose, log_at, read_log, sha256_of

#: how many frames before a chunk its job looks back for the last image frame (drift anchor)
ANCHOR_LOOKBACK = 16
POSITION_COLUMNS = ("x_nm", "y_nm", "end_a_x_nm", "end_a_y_nm", "end_b_x_nm", "end_b_y_nm")


@dataclass
class AnalyzeOptions:
    """Parameters of one analysis (all recorded in ``summary.json``).

    Attributes
    ----------
    nm_per_px, inv_nm_per_px, fps : float or None
        Calibration overriding the file's metadata (nm/px, 1/nm per px, frames/s).
    mode : {"auto", "image", "diffraction"}
        Force every frame's mode, or label each frame from metadata / the ring-pattern test.
    model : str or None
        Segmentation model: a file, the name of a shipped or user model (``tem-operando models list``),
        ``"baseline"`` for the classical one, None for the shipped network.
    device : str
        ``"cpu"``, ``"cuda"``, ... for the network.
    phases : list of str or None
        Candidate phases for unmixing (None: the whole library).
    calibrate_with : str or None
        A standard phase (Au, Al) whose pattern in the recording fits the 1/nm per px.
    log : str or None
        Electrochemistry/holder log CSV; ``log_offset_s`` is added to its times (s).
    chunk_frames : int
        Frames per chunk (memory is bounded by chunk × workers).
    every_nth : int
        Segment every n-th image frame only (1 = all).
    reference_frames : int
        Two-channel models: at most this many image frames of the recording's first second are
        averaged into the reference (:mod:`tem_operando.segment.reference`; 1: the first image frame
        with structure alone).
    workers : int
        Local threads (ignored on a cluster).
    scheduler : str or None
        None/"threads" local Dask threads; "sync" inline; or a ``dask.distributed`` address.
    """

    nm_per_px: float | None = None
    inv_nm_per_px: float | None = None
    fps: float | None = None
    mode: str = "auto"
    model: str | None = None
    device: str = "cpu"
    phases: list[str] | None = None
    calibrate_with: str | None = None
    log: str | None = None
    log_offset_s: float = 0.0
    chunk_frames: int = 32
    every_nth: int = 1
    reference_frames: int = 8
    workers: int = 2
    scheduler: str | None = None
    contact_nm: dict = field(default_factory=dict)

    @classmethod
    def from_parameters(cls, parameters: dict | None, **overrides: Any) -> AnalyzeOptions:
        """The options of an earlier run (``summary.json``'s ``parameters``) with ``overrides``:
        reprocessing a session with a new model keeps its calibration, phases, log and settings.
        Keys that are not options (from another version) are ignored."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in (parameters or {}).items() if k in names}
        kw.update(overrides)
        return cls(**kw)

    def analysis_params(self) -> dict:
        """The parameters that change results (not how the run is scheduled)."""
        d = asdict(self)
        for k in ("workers", "scheduler"):
            d.pop(k)
        return d


# ----------------------------------------------------------------------------------------------
# per-process caches (a Dask worker loads the model once)
_SEGMENTERS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def get_segmenter(model: str | None, device: str = "cpu"):
    """The segmenter for ``model`` (cached per process)."""
    key = (model, device)
    if model not in (None, "baseline") and os.path.isfile(model):  # a retrained file of the same name reloads
        st = os.stat(model)
        key += (st.st_mtime_ns, st.st_size)
    with _LOCK:
        if key not in _SEGMENTERS:
            from ..segment import load_segmenter

            # one torch thread per task: chunks run in parallel (Dask threads or workers), and the
            # same thread count everywhere keeps results independent of the scheduler
            _SEGMENTERS[key] = (load_segmenter(model, device=device, threads=1) if model != "baseline"
                                else load_segmenter("baseline"))
        return _SEGMENTERS[key]


def model_identity(model: str | None) -> tuple[str, str]:
    """(name, sha256) of the model an analysis uses."""
    if model == "baseline":
        return "baseline (classical scikit-image)", ""
    from ..segment import default_model_path

    path = Path(model) if model else default_model_path()
    from ..segment.modelfile import sha256

    return path.stem, sha256(path)


def _open(spec: ChunkSpec):
    from ..io import open_recording

    return open_recording(spec.input_path, **spec.open_kwargs)


# ----------------------------------------------------------------------------------------------
# the chunk job


def _anchor(rec, start: int) -> tuple[int, np.ndarray] | None:
    """The last image frame before ``start`` (within the look-back), as (index, frame)."""
    lo = max(0, start - ANCHOR_LOOKBACK)
    if lo >= start:
        return None
    if rec.modes_known:  # read just the anchor frame
        img = np.flatnonzero(rec._modes[lo:start] == "image")
        return None if img.size == 0 else (lo + int(img[-1]), rec.frame(lo + int(img[-1])))
    chunk = next(rec.iter_chunks(start - lo, lo, start, align=False))
    img = np.flatnonzero(chunk.mode == "image")
    if img.size == 0:
        return None
    k = int(img[-1])
    return lo + k, chunk.frames[k]


#: under ``.work/``: the absolute drift (x, y px) of every frame the drift pass has registered, a
#: dense (n_frames, 2) array (NaN: not an image frame, or not registered yet), read by each chunk
#: for its own rows only (memory-mapped)
REFERENCE_DRIFT = "reference_drift.npy"
#: under ``.work/``: the reference frame chosen and how far the drift pass has been chained
REFERENCE_STATE = "reference.json"
#: under ``.work/``: the reference image (the run of first frames averaged, at the reference frame's
#: position), computed once when the run is chosen and read by every chunk
REFERENCE_IMAGE = "reference_image.npy"
#: the drift of each analysed frame is re-measured against the reference only when at least this many
#: frames were averaged into it (a fast camera): at 25 frames/s (8 frames) the drift's RMS error at 10 e⁻/px
#: falls from 2.6 to 1.2 px (frames too noisy alone registered with their neighbours); at 2 frames/s
#: (2 frames) it stays at 1.5 px. Re-measuring costs 6–21 ms per 256×256 frame (the network ~25 ms):
#: +5 % of a clean recording's analysis time, up to +40 % for a liquid cell whose frames all need their
#: neighbours (``models/experiments/README.md``, sessions 17–18)
REFINE_MIN_FRAMES = 4


def _register_chunk(rec, frames: np.ndarray, start: int) -> tuple[tuple[int, np.ndarray] | None, np.ndarray]:
    """Drift (dx, dy) px of a chunk's image frames relative to its anchor, and the anchor."""
    from ..track import estimate_drift

    anchor = _anchor(rec, start)
    stack = frames if anchor is None else np.concatenate([anchor[1][None], frames])
    drift_px = estimate_drift(stack)
    return anchor, (drift_px[1:] if anchor is not None else drift_px)


def _drift_rows(index: np.ndarray, drift_px: np.ndarray, anchor, start: int) -> pd.DataFrame:
    return pd.DataFrame({"frame": index, "drift_rel_x_px": drift_px[:, 0], "drift_rel_y_px": drift_px[:, 1],
                         "anchor": -1 if anchor is None else anchor[0], "chunk_start": start})


def drift_job(spec: ChunkSpec, start: int, stop: int) -> dict[str, Any]:
    """The drift pass (runs before segmentation when the model wants a reference frame): each
    chunk's image frames registered against its anchor, as the segmentation pass would."""
    _single_blas_thread_in_workers()
    t0 = time.perf_counter()
    with _open(spec) as rec:
        chunk = next(rec.iter_chunks(stop - start, start, stop, align=False))
        img = chunk.mode == "image"
        rows = pd.DataFrame(columns=["frame", "drift_rel_x_px", "drift_rel_y_px", "anchor", "chunk_start"])
        if img.any():
            anchor, drift_px = _register_chunk(rec, chunk.frames[img], start)
            rows = _drift_rows(chunk.index[img], drift_px, anchor, start)
    return {"image_frames": rows, "_stage_s": {"drift_pass_s": time.perf_counter() - t0}}


def _read_reference_state(work: Path) -> dict:
    import json

    path = work / REFERENCE_STATE
    if not path.is_file():
        return {"frame": None, "chained_to": 0, "last": [0.0, 0.0]}
    return json.loads(path.read_text(encoding="utf-8"))


def write_reference_drift(folder: Path, ranges, read_frames: Callable[[np.ndarray], np.ndarray] | None = None,
                          read_times: Callable[[np.ndarray], np.ndarray] | None = None, *,
                          reference_frames: int = 8) -> dict:
    """Chain the drift pass' chunks not chained yet onto the absolute drift of the frames before them.

    Incremental: ``--follow`` calls it after every poll, and only the new chunks are read. The
    reference frame is chosen once, among the first image frames the pass registered (up to a
    chunk's worth, read with ``read_frames(index)``; without it, the first image frame):
    :func:`~tem_operando.segment.reference.choose_reference`; with it the image frames averaged into
    the reference (``run``: it and the next ones taken within a second, at most ``reference_frames``;
    :func:`~tem_operando.segment.reference.reference_run`, times from ``read_times(index)``, s),
    averaged once into ``.work/reference_image.npy`` (:data:`REFERENCE_IMAGE`; without
    ``read_frames`` the run is the reference frame alone and no image is saved). Returns the state (``frame``: the reference frame, ``run``: the frames averaged,
    ``chained_to``: frames chained so far). The run is fixed by the first call, so every chunk of an
    analysis gets the same reference: under ``--follow`` it can hold fewer frames than a batch run of
    the same recording would when the first chunk holds fewer than ``reference_frames`` image frames
    of the first second (chunks of fewer frames, or diffraction frames first).
    """
    import io
    import json

    from .._files import atomic_write_bytes
    from .._registration import mean_reference
    from ..segment.reference import choose_reference, reference_run, structure_score

    work = Path(folder) / WORK
    state = _read_reference_state(work)
    if state["frame"] is not None and "refine" not in state:
        # a run chosen by an older version and resumed: re-measure only if the chunks it finished did
        # (they carry the corrections' columns) or none finished yet, so one drift estimate runs throughout
        state["refine"] = _finished_chunks_refined(Path(folder))
        atomic_write_text(work / REFERENCE_STATE, json.dumps(state))
    ranges = sorted(ranges)
    new = [(s, e) for s, e in ranges if s >= int(state["chained_to"])]
    if not new:
        return state
    n = max(e for _, e in ranges)
    path = work / REFERENCE_DRIFT
    old = np.load(path) if path.is_file() else np.empty((0, 2))
    absolute = np.full((max(n, len(old)), 2), np.nan)
    absolute[: len(old)] = old
    rows = gather(folder, new, "image_frames", kind="drift")
    if not rows.empty:
        chained = chain_drift(rows, known=absolute, last=state["last"])
        f = chained["frame"].to_numpy(int)
        absolute[f] = chained[["drift_x_px", "drift_y_px"]].to_numpy(float)
        state["last"] = [float(v) for v in absolute[f[-1]]]
        if state["frame"] is None:  # the first image frames the pass saw (up to one chunk's worth)
            seen = rows.sort_values("frame")["frame"].to_numpy(int)
            first = seen[: max(e - s for s, e in new)]
            scores = [structure_score(f) for f in read_frames(first)] if read_frames is not None else [0.0]
            state["frame"] = int(first[choose_reference(scores)])
            after = seen[seen >= state["frame"]][: max(int(reference_frames), 1) if read_frames is not None else 1]
            times = read_times(after) if read_times is not None else np.full(after.size, np.nan)
            run = after[: reference_run(times, n_max=after.size)]
            state["run"] = [int(f) for f in run]
            # runs chosen before re-measuring existed do not start doing it when resumed (one drift throughout)
            state["refine"] = True
            if read_frames is not None:  # averaged once here; every chunk reads it (_reference_frames)
                image = mean_reference(np.asarray(read_frames(run), np.float32),
                                       (absolute[run] - absolute[run[0]])[:, ::-1])
                buf = io.BytesIO()
                np.save(buf, image)
                atomic_write_bytes(work / REFERENCE_IMAGE, buf.getvalue())
    state["chained_to"] = int(new[-1][1])
    buf = io.BytesIO()
    np.save(buf, absolute)
    atomic_write_bytes(path, buf.getvalue())  # before the state: a crash in between re-chains the same chunks
    atomic_write_text(work / REFERENCE_STATE, json.dumps(state))
    return state


def _finished_chunks_refined(folder: Path) -> bool:
    """Whether the segmentation chunks finished under ``.work/`` re-measured their drift (their
    ``image_frames.csv`` has ``drift_fix_x_px``); True when none has finished."""
    finished = [d / "image_frames.csv" for d in sorted((folder / WORK).glob("chunk_*"))
                if (d / "done.json").is_file() and (d / "image_frames.csv").is_file()]
    for path in finished:
        with open(path, encoding="utf-8") as fh:
            if "drift_fix_x_px" in fh.readline().strip().split(","):
                return True
    return not finished


def _reference_frames(rec, spec: ChunkSpec, index: np.ndarray, frames: np.ndarray | None = None,
                      time_s: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The reference (the recording's first image frame with structure, averaged with the image
    frames of its first second: :data:`REFERENCE_IMAGE`, saved by :func:`write_reference_drift`)
    moved onto each of frames ``index`` by the drift pass' drift — re-measured against the reference
    itself when the ``frames`` are given (:func:`~tem_operando.segment.reference.refine_shifts`; a frame
    too noisy alone together with its neighbours within ``time_s``, s) — and
    the correction of each frame's drift that re-measuring made, (x, y) px (0 where the drift pass'
    stands). Only a reference of at least :data:`REFINE_MIN_FRAMES` frames is worth it, and only in an
    analysis that chose its reference run with re-measuring in place (``refine`` in :data:`REFERENCE_STATE`:
    a run resumed from an older version keeps one drift estimate throughout). A frame's neighbours are
    those of its own chunk (:func:`image_stage` is called per chunk)."""
    from ..segment.reference import refine_shifts, shift_reference

    work = Path(spec.results_dir) / WORK
    state = _read_reference_state(work)
    path = work / REFERENCE_DRIFT
    drift = np.load(path, mmap_mode="r") if path.is_file() else np.empty((0, 2))
    ref = state["frame"]
    ok = (index < len(drift)) & (ref is not None)
    d = np.full((len(index), 2), np.nan)
    d[ok] = np.asarray(drift[index[ok]])
    missing = index[~np.isfinite(d).all(axis=1)]
    if missing.size or ref is None:
        raise TemOperandoError(f"{path}: no drift for frames {missing[:5].tolist()}; the drift pass did not run "
                               "for them")
    d = d - np.asarray(drift[int(ref)], float)
    averaged = work / REFERENCE_IMAGE
    # analyses before averaging (no image saved): the reference frame alone
    image = np.load(averaged) if averaged.is_file() else np.asarray(rec.frame(int(ref)), np.float32)
    shifts = d[:, ::-1].copy()
    if frames is not None and state.get("refine") and len(state.get("run") or ()) >= REFINE_MIN_FRAMES:
        refined, _ = refine_shifts(frames, image, shifts, time_s=time_s)
        return shift_reference(image, refined), (refined - shifts)[:, ::-1]
    return shift_reference(image, shifts), np.zeros((len(index), 2))


def _drift_from_pass(spec: ChunkSpec, start: int, stop: int | None, index: np.ndarray):
    """(anchor, drift_px) of these frames as the drift pass saved them, or None when it did not run."""
    from .chunks import load_chunk

    if stop is None or not spec.params.get("_reference") or not is_done(Path(spec.results_dir), start, stop, "drift"):
        return None
    t = load_chunk(Path(spec.results_dir), start, stop, "drift")["image_frames"]
    if t.empty or t["frame"].tolist() != [int(i) for i in index]:
        return None
    a = int(t["anchor"].iloc[0])
    return (None if a < 0 else (a, None)), t[["drift_rel_x_px", "drift_rel_y_px"]].to_numpy(float)


def image_stage(rec, spec: ChunkSpec, frames: np.ndarray, index: np.ndarray, time_s: np.ndarray,
                start: int, stop: int | None = None) -> dict[str, Any]:
    """Segment, register and measure a chunk's image frames (positions relative to the anchor).

    When the drift pass ran (two-channel models), its registration of these frames is reused."""
    from ..track import measure_objects

    p = spec.params
    nm = rec.nm_per_px
    if not (nm and math.isfinite(nm) and nm > 0):
        raise CalibrationError(rec.path, "image frames but no spatial calibration (nm per pixel); give it "
                               "with --nm-per-px X")
    timings = {}
    t0 = time.perf_counter()
    done = _drift_from_pass(spec, start, stop, index)
    anchor, drift_px = done if done is not None else _register_chunk(rec, frames, start)
    timings["drift_s"] = time.perf_counter() - t0

    nth = int(p.get("every_nth", 1))
    if nth > 1:
        # every n-th *image* frame (counted among image frames when the modes are known up front)
        ordinal = (np.cumsum(rec._modes == "image") - 1)[index] if rec.modes_known else index
        keep = (ordinal % nth) == 0
    else:
        keep = np.ones(len(index), bool)
    t0 = time.perf_counter()
    drift_fix = np.zeros((len(index), 2))  # the reference's re-measured drift minus the drift pass', (x, y) px
    segmenter = get_segmenter(p.get("model"), p.get("device", "cpu"))
    if getattr(segmenter, "in_channels", 1) > 1 and keep.any():  # two-channel model: the reference frame, registered
        t1 = time.perf_counter()
        reference, fix_px = _reference_frames(rec, spec, index[keep], frames[keep], time_s[keep])
        timings["reference_s"] = time.perf_counter() - t1
        drift_fix[keep] = fix_px
        seg = segmenter.predict(frames[keep], reference=reference)
    else:
        seg = segmenter.predict(frames[keep])
    timings["segment_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    store = ResultStore(spec.results_dir)
    for j, f in enumerate(index[keep]):
        store.write_masks(int(f), seg.classes[j:j + 1], seg.instances[j:j + 1])
    timings["masks_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    objects = measure_objects(seg.classes, seg.instances, frame=index[keep], time_s=time_s[keep],
                              nm_per_px=nm, drift_nm=(drift_px + drift_fix)[keep] * nm)
    timings["measure_s"] = time.perf_counter() - t0
    conf = np.full(len(index), np.nan)
    conf[keep] = seg.confidence
    img_rows = _drift_rows(index, drift_px, anchor, start)
    img_rows["drift_fix_x_px"], img_rows["drift_fix_y_px"] = drift_fix[:, 0], drift_fix[:, 1]
    img_rows.insert(1, "analysed", keep)
    img_rows.insert(2, "confidence", conf)
    return {"objects": objects, "image_frames": img_rows, "_stage_s": timings}


def diffraction_stage(rec, spec: ChunkSpec, frames: np.ndarray, index: np.ndarray,
                      time_s: np.ndarray) -> dict[str, Any]:
    """Radial profiles, phase fractions and rings of a chunk's diffraction frames.

    Every chunk starts from a copy of the analyser prepared once for the recording, so a
    chunk's result depends only on its own frames (same tables whatever ran the chunks).
    """
    import copy

    prepared = spec.params.get("_diffraction")
    if prepared is None:
        raise CalibrationError(rec.path, "diffraction frames but no diffraction set-up; give --inv-nm-per-px Q "
                               "or --calibrate-with Au")
    t0 = time.perf_counter()
    an = copy.deepcopy(prepared)
    phases, rings = an.process(frames, frame_index=index, time_s=time_s)
    # radial profiles on the recording's common q grid (for the waterfall and per-frame plots)
    q_grid = prepared.setup.binner.r_px * prepared.setup.calibration.inv_nm_per_px
    q_here = an.setup.binner.r_px * an.setup.calibration.inv_nm_per_px
    profiles = np.stack([np.interp(q_grid, q_here, np.nan_to_num(p)) for p in an.last_profiles]).astype(np.float32)
    return {"phases": phases, "rings": rings, "profiles": profiles, "profile_frames": np.asarray(index),
            "_stage_s": {"diffraction_s": time.perf_counter() - t0}}


def first_diffraction_frames(input_path: Path, open_kwargs: dict, k: int = 16) -> np.ndarray | None:
    """The first ``k`` diffraction frames of a recording (None if it has none)."""
    from ..io import open_recording

    found = []
    with open_recording(input_path, **open_kwargs) as rec:
        if rec.modes_known and not (rec._modes == "diffraction").any():
            return None  # the metadata says every frame is an image: no scan
        for chunk in rec.iter_chunks(32):
            found.extend(chunk.frames[chunk.mode == "diffraction"])
            if len(found) >= k:
                break
    return np.stack(found[:k]) if found else None


def prepare_diffraction(input_path: Path, open_kwargs: dict, info: dict, opts: AnalyzeOptions,
                        phase_names: list[str]):
    """Centre, ellipse, calibration and unmixing design, fitted once on the first diffraction frames."""
    from ..diffraction import PatternAnalyzer

    frames = first_diffraction_frames(input_path, open_kwargs)
    if frames is None:
        return None, {}
    inv = info["inv_nm_per_px"] if math.isfinite(info["inv_nm_per_px"] or math.nan) else None
    if inv is None and not opts.calibrate_with:
        raise CalibrationError(input_path, "diffraction frames but no calibration (1/nm per pixel); give it with "
                               "--inv-nm-per-px Q or fit it with --calibrate-with Au")
    an = PatternAnalyzer(inv_nm_per_px=None if opts.calibrate_with else inv, phases=phase_names,
                         calibrate_with=opts.calibrate_with, path=str(input_path))
    setup = an.prepare(frames)
    cal = setup.calibration
    facts = {"inv_nm_per_px_used": float(cal.inv_nm_per_px)}
    if opts.calibrate_with:
        facts["calibration_fit"] = {"standard": opts.calibrate_with, "inv_nm_per_px": float(cal.inv_nm_per_px),
                                    "uncertainty_inv_nm_per_px": float(cal.uncertainty_inv_nm_per_px),
                                    "n_rings": int(cal.n_rings)}
    return an, facts


def _single_blas_thread_in_workers() -> None:
    """One BLAS thread in a Dask worker process, for good (see :func:`single_blas`)."""
    import sys

    dist = sys.modules.get("distributed")  # a Dask worker process has imported it; a local run need not
    if dist is None:
        return
    try:
        dist.get_worker()
    except ValueError:
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def single_blas():
    """A context with one BLAS thread: a multi-threaded matrix product may round differently with
    another thread count, and results must not depend on which scheduler ran the chunks."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1, user_api="blas")


def chunk_job(spec: ChunkSpec, start: int, stop: int) -> dict[str, Any]:
    """Process frames ``start:stop``: opens the recording itself (runs on any Dask worker)."""
    _single_blas_thread_in_workers()
    t_read = time.perf_counter()
    with _open(spec) as rec:
        chunk = next(rec.iter_chunks(stop - start, start, stop, align=False))
        read_s = time.perf_counter() - t_read
        out: dict[str, Any] = {}
        stage_s = {"read_s": read_s}
        rows = pd.DataFrame({"frame": chunk.index, "time_s": chunk.time_s, "mode": chunk.mode,
                             "dose_e_per_px": chunk.dose_e_per_px if chunk.dose_e_per_px is not None else np.nan})
        out["frames"] = rows
        img = chunk.mode == "image"
        if img.any():
            r = image_stage(rec, spec, chunk.frames[img], chunk.index[img], chunk.time_s[img], start, stop)
            stage_s.update(r.pop("_stage_s"))
            out.update(r)
        dif = chunk.mode == "diffraction"
        if dif.any():
            r = diffraction_stage(rec, spec, chunk.frames[dif], chunk.index[dif], chunk.time_s[dif])
            stage_s.update(r.pop("_stage_s"))
            out.update(r)
    out["_stage_s"] = stage_s
    return out


# ----------------------------------------------------------------------------------------------
# once per recording: chaining, linking, kinetics, timeline


def _drift_fixes(image_frames: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Each image frame's re-measured drift correction (``drift_fix_x_px``, ``drift_fix_y_px``) relative
    to the first image frame's (so frames.csv's drift stays 0 there), and that first one, (x, y) px.

    Frames skipped by ``--every-nth`` were not re-measured: they take the correction interpolated between
    the analysed frames around them (linearly in frame number; the nearest one's beyond the ends), so the
    drift of analysed and skipped frames does not alternate between two estimates.
    """
    t = image_frames.sort_values("frame")
    f = t["frame"].to_numpy(float)
    # an analysed frame without a correction (a chunk written before there were any) was measured with 0
    fix = np.nan_to_num(t[["drift_fix_x_px", "drift_fix_y_px"]].to_numpy(float))
    known = t["analysed"].fillna(True).to_numpy(bool) if "analysed" in t else np.ones(len(t), bool)
    if known.any() and not known.all():
        for k in range(2):
            fix[~known, k] = np.interp(f[~known], f[known], fix[known, k])
    fix0 = fix[0].copy() if len(fix) else np.zeros(2)
    fix = fix - fix0
    return pd.DataFrame({"frame": t["frame"].to_numpy(), "drift_fix_x_px": fix[:, 0], "drift_fix_y_px": fix[:, 1]}), fix0


def chain_drift(image_frames: pd.DataFrame, *, known: np.ndarray | None = None, last=None) -> pd.DataFrame:
    """Absolute drift (px) of every image frame from each chunk's drift relative to its anchor.

    A chunk registers its image frames against its anchor (the last image frame before it);
    the anchor's absolute drift, known from the previous chunk, is added. A chunk without an
    anchor (the first, or one after a long diffraction burst) starts from the last known drift.
    ``known`` (a dense (n, 2) array, NaN where unknown) and ``last`` continue an earlier chaining.
    """
    cols = ["frame", "drift_x_px", "drift_y_px"]
    if image_frames.empty:
        return pd.DataFrame(columns=cols)
    df = image_frames.sort_values("frame")
    absolute: dict[int, np.ndarray] = {}
    if known is not None:
        def lookup(a: int):
            if a in absolute:
                return absolute[a]
            if 0 <= a < len(known) and np.isfinite(known[a]).all():
                return np.asarray(known[a], float)
            return None
    else:
        def lookup(a: int):
            return absolute.get(a)
    last = np.zeros(2) if last is None else np.asarray(last, float)
    rows = []
    for _, grp in df.groupby("chunk_start", sort=True):
        anchor = int(grp["anchor"].iloc[0])
        base = lookup(anchor)
        rel = grp[["drift_rel_x_px", "drift_rel_y_px"]].to_numpy(float)
        if base is None:
            base = last
            rel = rel - rel[0]  # relative to the chunk's own first image frame
        for f, r in zip(grp["frame"].to_numpy(), rel):
            absolute[int(f)] = base + r
            rows.append((int(f), *(base + r)))
        last = absolute[int(grp["frame"].iloc[-1])]
    return pd.DataFrame(rows, columns=cols)


def finalize(store: ResultStore, ranges, rec_info: dict, opts: AnalyzeOptions, phase_names: list[str]) -> dict:
    """Tables from the chunks' outputs: drift, linking, kinetics, phases, context; then plots."""
    from ..kinetics import analyze_kinetics
    from ..track import link_objects

    folder = store.folder
    nm = rec_info["nm_per_px"]
    timings = {}
    frames = gather(folder, ranges, "frames")
    img_frames = gather(folder, ranges, "image_frames")
    objects = gather(folder, ranges, "objects")

    t0 = time.perf_counter()
    drift = chain_drift(img_frames)
    frames = frames.merge(drift, on="frame", how="left")
    if not img_frames.empty:
        frames = frames.merge(img_frames[["frame", "analysed", "confidence"]], on="frame", how="left")
    fix0 = np.zeros(2)  # the first image frame's re-measured drift correction, (x, y) px
    if "drift_fix_x_px" in img_frames:  # the segmentation's re-measured drift (objects were measured with it)
        fixes, fix0 = _drift_fixes(img_frames)
        fix = frames[["frame"]].merge(fixes, on="frame", how="left")
        for a in "xy":
            frames[f"drift_{a}_px"] = frames[f"drift_{a}_px"] + fix[f"drift_fix_{a}_px"].fillna(0.0).to_numpy()
    frames["drift_x_nm"] = frames.get("drift_x_px", np.nan) * nm if nm else np.nan
    frames["drift_y_nm"] = frames.get("drift_y_px", np.nan) * nm if nm else np.nan
    frames.loc[frames["mode"] != "image", ["drift_x_nm", "drift_y_nm"]] = np.nan

    if not objects.empty:
        # objects were drift-corrected relative to their chunk's anchor: add the anchor's offset
        rel = img_frames.set_index("frame")[["drift_rel_x_px", "drift_rel_y_px"]]
        absd = drift.set_index("frame")[["drift_x_px", "drift_y_px"]]
        # each chunk's base drift, less the first frame's correction (frames.csv's drift is 0 there)
        offset = (absd.to_numpy() - rel.loc[absd.index].to_numpy() - fix0) * nm
        off = pd.DataFrame(offset, index=absd.index, columns=["ox", "oy"])
        o = off.loc[objects["frame"].to_numpy()].to_numpy()
        for c in POSITION_COLUMNS:
            if c in objects:
                objects[c] = objects[c] - (o[:, 0] if "x_nm" in c else o[:, 1])
        linked = link_objects(objects)
        tracks, fronts = analyze_kinetics(linked, nm_per_px=nm, contact_nm=opts.contact_nm or None)
    else:
        linked = objects
        tracks, fronts = schema.empty("tracks"), schema.empty("fronts")
    timings["link_kinetics_s"] = time.perf_counter() - t0

    counts = linked.groupby("frame").size() if not linked.empty else pd.Series(dtype=int)
    frames["n_objects"] = frames["frame"].map(counts).fillna(0).astype(int)
    frames.loc[frames["mode"] != "image", "n_objects"] = 0
    if "analysed" in frames:  # image frames skipped by --every-nth: not measured, so no count
        frames["n_objects"] = frames["n_objects"].astype(float)
        frames.loc[(frames["mode"] == "image") & (frames["analysed"] == False), "n_objects"] = np.nan  # noqa: E712
    if "dose_e_per_px" in frames and frames["dose_e_per_px"].notna().any():
        frames = pd.concat([frames, cumulative_dose(frames["dose_e_per_px"].to_numpy(), nm).drop(
            columns="dose_e_per_px")], axis=1)
    if opts.log:
        frames = pd.concat([frames, log_at(read_log(opts.log, opts.log_offset_s), frames["time_s"].to_numpy())],
                           axis=1)
    frames = frames.drop(columns=[c for c in ("drift_x_px", "drift_y_px") if c in frames])

    store.write_table("frames", frames)
    # extra columns (instance label in masks.zarr, kind, wire axis ends) follow the contract's:
    # the GUI and the corrections replay use them
    store.write_table("objects", linked if not linked.empty else schema.empty("objects"))
    store.write_table("tracks", tracks)
    store.write_table("fronts", fronts)

    phases = gather(folder, ranges, "phases")
    rings = gather(folder, ranges, "rings")
    _write_profiles(store, ranges, phases)
    store.write_table("phases", phases if not phases.empty else schema.empty("phases", phase_names), phase_names)
    store.write_table("rings", rings if not rings.empty else schema.empty("rings"))
    return {"timings": timings, "n_tracks": len(tracks),
            "n_image_frames": int((frames["mode"] == "image").sum()),
            "n_diffraction_frames": int((frames["mode"] == "diffraction").sum())}


def _write_profiles(store: ResultStore, ranges, phases: pd.DataFrame) -> None:
    """``profiles.npz``: every diffraction frame's radial profile on one q grid (1/nm)."""
    import io as _io

    from .chunks import load_chunk

    prof, idx = [], []
    for s_, e_ in ranges:
        out = load_chunk(store.folder, s_, e_)
        if "profiles" in out:
            prof.append(out["profiles"])
            idx.append(out["profile_frames"])
    q = store.read_summary().get("profile_q_inv_nm")
    if not prof or not q:
        return
    buf = _io.BytesIO()
    np.savez_compressed(buf, frame=np.concatenate(idx), profiles=np.concatenate(prof), q_inv_nm=np.asarray(q))
    from ..results import atomic_write_bytes

    atomic_write_bytes(store.folder / "profiles.npz", buf.getvalue())


# ----------------------------------------------------------------------------------------------


def input_fingerprint(path: Path) -> dict:
    """Size (bytes) and modification time (ns) of an input file or of a folder's newest file."""
    p = Path(path)
    files = [f for f in p.rglob("*") if f.is_file()] if p.is_dir() else [p]
    stats = [f.stat() for f in files]
    return {"input_bytes": int(sum(st.st_size for st in stats)),
            "input_mtime_ns": int(max((st.st_mtime_ns for st in stats), default=0))}


def _hash_in_background(path: Path):
    """A future of the input's sha256, hashed in a thread beside the analysis (hashlib releases the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    pool = ThreadPoolExecutor(1, thread_name_prefix="tem-operando-sha256")
    fut = pool.submit(sha256_of, path)
    pool.shutdown(wait=False)
    return fut


def _check_resume(store: ResultStore, input_path: Path, params: dict, model_sha: str) -> None:
    old = store.read_summary()
    if not old:
        return
    if old.get("model_sha256", model_sha) != model_sha:
        raise TemOperandoError(f"{store.folder}: was started with another model file ({old.get('model')}, sha256 "
                               f"{str(old.get('model_sha256'))[:12]}…); use a new --out or run without --resume")
    # the sha256 when the interrupted run got that far, else the size and time it recorded at its start
    same = (old["input_sha256"] == sha256_of(input_path)) if old.get("input_sha256") else (
        {k: old.get(k) for k in ("input_bytes", "input_mtime_ns")} == input_fingerprint(input_path))
    if not same:
        raise TemOperandoError(f"{store.folder}: holds results of another input "
                               f"({old.get('input')}); use a new --out or run without --resume")
    before = dict(old.get("parameters") or {})
    params = dict(params)
    if "reference_frames" not in before:  # started before the averaged reference: it goes on with its one frame
        params.pop("reference_frames", None)
    if before != params:
        changed = sorted(k for k in set(params) | set(before) if params.get(k) != before.get(k))
        raise TemOperandoError(f"{store.folder}: was started with other parameters ({', '.join(changed)}); "
                               "use a new --out or the same options")


def _reset(folder: Path) -> None:
    """Remove a previous run's outputs (not the corrections journal)."""
    clear_work(folder)
    shutil.rmtree(folder / MASKS, ignore_errors=True)
    for name in ("summary.json", "report.html", "profiles.npz", *[f"{t}.csv" for t in schema.TABLES]):
        (folder / name).unlink(missing_ok=True)
    shutil.rmtree(folder / "plots", ignore_errors=True)


@dataclass
class Run:
    """A prepared run: the store, the recording's facts and the picklable chunk spec."""

    store: ResultStore
    info: dict
    spec: ChunkSpec
    opts: AnalyzeOptions
    phase_names: list[str]
    t_start: float
    #: the input's sha256 being computed beside the analysis (None: known at the start)
    input_hash: Any = None


def recording_info(input_path: Path, open_kwargs: dict) -> dict:
    """Frames, shape and calibration of a recording (validates it: bad input fails here)."""
    from ..io import open_recording

    with open_recording(input_path, **open_kwargs) as rec:
        if rec.time_s is None:
            raise CalibrationError(input_path, "no frame times in the file; give the frame rate with --fps F")
        return {"frames": len(rec), "frame_shape": list(rec.frame_shape), "fps": rec.fps,
                "nm_per_px": rec.nm_per_px, "inv_nm_per_px": rec.inv_nm_per_px, "format": rec.format,
                "modes": rec.info()["modes"]}


def prepare(input_path: str | os.PathLike, out: str | os.PathLike, opts: AnalyzeOptions, *, resume: bool = False,
            input_sha256: str | None = None, max_frames: int | None = None, growing: bool = False) -> Run:
    """Validate the input and options, set up (or reopen for ``resume``) the results folder.

    ``growing``: the recording is still being written (``--follow``): image frames may come
    later even if none are there yet, so the model is checked (and its reference pass set up) now.
    """
    t_start = time.perf_counter()
    from ..segment.infer import resolve_model

    opts = replace(opts)  # the run may change its copy (--follow's every-nth), never the caller's
    input_path = Path(input_path)
    folder = Path(out)
    given = {"nm_per_px": opts.nm_per_px, "fps": opts.fps, "inv_nm_per_px": opts.inv_nm_per_px, "mode": opts.mode}
    open_kwargs = {k: v for k, v in given.items() if v is not None}
    info = recording_info(input_path, open_kwargs)
    from ..diffraction.phases import get_phase, list_phases

    phase_names = [get_phase(p).name for p in opts.phases] if opts.phases else list_phases()
    if opts.log:
        read_log(opts.log, opts.log_offset_s)  # a bad log fails now, not after the whole run
    check_scheduler(opts.scheduler)  # a wrong or dead scheduler address too
    # the model's file (a path, or the name of a shipped or user model): workers, perhaps on other
    # machines, get the file, not a name to look up in their own data folder
    model_file = opts.model
    if opts.model not in (None, "baseline"):
        model_file = str(resolve_model(opts.model).absolute())
        if not os.path.isfile(model_file):
            raise TemOperandoError(f"{opts.model}: no such model file (nor a shipped or user model of that name; "
                                   "see `tem-operando models list`)")
    if info["modes"].get("image") and not (info["nm_per_px"] and math.isfinite(info["nm_per_px"])):
        raise CalibrationError(input_path, "image frames but no spatial calibration (nm per pixel); give it with "
                               "--nm-per-px X")
    # every check that can fail runs before a previous run's results are touched
    model_name, model_sha = model_identity(model_file)
    two_channel = False
    if info["modes"].get("image") or info["modes"].get("unknown") or (growing and model_file != "baseline"):
        seg = get_segmenter(model_file, opts.device)  # a model file that is not ours fails here
        two_channel = getattr(seg, "in_channels", 1) > 1  # it wants the first frame, registered: a drift pass
    analyzer, dfacts = prepare_diffraction(input_path, open_kwargs, info, opts, phase_names)
    folder.mkdir(parents=True, exist_ok=True)
    store = ResultStore(folder)
    params = opts.analysis_params()
    if resume:
        _check_resume(store, input_path, params, model_sha)
        started = store.read_summary().get("start_time")
    else:
        _reset(folder)
        started = None
    # what writers killed mid-save left (the caller holds the folder's lock)
    remove_stale_temporaries(folder, subfolders=(".work", "corrections", "plots"))
    # hashing a 20 GB recording takes a while: it runs beside the analysis and lands in the summary
    # at the end (a resumed run checks the size and time recorded here if it had not finished)
    input_hash = _hash_in_background(input_path) if input_sha256 is None else None
    from ..kinetics.fronts import SYSTEMATIC_FRONT_PX
    from ..kinetics.swelling import SYSTEMATIC_WIDTH_PX

    store.start(input=str(input_path.resolve()), input_sha256=input_sha256, model=model_name,
                model_sha256=model_sha, phases=phase_names, software_version=__version__, parameters=params,
                # the CIs' systematic terms (px) the kinetics used: corrections replay with the same ones
                systematic_width_px=SYSTEMATIC_WIDTH_PX, systematic_front_px=SYSTEMATIC_FRONT_PX,
                **input_fingerprint(input_path), **{k: v for k, v in info.items() if k != "modes"}, **dfacts)
    if started:
        store.update_summary(start_time=started, resumed=True)
    if analyzer is not None:
        q_grid = analyzer.setup.binner.r_px * analyzer.setup.calibration.inv_nm_per_px
        store.update_summary(profile_q_inv_nm=[float(v) for v in q_grid])
    store.open_masks(max_frames or info["frames"], tuple(info["frame_shape"]))
    spec = ChunkSpec(input_path=str(input_path.resolve()), results_dir=str(folder.resolve()), open_kwargs=open_kwargs,
                     params={**params, "model": model_file, "phases": phase_names, "_diffraction": analyzer,
                             "_reference": two_channel})
    return Run(store=store, info=info, spec=spec, opts=opts, phase_names=phase_names, t_start=t_start,
               input_hash=input_hash)


def run_passes(run: Run, ranges: list[tuple[int, int]], *, all_ranges: list[tuple[int, int]] | None = None,
               on_done: Callable[[dict], None] | None = None,
               on_drift_done: Callable[[dict], None] | None = None) -> list[dict]:
    """Run the chunk jobs of ``ranges`` (not yet done) with the run's scheduler.

    A two-channel model first gets a drift pass: every chunk of ``all_ranges`` (default
    ``ranges``: the recording so far) registered and chained, so each segmentation chunk can move the
    recording's first image frame onto its frames by the pipeline's own drift — frame-to-frame
    registration that stays right while the sample changes, where registering a late frame
    directly against the first one does not. ``on_drift_done`` and ``on_done`` are called with each
    drift-pass and each analysis chunk's record as it finishes.
    """
    o, spec = run.opts, run.spec
    records: list[dict] = []
    with single_blas():
        if spec.params.get("_reference"):
            every = list(all_ranges if all_ranges is not None else ranges)
            records += run_chunks(drift_job, replace(spec, kind="drift"), every, scheduler=o.scheduler,
                                  workers=o.workers, on_done=on_drift_done)
            def read_frames(index: np.ndarray) -> np.ndarray:
                with _open(spec) as rec:
                    return np.stack([rec.frame(int(i)) for i in index])

            def read_times(index: np.ndarray) -> np.ndarray:
                with _open(spec) as rec:
                    return rec.times(0, int(np.max(index)) + 1)[np.asarray(index, int)]

            state = write_reference_drift(run.store.folder, every, read_frames, read_times,
                                          reference_frames=o.reference_frames)
            summary = run.store.read_summary()
            if state["frame"] is not None and (summary.get("reference_frame") != state["frame"]
                                               or summary.get("reference_run") != state.get("run")):
                run.store.update_summary(reference_frame=state["frame"], reference_run=state.get("run"))
        records += run_chunks(chunk_job, spec, ranges, scheduler=o.scheduler, workers=o.workers, on_done=on_done)
    return records


def complete(run: Run, ranges: list[tuple[int, int]], records: list[dict], *, report: bool = True,
             extra: dict | None = None) -> dict:
    """Finalize the tables, write plots and the report, and mark the run complete."""
    folder = run.store.folder
    stage_s: dict[str, float] = {}
    for r in records:
        for k, v in (r.get("stage_s") or {}).items():
            stage_s[k] = stage_s.get(k, 0.0) + v
    fin = finalize(run.store, ranges, run.info, run.opts, run.phase_names)
    elapsed = time.perf_counter() - run.t_start
    n = ranges[-1][1] if ranges else 0
    modes = gather(folder, ranges, "frames")
    if run.input_hash is not None:
        extra = {"input_sha256": run.input_hash.result(), **(extra or {})}
    summary = run.store.finish(elapsed_s=elapsed, stage_s={**stage_s, **fin["timings"]}, frames=n,
                               frames_per_s=n / max(elapsed, 1e-9), n_tracks=fin["n_tracks"],
                               n_image_frames=fin["n_image_frames"], n_diffraction_frames=fin["n_diffraction_frames"],
                               every_nth=run.opts.every_nth,
                               modes=sorted(set(modes["mode"])) if not modes.empty else [], **(extra or {}))
    if any(True for _ in run.store.corrections()):
        # the user's corrections win over the new predictions (a replay needs the finished run)
        from ..results.corrections import apply_corrections

        t0 = time.perf_counter()
        replay = apply_corrections(run.store)
        summary = run.store.update_summary(n_tracks=len(replay.tables["tracks"]), stage_s={
            **summary.get("stage_s", {}), "corrections_s": time.perf_counter() - t0})
    if report:  # after finish(): the report shows the complete summary
        t0 = time.perf_counter()
        from ..report import build_report

        build_report(folder)
        summary = run.store.update_summary(report_s=time.perf_counter() - t0)
    return summary


def analyze(input_path: str | os.PathLike, out: str | os.PathLike, opts: AnalyzeOptions | None = None, *,
            resume: bool = False, progress: Callable[[int, int], None] | None = None,
            report: bool = True, drift_progress: Callable[[int, int], None] | None = None) -> dict:
    """Run the whole pipeline on one recording and write its results folder.

    Parameters
    ----------
    input_path : path-like
        A recording (any format :func:`~tem_operando.io.open_recording` reads).
    out : path-like
        The results folder.
    opts : AnalyzeOptions
    resume : bool
        Continue an interrupted run in ``out`` (same input and parameters) from its last
        finished chunk.
    progress : callable, optional
        ``progress(frames_done, frames_total)`` after each chunk.
    report : bool
        Write plots and ``report.html``.
    drift_progress : callable, optional
        ``drift_progress(frames_done, frames_total)`` after each chunk of the drift pass (two-channel
        models register the whole recording first: with segnet-s v12 about a sixth of the time at 256 × 256).

    Returns
    -------
    dict
        The final ``summary.json``.

    Examples
    --------
    >>> from tem_operando.pipeline import analyze, AnalyzeOptions          # doctest: +SKIP
    >>> summary = analyze("session.hspy", "out/session", AnalyzeOptions(model="baseline"))  # doctest: +SKIP
    """
    opts = opts or AnalyzeOptions()
    with exclusive_folder(out, "an analysis"):
        return _analyze(input_path, out, opts, resume=resume, progress=progress, report=report,
                        drift_progress=drift_progress)


def _analyze(input_path, out, opts: AnalyzeOptions, *, resume: bool, progress, report: bool,
             drift_progress=None) -> dict:
    run = prepare(input_path, out, opts, resume=resume)
    folder = run.store.folder
    n = run.info["frames"]
    ranges = chunk_ranges(n, opts.chunk_frames)
    done = [sum(e - s for s, e in ranges if is_done(folder, s, e))]

    def on_done(rec_: dict) -> None:
        done[0] += rec_["stop"] - rec_["start"]
        if progress:
            progress(done[0], n)

    registered = [sum(e - s for s, e in ranges if is_done(folder, s, e, "drift"))]

    def on_drift_done(rec_: dict) -> None:
        registered[0] += rec_["stop"] - rec_["start"]
        if drift_progress:
            drift_progress(registered[0], n)

    if progress:
        progress(done[0], n)
    t0 = time.perf_counter()
    records = run_passes(run, ranges, on_done=on_done, on_drift_done=on_drift_done)
    return complete(run, ranges, records, report=report, extra={"chunks_wall_s": time.perf_counter() - t0})
