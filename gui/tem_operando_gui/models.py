"""The app's state without Qt: the open results folder, the current frame, the selection, playback.

Widgets take a :class:`ReviewModel` and connect to its :class:`Signal` s (napari's
``components/dims.py`` and ``_qt/widgets/qt_dims.py`` split). Everything here runs in a plain
Python test; every correction goes through :mod:`tem_operando.results.corrections`, which
journals it before it is applied.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tem_operando.results import ResultStore
from tem_operando.results import corrections as corr

__all__ = ["TOOLS", "FrameCache", "ReviewModel", "Signal", "review_queue"]

TOOLS = ("navigate", "brush", "erase", "delete", "contact", "split")


class Signal:
    """A minimal callback list: ``connect(fn)``, ``emit(*args)`` (Qt-free, synchronous)."""

    def __init__(self) -> None:
        self._slots: list[Callable] = []

    def connect(self, fn: Callable) -> None:
        self._slots.append(fn)

    def disconnect(self, fn: Callable) -> None:
        if fn in self._slots:
            self._slots.remove(fn)

    def emit(self, *args: Any) -> None:
        for fn in list(self._slots):
            fn(*args)


class FrameCache:
    """Raw frames read on demand from the recording, the last ``size`` kept (LRU)."""

    def __init__(self, reader: Callable[[int], np.ndarray], size: int = 64):
        self.reader = reader
        self.size = int(size)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        img = np.asarray(self.reader(i), np.float32)
        self._cache[i] = img
        if len(self._cache) > self.size:
            self._cache.popitem(last=False)
        return img

    def clear(self) -> None:
        self._cache.clear()


def review_queue(frames: pd.DataFrame, objects: pd.DataFrame | None = None, *, confidence_below: float = 0.6,
                 change_z: float = 4.0, limit: int = 500) -> pd.DataFrame:
    """Frames to review: low segmentation confidence or an abrupt change in objects or area.

    Returns
    -------
    DataFrame
        frame, time_s, reason, score (higher = look first), sorted by score.
    """
    rows = []
    img = frames[frames["mode"] == "image"] if "mode" in frames else frames
    if "confidence" in img:
        c = img["confidence"].to_numpy(float)
        for f, t, v in zip(img["frame"], img["time_s"], c):
            if np.isfinite(v) and v < confidence_below:
                rows.append((int(f), float(t), f"confidence {v:.2f}", float(1 - v) * 10))
    series = {"n_objects": img.set_index("frame")["n_objects"].astype(float) if "n_objects" in img else None}
    if objects is not None and not objects.empty:
        series["total area"] = objects.groupby("frame")["area_nm2"].sum().reindex(img["frame"]).fillna(0.0)
    times = img.set_index("frame")["time_s"]
    for name, s in series.items():
        if s is None or len(s) < 3:
            continue
        d = np.abs(np.diff(s.to_numpy(float)))
        mad = np.median(np.abs(d - np.median(d))) * 1.4826
        scale = mad if mad > 0 else (max(0, d.std()))
        if scale <= 0:
            continue
        z = d / scale
        for k in np.flatnonzero(z > change_z):
            f = int(s.index[k + 1])
            rows.append((f, float(times.get(f, np.nan)), f"abrupt change in {name} ({z[k]:.0f}σ)", float(z[k])))
    df = pd.DataFrame(rows, columns=["frame", "time_s", "reason", "score"])
    if df.empty:
        return df
    df = df.sort_values("score", ascending=False).drop_duplicates("frame").head(limit)
    return df.reset_index(drop=True)


class ReviewModel:
    """One results folder under review.

    Signals
    -------
    frame_changed(int), tables_changed(), selection_changed(int or None), tool_changed(str),
    playing_changed(bool), journal_changed(), message(str), busy_changed(bool)

    Parameters
    ----------
    folder : path-like
        The results folder.
    cache_size : int
        Raw frames kept in memory.
    post : callable(fn), optional
        Runs ``fn()`` in the GUI thread (the Qt window passes one). With it, a correction is
        journaled and shown on its frame at once, and the journal replay (kinetics refit, tables
        rewritten: about a second on a 10,000-frame recording) runs in a background thread;
        corrections made meanwhile are replayed together when it ends (``busy`` says one is
        running, :meth:`wait_idle` waits for it). Without it (scripts, tests) every correction
        recomputes before it returns.
    """

    def __init__(self, folder: str | os.PathLike, cache_size: int = 64,
                 post: Callable[[Callable[[], None]], None] | None = None):
        import threading

        self.folder = Path(folder)
        self.store = ResultStore(self.folder)
        self.summary = self.store.read_summary()
        self.corrector = corr.Corrector(self.store)
        self.frame_changed = Signal()
        self.tables_changed = Signal()
        self.selection_changed = Signal()
        self.tool_changed = Signal()
        self.playing_changed = Signal()
        self.journal_changed = Signal()
        self.message = Signal()
        self.busy_changed = Signal()
        self.post = post
        self._job_lock = threading.Lock()  # guards the fields below, shared with the replay thread
        self._job_thread: threading.Thread | None = None
        self._job_running = False
        self._job_dirty = False
        self._job_done = 0  # replays finished
        self._job_applied = 0  # replays whose tables the model has loaded
        self._job_error: Exception | None = None
        self._busy_shown = False
        self.current = 0
        self.selected: int | None = None
        self.tool = "navigate"
        self.brush_class = 2
        self.brush_radius = 4.0
        self.playing = False
        self.speed = 1.0
        self._rec = None
        self.frames_cache = FrameCache(self._read_frame, cache_size)
        self.tables: dict[str, pd.DataFrame] = {}
        self.objects_full: pd.DataFrame = pd.DataFrame()
        self._masks_cache: OrderedDict[int, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        # open the recording (its readers' imports take a second) while the window is being built
        self._rec_error: Exception | None = None
        self._rec_thread = threading.Thread(target=self._open_recording, daemon=True)
        self._rec_thread.start()
        self.load_tables()

    # -- data ---------------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        n = self.summary.get("frames")
        return int(n) if n else len(self.tables.get("frames", ()))

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self.summary.get("frame_shape") or (0, 0))

    @property
    def nm_per_px(self) -> float:
        cal = (self.summary.get("corrections") or {}).get("calibration") or {}
        return float(cal.get("nm_per_px") or self.summary.get("nm_per_px") or float("nan"))

    @property
    def fps(self) -> float:
        cal = (self.summary.get("corrections") or {}).get("calibration") or {}
        return float(cal.get("fps") or self.summary.get("fps") or 10.0)

    def corrected_frames(self) -> list[int]:
        """Frames whose masks the user corrected (what a retraining learns from)."""
        return [int(f) for f in (self.summary.get("corrections") or {}).get("corrected_frames") or []]

    def load_tables(self) -> None:
        """Read the tables (and objects with labels and wire geometry) from the folder."""
        self.summary = self.store.read_summary()
        self.tables = {t: self.store.read_table(t) for t in ("frames", "objects", "tracks", "fronts", "phases", "rings")}
        # objects.csv has instance labels once corrections were applied; until then the labels are
        # matched per frame from the masks (opening a long recording stays fast)
        self.objects_full = self.tables["objects"]
        self._masks_cache.clear()
        self._index_tables()
        self.tables_changed.emit()

    def has_wires(self) -> bool:
        tr = self.tables.get("tracks")
        return bool(tr is not None and not tr.empty and (tr["kind"] == "wire").any())

    def _index_tables(self) -> None:
        fr = self.tables["frames"]
        n = max(self.n_frames, int(fr["frame"].max()) + 1 if not fr.empty else 0)
        self._drift = np.zeros((n, 2))
        if not fr.empty:
            d = fr[["drift_x_nm", "drift_y_nm"]].to_numpy(float)
            self._drift[fr["frame"].to_numpy(int)] = np.nan_to_num(d)
        self._excluded = set(fr.loc[fr["excluded"].astype(bool), "frame"]) if "excluded" in fr else set()
        self.times = fr.set_index("frame")["time_s"] if not fr.empty else pd.Series(dtype=float)
        self.modes = fr.set_index("frame")["mode"] if not fr.empty else pd.Series(dtype=object)
        ob = self.objects_full.sort_values("frame", kind="stable").reset_index(drop=True)
        self.objects_full = ob
        self._ob_frames = ob["frame"].to_numpy(np.int64) if not ob.empty else np.zeros(0, np.int64)

    def _open_recording(self) -> None:
        try:
            self._rec = self.store.open_recording()
        except Exception as exc:  # noqa: BLE001 - reported when a frame is asked for
            self._rec_error = exc

    def _read_frame(self, i: int) -> np.ndarray:
        if self._rec is None:
            self._rec_thread.join()
            if self._rec is None:
                if self._rec_error is not None:
                    raise self._rec_error
                self._open_recording()
        return self._rec.frame(int(i))

    def frame_image(self, i: int | None = None) -> np.ndarray:
        return self.frames_cache[self.current if i is None else i]

    def masks(self, i: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Effective (corrected or predicted) class and instance masks of a frame, None if none."""
        i = self.current if i is None else int(i)
        if i in self._masks_cache:
            self._masks_cache.move_to_end(i)
            return self._masks_cache[i]
        if self.mode(i) != "image" or not self.store.path("masks.zarr").exists():
            return None
        try:
            m = self.corrector.masks(i)
        except Exception:  # noqa: BLE001 - no masks for this frame (e.g. a partial run)
            return None
        self._masks_cache[i] = m
        if len(self._masks_cache) > 32:
            self._masks_cache.popitem(last=False)
        return m

    def objects_at(self, i: int | None = None) -> pd.DataFrame:
        i = self.current if i is None else int(i)
        a, b = np.searchsorted(self._ob_frames, [i, i + 1])
        return self.objects_full.iloc[a:b]

    def mode(self, i: int | None = None) -> str:
        i = self.current if i is None else int(i)
        return str(self.modes.get(i, "image"))

    def time_of(self, i: int | None = None) -> float:
        i = self.current if i is None else int(i)
        return float(self.times.get(i, i / self.fps))

    def drift_px(self, i: int | None = None) -> tuple[float, float]:
        i = self.current if i is None else int(i)
        nm = self.nm_per_px
        if not (0 <= i < len(self._drift)) or not nm > 0:
            return 0.0, 0.0
        return float(self._drift[i, 0] / nm), float(self._drift[i, 1] / nm)

    def label_tracks(self, i: int | None = None) -> dict[int, int]:
        """Instance label → track id in a frame."""
        i = self.current if i is None else int(i)
        ob = self.objects_at(i)
        if ob.empty:
            return {}
        if "label" in ob and ob["label"].notna().all():
            return dict(zip(ob["label"].astype(int), ob["track_id"].astype(int)))
        m = self.masks(i)
        if m is None:
            return {}
        inst = m[1]
        flat = inst.ravel()
        nz = np.flatnonzero(flat)
        if nz.size == 0:
            return {}
        lab = flat[nz].astype(np.int64)
        W = inst.shape[1]
        cnt = np.bincount(lab)
        ok = np.flatnonzero(cnt)
        cx = np.bincount(lab, nz % W)[ok] / cnt[ok]
        cy = np.bincount(lab, nz // W)[ok] / cnt[ok]
        dx, dy = self.drift_px(i)
        nm = self.nm_per_px
        ox = ob["x_nm"].to_numpy(float) / nm + dx
        oy = ob["y_nm"].to_numpy(float) / nm + dy
        d = np.hypot(cx[:, None] - ox[None], cy[:, None] - oy[None])
        j = d.argmin(axis=1)
        tid = ob["track_id"].to_numpy(int)
        return {int(lb): int(tid[k]) for lb, k, dd in zip(ok, j, d[np.arange(len(ok)), j]) if dd < 3.0}

    def label_at(self, x: float, y: float, i: int | None = None) -> int:
        m = self.masks(i)
        if m is None:
            return 0
        H, W = m[1].shape
        xi, yi = int(round(x)), int(round(y))
        return int(m[1][yi, xi]) if 0 <= yi < H and 0 <= xi < W else 0

    def track_at(self, x: float, y: float, i: int | None = None) -> int | None:
        lab = self.label_at(x, y, i)
        return self.label_tracks(i).get(lab) if lab else None

    def frame_at_time(self, t: float) -> int:
        if self.times.empty:
            return int(round(t * self.fps))
        return int(self.times.index[np.argmin(np.abs(self.times.to_numpy(float) - float(t)))])

    # -- navigation -----------------------------------------------------------------------------
    def set_frame(self, i: int) -> None:
        i = int(min(max(int(i), 0), max(self.n_frames - 1, 0)))
        if i != self.current:
            self.current = i
            self.frame_changed.emit(i)

    def step(self, n: int = 1) -> None:
        self.set_frame(self.current + n)

    def jump_to_time(self, t: float) -> None:
        self.set_frame(self.frame_at_time(t))

    def set_playing(self, on: bool) -> None:
        if bool(on) != self.playing:
            self.playing = bool(on)
            self.playing_changed.emit(self.playing)

    def advance(self) -> None:
        """One playback tick: next frame, stop at the end."""
        if self.current >= self.n_frames - 1:
            self.set_playing(False)
        else:
            self.step(1)

    def select(self, track_id: int | None) -> None:
        track_id = None if track_id is None else int(track_id)
        if track_id != self.selected:
            self.selected = track_id
            self.selection_changed.emit(track_id)

    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}")
        if tool != self.tool:
            self.tool = tool
            self.tool_changed.emit(tool)

    # -- corrections (each journals, then recomputes) -----------------------------------------------
    def _after(self, entry: dict | None, frames=None) -> dict | None:
        if entry is None:
            return None
        self.journal_changed.emit()
        if self.post is None:
            self.apply(frames)
        else:
            self._preview(entry)
            self._schedule_replay()
        return entry

    def apply(self, frames=None) -> None:
        """Replay the journal onto the tables and reload them (now, in this thread)."""
        self.wait_idle()
        self.corrector.recompute(frames)
        self._reload()

    def _reload(self) -> None:
        self.objects_full = self.corrector.objects_full
        self.summary = self.store.read_summary()
        self.tables = {t: self.store.read_table(t) for t in ("frames", "objects", "tracks", "fronts", "phases", "rings")}
        self._masks_cache.clear()
        self._index_tables()
        self.tables_changed.emit()
        self.frame_changed.emit(self.current)

    @property
    def busy(self) -> bool:
        """A journal replay is running in the background or its tables are not loaded yet."""
        with self._job_lock:
            return self._job_running or self._job_done != self._job_applied

    def _preview(self, entry: dict) -> None:
        """Show a brush stroke or a deleted object on its frame before the replay ends."""
        f = entry.get("frame")
        if entry["kind"] in corr.MASK_KINDS and f is not None:
            m = self.masks(int(f))
            if m is not None:
                c, i = m[0].copy(), m[1].copy()
                corr._apply_mask_entry(entry, c, i)
                self._masks_cache[int(f)] = (c, i)
        self.frame_changed.emit(self.current)

    def _schedule_replay(self) -> None:
        import threading

        with self._job_lock:
            self._job_dirty = True
            if self._job_running:
                return  # the running replay goes round once more
            self._job_running = True
            self._job_thread = threading.Thread(target=self._replay_loop, name="tem-operando-replay", daemon=True)
        self._job_thread.start()
        if not self._busy_shown:
            self._busy_shown = True
            self.busy_changed.emit(True)

    def _replay_loop(self) -> None:  # in the replay thread: no signals, no widgets
        while True:
            with self._job_lock:
                if not self._job_dirty:
                    self._job_running = False
                    break
                self._job_dirty = False
            try:
                self.corrector.recompute()
                err = None
            except Exception as exc:  # noqa: BLE001 - reported in the GUI thread
                err = exc
            with self._job_lock:
                self._job_done += 1
                self._job_error = err
        self.post(self._deliver)

    def _deliver(self) -> None:
        """In the GUI thread: load the tables of the last finished replay (once)."""
        with self._job_lock:
            done, err, running = self._job_done, self._job_error, self._job_running
        if running:
            return  # a correction came in after this replay: the next hand-off loads the tables
        if done != self._job_applied:
            self._job_applied = done
            if err is not None:
                self.message.emit(f"applying the corrections failed: {type(err).__name__}: {err}")
            self._reload()
        if self._busy_shown:
            self._busy_shown = False
            self.busy_changed.emit(False)

    def wait_idle(self, timeout_s: float | None = None) -> bool:
        """Wait for a background replay to end and load its tables; False if ``timeout_s`` ran out."""
        t = self._job_thread
        if t is not None:
            t.join(timeout_s)
            if t.is_alive():
                return False
        self._deliver()
        return True

    def paint(self, points, cls: int | None = None, radius: float | None = None, polygon=None) -> dict:
        cls = self.brush_class if cls is None else cls
        e = corr.paint(self.store, self.current, cls, points=points, radius=radius or self.brush_radius,
                       polygon=polygon)
        return self._after(e, [self.current])

    def erase(self, points, radius: float | None = None) -> dict:
        return self.paint(points, cls=0, radius=radius)

    def delete_object(self, x: float, y: float) -> dict | None:
        if not self.label_at(x, y):
            self.message.emit("no object there")
            return None
        return self._after(corr.delete_object(self.store, self.current, x, y, self.track_at(x, y)), [self.current])

    def delete_track(self, track_id: int) -> dict:
        return self._after(corr.delete_track(self.store, track_id))

    def merge_tracks(self, keep: int, other: int) -> dict:
        return self._after(corr.merge_tracks(self.store, keep, other))

    def split_track(self, track_id: int, frame: int | None = None) -> dict:
        return self._after(corr.split_track(self.store, track_id, self.current if frame is None else frame))

    def set_contact(self, track_id: int, x: float, y: float) -> dict:
        return self._after(corr.set_contact(self.store, track_id, self.current, x, y))

    def exclude_frames(self, frames=None, excluded: bool = True) -> dict:
        return self._after(corr.exclude_frames(self.store, [self.current] if frames is None else frames, excluded))

    def is_excluded(self, i: int | None = None) -> bool:
        i = self.current if i is None else int(i)
        return i in self._excluded

    def relabel_phase(self, phase: str, frame: int | None = None) -> dict:
        return self._after(corr.relabel_phase(self.store, self.current if frame is None else frame, phase))

    def edit_calibration(self, **kw) -> dict:
        return self._after(corr.edit_calibration(self.store, **kw))

    def undo(self) -> dict | None:
        e = corr.undo(self.store)
        if e is None:
            self.message.emit("nothing to undo")
        return self._after(e)

    def redo(self) -> dict | None:
        e = corr.redo(self.store)
        if e is None:
            self.message.emit("nothing to redo")
        return self._after(e)

    def can_undo(self) -> bool:
        return bool(corr.undo_stacks(self.store.corrections())[0])

    def can_redo(self) -> bool:
        return bool(corr.undo_stacks(self.store.corrections())[1])

    def phase_names(self) -> list[str]:
        ph = self.tables.get("phases", pd.DataFrame())
        return [c[len("frac_"):] for c in ph.columns if c.startswith("frac_")] + ["amorphous"]

    # -- derived views --------------------------------------------------------------------------
    def review_queue(self) -> pd.DataFrame:
        return review_queue(self.tables["frames"], self.tables["objects"])

    def track_series(self, track_id: int) -> pd.DataFrame:
        ob = self.tables["objects"]
        return ob[ob["track_id"] == track_id].sort_values("frame")

    def track_row(self, track_id: int | None) -> dict | None:
        tr = self.tables["tracks"]
        if track_id is None or tr.empty:
            return None
        r = tr[tr["track_id"] == track_id]
        return r.iloc[0].to_dict() if len(r) else None

    def close(self) -> None:
        self.wait_idle()  # the tables on disk end up matching the journal
        self._rec_thread.join()
        if self._rec is not None:
            self._rec.close()
            self._rec = None
        self.frames_cache.clear()


def finite(v: Any) -> bool:
    try:
        return v is not None and math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
