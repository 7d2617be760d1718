"""User corrections: journal entries, their replay onto masks and tables, and the export for training.

A correction is one line of ``corrections.jsonl`` (see :meth:`ResultStore.journal`), written and
fsync'd *before* it is applied. The tables are never edited in place: :func:`recompute` replays
every active journal entry onto the analysis's own output (the *base*, kept under
``corrections/base/``) and rewrites the tables atomically, so it is idempotent and a crash at
any point loses nothing. Undo and redo are entries too (``{"kind": "undo", "target": id}``), so
the journal stays append-only.

Kinds (``kind`` field, other fields in brackets):

=================  ===========================================================================
``paint``          brush stroke or polygon on a frame's masks [frame, cls (0 erases), points,
                   radius, polygon, label]
``delete_object``  the object under a point in one frame [frame, x, y, track_id]
``delete_track``   a spurious track, every frame [track_id]
``merge_tracks``   ``other`` becomes ``keep`` [keep, other]
``split_track``    frames ≥ ``frame`` of a track get a new id [track_id, frame, new_track_id]
``set_contact``    a wire's sodium-contact end [track_id, frame, x, y (px), x_nm, y_nm]
``exclude_frames`` leave frames out of every measurement [frames, excluded]
``relabel_phase``  a diffraction frame's phase [frame, phase, fractions]
``edit_calibration`` [nm_per_px, inv_nm_per_px, fps]
``undo``/``redo``  [target]
=================  ===========================================================================

Pixel coordinates are (x, y) = (column, row) of the frame. Masks painted by the user live in
``corrections/masks.zarr`` (only the corrected frames are meaningful, listed in
``corrections/state.json``); they are rebuilt from the predicted masks plus the strokes, so after a
re-analysis with a new model (issue 8) the user's pixels still win over the new prediction.

Examples
--------
>>> from tem_operando.results import ResultStore, corrections as corr     # doctest: +SKIP
>>> store = ResultStore("out/session")                                    # doctest: +SKIP
>>> corr.paint(store, frame=12, cls=2, points=[(40, 50), (44, 52)], radius=3)  # doctest: +SKIP
>>> corr.merge_tracks(store, keep=3, other=7)                             # doctest: +SKIP
>>> corr.recompute(store)                                                 # doctest: +SKIP
>>> corr.export_annotation_set(store, "my_set")                           # doctest: +SKIP
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from ..errors import TemOperandoError
from .store import ResultStore, atomic_write_bytes, atomic_write_json

__all__ = [
    "CORRECTIONS_DIR",
    "KINDS",
    "CorrectionError",
    "Corrector",
    "active_entries",
    "apply_corrections",
    "corrected_frames",
    "delete_object",
    "delete_track",
    "edit_calibration",
    "effective_masks",
    "erase",
    "exclude_frames",
    "export_annotation_set",
    "merge_tracks",
    "paint",
    "rasterize",
    "recompute",
    "redo",
    "relabel_phase",
    "set_contact",
    "split_track",
    "undo",
    "undo_stacks",
]

KINDS = ("paint", "delete_object", "delete_track", "merge_tracks", "split_track", "set_contact",
         "exclude_frames", "relabel_phase", "edit_calibration")
MASK_KINDS = ("paint", "delete_object")
CONTROL_KINDS = ("undo", "redo")
CORRECTIONS_DIR = "corrections"
ANNOTATION_FORMAT = "tem-operando-annotations/1"
BASE_TABLES = ("frames", "objects", "tracks", "fronts", "phases", "rings")
_EXTRA_OBJECT_COLUMNS = ("label", "kind")  # written to objects.csv beside the contract's columns


class CorrectionError(TemOperandoError, ValueError):
    """A correction that cannot apply (unknown track, frame out of range, bad class ...)."""


# ----------------------------------------------------------------------------------------------
# the journal: active entries and the undo/redo stacks


def undo_stacks(entries: Iterable[dict]) -> tuple[list[int], list[int]]:
    """(done, undone) entry ids after replaying undo/redo: ``done[-1]`` is what undo reverts,
    ``undone[-1]`` what redo restores (a new correction clears the redo stack)."""
    done: list[int] = []
    undone: list[int] = []
    for e in entries:
        k = e.get("kind")
        if k == "undo":
            t = e.get("target")
            if t in done:
                done.remove(t)
                undone.append(t)
        elif k == "redo":
            t = e.get("target")
            if t in undone:
                undone.remove(t)
                done.append(t)
        elif k in KINDS:
            done.append(e["id"])
            undone.clear()
    return done, undone


def active_entries(entries: Iterable[dict]) -> list[dict]:
    """The corrections in force, in journal order (undone ones left out, unknown kinds skipped)."""
    entries = list(entries)
    done, _ = undo_stacks(entries)
    on = set(done)
    return [e for e in entries if e.get("kind") in KINDS and e["id"] in on]


# ----------------------------------------------------------------------------------------------
# building entries (each journals first; the caller then calls recompute)


def _summary_frames(store: ResultStore) -> int:
    n = store.read_summary().get("frames")
    return int(n) if n is not None else -1


def _check_frame(store: ResultStore, frame: int) -> int:
    frame = int(frame)
    n = _summary_frames(store)
    if frame < 0 or (n >= 0 and frame >= n):
        raise CorrectionError(f"{store.folder}: frame {frame} is outside the recording (0..{n - 1})")
    return frame


def _track_ids(store: ResultStore) -> set[int]:
    """Track ids in objects.csv (only that column is parsed: the table can have 10⁵ rows)."""
    p = store.path("objects.csv")
    try:
        ids = pd.read_csv(p, usecols=["track_id"])["track_id"] if p.is_file() else pd.Series([], dtype=float)
    except (pd.errors.EmptyDataError, ValueError):  # empty file, or no track_id column yet
        ids = store.read_table("objects")["track_id"]
    return set(int(t) for t in ids.dropna().unique())


def _check_track(store: ResultStore, track_id: int) -> int:
    track_id = int(track_id)
    if track_id not in _track_ids(store):
        raise CorrectionError(f"{store.folder}: no track {track_id} in objects.csv")
    return track_id


def _new_track_base(store: ResultStore) -> int:
    """First id for tracks a new entry creates: above every id in the tables and the journal."""
    hi = max(_track_ids(store), default=0)
    for e in store.corrections():
        for k in ("new_track_id", "new_track_base"):
            if e.get(k) is not None:
                hi = max(hi, int(e[k]))
    return hi + 1


def paint(store: ResultStore, frame: int, cls: int, points: Sequence[Sequence[float]] | None = None,
          radius: float = 3.0, polygon: Sequence[Sequence[float]] | None = None,
          label: int | None = None) -> dict:
    """Journal a brush stroke (``points`` with ``radius`` px) or a ``polygon`` painting class ``cls``.

    ``cls`` is 1 (pristine) or 2 (reacted), or 0 to erase. Painted pixels join ``label`` (an
    instance label of that frame), by default the object they overlap or touch, else a new one.
    """
    frame = _check_frame(store, frame)
    cls = int(cls)
    if cls not in (0, 1, 2):
        raise CorrectionError(f"class must be 0 (erase), 1 (pristine) or 2 (reacted), not {cls}")
    if not points and not polygon:
        raise CorrectionError("a paint correction needs brush points or a polygon")
    if polygon is not None and len(polygon) < 3:
        raise CorrectionError("a polygon needs at least 3 vertices")
    if not (float(radius) > 0):
        raise CorrectionError(f"brush radius must be > 0 px, not {radius}")
    data: dict[str, Any] = {"frame": frame, "cls": cls, "radius": float(radius),
                            "new_track_base": _new_track_base(store)}
    if points:
        data["points"] = [[round(float(x), 2), round(float(y), 2)] for x, y in points]
    if polygon:
        data["polygon"] = [[round(float(x), 2), round(float(y), 2)] for x, y in polygon]
    if label is not None:
        data["label"] = int(label)
    return store.journal("paint", **data)


def erase(store: ResultStore, frame: int, points=None, radius: float = 3.0, polygon=None) -> dict:
    """Journal an eraser stroke (``paint`` with class 0)."""
    return paint(store, frame, 0, points=points, radius=radius, polygon=polygon)


def delete_object(store: ResultStore, frame: int, x: float, y: float, track_id: int | None = None) -> dict:
    """Journal the removal of the object under pixel (x, y) in one frame."""
    frame = _check_frame(store, frame)
    data = {"frame": frame, "x": float(x), "y": float(y)}
    if track_id is not None:
        data["track_id"] = int(track_id)
    return store.journal("delete_object", **data)


def delete_track(store: ResultStore, track_id: int) -> dict:
    """Journal the removal of a spurious track from every frame."""
    return store.journal("delete_track", track_id=_check_track(store, track_id))


def merge_tracks(store: ResultStore, keep: int, other: int) -> dict:
    """Journal that track ``other`` is the same object as ``keep`` (where both are seen in one
    frame, their pixels are measured as one object)."""
    keep, other = _check_track(store, keep), _check_track(store, other)
    if keep == other:
        raise CorrectionError(f"cannot merge track {keep} with itself")
    return store.journal("merge_tracks", keep=keep, other=other)


def split_track(store: ResultStore, track_id: int, frame: int) -> dict:
    """Journal that a track is a new object from ``frame`` on (those frames get a new id)."""
    track_id = _check_track(store, track_id)
    frame = _check_frame(store, frame)
    ob = store.read_table("objects")
    fr = ob.loc[ob["track_id"] == track_id, "frame"]
    if not ((fr >= frame).any() and (fr < frame).any()):
        raise CorrectionError(f"track {track_id} has no frames on both sides of frame {frame}")
    return store.journal("split_track", track_id=track_id, frame=frame, new_track_id=_new_track_base(store))


def set_contact(store: ResultStore, track_id: int, frame: int, x: float, y: float) -> dict:
    """Journal a wire's sodium-contact end: pixel (x, y) in ``frame`` (drift-corrected on replay)."""
    track_id = _check_track(store, track_id)
    frame = _check_frame(store, frame)
    x_nm, y_nm = _px_to_nm(store, frame, x, y)
    return store.journal("set_contact", track_id=track_id, frame=frame, x=float(x), y=float(y),
                         x_nm=x_nm, y_nm=y_nm)


