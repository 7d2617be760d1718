"""Linking objects into tracks, tuned for swelling, touching objects.

Objects are linked on their drift-corrected centroids plus a size coordinate (√area scaled by
``size_weight``), so that a small particle is never swapped with its big swollen neighbour; the
search range scales with the typical object size; ``memory`` keeps a track id through frames in
which the object was missed. Between a wire's track and a wire in the next frame, the part of the
displacement along the track's long axis counts only :data:`WIRE_ALONG_WEIGHT` times: a wire's
centroid slides along its axis when an end is outlined short, a piece breaks off or the Na source
is taken in and let go, while across its axis it stays put. After linking, ``kind`` is made
consistent per track (majority).

The default linker (``method="fast"``) is the Crocker–Grier algorithm of :func:`trackpy.link` —
in each frame the links minimise the total squared displacement, a track left unlinked costing
``search_range²`` (trackpy's null link), with memory — solved exactly per frame: unambiguous pairs
(one candidate each way) are linked directly and the rest by one optimal assignment
(:func:`scipy.optimize.linear_sum_assignment`), with no per-subnetwork Python recursion and no
size limit on a subnetwork. ``method="trackpy"`` runs :func:`trackpy.link_iter` itself on the same
coordinates with the Euclidean distance (the reference; the tests check both give the same tracks
with ``wire_along_weight=1``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["link_objects", "default_search_range_nm"]

_DENSE_MAX = 1 << 14  # tracks × objects below which a frame's distances are computed densely
#: default weight of a wire's displacement along its own axis in the linking distance
#: (a wire's centroid slides along its axis when an end is outlined short or a piece breaks off;
#: on 72 synthetic wire scenes the share of wires followed by one track rose from 0.61 to 0.76,
#: ``models/experiments/README.md``, session 14)
WIRE_ALONG_WEIGHT = 0.15
_AXES_AGREE = float(np.cos(np.radians(20.0)))  # |cos| between two wires' axes for the discount


def default_search_range_nm(objects: pd.DataFrame, fraction: float = 0.35, floor_nm: float = 3.0) -> float:
    """Search range from object size: ``fraction`` × the 25th percentile of particle widths.

    Drift-corrected centroids of swelling objects hardly move between frames; a range of about a
    third of the smallest objects' width links them while never reaching a neighbour's centroid
    (touching particles are at least one diameter apart).
    """
    if objects.empty:
        return floor_nm
    w = objects["width_nm"].to_numpy(float)
    w = w[np.isfinite(w)]
    if w.size == 0:
        return floor_nm
    return float(max(fraction * np.percentile(w, 25), floor_nm))


def _aniso_d2(D: np.ndarray, d2: np.ndarray, t_axis: np.ndarray, o_axis: np.ndarray, along: np.ndarray,
              half: np.ndarray) -> np.ndarray:
    """Squared distances with the along-axis part discounted (see :func:`_candidates`); every array
    broadcast over the pairs: displacement ``D`` (…, ≥ 2), Euclidean ``d2``, the track's axis, the
    object's axis, the track's weight and half length."""
    t = np.abs(D[..., 0] * t_axis[..., 0] + D[..., 1] * t_axis[..., 1])  # along the track's axis
    agree = np.abs(t_axis[..., 0] * o_axis[..., 0] + t_axis[..., 1] * o_axis[..., 1]) >= _AXES_AGREE
    a = np.where(agree, along, 1.0)
    inside = np.minimum(t, half)
    t_eff = a * inside + (t - inside)  # beyond the wire's own half length the displacement counts fully
    return d2 - t * t + t_eff * t_eff


def _candidates(A: np.ndarray, P: np.ndarray, sr: float, axis: np.ndarray | None = None,
                along: np.ndarray | None = None, half: np.ndarray | None = None,
                p_axis: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs (track i, object j, squared distance) closer than ``sr``.

    With ``axis`` (unit vectors (x, y) per track), ``along`` (weights per track), ``half`` (half
    lengths per track) and ``p_axis`` (unit axes per object, zero for objects that are not
    wires), the part of a displacement along a track's axis, up to the track's half length, counts
    ``along`` times towards an object whose axis agrees with the track's within 20° (a wire's
    centroid sliding inside its own outline); the rest counts fully (Euclidean)."""
    aniso = (axis is not None and along is not None and half is not None and p_axis is not None
             and bool((along < 1).any()) and bool(p_axis.any()))
    if A.shape[0] * P.shape[0] <= _DENSE_MAX:
        D = P[None, :, :] - A[:, None, :]
        d2 = (D * D).sum(-1)
        if aniso:
            d2 = _aniso_d2(D, d2, axis[:, None, :], p_axis[None, :, :], along[:, None], half[:, None])
        i, j = np.nonzero(d2 <= sr * sr)
        return i, j, d2[i, j]
    from scipy.spatial import cKDTree

    reach = sr
    if aniso:  # the farthest along-axis displacement that can still count as ≤ sr, then across
        w = along < 1
        t_max = float(np.max(np.minimum(sr / np.maximum(along[w], 1e-6), half[w] + sr)))
        reach = float(np.hypot(t_max, sr))
    rec = cKDTree(A).sparse_distance_matrix(cKDTree(P), reach, output_type="ndarray")
    i, j, d2 = rec["i"].astype(np.int64), rec["j"].astype(np.int64), rec["v"] ** 2
    if aniso:
        d2 = _aniso_d2(P[j] - A[i], d2, axis[i], p_axis[j], along[i], half[i])
        ok = d2 <= sr * sr
        i, j, d2 = i[ok], j[ok], d2[ok]
    return i, j, d2


