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


def _max_by_label(values: np.ndarray, labels: np.ndarray, n: int) -> np.ndarray:
    """Largest value of each label 1..n (0 where a label is absent); ``ndimage.maximum`` sorts."""
    if n <= 16:  # a few pieces (the usual case): one pass each beats np.maximum.at
        return np.array([float(values[labels == i].max(initial=0.0)) for i in range(1, n + 1)])
    out = np.zeros(n + 1, np.float64)
    on = labels > 0
    np.maximum.at(out, labels[on], values[on])
    return out[1:]


def _neck_markers(d: np.ndarray, h: float) -> tuple[np.ndarray, int]:
    """Markers of the domes of one object's distance map that rise ≥ ``h`` above a common saddle.

    The object's distance map is cut at rising levels τ (1 px steps); at the first level where two
    or more pieces of ``{d > τ}`` each reach ``τ + h``, those pieces are the markers (the saddle
    between them is below τ). Returns (markers, n); n < 2 means no neck.
    """
    import cv2

    dmax = float(d.max())
    for tau in np.arange(1.0, dmax - h + 1e-9, 1.0):
        k, comp = cv2.connectedComponents((d > tau).view(np.uint8), connectivity=8)
        k -= 1  # the background is component 0
        if k < 2:
            continue
        top = _max_by_label(d, comp, k)
        keep = np.flatnonzero(top >= tau + h) + 1
        if keep.size >= 2:
            lut = np.zeros(k + 1, np.int32)
            lut[keep] = np.arange(1, keep.size + 1)
            return lut[comp], int(keep.size)
    return np.zeros(d.shape, np.int32), 0


def _inscribed_blob(d: np.ndarray, level: float) -> np.ndarray:
    """The union of the discs of radius > ``level`` inscribed in the object around its deepest point.

    The part of ``{d > level}`` that holds the distance map's maximum, grown back by ``level``
    (a morphological opening of the object, restricted to its widest blob), within the object.
    The growth is a threshold of the Euclidean distance to that core — exact discs, in time linear
    in the pixels whatever the radius (a dilation by a disc costs its area per pixel: seconds for
    one 300 px-radius particle).
    """
    import cv2

    _, comp = cv2.connectedComponents((d > level).view(np.uint8), connectivity=8)
    outside = (comp != comp.flat[int(np.argmax(d))]).view(np.uint8)
    r = int(np.ceil(level)) + 1
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return (dist <= r) & (d > 0)


