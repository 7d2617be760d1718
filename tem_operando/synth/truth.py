"""Read back the ground truth written beside a synthetic recording."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import RecordingError


@dataclass
class Truth:
    """Ground truth of a synthetic session as written by :func:`write_truth`.

    Tables as in :class:`~tem_operando.synth.session.Session`; ``classes`` and ``instances`` are
    lazy zarr arrays (T, Y, X) or None for sessions without image frames.
    """

    folder: Path
    info: dict
    frames: pd.DataFrame
    objects: pd.DataFrame
    tracks: pd.DataFrame
    fronts: pd.DataFrame
    phases: pd.DataFrame
    classes: object | None
    instances: object | None


def _csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return pd.DataFrame()


def load_truth(path: str | os.PathLike) -> Truth:
    """Load ground truth from a ``*_truth`` folder or from the recording it belongs to."""
    from .write import truth_dir

    p = Path(path)
    folder = p if (p / "truth.json").is_file() else truth_dir(p)
    if not (folder / "truth.json").is_file():
        raise RecordingError(path, f"no ground truth found (looked for {folder / 'truth.json'})")
    with open(folder / "truth.json", encoding="utf-8") as fh:
        info = json.load(fh)
    classes = instances = None
    if (folder / "masks.zarr").exists():
        import zarr

        g = zarr.open_group(str(folder / "masks.zarr"), mode="r")
        classes, instances = g["classes"], g["instances"]
    return Truth(folder=folder, info=info, frames=_csv(folder / "frames.csv"), objects=_csv(folder / "objects.csv"),
                 tracks=_csv(folder / "tracks.csv"), fronts=_csv(folder / "fronts.csv"),
                 phases=_csv(folder / "phases.csv"), classes=classes, instances=instances)


def as_array(z) -> np.ndarray:
    return np.asarray(z[...])
