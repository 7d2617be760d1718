"""``frames.csv`` and ``objects.csv`` rows from the tracking stage's outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import schema

__all__ = ["frames_table", "objects_table"]


def frames_table(frame: np.ndarray, time_s: np.ndarray, drift_nm: np.ndarray, objects: pd.DataFrame,
                 mode: str | np.ndarray = "image") -> pd.DataFrame:
    """``frames.csv``: frame, time_s, mode, drift_x_nm, drift_y_nm, n_objects."""
    frame = np.asarray(frame, np.int64)
    d = np.asarray(drift_nm, float).reshape(-1, 2)
    counts = objects.groupby("frame").size() if not objects.empty else pd.Series(dtype=np.int64)
    df = pd.DataFrame({"frame": frame, "time_s": np.asarray(time_s, float),
                       "mode": np.broadcast_to(np.asarray(mode, dtype=object), frame.shape),
                       "drift_x_nm": d[:, 0], "drift_y_nm": d[:, 1],
                       "n_objects": counts.reindex(frame, fill_value=0).to_numpy(np.int64)})
    return schema.conform(df, "frames")


def objects_table(linked: pd.DataFrame) -> pd.DataFrame:
    """``objects.csv`` columns of linked objects, in contract order (extras dropped)."""
    if linked.empty:
        return schema.empty("objects")
    return schema.conform(linked, "objects")[schema.columns("objects")]
