"""Reaction fronts along wires: contact end, front position per frame, rate law and velocity."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .. import schema
from .fits import check_pixel_size, rate_law_fit

__all__ = ["SYSTEMATIC_FRONT_PX", "front_positions", "front_table"]

#: Systematic error of a front position at either end of its run, px (1σ): the reacted part's end is
#: found a little late or early in a way that is correlated from frame to frame (as a particle's width,
#: :data:`~.swelling.SYSTEMATIC_WIDTH_PX`). On the kinetics sweep's v7 masks (21 linear or stepwise
#: fronts followed, seeds 0–47) the truth is inside the velocity's CI for 0.43 of them without it, 0.62
#: with it; on segnet-s v12's (30 linear or stepwise fronts) 0.30 / 0.40, and 0.43 / 0.50 with 2 / 3 px:
#: the misses are fronts whose law is called wrong or whose reacted part is overcalled by tens of nm,
#: which a wider CI does not cover, so it stays at 1 px.
SYSTEMATIC_FRONT_PX = 1.0


def front_positions(objects: pd.DataFrame, contact_nm: dict[int, tuple[float, float]] | None = None) -> pd.DataFrame:
    """Front position of every wire in every frame, from the measured axial class profiles.

    Parameters
    ----------
    objects : DataFrame
        Linked objects with the wire columns of :func:`~tem_operando.track.measure_objects`
        (``end_a_x_nm`` …, ``reacted_length_nm``, ``reacted_lo_nm``, ``reacted_hi_nm``).
    contact_nm : dict, optional
        User override: track id → (x, y) of the sodium-contact end, nm (drift-corrected). By
        default the contact end is the end the reacted class starts from.

    Returns
    -------
    DataFrame
        ``fronts.csv`` columns (frame, time_s, track_id, front_position_nm, measured from the
        contact end along the axis; 0 before the reaction starts) plus ``contact_x_nm``,
        ``contact_y_nm`` (the contact end used, per track). A frame whose wire shows no reacted
        part after two consecutive earlier rows did has no row (the front was missed there).
    """
    cols = schema.columns("fronts") + ["contact_x_nm", "contact_y_nm"]
    if objects.empty or "kind" not in objects or not (objects["kind"] == "wire").any():
        out = schema.empty("fronts")
        out["contact_x_nm"] = pd.Series(dtype=float)
        out["contact_y_nm"] = pd.Series(dtype=float)
        return out
    parts = []
    for tid, g in objects[objects["kind"] == "wire"].sort_values("frame").groupby("track_id"):
        ea = g[["end_a_x_nm", "end_a_y_nm"]].to_numpy(float)
        eb = g[["end_b_x_nm", "end_b_y_nm"]].to_numpy(float)
        L = np.hypot(*(eb - ea).T)
        lo, hi = g["reacted_lo_nm"].to_numpy(float), g["reacted_hi_nm"].to_numpy(float)
        rl = np.nan_to_num(g["reacted_length_nm"].to_numpy(float))
        has = np.isfinite(lo)
        side_a = lo <= (L - hi)
        if contact_nm is not None and int(tid) in contact_nm:
            c = np.asarray(contact_nm[int(tid)], float)
            use_a = np.hypot(*(ea - c).T) <= np.hypot(*(eb - c).T)
            front = np.where(has, np.where(use_a, hi, L - lo), 0.0)
            contact = c
        else:
            front = np.where(has, rl, 0.0)
            ends = np.where(side_a[:, None], ea, eb)[has]
            if ends.shape[0]:
                contact = np.median(ends, axis=0)
            else:
                contact = np.array([np.nan, np.nan])
        # no reacted part found in a frame once the front is established (found in two rows in a
        # row): the front was missed there (a low-dose frame, a wire outlined in pieces), it is not
        # back at the contact end — no row, rather than a 0 that would pull the fits and the
        # rate-law choice. Before that a lone detection (a few noisy pixels) keeps the zeros.
        established = np.cumsum(has & np.r_[False, has[:-1]]) > 0
        keep = has | ~established
        parts.append(pd.DataFrame({
            "frame": g["frame"].to_numpy(np.int64)[keep], "time_s": g["time_s"].to_numpy(float)[keep],
            "track_id": np.int64(tid), "front_position_nm": np.maximum(front, 0.0)[keep],
            "contact_x_nm": contact[0], "contact_y_nm": contact[1],
        }))
    return schema.conform(pd.concat(parts, ignore_index=True)[cols], "fronts")


def front_table(fronts: pd.DataFrame, *, nm_per_px: float = 1.0,
                systematic_px: float = SYSTEMATIC_FRONT_PX) -> pd.DataFrame:
    """Rate law, velocity with 95% CI, exponent and diffusion coefficient per wire.

    The velocity's CI includes a systematic error of the front position of ``systematic_px`` px
    at either end of its run (:data:`SYSTEMATIC_FRONT_PX`; :func:`~.fits.rate_law_fit`'s
    ``systematic``).

    Returns
    -------
    DataFrame
        track_id, front_velocity_nm_s (linear law: v; stepwise: mean velocity from the onset to
        the end of the last move, pauses included; NaN for the √t law, whose velocity is not
        constant), front_velocity_ci95_nm_s, front_exponent_n (of x ∝ (t − t0)ⁿ; NaN for
        steps), diffusion_coefficient_nm2_s (k²/2 = x²/(2(t − t0)) for the √t law), n_steps,
        rate_law, front_onset_s, bic_linear, bic_sqrt, bic_steps.

    Raises
    ------
    ValueError
        If ``nm_per_px`` is not a finite pixel size > 0 (an uncalibrated recording).
    """
    nm_per_px = check_pixel_size(nm_per_px, "nm_per_px")
    rows = []
    for tid, g in fronts.sort_values("frame").groupby("track_id"):
        f = rate_law_fit(g["time_s"].to_numpy(float), g["front_position_nm"].to_numpy(float),
                         resolution=nm_per_px, systematic=systematic_px * nm_per_px)
        rows.append({
            "track_id": int(tid), "front_velocity_nm_s": f.velocity_nm_s,
            "front_velocity_ci95_nm_s": f.velocity_ci95_nm_s, "front_exponent_n": f.exponent_n,
            "diffusion_coefficient_nm2_s": f.diffusion_nm2_s, "front_n_steps": f.n_steps,
            "rate_law": f.law, "front_onset_s": f.t0_s,
            "bic_linear": f.bic.get("linear", np.nan), "bic_sqrt": f.bic.get("sqrt", np.nan),
            "bic_steps": f.bic.get("steps", np.nan),
        })
    cols = ["track_id", "front_velocity_nm_s", "front_velocity_ci95_nm_s", "front_exponent_n",
            "diffusion_coefficient_nm2_s", "front_n_steps", "rate_law", "front_onset_s",
            "bic_linear", "bic_sqrt", "bic_steps"]
    return pd.DataFrame(rows, columns=cols)
