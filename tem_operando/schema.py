"""Every column of the results folder, defined once: name, dtype, unit, meaning.

Stages agree on these names instead of importing each other (trackpy's ``feature`` and
``linking`` share column names the same way). The tables are the contract of
``shared/DESIGN.md``; users' scripts rely on them. Use :func:`empty` for a table with no rows
and :func:`conform` to check and order a table before it is written.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Column:
    """One column: its name, numpy/pandas dtype, unit (``""`` for none) and meaning."""

    name: str
    dtype: str
    unit: str
    doc: str


def _cols(*rows: tuple[str, str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(*r) for r in rows)


FRAMES = _cols(
    ("frame", "int64", "", "frame number, from 0"),
    ("time_s", "float64", "s", "acquisition time"),
    ("mode", "str", "", "'image' or 'diffraction'"),
    ("drift_x_nm", "float64", "nm", "sample drift along x relative to the first image frame"),
    ("drift_y_nm", "float64", "nm", "sample drift along y relative to the first image frame"),
    ("n_objects", "int64", "", "objects found in the frame"),
)

OBJECTS = _cols(
    ("frame", "int64", "", "frame number"),
    ("time_s", "float64", "s", "acquisition time"),
    ("track_id", "int64", "", "object identity across frames"),
    ("x_nm", "float64", "nm", "centroid x, drift-corrected"),
    ("y_nm", "float64", "nm", "centroid y, drift-corrected"),
    ("area_nm2", "float64", "nm^2", "projected area"),
    ("width_nm", "float64", "nm", "width across the long axis (diameter of a round particle)"),
    ("length_nm", "float64", "nm", "length along the long axis"),
    ("reacted_fraction", "float64", "", "share of the object's area in the reacted class"),
)

TRACKS = _cols(
    ("track_id", "int64", "", "object identity"),
    ("kind", "str", "", "'particle' or 'wire'"),
    ("first_frame", "int64", "", "first frame the object is seen"),
    ("last_frame", "int64", "", "last frame the object is seen"),
    ("n_frames", "int64", "", "frames the object is seen in"),
    ("width0_nm", "float64", "nm", "width before swelling"),
    ("width1_nm", "float64", "nm", "width after swelling"),
    ("swelling_rate_nm_s", "float64", "nm/s", "slope of width vs time in the swelling period"),
    ("swelling_rate_ci95_nm_s", "float64", "nm/s", "95% confidence half-width of the swelling rate"),
    ("width_expansion_pct", "float64", "%", "100 × (width1/width0 − 1)"),
    ("length_expansion_pct", "float64", "%", "100 × (length1/length0 − 1)"),
    ("area_expansion_pct", "float64", "%", "100 × (area1/area0 − 1), projected area"),
    ("volume_expansion_pct", "float64", "%", "estimated volume change (wire ∝ width², particle ∝ d³)"),
    ("front_velocity_nm_s", "float64", "nm/s", "reaction-front velocity along a wire"),
    ("front_velocity_ci95_nm_s", "float64", "nm/s", "95% confidence half-width of the front velocity"),
    ("front_exponent_n", "float64", "", "exponent n of x ∝ t^n"),
    ("diffusion_coefficient_nm2_s", "float64", "nm^2/s", "effective D = x²/(2t) when n ≈ 0.5"),
    ("n_steps", "int64", "", "discrete steps in the width (stepwise sodiation)"),
    ("fracture_frame", "float64", "", "frame where the object splits (NaN if never)"),
)

FRONTS = _cols(
    ("frame", "int64", "", "frame number"),
    ("time_s", "float64", "s", "acquisition time"),
    ("track_id", "int64", "", "the wire"),
    ("front_position_nm", "float64", "nm", "from the sodium-contact end, along the wire axis"),
)

PHASES_FIXED = _cols(
    ("frame", "int64", "", "frame number"),
    ("time_s", "float64", "s", "acquisition time"),
    ("best_phase", "str", "", "library phase name or 'amorphous'"),
    ("confidence", "float64", "", "0-1"),
    ("amorphous_fraction", "float64", "", "share of the amorphous halo in the fit"),
)

RINGS = _cols(
    ("frame", "int64", "", "frame number"),
    ("q_inv_nm", "float64", "1/nm", "ring position"),
    ("d_nm", "float64", "nm", "lattice spacing 1/q"),
    ("intensity", "float64", "counts", "integrated ring intensity above background"),
    ("phase", "str", "", "assigned library phase ('' if none)"),
    ("hkl", "str", "", "assigned reflection family"),
)

#: Provenance columns written after the contract's columns (issue 8): every number of a row can be
#: traced to the model that segmented it and to the ``corrections.jsonl`` entries that changed it.
PROVENANCE: dict[str, tuple[Column, ...]] = {
    "tracks": _cols(
        ("model", "str", "", "segmentation model name (summary.json 'model')"),
        ("model_sha256", "str", "", "sha256 of the model file"),
        ("corrections", "str", "", "ids of the corrections.jsonl entries behind the row, ';'-separated"),
    ),
    "phases": _cols(
        ("corrections", "str", "", "ids of the corrections.jsonl entries behind the row, ';'-separated"),
    ),
}

TABLES: dict[str, tuple[Column, ...]] = {
    "frames": FRAMES,
    "objects": OBJECTS,
    "tracks": TRACKS,
    "fronts": FRONTS,
    "phases": PHASES_FIXED,
    "rings": RINGS,
}


def phase_column(name: str) -> str:
    """The ``phases.csv`` column holding the fraction of phase ``name``."""
    return f"frac_{name}"


def columns(table: str, phases: list[str] | None = None) -> list[str]:
    """Column names of a results table, in contract order (``phases`` adds ``frac_<name>``)."""
    cols = [c.name for c in TABLES[table]]
    if table == "phases":
        cols += [phase_column(p) for p in (phases or [])]
    return cols


def _dtype(c: Column):
    return object if c.dtype == "str" else c.dtype


def empty(table: str, phases: list[str] | None = None) -> pd.DataFrame:
    """A table with the contract's columns and dtypes and no rows."""
    out = {c.name: pd.Series(dtype=_dtype(c)) for c in TABLES[table]}
    if table == "phases":
        out.update({phase_column(p): pd.Series(dtype="float64") for p in (phases or [])})
    return pd.DataFrame(out)


