"""Diffraction figures: phase-fraction timeline, waterfall of radial profiles, one frame's
profile with the assigned library rings.  matplotlib (Agg) is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["plot_frame_profile", "plot_phase_timeline", "plot_profile_waterfall"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path | None):
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=110, bbox_inches="tight")
        _pyplot().close(fig)
        return out
    return fig


def plot_phase_timeline(phases: pd.DataFrame, transitions: pd.DataFrame | None = None,
                        out: str | Path | None = None, *, min_fraction: float = 0.05):
    """Phase fractions (and the amorphous fraction) over time, transitions marked.

    Parameters
    ----------
    phases : DataFrame
        A ``phases.csv`` table.
    transitions : DataFrame, optional
        From :func:`tem_operando.diffraction.timeline.phase_transitions`.
    out : path, optional
        Write a PNG there (returns the path); otherwise return the figure.
    min_fraction : float
        Phases never above this are not drawn.
    """
    plt = _pyplot()
    t = phases["time_s"].to_numpy()
    x = t if np.isfinite(t).all() else phases["frame"].to_numpy()
    xlabel = "time (s)" if np.isfinite(t).all() else "frame"
    fig, ax = plt.subplots(figsize=(8, 3.6))
    cols = [c for c in phases.columns if c.startswith("frac_")
            and np.nanmax(phases[c].to_numpy(), initial=0) >= min_fraction]
    for c in cols:
        ax.plot(x, phases[c], label=c[len("frac_"):], lw=1.5)
    if "amorphous_fraction" in phases:
        ax.plot(x, phases["amorphous_fraction"], "k--", label="amorphous", lw=1.2)
    if transitions is not None and len(transitions):
        key = "time_s" if xlabel.startswith("time") else "frame"
        for _, row in transitions.iterrows():
            style = "-" if row["event"] == "appears" else ":"
            ax.axvline(row[key], color="0.5", ls=style, lw=0.8)
            ax.text(row[key], 1.02, f"{row['phase']} {'+' if row['event'] == 'appears' else '−'}",
                    rotation=90, fontsize=7, va="bottom", ha="center",
                    transform=ax.get_xaxis_transform())
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of diffracted signal")
    ax.legend(fontsize=8, ncol=2, loc="center right")
    return _save(fig, out)


def plot_profile_waterfall(q_inv_nm: np.ndarray, profiles: np.ndarray,
                           time_s: Sequence[float] | None = None, out: str | Path | None = None, *,
                           max_curves: int = 40, offset: float | None = None):
    """Radial profiles stacked over time (each shifted up), earliest at the bottom.

    Parameters
    ----------
    q_inv_nm : ndarray (n_bins,)
    profiles : ndarray (T, n_bins)
        Background-subtracted or raw profiles.
    time_s : sequence, optional
        Labels of the curves.
    max_curves : int
        Evenly spaced subset drawn when there are more frames.
    """
    plt = _pyplot()
    prof = np.asarray(profiles, float)
    idx = np.unique(np.linspace(0, len(prof) - 1, min(max_curves, len(prof))).astype(int))
    step = offset if offset is not None else float(np.nanpercentile(prof, 99) - np.nanpercentile(prof, 1)) / 4
    fig, ax = plt.subplots(figsize=(7, 6))
    cmap = plt.get_cmap("viridis")
    for k, i in enumerate(idx):
        ax.plot(q_inv_nm, prof[i] + k * step, color=cmap(k / max(len(idx) - 1, 1)), lw=0.8)
        if time_s is not None and k % max(1, len(idx) // 8) == 0:
            ax.text(q_inv_nm[-1], prof[i][-1] + k * step, f" {time_s[i]:.3g} s", fontsize=7,
                    va="center")
    ax.set_xlabel("q (1/nm)")
    ax.set_ylabel("intensity (counts/px, offset by time)")
    ax.set_yticks([])
    return _save(fig, out)


def plot_frame_profile(q_inv_nm: np.ndarray, profile: np.ndarray,
                       ring_lists: Mapping[str, pd.DataFrame], out: str | Path | None = None, *,
                       model: np.ndarray | None = None, background: np.ndarray | None = None,
                       rings: pd.DataFrame | None = None, title: str = ""):
    """One frame's profile with the library rings of the given phases marked.

    Parameters
    ----------
    q_inv_nm, profile : ndarray
        The frame's profile.
    ring_lists : mapping
        ``{phase: ring list}`` (``q_inv_nm``, ``hkl``, ``intensity``) to mark as ticks.
    model, background : ndarray, optional
        Fitted model and background on the same q.
    rings : DataFrame, optional
        The frame's rows of ``rings.csv``: found peaks, labelled with their phase and hkl.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(q_inv_nm, profile, "k", lw=0.8, label="profile")
    if model is not None:
        ax.plot(q_inv_nm, model, "r", lw=0.8, label="fit")
    if background is not None:
        ax.plot(q_inv_nm, background, "0.6", lw=0.8, label="background")
    lo, hi = np.nanmin(profile), np.nanmax(profile)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, (name, rl) in enumerate(ring_lists.items()):
        c = colors[k % len(colors)]
        sel = rl[(rl["q_inv_nm"] >= q_inv_nm[0]) & (rl["q_inv_nm"] <= q_inv_nm[-1])]
        for _, r in sel.iterrows():
            h = lo + (hi - lo) * (0.05 + 0.15 * float(r["intensity"]))
            ax.plot([r["q_inv_nm"]] * 2, [lo, h], color=c, lw=1.0)
        ax.plot([], [], color=c, label=name)
    if rings is not None:
        for _, r in rings.iterrows():
            if r["phase"]:
                y = np.interp(r["q_inv_nm"], q_inv_nm, profile)
                ax.annotate(f"{r['phase']} {r['hkl']}", (r["q_inv_nm"], y), fontsize=6,
                            rotation=90, xytext=(0, 4), textcoords="offset points", ha="center")
    ax.set_xlabel("q (1/nm)")
    ax.set_ylabel("counts/px")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, out)
