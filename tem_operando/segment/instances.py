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


def _neck_markers(d: np.ndarray, h: float, *, h_px: float = 3.0, rest_rel: float = 0.2) -> tuple[np.ndarray, int]:
    """Markers of the domes of one object's distance map that rise ≥ ``h`` above a common saddle.

    The object's distance map is cut at rising levels τ (1 px steps); at the first level where two
    or more pieces of ``{d > τ}`` each reach ``τ + h``, those pieces are the markers (the saddle
    between them is below τ). Failing that, at the first level τ ≥ ``h_px`` where one piece (a
    dome) reaches ``τ + h`` and the others reach at least ``max(h_px, rest_rel × its height)``,
    the markers are the blob — the dome's core above half-way to its top, grown back by that
    level: the discs inscribed in the blob — and the biggest connected part of the rest of the
    object, if it covers at least π τ² (slivers along the blob's edge go to the blob): a blob
    joined to a rod as wide as the junction (a sodium source or particle at a wire's end), or a
    smaller particle that touches a big one along a broad contact.
    Returns (markers, n); n < 2 means no neck.
    """
    import cv2

    dmax = float(d.max())
    for tau in np.arange(1.0, dmax - h + 1e-9, 1.0):
        k, comp = cv2.connectedComponents((d > tau).view(np.uint8), connectivity=8)
        k -= 1  # the background is component 0
        if k < 2:
            continue
        top = np.asarray(ndimage.maximum(d, comp, index=np.arange(1, k + 1)))
        keep = np.flatnonzero(top >= tau + h) + 1
        if keep.size >= 2:
            lut = np.zeros(k + 1, np.int32)
            lut[keep] = np.arange(1, keep.size + 1)
            return lut[comp], int(keep.size)
        if keep.size == 1 and tau >= h_px:
            dome_top = float(top[keep[0] - 1])
            rest = np.delete(top, keep[0] - 1)
            if rest.max() < max(h_px, rest_rel * dome_top):
                continue
            # the blob: its core (the dome above half-way between saddle and top) grown back by
            # that level, i.e. the discs inscribed in the blob itself, not in a rod beside it;
            # the rest of the object is the other part
            tau_b = 0.5 * (tau + dome_top)
            r = int(np.ceil(tau_b)) + 1
            disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
            core = ((comp == keep[0]) & (d > tau_b)).astype(np.uint8)
            blob = cv2.dilate(core, disc).astype(bool) & (d > 0)
            # the rest is the biggest connected part outside the blob; slivers along the blob's
            # edge (where it is not quite round) go back to the blob
            n_o, parts = cv2.connectedComponents(((d > 0) & ~blob).view(np.uint8), connectivity=8)
            if n_o < 2:
                continue
            sizes = np.bincount(parts.ravel(), minlength=n_o)[1:]
            if sizes.max() >= np.pi * tau**2:
                other = parts == 1 + int(np.argmax(sizes))
                return np.where(other, 2, np.where(d > 0, 1, 0)).astype(np.int32), 2
    return np.zeros(d.shape, np.int32), 0


def split_necks(labels: np.ndarray, *, h_px: float = 3.0, h_rel: float = 0.4, min_roundness: float = 0.5,
                min_area_px: int = 16) -> np.ndarray:
    """Split instances that are two or more blobs joined by a narrow neck.

    Two close particles can come out of the network as one instance joined by a bridge (low
    dose, a gap of a few px). Within each instance the distance transform has one dome per
    blob; blobs are split apart where their domes rise above the saddle between them (the
    neck's half width) by at least ``max(h_px, h_rel × the instance's largest inscribed radius)``
    — so wires with rough edges and particles with small bumps stay whole — along the neck, by a
    watershed, and only if at most one piece is not a blob (a blob's inscribed disc covers ≥
    ``min_roundness`` of it): a particle or a sodium source joined to a wire is cut off, a wire
    pinched by noise (two rods) is not cut into pieces.

    Parameters
    ----------
    labels : ndarray of int, (Y, X)
        Instances, 0 = background.
    h_px : float
        Smallest rise of a blob above the neck, px.
    h_rel : float
        Smallest rise relative to the instance's largest inscribed radius (0.4: the neck is at
        most 60 % as wide as the smaller blob's inscribed radius when that blob is the largest).
    min_roundness : float
        Smallest π r² / area of a blob (r: its inscribed radius); a disc is 1, a 1:3 rod ~0.26.
    min_area_px : int
        Pieces smaller than this, px, are dropped (as by the other splitters).

    Returns
    -------
    ndarray of uint32, (Y, X)
        Labels 1..n.
    """
    import cv2
    from skimage.segmentation import watershed

    labels = np.asarray(labels)
    if labels.max(initial=0) == 0:
        return labels.astype(np.uint32)
    out = None
    nxt = int(labels.max()) + 1
    Y, X = labels.shape
    for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        # the object's box with a 1-px margin, so its distance map sees the background around it;
        # beyond the image border the object goes on (OpenCV's distance map takes the outside as
        # object), so a sodium source or particle cut by the border keeps its dome
        sl = (slice(max(sl[0].start - 1, 0), min(sl[0].stop + 1, Y)), slice(max(sl[1].start - 1, 0), min(sl[1].stop + 1, X)))
        m = labels[sl] == lab
        if m.all():
            continue
        d = cv2.distanceTransform(m.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        dmax = float(d.max())
        d_in = d if sl[0].start and sl[1].start and sl[0].stop < Y and sl[1].stop < X else \
            cv2.distanceTransform(np.pad(m, 1).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        if m.sum() < 1.1 * np.pi * float(d_in.max()) ** 2:  # one disc (or less): nothing to split
            continue
        mk, k = _neck_markers(d, max(h_px, h_rel * dmax), h_px=h_px)
        if k < 2:
            continue
        ws = watershed(-d, mk, mask=m)
        # blobs, and at most one piece that is not (a wire with a particle or a sodium source
        # at its end or side); two rod pieces are a wire pinched by noise and stay whole
        area = np.bincount(ws.ravel(), minlength=k + 1)[1:]
        r_in = ndimage.maximum(d, ws, index=np.arange(1, k + 1))
        if np.sum(np.pi * np.asarray(r_in) ** 2 / np.maximum(area, 1) < min_roundness) > 1:
            continue
        if out is None:
            out = labels.astype(np.int64)
        sub = out[sl]
        for v in range(2, k + 1):  # piece 1 keeps the instance's label
            sub[ws == v] = nxt
            nxt += 1
    return labels.astype(np.uint32) if out is None else _relabel(out, min_area_px)


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