def conform(df: pd.DataFrame, table: str, phases: list[str] | None = None) -> pd.DataFrame:
    """Check that ``df`` has every contract column and return it in contract order.

    Extra columns are kept after the contract's ones. Missing columns raise ``ValueError``.
    Integer columns that hold NaN (an undefined value) stay float.
    """
    want = columns(table, phases)
    missing = [c for c in want if c not in df.columns]
    if missing:
        raise ValueError(f"{table} table lacks columns {missing}")
    out = df[want + [c for c in df.columns if c not in want]].copy()
    for c in TABLES[table]:
        if c.dtype == "int64" and out[c.name].notna().all():
            out[c.name] = out[c.name].astype(np.int64)
        elif c.dtype == "float64":
            out[c.name] = out[c.name].astype(np.float64)
    return out


def units(table: str) -> dict[str, str]:
    """Column name → unit for a table (for plots and the report)."""
    return {c.name: c.unit for c in TABLES[table]}


def join_ids(ids) -> str:
    """Correction ids as written in a ``corrections`` column: sorted, ``;``-separated (``""`` for none)."""
    return ";".join(str(i) for i in sorted({int(i) for i in ids}))


def split_ids(text) -> list[int]:
    """The ids of a ``corrections`` cell (inverse of :func:`join_ids`)."""
    if text is None or (isinstance(text, float) and text != text):
        return []
    return [int(t) for t in str(text).split(";") if t.strip()]
