"""The report's figures, each a PNG in ``plots/`` drawn from the results folder's tables and masks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..results import ResultStore

MAX_KYMO_FRAMES = 400
MAX_TRACK_FIGURES = 24


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    import io

    from ..results import atomic_write_bytes

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _plt().close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def overlay_figure(store: ResultStore, frame: int, nm_per_px: float):
    """One image frame with class masks, instance outlines, track ids and a scale bar."""
    from skimage.segmentation import find_boundaries

    plt = _plt()
    raw = store.frame_image(frame)
    classes, instances = store.read_masks(frame, frame + 1)
    classes, instances = classes[0], instances[0]
    objects = store.read_table("objects")
    fig, ax = plt.subplots(figsize=(6, 6))
    lo, hi = np.percentile(raw, [1, 99])
    ax.imshow(raw, cmap="gray", vmin=lo, vmax=hi)
    rgba = np.zeros(classes.shape + (4,))
    rgba[classes == 1] = (0.2, 0.5, 1.0, 0.25)
    rgba[classes == 2] = (1.0, 0.5, 0.1, 0.35)
    rgba[find_boundaries(instances, mode="inner")] = (1, 1, 0, 0.9)
    ax.imshow(rgba)
    drift = store.read_table("frames").set_index("frame")
    dx = float(drift.loc[frame, "drift_x_nm"]) if frame in drift.index else 0.0
    dy = float(drift.loc[frame, "drift_y_nm"]) if frame in drift.index else 0.0
    dx, dy = (0.0 if not math.isfinite(dx) else dx), (0.0 if not math.isfinite(dy) else dy)
    for _, o in objects[objects["frame"] == frame].iterrows():
        ax.text((o["x_nm"] + dx) / nm_per_px, (o["y_nm"] + dy) / nm_per_px, str(int(o["track_id"])),
                color="yellow", fontsize=9, ha="center", va="center")
    h, w = raw.shape
    bar_nm = _nice(w * nm_per_px / 5)
    ax.plot([w * 0.05, w * 0.05 + bar_nm / nm_per_px], [h * 0.94] * 2, color="white", lw=4)
    ax.text(w * 0.05, h * 0.91, f"{bar_nm:g} nm", color="white", fontsize=10)
    t = drift.loc[frame, "time_s"] if frame in drift.index else float("nan")
    ax.set_title(f"frame {frame}, t = {t:.2f} s  (blue pristine, orange reacted)")
    ax.axis("off")
    return fig


def _nice(x: float) -> float:
    if x <= 0 or not math.isfinite(x):
        return 1.0
    e = 10 ** math.floor(math.log10(x))
    return max(m * e for m in (1, 2, 5) if m * e <= x)


def electrochem_figure(frames: pd.DataFrame, tracks: pd.DataFrame, objects: pd.DataFrame):
    """Voltage/current beside the mean width of the objects on one time axis."""
    plt = _plt()
    qty = [c for c in ("voltage_V", "current_A", "temperature_C") if c in frames and frames[c].notna().any()]
    fig, axes = plt.subplots(len(qty) + 1, 1, figsize=(7, 2.2 * (len(qty) + 1)), sharex=True)
    axes = np.atleast_1d(axes)
    for ax, c in zip(axes, qty):
        ax.plot(frames["time_s"], frames[c], "-")
        ax.set_ylabel(c.replace("_", " [") + "]")
    if not objects.empty:
        for tid, g in objects.groupby("track_id"):
            axes[-1].plot(g["time_s"], g["width_nm"], "-", lw=1, label=f"track {tid}")
    axes[-1].set_ylabel("width [nm]")
    axes[-1].set_xlabel("time [s]")
    return fig


def dose_figure(frames: pd.DataFrame):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 2.5))
    ax.plot(frames["time_s"], frames["cumulative_dose_e_per_px"], "-")
    ax.set_xlabel("time [s]")
    ax.set_ylabel("cumulative dose [e⁻/px]")
    return fig


def write_all(folder: Path) -> list[Path]:
    """Every figure the tables support: overlay, swelling, fronts, kymographs, phases, context."""
    store = ResultStore(folder)
    plots = folder / "plots"
    plots.mkdir(exist_ok=True)
    for old in plots.glob("*.png"):
        old.unlink()
    summary = store.read_summary()
    nm = store.calibration(summary)["nm_per_px"]  # the corrected calibration, when the user edited it
    frames = store.read_table("frames")
    objects = store.read_table("objects")
    tracks = store.read_table("tracks")
    fronts = store.read_table("fronts")
    out: list[Path] = []
    plt = _plt()

    img = frames[frames["mode"] == "image"]
    if not img.empty and math.isfinite(nm):
        with_objects = img[img["n_objects"] > 0]
        f = int((with_objects if not with_objects.empty else img)["frame"].iloc[-1])
        try:
            out.append(_save(overlay_figure(store, f, nm), plots / "overlay_last_frame.png"))
        except Exception as exc:  # the raw recording may have moved: the report goes on without it
            print(f"note: overlay skipped ({exc})")

    from .kinetics_plots import kymograph, plot_front, plot_kymograph, plot_swelling

    # per-track figures for the tracks that last (short-lived fragments stay in the tables only)
    n_img = max(1, int((frames["mode"] == "image").sum()))
    shown = tracks[tracks["n_frames"] >= max(3, 0.2 * n_img)].sort_values("n_frames", ascending=False)
    for _, tr in shown.head(MAX_TRACK_FIGURES).iterrows():
        tid = int(tr["track_id"])
        fig = plot_swelling(objects, tr)
        fig = fig if hasattr(fig, "savefig") else fig[0]
        out.append(_save(fig, plots / f"swelling_track_{tid:03d}.png"))
        if tr.get("kind") == "wire" and not fronts[fronts["track_id"] == tid].empty:
            fig = plot_front(fronts, tr, nm_per_px=nm, systematic_px=summary.get("systematic_front_px"))
            fig = fig if hasattr(fig, "savefig") else fig[0]
            out.append(_save(fig, plots / f"front_track_{tid:03d}.png"))
            kfig = _kymograph_figure(store, objects, frames, fronts, tid, nm, kymograph, plot_kymograph)
            if kfig is not None:
                out.append(_save(kfig, plots / f"kymograph_track_{tid:03d}.png"))

    phases = store.read_table("phases")
    if not phases.empty:
        try:
            from .diffraction_plots import plot_phase_timeline

            fig = plot_phase_timeline(phases)
            fig = fig if hasattr(fig, "savefig") else fig[0]
            out.append(_save(fig, plots / "phase_timeline.png"))
        except ImportError:
            pass
    if (folder / "profiles.npz").is_file() and not phases.empty:
        out += _profile_figures(folder, phases, plots)
    if any(c in frames for c in ("voltage_V", "current_A", "temperature_C")):
        out.append(_save(electrochem_figure(frames, tracks, objects), plots / "electrochem_trace.png"))
    if "cumulative_dose_e_per_px" in frames and frames["cumulative_dose_e_per_px"].notna().any():
        out.append(_save(dose_figure(frames), plots / "dose_cumulative.png"))
    plt.close("all")
    return out


def _kymograph_figure(store, objects, frames, fronts, tid, nm, kymograph, plot_kymograph):
    o = objects[(objects["track_id"] == tid)]
    if o.empty or "end_a_x_nm" not in o or o["end_a_x_nm"].isna().all():
        return None
    last = o.dropna(subset=["end_a_x_nm"]).iloc[-1]
    contact = ((float(last["end_a_x_nm"]), float(last["end_a_y_nm"])),
               (float(last["end_b_x_nm"]), float(last["end_b_y_nm"])))
    img = frames[frames["mode"] == "image"]
    sel = img["frame"].to_numpy()
    if len(sel) > MAX_KYMO_FRAMES:
        sel = sel[np.linspace(0, len(sel) - 1, MAX_KYMO_FRAMES).astype(int)]
    classes = np.stack([store.read_masks(int(f), int(f) + 1)[0][0] for f in sel])
    d = img.set_index("frame").loc[sel, ["drift_x_nm", "drift_y_nm"]].to_numpy(float) / nm
    d = np.nan_to_num(d)
    # put the sodium-contact end first (where the front starts)
    (ax_, ay_), (bx_, by_) = contact
    tr = store.read_table("tracks")
    row = tr[tr["track_id"] == tid]
    if not row.empty and "contact_x_nm" in row and np.isfinite(row["contact_x_nm"].iloc[0]):
        cx, cy = float(row["contact_x_nm"].iloc[0]), float(row["contact_y_nm"].iloc[0])
        if math.hypot(bx_ - cx, by_ - cy) < math.hypot(ax_ - cx, ay_ - cy):
            (ax_, ay_), (bx_, by_) = (bx_, by_), (ax_, ay_)
    a, b = (ax_ / nm, ay_ / nm), (bx_ / nm, by_ / nm)
    kymo = kymograph(classes.astype(float), a, b, drift_px=d)
    t = img.set_index("frame").loc[sel, "time_s"].to_numpy(float)
    fig = plot_kymograph(kymo, t, nm, fronts=fronts, track_id=tid)
    return fig if hasattr(fig, "savefig") else fig[0]


def _profile_figures(folder: Path, phases: pd.DataFrame, plots: Path) -> list[Path]:
    """Radial profiles stacked over time, and the last diffraction frame's profile with the
    library rings of its best phase marked."""
    from ..diffraction.phases import ring_list
    from .diffraction_plots import plot_frame_profile, plot_profile_waterfall

    with np.load(folder / "profiles.npz") as z:
        frame, profiles, q = z["frame"], z["profiles"], z["q_inv_nm"]
    t = phases.set_index("frame").reindex(frame)["time_s"].to_numpy(float)
    out = []
    fig = plot_profile_waterfall(q, profiles, time_s=t)
    out.append(_save(fig if hasattr(fig, "savefig") else fig[0], plots / "profile_waterfall.png"))
    last = phases.iloc[-1]
    best = str(last["best_phase"]) if isinstance(last["best_phase"], str) else ""
    lists = {best: ring_list(best, q_max_inv_nm=float(q.max()))} if best and best != "amorphous" else {}
    k = int(np.flatnonzero(frame == int(last["frame"]))[0]) if (frame == int(last["frame"])).any() else -1
    fig = plot_frame_profile(q, profiles[k], lists, title=f"frame {int(last['frame'])}: {best or 'no phase'}")
    out.append(_save(fig if hasattr(fig, "savefig") else fig[0], plots / "profile_last_frame.png"))
    return out