def _link_fast(frame: np.ndarray, pos: np.ndarray, sr: float, memory: int, axis: np.ndarray | None = None,
               along: np.ndarray | None = None, half: np.ndarray | None = None) -> np.ndarray:
    """Track ids (0, 1, … in order of first appearance) for rows sorted by frame.

    ``axis`` (n, 2) unit long axes, ``along`` (n,) weights of the displacement along them and
    ``half`` (n,) half lengths, per row: a track's distance to the next frame's wires (weight < 1)
    uses its last object's axis, weight and half length (:func:`_candidates`); to other objects it
    is Euclidean."""
    from scipy.optimize import linear_sum_assignment

    n = frame.size
    ids = np.empty(n, np.int64)
    cuts = np.flatnonzero(np.diff(frame)) + 1
    starts = np.r_[0, cuts]
    stops = np.r_[cuts, n]
    if axis is None or along is None or half is None:
        axis, along, half = np.zeros((n, 2)), np.ones(n), np.zeros(n)
    p_axis = np.where((along < 1)[:, None], axis, 0.0)  # objects that can be reached along an axis
    act_pos = np.empty((0, pos.shape[1]))
    act_axis = np.empty((0, 2))
    act_along = np.empty(0)
    act_half = np.empty(0)
    act_id = np.empty(0, np.int64)
    act_last = np.empty(0, np.int64)
    next_id = 0
    sr2 = sr * sr
    for a, b in zip(starts.tolist(), stops.tolist()):
        t = int(frame[a])
        P = pos[a:b]
        m = b - a
        if act_id.size:
            keep = t - act_last <= memory + 1
            if not keep.all():
                act_pos, act_id, act_last = act_pos[keep], act_id[keep], act_last[keep]
                act_axis, act_along, act_half = act_axis[keep], act_along[keep], act_half[keep]
        obj_track = np.full(m, -1, np.int64)  # index into the active tracks
        if act_id.size:
            i, j, d2 = _candidates(act_pos, P, sr, act_axis, act_along, act_half, p_axis[a:b])
            if i.size:
                ni = np.bincount(i, minlength=act_id.size)
                nj = np.bincount(j, minlength=m)
                simple = (ni[i] == 1) & (nj[j] == 1)
                obj_track[j[simple]] = i[simple]
                if not simple.all():
                    hard = ~simple
                    ri, rinv = np.unique(i[hard], return_inverse=True)
                    cj, cinv = np.unique(j[hard], return_inverse=True)
                    cost = np.full((ri.size, cj.size + ri.size), np.inf)
                    cost[rinv, cinv] = d2[hard]
                    cost[np.arange(ri.size), cj.size + np.arange(ri.size)] = sr2  # null link
                    rr, cc = linear_sum_assignment(cost)
                    real = cc < cj.size
                    obj_track[cj[cc[real]]] = ri[rr[real]]
        linked = obj_track >= 0
        out = np.empty(m, np.int64)
        out[linked] = act_id[obj_track[linked]]
        n_new = int(m - linked.sum())
        out[~linked] = np.arange(next_id, next_id + n_new)
        next_id += n_new
        ids[a:b] = out
        if linked.any():
            act_pos[obj_track[linked]] = P[linked]
            act_axis[obj_track[linked]] = axis[a:b][linked]
            act_along[obj_track[linked]] = along[a:b][linked]
            act_half[obj_track[linked]] = half[a:b][linked]
            act_last[obj_track[linked]] = t
        if n_new:
            act_pos = np.concatenate([act_pos, P[~linked]])
            act_axis = np.concatenate([act_axis, axis[a:b][~linked]])
            act_along = np.concatenate([act_along, along[a:b][~linked]])
            act_half = np.concatenate([act_half, half[a:b][~linked]])
            act_id = np.concatenate([act_id, out[~linked]])
            act_last = np.concatenate([act_last, np.full(n_new, t, np.int64)])
    return ids


def _link_trackpy(frame: np.ndarray, pos: np.ndarray, sr: float, memory: int,
                  adaptive_stop: float | None) -> np.ndarray:
    import trackpy
    from trackpy.linking.linking import link_iter

    trackpy.quiet()
    cuts = np.flatnonzero(np.diff(frame)) + 1
    kw = {"memory": int(memory)}
    if adaptive_stop is not None:
        kw.update(adaptive_stop=adaptive_stop, adaptive_step=0.9)
    out = []
    for _, ids in link_iter(zip(frame[np.r_[0, cuts]].tolist(), np.split(pos, cuts)), sr, **kw):
        out.extend(ids)
    codes, _ = pd.factorize(np.asarray(out))
    return codes.astype(np.int64)


