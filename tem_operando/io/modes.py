"""Tell image frames from diffraction patterns: the ring-pattern test.

A selected-area diffraction pattern is, to a good approximation, a function of the distance
from one centre (the transmitted beam): rings, a halo and a smooth background. A bright-field
image of wires and particles is not. The test fits the frame's log-intensity with its own
azimuthal average about the brightest smooth point and measures how much variance that
radial model explains.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: A frame whose radial model explains at least this share of the variance is a diffraction pattern.
RADIAL_R2_THRESHOLD = 0.6


def radial_r2(frame: np.ndarray, size: int = 96) -> float:
    """Share of the log-intensity variance explained by an azimuthal average.

    Parameters
    ----------
    frame : ndarray, shape (Y, X)
        One frame in detector counts.
    size : int
        The frame is block-averaged to about this many pixels on its longer side first.

    Returns
    -------
    float
        R² in [0, 1] of the radial model about the brightest point of the smoothed frame.
    """
    f = np.asarray(frame, dtype=np.float32)
    step = max(1, int(max(f.shape) // size))
    if step > 1:
        ny, nx = (f.shape[0] // step) * step, (f.shape[1] // step) * step
        f = f[:ny, :nx].reshape(ny // step, step, nx // step, step).mean(axis=(1, 3))
    f = np.nan_to_num(f, nan=0.0, posinf=0.0, neginf=0.0)
    f = np.log1p(np.clip(f - f.min(), 0, None))
    smooth = ndimage.gaussian_filter(f, 2.0)
    total = float(((smooth - smooth.mean()) ** 2).sum())
    if total <= 1e-12:
        return 0.0
    # centre: the centroid of the brightest 0.5 % of the smoothed frame (robust to a saturated disc)
    thr = np.quantile(smooth, 0.995)
    cy, cx = ndimage.center_of_mass(smooth >= thr)
    yy, xx = np.indices(smooth.shape)
    r = np.hypot(yy - cy, xx - cx).astype(np.int32).ravel()
    counts = np.bincount(r)
    sums = np.bincount(r, weights=smooth.ravel())
    profile = sums / np.maximum(counts, 1)
    resid = smooth.ravel() - profile[r]
    return float(max(0.0, 1.0 - (resid**2).sum() / total))


def guess_frame_mode(frame: np.ndarray) -> str:
    """Return ``"diffraction"`` for a ring pattern and ``"image"`` otherwise.

    Parameters
    ----------
    frame : ndarray, shape (Y, X)

    Examples
    --------
    >>> import numpy as np
    >>> yy, xx = np.indices((128, 128))
    >>> r = np.hypot(yy - 60, xx - 70)
    >>> guess_frame_mode(1000 * np.exp(-r / 5) + 50 * np.exp(-((r - 30) / 2) ** 2) + 10)
    'diffraction'
    """
    return "diffraction" if radial_r2(frame) >= RADIAL_R2_THRESHOLD else "image"
