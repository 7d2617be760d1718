"""Per-frame input normalisation that survives dose, gain, offset and illumination changes.

A frame of detector counts becomes ``(frame − centre) / spread``, where ``centre`` is the
median and ``spread`` the 1–99 % percentile range of a 4×4-binned, lightly smoothed copy of the
frame (binning beats Poisson noise down so the statistics are stable even at 1 e⁻/px). The
result does not depend on dose, gain or offset; a robust clip keeps hot and dead pixels from
dominating. Contrast polarity (bright-field vs dark-field) is left to the network, which is
trained on both; :func:`detect_contrast` gives the polarity for the classical baseline and for
reports.

Only numpy and scipy: the baseline uses this module without torch.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: normalised values are clipped to ±CLIP
CLIP = 4.0
CONTRASTS = ("auto", "bright-field", "dark-field")


def _binned(frame: np.ndarray, b: int = 4) -> np.ndarray:
    y, x = (frame.shape[0] // b) * b, (frame.shape[1] // b) * b
    if y == 0 or x == 0:
        return frame.astype(np.float32)
    return frame[:y, :x].reshape(y // b, b, x // b, b).mean(axis=(1, 3))


def robust_stats(frame: np.ndarray) -> tuple[float, float, float, float]:
    """Low (1 %), median, high (99 %) level and spread of a frame, in the frame's units.

    Parameters
    ----------
    frame : ndarray, (Y, X)
        Detector counts.

    Returns
    -------
    lo, med, hi, spread : float
        Percentiles of the 4×4-binned, σ = 1 bin smoothed frame, and ``max(hi − lo, floor)``
        where the floor (a Poisson estimate) avoids dividing by zero on blank frames.
    """
    f = np.nan_to_num(np.asarray(frame, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    small = ndimage.gaussian_filter(_binned(f), 1.0)
    lo, med, hi = np.percentile(small, [1, 50, 99])
    floor = max(0.1 * np.sqrt(max(abs(float(med)), 1.0)), 1e-3)
    return float(lo), float(med), float(hi), float(max(hi - lo, floor))


def normalise_frame(frame: np.ndarray) -> np.ndarray:
    """One frame of counts → float32 with median 0 and unit 1–99 % spread, clipped to ±CLIP."""
    f = np.nan_to_num(np.asarray(frame, np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    _, med, _, spread = robust_stats(f)
    out = (f - med) / spread
    np.clip(out, -CLIP, CLIP, out=out)
    return out


def normalise(frames: np.ndarray) -> np.ndarray:
    """Normalise each frame of an (n, Y, X) or (Y, X) array independently (float32)."""
    a = np.asarray(frames)
    if a.ndim == 2:
        return normalise_frame(a)
    return np.stack([normalise_frame(f) for f in a]) if len(a) else a.astype(np.float32)


def detect_contrast(frame: np.ndarray) -> str:
    """Guess ``"bright-field"`` (dark objects on a bright background) or ``"dark-field"``.

    The background is the bulk of most frames, so the median sits near the background level:
    closer to the bright end in bright-field, to the dark end in dark-field.
    """
    lo, med, hi, _ = robust_stats(frame)
    return "bright-field" if (hi - med) < (med - lo) else "dark-field"


def objects_bright(frames: np.ndarray, contrast: str = "auto") -> np.ndarray:
    """Normalised frames with objects positive (bright-field frames are negated)."""
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
    a = np.asarray(frames)
    frames3 = a[None] if a.ndim == 2 else a
    out = normalise(frames3)
    for i, f in enumerate(frames3):
        c = detect_contrast(f) if contrast == "auto" else contrast
        if c == "bright-field":
            out[i] = -out[i]
    return out[0] if a.ndim == 2 else out
