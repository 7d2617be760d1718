"""Experiment context on the recording's time axis: electrochemistry/holder logs and dose.

A log is a CSV with a time column and any of voltage, current, temperature (units in the
header, e.g. ``time_s,voltage_V,current_nA,temperature_C``). Its clock may start earlier or
later than the camera's: ``offset_s`` is added to the log's times to put them on the
recording's axis. Values are interpolated to each frame's time; frames outside the log get NaN.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .._files import sha256_of  # noqa: F401 - re-exported for callers of this module
from ..errors import TemOperandoError

_TIME_NAMES = ("time_s", "time", "t", "t_s", "elapsed_s", "seconds")
_UNIT_FACTORS = {  # column suffix → (quantity, factor to SI-ish unit used in our tables)
    "v": ("voltage_V", 1.0), "mv": ("voltage_V", 1e-3),
    "a": ("current_A", 1.0), "ma": ("current_A", 1e-3), "ua": ("current_A", 1e-6), "µa": ("current_A", 1e-6),
    "na": ("current_A", 1e-9), "pa": ("current_A", 1e-12),
    "c": ("temperature_C", 1.0), "degc": ("temperature_C", 1.0), "k": ("temperature_C", None),
}


def _column_quantity(name: str) -> tuple[str, float | None] | None:
    low = name.strip().lower().replace(" ", "_").replace("(", "_").replace(")", "").replace("[", "_").replace("]", "")
    m = re.match(r"(voltage|potential|current|temperature|temp|bias)_*(.*)$", low)
    if not m:
        return None
    kind, unit = m.group(1), m.group(2).strip("_")
    if unit in _UNIT_FACTORS:
        return _UNIT_FACTORS[unit]
    default = {"voltage": "voltage_V", "potential": "voltage_V", "bias": "voltage_V", "current": "current_A",
               "temperature": "temperature_C", "temp": "temperature_C"}[kind]
    return default, 1.0


def read_log(path: str | os.PathLike, offset_s: float = 0.0) -> pd.DataFrame:
    """Read an electrochemistry / holder log into columns time_s, voltage_V, current_A, temperature_C.

    Parameters
    ----------
    path : path-like
        CSV (comma, semicolon or tab separated) with a header row.
    offset_s : float
        Added to the log's times to bring them onto the recording's time axis (s).

    Raises
    ------
    TemOperandoError
        The file is missing, unreadable, has no time column or no known quantity.
    """
    p = Path(path)
    if not p.is_file():
        raise TemOperandoError(f"{p}: no such log file")
    try:
        raw = pd.read_csv(p, sep=None, engine="python")
    except Exception as exc:
        raise TemOperandoError(f"{p}: cannot be read as a CSV log ({exc})") from None
    cols = {c.strip().lower(): c for c in raw.columns}
    tcol = next((cols[n] for n in _TIME_NAMES if n in cols), None)
    if tcol is None:
        raise TemOperandoError(f"{p}: the log has no time column (one of {', '.join(_TIME_NAMES)})")
    out = pd.DataFrame({"time_s": pd.to_numeric(raw[tcol], errors="coerce") + float(offset_s)})
    for c in raw.columns:
        if c == tcol:
            continue
        q = _column_quantity(str(c))
        if q is None:
            continue
        name, factor = q
        values = pd.to_numeric(raw[c], errors="coerce")
        out[name] = values - 273.15 if factor is None else values * factor
    if len(out.columns) == 1:
        raise TemOperandoError(f"{p}: the log has no voltage, current or temperature column")
    out = out.dropna(subset=["time_s"]).sort_values("time_s").reset_index(drop=True)
    if out.empty:
        raise TemOperandoError(f"{p}: the log has no rows with a numeric time")
    return out


def log_at(log: pd.DataFrame, time_s: np.ndarray) -> pd.DataFrame:
    """The log's quantities interpolated at ``time_s`` (NaN outside the log's time span)."""
    t = np.asarray(time_s, dtype=float)
    out = {}
    for c in log.columns:
        if c == "time_s":
            continue
        v = log[c].to_numpy(float)
        ok = np.isfinite(v)
        if ok.sum() < 1:
            out[c] = np.full(len(t), np.nan)
            continue
        val = np.interp(t, log["time_s"].to_numpy(float)[ok], v[ok], left=np.nan, right=np.nan)
        out[c] = val
    return pd.DataFrame(out)


def cumulative_dose(dose_e_per_px: np.ndarray, nm_per_px: float | None = None) -> pd.DataFrame:
    """Per-frame and cumulative electron dose (e⁻/px and, with a pixel size, e⁻/nm²)."""
    d = np.asarray(dose_e_per_px, dtype=float)
    out = pd.DataFrame({"dose_e_per_px": d, "cumulative_dose_e_per_px": np.nancumsum(d)})
    if nm_per_px and np.isfinite(nm_per_px):
        out["cumulative_dose_e_per_nm2"] = out["cumulative_dose_e_per_px"] / nm_per_px**2
    return out