def exclude_frames(store: ResultStore, frames: Iterable[int], excluded: bool = True) -> dict:
    """Journal frames to leave out of (``excluded=False``: put back into) every measurement."""
    fr = sorted({_check_frame(store, f) for f in frames})
    if not fr:
        raise CorrectionError("no frames given")
    return store.journal("exclude_frames", frames=fr, excluded=bool(excluded))


def relabel_phase(store: ResultStore, frame: int, phase: str, fractions: dict[str, float] | None = None) -> dict:
    """Journal a diffraction frame's phase (a library name or ``amorphous``), optionally its fractions."""
    frame = _check_frame(store, frame)
    ph = store.read_table("phases")
    if not (ph["frame"] == frame).any():
        raise CorrectionError(f"frame {frame} has no row in phases.csv (not a diffraction frame?)")
    known = {c[len("frac_"):] for c in ph.columns if c.startswith("frac_")} | {"amorphous"}
    if phase not in known:
        raise CorrectionError(f"unknown phase {phase!r}; one of {sorted(known)}")
    data: dict[str, Any] = {"frame": frame, "phase": str(phase)}
    if fractions:
        bad = set(fractions) - known
        if bad:
            raise CorrectionError(f"unknown phases in fractions: {sorted(bad)}")
        data["fractions"] = {k: float(v) for k, v in fractions.items()}
    return store.journal("relabel_phase", **data)


def edit_calibration(store: ResultStore, nm_per_px: float | None = None, inv_nm_per_px: float | None = None,
                     fps: float | None = None) -> dict:
    """Journal a corrected calibration (nm/px, 1/nm per px, frames/s); lengths and times rescale."""
    data = {}
    for k, v in (("nm_per_px", nm_per_px), ("inv_nm_per_px", inv_nm_per_px), ("fps", fps)):
        if v is None:
            continue
        if not (math.isfinite(float(v)) and float(v) > 0):
            raise CorrectionError(f"{k} must be a finite number > 0, not {v!r}")
        data[k] = float(v)
    if not data:
        raise CorrectionError("give nm_per_px, inv_nm_per_px or fps")
    return store.journal("edit_calibration", **data)


