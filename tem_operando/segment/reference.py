"""The reference: the recording's first image frame(s), averaged and registered onto each frame.

A swelling particle's reacted shell can be nearly as bright as the background at its rim (thin
material of long mean free path); one frame alone hardly shows it, but the same place *before the
reaction* does: what changed since the first frame is what reacted. A two-channel network
(``config["in_channels"] == 2``) therefore sees each frame together with the recording's first image
frame, shifted onto it by phase correlation (the sample drifts). Findings behind this design:
``models/experiments/README.md``.

Without a reference, a frame is its own reference ("nothing changed since the start"): two-channel
models work, less well, on single frames.

At low dose one frame is a noisy picture of the start. The reference is therefore the mean of the
first image frames taken within :data:`REFERENCE_WINDOW_S` of the chosen first frame, at most
:data:`REFERENCE_FRAMES` of them, each moved back onto the first by its drift
(:func:`reference_run`, :func:`mean_reference`): on a fast camera the sample has not changed in that
time, and eight frames at 10 e⁻/px show the start as one frame at 80 e⁻/px would.
"""

from __future__ import annotations

import cv2
import numpy as np

from .._registration import (NOISY_ERROR, SIGMA_HI_PX, SIGMA_LO_PX, Bands, _translate, edge_window, finite,
                              mean_reference, register_bands, register_robust, shift_reference, unrelated)
from .normalise import normalise

__all__ = ["REFERENCE_FRAMES", "REFERENCE_WINDOW_S", "choose_reference", "mean_reference", "network_input",
           "reference_run", "reference_shifts_px", "refine_shifts", "register_reference", "shift_reference", "structure_score"]


