"""Sub-pixel registration of two frames, shared by drift estimation and the segmenter's reference.

Frames are band-passed (difference of Gaussians: removes shot noise and slow illumination
changes), median-filtered against hot pixels and windowed (a Tukey window, flat but for its outer
7.5 % per side), then registered with :func:`skimage.registration.phase_cross_correlation`; then
once more with the pixels that changed between the two (the sample's own swelling and reacting,
not drift) left out.

A Hann window weighs an object's two sides unequally unless it sits at the frame's centre, so an
object swelling in place looked like drift towards the centre (0.6–1.4 px on 160×160 frames of
swelling particles, and wrong peaks at 5 e⁻/px); ``benchmarks/drift.py`` measures both.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage


def finite(a: np.ndarray, fill=np.nanmedian) -> np.ndarray:
    """``a`` with its NaN/inf pixels set to ``fill`` of the finite ones (0 when none is); ``a`` itself
    when every pixel is finite (the common case costs one check, no statistic)."""
    ok = np.isfinite(a)
    if ok.all():
        return a
    return np.where(ok, a, fill(a[ok]) if ok.any() else 0.0).astype(a.dtype, copy=False)


def prepare(frame: np.ndarray, sigma_lo: float, sigma_hi: float, window: np.ndarray) -> np.ndarray:
    """A frame ready for :func:`register`: NaN-free, median-filtered, band-passed (px), windowed."""
    f = finite(np.asarray(frame, dtype=np.float32), np.mean)
    f = cv2.medianBlur(np.ascontiguousarray(f), 3)  # hot and dead pixels are fixed in the detector frame
    band = cv2.GaussianBlur(f, (0, 0), sigma_lo) - cv2.GaussianBlur(f, (0, 0), sigma_hi)
    band -= band.mean()
    return band * window


def register(ref: np.ndarray, mov: np.ndarray, upsample: int) -> tuple[np.ndarray, float]:
    """Shift (dy, dx) px that moves ``mov`` onto ``ref``, and the normalised error (0–1, 1 = no peak)."""
    import warnings

    from skimage.registration import phase_cross_correlation

    with warnings.catch_warnings():  # a blank frame divides by zero: its error is NaN, and callers check
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", message="Could not determine RMS error", category=UserWarning)
        shift, error, _ = phase_cross_correlation(ref, mov, upsample_factor=upsample, normalization=None)
    return np.asarray(shift, float), float(error)


#: fraction of each axis that the registration window tapers (Tukey α; 1 would be a Hann window)
WINDOW_TAPER = 0.15
#: a pixel whose aligned band-passed difference (smoothed) is this many robust σ above the median
#: is the sample's own change, left out of the second registration
CHANGE_K = 3.0
#: the band pass (difference of Gaussians), px: shot noise below ``SIGMA_LO_PX``, illumination above
SIGMA_LO_PX, SIGMA_HI_PX = 1.5, 12.0
#: a registration whose normalised error exceeds ``NOISY_ERROR`` (a weak peak: at 5 e⁻/px most are) is
#: redone with the noise cut at ``NOISY_SIGMA_LO_PX`` (at 5 e⁻/px on 160×160 px the drift's RMS error
#: falls from ~5 to ~1.4 px, ``benchmarks/drift.py``)
NOISY_ERROR, NOISY_SIGMA_LO_PX = 0.9, 3.5


class Bands:
    """A frame's band-passed, windowed versions (:func:`prepare`), made when first asked for."""

    def __init__(self, frame: np.ndarray, sigma_hi_px: float, window: np.ndarray):
        # a copy: the band may be made later (the drift pass' next chunk), when the caller has reused its buffer
        self.frame = np.array(frame, np.float32)
        self.sigma_hi_px, self.window, self._done = sigma_hi_px, window, {}

    def band(self, sigma_lo_px: float) -> np.ndarray:
        if sigma_lo_px not in self._done:
            self._done[sigma_lo_px] = prepare(self.frame, sigma_lo_px, self.sigma_hi_px, self.window)
        return self._done[sigma_lo_px]


def register_bands(ref: Bands, mov: Bands, upsample: int, *, sigma_lo_px: float = SIGMA_LO_PX,
                   change_k: float | None = CHANGE_K, noisy_error: float = NOISY_ERROR,
                   noisy_sigma_lo_px: float = NOISY_SIGMA_LO_PX) -> tuple[np.ndarray, float]:
    """:func:`register_robust` of two frames' bands; when its peak is weak (error > ``noisy_error``),
    again in the smoother band, whichever peak is stronger. Shift (dy, dx) px moving ``mov`` onto ``ref``."""
    shift, err = register_robust(ref.band(sigma_lo_px), mov.band(sigma_lo_px), upsample, change_k)
    if err > noisy_error:  # a weak peak: shot noise rules this band; try the smoother one
        shift_c, err_c = register_robust(ref.band(noisy_sigma_lo_px), mov.band(noisy_sigma_lo_px), upsample, change_k)
        if np.isfinite(shift_c).all() and err_c < err:
            return shift_c, err_c
    return shift, err


