"""The results folder: atomic tables, masks by frame, a status, and the corrections journal.

Layout and columns are the contract of ``shared/DESIGN.md``. Every table is written to a
temporary file in the same folder and renamed over the old one, so a reader (or a crash) never
sees half a table. ``summary.json`` says ``partial`` until a run calls :meth:`finish`.
Corrections are appended to ``corrections.jsonl`` and flushed to disk *before* the caller
applies them.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from .._files import atomic_write_bytes
from .._json import jsonable as _jsonable
from ..errors import TemOperandoError

TABLE_FILES = {name: f"{name}.csv" for name in schema.TABLES}
SUMMARY = "summary.json"
MASKS = "masks.zarr"
JOURNAL = "corrections.jsonl"


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, json.dumps(_jsonable(obj), indent=1, allow_nan=False).encode())


class ResultStore:
    """One recording's results folder.

    Parameters
    ----------
    folder : path-like
        The results folder (created when ``create=True``).
    create : bool
        Create the folder if it does not exist.

    Examples
    --------
    >>> store = ResultStore("out/session", create=True)          # doctest: +SKIP
    >>> store.write_table("tracks", tracks_df)                    # doctest: +SKIP
    >>> store.read_table("tracks")                                 # doctest: +SKIP
    """

    def __init__(self, folder: str | os.PathLike, create: bool = False):
        self.folder = Path(folder)
        if create:
            self.folder.mkdir(parents=True, exist_ok=True)
        elif not self.folder.is_dir():
            raise TemOperandoError(f"{self.folder}: no such results folder")

    # -- tables -----------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.folder / name

    def write_table(self, table: str, df: pd.DataFrame, phases: list[str] | None = None) -> Path:
        """Write a contract table atomically after checking and ordering its columns.

        Tables with provenance columns (:data:`tem_operando.schema.PROVENANCE`) get the ones the
        writer left out: ``model`` and ``model_sha256`` from ``summary.json``, ``corrections``
        empty (the corrections replay writes its own).
        """
        if table not in schema.TABLES:
            raise ValueError(f"unknown table {table!r}; one of {sorted(schema.TABLES)}")
        df = schema.conform(df, table, phases)
        prov = [c.name for c in schema.PROVENANCE.get(table, ()) if c.name not in df.columns]
        if prov:
            summary = self.read_summary()
            for c in prov:
                df[c] = "" if c == "corrections" else str(summary.get(c) or "")
        p = self.path(TABLE_FILES[table])
        atomic_write_bytes(p, df.to_csv(index=False, float_format="%.10g").encode())
        return p

    def read_table(self, table: str) -> pd.DataFrame:
        """Read a contract table (an empty one with the right columns if it was never written)."""
        p = self.path(TABLE_FILES[table])
        if not p.is_file():
            return schema.empty(table)
        text = [c.name for c in schema.TABLES[table] + schema.PROVENANCE.get(table, ()) if c.dtype == "str"]
        try:
            df = pd.read_csv(p, keep_default_na=True, dtype={c: str for c in text})
        except pd.errors.EmptyDataError:
            return schema.empty(table)
        for c in schema.TABLES[table] + schema.PROVENANCE.get(table, ()):
            if c.dtype == "str" and c.name in df:
                df[c.name] = df[c.name].fillna("").astype(str)
        return df

    def has_table(self, table: str) -> bool:
        return self.path(TABLE_FILES[table]).is_file()

    # -- summary ----------------------------------------------------------------------------
    def read_summary(self) -> dict:
        p = self.path(SUMMARY)
        if not p.is_file():
            return {}
        with open(p, encoding="utf-8") as fh:
            return json.load(fh)

    def calibration(self, summary: dict | None = None) -> dict[str, float]:
        """The calibration the tables are in: ``nm_per_px`` (nm/px), ``inv_nm_per_px`` (1/nm per px) and
        ``fps`` (frames/s) — the user's corrected ones where the corrections journal changed them
        (``summary.json`` → ``corrections.calibration``), else the analysis' own; NaN where unknown."""
        summary = self.read_summary() if summary is None else summary
        edited = (summary.get("corrections") or {}).get("calibration") or {}
        out = {}
        for k in ("nm_per_px", "inv_nm_per_px", "fps"):
            v = edited.get(k)
            v = summary.get(k) if v is None else v
            try:
                out[k] = float(v) if v is not None else float("nan")
            except (TypeError, ValueError):
                out[k] = float("nan")
        return out

    def update_summary(self, **fields: Any) -> dict:
        """Merge ``fields`` into ``summary.json`` (status stays ``partial`` until :meth:`finish`)."""
        summary = self.read_summary()
        summary.update(fields)
        summary.setdefault("status", "partial")
        atomic_write_json(self.path(SUMMARY), summary)
        return summary

    def start(self, **fields: Any) -> dict:
        """Mark a run as started (``status: partial``) with its provenance fields."""
        now = _dt.datetime.now(_dt.UTC).isoformat()
        return self.update_summary(status="partial", start_time=now, **fields)

    def finish(self, **fields: Any) -> dict:
        """Mark the run complete (the last write of a run)."""
        now = _dt.datetime.now(_dt.UTC).isoformat()
        return self.update_summary(status="complete", end_time=now, **fields)

    @property
    def status(self) -> str:
        return self.read_summary().get("status", "missing")

    # -- masks ------------------------------------------------------------------------------
    def open_masks(self, n_frames: int, frame_shape: tuple[int, int], mode: str = "a"):
        """The ``masks.zarr`` group with ``classes`` (uint8) and ``instances`` (uint32), one chunk a frame."""
        import zarr

        g = zarr.open_group(str(self.path(MASKS)), mode=mode)
        shape = (int(n_frames),) + tuple(int(s) for s in frame_shape)
        chunks = (1,) + shape[1:]
        for name, dtype in (("classes", "u1"), ("instances", "u4")):
            if name not in g:
                g.create_dataset(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
            elif tuple(g[name].shape) != shape:
                raise TemOperandoError(f"{self.path(MASKS)}: holds {g[name].shape}, the recording {shape}")
        return g

    def write_masks(self, start: int, classes: np.ndarray, instances: np.ndarray) -> None:
        """Store the masks of frames ``start : start + len(classes)`` (chunk-aligned, so atomic per frame)."""
        import zarr

        g = zarr.open_group(str(self.path(MASKS)), mode="r+")
        g["classes"][start:start + len(classes)] = classes.astype(np.uint8, copy=False)
        g["instances"][start:start + len(instances)] = instances.astype(np.uint32, copy=False)

    def read_masks(self, start: int = 0, stop: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        import zarr

        g = zarr.open_group(str(self.path(MASKS)), mode="r")
        stop = g["classes"].shape[0] if stop is None else stop
        return np.asarray(g["classes"][start:stop]), np.asarray(g["instances"][start:stop])

    # -- the raw recording (read-only) ------------------------------------------------------
    def open_recording(self):
        """Open the analysed recording read-only, with the calibration options of the run."""
        from ..io import open_recording

        summary = self.read_summary()
        if not summary.get("input"):
            raise TemOperandoError(f"{self.folder}: summary.json names no input recording")
        params = summary.get("parameters", {})
        kwargs = {k: params[k] for k in ("nm_per_px", "inv_nm_per_px", "fps") if params.get(k) is not None}
        if params.get("mode") not in (None, "auto"):
            kwargs["mode"] = params["mode"]
        return open_recording(summary["input"], **kwargs)

    def frame_image(self, i: int) -> np.ndarray:
        """Frame ``i`` of the analysed recording (float32 counts)."""
        with self.open_recording() as rec:
            return rec.frame(int(i))

    # -- corrections journal ----------------------------------------------------------------
    def journal(self, kind: str, **data: Any) -> dict:
        """Append one correction to ``corrections.jsonl`` and fsync it; returns the entry.

        Call this *before* applying the correction, so none is lost if the program dies.
        """
        entries = list(self.corrections())
        entry = {"id": (entries[-1]["id"] + 1) if entries else 1, "kind": kind,
                 "time": _dt.datetime.now(_dt.UTC).isoformat(), **_jsonable(data)}
        line = json.dumps(entry, allow_nan=False) + "\n"
        p = self.path(JOURNAL)
        if p.is_file() and p.stat().st_size:
            with open(p, "rb") as fh:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    line = "\n" + line  # close a line torn by a crash so this entry stands alone
        with open(p, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        return entry

    def corrections(self) -> Iterator[dict]:
        """The journal's entries in order (a torn last line from a crash is skipped)."""
        p = self.path(JOURNAL)
        if not p.is_file():
            return
        with open(p, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    yield json.loads(line)
                except ValueError:
                    continue  # an append cut by a crash: everything before it stands
