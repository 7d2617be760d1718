"""Segmentation and measurement accuracy against ground truth, network and baseline side by side.

Metrics per frame group (pooled over the frames of a dose level):

* ``iou_background``, ``iou_pristine``, ``iou_reacted``, ``iou_objects`` (pristine ∪ reacted):
  intersection over union, pooled (Σ intersections / Σ unions);
* ``boundary_f1``: F1 of the object outline pixels matched within 2 px;
* ``instance_f1``: F1 of objects matched one-to-one at IoU ≥ 0.5;
* ``front_err_px`` / ``front_err_nm``: median absolute error of the reaction-front position along
  each wire (from the sodium-contact end) against the true ``fronts.csv`` value, for fronts
  inside the visible wire. The position is measured from a class mask by integrating the reacted
  share of the wire's cross-section along its axis (:func:`front_position_px`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from .._files import atomic_write_text

METRICS = ["iou_objects", "iou_reacted", "iou_pristine", "iou_background", "boundary_f1", "instance_f1",
           "front_err_px", "front_err_nm"]
#: metrics where lower is better
LOWER_IS_BETTER = {"front_err_px", "front_err_nm"}


@dataclass
class EvalItem:
    """Frames with their ground truth and the wire geometry needed for fronts.

    Attributes
    ----------
    name : str
    frames, classes, instances : ndarray, (n, Y, X)
    nm_per_px : float
    dose : ndarray, (n,)
        Nominal dose level of each frame, e⁻/px (used to group results).
    drift_nm : ndarray, (n, 2)
        True stage drift (x, y) of each frame, nm.
    wires : DataFrame
        track_id, contact_x_nm, contact_y_nm, axis_angle_deg, width1_nm of every wire.
    fronts : ndarray, (n, n_wires)
        True front position of each wire in each frame, nm.
    reference : ndarray, (Y, X) or (n, Y, X), or None
        The recording's reference (counts: its first image frames averaged), or it moved onto each frame: what two-channel
        models are given beside each frame (:mod:`.reference`).
    """

    name: str
    frames: np.ndarray
    classes: np.ndarray
    instances: np.ndarray
    nm_per_px: float
    dose: np.ndarray
    drift_nm: np.ndarray
    wires: pd.DataFrame
    fronts: np.ndarray
    reference: np.ndarray | None = None


def item_from_session(session, name: str, dose_level: float | None = None, frames_idx=None) -> EvalItem:
    """An :class:`EvalItem` from an in-memory synthetic Session (image frames)."""
    idx = np.arange(session.n_frames) if frames_idx is None else np.asarray(frames_idx)
    ft = session.frame_table
    item = _item(name, session.frames[idx], session.classes[idx], session.instances[idx], session.nm_per_px,
                 np.full(idx.size, dose_level if dose_level is not None else session.params.get("dose_e_per_px")),
                 ft, session.tracks, session.fronts, idx)
    if session.n_frames:  # the first frame(s) moved by the true drift (the pipeline places it by its own drift)
        from .datasets import true_shifts_px
        from .reference import register_reference

        first = session.reference if session.reference is not None else session.frames[0]
        item.reference = register_reference(item.frames, first, shifts_px=true_shifts_px(session)[idx])
    return item


def item_from_disk(path) -> EvalItem:
    """An :class:`EvalItem` from a synthetic recording on disk and its ``<stem>_truth/``."""
    from pathlib import Path

    from .datasets import load_synthetic_session

    fs, truth = load_synthetic_session(path)
    idx = np.array([int(s.rsplit(":", 1)[1]) for s in fs.source])
    level = truth.info.get("params", {}).get("dose_e_per_px") if isinstance(truth.info, dict) else None
    dose = np.full(idx.size, float(level)) if level else fs.dose
    item = _item(Path(path).name, fs.frames, fs.classes, fs.instances, float(fs.nm_per_px[0]), dose,
                 truth.frames, truth.tracks, truth.fronts, idx)
    item.reference = fs.reference
    return item


def _item(name, frames, classes, instances, nm, dose, frame_table, tracks, fronts, idx) -> EvalItem:
    ft = frame_table.set_index("frame") if "frame" in frame_table else frame_table
    drift = np.zeros((idx.size, 2))
    if "drift_x_nm" in ft:
        drift = np.stack([ft.loc[idx, "drift_x_nm"].to_numpy(float), ft.loc[idx, "drift_y_nm"].to_numpy(float)], 1)
    wires = tracks[tracks["kind"] == "wire"] if len(tracks) and "kind" in tracks else pd.DataFrame()
    fr = np.full((idx.size, len(wires)), np.nan)
    for j, tid in enumerate(wires.get("track_id", [])):
        f = fronts[fronts["track_id"] == tid].set_index("frame")["front_position_nm"]
        fr[:, j] = f.reindex(idx).to_numpy(float)
    return EvalItem(name, np.asarray(frames), np.asarray(classes), np.asarray(instances), float(nm),
                    np.asarray(dose, float), drift, wires.reset_index(drop=True), fr)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def _outline(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=1)


def boundary_counts(pred: np.ndarray, truth: np.ndarray, tol_px: float = 2.0) -> tuple[int, int, int, int]:
    """Outline pixels: (pred matched, pred total, truth matched, truth total) within ``tol_px``."""
    bp, bt = _outline(pred), _outline(truth)
    if not bp.any() or not bt.any():
        return 0, int(bp.sum()), 0, int(bt.sum())
    dt_t = ndimage.distance_transform_edt(~bt)
    dt_p = ndimage.distance_transform_edt(~bp)
    return int((dt_t[bp] <= tol_px).sum()), int(bp.sum()), int((dt_p[bt] <= tol_px).sum()), int(bt.sum())


def instance_counts(pred: np.ndarray, truth: np.ndarray, thr: float = 0.5) -> tuple[int, int, int]:
    """(true positives, predicted objects, true objects) with one-to-one matching at IoU ≥ ``thr``."""
    p = pred.astype(np.int64).ravel()
    t = truth.astype(np.int64).ravel()
    pl, tl = np.unique(p[p > 0]), np.unique(t[t > 0])
    if pl.size == 0 or tl.size == 0:
        return 0, int(pl.size), int(tl.size)
    both = (p > 0) & (t > 0)
    pairs, inter = np.unique(np.stack([p[both], t[both]]), axis=1, return_counts=True)
    area_p = dict(zip(*np.unique(p[p > 0], return_counts=True)))
    area_t = dict(zip(*np.unique(t[t > 0], return_counts=True)))
    tp = 0
    for (a, b), n in zip(pairs.T, inter):
        if n / (area_p[a] + area_t[b] - n) >= thr:  # IoU > 0.5 matches are unique
            tp += 1
    return tp, int(pl.size), int(tl.size)


def front_position_px(classes: np.ndarray, contact_px: tuple[float, float], angle_deg: float,
                      half_width_px: float) -> tuple[float, float, float]:
    """Reaction-front position along a wire from a class mask.

    Parameters
    ----------
    classes : ndarray, (Y, X)
        Class mask (0, 1, 2).
    contact_px : (float, float)
        Sodium-contact end of the wire axis in the image, (column, row) px.
    angle_deg : float
        Axis direction, degrees from +x towards +y.
    half_width_px : float
        Half width of the corridor around the axis that belongs to the wire, px.

    Returns
    -------
    front, first, last : float
        Front position (px from the contact end), and the first and last axis positions where
        the wire is visible as an object. The front is ``first`` plus the sum, over 1-px axis
        bins from ``first``, of the reacted share of the object pixels in the bin (exact for a
        clean mask whose reacted part runs from the contact to the front).
    """
    Y, X = classes.shape
    a = math.radians(angle_deg)
    u = np.array([math.cos(a), math.sin(a)])
    rr, cc = np.nonzero(classes > 0)
    if rr.size == 0:
        return math.nan, math.nan, math.nan
    dx, dy = cc - contact_px[0], rr - contact_px[1]
    s = dx * u[0] + dy * u[1]
    d = -dx * u[1] + dy * u[0]
    sel = (np.abs(d) <= half_width_px) & (s >= 0)
    if not sel.any():
        return math.nan, math.nan, math.nan
    sb = np.floor(s[sel]).astype(int)
    reacted = classes[rr[sel], cc[sel]] == 2
    n_obj = np.bincount(sb)
    n_re = np.bincount(sb, weights=reacted, minlength=n_obj.size)
    present = np.flatnonzero(n_obj > 0)
    first, last = int(present[0]), int(present[-1])
    share = np.divide(n_re, n_obj, out=np.zeros(n_obj.size), where=n_obj > 0)
    return float(first + share[first:].sum()), float(first), float(last)


def front_errors(item: EvalItem, classes: np.ndarray) -> np.ndarray:
    """|measured − true| front positions in px for every wire and frame with a visible front."""
    errs = []
    nm = item.nm_per_px
    for j, w in item.wires.iterrows():
        half = 0.5 * float(w["width1_nm"]) * 1.5 / nm + 3
        for i in range(classes.shape[0]):
            true = item.fronts[i, j]
            if not np.isfinite(true):
                continue
            cx = (float(w["contact_x_nm"]) + item.drift_nm[i, 0]) / nm
            cy = (float(w["contact_y_nm"]) + item.drift_nm[i, 1]) / nm
            _, first_t, last_t = front_position_px(item.classes[i], (cx, cy), float(w["axis_angle_deg"]), half)
            t_px = true / nm
            # only fronts inside the visible wire (not under the sodium blob, not out of view)
            if not (np.isfinite(first_t) and first_t + 2 <= t_px <= last_t - 2):
                continue
            meas, _, _ = front_position_px(classes[i], (cx, cy), float(w["axis_angle_deg"]), half)
            errs.append(abs(meas - t_px) if np.isfinite(meas) else t_px)
    return np.asarray(errs, float)


def frame_counts(item: EvalItem, classes: np.ndarray, instances: np.ndarray) -> pd.DataFrame:
    """Per-frame raw counts (intersections, unions, matches) for pooling by dose."""
    rows = []
    for i in range(classes.shape[0]):
        p, t = classes[i], item.classes[i]
        r = dict(item=item.name, frame=i, dose=float(item.dose[i]))
        for k, name in ((0, "background"), (1, "pristine"), (2, "reacted")):
            r[f"i_{name}"] = int(((p == k) & (t == k)).sum())
            r[f"u_{name}"] = int(((p == k) | (t == k)).sum())
        r["i_objects"] = int(((p > 0) & (t > 0)).sum())
        r["u_objects"] = int(((p > 0) | (t > 0)).sum())
        r["bp_hit"], r["bp_n"], r["bt_hit"], r["bt_n"] = boundary_counts(p > 0, t > 0)
        r["tp"], r["n_pred"], r["n_true"] = instance_counts(instances[i], item.instances[i])
        rows.append(r)
    return pd.DataFrame(rows)


def summarise(counts: pd.DataFrame, front_err: pd.DataFrame) -> dict:
    """Pooled metrics from per-frame counts and front errors (px and nm)."""
    c = counts.sum(numeric_only=True)
    out = {}
    for name in ("objects", "reacted", "pristine", "background"):
        out[f"iou_{name}"] = c[f"i_{name}"] / c[f"u_{name}"] if c[f"u_{name}"] else math.nan
    prec = c["bp_hit"] / c["bp_n"] if c["bp_n"] else math.nan
    rec = c["bt_hit"] / c["bt_n"] if c["bt_n"] else math.nan
    out["boundary_f1"] = 2 * prec * rec / (prec + rec) if prec + rec > 0 else 0.0
    denom = c["n_pred"] + c["n_true"]
    out["instance_f1"] = 2 * c["tp"] / denom if denom else math.nan
    out["front_err_px"] = float(np.median(front_err["err_px"])) if len(front_err) else math.nan
    out["front_err_nm"] = float(np.median(front_err["err_nm"])) if len(front_err) else math.nan
    out["n_frames"] = len(counts)
    out["n_fronts"] = len(front_err)
    return out


def evaluate(segmenters: dict, items: list[EvalItem], *, progress=None) -> pd.DataFrame:
    """Metrics by dose level and overall for each segmenter.

    Parameters
    ----------
    segmenters : dict of name → segmenter
        Objects with ``predict(frames) -> SegmentationResult`` (and, with ``in_channels == 2``,
        a ``reference`` keyword: :meth:`~.infer.NetworkSegmenter.predict`).
    items : list of EvalItem

    Returns
    -------
    DataFrame
        One row per (method, dose) plus ``dose = "all"``: the :data:`METRICS`, n_frames, n_fronts.
    """
    rows = []
    for mname, seg in segmenters.items():
        counts, fronts = [], []
        for item in items:
            if progress:
                progress(f"{mname}: {item.name}")
            two = getattr(seg, "in_channels", 1) > 1  # only two-channel models take the reference
            res = seg.predict(item.frames, reference=item.reference) if two else seg.predict(item.frames)
            cnt = frame_counts(item, res.classes, res.instances)
            counts.append(cnt)
            fronts.append(front_errors_by_frame(item, res.classes))
        counts = pd.concat(counts, ignore_index=True)
        fronts = pd.concat(fronts, ignore_index=True) if fronts else pd.DataFrame(columns=["dose", "err_px", "err_nm"])
        for dose in sorted(counts["dose"].unique()):
            r = summarise(counts[counts["dose"] == dose], fronts[fronts["dose"] == dose])
            rows.append(dict(method=mname, dose=_fmt_dose(dose), **r))
        rows.append(dict(method=mname, dose="all", **summarise(counts, fronts)))
    return pd.DataFrame(rows)


def front_errors_by_frame(item: EvalItem, classes: np.ndarray) -> pd.DataFrame:
    """Front errors with each frame's dose (for grouping)."""
    rows = []
    for i in range(classes.shape[0]):
        sub = EvalItem(item.name, item.frames[i:i + 1], item.classes[i:i + 1], item.instances[i:i + 1],
                       item.nm_per_px, item.dose[i:i + 1], item.drift_nm[i:i + 1], item.wires, item.fronts[i:i + 1])
        for e in front_errors(sub, classes[i:i + 1]):
            rows.append(dict(dose=float(item.dose[i]), err_px=float(e), err_nm=float(e * item.nm_per_px)))
    return pd.DataFrame(rows, columns=["dose", "err_px", "err_nm"])


