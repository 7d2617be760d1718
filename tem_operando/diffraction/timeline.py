"""Phase transitions from a phases table: when each component appears and disappears.

A component (a phase's ``frac_<name>`` or ``amorphous_fraction``) is *present* once its
median-smoothed fraction rises to ``on`` and stays present until it falls below ``off``
(hysteresis, ``off < on``); runs shorter than ``min_frames`` are ignored.  An event's frame is
the first frame of the new state.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .phases import AMORPHOUS

__all__ = ["TRANSITION_COLUMNS", "component_columns", "phase_transitions", "presence"]

TRANSITION_COLUMNS = ["phase", "event", "frame", "time_s"]


def component_columns(phases: pd.DataFrame) -> dict[str, str]:
    """``{component name: column}`` of a phases table (``frac_*`` and the amorphous fraction)."""
    out = {c[len("frac_"):]: c for c in phases.columns if c.startswith("frac_")}
    if "amorphous_fraction" in phases.columns:
        out[AMORPHOUS] = "amorphous_fraction"
    return out


def presence(fraction: np.ndarray, *, on: float = 0.25, off: float = 0.15, smooth: int = 3,
             min_frames: int = 2) -> np.ndarray:
    """Boolean presence of one component per frame, with median smoothing and hysteresis.

    Parameters
    ----------
    fraction : ndarray (T,)
        Fraction per frame (NaN frames keep the previous state).
    on, off : float
        Thresholds to switch on and off.
    smooth : int
        Width (frames) of the running median (1: none).
    min_frames : int
        Shorter runs of either state are merged into their surroundings.

    Returns
    -------
    ndarray of bool (T,)
    """
    f = np.asarray(fraction, float)
    if smooth > 1 and f.size >= smooth:
        from scipy.ndimage import median_filter

        filled = pd.Series(f).ffill().bfill().fillna(0.0).to_numpy()
        f = median_filter(filled, size=smooth, mode="nearest")
    state = np.zeros(f.size, bool)
    cur = False
    for i, v in enumerate(f):
        if np.isfinite(v):
            cur = v >= on if not cur else v >= off
        state[i] = cur
    if min_frames > 1 and state.size:
        edges = np.flatnonzero(np.diff(state.astype(int))) + 1
        bounds = np.r_[0, edges, state.size]
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b - a < min_frames and a > 0 and b < state.size:
                state[a:b] = state[a - 1]
    return state


def phase_transitions(phases: pd.DataFrame, *, on: float = 0.25, off: float = 0.15,
                      smooth: int = 3, min_frames: int = 2) -> pd.DataFrame:
    """When each component appears and disappears.

    Parameters
    ----------
    phases : DataFrame
        A ``phases.csv`` table (``frame``, ``time_s``, ``frac_<name>``, ``amorphous_fraction``).
    on, off, smooth, min_frames
        See :func:`presence`.

    Returns
    -------
    DataFrame
        ``phase, event ('appears'|'disappears'), frame, time_s`` sorted by frame; a component
        present in the first frame "appears" there.
    """
    table = phases.sort_values("frame")
    frames = table["frame"].to_numpy()
    times = table["time_s"].to_numpy() if "time_s" in table else np.full(len(table), np.nan)
    rows = []
    for name, col in component_columns(table).items():
        state = presence(table[col].to_numpy(), on=on, off=off, smooth=smooth,
                         min_frames=min_frames)
        if state.size == 0:
            continue
        if state[0]:
            rows.append((name, "appears", int(frames[0]), float(times[0])))
        for i in np.flatnonzero(np.diff(state.astype(int))) + 1:
            rows.append((name, "appears" if state[i] else "disappears", int(frames[i]),
                         float(times[i])))
    out = pd.DataFrame(rows, columns=TRANSITION_COLUMNS)
    return out.sort_values(["frame", "event", "phase"], kind="stable").reset_index(drop=True)
