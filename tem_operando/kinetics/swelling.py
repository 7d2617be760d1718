"""Swelling per track: the swelling period, its rate with a 95% CI, expansions and steps."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import schema
from .fits import check_pixel_size, fit_line, ramp_fit, segment_fit

__all__ = ["SYSTEMATIC_WIDTH_PX", "merged_rows", "swelling_fit", "swelling_table"]

#: Systematic error of a segmented width at either end of the swelling period, px (1σ): where an
#: outline's edges fall is uncertain by pixels in a way that is correlated from frame to frame (the
#: reacted shell of a particle found a few frames late, the edge bias of a material) and so is not
#: averaged away by fitting many frames. Calibrated on the kinetics sweep with the shipped network
#: (segnet-s v12, ``models/experiments/kinetics_sweep.py``): the truth is inside the rate's 95 % CI for
#: 0.90 / 0.89 of the particles followed in seeds 0–23 / 24–47 with 2.5 px (2 px: 0.87 / 0.85; 1 px: 0.69 /
#: 0.76; the fit's scatter alone: ~0.5; 0.87 of all particles of seeds 0–23, the lost and the one-frame
#: jumps with no CI counted as misses), at a median half-width of ~1 × the rate — as far off as these rates
#: are (median error 0.32). On true masks the CI is then conservative. Library users with better masks
#: pass a smaller ``systematic_px``.
SYSTEMATIC_WIDTH_PX = 2.5


def swelling_fit(t: np.ndarray, w: np.ndarray, *, resolution_nm: float = 1.0, min_gain: float = 0.03,
                 systematic_px: float = SYSTEMATIC_WIDTH_PX) -> dict:
    """Find the swelling period of a width series and fit its rate.

    Parameters
    ----------
    t : ndarray
        Times, s.
    w : ndarray
        Width, nm.
    resolution_nm : float
        Measurement resolution (pixel size), nm: the floor of the residual scatter.
    min_gain : float
        Relative width gain below which the object is taken as not swelling.
    systematic_px : float
        Systematic error of the width at each end of the swelling period, px (1σ, independent at
        the two ends; :data:`SYSTEMATIC_WIDTH_PX`): added in quadrature to the fit's statistical
        error, so that the CI covers the segmentation's frame-correlated errors too (0: the fit's
        scatter alone).

    Returns
    -------
    dict
        ``onset_s, plateau_s, width0_nm, width1_nm, rate_nm_s, rate_ci95_nm_s, n_steps``
        (rate = slope of width vs time in the swelling period; for stepwise growth the mean
        slope from onset to plateau, pauses included; NaN rate and ``n_steps = 0`` when the
        object does not swell). The CI's systematic part is 1.96·√2·σ_sys / T for a period of
        T s (σ_sys = ``systematic_px`` · ``resolution_nm``).
    """
    if not (np.isfinite(systematic_px) and systematic_px >= 0):
        raise ValueError(f"systematic_px must be a finite number ≥ 0, got {systematic_px!r}")
    resolution_nm = check_pixel_size(resolution_nm, "resolution_nm")
    sys_nm = float(systematic_px) * resolution_nm
    t = np.asarray(t, float)
    w = np.asarray(w, float)
    ok = np.isfinite(t) & np.isfinite(w)
    t, w = t[ok], w[ok]
    nan = float("nan")
    out = {"onset_s": nan, "plateau_s": nan, "width0_nm": nan, "width1_nm": nan,
           "rate_nm_s": nan, "rate_ci95_nm_s": nan, "n_steps": 0}
    if t.size == 0:
        return out
    if t.size < 4:
        out.update(width0_nm=float(w[0]), width1_nm=float(w[-1]))
        return out
    r = ramp_fit(t, w)
    t1, t2, w0, w1 = r["t1"], r["t2"], r["y0"], r["y1"]
    out.update(width0_nm=w0, width1_nm=w1)
    gain = w1 - w0
    sig = max(np.sqrt(r["rss"] / max(t.size - 4, 1)), resolution_nm / np.sqrt(12))
    if gain < max(min_gain * abs(w0), 3 * sig / np.sqrt(2)):
        out.update(width0_nm=float(np.median(w)), width1_nm=float(np.median(w)))
        return out
    out.update(onset_s=t1, plateau_s=t2, n_steps=1)
    mean_slope = gain / (t2 - t1)
    # steps: segment the swelling period (with a margin) and count rising runs
    dt = float(np.median(np.diff(t)))
    win = (t >= t1 - 2 * dt) & (t <= t2 + 2 * dt)
    tw, ww = t[win], w[win]
    n_steps, segs = 1, None
    if tw.size >= 8:
        segs = segment_fit(tw, ww, max_segments=min(9, tw.size // 2), min_points=2)
        slopes = np.array([s[2] for s in segs])
        rising = slopes > 0.3 * mean_slope
        flat = np.abs(slopes) < 0.2 * mean_slope
        seg_len = np.array([s[1] - s[0] for s in segs])
        # a pause counts between two rising runs only if it is flat and ≥ 2 points long
        runs, in_run, pause_ok = 0, False, True
        for k in range(len(segs)):
            if rising[k]:
                if not in_run and (runs == 0 or pause_ok):
                    runs += 1
                in_run, pause_ok = True, False
            else:
                if flat[k] and seg_len[k] >= 2:
                    in_run, pause_ok = False, True
        n_steps = max(runs, 1)
    if n_steps == 1:
        inside = (t > t1) & (t < t2)
        if inside.sum() < 3:
            inside = (t >= t1) & (t <= t2)
        if inside.sum() >= 3:
            f = fit_line(t[inside], w[inside], floor_sigma=resolution_nm / np.sqrt(12))
            span = float(np.ptp(t[inside]))
            # the two ends' widths off independently (span of the frames fitted: conservative for short ramps)
            ci_sys = 1.96 * np.sqrt(2) * sys_nm / span if span > 0 else np.nan
            out.update(rate_nm_s=f.slope, rate_ci95_nm_s=float(np.hypot(f.ci95, ci_sys)))
        else:
            out.update(rate_nm_s=mean_slope)
        return out
    # stepwise: onset where the first rising segment leaves w0, plateau where the last reaches w1
    slopes = np.array([s[2] for s in segs])
    rising = np.flatnonzero(slopes > 0.3 * mean_slope)
    a, b, sl, ic = segs[rising[0]]
    on = (w0 - ic) / sl
    a2, b2, sl2, ic2 = segs[rising[-1]]
    pl = (w1 - ic2) / sl2
    T = pl - on if pl > on else t2 - t1
    rate = gain / T
    se_gain = sig * np.sqrt(2.0 / max(min((t < t1).sum(), (t > t2).sum(), 10), 1))
    se_T = np.sqrt(2) * (sig / np.sqrt(max(b - a, 2)) / sl + dt / np.sqrt(12))
    se = rate * np.sqrt((se_gain / gain) ** 2 + (se_T / T) ** 2)
    # the statistical part keeps its factor 2 (its se_gain / se_T alone cover only ~0.4-0.6 of white-noise
    # series); the systematic part, the two plateau widths off by σ_sys each, is added in quadrature
    ci_sys = 1.96 * rate * np.sqrt(2) * sys_nm / gain
    out.update(onset_s=float(on), plateau_s=float(pl), rate_nm_s=float(rate),
               rate_ci95_nm_s=float(np.hypot(2 * 1.96 * se, ci_sys)), n_steps=int(n_steps))
    return out


def merged_rows(objects: pd.DataFrame, *, area_tolerance: float = 0.3, min_share: float = 0.1,
                max_gap_frames: int = 10, min_rows: int = 3, window: int = 3) -> pd.Series:
    """Rows whose outline is two or more tracked objects taken together.

    Two touching objects that a segmentation outlines as one (in some frames) leave the linked
    tracks with gaps and give one track — or a short track of its own — the merged outline, whose
    width and area jump. Frames are visited in order, remembering each track's rows that are not
    merged; a track's area is the median of its last ``window`` such rows. A row at frame k is
    merged when at least two tracks — its own and *partners*: tracks missing at k, seen within
    ``max_gap_frames`` before and with at least ``min_rows`` unmerged rows (not a speck or a
    one-frame piece) — lie within its reach (their last centroid no further from its centroid
    than half its length plus half theirs), its area is their areas' sum within
    ± ``area_tolerance`` and twice as close to it as to the biggest one's alone, and the others
    add at least ``min_share`` of the biggest. Tracks born within half the length of a track with
    at least ``min_rows`` unmerged rows (seen in this frame or up to ``max_gap_frames`` before),
    whose areas — with that track's row in this frame, if any — add up to its last area (the same
    test), are pieces of it, an over-split outline; pieces of one object are never each other's
    partners, so an over-split that heals is the object whole again, not a merge. Partners of a
    merged row count as seen at that frame, so a merge is followed for as long as it lasts.

    Parameters
    ----------
    objects : DataFrame
        Linked objects (``track_id, frame, x_nm, y_nm, area_nm2, length_nm``).
    area_tolerance : float
        Relative deviation from the summed area still taken as a merge.
    min_share : float
        Smallest area the other parts add, relative to the biggest part.
    max_gap_frames : int
        How far back a missing track's last row counts, frames.
    min_rows : int
        Fewest rows (not merged) a partner must have.
    window : int
        Rows (not merged) whose median area is a track's area.

    Returns
    -------
    Series of bool
        Aligned with ``objects``: True for the merged rows (kept in ``objects.csv``, left out of
        the swelling fits).
    """
    flag = np.zeros(len(objects), bool)
    if objects.empty:
        return pd.Series(flag, index=objects.index)
    tid = objects["track_id"].to_numpy(np.int64)
    frm = objects["frame"].to_numpy(np.int64)
    x, y = objects["x_nm"].to_numpy(float), objects["y_nm"].to_numpy(float)
    area, length = objects["area_nm2"].to_numpy(float), objects["length_nm"].to_numpy(float)
    order = np.argsort(frm, kind="stable")
    bounds = np.flatnonzero(np.diff(frm[order])) + 1
    rows_of: dict[int, list[int]] = {}  # track → its rows that are not merged, in frame order
    seen: dict[int, int] = {}  # track → the last frame it was seen (or was part of a merge)
    first: dict[int, int] = {}  # track → its first frame
    family: dict[int, int] = {}  # track → the track it (and its siblings) split off at its first frame

    def fam(t: int) -> int:
        return family.get(t, t)

    def area_of(t: int) -> float:
        rs = rows_of.get(t, [])
        a = area[rs[-window:]]
        return float(np.nanmedian(a)) if np.isfinite(a).any() else float("nan")

    def explains(a_row: float, parts: np.ndarray) -> bool:
        # the sum explains the area, twice as well as the biggest part alone, and the others
        # are not specks beside it
        if parts.size < 2 or not np.isfinite(parts).all():
            return False
        big, total = parts.max(), parts.sum()
        dev_sum, dev_big = abs(a_row / total - 1), abs(a_row / big - 1)
        return bool(dev_sum <= area_tolerance and 2 * dev_sum < dev_big and total - big >= min_share * big)

    for rows in np.split(order, bounds):
        k = int(frm[rows[0]])
        here = set(tid[rows].tolist())
        seen = {t: f for t, f in seen.items() if f >= k - max_gap_frames}
        # over-splits: tracks born here near a track seen whole for a while (here or just before)
        # whose area their areas (with its own row here, if any) add up to are its family
        new = [r for r in rows if int(tid[r]) not in first]
        for r in new:
            first[int(tid[r])] = k
        if new:
            new = np.array(new, np.int64)
            row_of_here = {int(tid[o]): int(o) for o in rows}
            for p in [t for t in seen if len(rows_of.get(t, [])) >= min_rows]:
                last = rows_of[p][-1]
                pieces = new[np.hypot(x[new] - x[last], y[new] - y[last]) <= 0.5 * length[last]]
                if pieces.size == 0:
                    continue
                parts = area[np.append(pieces, row_of_here[p]) if p in row_of_here else pieces]
                if explains(float(area[last]), parts):  # its area just before (it may be swelling)
                    for r in pieces:
                        family[int(tid[r])] = fam(p)
        partners = [t for t in seen if t not in here and len(rows_of.get(t, [])) >= min_rows]
        if partners:
            p_ids = np.array(partners, np.int64)
            p_last = np.array([rows_of[t][-1] for t in partners], np.int64)
            for r in rows:
                own = int(tid[r])
                reach = np.hypot(x[p_last] - x[r], y[p_last] - y[r]) <= 0.5 * (length[r] + length[p_last])
                near = p_ids[reach].tolist()
                # pieces of one over-split object: the row is that object whole again
                if own in rows_of:
                    near = [t for t in near if fam(t) != fam(own)]
                elif len({fam(t) for t in near}) == 1:
                    near = []
                if not near:
                    continue
                parts = np.array([area_of(t) for t in near] + ([area_of(own)] if own in rows_of else []))
                if explains(float(area[r]), parts):
                    flag[r] = True
                    for t in near:  # the partners live on inside the merged outline
                        seen[t] = k
        for r in rows:
            if not flag[r]:
                rows_of.setdefault(int(tid[r]), []).append(int(r))
                seen[int(tid[r])] = k
    return pd.Series(flag, index=objects.index)


def _gain(after: float, before: float) -> float:
    """Relative change ``after / before − 1``; NaN unless ``before`` is a positive number."""
    return float(after) / float(before) - 1 if np.isfinite(before) and before > 0 else float("nan")


def _levels(t: np.ndarray, y: np.ndarray, t1: float, t2: float) -> tuple[float, float]:
    """Median before ``t1`` and after ``t2`` (first/last values if a side is empty)."""
    ok = np.isfinite(y)
    t, y = t[ok], y[ok]
    if y.size == 0:
        return float("nan"), float("nan")
    if not np.isfinite(t1):
        return float(np.median(y)), float(np.median(y))
    pre, post = y[t <= t1], y[t >= t2]
    return (float(np.median(pre)) if pre.size else float(y[0]),
            float(np.median(post)) if post.size else float(y[-1]))


#: a track whose every outline is merged with a neighbour's gets these as NaN (and no steps)
_NAN_WHEN_MERGED = ("width0_nm", "width1_nm", "swelling_rate_nm_s", "swelling_rate_ci95_nm_s", "width_expansion_pct",
                    "length_expansion_pct", "area_expansion_pct", "volume_expansion_pct", "onset_s", "plateau_s")
#: filled later (fronts: :func:`front_table`; fractures: ``analyze.fracture_events``) for every track
_LATER = {"front_velocity_nm_s": np.nan, "front_velocity_ci95_nm_s": np.nan, "front_exponent_n": np.nan,
          "diffusion_coefficient_nm2_s": np.nan, "fracture_frame": np.nan}


def swelling_table(objects: pd.DataFrame, *, nm_per_px: float = 1.0, fronts: pd.DataFrame | None = None,
                   systematic_px: float = SYSTEMATIC_WIDTH_PX) -> pd.DataFrame:
    """One row per track: swelling period, rate with CI, expansions and steps.

    Parameters
    ----------
    objects : DataFrame
        Linked objects (``track_id``, ``frame``, ``time_s``, ``x_nm``, ``y_nm``, ``width_nm``,
        ``length_nm``, ``area_nm2``, ``kind``; wires also ``width_pristine_nm``,
        ``width_swollen_nm``). Rows whose outline is two tracked objects (:func:`merged_rows`)
        are left out of the fits; a track of such rows only gets NaN widths, rate and expansions.
    nm_per_px : float
        Pixel size, nm (the width resolution).
    fronts : DataFrame, optional
        ``fronts.csv`` rows; for wires the length expansion is then the slope of length vs front
        position (dL/dx = ε/(1 + ε)), i.e. that of the fully reacted wire.
    systematic_px : float
        The width's systematic error at each end of the swelling period, px, in the rate's CI
        (:func:`swelling_fit`).

    Returns
    -------
    DataFrame
        The ``tracks.csv`` columns (front columns NaN, filled by :func:`front_table`) plus
        ``onset_s`` and ``plateau_s``. Expansions are of the fully reacted object: particles
        from the plateau levels (volume ∝ width²·length, = d³ for a sphere); wires from the
        pristine width ahead of and the swollen width behind the front (volume ∝ width²·length).

    Raises
    ------
    ValueError
        If ``nm_per_px`` is not a finite pixel size > 0 (an uncalibrated recording).
    """
    nm_per_px = check_pixel_size(nm_per_px, "nm_per_px")
    rows = []
    if objects.empty:
        out = schema.empty("tracks")
        out["onset_s"] = pd.Series(dtype=float)
        out["plateau_s"] = pd.Series(dtype=float)
        return out
    objects = objects.reset_index(drop=True)
    merged = merged_rows(objects)
    for tid, g_all in objects.sort_values("frame").groupby("track_id", sort=True):
        # frames where the outline is merged with a neighbour's are left out of the fits; a track
        # of merged outlines only is listed with no widths, rate or expansions (they would be of
        # two objects taken together)
        g = g_all[~merged[g_all.index].to_numpy()]
        kind = str(g_all["kind"].iloc[0]) if "kind" in g_all else "particle"
        ids = {"track_id": int(tid), "kind": kind, "first_frame": int(g_all["frame"].min()),
               "last_frame": int(g_all["frame"].max()), "n_frames": int(g_all["frame"].nunique())}
        if g.empty:  # no fit at all
            rows.append({**ids, **dict.fromkeys(_NAN_WHEN_MERGED, np.nan), "n_steps": 0, **_LATER})
            continue
        t = g["time_s"].to_numpy(float)
        fit = swelling_fit(t, g["width_nm"].to_numpy(float), resolution_nm=nm_per_px, systematic_px=systematic_px)
        t1, t2 = fit["onset_s"], fit["plateau_s"]
        L0, L1 = _levels(t, g["length_nm"].to_numpy(float), t1, t2)
        A0, A1 = _levels(t, g["area_nm2"].to_numpy(float), t1, t2)
        w0, w1 = fit["width0_nm"], fit["width1_nm"]
        el = _gain(L1, L0)
        if kind == "wire" and "width_pristine_nm" in g:
            wp = g["width_pristine_nm"].to_numpy(float)
            ws = g["width_swollen_nm"].to_numpy(float)
            if np.isfinite(wp).any():
                w0 = float(np.nanmedian(wp))
            fin = np.flatnonzero(np.isfinite(ws))
            if fin.size:
                w1 = float(np.nanmedian(ws[fin[-max(3, fin.size // 5):]]))
            el = 0.0
            if fronts is not None and not fronts.empty:
                fr = fronts[fronts["track_id"] == tid][["frame", "front_position_nm"]]
                m = g[["frame", "length_nm"]].merge(fr, on="frame")
                m = m[m["front_position_nm"] > 0]
                if len(m) >= 4 and np.ptp(m["front_position_nm"]) > 5 * nm_per_px:
                    s = fit_line(m["front_position_nm"], m["length_nm"]).slope
                    el = float(s / (1 - s)) if np.isfinite(s) and s < 0.9 else np.nan
            ew = _gain(w1, w0)
            area_pct = 100 * ((1 + ew) * (1 + el) - 1)
        else:
            ew = _gain(w1, w0)
            area_pct = 100 * _gain(A1, A0)
        rows.append({
            **ids,
            "width0_nm": w0, "width1_nm": w1,
            "swelling_rate_nm_s": fit["rate_nm_s"], "swelling_rate_ci95_nm_s": fit["rate_ci95_nm_s"],
            "width_expansion_pct": 100 * ew, "length_expansion_pct": 100 * el,
            "area_expansion_pct": area_pct,
            "volume_expansion_pct": 100 * ((1 + ew) ** 2 * (1 + el) - 1),
            "n_steps": int(fit["n_steps"]), "onset_s": t1, "plateau_s": t2, **_LATER,
        })
    return schema.conform(pd.DataFrame(rows), "tracks")