def _fmt_dose(d: float) -> str:
    return "nan" if not np.isfinite(d) else f"{d:g}"


def held_apart_items(n_sessions: int = 4, doses=(2, 5, 10, 20, 50, 100), *, n_frames: int = 6,
                     size: int = 256, first_seed: int | None = None) -> list[EvalItem]:
    """Freshly rendered evaluation sessions with seeds never used in training (≥ EVAL_SEED_OFFSET).

    The same ``n_sessions`` scenes (seeds) are rendered at every dose level, so the levels differ
    only by dose. ``empty`` scenes are skipped. Each session's reference is the mean of
    :data:`.reference.REFERENCE_FRAMES` exposures of its first frame at the same dose: what the
    pipeline averages from the first second of a camera running at ≥ 8 frames/s, idealised (the
    sample unchanged and not drifting in that second). These sessions as the 2 frames/s recordings
    they are would give the pipeline frames 0 and 1, the sample already changing (see the model card).
    """
    from .datasets import EVAL_SEED_OFFSET, random_recipe, synthetic_frames
    from .reference import REFERENCE_FRAMES

    seed = EVAL_SEED_OFFSET if first_seed is None else first_seed
    seeds = []
    while len(seeds) < n_sessions:
        if random_recipe(seed)["scene"] != "empty":
            seeds.append(seed)
        seed += 1
    items = []
    for d in doses:
        for s in seeds:
            _, sess = synthetic_frames(s, n_frames, dose=float(d), size=size, reference_frames=REFERENCE_FRAMES)
            items.append(item_from_session(sess, f"seed{s}@{d:g}", dose_level=float(d)))
    return items


