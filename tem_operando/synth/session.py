"""The in-memory synthetic session: frames plus exact ground truth."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd


@dataclass
class Session:
    """A synthetic in situ recording and its exact ground truth.

    Attributes
    ----------
    frames : ndarray, shape (T, Y, X), float32
        Detector counts per pixel (electrons per pixel for image frames).
    time_s : ndarray, shape (T,)
        Acquisition time of each frame in s.
    mode : ndarray of str, shape (T,)
        ``"image"`` or ``"diffraction"`` per frame.
    nm_per_px : float
        Spatial calibration of image frames in nm per pixel (NaN if there are none).
    inv_nm_per_px : float
        Reciprocal calibration of diffraction frames in 1/nm per pixel (NaN if there are none).
    dose_e_per_px : ndarray, shape (T,)
        Mean electron dose per pixel of each frame (e⁻/px).
    classes : ndarray, shape (T, Y, X), uint8
        Ground-truth class mask: 0 background, 1 pristine, 2 reacted (all 0 on diffraction frames).
    instances : ndarray, shape (T, Y, X), uint32
        Ground-truth instance labels; the label equals the object's ``track_id`` (0 = none).
    objects : DataFrame
        One row per object per image frame with the ``objects.csv`` columns of DESIGN.md
        (frame, time_s, track_id, x_nm, y_nm, area_nm2, width_nm, length_nm, reacted_fraction)
        plus ``kind``.
    tracks : DataFrame
        One row per object with its true kinetics (track_id, kind, width0_nm, width1_nm,
        swelling_rate_nm_s, front_velocity_nm_s, rate_law, front_exponent_n, n_steps, ...).
    fronts : DataFrame
        frame, time_s, track_id, front_position_nm (from the sodium-contact end along the axis).
    phases : DataFrame
        frame, time_s, best_phase, amorphous_fraction and ``frac_<name>`` per phase, for
        diffraction frames.
    frame_table : DataFrame
        One row per frame: frame, time_s, mode, drift_x_nm, drift_y_nm (true stage drift of the
        frame relative to frame 0, image frames; 0 on diffraction frames), n_objects,
        dose_e_per_px.
    params : dict
        Every parameter used to generate the session (JSON-serialisable), including the seed.
    reference : ndarray, shape (Y, X), float32, or None
        With ``image_series(reference_frames=k)``: the mean of k exposures of the first frame's
        scene (with ``reference_age_s=Δ``: of the scene Δ s earlier), counts per exposure, at
        frame 0's position. Not written to disk.
    """

    frames: np.ndarray
    time_s: np.ndarray
    mode: np.ndarray
    nm_per_px: float = float("nan")
    inv_nm_per_px: float = float("nan")
    dose_e_per_px: np.ndarray | None = None
    classes: np.ndarray | None = None
    instances: np.ndarray | None = None
    objects: pd.DataFrame = field(default_factory=pd.DataFrame)
    tracks: pd.DataFrame = field(default_factory=pd.DataFrame)
    fronts: pd.DataFrame = field(default_factory=pd.DataFrame)
    phases: pd.DataFrame = field(default_factory=pd.DataFrame)
    frame_table: pd.DataFrame = field(default_factory=pd.DataFrame)
    params: dict[str, Any] = field(default_factory=dict)
    reference: np.ndarray | None = None

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def fps(self) -> float:
        """Frames per second (from the median frame interval)."""
        if self.n_frames < 2:
            return float(self.params.get("fps", float("nan")))
        return float(1.0 / np.median(np.diff(self.time_s)))
