"""Radial profiles: model densities on a fine radius grid, background estimate, peak refinement.

All radii here are *nominal* (ellipse-corrected) radii in px; ``q_inv_nm = r_px × inv_nm_per_px``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = [
    "estimate_background",
    "gaussian_rings_density",
    "refine_peak",
    "ring_weights",
]


def ring_weights(rings: pd.DataFrame, *, debye_waller_B_A2: float = 1.0,
                 lorentz: bool = True) -> np.ndarray:
    """Integrated weight of each ring, normalised to sum to one.

    ``w_j ∝ I_j × exp(−B q_j²/2) / q_j`` (q in 1/Å inside the Debye–Waller factor) — the same
    weights as :func:`tem_operando.synth.saed.ring_weights`, so fitted fractions are shares of
    the diffracted electrons.

    Parameters
    ----------
    rings : DataFrame
        ``q_inv_nm`` (1/nm) and ``intensity`` columns of a ring list.
    debye_waller_B_A2 : float
        Isotropic B factor in Å².
    lorentz : bool
        Apply the 1/q Lorentz factor.

    Returns
    -------
    ndarray
    """
    q = rings["q_inv_nm"].to_numpy(dtype=float)
    w = rings["intensity"].to_numpy(dtype=float) * np.exp(-debye_waller_B_A2 * (q / 10.0) ** 2 / 2.0)
    if lorentz:
        w = w / q
    total = w.sum()
    return w / total if total > 0 else w


def gaussian_rings_density(grid_px: np.ndarray, centers_px: np.ndarray, sigma_px: float | np.ndarray,
                           weights: np.ndarray) -> np.ndarray:
    """Per-pixel density of Gaussian rings, each integrating to its weight over the plane.

    ``ρ(r) = Σ_j w_j exp(−(r − r_j)²/2σ_j²) / (√(2π) σ_j · 2π r)`` on a uniform grid
    starting at 0 (the synthetic patterns' model).

    Parameters
    ----------
    grid_px : ndarray
        Uniform radius grid from 0, px.
    centers_px, sigma_px, weights : ndarray
        Ring radii, Gaussian standard deviations (px) and integrated weights.

    Returns
    -------
    ndarray, like ``grid_px``
    """
    step = grid_px[1] - grid_px[0]
    centers = np.atleast_1d(np.asarray(centers_px, float))
    sig = np.broadcast_to(np.asarray(sigma_px, float), centers.shape)
    wts = np.atleast_1d(np.asarray(weights, float))
    out = np.zeros_like(grid_px, dtype=float)
    top = grid_px[-1]
    for c, s, w in zip(centers, sig, wts):
        if w <= 0 or c - 6 * s > top:
            continue
        lo = max(0, int((c - 6 * s) / step))
        hi = min(grid_px.size, int((c + 6 * s) / step) + 2)
        seg = grid_px[lo:hi]
        out[lo:hi] += w * np.exp(-0.5 * ((seg - c) / s) ** 2) / (math.sqrt(2 * math.pi) * s)
    return out / (2 * math.pi * np.maximum(grid_px, 0.5))


def estimate_background(profile: np.ndarray, window_bins: int = 24, iterations: int = 3) -> np.ndarray:
    """Smooth lower envelope of a profile (running minimum, then smoothing; iterated clipping).

    For display and peak finding; the unmixing fits its own background.

    Parameters
    ----------
    profile : ndarray (..., n_bins)
    window_bins : int
        Window of the running minimum, in bins (wider than a ring).

    Returns
    -------
    ndarray, like ``profile``
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    p = np.where(np.isfinite(profile), profile, 0.0)
    base = uniform_filter1d(minimum_filter1d(p, window_bins, axis=-1, mode="nearest"), window_bins,
                            axis=-1, mode="nearest")
    for _ in range(iterations):
        base = uniform_filter1d(np.minimum(base, p), window_bins // 2 or 1, axis=-1, mode="nearest")
    return base


def refine_peak(x: np.ndarray, y: np.ndarray, i: int) -> tuple[float, float, float]:
    """Sub-bin position, Gaussian σ and height of a peak from a 3-point log-parabola.

    Parameters
    ----------
    x, y : ndarray
        Positions and background-subtracted values (y[i-1:i+2] > 0 wanted).
    i : int
        Index of the local maximum.

    Returns
    -------
    (position, sigma, height) in the units of x and y (NaN sigma when not a clean peak).
    """
    if i <= 0 or i >= len(y) - 1:
        return float(x[i]), float("nan"), float(y[i])
    a, b, c = y[i - 1], y[i], y[i + 1]
    step = x[1] - x[0]
    if min(a, b, c) > 0:
        la, lb, lc = math.log(a), math.log(b), math.log(c)
        d = la - 2 * lb + lc
        if d < 0:
            off = 0.5 * (la - lc) / d
            sigma = step * math.sqrt(-1.0 / d)
            height = math.exp(lb - 0.25 * (la - lc) * off)
            if abs(off) <= 1:
                return float(x[i] + off * step), float(sigma), float(height)
    d = a - 2 * b + c
    off = 0.5 * (a - c) / d if d < 0 else 0.0
    off = max(-1.0, min(1.0, off))
    return float(x[i] + off * step), float("nan"), float(b)