def comparison_table(df: pd.DataFrame, metrics=METRICS) -> str:
    """A plain-text table: one row per dose, network and baseline columns side by side."""
    methods = list(dict.fromkeys(df["method"]))
    doses = list(dict.fromkeys(df["dose"]))
    head = ["dose"] + [f"{m[:10]}:{k}" for k in metrics for m in methods]
    lines = []
    for d in doses:
        row = [str(d)]
        for k in metrics:
            for m in methods:
                v = df[(df["method"] == m) & (df["dose"] == d)][k]
                row.append(f"{float(v.iloc[0]):.3f}" if len(v) else "")
        lines.append(row)
    widths = [max(len(r[i]) for r in [head] + lines) for i in range(len(head))]
    def fmt(r):
        return "  ".join(c.rjust(w) for c, w in zip(r, widths))

    return "\n".join([fmt(head)] + [fmt(r) for r in lines])


def update_card(model_path, df: pd.DataFrame, describe: str = ""):
    """Put the evaluation table into the model's card (replacing an earlier one).

    Only the card changes, so the model's sha256 (stated in the card) stays valid.
    """
    from pathlib import Path

    from .modelfile import card_path

    card = card_path(model_path)
    text = card.read_text(encoding="utf-8") if card.is_file() else ""
    head = "## Held-apart evaluation"
    if head in text:
        text = text[:text.index(head)].rstrip() + "\n\n"
    cols = ["method", "dose"] + METRICS + ["n_frames", "n_fronts"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df[cols].iterrows():
        lines.append("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r) + " |")
    text += (f"{head}\n{describe}\n\nIoU pooled over frames; boundary F1 within 2 px; instance F1 at IoU ≥ 0.5; "
             "front error = median |measured − true| front position along each wire.\n\n" + "\n".join(lines) + "\n")
    atomic_write_text(card, text)
    return Path(card)