def _blob_rest_markers(d: np.ndarray, h: float, *, h_px: float, rest_rel: float, rod_rel: float,
                       min_roundness: float, dome_px: float = 1.0) -> tuple[np.ndarray, int]:
    """Markers of a blob and the one part of the object beside it, when no neck separates them.

    The blob is the object's widest part: the discs inscribed around the distance map's maximum
    ``D`` whose radius exceeds ``D - h``. What is left of the object must be *one* substantial
    part — a disc of radius ``max(h_px, rest_rel × D)`` fits in it alone, not a sliver or a wedge
    tapering off along the blob's edge. If that part is a rod (π r² / area below ``min_roundness``,
    ``r`` its ridge: its largest distance to the object's edge), the blob rises above its ridge by
    at least ``h`` (``D - r ≥ h``) and the rod is at most ``rod_rel`` as wide as the blob (``r ≤
    rod_rel × D``: a wire whose reacted section swells up to ~1.9× stays whole — at 2× the cut
    depends on the angle —, a sodium source 2.5–5× the wire's half width is cut off; above
    ``1 / rest_rel`` the wire is too thin to count and nothing is cut); if it is a blob too,
    it has a dome of its own, rising ``dome_px`` above the saddle where it joins the big blob
    (the narrow end of an egg has none), which rises ``h_px`` above that saddle. The cut runs
    along the blob's own discs at level ``(D + r) / 2``; slivers along the blob's edge go back to
    the blob. It must leave one part beside the blob: a second one that is more than a sliver
    (≥ ``h_px`` wide, half a disc of radius ``max(h_px, rest_rel × D)`` in area) is a wire
    passing by a particle on its side, which is left alone rather than cut in two. The blob
    must be round (π D² ≥ ``min_roundness`` × its area): the widest part of a wire is not a
    blob. Returns (markers, n); n < 2 means no such blob.
    """
    import cv2

    D = float(d.max())
    r_min = max(h_px, rest_rel * D)
    if D - h < r_min:
        return np.zeros(d.shape, np.int32), 0
    obj = d > 0

    def parts_beside(blob):
        # the parts of the object beside the blob; a part's own width is the largest disc that
        # fits in it alone (a sliver or a tapering wedge along the blob's edge has a thin one),
        # its ridge the object's distance map's largest value in it
        rest = obj & ~blob
        n, parts = cv2.connectedComponents(rest.view(np.uint8), connectivity=8)
        own = cv2.distanceTransform(np.pad(rest, 1).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        sizes = np.bincount(parts.ravel(), minlength=n)[1:]
        if n < 2:
            return parts, sizes, np.zeros(0), np.zeros(0)
        return parts, sizes, _max_by_label(own, parts, n - 1), _max_by_label(d, parts, n - 1)

    blob0 = _inscribed_blob(d, D - h)
    parts, sizes, width, ridge = parts_beside(blob0)
    big = np.flatnonzero(width >= r_min)
    if big.size != 1:
        return np.zeros(d.shape, np.int32), 0
    r, area = float(ridge[big[0]]), int(sizes[big[0]])
    if np.pi * r**2 / area < min_roundness:
        # a rod: the blob rises h above the rod's own ridge and is 1 / rod_rel times as wide
        if D - r < h or r > rod_rel * D:
            return np.zeros(d.shape, np.int32), 0
    else:
        # a blob: a dome of its own (it rises ``dome_px`` above the saddle where it joins the big
        # one; the narrow end of an egg does not) that the big one rises ``h_px`` above
        top = np.unravel_index(int(np.argmax(np.where(parts == big[0] + 1, d, 0))), d.shape)
        centre = np.unravel_index(int(np.argmax(d)), d.shape)
        saddle = 0.0
        for tau in np.arange(np.floor(r * 4) / 4, 0, -0.25):
            _, comp = cv2.connectedComponents((d > tau).view(np.uint8), connectivity=8)
            if comp[top] == comp[centre]:
                saddle = float(tau)
                break
        if r - saddle < dome_px or D - saddle < h_px:
            return np.zeros(d.shape, np.int32), 0
    parts, sizes, width, _ = parts_beside(_inscribed_blob(d, 0.5 * (D + r)))
    # the cut must leave one part beside the blob: any other that is more than a sliver (≥ h_px
    # wide, half a disc of r_min in area) is a wire passing by the blob, cut in two
    if width.size == 0 or width.max() < r_min or np.sum((width >= h_px) & (sizes >= 0.5 * np.pi * r_min**2)) > 1:
        return np.zeros(d.shape, np.int32), 0
    other = parts == 1 + int(np.argmax(width))
    if np.pi * D**2 < min_roundness * np.count_nonzero(obj & ~other):  # the "blob" is a rod: a wire
        return np.zeros(d.shape, np.int32), 0
    return np.where(other, 2, np.where(obj, 1, 0)).astype(np.int32), 2


def split_necks(labels: np.ndarray, *, h_px: float = 3.0, h_rel: float = 0.4, min_roundness: float = 0.5,
                rest_rel: float = 0.2, rod_rel: float = 0.5, wider: float = 1.5,
                min_area_px: int = 16) -> np.ndarray:
    """Split instances that are two or more blobs joined by a narrow neck, or a blob and a rod.

    Two close particles can come out of the network as one instance joined by a bridge (low
    dose, a gap of a few px). Within each instance the distance transform has one dome per
    blob; blobs are split apart where their domes rise above the saddle between them (the
    neck's half width) by at least ``h = max(h_px, h_rel × the instance's largest inscribed
    radius)`` — so wires with rough edges and particles with small bumps stay whole — along the
    neck, by a watershed, and only if every piece is a blob (a blob's inscribed disc covers ≥
    ``min_roundness`` of it), or all are blobs but one rod that every blob is ``wider`` times as
    wide as (a particle joined to a wire by a neck): a wire pinched by noise is not cut, and
    neither is a particle less than 1.5× as wide as the wire bridged to its end.

    Failing a neck, a blob joined to the rest along a junction as wide as the rest — a sodium
    source or a particle taken in with the wire that touches it, a small particle pressed into a
    big one — is cut along the blob's own outline (:func:`_blob_rest_markers`: the blob rises
    ``h`` above the rest; a rod beside it is at most ``rod_rel`` as wide; exactly one substantial
    part beside the blob). At the image border this is tried first with the object going on
    beyond the border (a sodium source cut by the border keeps its depth), then with the border
    as the object's edge.

    Parameters
    ----------
    labels : ndarray of int, (Y, X)
        Instances, 0 = background.
    h_px : float
        Smallest rise of a blob above the neck or the rest, px.
    h_rel : float
        Smallest rise relative to the instance's largest inscribed radius (0.4: the neck is at
        most 60 % as wide as the smaller blob's inscribed radius when that blob is the largest).
    min_roundness : float
        Smallest π r² / area of a blob (r: its inscribed radius); a disc is 1, a 1:3 rod ~0.26.
    rest_rel : float
        Smallest inscribed radius of the part beside a blob, relative to the blob's.
    rod_rel : float
        Largest inscribed radius of a rod beside a blob, relative to the blob's.
    wider : float
        Smallest ratio of a blob's inscribed radius to a rod's, for a rod cut at a neck.
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
        # the object's box with a 1-px margin, so its distance map sees the background around it
        sl = (slice(max(sl[0].start - 1, 0), min(sl[0].stop + 1, Y)), slice(max(sl[1].start - 1, 0), min(sl[1].stop + 1, X)))
        m = labels[sl] == lab
        if m.all():
            continue
        d = cv2.distanceTransform(np.pad(m, 1).view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
        dmax = float(d.max())
        if m.sum() < 1.1 * np.pi * dmax ** 2:  # one disc (or less): nothing to split
            continue
        h = max(h_px, h_rel * dmax)
        mk, k = _neck_markers(d, h)
        if k >= 2:
            ws = watershed(-d, mk, mask=m)
            area = np.bincount(ws.ravel(), minlength=k + 1)[1:]
            r_in = _max_by_label(d, ws, k)
            rod = np.pi * r_in ** 2 / np.maximum(area, 1) < min_roundness
            if rod.sum() > 1 or (rod.sum() == 1 and r_in[~rod].min() < wider * r_in[rod][0]):
                continue
        else:
            kw = dict(h_px=h_px, rest_rel=rest_rel, rod_rel=rod_rel, min_roundness=min_roundness)
            k = 0
            if not (sl[0].start and sl[1].start and sl[0].stop < Y and sl[1].stop < X):
                # at the image border: first with the object going on beyond it (OpenCV's
                # distance map takes the outside as object), so that a sodium source cut by the
                # border keeps its depth
                d_o = cv2.distanceTransform(m.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
                mk, k = _blob_rest_markers(d_o, max(h_px, h_rel * float(d_o.max())), **kw)
            if k < 2:
                mk, k = _blob_rest_markers(d, h, **kw)
            if k < 2:
                continue
            ws = mk
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
