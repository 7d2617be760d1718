"""Drift registration: sub-pixel phase cross-correlation against a running reference.

Each frame is band-passed (difference of Gaussians: removes shot noise and slow illumination
changes) and windowed, then registered with
:func:`skimage.registration.phase_cross_correlation` to a *key frame* whose own drift is known,
and registered again with the pixels that changed between the two left out (the sample's own
swelling and reacting would otherwise pull the estimate: :mod:`tem_operando._registration`).
The key frame is renewed every ``key_every`` frames so that the sample's own slow changes
(swelling, reacting) never make the reference stale; a stage jump is caught because the phase
correlation peak sits wherever the shift is, however large (up to half the frame), and a
registration whose peak is weak is retried against the previous frame. A frame that matches
neither better than chance (blank, or noise alone) keeps the last drift and is never a key frame:
one such frame used to shift the drift of every later frame by tens of pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._registration import (CHANGE_K, NOISY_ERROR, NOISY_SIGMA_LO_PX, SIGMA_HI_PX, SIGMA_LO_PX, WINDOW_TAPER,
                              Bands, edge_window, register_bands, unrelated)

__all__ = ["DriftState", "estimate_drift"]


@dataclass
class DriftState:
    """What registration of the next chunk needs: the key frame (prepared) and its drift (px)."""

    key: Bands | None = None
    key_drift_px: np.ndarray | None = None
    prev: Bands | None = None
    prev_drift_px: np.ndarray | None = None
    since_key: int = 0
    held: int = 0  # frames in a row that matched nothing (kept the last drift)


def estimate_drift(
    frames: np.ndarray,
    *,
    upsample: int = 10,
    sigma_lo_px: float = SIGMA_LO_PX,
    sigma_hi_px: float = SIGMA_HI_PX,
    key_every: int = 50,
    max_error: float = 0.9,
    change_k: float | None = CHANGE_K,
    taper: float = WINDOW_TAPER,
    noisy_error: float = NOISY_ERROR,
    noisy_sigma_lo_px: float = NOISY_SIGMA_LO_PX,
    state: DriftState | None = None,
    return_state: bool = False,
):
    """Sample drift of each frame relative to the first frame, in pixels.

    Parameters
    ----------
    frames : ndarray, shape (T, Y, X)
        Image frames (one chunk of a recording; pass ``state`` to continue from a previous chunk).
    upsample : int
        Sub-pixel precision 1/``upsample`` px.
    sigma_lo_px, sigma_hi_px : float
        Difference-of-Gaussians band pass, px.
    key_every : int
        Frames between renewals of the reference key frame.
    max_error : float
        A registration to the key frame with a larger normalised error (0–1, 1 = no peak) is
        replaced by one to the previous frame.
    change_k : float or None
        Pixels whose change between the two frames (after a first registration) is this many
        robust σ above the median are left out of a second one; None: one registration.
    taper : float
        Fraction of each axis the window tapers (Tukey α, 0–1; 1 is a Hann window).
    noisy_error, noisy_sigma_lo_px : float
        A registration whose normalised error exceeds ``noisy_error`` (at 5 e⁻/px most do) is
        redone with the noise cut at ``noisy_sigma_lo_px`` instead of ``sigma_lo_px``: at 5 e⁻/px
        on 160×160 px the RMS error falls from ~5 to ~1.4 px (``benchmarks/drift.py``).
    state : DriftState, optional
        Returned by the previous chunk's call with ``return_state=True``.
    return_state : bool
        Also return the :class:`DriftState` for the next chunk.

    Returns
    -------
    drift_px : ndarray, shape (T, 2)
        (dx, dy): how far the sample has moved in the image since the first frame, px
        (multiply by nm/px for ``drift_x_nm``, ``drift_y_nm``); the first frame is (0, 0).
    state : DriftState
        Only with ``return_state=True``.
    """
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[None]
    if frames.ndim != 3:
        raise ValueError(f"frames must be (T, Y, X), got shape {frames.shape}")
    T, H, W = frames.shape
    st = state if state is not None else DriftState()
    window = edge_window((H, W), taper)

    def _register(ref, mov, upsample):
        return register_bands(ref, mov, upsample, sigma_lo_px=sigma_lo_px, change_k=change_k,
                              noisy_error=noisy_error, noisy_sigma_lo_px=noisy_sigma_lo_px)

    def _unrelated(ref, mov) -> bool:
        return unrelated(ref, mov, noisy_sigma_lo_px)

    out = np.zeros((T, 2))
    for i in range(T):
        cur = Bands(frames[i], sigma_hi_px, window)
        if st.key is None:
            st.key, st.key_drift_px = cur, np.zeros(2)
            st.prev, st.prev_drift_px, st.since_key = cur, np.zeros(2), 0
            out[i] = 0.0
            continue
        shift, err = _register(st.key, cur, upsample)
        d = st.key_drift_px + np.array([-shift[1], -shift[0]])
        if not err <= max_error and st.prev is not None:
            shift_p, err_p = _register(st.prev, cur, upsample)
            if err_p < err or not np.isfinite(err):
                d = st.prev_drift_px + np.array([-shift_p[1], -shift_p[0]])
            if not min(err, err_p) <= noisy_error and _unrelated(st.key, cur) and _unrelated(st.prev, cur):
                # a blank or structureless frame (beam blanked, a camera glitch): its drift is not
                # known; it keeps the last one and is never a reference for the frames after it —
                # unless the key itself is such a frame (3 in a row match nothing): then this one
                # becomes the key, at the last drift, and the chain goes on from it
                st.held += 1
                out[i] = st.prev_drift_px
                if st.held >= 3:
                    st.key, st.key_drift_px, st.since_key = cur, st.prev_drift_px.copy(), 0
                    st.prev, st.held = cur, 0
                continue
        # a jump larger than the frame overlap allows is not trusted to the key frame alone:
        # check consistency with the previous frame and prefer the smaller error
        elif np.hypot(*(d - st.prev_drift_px)) > 0.05 * min(H, W):
            shift_p, err_p = _register(st.prev, cur, upsample)
            if err_p < err:
                d = st.prev_drift_px + np.array([-shift_p[1], -shift_p[0]])
        out[i] = d
        st.held = 0
        st.prev, st.prev_drift_px = cur, d
        st.since_key += 1
        if st.since_key >= key_every or np.hypot(*(d - st.key_drift_px)) > 0.1 * min(H, W):
            st.key, st.key_drift_px, st.since_key = cur, d, 0
    return (out, st) if return_state else out
