"""Ring peaks of a profile (q, d, intensity, width) and their assignment to a phase and hkl."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .profile import refine_peak

__all__ = ["RING_EXTRA_COLUMNS", "assign_ring", "find_ring_peaks"]

#: Columns rings.csv carries after the contract's (frame, q_inv_nm, d_nm, intensity, phase, hkl).
RING_EXTRA_COLUMNS = ["width_inv_nm", "d_library_nm"]


def find_ring_peaks(r_px: np.ndarray, detail: np.ndarray, noise: np.ndarray, *,
                    min_snr: float = 5.0) -> list[tuple[float, float, float]]:
    """Peaks of a background-free profile.

    Parameters
    ----------
    r_px : ndarray
        Uniform nominal radii of the bins (px).
    detail : ndarray
        Profile minus background and halo (counts per px).
    noise : ndarray
        Standard deviation of each bin (counts per px).
    min_snr : float
        Peaks must stand ``min_snr`` noise levels above zero and above their surroundings.

    Returns
    -------
    list of (r_px, sigma_px, height)
    """
    from scipy.ndimage import gaussian_filter1d
    from scipy.signal import find_peaks

    smooth = gaussian_filter1d(detail, 0.6)
    z = smooth / np.maximum(noise, 1e-12)
    idx, props = find_peaks(z, height=min_snr, prominence=min_snr * 0.6, distance=2,
                            width=0, rel_height=0.5)
    out = []
    step = r_px[1] - r_px[0]
    for i, prom, fwhm in zip(idx, props["prominences"], props["widths"]):
        if prom < 0.25 * z[i]:  # a ripple on a broader ring, not a ring
            continue
        if fwhm < 4:
            out.append(refine_peak(r_px, detail, int(i)))
            continue
        # broad ring: centroid of the part above half maximum, σ from the FWHM
        half = int(math.ceil(fwhm / 2))
        lo, hi = max(0, i - half), min(len(detail), i + half + 1)
        w = np.clip(smooth[lo:hi] - 0.5 * smooth[i], 0, None)
        pos = float((w * r_px[lo:hi]).sum() / w.sum()) if w.sum() > 0 else float(r_px[i])
        out.append((pos, float(fwhm * step / 2.3548), float(smooth[i])))
    return out


def assign_ring(q_inv_nm: float, candidates: list[tuple[str, pd.DataFrame, float, float]],
                rtol: float = 0.005) -> tuple[str, str, float]:
    """The library ring that best explains a peak.

    Parameters
    ----------
    q_inv_nm : float
        Peak position.
    candidates : list of (phase, ring list, amplitude, sigma_inv_nm)
        Phases present in the frame with their fitted amplitude and ring width; ring lists carry
        a ``weight`` column.
    rtol : float
        Largest relative distance |q − q_ring| / q to a library ring.

    Returns
    -------
    (phase, hkl, d_library_nm) — ``("", "", nan)`` when no ring is close.
    """
    best, best_score = ("", "", float("nan")), 0.0
    for name, rl, amp, sig in candidates:
        q = rl["q_inv_nm"].to_numpy()
        tol = rtol * q_inv_nm
        near = np.flatnonzero(np.abs(q - q_inv_nm) <= tol)
        for j in near:
            s = max(sig, 1e-6)
            score = amp * float(rl["weight"].iat[j]) * math.exp(-0.5 * ((q[j] - q_inv_nm) / s) ** 2) / s
            if score > best_score:
                best_score = score
                best = (name, str(rl["hkl"].iat[j]), float(rl["d_nm"].iat[j]))
    return best