def undo(store: ResultStore) -> dict | None:
    """Journal an undo of the last correction in force (None when there is nothing to undo)."""
    done, _ = undo_stacks(store.corrections())
    return store.journal("undo", target=done[-1]) if done else None


def redo(store: ResultStore) -> dict | None:
    """Journal a redo of the last undone correction (None when there is nothing to redo)."""
    _, undone = undo_stacks(store.corrections())
    return store.journal("redo", target=undone[-1]) if undone else None


# ----------------------------------------------------------------------------------------------
# geometry


def rasterize(entry: dict, shape: tuple[int, int]) -> np.ndarray:
    """The boolean pixel mask of a paint entry's brush stroke or polygon."""
    import cv2

    canvas = np.zeros(shape, np.uint8)
    shift = 4  # sub-pixel precision of OpenCV's drawing
    sc = 1 << shift
    if entry.get("polygon"):
        pts = np.round(np.asarray(entry["polygon"], float) * sc).astype(np.int32)
        cv2.fillPoly(canvas, [pts], 1, lineType=cv2.LINE_8, shift=shift)
    if entry.get("points"):
        r = float(entry.get("radius", 3.0))
        pts = np.round(np.asarray(entry["points"], float) * sc).astype(np.int32)
        rr = max(int(round(r * sc)), 1)
        for p in pts:
            cv2.circle(canvas, (int(p[0]), int(p[1])), rr, 1, -1, lineType=cv2.LINE_8, shift=shift)
        th = max(int(round(2 * r)), 1)
        for a, b in zip(pts[:-1], pts[1:]):
            cv2.line(canvas, (int(a[0]), int(a[1])), (int(b[0]), int(b[1])), 1, th, lineType=cv2.LINE_8,
                     shift=shift)
    return canvas.astype(bool)


def _split_components(instances: np.ndarray, labels: Iterable[int]) -> None:
    """Give each extra connected piece of ``labels`` a label of its own (largest keeps it), in place."""
    from scipy import ndimage

    for lab in labels:
        if lab == 0:
            continue
        m = instances == lab
        comp, n = ndimage.label(m)
        if n <= 1:
            continue
        sizes = np.bincount(comp.ravel())[1:]
        keep = int(np.argmax(sizes)) + 1
        for c in range(1, n + 1):
            if c != keep:
                instances[comp == c] = int(instances.max()) + 1


def _apply_mask_entry(entry: dict, classes: np.ndarray, instances: np.ndarray) -> None:
    """Apply one paint / delete_object entry to a frame's masks, in place."""
    H, W = classes.shape
    if entry["kind"] == "delete_object":
        x, y = int(round(entry["x"])), int(round(entry["y"]))
        if 0 <= y < H and 0 <= x < W and instances[y, x]:
            m = instances == instances[y, x]
            instances[m] = 0
            classes[m] = 0
        return
    m = rasterize(entry, (H, W))
    if not m.any():
        return
    cls = int(entry["cls"])
    if cls == 0:
        touched = np.unique(instances[m])
        classes[m] = 0
        instances[m] = 0
        _split_components(instances, touched)
        return
    target = int(entry.get("label") or 0)
    if not target:
        under = instances[m]
        under = under[under > 0]
        if under.size:
            target = int(np.bincount(under).argmax())
        else:
            from scipy import ndimage

            ring = ndimage.binary_dilation(m, iterations=2) & ~m
            near = instances[ring]
            near = near[near > 0]
            target = int(np.bincount(near).argmax()) if near.size else int(instances.max()) + 1
    classes[m] = cls
    instances[m] = target


# ----------------------------------------------------------------------------------------------
# helpers on the base tables


def _px_to_nm(store: ResultStore, frame: int, x: float, y: float) -> tuple[float, float]:
    """Pixel (x, y) of a frame → drift-corrected nm, with the current calibration."""
    s = store.read_summary()
    nm = float(s.get("nm_per_px") or 1.0)
    for e in active_entries(store.corrections()):
        if e["kind"] == "edit_calibration" and e.get("nm_per_px"):
            nm = float(e["nm_per_px"])
    fr = store.read_table("frames")
    row = fr[fr["frame"] == frame]
    dx = float(row["drift_x_nm"].iloc[0]) if len(row) and np.isfinite(row["drift_x_nm"].iloc[0]) else 0.0
    dy = float(row["drift_y_nm"].iloc[0]) if len(row) and np.isfinite(row["drift_y_nm"].iloc[0]) else 0.0
    return float(x) * nm - dx, float(y) * nm - dy


def _run_identity(summary: dict) -> dict:
    return {k: summary.get(k) for k in ("input_sha256", "start_time", "end_time", "model_sha256")}


@dataclass
class Replay:
    """What a replay produced: the tables plus what the GUI and the export need."""

    tables: dict[str, pd.DataFrame]
    corrected: list[int]                     # frames whose masks the user changed
    excluded: list[int]
    deleted_tracks: list[int]
    merged_labels: dict[int, dict[int, int]] = field(default_factory=dict)  # frame → {label: label kept}
    deleted_labels: dict[int, list[int]] = field(default_factory=dict)      # frame → labels of deleted tracks
    nm_per_px: float = float("nan")
    inv_nm_per_px: float = float("nan")
    fps: float = float("nan")
    n_active: int = 0
    last_id: int = 0


