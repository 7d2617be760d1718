"""Image and diffraction frames of one recording on one time axis."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .session import Session


def diffraction_schedule(n_frames: int, every: int = 10, burst: int = 2) -> np.ndarray:
    """Which frames are diffraction patterns when the user switches to SAED now and then.

    Parameters
    ----------
    n_frames : int
        Frames in the recording.
    every : int
        A burst of diffraction frames starts every ``every`` frames.
    burst : int
        Diffraction frames per burst.

    Returns
    -------
    ndarray of bool, shape (n_frames,)
    """
    k = np.arange(n_frames)
    return (k % every) >= (every - burst)


def interleave(image: Session, diffraction: Session, is_diffraction: np.ndarray) -> Session:
    """Merge two sessions of equal length and frame size: frame k comes from ``diffraction``
    where ``is_diffraction[k]`` and from ``image`` elsewhere. Ground truth follows each frame."""
    n = image.n_frames
    if diffraction.n_frames != n or image.frames.shape[1:] != diffraction.frames.shape[1:]:
        raise ValueError("image and diffraction sessions must have the same number and size of frames")
    is_d = np.asarray(is_diffraction, dtype=bool)
    if is_d.shape != (n,):
        raise ValueError(f"is_diffraction must have one entry per frame ({n})")
    frames = np.where(is_d[:, None, None], diffraction.frames, image.frames).astype(np.float32)
    mode = np.where(is_d, "diffraction", "image")
    img_frames = np.flatnonzero(~is_d)
    dif_frames = np.flatnonzero(is_d)
    classes = image.classes.copy() if image.classes is not None else None
    instances = image.instances.copy() if image.instances is not None else None
    if classes is not None:
        classes[is_d] = 0
        instances[is_d] = 0
    objects = image.objects[image.objects["frame"].isin(img_frames)].reset_index(drop=True)
    fronts = image.fronts[image.fronts["frame"].isin(img_frames)].reset_index(drop=True) \
        if len(image.fronts) else image.fronts
    phases = diffraction.phases[diffraction.phases["frame"].isin(dif_frames)].reset_index(drop=True)
    ft = image.frame_table.copy()
    ft["mode"] = mode
    dose = np.where(is_d, diffraction.dose_e_per_px, image.dose_e_per_px)
    ft["dose_e_per_px"] = dose
    ft.loc[is_d, ["drift_x_nm", "drift_y_nm"]] = 0.0
    ft.loc[is_d, "n_objects"] = 0
    return Session(
        frames=frames, time_s=image.time_s.copy(), mode=mode, nm_per_px=image.nm_per_px,
        inv_nm_per_px=diffraction.inv_nm_per_px, dose_e_per_px=dose, classes=classes, instances=instances,
        objects=objects, tracks=image.tracks.copy(), fronts=fronts, phases=phases, frame_table=ft,
        params={"kind": "session", "image": image.params, "diffraction": diffraction.params,
                "diffraction_frames": dif_frames.tolist()},
    )


def empty_table(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