def unrelated(ref: Bands, mov: Bands, sigma_lo_px: float = NOISY_SIGMA_LO_PX) -> bool:
    """``mov`` matches ``ref`` no better than it matches ``ref`` turned by 180° (the same power
    spectrum, none of its structure in place): nothing in common to register (a blanked beam, a frame
    of noise alone)."""
    _, e = register(ref.band(sigma_lo_px), mov.band(sigma_lo_px), 1)
    _, e0 = register(np.ascontiguousarray(ref.band(sigma_lo_px)[::-1, ::-1]), mov.band(sigma_lo_px), 1)
    return not (np.isfinite(e) and np.isfinite(e0) and e < e0 - 0.03)  # chance: ± 0.005


def edge_window(shape: tuple[int, int], taper: float = WINDOW_TAPER) -> np.ndarray:
    """2-D Tukey window of ``shape`` (flat, tapered over ``taper`` of each axis), float32."""
    from scipy.signal.windows import tukey

    return np.outer(tukey(shape[0], taper), tukey(shape[1], taper)).astype(np.float32)


def hann_window(shape: tuple[int, int]) -> np.ndarray:
    """2-D Hann window of ``shape``, float32 (the registration window before session 13; benchmarks)."""
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1])).astype(np.float32)


def register_robust(ref: np.ndarray, mov: np.ndarray, upsample: int,
                    change_k: float | None = CHANGE_K) -> tuple[np.ndarray, float]:
    """:func:`register`, then again without the pixels that changed between the two frames.

    ``ref`` and ``mov`` are :func:`prepare` d frames. After the first registration the difference
    of ``ref`` and the aligned ``mov`` is smoothed (3 px); pixels more than ``change_k`` robust σ
    (MAD) above its median are masked (soft edges) in both frames, each in its own coordinates,
    and the two are registered again. None: the first registration only. Returns the second
    pass' shift and the first pass' error (the second's is lower by construction; callers compare
    errors to judge a peak's strength, on one scale).
    """
    shift, err = register(ref, mov, upsample)
    if change_k is None or not np.isfinite(shift).all():
        return shift, err
    aligned = _translate(mov, shift, cv2.BORDER_CONSTANT)
    d = cv2.GaussianBlur(np.abs(ref - aligned).astype(np.float32), (0, 0), 3.0)
    med = float(np.median(d))
    mad = 1.4826 * float(np.median(np.abs(d - med)))
    if not mad > 0:
        return shift, err
    keep = cv2.GaussianBlur((d < med + change_k * mad).astype(np.float32), (0, 0), 2.0)
    shift2, _ = register(ref * keep, mov * _translate(keep, -shift, cv2.BORDER_REPLICATE), upsample)
    return (shift2, err) if np.isfinite(shift2).all() else (shift, err)


def _translate(a: np.ndarray, shift: np.ndarray, border: int) -> np.ndarray:
    """``a`` moved by (dy, dx) px, bilinear (as ``ndimage.shift(order=1)``, 10× faster)."""
    m = np.float32([[1, 0, shift[1]], [0, 1, shift[0]]])
    return cv2.warpAffine(np.ascontiguousarray(a, np.float32), m, (a.shape[1], a.shape[0]),
                          flags=cv2.INTER_LINEAR, borderMode=border)


def shift_reference(reference: np.ndarray, shifts_px: np.ndarray) -> np.ndarray:
    """The reference frame (Y, X) moved by each (dy, dx) of ``shifts_px`` (n, 2), px: (n, Y, X) float32
    (linear interpolation, edges extended; NaN/inf pixels become the median)."""
    ref = np.asarray(reference, np.float32)
    ref = finite(ref)
    shifts = np.asarray(shifts_px, float).reshape(-1, 2)
    out = np.empty((len(shifts), *ref.shape), np.float32)
    for i, s in enumerate(shifts):
        if np.abs(s).max() < 1e-3:
            out[i] = ref
        else:
            out[i] = ndimage.shift(ref, s, order=1, mode="nearest")
    return out


def mean_reference(frames: np.ndarray, shifts_px: np.ndarray | None = None) -> np.ndarray:
    """The mean of a recording's first image frames, each moved back onto the first.

    Parameters
    ----------
    frames : ndarray, (k, Y, X)
        The frames (counts), the first one the reference frame.
    shifts_px : ndarray, (k, 2), optional
        (dy, dx) px the sample moved from the first frame to each (the drift pass' drift, or
        the true drift of synthetic data); None: no drift.

    Returns
    -------
    ndarray, (Y, X), float32
        The averaged reference, at the first frame's position (NaN/inf pixels become each
        frame's median, as in :func:`shift_reference`).
    """
    a = np.asarray(frames, np.float32)
    a = a[None] if a.ndim == 2 else a
    if a.ndim != 3 or len(a) == 0:
        raise ValueError(f"frames must be (k, Y, X) with k ≥ 1, got shape {np.shape(frames)}")
    d = np.zeros((len(a), 2)) if shifts_px is None else np.asarray(shifts_px, float).reshape(len(a), 2)
    d = np.nan_to_num(d - d[0])
    acc = np.zeros(a.shape[1:], np.float64)
    for f, s in zip(a, d):
        acc += shift_reference(f, -s[None])[0]  # back by the sample's own move since the first frame
    return (acc / len(a)).astype(np.float32)
