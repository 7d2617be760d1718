"""Instance separation: split the object mask into objects, also where objects touch.

The network marks the *seam* between touching objects (probability map); seeds are the object
pixels away from seams, grown back over the whole object mask by a watershed. The classical
baseline has no seam map and seeds from peaks of the distance transform instead.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _relabel(labels: np.ndarray, min_area_px: int) -> np.ndarray:
    """Drop labels smaller than ``min_area_px`` and number the rest 1..n (uint32)."""
    if labels.max(initial=0) == 0:
        return labels.astype(np.uint32)
    sizes = np.bincount(labels.ravel())
    keep = sizes >= max(min_area_px, 1)
    keep[0] = False
    lut = np.zeros(sizes.size, np.uint32)
    lut[keep] = np.arange(1, keep.sum() + 1, dtype=np.uint32)
    return lut[labels]


def split_by_seams(objects: np.ndarray, seam: np.ndarray, *, threshold: float = 0.5,
                   min_area_px: int = 16) -> np.ndarray:
    """Instances from an object mask and a seam probability map.

    Parameters
    ----------
    objects : ndarray of bool, (Y, X)
        Object pixels (pristine or reacted).
    seam : ndarray of float, (Y, X)
        Probability (0–1) that a pixel lies on the seam between two touching objects, or any
        increasing function of it (the network's seam logit): only the order of the values counts.
    threshold : float
        Seam pixels are those above it (on the scale of ``seam``).
    min_area_px : int
        Objects (and seeds) smaller than this, in px, are dropped.

    Returns
    -------
    ndarray of uint32, (Y, X)
        Labels 1..n, 0 = background.
    """
    from skimage.segmentation import watershed

    objects = np.asarray(objects, bool)
    if not objects.any():
        return np.zeros(objects.shape, np.uint32)
    core = objects & (seam < threshold)
    seeds, n = ndimage.label(core)
    seeds = _relabel(seeds, max(min_area_px // 4, 1)).astype(np.int32)
    # object parts without a seed of their own (all seam) keep their own label
    labels = watershed(seam.astype(np.float32), seeds, mask=objects) if seeds.max() else np.zeros_like(seeds)
    orphan = objects & (labels == 0)
    if orphan.any():
        extra, _ = ndimage.label(orphan)
        labels = np.where(extra > 0, extra + labels.max(), labels)
    return _relabel(labels, min_area_px)


def split_by_distance(objects: np.ndarray, *, min_distance_px: int = 5, min_area_px: int = 16) -> np.ndarray:
    """Instances of an object mask by a watershed on its distance transform (classical)."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    objects = np.asarray(objects, bool)
    if not objects.any():
        return np.zeros(objects.shape, np.uint32)
    dist = ndimage.distance_transform_edt(objects)
    comp, _ = ndimage.label(objects)
    peaks = peak_local_max(dist, min_distance=min_distance_px, labels=comp, exclude_border=False)
    markers = np.zeros(objects.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=objects)
    orphan = objects & (labels == 0)
    if orphan.any():
        extra, _ = ndimage.label(orphan)
        labels = np.where(extra > 0, extra + labels.max(), labels)
    return _relabel(labels, min_area_px)
