"""Tie the kinetics together: tracks.csv and fronts.csv from linked objects; fracture; statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import schema
from .fronts import SYSTEMATIC_FRONT_PX, front_positions, front_table
from .swelling import SYSTEMATIC_WIDTH_PX, swelling_table

__all__ = ["analyze_kinetics", "fracture_events", "population_stats"]


def fracture_events(objects: pd.DataFrame, *, area_tolerance: float = 0.25) -> pd.Series:
    """Frame at which each track splits into pieces (NaN if never).

    A track T fractures at frame k when a new track appears at k next to it (the newcomer's
    centroid lies within T's extent at k − 1) and T's area at k plus the newcomer's is within
    ``area_tolerance`` of T's area at k − 1 (the piece came off T).

    Returns
    -------
    Series
        Indexed by track_id, the first fracture frame (float, NaN if none).
    """
    if objects.empty:
        return pd.Series(dtype=float)
    out = pd.Series(np.nan, index=np.unique(objects["track_id"]), dtype=float)
    firsts = objects.groupby("track_id")["frame"].min()
    ob = objects.sort_values("frame", kind="stable")
    fr = ob["frame"].to_numpy()

    def at(f):  # the rows of frame f (only the frames where a track starts and the ones before)
        return ob.iloc[np.searchsorted(fr, f, "left"):np.searchsorted(fr, f, "right")]

    first_frame = fr[0]
    for tid, k in firsts.items():
        prev = at(k - 1)
        if k == first_frame or prev.empty:
            continue
        now = at(k)
        new = now[now["track_id"] == tid].iloc[0]
        cur = now.set_index("track_id")
        for _, p in prev.iterrows():
            pid = p["track_id"]
            if pid not in cur.index or pid == tid:
                continue
            reach = 0.5 * max(p["length_nm"], p["width_nm"])
            if np.hypot(new["x_nm"] - p["x_nm"], new["y_nm"] - p["y_nm"]) > reach:
                continue
            a_sum = cur.loc[pid, "area_nm2"] + new["area_nm2"]
            if abs(a_sum / p["area_nm2"] - 1) <= area_tolerance and np.isnan(out[pid]):
                out[pid] = float(k)
    return out


def analyze_kinetics(
    objects: pd.DataFrame,
    *,
    nm_per_px: float = 1.0,
    contact_nm: dict[int, tuple[float, float]] | None = None,
    systematic_width_px: float = SYSTEMATIC_WIDTH_PX,
    systematic_front_px: float = SYSTEMATIC_FRONT_PX,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``tracks.csv`` and ``fronts.csv`` from linked objects (all frames of a recording).

    Parameters
    ----------
    objects : DataFrame
        From :func:`~tem_operando.track.measure_objects` then
        :func:`~tem_operando.track.link_objects` (must have ``track_id``).
    nm_per_px : float
        Pixel size, nm (measurement resolution).
    contact_nm : dict, optional
        Per-wire override of the sodium-contact end: track id → (x, y) nm.
    systematic_width_px, systematic_front_px : float
        The segmentation's systematic error of a width and of a front position, px, added to the
        confidence intervals (:data:`~.swelling.SYSTEMATIC_WIDTH_PX`, calibrated for the shipped model;
        :data:`~.fronts.SYSTEMATIC_FRONT_PX`). The pipeline records the values it used in
        ``summary.json`` (``systematic_width_px``, ``systematic_front_px``); corrections replay with them.

    Returns
    -------
    tracks : DataFrame
        ``tracks.csv`` columns plus ``onset_s``, ``plateau_s``, ``rate_law``, ``front_onset_s``,
        ``contact_x_nm``, ``contact_y_nm``.
    fronts : DataFrame
        ``fronts.csv`` columns.
    """
    fronts = front_positions(objects, contact_nm)
    tracks = swelling_table(objects, nm_per_px=nm_per_px, fronts=fronts, systematic_px=systematic_width_px)
    extra = ["rate_law", "front_onset_s", "contact_x_nm", "contact_y_nm"]
    if tracks.empty:
        for c in extra:
            tracks[c] = pd.Series(dtype=object if c == "rate_law" else float)
        return tracks, schema.conform(fronts, "fronts")[schema.columns("fronts")]
    tracks["rate_law"] = None
    ft = front_table(fronts, nm_per_px=nm_per_px, systematic_px=systematic_front_px)
    if not ft.empty:
        ft = ft.set_index("track_id")
        idx = tracks["track_id"].isin(ft.index)
        tid = tracks.loc[idx, "track_id"]
        for c in ("front_velocity_nm_s", "front_velocity_ci95_nm_s", "front_exponent_n",
                  "diffusion_coefficient_nm2_s", "rate_law", "front_onset_s"):
            tracks.loc[idx, c] = ft.loc[tid, c].to_numpy()
        # a wire's steps are those of its front
        tracks.loc[idx, "n_steps"] = ft.loc[tid, "front_n_steps"].to_numpy()
        contacts = fronts.groupby("track_id")[["contact_x_nm", "contact_y_nm"]].first()
        tracks.loc[idx, "contact_x_nm"] = contacts.loc[tid, "contact_x_nm"].to_numpy()
        tracks.loc[idx, "contact_y_nm"] = contacts.loc[tid, "contact_y_nm"].to_numpy()
    for c in extra:
        if c not in tracks:
            tracks[c] = np.nan
    frac = fracture_events(objects)
    tracks["fracture_frame"] = tracks["track_id"].map(frac).astype(float)
    return schema.conform(tracks, "tracks"), schema.conform(fronts, "fronts")[schema.columns("fronts")]


def population_stats(tracks: pd.DataFrame, kind: str | None = "particle") -> pd.DataFrame:
    """Distribution of swelling rates and expansions over every object of a kind.

    Returns
    -------
    DataFrame
        One row per quantity (swelling_rate_nm_s, width/length/area/volume_expansion_pct,
        front_velocity_nm_s) with n, mean, std, sem, median, q25, q75, min, max.
    """
    t = tracks if kind is None else tracks[tracks["kind"] == kind]
    qs = ["swelling_rate_nm_s", "width_expansion_pct", "length_expansion_pct", "area_expansion_pct",
          "volume_expansion_pct", "front_velocity_nm_s"]
    rows = []
    for q in qs:
        v = t[q].to_numpy(float) if q in t else np.array([])
        v = v[np.isfinite(v)]
        n = v.size
        rows.append({"quantity": q, "unit": schema.units("tracks").get(q, ""), "n": n,
                     "mean": v.mean() if n else np.nan, "std": v.std(ddof=1) if n > 1 else np.nan,
                     "sem": v.std(ddof=1) / np.sqrt(n) if n > 1 else np.nan,
                     "median": np.median(v) if n else np.nan,
                     "q25": np.percentile(v, 25) if n else np.nan, "q75": np.percentile(v, 75) if n else np.nan,
                     "min": v.min() if n else np.nan, "max": v.max() if n else np.nan})
    return pd.DataFrame(rows)
