"""Kinetics figures: width vs time with its fit, front position vs time with its rate law, and a
kymograph along a wire's axis. Matplotlib (Agg) is imported inside the functions."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["kymograph", "plot_front", "plot_kymograph", "plot_swelling"]


def _fig(ax=None):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    return plt.subplots(figsize=(5, 3.5), dpi=100)


def plot_swelling(objects: pd.DataFrame, track: pd.Series, ax=None):
    """Width vs time of one track with its swelling period and fitted ramp.

    ``track`` is the track's ``tracks.csv`` row (with ``onset_s``/``plateau_s`` if known).
    """
    fig, ax = _fig(ax)
    g = objects[objects["track_id"] == track["track_id"]].sort_values("time_s")
    ax.plot(g["time_s"], g["width_nm"], ".", ms=4, label="width")
    t1, t2 = track.get("onset_s", np.nan), track.get("plateau_s", np.nan)
    if np.isfinite(t1) and np.isfinite(t2):
        ax.axvspan(t1, t2, color="0.9", label="swelling period")
        w0 = g.loc[g["time_s"] <= t1, "width_nm"].median()
        w1 = g.loc[g["time_s"] >= t2, "width_nm"].median()
        t = g["time_s"].to_numpy()
        ax.plot(t, np.interp(t, [t1, t2], [w0, w1]), "-", lw=1.5,
                label=f"{track['swelling_rate_nm_s']:.3g} ± {track['swelling_rate_ci95_nm_s']:.2g} nm/s")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("width (nm)")
    ax.set_title(f"track {int(track['track_id'])} ({track['kind']})")
    ax.legend(fontsize=7)
    return fig


def plot_front(fronts: pd.DataFrame, track: pd.Series, ax=None, nm_per_px: float = 1.0,
               systematic_px: float | None = None):
    """Front position vs time of one wire with the fitted rate law (``systematic_px``: the front's
    systematic error the analysis used, px; None: :data:`~tem_operando.kinetics.fronts.SYSTEMATIC_FRONT_PX`)."""
    from ..kinetics.fits import rate_law_fit
    from ..kinetics.fronts import SYSTEMATIC_FRONT_PX

    systematic_px = SYSTEMATIC_FRONT_PX if systematic_px is None else float(systematic_px)

    fig, ax = _fig(ax)
    g = fronts[fronts["track_id"] == track["track_id"]].sort_values("time_s")
    ax.plot(g["time_s"], g["front_position_nm"], ".", ms=4, label="front")
    f = rate_law_fit(g["time_s"].to_numpy(float), g["front_position_nm"].to_numpy(float), resolution=nm_per_px,
                     systematic=systematic_px * nm_per_px)  # as fronts.front_table: the table's CI
    if f.model_t is not None:
        if f.law == "linear":
            lab = f"linear, v = {f.velocity_nm_s:.3g} ± {f.velocity_ci95_nm_s:.2g} nm/s"
        elif f.law == "sqrt":
            lab = f"√t, n = {f.exponent_n:.2f}, D = {f.diffusion_nm2_s:.3g} nm²/s"
        else:
            lab = f"{f.n_steps} steps, mean v = {f.velocity_nm_s:.3g} nm/s"
        ax.plot(f.model_t, f.model_x, "-", lw=1.5, label=lab)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("front position (nm)")
    ax.set_title(f"wire {int(track['track_id'])}")
    ax.legend(fontsize=7)
    return fig


def kymograph(stack: np.ndarray, start_px: tuple[float, float], end_px: tuple[float, float],
              drift_px: np.ndarray | None = None, *, width_px: int = 3, order: int = 0) -> np.ndarray:
    """Values along a line (a wire's axis) in every frame: a (T, L) kymograph.

    Parameters
    ----------
    stack : ndarray (T, Y, X)
        Frames or class masks (use ``order=0`` for masks).
    start_px, end_px : (x, y)
        Axis end points in frame-0 pixel coordinates (e.g. the contact end and the far end).
    drift_px : ndarray (T, 2), optional
        Drift of each frame, px (the line follows the sample).
    width_px : int
        Lines averaged across the axis (masks: the most common value).
    """
    from scipy import ndimage

    stack = np.asarray(stack)
    T = stack.shape[0]
    p0, p1 = np.asarray(start_px, float), np.asarray(end_px, float)
    L = int(np.ceil(np.hypot(*(p1 - p0)))) + 1
    u = (p1 - p0) / max(np.hypot(*(p1 - p0)), 1e-9)
    nrm = np.array([-u[1], u[0]])
    s = np.arange(L)
    offs = np.arange(width_px) - (width_px - 1) / 2
    out = np.zeros((T, L), float if order else stack.dtype)
    for k in range(T):
        d = np.zeros(2) if drift_px is None else np.asarray(drift_px[k], float)
        xs = p0[0] + d[0] + s[None, :] * u[0] + offs[:, None] * nrm[0]
        ys = p0[1] + d[1] + s[None, :] * u[1] + offs[:, None] * nrm[1]
        v = ndimage.map_coordinates(stack[k], [ys, xs], order=order, mode="constant")
        out[k] = v.mean(0) if order else np.max(v, axis=0) if width_px == 1 else np.median(v, axis=0)
    return out


def plot_kymograph(kymo: np.ndarray, time_s: np.ndarray, nm_per_px: float, fronts: pd.DataFrame | None = None,
                   track_id: int | None = None, ax=None, cmap: str = "viridis"):
    """Show a kymograph (distance along the axis × time) with the measured front on top."""
    fig, ax = _fig(ax)
    t = np.asarray(time_s, float)
    ext = [0, kymo.shape[1] * nm_per_px, t[-1] if t.size else 1, t[0] if t.size else 0]
    ax.imshow(kymo, aspect="auto", extent=ext, cmap=cmap, interpolation="nearest")
    if fronts is not None and track_id is not None:
        g = fronts[fronts["track_id"] == track_id]
        ax.plot(g["front_position_nm"], g["time_s"], "w-", lw=1, label="front")
        ax.legend(fontsize=7)
    ax.set_xlabel("distance from contact end (nm)")
    ax.set_ylabel("time (s)")
    return fig