def structure_score(frame: np.ndarray) -> float:
    """How much a frame shows beyond its noise (≈ 1 for a flat frame: beam blanked, empty field).

    The variance of the 4×4-binned frame (its 0.5–99.5 % range: a few hot pixels do not count)
    over the variance its pixel noise alone would give a 4×4 bin (noise from neighbouring-pixel
    differences).
    """
    x = np.asarray(frame, np.float32)
    Y, X = (x.shape[0] // 4) * 4, (x.shape[1] // 4) * 4
    if Y == 0 or X == 0:
        return float("nan")
    b = x[:Y, :X].reshape(Y // 4, 4, X // 4, 4).mean(axis=(1, 3))
    b = np.clip(b, *np.percentile(b, [0.5, 99.5]))
    noise_px = float(np.mean(np.abs(np.diff(x, axis=1)))) * np.sqrt(np.pi) / 2  # Gaussian: E|a − b| = 2σ/√π
    return float(np.var(b) / max(noise_px ** 2 / 16, 1e-12))


def choose_reference(scores: np.ndarray, *, min_score: float = 3.0, rel: float = 0.5) -> int:
    """Which of a recording's first image frames to use as the reference.

    The first frame whose :func:`structure_score` reaches ``max(min_score, rel × the median
    score)`` — a recording that starts with the beam blanked or on an empty field gets its
    first real image — else the first frame.

    Parameters
    ----------
    scores : ndarray, (n,)
        Structure scores of the first image frames, in order.

    Returns
    -------
    int
        Position in ``scores``.
    """
    s = np.asarray(scores, float)
    if s.size == 0:
        raise ValueError("no image frames to choose a reference from")
    ok = np.flatnonzero(np.nan_to_num(s, nan=0.0) >= max(min_score, rel * float(np.nanmedian(s))))
    return int(ok[0]) if ok.size else 0


#: at most this many first image frames are averaged into the reference
REFERENCE_FRAMES = 8
#: … and only those taken within this time of the first, s (the sample must not have changed yet)
REFERENCE_WINDOW_S = 1.0


def reference_run(time_s: np.ndarray, *, n_max: int = REFERENCE_FRAMES,
                  window_s: float = REFERENCE_WINDOW_S) -> int:
    """How many of a recording's image frames, from the reference frame on, to average into the reference.

    Parameters
    ----------
    time_s : ndarray, (n,)
        Acquisition times of the image frames from the reference frame on, s, in order. The first
        one NaN (an uncalibrated time axis): only ``n_max`` counts; a later NaN ends the run.
    n_max : int
        At most this many frames (1: the reference frame alone).
    window_s : float
        Only frames taken less than ``window_s`` after the first, s.

    Returns
    -------
    int
        The count k ≥ 1 (0 for no frames).

    Examples
    --------
    >>> reference_run(np.arange(20) / 2.0)   # 2 frames/s: the first second holds 2 frames
    2
    >>> reference_run(np.arange(20) / 25.0)  # 25 frames/s: 8 frames
    8
    """
    t = np.asarray(time_s, float)[: max(int(n_max), 1)]
    if t.size == 0:
        return 0
    if not np.isfinite(t[0]):
        return int(t.size)
    inside = np.isfinite(t) & (t - t[0] < window_s)
    return int(np.argmin(inside)) if not inside.all() else int(t.size)


def reference_shifts_px(frames: np.ndarray, reference: np.ndarray, *, upsample: int = 10) -> np.ndarray:
    """(dy, dx) px that move ``reference`` (Y, X) onto each of ``frames`` (n, Y, X), each frame registered
    to the reference directly (band-passed, windowed, changed pixels left out: as the drift pass,
    :func:`~tem_operando._registration.register_robust`). A frame with nothing in common with the
    reference (blank, noise alone: :func:`~tem_operando._registration.unrelated`) keeps the shift of the frame
    before it (frames before the first registered one take its shift) rather than a chance peak anywhere in the frame (50–90 px off on 160×160
    frames), as the drift pass holds the last drift.

    The drift pass' second, smoother band for weak peaks is not used: against a reference seconds older
    than the frame it picks up the objects' own growth (5 e⁻/px, 160×160 px, 16 frames at 2 frames/s:
    RMS error 1.9 → 2.4 px with a one-frame reference, 1.2 → 1.4 px with four).
    """
    window = edge_window(np.shape(reference))
    ref = Bands(reference, SIGMA_HI_PX, window)
    out = np.zeros((len(frames), 2))
    last, first_good = np.zeros(2), None
    for i, f in enumerate(frames):
        cur = Bands(f, SIGMA_HI_PX, window)
        shift, err = register_robust(cur.band(SIGMA_LO_PX), ref.band(SIGMA_LO_PX), upsample)
        if np.isfinite(shift).all() and (err <= NOISY_ERROR or not unrelated(ref, cur)):
            last = shift
            if first_good is None:
                first_good = i
                out[:i] = shift  # blank frames before the first registered one take its shift
        out[i] = last  # a frame with nothing to register keeps the frame before's shift, as the drift pass
    return out


#: :func:`refine_shifts` keeps the drift pass' shift when the direct registration lands farther than
#: this fraction of the frame's smaller side from it (a chance peak, or a reference the sample no longer resembles)
REFINE_MAX_OFFSET = 0.1
#: :func:`refine_shifts` registers a frame whose own peak is weak as the mean of it and up to this many
#: frames on each side (moved onto it by the drift pass' shifts), taken within :data:`REFINE_NEIGHBOUR_S`
REFINE_NEIGHBOURS = 2
#: see :data:`REFINE_NEIGHBOURS`: the neighbours averaged lie within this many seconds of the frame
REFINE_NEIGHBOUR_S = 0.25


def refine_shifts(frames: np.ndarray, reference: np.ndarray, shifts_px: np.ndarray, *, upsample: int = 10,
                  max_offset: float = REFINE_MAX_OFFSET, smooth_band: bool = True, time_s: np.ndarray | None = None,
                  neighbours: int = REFINE_NEIGHBOURS,
                  neighbour_s: float = REFINE_NEIGHBOUR_S) -> tuple[np.ndarray, np.ndarray]:
    """The drift pass' shifts of the reference onto each frame, re-measured against the reference itself.

    The drift pass chains each frame to a key frame, itself a single noisy frame whose own error the
    next frames inherit (chunk by chunk in the pipeline): at 10 e⁻/px on 256×256 frames its error
    grows to several px within a few seconds of a 25 frames/s recording (a random walk of key-frame
    errors), and in a recording too noisy to register frame by frame (a liquid cell at 10 e⁻/px) one
    chance peak taken as a jump stays in every later frame. The reference — the recording's first
    frames averaged — is a far less noisy picture of the sample, so each frame registered to it directly
    lands closer (band-passed, windowed, changed pixels left out; with ``smooth_band`` the drift pass'
    smoother band for weak peaks too: :func:`~tem_operando._registration.register_bands`). A frame whose
    own peak is weak (normalised error above ``NOISY_ERROR``) is registered again as the mean of it and
    its ``neighbours`` on each side within ``neighbour_s`` (each moved onto it by the drift pass' shifts,
    so a stage jump the drift pass caught does not blur it): their electrons together find the
    peak one frame's do not. The drift pass' shift is kept where the direct one is more than
    ``max_offset`` × the frame's smaller side away from it, and for a frame with nothing in common
    with the reference (blank, noise alone) even with its neighbours (a blank frame between frames
    that do register is placed by their electrons: by the neighbours' drift-pass shifts, corrected).

    Parameters
    ----------
    frames : ndarray, (n, Y, X)
        Consecutive frames of a recording (counts); a frame's neighbours are taken among these only
        (the pipeline passes one chunk at a time).
    reference : ndarray, (Y, X)
        The reference (counts), e.g. :func:`mean_reference` of the first frames.
    shifts_px : ndarray, (n, 2)
        (dy, dx) px moving the reference onto each frame, from the drift pass.
    upsample : int
        Sub-pixel precision, 1/``upsample`` px.
    max_offset : float
        See above (fraction of the smaller side).
    smooth_band : bool
        Retry a weak peak in the smoother band (as the drift pass).
    time_s : ndarray, (n,), optional
        Acquisition time of each frame, s; None (or NaN): the neighbours are not limited by time.
    neighbours : int
        Frames on each side averaged with a weak-peak frame (0: each frame alone).
    neighbour_s : float
        The neighbours lie within this many seconds of the frame (with ``time_s``).

    Returns
    -------
    shifts_px : ndarray, (n, 2)
        The refined (dy, dx) px.
    refined : ndarray of bool, (n,)
        Which frames took the direct registration.
    """
    a = np.asarray(frames)
    a = a[None] if a.ndim == 2 else a
    ref_img = np.asarray(reference, np.float32)
    if ref_img.shape != a.shape[1:]:
        raise ValueError(f"reference frame shape {ref_img.shape} differs from the frames' shape {a.shape[1:]}")
    prior = np.asarray(shifts_px, float).reshape(len(a), 2)
    t = None if time_s is None else np.asarray(time_s, float).reshape(len(a))
    window = edge_window(ref_img.shape)
    ref = Bands(ref_img, SIGMA_HI_PX, window)
    limit = max_offset * min(ref_img.shape)
    out, refined = prior.copy(), np.zeros(len(a), bool)

    def _register(cur: Bands) -> tuple[np.ndarray, float]:
        if smooth_band:
            return register_bands(cur, ref, upsample)
        return register_robust(cur.band(SIGMA_LO_PX), ref.band(SIGMA_LO_PX), upsample)

    for i, f in enumerate(a):
        if not np.isfinite(prior[i]).all():
            continue
        cur = Bands(f, SIGMA_HI_PX, window)
        shift, err = _register(cur)
        if not err <= NOISY_ERROR and neighbours > 0:
            mean = _neighbour_mean(a, prior, t, i, int(neighbours), float(neighbour_s))
            if mean is not None:
                cur = Bands(mean, SIGMA_HI_PX, window)
                shift, err = _register(cur)
        if not np.isfinite(shift).all():
            continue
        if np.hypot(*(shift - prior[i])) > limit or (not err <= NOISY_ERROR and unrelated(ref, cur)):
            continue
        out[i], refined[i] = shift, True
    return out, refined


def _neighbour_mean(frames: np.ndarray, shifts_px: np.ndarray, time_s: np.ndarray | None, i: int, k: int,
                    within_s: float) -> np.ndarray | None:
    """The mean of frame ``i`` and up to ``k`` frames on each side (within ``within_s`` s when times are
    known: unknown times do not limit them; finite shifts only), each moved onto frame ``i`` by the difference of their (dy, dx) shifts, px;
    None when frame ``i`` has no such neighbour."""
    lo, hi = max(0, i - k), min(len(frames), i + k + 1)
    js = [j for j in range(lo, hi) if np.isfinite(shifts_px[j]).all()
          and (time_s is None or not np.isfinite(time_s[[i, j]]).all() or abs(time_s[j] - time_s[i]) <= within_s)]
    if len(js) < 2:
        return None
    acc = np.zeros(frames.shape[1:], np.float32)
    for j in js:
        f = finite(np.asarray(frames[j], np.float32))
        move = shifts_px[i] - shifts_px[j]  # frame j's sample onto frame i's position
        acc += f if np.abs(move).max() < 1e-3 else _translate(f, move, cv2.BORDER_REPLICATE)
    return acc / len(js)


def register_reference(frames: np.ndarray, reference: np.ndarray, *, upsample: int = 10,
                       shifts_px: np.ndarray | None = None) -> np.ndarray:
    """The reference frame moved onto each frame.

    Parameters
    ----------
    frames : ndarray, (n, Y, X)
        Frames (counts).
    reference : ndarray, (Y, X)
        The reference frame (counts), e.g. the recording's first image frames averaged (:func:`mean_reference`).
    upsample : int
        Sub-pixel precision of the phase correlation, 1/``upsample`` px.
    shifts_px : ndarray, (n, 2), optional
        Known (dy, dx) shift of the sample from the reference to each frame, px (synthetic data:
        the true drift); registration is skipped.

    Returns
    -------
    ndarray, (n, Y, X), float32
        The reference shifted onto each frame (linear interpolation, edges extended).

    Raises
    ------
    ValueError
        When the reference's shape is not the frames' shape.
    """
    a = np.asarray(frames)
    a = a[None] if a.ndim == 2 else a
    ref = np.asarray(reference, np.float32)
    if ref.shape != a.shape[1:]:
        raise ValueError(f"reference frame shape {ref.shape} differs from the frames' shape {a.shape[1:]}")
    if shifts_px is None:
        shifts = reference_shifts_px(a, ref, upsample=upsample)
    else:
        shifts = np.asarray(shifts_px, float).reshape(len(a), 2)
    return shift_reference(ref, shifts)


def network_input(frames: np.ndarray, reference: np.ndarray | None = None, in_channels: int = 1) -> np.ndarray:
    """What the network sees: normalised frames, with the normalised registered reference.

    Parameters
    ----------
    frames : ndarray, (n, Y, X)
        Frames (counts).
    reference : ndarray, (Y, X) or (n, Y, X), optional
        The reference frame (counts), (Y, X): registered onto each frame here; or (n, Y, X): already
        moved onto each frame (:func:`register_reference`). None: each frame is its own reference.
    in_channels : {1, 2}
        The model's input channels; with 1 the reference is ignored.

    Returns
    -------
    ndarray, (n, in_channels, Y, X), float32
    """
    a = np.asarray(frames)
    a = a[None] if a.ndim == 2 else a
    xn = normalise(a)
    if in_channels == 1:
        return xn[:, None]
    if in_channels != 2:
        raise ValueError(f"models with {in_channels} input channels are not supported (1 or 2)")
    if reference is None:
        import warnings

        warnings.warn("a two-channel model without a reference frame: each frame is used as its own "
                      "reference, which segments reacted material less well; pass reference= (the "
                      "recording's first image frames, averaged and moved onto each frame)", UserWarning, stacklevel=3)
        return np.stack([xn, xn], 1)
    ref = np.asarray(reference)
    if ref.ndim == 2:
        ref = register_reference(a, ref)
    elif ref.shape != a.shape:
        raise ValueError(f"reference frames {ref.shape} differ from the frames {a.shape}")
    return np.stack([xn, normalise(ref)], 1)
