"""Objects per frame from instance and class masks: one vectorised pass over a chunk of frames.

Every object is measured from pixel moments accumulated with :func:`numpy.bincount` over the
whole chunk (no per-object Python loop): centroid, projected area, orientation, aspect ratio and
reacted fraction. Elongated objects (wires) also get an axial profile — pixels binned along the
principal axis — from which their width, length and reaction front are read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["measure_objects", "MEASURE_EXTRA_COLUMNS"]

#: columns added by :func:`measure_objects` beside the ``objects.csv`` ones (NaN where they do not
#: apply). ``label`` is the instance label in its frame; ``kind`` the shape class; ``aspect`` the
#: major/minor axis ratio; ``angle_deg`` the long axis (from +x towards +y); the rest are wire
#: geometry: the two ends of the axis (drift-corrected, nm), the reacted length along the axis and
#: the axial extent of the reacted part measured from end a, and the side the reacted part is on.
MEASURE_EXTRA_COLUMNS = [
    "label", "kind", "aspect", "angle_deg",
    "end_a_x_nm", "end_a_y_nm", "end_b_x_nm", "end_b_y_nm",
    "reacted_length_nm", "reacted_lo_nm", "reacted_hi_nm", "width_a_nm", "width_b_nm",
    "width_pristine_nm", "width_swollen_nm",
]

_OUT = ["frame", "time_s", "label", "kind", "x_nm", "y_nm", "area_nm2", "width_nm", "length_nm",
        "reacted_fraction", "aspect", "angle_deg", "end_a_x_nm", "end_a_y_nm", "end_b_x_nm",
        "end_b_y_nm", "reacted_length_nm", "reacted_lo_nm", "reacted_hi_nm", "width_a_nm",
        "width_b_nm"]


def _empty() -> pd.DataFrame:
    df = pd.DataFrame({c: pd.Series(dtype="float64") for c in _OUT})
    df["frame"] = df["frame"].astype(np.int64)
    df["label"] = df["label"].astype(np.int64)
    df["kind"] = df["kind"].astype(object)
    return df


def _running_mean(prof: np.ndarray, starts: np.ndarray, nb: np.ndarray, k: int = 3) -> np.ndarray:
    """Running mean of width ``k`` inside each object's segment of the concatenated profile."""
    c = np.concatenate([[0.0], np.cumsum(prof)])
    idx = np.arange(prof.size)
    obj = np.repeat(np.arange(nb.size), nb)
    lo = np.maximum(idx - k // 2, starts[obj])
    hi = np.minimum(idx + k // 2 + 1, starts[obj] + nb[obj])
    return (c[hi] - c[lo]) / (hi - lo)


def _group_median(v: np.ndarray, group: np.ndarray, use: np.ndarray, n: int) -> np.ndarray:
    """Median of ``v[use]`` per group (NaN for a group with none)."""
    out = np.full(n, np.nan)
    g, x = group[use], v[use]
    if g.size == 0:
        return out
    o = np.lexsort((x, g))
    g, x = g[o], x[o]
    cnt = np.bincount(g, minlength=n)
    first = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    has = cnt > 0
    lo = first[has] + (cnt[has] - 1) // 2
    hi = first[has] + cnt[has] // 2
    out[has] = 0.5 * (x[lo] + x[hi])
    return out


def _circle_fix(lab, o_t, o_lab, ukey, base, mc, mr, is_wire, width, length, touch_frac=0.05):
    """Particles cut by a touching neighbour: diameter from a circle fitted to the free edge.

    Edge samples are the midpoints of (object pixel, background pixel) 4-neighbour pairs; pairs
    with another instance are left out. A particle whose edge touches another instance on more
    than ``touch_frac`` of its boundary gets width = length = the fitted circle's diameter.
    """
    xs, ys, ks, touch_k = [], [], [], []
    for axis in (1, 2):
        for step in (1, -1):
            a = lab
            b = np.roll(lab, -step, axis=axis)
            valid = np.ones(lab.shape, bool)
            if step == 1:
                valid[(slice(None),) + ((slice(-1, None), slice(None)) if axis == 1 else (slice(None), slice(-1, None)))] = False
            else:
                valid[(slice(None),) + ((slice(0, 1), slice(None)) if axis == 1 else (slice(None), slice(0, 1)))] = False
            edge = valid & (a > 0) & (a != b)
            tt, rr, cc = np.nonzero(edge)
            la, lb = a[tt, rr, cc], b[tt, rr, cc]
            key = tt.astype(np.int64) * base + la
            k = np.searchsorted(ukey, key)
            free = lb == 0
            dr = 0.5 * step if axis == 1 else 0.0
            dc = 0.5 * step if axis == 2 else 0.0
            xs.append(cc[free] + dc)
            ys.append(rr[free] + dr)
            ks.append(k[free])
            touch_k.append(k[~free])
    n_obj = ukey.size
    x, y, k = np.concatenate(xs), np.concatenate(ys), np.concatenate(ks)
    n_free = np.bincount(k, minlength=n_obj)
    n_touch = np.bincount(np.concatenate(touch_k), minlength=n_obj)
    cut = (~is_wire) & (n_touch > touch_frac * (n_free + n_touch)) & (n_free >= 8)
    if not cut.any():
        return
    sel = cut[k]
    x, y, k = x[sel] - mc[k[sel]], y[sel] - mr[k[sel]], k[sel]
    z = x * x + y * y
    def S(v):
        return np.bincount(k, v, n_obj)[cut]

    M = np.stack([np.stack([S(x * x), S(x * y), S(x)], -1), np.stack([S(x * y), S(y * y), S(y)], -1),
                  np.stack([S(x), S(y), n_free[cut].astype(float)], -1)], 1)
    rhs = np.stack([S(x * z), S(y * z), S(z)], -1)
    try:
        A, B, C = np.linalg.solve(M, rhs[..., None])[..., 0].T
    except np.linalg.LinAlgError:
        return
    d = 2 * np.sqrt(np.maximum(C + (A * A + B * B) / 4, 0))
    width[cut] = d
    length[cut] = d


def measure_objects(
    classes: np.ndarray | None,
    instances: np.ndarray,
    frame: int | np.ndarray = 0,
    time_s: float | np.ndarray | None = None,
    nm_per_px: float = 1.0,
    drift_nm: np.ndarray | None = None,
    *,
    wire_aspect: float = 3.0,
    min_area_px: int = 4,
    lump_factor: float = 1.6,
) -> pd.DataFrame:
    """Measure every instance of one frame or a chunk of frames.

    Parameters
    ----------
    classes : ndarray (Y, X) or (T, Y, X) of uint8, or None
        0 background, 1 pristine, 2 reacted. None: nothing is reacted.
    instances : ndarray (Y, X) or (T, Y, X) of int
        Instance labels, 0 = none. Labels need only be unique within a frame.
    frame : int or ndarray of int
        Frame number of the first frame of the chunk, or one number per frame.
    time_s : float or ndarray, optional
        Acquisition time(s), s. Default: NaN.
    nm_per_px : float
        Pixel size, nm/px.
    drift_nm : ndarray (2,) or (T, 2), optional
        Sample drift (x, y) of each frame in nm (as from :func:`estimate_drift` × nm/px);
        positions are returned drift-corrected (``x_nm = column·nm_per_px − drift_x_nm``).
    wire_aspect : float
        Major/minor axis ratio from which an object is a wire.
    min_area_px : int
        Smaller instances are ignored (segmentation specks).
    lump_factor : float
        A run of unreacted axial bins at a wire's end wider than ``lump_factor`` × the wire's
        median width is not wire (the Na source merged into it by a segmentation): it is left
        out of the wire's width, length, ends and front.

    Returns
    -------
    DataFrame
        One row per object and frame: ``frame, time_s, label, kind, x_nm, y_nm, area_nm2,
        width_nm, length_nm, reacted_fraction`` and the extras of ``MEASURE_EXTRA_COLUMNS``.
        ``width_nm`` is the width across the long axis: for a particle the diameter of the
        ellipse of the same area and moments (the diameter of a disc); for a wire the largest
        width near its sodium-contact end (the end the reacted part touches; mean of the axial
        profile's first three full cross-sections from that end — bins under 0.6 × the wire's
        median width, where the end is cut at a slant, are skipped), so that it follows the
        swelling that starts there. ``length_nm`` is the extent along the long axis.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((32, 32), np.uint32); yy, xx = np.mgrid[:32, :32]
    >>> lab[(yy - 16) ** 2 + (xx - 16) ** 2 < 100] = 1
    >>> df = measure_objects(None, lab, nm_per_px=2.0)
    >>> round(float(df.width_nm[0]))
    20
    """
    lab = np.asarray(instances)
    if lab.ndim == 2:
        lab = lab[None]
    if lab.ndim != 3:
        raise ValueError(f"instances must be (Y, X) or (T, Y, X), got shape {np.shape(instances)}")
    T, H, W = lab.shape
    cls = None if classes is None else np.asarray(classes).reshape(lab.shape)
    frames = (np.arange(T) + int(frame)) if np.ndim(frame) == 0 else np.asarray(frame, np.int64)
    if frames.shape != (T,):
        raise ValueError(f"frame must be an int or one number per frame ({T})")
    times = np.full(T, np.nan) if time_s is None else np.broadcast_to(np.asarray(time_s, float), (T,))
    drift = np.zeros((T, 2)) if drift_nm is None else np.broadcast_to(np.asarray(drift_nm, float).reshape(-1, 2), (T, 2))
    nm = float(nm_per_px)
    if not (nm > 0):
        raise ValueError(f"nm_per_px must be > 0, got {nm_per_px!r}")

    if T == 0:
        return _empty()
    flat = lab.reshape(T, -1)
    tt, pix = np.nonzero(flat)
    if tt.size == 0:
        return _empty()
    lbl = flat[tt, pix].astype(np.int64)
    # compact (frame, label) keys
    key = tt.astype(np.int64) * (int(lbl.max()) + 1) + lbl
    ukey, inv = np.unique(key, return_inverse=True)
    n_obj = ukey.size
    r = (pix // W).astype(np.float64)
    c = (pix % W).astype(np.float64)
    cnt = np.bincount(inv, minlength=n_obj).astype(np.float64)
    mr = np.bincount(inv, r, n_obj) / cnt
    mc = np.bincount(inv, c, n_obj) / cnt
    dr, dc = r - mr[inv], c - mc[inv]
    vyy = np.bincount(inv, dr * dr, n_obj) / cnt + 1 / 12
    vxx = np.bincount(inv, dc * dc, n_obj) / cnt + 1 / 12
    vxy = np.bincount(inv, dr * dc, n_obj) / cnt
    if cls is not None:
        reacted = cls.reshape(T, -1)[tt, pix] == 2
        n_re = np.bincount(inv, reacted, n_obj)
    else:
        reacted = np.zeros(tt.size, bool)
        n_re = np.zeros(n_obj)
    half_tr, half_diff = (vxx + vyy) / 2, (vxx - vyy) / 2
    root = np.sqrt(half_diff**2 + vxy**2)
    lam1, lam2 = half_tr + root, np.maximum(half_tr - root, 1e-12)
    theta = 0.5 * np.arctan2(2 * vxy, vxx - vyy)
    aspect = np.sqrt(lam1 / lam2)
    o_t = (ukey // (int(lbl.max()) + 1)).astype(np.int64)
    o_lab = (ukey % (int(lbl.max()) + 1)).astype(np.int64)
    is_wire = aspect >= wire_aspect
    # particles: the ellipse with the object's area and axis ratio
    d_eq = np.sqrt(4 * cnt / np.pi)
    ratio = np.sqrt(lam2 / lam1)
    width = d_eq * np.sqrt(ratio)
    length = d_eq / np.sqrt(ratio)
    _circle_fix(lab, o_t, o_lab, ukey, int(lbl.max()) + 1, mc, mr, is_wire, width, length)
    nan = np.full(n_obj, np.nan)
    ends = np.full((n_obj, 4), np.nan)
    re_len, re_lo, re_hi, w_a, w_b = nan.copy(), nan.copy(), nan.copy(), nan.copy(), nan.copy()
    w_pr, w_sw = nan.copy(), nan.copy()

    wires = np.flatnonzero(is_wire)
    if wires.size:
        sel = np.flatnonzero(is_wire[inv])  # pixels of wires
        pc, pr = mc.copy(), mr.copy()  # origin of each wire's axis (px)
        for it in range(2):
            oi = inv[sel]
            if it == 1:
                # axis of the wire without its end lumps
                cnt_w = np.bincount(oi, minlength=n_obj).astype(np.float64)
                cw = np.maximum(cnt_w, 1)
                pr = np.where(cnt_w > 0, np.bincount(oi, r[sel], n_obj) / cw, mr)
                pc = np.where(cnt_w > 0, np.bincount(oi, c[sel], n_obj) / cw, mc)
                d_r, d_c = r[sel] - pr[oi], c[sel] - pc[oi]
                syy = np.bincount(oi, d_r * d_r, n_obj)
                sxx = np.bincount(oi, d_c * d_c, n_obj)
                sxy = np.bincount(oi, d_r * d_c, n_obj)
                theta = np.where(is_wire, 0.5 * np.arctan2(2 * sxy, sxx - syy), theta)
            ux, uy = np.cos(theta), np.sin(theta)
            s = (c[sel] - pc[oi]) * ux[oi] + (r[sel] - pr[oi]) * uy[oi]
            smin = np.full(n_obj, np.inf)
            smax = np.full(n_obj, -np.inf)
            np.minimum.at(smin, oi, s)
            np.maximum.at(smax, oi, s)
            b = np.floor(s - smin[oi] + 0.5).astype(np.int64)  # bin 0 centred on the first pixel
            nb_all = np.zeros(n_obj, np.int64)
            nb_all[wires] = np.floor(smax[wires] - smin[wires] + 0.5).astype(np.int64) + 1
            starts_all = np.concatenate([[0], np.cumsum(nb_all)[:-1]])
            gb = starts_all[oi] + b
            total_bins = int(nb_all.sum())
            prof = np.bincount(gb, minlength=total_bins).astype(np.float64)  # px per 1-px bin = width px
            prof_re = np.bincount(gb, reacted[sel], minlength=total_bins)
            frac = np.divide(prof_re, prof, out=np.zeros_like(prof), where=prof > 0)
            nbw, stw = nb_all[wires], starts_all[wires]
            sm = _running_mean(prof, stw, nbw)
            # interior bins only: the end faces are partial, and so is every cross-section the
            # image border cuts (a wire running out of the field); a bin holding a border pixel
            # is clipped, and so are its neighbours (a tilted cut spreads over adjacent bins)
            obj_of_bin = np.repeat(np.arange(wires.size), nbw)
            pos = np.arange(total_bins) - stw[obj_of_bin]
            rr_s, cc_s = r[sel], c[sel]
            on_edge = (rr_s == 0) | (rr_s == H - 1) | (cc_s == 0) | (cc_s == W - 1)
            clipped = np.bincount(gb, on_edge, minlength=total_bins) > 0
            if clipped.any():
                same_prev = np.r_[False, obj_of_bin[1:] == obj_of_bin[:-1]]
                same_next = np.r_[obj_of_bin[:-1] == obj_of_bin[1:], False]
                grown = clipped.copy()
                for _ in range(2):
                    grown[1:] |= grown[:-1] & same_prev[1:]
                    grown[:-1] |= grown[1:] & same_next[:-1]
                clipped = grown
            interior = (pos >= 1) & (pos <= nbw[obj_of_bin] - 2) & ~clipped
            if it == 1:
                break
            # end lumps: a run of unreacted bins from an end much wider than the wire — the Na
            # source blob (or electrode) a segmentation merged into the wire at its contact end.
            # Their pixels are dropped and the wire re-measured without them.
            med = _group_median(prof, obj_of_bin, interior, wires.size)
            big = (sm > lump_factor * med[obj_of_bin]) & (frac <= 0.5)
            # the lump reaches from an end to its last wide bin in the outer 35 % of the wire
            # (its far side tapers: a blob's edge is round)
            nbo_w = nbw[obj_of_bin]
            in_a = big & (pos < 0.35 * nbo_w)
            in_b = big & (pos > 0.65 * (nbo_w - 1))
            last_a = np.full(wires.size, -1, np.int64)
            first_b = np.full(wires.size, np.iinfo(np.int64).max)
            np.maximum.at(last_a, obj_of_bin[in_a], pos[in_a])
            np.minimum.at(first_b, obj_of_bin[in_b], pos[in_b])
            lump = (pos <= last_a[obj_of_bin]) | (pos >= first_b[obj_of_bin])
            # never trim a whole object away: keep its pixels if the trim would leave < 4
            left = np.bincount(obj_of_bin, weights=prof * ~lump, minlength=wires.size)
            lump &= left[obj_of_bin] >= 4
            if not lump.any():
                break
            sel = sel[~lump[gb]]
        smi = np.where(interior, sm, -np.inf)
        wmax = np.full(wires.size, -np.inf)
        np.maximum.at(wmax, obj_of_bin, smi)
        wmax = np.where(np.isfinite(wmax), wmax, np.sqrt(lam2[wires]) * 4)
        width[wires] = wmax  # replaced by the contact-end width below
        length[wires] = smax[wires] - smin[wires] + 1.0
        # width near each end: mean of the 3 unclipped interior bins nearest the end (bins 1..3
        # unless the border cuts the end off) that are full cross-sections (≥ 0.6 × the wire's
        # median width: an end cut at a slant or along an arc — where a sodium source or particle
        # was cut off it — starts with partial bins)
        full = interior & (prof >= 0.6 * _group_median(prof, obj_of_bin, interior, wires.size)[obj_of_bin])
        seg_first = np.r_[0, np.cumsum(nbw)[:-1]]
        cum = np.cumsum(full)
        before = np.concatenate([[0], cum])[seg_first][obj_of_bin]  # full bins before the wire
        rank_a = cum - before  # 1 for the first full bin from end a
        rank_b = cum[(seg_first + nbw - 1)][obj_of_bin] - cum + full  # 1 for the last one
        near_a = full & (rank_a >= 1) & (rank_a <= 3)
        near_b = full & (rank_b >= 1) & (rank_b <= 3)
        na = np.bincount(obj_of_bin, near_a, wires.size)
        nbb = np.bincount(obj_of_bin, near_b, wires.size)
        w_a[wires] = np.where(na > 0, np.bincount(obj_of_bin, prof * near_a, wires.size) / np.maximum(na, 1), np.nan) * nm
        w_b[wires] = np.where(nbb > 0, np.bincount(obj_of_bin, prof * near_b, wires.size) / np.maximum(nbb, 1), np.nan) * nm
        re_len[wires] = np.bincount(obj_of_bin, frac, wires.size) * nm
        hit = frac > 0.5
        lo = np.full(wires.size, np.inf)
        hi = np.full(wires.size, -np.inf)
        np.minimum.at(lo, obj_of_bin[hit], pos[hit] - 0.5)
        np.maximum.at(hi, obj_of_bin[hit], pos[hit] + 0.5)
        # mean width of the pristine part (≥ 2 bins ahead of the front) and of the reacted half
        # nearest the contact end (fully swollen once the swelling has plateaued)
        nbo = nbw[obj_of_bin].astype(float)
        side_a = (lo <= (nbw - 1) - hi)  # the reacted part touches end a
        has = np.isfinite(lo)
        lo_o, hi_o, sa_o, has_o = lo[obj_of_bin], hi[obj_of_bin], side_a[obj_of_bin], has[obj_of_bin]
        # distance of each bin from the contact end and the front's distance from it
        dist = np.where(sa_o, pos, nbo - 1 - pos)
        front = np.where(sa_o, hi_o, nbo - 1 - lo_o)
        front = np.where(has_o, front, 0.0)
        prist = interior & (dist >= front + 2)
        swol = interior & has_o & (dist <= front / 2) & (front >= 4)
        npr = np.bincount(obj_of_bin, prist, wires.size)
        nsw = np.bincount(obj_of_bin, swol, wires.size)
        w_pr[wires] = np.where(npr > 0, np.bincount(obj_of_bin, prof * prist, wires.size) / np.maximum(npr, 1) * nm, np.nan)
        w_sw[wires] = np.where(nsw > 0, np.bincount(obj_of_bin, prof * swol, wires.size) / np.maximum(nsw, 1) * nm, np.nan)
        w_end = np.where(has, np.where(side_a, w_a[wires], w_b[wires]), np.fmax(w_a[wires], w_b[wires])) / nm
        width[wires] = np.where(np.isfinite(w_end), w_end, wmax)
        re_lo[wires] = np.where(np.isfinite(lo), lo * nm, np.nan)
        re_hi[wires] = np.where(np.isfinite(hi), hi * nm, np.nan)
        # axis ends (px, image frame): half a pixel beyond the extreme pixel centres
        a_s, b_s = smin[wires] - 0.5, smax[wires] + 0.5
        ends[wires, 0] = pc[wires] + a_s * ux[wires]
        ends[wires, 1] = pr[wires] + a_s * uy[wires]
        ends[wires, 2] = pc[wires] + b_s * ux[wires]
        ends[wires, 3] = pr[wires] + b_s * uy[wires]

    dx, dy = drift[o_t, 0], drift[o_t, 1]
    keep = cnt >= min_area_px
    df = pd.DataFrame({
        "frame": frames[o_t].astype(np.int64),
        "time_s": times[o_t].astype(np.float64),
        "label": o_lab,
        "kind": np.where(is_wire, "wire", "particle").astype(object),
        "x_nm": mc * nm - dx,
        "y_nm": mr * nm - dy,
        "area_nm2": cnt * nm * nm,
        "width_nm": width * nm,
        "length_nm": length * nm,
        "reacted_fraction": n_re / cnt,
        "aspect": aspect,
        "angle_deg": np.degrees(theta),
        "end_a_x_nm": ends[:, 0] * nm - dx,
        "end_a_y_nm": ends[:, 1] * nm - dy,
        "end_b_x_nm": ends[:, 2] * nm - dx,
        "end_b_y_nm": ends[:, 3] * nm - dy,
        "reacted_length_nm": re_len,
        "reacted_lo_nm": re_lo,
        "reacted_hi_nm": re_hi,
        "width_a_nm": w_a,
        "width_b_nm": w_b,
        "width_pristine_nm": w_pr,
        "width_swollen_nm": w_sw,
    })
    return df[keep].reset_index(drop=True)
