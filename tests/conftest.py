"""Shared fixtures: small sessions built by hand so ingest tests do not depend on the generators."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def hand_session(n_frames: int = 6, shape=(40, 48), *, modes=None, nm_per_px: float = 0.75,
                 inv_nm_per_px: float = 0.05, fps: float = 4.0, seed: int = 0, dtype=np.float32):
    """A Session of Poisson frames with integer counts (so lossless formats round-trip exactly)."""
    from tem_operando.synth.session import Session

    rng = np.random.default_rng(seed)
    frames = rng.poisson(30.0, size=(n_frames,) + tuple(shape)).astype(dtype)
    modes = np.array(modes if modes is not None else ["image"] * n_frames)
    t = np.arange(n_frames) / fps
    dose = frames.reshape(n_frames, -1).mean(axis=1)
    ft = pd.DataFrame({"frame": np.arange(n_frames), "time_s": t, "mode": modes, "drift_x_nm": 0.0,
                       "drift_y_nm": 0.0, "n_objects": 0, "dose_e_per_px": dose})
    return Session(frames=frames, time_s=t, mode=modes,
                   nm_per_px=nm_per_px if (modes == "image").any() else float("nan"),
                   inv_nm_per_px=inv_nm_per_px if (modes == "diffraction").any() else float("nan"),
                   dose_e_per_px=dose, frame_table=ft, params={"seed": seed, "kind": "hand"})


@pytest.fixture
def tiny_session():
    return hand_session()
