"""``batch``: many recordings, one results folder each, and an index table of all sessions.

Recordings run one after the other through :func:`analyze`, whose chunks go to the chosen
Dask scheduler (local threads, or every worker of a ``dask.distributed`` cluster at once). A
recording that fails is reported in the index with its error and the rest go on.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import TemOperandoError
from ..results import ResultStore, atomic_write_bytes
from .analyze import AnalyzeOptions, analyze
from .chunks import check_scheduler

INDEX_COLUMNS = ["input", "results", "status", "error", "frames", "n_image_frames", "n_diffraction_frames",
                 "n_tracks", "mean_swelling_rate_nm_s", "mean_width_expansion_pct", "mean_front_velocity_nm_s",
                 "phases_seen", "elapsed_s"]


def _stem(path: Path) -> str:
    """The results folder's name: the input file's stem (``run.v2.hspy`` → ``run.v2``)."""
    return path.stem if path.suffix else path.name


def _row(input_path: Path, folder: Path, summary: dict) -> dict:
    store = ResultStore(folder)
    tracks = store.read_table("tracks")
    phases = store.read_table("phases")

    def mean(col: str) -> float:
        v = tracks[col].to_numpy(float) if col in tracks else np.array([])
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else float("nan")

    seen = [p for p in pd.unique(phases["best_phase"]) if isinstance(p, str) and p] if not phases.empty else []
    return {"input": str(input_path), "results": str(folder), "status": summary.get("status"), "error": "",
            "frames": summary.get("frames"), "n_image_frames": summary.get("n_image_frames"),
            "n_diffraction_frames": summary.get("n_diffraction_frames"), "n_tracks": summary.get("n_tracks"),
            "mean_swelling_rate_nm_s": mean("swelling_rate_nm_s"),
            "mean_width_expansion_pct": mean("width_expansion_pct"),
            "mean_front_velocity_nm_s": mean("front_velocity_nm_s"), "phases_seen": ";".join(seen),
            "elapsed_s": summary.get("elapsed_s")}


def batch(inputs: list[str | os.PathLike], out: str | os.PathLike, opts: AnalyzeOptions | None = None, *,
          resume: bool = False, report: bool = True, on_result=None) -> pd.DataFrame:
    """Analyse every input into ``out/<input stem>/`` and write ``out/index.csv``.

    Returns the index table (one row per input, failures included with their error).
    """
    opts = opts or AnalyzeOptions()
    check_scheduler(opts.scheduler)  # once for all: a dead cluster is not a failure of each recording
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stems = [_stem(Path(p)) for p in inputs]
    dupes = {s for s in stems if stems.count(s) > 1}
    if dupes:
        raise TemOperandoError(f"several inputs share the name {', '.join(sorted(dupes))}; their results "
                               "folders would collide (rename them or run batch per folder)")
    rows = []
    for p, stem in zip(inputs, stems):
        p = Path(p)
        folder = out / stem
        t0 = time.perf_counter()
        try:
            summary = analyze(p, folder, opts, resume=resume, report=report)
            row = _row(p, folder, summary)
        except Exception as exc:  # one bad recording must not stop the batch: record why it failed
            msg = str(exc) if isinstance(exc, TemOperandoError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, TemOperandoError):
                (out / f"{stem}.error.txt").write_text(traceback.format_exc())
            row = {c: None for c in INDEX_COLUMNS}
            row.update(input=str(p), results=str(folder), status="failed", error=msg,
                       elapsed_s=time.perf_counter() - t0)
        rows.append(row)
        if on_result:
            on_result(row)
        index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
        atomic_write_bytes(out / "index.csv", index.to_csv(index=False).encode())
    return pd.DataFrame(rows, columns=INDEX_COLUMNS)