def link_objects(
    objects: pd.DataFrame,
    search_range_nm: float | None = None,
    *,
    memory: int = 5,
    size_weight: float = 0.5,
    adaptive_stop: float | None = None,
    method: str = "fast",
    wire_along_weight: float | None = None,
) -> pd.DataFrame:
    """Give every object a ``track_id`` (Crocker–Grier linking of drift-corrected centroids).

    Parameters
    ----------
    objects : DataFrame
        From :func:`measure_objects` (columns ``frame``, ``x_nm``, ``y_nm``, ``area_nm2``, …),
        any number of frames.
    search_range_nm : float, optional
        Largest displacement between frames, nm. Default :func:`default_search_range_nm`.
    memory : int
        Frames an object may be missing and keep its track id.
    size_weight : float
        Weight of the size coordinate √area in the linking distance (0: centroids only).
    adaptive_stop : float, optional
        ``method="trackpy"`` only: passed to :func:`trackpy.link` (smallest search range tried in
        crowded subnetworks; the fast linker has no subnetwork size limit).
    method : {"fast", "trackpy"}
        The exact per-frame assignment (default) or trackpy's own linker.
    wire_along_weight : float, optional
        Weight of a wire's displacement along its own long axis (``kind == "wire"``, axis from
        ``angle_deg``, length ``length_nm``) in the linking distance, 0–1: a wire's centroid
        slides along its axis when an end is outlined short, a piece breaks off or the reacted
        part swells, while across the axis it stays put. Applied between a wire's track and a
        wire whose axis agrees with the track's within 20°, to the part of the displacement within
        half the track's last length (a centroid that stays inside the wire's own outline);
        beyond that, and for every other pair, the distance is Euclidean (a collinear neighbour or
        a new piece further along the axis is not taken over). None: :data:`WIRE_ALONG_WEIGHT` for
        the fast linker; trackpy's linker takes the Euclidean distance only (1).

    Returns
    -------
    DataFrame
        ``objects`` with an int64 ``track_id`` column (1, 2, … in order of first appearance),
        sorted by frame and track, and ``kind`` made the per-track majority.
    """
    if method not in ("fast", "trackpy"):
        raise ValueError(f"method must be 'fast' or 'trackpy', got {method!r}")
    if wire_along_weight is None:
        wire_along_weight = WIRE_ALONG_WEIGHT if method == "fast" else 1.0
    wire_along_weight = float(wire_along_weight)
    if not 0.0 < wire_along_weight <= 1.0:
        raise ValueError(f"wire_along_weight must be in (0, 1], got {wire_along_weight!r}")
    if method == "trackpy" and wire_along_weight != 1.0:
        raise ValueError("method='trackpy' links on Euclidean distances only: wire_along_weight must be 1")
    if objects.empty:
        out = objects.copy()
        out["track_id"] = pd.Series(dtype=np.int64)
        return out
    sr = float(search_range_nm) if search_range_nm is not None else default_search_range_nm(objects)
    frame = objects["frame"].to_numpy(np.int64)
    cols = [objects["x_nm"].to_numpy(float), objects["y_nm"].to_numpy(float)]
    if size_weight:
        cols.append(size_weight * np.sqrt(objects["area_nm2"].to_numpy(float)))
    pos = np.column_stack(cols)
    order = np.argsort(frame, kind="stable")
    fs = frame[order]
    if method == "fast":
        axis = along = half = None
        if wire_along_weight < 1.0 and {"kind", "angle_deg", "length_nm"} <= set(objects.columns):
            theta = np.radians(objects["angle_deg"].to_numpy(float))
            length = objects["length_nm"].to_numpy(float)
            wire = (objects["kind"].to_numpy() == "wire") & np.isfinite(theta) & np.isfinite(length)
            axis = np.column_stack([np.cos(theta), np.sin(theta)])
            axis[~wire] = 0.0
            along = np.where(wire, wire_along_weight, 1.0)
            half = np.where(wire, 0.5 * length, 0.0)
            axis, along, half = axis[order], along[order], half[order]
        tid_sorted = _link_fast(fs, pos[order], sr, int(memory), axis, along, half) + 1
    else:
        tid_sorted = _link_trackpy(fs, pos[order], sr, int(memory), adaptive_stop) + 1
    # rows sorted by (frame, track id)
    final = order[np.lexsort((tid_sorted, fs))]
    tid = np.empty(frame.size, np.int64)
    tid[order] = tid_sorted
    out = objects.take(final).reset_index(drop=True)
    tid = tid[final]
    out["track_id"] = tid
    if "kind" in out:
        wire = (out["kind"].to_numpy() == "wire").astype(float)
        share = np.bincount(tid, wire) / np.maximum(np.bincount(tid), 1)
        out["kind"] = np.where(share[tid] > 0.5, "wire", "particle").astype(object)
    return out
