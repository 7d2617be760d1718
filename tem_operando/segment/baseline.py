"""Classical segmentation (scikit-image), behind the same interface as the network; no torch.

Per frame: normalise (:mod:`~tem_operando.segment.normalise`) with objects made bright
(contrast auto-detected or given), Gaussian smoothing (σ grows as the dose falls), an Otsu
threshold, small-object removal and hole filling; instances by a distance-transform watershed;
pristine vs reacted by a second Otsu split of the smoothed intensity inside the objects (reacted
material is lighter in bright-field), kept only when the two populations are well apart.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .infer import SegmentationResult
from .instances import split_by_distance
from .normalise import CONTRASTS, objects_bright


def _remove_small(mask: np.ndarray, min_area_px: int) -> np.ndarray:
    """``mask`` without connected components smaller than ``min_area_px``."""
    lab, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(lab.ravel())
    keep = sizes >= min_area_px
    keep[0] = False
    return keep[lab]


class BaselineSegmenter:
    """Smoothing + threshold + watershed.

    Parameters
    ----------
    contrast : {"auto", "bright-field", "dark-field"}
        Polarity of the frames; auto-detected per frame by default.
    sigma_px : float or None
        Gaussian smoothing, px; None picks it from the frame's noise.
    min_area_px : int
        Smallest object kept, px.
    min_distance_px : int
        Smallest distance between two object centres for the watershed seeds, px.
    k_sigma : float
        Threshold in robust standard deviations of the smoothed background above its median.
    split_margin : float
        Minimum separation (in units of the pooled spread) between pristine and reacted
        intensities for a split to be made.
    """

    name = "baseline"
    sha256 = ""

    def __init__(self, contrast: str = "auto", sigma_px: float | None = None, min_area_px: int = 30,
                 min_distance_px: int = 7, split_margin: float = 1.5, k_sigma: float = 4.0, **_ignored):
        if contrast not in CONTRASTS:
            raise ValueError(f"contrast must be one of {CONTRASTS}, got {contrast!r}")
        self.contrast, self.sigma_px, self.k_sigma = contrast, sigma_px, float(k_sigma)
        self.min_area_px, self.min_distance_px, self.split_margin = int(min_area_px), int(min_distance_px), split_margin

    def __repr__(self) -> str:
        return f"BaselineSegmenter(contrast={self.contrast!r})"

    def _sigma(self, frame: np.ndarray) -> float:
        if self.sigma_px is not None:
            return float(self.sigma_px)
        med = float(np.median(frame))
        # Poisson: relative noise 1/sqrt(counts); smooth more at low dose
        return float(np.clip(4.0 / np.sqrt(max(med, 1.0)) + 1.5, 1.5, 4.0))

    def predict_frame(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """One frame → classes (uint8), instances (uint32), confidence."""
        from skimage.filters import threshold_otsu

        f = np.nan_to_num(np.asarray(frame, np.float32))
        x = objects_bright(f, self.contrast)
        s = ndimage.gaussian_filter(x, self._sigma(f))
        if np.ptp(s) == 0:
            z = np.zeros(f.shape, np.uint8)
            return z, z.astype(np.uint32), 0.0
        # the background is the bulk of the frame: threshold k robust σ above its level
        med = float(np.median(s))
        sigma = 1.4826 * float(np.median(np.abs(s - med))) + 1e-6
        t = med + self.k_sigma * sigma
        obj = _remove_small(s > t, self.min_area_px)
        obj = ~_remove_small(~obj, self.min_area_px * 4)  # fill small holes
        inst = split_by_distance(obj, min_distance_px=self.min_distance_px, min_area_px=self.min_area_px)
        obj = inst > 0
        classes = obj.astype(np.uint8)
        vals = s[obj]
        if vals.size > 50 and np.ptp(vals) > 0:
            t2 = threshold_otsu(vals)
            lo, hi = vals[vals <= t2], vals[vals > t2]
            spread = np.sqrt(0.5 * (lo.var() + hi.var())) + 1e-6
            if lo.size and hi.size and (hi.mean() - lo.mean()) / spread > self.split_margin:
                classes[obj & (s <= t2)] = 2  # lighter (less scattering) = reacted
        # confidence: how far the smoothed values sit from the threshold, squashed to 0–1
        margin = np.abs(s - t) / (np.std(s) + 1e-6)
        conf = float(np.mean(1 - np.exp(-2 * margin)))
        return classes, inst, conf

    #: the baseline looks at each frame alone (a ``reference`` frame is accepted and not used)
    in_channels = 1

    def predict(self, frames: np.ndarray, *, reference: np.ndarray | None = None,
                probabilities: bool = False) -> SegmentationResult:
        """Segment frames (n, Y, X) or (Y, X) of counts; see :class:`SegmentationResult`.
        ``reference`` is ignored (the network's two-channel models use it)."""
        a = np.asarray(frames)
        a = a[None] if a.ndim == 2 else a
        if a.ndim != 3:
            raise ValueError(f"frames must be (n, Y, X) or (Y, X), got shape {a.shape}")
        out = [self.predict_frame(f) for f in a]
        classes = np.stack([o[0] for o in out]) if out else np.zeros(a.shape, np.uint8)
        inst = np.stack([o[1] for o in out]) if out else np.zeros(a.shape, np.uint32)
        conf = np.array([o[2] for o in out], float)
        probs = None
        if probabilities:
            probs = np.stack([(classes == k) for k in range(3)], 1).astype(np.float16)
        return SegmentationResult(classes, inst, conf, probs)

    __call__ = predict