class Corrector:
    """Replays a results folder's journal; keeps the base tables in memory between recomputes.

    The GUI holds one; :func:`recompute` makes a throw-away one. Reading the base once makes a
    recompute after one brush stroke cost one frame's measurement plus linking ids and kinetics.

    Parameters
    ----------
    store : ResultStore or path-like
    """

    def __init__(self, store: ResultStore | str | os.PathLike):
        self.store = store if isinstance(store, ResultStore) else ResultStore(store)
        self.dir = self.store.folder / CORRECTIONS_DIR
        self._base: dict[str, pd.DataFrame] | None = None
        self._base_id: dict | None = None
        self._label_track: dict[tuple[int, int], int] | None = None
        self.last: Replay | None = None

    # -- base ------------------------------------------------------------------------------
    def _base_dir(self) -> Path:
        return self.dir / "base"

    def base(self) -> dict[str, pd.DataFrame]:
        """The analysis's own tables (objects with label, kind and wire geometry), built once per run."""
        summary = self.store.read_summary()
        if summary.get("status") != "complete":
            raise TemOperandoError(f"{self.store.folder}: the analysis is not complete (status "
                                   f"{summary.get('status', 'missing')}); corrections apply to finished results")
        ident = _run_identity(summary)
        if self._base is not None and self._base_id == ident:
            return self._base
        bdir = self._base_dir()
        meta = bdir / "base.json"
        if not (meta.is_file() and json.loads(meta.read_text()).get("run") == ident):
            self._build_base(summary, ident)
        # always from the CSV snapshot, so the first replay and later ones see the same numbers
        base = {t: self._read_base(t) for t in BASE_TABLES}
        self._base, self._base_id = base, ident
        ob = base["objects"]  # a diffraction-only analysis has no objects, nor their label column
        self._label_track = ({(int(f), int(lab)): int(t) for f, lab, t in
                              ob[["frame", "label", "track_id"]].itertuples(index=False)}
                             if {"frame", "label", "track_id"} <= set(ob.columns) else {})
        return base

    def _read_base(self, table: str) -> pd.DataFrame:
        p = self._base_dir() / f"{table}.csv"
        text = ("mode", "best_phase", "phase", "hkl", "kind", "model", "model_sha256", "corrections")
        try:
            df = pd.read_csv(p, dtype={c: str for c in text})
        except pd.errors.EmptyDataError:
            return schema.empty(table)
        for c in text:
            if c in df:
                df[c] = df[c].astype(object).fillna("").astype(str)
        return df

    def _build_base(self, summary: dict, ident: dict) -> dict[str, pd.DataFrame]:
        """Snapshot the run's tables; give objects their instance label and wire geometry."""
        from ..track import measure_objects

        if self.dir.exists():  # a new run: the cached masks belong to the old one
            shutil.rmtree(self.dir / "masks.zarr", ignore_errors=True)
            (self.dir / "state.json").unlink(missing_ok=True)
        bdir = self._base_dir()
        bdir.mkdir(parents=True, exist_ok=True)
        base = {t: self.store.read_table(t) for t in BASE_TABLES}
        ob = base["objects"]
        fr = base["frames"]
        if not ob.empty and not {"label", "end_a_x_nm"} <= set(ob.columns):
            nm = float(summary.get("nm_per_px") or 1.0)
            frames = np.sort(ob["frame"].unique())
            fi = fr.set_index("frame")
            parts = []
            step = 64
            for i in range(0, len(frames), step):
                fs = frames[i:i + step]
                classes, instances = self._read_pred(fs)
                d = fi.loc[fs, ["drift_x_nm", "drift_y_nm"]].to_numpy(float)
                parts.append(measure_objects(classes, instances, frame=fs, time_s=fi.loc[fs, "time_s"].to_numpy(float),
                                             nm_per_px=nm, drift_nm=np.nan_to_num(d)))
            meas = pd.concat(parts, ignore_index=True)
            ob = _attach_measurements(ob, meas)
        base["objects"] = ob
        for t, df in base.items():
            atomic_write_bytes(bdir / f"{t}.csv", df.to_csv(index=False, float_format="%.10g").encode())
        atomic_write_json(bdir / "base.json", {"run": ident, "built": _now()})
        return base

    def _read_pred(self, frames: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        import zarr

        g = zarr.open_group(str(self.store.path("masks.zarr")), mode="r")
        idx = np.asarray(frames, int)
        if idx.size and np.all(np.diff(idx) == 1):
            return np.asarray(g["classes"][idx[0]:idx[-1] + 1]), np.asarray(g["instances"][idx[0]:idx[-1] + 1])
        return (np.stack([np.asarray(g["classes"][int(i)]) for i in idx]),
                np.stack([np.asarray(g["instances"][int(i)]) for i in idx]))

    # -- corrected masks -------------------------------------------------------------------
    def _state(self) -> dict:
        p = self.dir / "state.json"
        return json.loads(p.read_text()) if p.is_file() else {"frames": {}}

    def _cmasks(self, mode: str = "a"):
        import zarr

        summary = self.store.read_summary()
        g = zarr.open_group(str(self.dir / "masks.zarr"), mode=mode)
        if mode != "r":
            shape = (int(summary["frames"]),) + tuple(int(s) for s in summary["frame_shape"])
            for name, dtype in (("classes", "u1"), ("instances", "u4")):
                if name not in g:
                    g.create_dataset(name, shape=shape, chunks=(1,) + shape[1:], dtype=dtype, fill_value=0)
        return g

    def _update_masks(self, mask_entries: dict[int, list[dict]]) -> None:
        """Rebuild the corrected masks of frames whose strokes changed (crash-safe order)."""
        state = self._state()
        want = {str(f): [e["id"] for e in es] for f, es in mask_entries.items()}
        have = state.get("frames", {})
        stale = [f for f, ids in want.items() if have.get(f) != ids]
        gone = [f for f in have if f not in want]
        if not stale and not gone:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        # first forget the frames about to change, so a crash mid-write never leaves a stale signature
        atomic_write_json(self.dir / "state.json",
                          {"frames": {f: ids for f, ids in have.items() if f in want and f not in stale}})
        if stale:
            g = self._cmasks("a")
            for f in stale:
                c, i = self._read_pred([int(f)])
                c, i = c[0].copy(), i[0].copy()
                for e in mask_entries[int(f)]:
                    _apply_mask_entry(e, c, i)
                g["classes"][int(f)] = c
                g["instances"][int(f)] = i
        atomic_write_json(self.dir / "state.json", {"frames": want})

    def masks(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """The effective (corrected if the user changed them, else predicted) masks of a frame."""
        if str(int(frame)) in self._state().get("frames", {}):
            g = self._cmasks("r")
            return np.asarray(g["classes"][int(frame)]), np.asarray(g["instances"][int(frame)])
        c, i = self._read_pred([int(frame)])
        return c[0], i[0]

    # -- replay ----------------------------------------------------------------------------
    def recompute(self, frames: Iterable[int] | None = None, write: bool = True) -> Replay:
        """Replay the journal onto the base and (``write``) rewrite the tables atomically.

        ``frames`` is a hint (frames whose masks just changed); the result does not depend on it:
        every frame whose strokes differ from the cached corrected masks is rebuilt anyway.
        """
        from ..kinetics import analyze_kinetics
        from ..track import measure_objects

        base = self.base()
        summary = self.store.read_summary()
        entries = list(self.store.corrections())
        active = active_entries(entries)

        nm0 = float(summary.get("nm_per_px") or 1.0)
        inv0 = float(summary.get("inv_nm_per_px") or float("nan"))
        fps0 = float(summary.get("fps") or float("nan"))
        nm, inv, fps = nm0, inv0, fps0
        nm_known = summary.get("nm_per_px") is not None  # else nm0 = 1 is only the lengths' scale
        for e in active:
            if e["kind"] == "edit_calibration":
                nm_known = nm_known or e.get("nm_per_px") is not None
                nm = e.get("nm_per_px", nm)
                inv = e.get("inv_nm_per_px", inv)
                fps = e.get("fps", fps)
        s_len = nm / nm0
        s_t = fps0 / fps if (math.isfinite(fps0) and math.isfinite(fps)) else 1.0

        # 1. masks
        mask_entries: dict[int, list[dict]] = {}
        for e in active:
            if e["kind"] in MASK_KINDS:
                mask_entries.setdefault(int(e["frame"]), []).append(e)
        self._update_masks(mask_entries)
        corrected = sorted(mask_entries)

        # 2. frames table, calibration
        fr = base["frames"].copy()
        fr["time_s"] = fr["time_s"] * s_t
        for c in ("drift_x_nm", "drift_y_nm"):
            fr[c] = fr[c] * s_len
        fi = fr.set_index("frame")

        # 3. objects: base rows, scaled; corrected frames re-measured
        ob = base["objects"].copy()
        ob["time_s"] = ob["time_s"] * s_t
        _scale_lengths(ob, s_len)
        ob = ob[~ob["frame"].isin(corrected)].copy()
        # provenance: the journal ids behind each object row, and behind tracks that lost a frame's object
        calib_ids = frozenset(e["id"] for e in active if e["kind"] == "edit_calibration")
        ob["_corr"] = [calib_ids] * len(ob)
        lost: dict[int, set[int]] = {}
        new_parts = []
        next_id = [max([int(base["objects"]["track_id"].max()) if not base["objects"].empty else 0]
                       + [int(e.get("new_track_base") or 0) for e in entries]
                       + [int(e.get("new_track_id") or 0) for e in entries])]
        for f in corrected:
            c, i = self.masks(f)
            d = fi.loc[[f], ["drift_x_nm", "drift_y_nm"]].to_numpy(float) if f in fi.index else np.zeros((1, 2))
            t = fi.loc[[f], "time_s"].to_numpy(float) if f in fi.index else np.array([np.nan])
            m = measure_objects(c[None], i[None], frame=[f], time_s=t, nm_per_px=nm, drift_nm=np.nan_to_num(d))
            if m.empty:
                continue
            m["track_id"] = self._assign_ids(f, i, m, base["objects"], mask_entries[f], s_len, next_id)
            m["_corr"] = self._touching(f, i, m, mask_entries[f], calib_ids, lost)
            new_parts.append(m)
        if new_parts:
            ob = pd.concat([ob] + new_parts, ignore_index=True)

        # 4. track operations, in journal order
        deleted: list[int] = []
        merged: dict[int, dict[int, int]] = {}
        deleted_labels: dict[int, list[int]] = {}
        contacts = {int(k): tuple(v) for k, v in (summary.get("parameters", {}).get("contact_nm") or {}).items()}
        excluded: set[int] = set()
        relabels: list[dict] = []
        def mark(sel, eid: int) -> None:
            ob.loc[sel, "_corr"] = ob.loc[sel, "_corr"].map(lambda ids: ids | {eid})

        for e in active:
            k = e["kind"]
            if k == "merge_tracks":
                keep, other = int(e["keep"]), int(e["other"])
                ob = self._merge(ob, keep, other, nm, fi, merged)
                mark(ob["track_id"] == keep, e["id"])
                lost.setdefault(keep, set()).update(lost.pop(other, set()) | {e["id"]})
            elif k == "split_track":
                sel = (ob["track_id"] == int(e["track_id"])) & (ob["frame"] >= int(e["frame"]))
                nid = int(e["new_track_id"])
                if nid in set(ob["track_id"]):
                    nid = next_id[0] = next_id[0] + 1
                mark(ob["track_id"] == int(e["track_id"]), e["id"])
                ob.loc[sel, "track_id"] = nid
                lost[nid] = set(lost.get(int(e["track_id"]), ()))
            elif k == "delete_track":
                gone = ob[ob["track_id"] == int(e["track_id"])]
                for f, lab in gone[["frame", "label"]].itertuples(index=False):
                    deleted_labels.setdefault(int(f), []).append(int(lab))
                ob = ob[ob["track_id"] != int(e["track_id"])]
                deleted.append(int(e["track_id"]))
            elif k == "set_contact":
                f = int(e["frame"])
                dx, dy = (fi.loc[f, ["drift_x_nm", "drift_y_nm"]].to_numpy(float) if f in fi.index else (0.0, 0.0))
                contacts[int(e["track_id"])] = (float(e["x"]) * nm - np.nan_to_num(dx), float(e["y"]) * nm - np.nan_to_num(dy))
                mark(ob["track_id"] == int(e["track_id"]), e["id"])
            elif k == "exclude_frames":
                (excluded.update if e.get("excluded", True) else excluded.difference_update)(int(f) for f in e["frames"])
                hit = set(ob.loc[ob["frame"].isin([int(f) for f in e["frames"]]), "track_id"])
                mark(ob["track_id"].isin(hit), e["id"])
            elif k == "relabel_phase":
                relabels.append(e)
        ob = ob[~ob["frame"].isin(excluded)]
        ob = ob.sort_values(["frame", "track_id"], kind="stable").reset_index(drop=True)
        ob["track_id"] = ob["track_id"].astype(np.int64)
        if "kind" in ob and not ob.empty:
            wire = (ob["kind"].to_numpy() == "wire").astype(float)
            share = ob.assign(_w=wire).groupby("track_id")["_w"].transform("mean").to_numpy()
            ob["kind"] = np.where(share > 0.5, "wire", "particle").astype(object)

        # 5. kinetics
        row_corr = ob.pop("_corr")
        if not ob.empty:
            # the CIs' systematic terms the analysis recorded (folders analysed before they were: today's)
            systematic = {k: float(summary[k]) for k in ("systematic_width_px", "systematic_front_px")
                          if isinstance(summary.get(k), (int, float))}
            tracks, fronts = analyze_kinetics(ob, nm_per_px=nm, contact_nm=contacts or None, **systematic)
        else:
            tracks, fronts = schema.empty("tracks"), schema.empty("fronts")
        per_track: dict[int, set[int]] = {}
        for tid, ids in zip(ob["track_id"].to_numpy(), row_corr.to_numpy()):
            per_track.setdefault(int(tid), set()).update(ids)
        tracks = tracks.copy()
        tracks["corrections"] = [schema.join_ids(per_track.get(int(t), set()) | lost.get(int(t), set()))
                                 for t in tracks["track_id"]]

        # 6. frames, phases, rings
        counts = ob.groupby("frame").size()
        fr["n_objects"] = fr["frame"].map(counts).fillna(0).astype(np.int64)
        fr.loc[fr["mode"] != "image", "n_objects"] = 0
        fr["excluded"] = fr["frame"].isin(excluded)
        fr["corrected"] = fr["frame"].isin(corrected)
        ph = base["phases"].copy()
        phase_names = [c[len("frac_"):] for c in ph.columns if c.startswith("frac_")]
        if not ph.empty:
            ph["time_s"] = ph["time_s"] * s_t
            ph["corrected"] = False
            ph_ids = {int(f): set(calib_ids) for f in ph["frame"]}
            for e in relabels:
                ph_ids.setdefault(int(e["frame"]), set(calib_ids)).add(e["id"])
                sel = ph["frame"] == int(e["frame"])
                ph.loc[sel, "best_phase"] = e["phase"]
                ph.loc[sel, "confidence"] = 1.0
                ph.loc[sel, "corrected"] = True
                for name, v in (e.get("fractions") or {}).items():
                    col = "amorphous_fraction" if name == "amorphous" else schema.phase_column(name)
                    if col in ph:
                        ph.loc[sel, col] = float(v)
            for e in active:
                if e["kind"] == "exclude_frames":  # a frame put back in
                    for f in e["frames"]:
                        if int(f) in ph_ids:
                            ph_ids[int(f)].add(e["id"])
            ph["corrections"] = [schema.join_ids(ph_ids.get(int(f), ())) for f in ph["frame"]]
            ph = ph[~ph["frame"].isin(excluded)]
        rg = base["rings"].copy()
        if not rg.empty:
            s_q = inv / inv0 if (math.isfinite(inv) and math.isfinite(inv0)) else 1.0
            rg["q_inv_nm"] = rg["q_inv_nm"] * s_q
            rg["d_nm"] = rg["d_nm"] / s_q
            rg = rg[~rg["frame"].isin(excluded)]

        keep_cols = schema.columns("objects") + [c for c in _EXTRA_OBJECT_COLUMNS if c in ob]
        obj_out = schema.conform(ob, "objects")[keep_cols] if not ob.empty else schema.empty("objects")
        tables = {"frames": fr, "objects": obj_out, "tracks": tracks, "fronts": fronts, "phases": ph, "rings": rg}
        replay = Replay(tables=tables, corrected=corrected, excluded=sorted(excluded), deleted_tracks=deleted,
                        merged_labels=merged, deleted_labels=deleted_labels, nm_per_px=nm, inv_nm_per_px=inv, fps=fps, n_active=len(active),
                        last_id=entries[-1]["id"] if entries else 0)
        self.objects_full = ob
        if write:
            for t in ("frames", "objects", "tracks", "fronts", "rings"):
                self.store.write_table(t, tables[t])
            self.store.write_table("phases", ph, phase_names)
            self.store.update_summary(corrections={
                "journal": "corrections.jsonl", "entries": len(entries), "active": len(active),
                "last_id": replay.last_id, "active_ids": [e["id"] for e in active],
                "corrected_frames": corrected, "excluded_frames": sorted(excluded),
                "calibration": {"nm_per_px": nm if nm_known else None, "inv_nm_per_px": inv, "fps": fps},
                "applied": _now()})
        self.last = replay
        return replay

    def _touching(self, frame: int, instances: np.ndarray, meas: pd.DataFrame, entries: list[dict],
                  base_ids: frozenset, lost: dict[int, set[int]]) -> list[frozenset]:
        """Per object of a corrected frame, the ids of the strokes that touch it (plus ``base_ids``).

        A stroke touches an object when it covers (or borders, within 1 px) one of its pixels in the
        corrected masks; a stroke over a predicted object that no longer exists (erased, deleted)
        is recorded in ``lost`` under that object's track.
        """
        from scipy import ndimage

        _, pred = self._read_pred([frame])
        pred = pred[0]
        lt = self._label_track or {}
        labels = meas["label"].to_numpy(int)
        ids: dict[int, set[int]] = {int(lab): set(base_ids) for lab in labels}
        H, W = instances.shape
        for e in entries:
            if e["kind"] == "delete_object":
                region = np.zeros((H, W), bool)
                y, x = int(round(e["y"])), int(round(e["x"]))
                if 0 <= y < H and 0 <= x < W:
                    region[y, x] = True
                    if pred[y, x]:
                        region |= pred == pred[y, x]
            else:
                region = ndimage.binary_dilation(rasterize(e, (H, W)), iterations=1)
            for lab in np.unique(instances[region]):
                if int(lab) in ids:
                    ids[int(lab)].add(e["id"])
            for lab in np.unique(pred[region]):
                tid = lt.get((frame, int(lab)))
                if lab and tid is not None:
                    lost.setdefault(tid, set()).add(e["id"])
        return [frozenset(ids[int(lab)]) for lab in labels]

    def _assign_ids(self, frame: int, instances: np.ndarray, meas: pd.DataFrame, base_ob: pd.DataFrame,
                    entries: list[dict], s_len: float, next_id: list[int]) -> np.ndarray:
        """Track ids of a corrected frame's objects: the predicted object each overlaps most, else
        a track seen within 3 frames nearby, else a new id (from the entry that made it)."""
        _, pred = self._read_pred([frame])
        pred = pred[0]
        lt = self._label_track or {}
        labels = meas["label"].to_numpy(int)
        fg = (instances > 0) & (pred > 0)
        pairs = pd.DataFrame({"new": instances[fg].astype(np.int64), "old": pred[fg].astype(np.int64)})
        ov = pairs.value_counts().reset_index(name="n").sort_values("n", ascending=False, kind="stable")
        ids = np.zeros(len(labels), np.int64)
        taken: set[int] = set()
        pos = {lab: k for k, lab in enumerate(labels)}
        for new, old, _n in ov.itertuples(index=False):
            if new not in pos or ids[pos[new]]:
                continue
            tid = lt.get((frame, int(old)))
            if tid is None or tid in taken:
                continue
            ids[pos[new]] = tid
            taken.add(tid)
        # unmatched: a track seen in nearby frames (not in this one), within the linking range
        from ..track import default_search_range_nm

        near = base_ob[(base_ob["frame"] - frame).abs().between(1, 3) & ~base_ob["track_id"].isin(taken)]
        sr = default_search_range_nm(base_ob) * s_len if not base_ob.empty else 0.0
        nb = iter(sorted(int(e.get("new_track_base") or 0) for e in entries if e.get("new_track_base")))
        for k in np.flatnonzero(ids == 0):
            if not near.empty:
                d = np.hypot(near["x_nm"].to_numpy() * s_len - meas["x_nm"].iloc[k],
                             near["y_nm"].to_numpy() * s_len - meas["y_nm"].iloc[k])
                j = int(np.argmin(d))
                tid = int(near["track_id"].iloc[j])
                if d[j] <= 2 * sr and tid not in taken:
                    ids[k] = tid
                    taken.add(tid)
                    continue
            tid = next(nb, 0)
            if not tid or tid in taken or tid in set(base_ob["track_id"]):
                next_id[0] += 1
                tid = next_id[0]
            else:
                next_id[0] = max(next_id[0], tid)
            ids[k] = tid
            taken.add(tid)
        return ids

    def _merge(self, ob: pd.DataFrame, keep: int, other: int, nm: float, fi: pd.DataFrame,
               merged: dict[int, dict[int, int]]) -> pd.DataFrame:
        from ..track import measure_objects

        ob = ob.copy()
        ob.loc[ob["track_id"] == other, "track_id"] = keep
        rows = ob[ob["track_id"] == keep]
        dup = rows["frame"].value_counts()
        for f in dup[dup > 1].index:
            sel = (ob["track_id"] == keep) & (ob["frame"] == f)
            labs = ob.loc[sel, "label"].astype(int).tolist()
            c, i = self.masks(int(f))
            i = i.copy()
            i[np.isin(i, labs)] = labs[0]
            d = fi.loc[[f], ["drift_x_nm", "drift_y_nm"]].to_numpy(float)
            try:
                m = measure_objects(c[None], i[None], frame=[int(f)], time_s=fi.loc[[f], "time_s"].to_numpy(float),
                                    nm_per_px=nm, drift_nm=np.nan_to_num(d))
                m = m[m["label"] == labs[0]].copy()
            except ValueError:  # pieces far apart that the measurement cannot take as one object
                m = pd.DataFrame()
            if m.empty:
                m = _combine_rows(ob[sel])
            m["track_id"] = keep
            m["_corr"] = [frozenset().union(*ob.loc[sel, "_corr"])] * len(m)
            merged.setdefault(int(f), {}).update({int(lab): labs[0] for lab in labs[1:]})
            ob = pd.concat([ob[~sel], m], ignore_index=True)
        return ob


def _combine_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """One object from several rows: areas add, centroid and reacted fraction area-weighted, extents max."""
    a = rows["area_nm2"].to_numpy(float)
    w = a / a.sum() if a.sum() > 0 else np.full(len(a), 1 / len(a))
    out = rows.iloc[[int(np.argmax(a))]].copy()
    out["area_nm2"] = a.sum()
    for c in ("x_nm", "y_nm", "reacted_fraction"):
        out[c] = float((rows[c].to_numpy(float) * w).sum())
    for c in ("width_nm", "length_nm"):
        out[c] = float(rows[c].max())
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


_LENGTH_COLS = ("x_nm", "y_nm", "width_nm", "length_nm", "end_a_x_nm", "end_a_y_nm", "end_b_x_nm", "end_b_y_nm",
                "reacted_length_nm", "reacted_lo_nm", "reacted_hi_nm", "width_a_nm", "width_b_nm",
                "width_pristine_nm", "width_swollen_nm")


def _scale_lengths(ob: pd.DataFrame, s: float) -> None:
    if s == 1.0:
        return
    for c in _LENGTH_COLS:
        if c in ob:
            ob[c] = ob[c] * s
    if "area_nm2" in ob:
        ob["area_nm2"] = ob["area_nm2"] * s * s


def _attach_measurements(ob: pd.DataFrame, meas: pd.DataFrame) -> pd.DataFrame:
    """objects.csv rows plus the label and geometry of the re-measured object at the same place."""
    extra = [c for c in meas.columns if c not in schema.columns("objects")]
    out = []
    mg = dict(tuple(meas.groupby("frame")))
    for f, g in ob.groupby("frame", sort=True):
        m = mg.get(f)
        g = g.copy()
        if m is None or m.empty:
            for c in extra:
                g[c] = np.nan
            out.append(g)
            continue
        d = np.hypot(g["x_nm"].to_numpy()[:, None] - m["x_nm"].to_numpy()[None],
                     g["y_nm"].to_numpy()[:, None] - m["y_nm"].to_numpy()[None])
        j = d.argmin(axis=1)
        for c in extra:
            g[c] = m[c].to_numpy()[j]
        out.append(g)
    res = pd.concat(out, ignore_index=True)
    res["label"] = res["label"].fillna(0).astype(np.int64)
    return res


# ----------------------------------------------------------------------------------------------
# module-level conveniences


def recompute(store: ResultStore, frames: Iterable[int] | None = None) -> Replay:
    """Replay the journal and rewrite the tables (idempotent: the same journal gives the same tables)."""
    return Corrector(store).recompute(frames)


def apply_corrections(store: ResultStore) -> Replay:
    """Apply every correction in force to the results folder (after an analysis or a re-analysis)."""
    return Corrector(store).recompute()


def corrected_frames(store: ResultStore) -> list[int]:
    """Frames whose masks the user changed (by the corrections in force)."""
    return sorted({int(e["frame"]) for e in active_entries(store.corrections()) if e["kind"] in MASK_KINDS})


def effective_masks(store: ResultStore, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """(classes, instances) of a frame with the user's corrections (call :func:`recompute` first)."""
    return Corrector(store).masks(frame)


def export_annotation_set(store: ResultStore, out_dir: str | os.PathLike, frames: Sequence[int] | None = None,
                          *, annotator: str = "") -> Path:
    """Write the corrected frames and their masks as an annotation set for ``tem-operando train``.

    Parameters
    ----------
    store : ResultStore
    out_dir : path-like
        The annotation set folder (``annotation.json`` + ``frames.npz``).
    frames : sequence of int, optional
        Frames to export (default: every frame the user corrected by hand). Excluded frames and
        diffraction frames are left out.

    Returns
    -------
    Path
        ``out_dir``.
    """
    from .. import __version__

    corr = Corrector(store)
    rep = corr.recompute(write=False)
    if frames is None:
        frames = rep.corrected
    fr = rep.tables["frames"].set_index("frame")
    frames = [int(f) for f in frames if int(f) in fr.index and fr.loc[int(f), "mode"] == "image"
              and int(f) not in rep.excluded]
    if not frames:
        raise CorrectionError(f"{store.folder}: no corrected image frames to export; paint some first or "
                              "give the frames")
    imgs, cls, ins = [], [], []
    with store.open_recording() as rec:
        for f in frames:
            c, i = corr.masks(f)
            c, i = c.copy(), i.copy()
            for a, b in rep.merged_labels.get(f, {}).items():
                i[i == a] = b
            gone = np.isin(i, rep.deleted_labels.get(f, []))
            c[gone] = 0  # a deleted track's pixels are background for training
            i[gone] = 0
            imgs.append(np.asarray(rec.frame(f), np.float32))
            cls.append(c)
            ins.append(i)
        from .._registration import mean_reference, shift_reference

        # the analysis' reference (its first image frame with structure averaged with the frames of
        # its first second; older analyses: the first image frame alone) moved onto each frame by the
        # analysis' drift: what two-channel models see beside each frame
        summary = store.read_summary()
        first = summary.get("reference_frame")
        first = int(fr.index[fr["mode"] == "image"][0]) if first is None or int(first) not in fr.index else int(first)
        run = [int(f) for f in summary.get("reference_run") or [first] if int(f) in fr.index]
        run = run if run and run[0] == first else [first]
        nm = float(rep.nm_per_px)
        if {"drift_x_nm", "drift_y_nm"} <= set(fr.columns) and nm > 0:
            d = fr[["drift_y_nm", "drift_x_nm"]].to_numpy(float) / nm
            d = np.nan_to_num(d - fr.loc[[first], ["drift_y_nm", "drift_x_nm"]].to_numpy(float) / nm)
            pos = {int(f): k for k, f in enumerate(fr.index)}
            image = mean_reference(np.stack([np.asarray(rec.frame(f), np.float32) for f in run]),
                                   d[[pos[f] for f in run]])
            reference = shift_reference(image, d[[pos[f] for f in frames]])
        else:  # no drift known: the reference frame alone, registered when read
            reference = np.asarray(rec.frame(first), np.float32)
    entries = list(store.corrections())
    dose = fr.loc[frames, "dose_e_per_px"].to_numpy(float) if "dose_e_per_px" in fr else None
    prov = {"recording": summary.get("input"), "recording_sha256": summary.get("input_sha256"),
            "results": str(store.folder.resolve()), "model": summary.get("model"),
            "model_sha256": summary.get("model_sha256"),
            "corrections": f"corrections.jsonl ids {[e['id'] for e in active_entries(entries)]}",
            "annotator": annotator, "exported": _now(), "software": f"tem-operando {__version__}"}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # the format of datasets/README.md (``segment.datasets.load_annotation_set`` reads it); written
    # here because the results layer does not import the segmentation stage
    buf = io.BytesIO()
    arrays = dict(frames=np.stack(imgs), classes=np.stack(cls).astype(np.uint8), instances=np.stack(ins).astype(np.uint32))
    arrays["reference"] = reference
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out / "frames.npz", buf.getvalue())
    info = {"format": ANNOTATION_FORMAT, "nm_per_px": float(rep.nm_per_px), "frame_index": frames,
            "provenance": prov}
    if dose is not None and np.isfinite(dose).all():
        info["dose_e_per_px"] = dose.tolist()
    atomic_write_json(out / "annotation.json", info)
    return out
