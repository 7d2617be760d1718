"""Reciprocal calibration (1/nm per px): given, from metadata, or fitted to a standard (Au, Al).

The fit compares the radial profile of a standard pattern with the standard's ring list: a coarse
search over a logarithmic grid of calibrations maximises the match of the predicted ring comb
with the background-subtracted profile; the matched ring radii then give ``q = c · r`` by least
squares through the origin, with the standard error of ``c`` from the scatter of ``q_k / r_k``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import CalibrationError
from .phases import get_phase, ring_list
from .profile import estimate_background, refine_peak, ring_weights

__all__ = ["Calibration", "calibrate_from_profile", "require_calibration"]

#: How to give a calibration, quoted by every CalibrationError of this package.
HOW_TO_CALIBRATE = (
    "give it with --inv-nm-per-px Q (inv_nm_per_px=Q), or fit it from a standard pattern with "
    "--calibrate-with Au (calibrate_with='Au', also Al)"
)


@dataclass(frozen=True)
class Calibration:
    """A reciprocal calibration.

    Attributes
    ----------
    inv_nm_per_px : float
        1/nm per px of nominal radius.
    uncertainty_inv_nm_per_px : float
        Standard error (0 when given rather than fitted).
    source : str
        ``"given"``, ``"metadata"`` or ``"fitted:<phase>"``.
    n_rings : int
        Rings used in a fit (0 otherwise).
    """

    inv_nm_per_px: float
    uncertainty_inv_nm_per_px: float = 0.0
    source: str = "given"
    n_rings: int = 0

    @property
    def relative_uncertainty(self) -> float:
        """Standard error relative to the value."""
        return self.uncertainty_inv_nm_per_px / self.inv_nm_per_px


def require_calibration(inv_nm_per_px: float | None, path: str | None = None) -> float:
    """The calibration as a float, or a :class:`CalibrationError` saying how to give one."""
    try:
        v = float(inv_nm_per_px)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        v = float("nan")
    if not (math.isfinite(v) and v > 0):
        what = "missing" if inv_nm_per_px is None else f"invalid ({inv_nm_per_px!r})"
        raise CalibrationError(path, f"the diffraction calibration (1/nm per px) is {what}: "
                               f"{HOW_TO_CALIBRATE}")
    return v


def calibrate_from_profile(profile: np.ndarray, r_px: np.ndarray, phase: str = "Au", *,
                           r_fit_min_px: float | None = None, search_range=(0.002, 0.5),
                           path: str | None = None) -> Calibration:
    """Fit the calibration from the radial profile of a standard pattern.

    Parameters
    ----------
    profile : ndarray
        Azimuthal-mean profile (counts per px) on nominal radii ``r_px``.
    r_px : ndarray
        Uniform bin centres in px.
    phase : str
        The standard's library name (``"Au"``, ``"Al"`` or any phase).
    r_fit_min_px : float, optional
        Ignore radii below this (the central beam); default 5 % of the largest radius.
    search_range : (float, float)
        Calibrations (1/nm per px) searched.

    Returns
    -------
    Calibration

    Raises
    ------
    CalibrationError
        When no calibration matches at least three rings of the standard.
    """
    from scipy.signal import find_peaks

    spec = get_phase(phase)
    r_px = np.asarray(r_px, float)
    p = np.where(np.isfinite(profile), profile, 0.0)
    step = r_px[1] - r_px[0]
    # rings closer than 10 % of the largest radius are the central beam's business
    r_lo = max(r_fit_min_px or 0.0, 0.1 * r_px[-1])
    detail = p - estimate_background(p, window_bins=max(8, int(12 / step)))
    detail[r_px < r_lo] = 0.0
    noise = 1.4826 * np.median(np.abs(detail[r_px >= r_lo] - np.median(detail[r_px >= r_lo]))) + 1e-12
    rings = ring_list(spec, 12.0)
    q = rings["q_inv_nm"].to_numpy()
    w = ring_weights(rings)
    strong = w >= 0.02 * w.max()
    q, w = q[strong], w[strong]
    # Coarse search: correlation of the predicted comb with the detail profile.
    grid = np.exp(np.arange(math.log(search_range[0]), math.log(search_range[1]), 0.002))
    r_pred = q[None, :] / grid[:, None]
    inside = (r_pred >= r_lo) & (r_pred <= r_px[-1])
    vals = np.interp(r_pred, r_px, detail, left=0.0, right=0.0) / noise
    # weight rings by their expected strength per unit radius (w / r)
    ww = w[None, :] / np.maximum(r_pred, 1.0)
    score = (np.clip(vals, -3, None) * ww * inside).sum(1) / np.sqrt((ww**2 * inside).sum(1) + 1e-30)
    n_in = inside.sum(1)
    score[n_in < 3] = -np.inf
    if not np.isfinite(score).any():
        raise CalibrationError(path, f"the {spec.name} standard's rings do not fit on the detector "
                               f"for any calibration in {search_range}; {HOW_TO_CALIBRATE}")
    c0 = float(grid[int(np.argmax(score))])
    # Refine: match predicted rings to sub-bin peak positions.
    peaks, _ = find_peaks(detail, height=4 * noise)
    pos = np.array([refine_peak(r_px, detail, int(i))[0] for i in peaks])
    # The strongest rings the calibration puts on the detector must all be there.
    r_all = q / c0
    inside0 = (r_all >= r_lo) & (r_all <= r_px[-1])
    strongest = np.argsort(-(w * inside0))[: min(3, int(inside0.sum()))]
    found = [pos.size > 0 and np.min(np.abs(pos - r_all[k])) <= max(1.5, 0.012 * r_all[k])
             for k in strongest]
    if sum(found) < min(2, len(found)) or not found[0]:
        raise CalibrationError(path, f"the {spec.name} standard's strongest rings were not "
                                   f"found in the calibration pattern (is it a {spec.name} "
                                   f"pattern with rings on the detector?); {HOW_TO_CALIBRATE}")
    pairs = []
    for qk, wk in zip(q, w):
        rk = qk / c0
        if not (r_lo <= rk <= r_px[-1]) or pos.size == 0:
            continue
        j = int(np.argmin(np.abs(pos - rk)))
        if abs(pos[j] - rk) <= max(1.5, 0.012 * rk):
            pairs.append((qk, pos[j], wk))
    if len(pairs) < 3:
        raise CalibrationError(path, f"only {len(pairs)} ring(s) of the {spec.name} standard were "
                               f"found in the calibration pattern (need 3); {HOW_TO_CALIBRATE}")
    qq, rr, _ = (np.array(v) for v in zip(*pairs))
    # Drop duplicates (two rings matched to one peak) keeping the closer one.
    c = float((qq * rr).sum() / (rr * rr).sum())
    for _ in range(2):
        resid = qq / rr / c - 1.0
        keep = np.abs(resid) < max(3 * np.std(resid), 0.004)
        if keep.sum() >= 3:
            qq, rr = qq[keep], rr[keep]
        c = float((qq * rr).sum() / (rr * rr).sum())
    ratios = qq / rr
    n = ratios.size
    sem = float(np.std(ratios, ddof=1) / math.sqrt(n)) if n > 1 else 0.01 * c
    # Never claim better than a 0.02-px radius error on the outermost ring.
    sem = max(sem, c * 0.02 / rr.max())
    return Calibration(c, sem, f"fitted:{spec.name}", n)
