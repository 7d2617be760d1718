"""Synthetic in situ TEM sessions with exact ground truth (seedable, public API).

>>> from tem_operando.synth import image_series, saed_series, write_session   # doctest: +SKIP
>>> s = image_series(40, scene="wire", rng=1)                                # doctest: +SKIP
>>> s.fronts.head()                                                          # doctest: +SKIP
"""

from __future__ import annotations

import numpy as np

from .session import Session

__all__ = ["Session", "image_series", "random_scene", "ParticleSpec", "WireSpec", "saed_series", "mixed_session", "make_session", "write_session",
           "write_recording", "truth_dir", "load_truth"]


def __getattr__(name):  # lazy: the generators import scipy/pandas, the writers hyperspy
    if name in ("image_series", "random_scene", "ParticleSpec", "WireSpec"):
        from . import images

        return getattr(images, name)
    if name == "saed_series":
        from .saed import saed_series

        return saed_series
    if name in ("write_session", "write_recording", "truth_dir"):
        from . import write

        return getattr(write, name)
    if name == "load_truth":
        from .truth import load_truth

        return load_truth
    raise AttributeError(name)


def mixed_session(n_frames: int = 80, shape: tuple[int, int] = (256, 256), *, every: int = 10, burst: int = 2,
                  rng=None, image_kwargs: dict | None = None, saed_kwargs: dict | None = None) -> Session:
    """A recording that switches to SAED now and then: image frames with bursts of diffraction.

    Parameters
    ----------
    n_frames : int
        Frames in all.
    shape : (int, int)
        Frame size in px.
    every, burst : int
        A burst of ``burst`` diffraction frames every ``every`` frames.
    rng : None, int or numpy.random.Generator
        Seed.
    image_kwargs, saed_kwargs : dict
        Passed to :func:`image_series` and :func:`saed_series` (same frame rate for both).
    """
    from .images import image_series
    from .mixed import diffraction_schedule, interleave
    from .saed import saed_series

    rng = np.random.default_rng(rng)
    ik = dict(image_kwargs or {})
    sk = dict(saed_kwargs or {})
    fps = ik.get("fps", sk.get("fps", 2.0))
    ik["fps"] = sk["fps"] = fps
    img = image_series(n_frames, shape, rng=rng, **ik)
    dif = saed_series(n_frames, shape, rng=rng, **sk)
    return interleave(img, dif, diffraction_schedule(n_frames, every, burst))


def make_session(kind: str = "mixed", *, n_frames: int = 60, size_px: int = 256, seed: int | None = 0,
                 dose_e_per_px: float = 20.0, nm_per_px: float = 1.0, inv_nm_per_px: float = 0.08,
                 fps: float = 2.0, contrast: str = "bright-field", sequence: str = "Sn") -> Session:
    """One entry point for the ``synth`` command: a scene by name.

    ``kind`` is an image scene (``mixed``, ``wire``, ``particles``, ``empty``), ``saed`` (a SAED
    series following ``sequence``) or ``session`` (image frames with bursts of diffraction).
    """
    shape = (size_px, size_px)
    img = dict(nm_per_px=nm_per_px, fps=fps, dose_e_per_px=dose_e_per_px, contrast=contrast)
    dif = dict(inv_nm_per_px=inv_nm_per_px, fps=fps, dose_e_per_px=max(dose_e_per_px, 20.0), sequence=sequence)
    if kind in ("mixed", "wire", "particles", "empty"):
        from .images import image_series

        return image_series(n_frames, shape, scene=kind, rng=seed, **img)
    if kind == "saed":
        from .saed import saed_series

        return saed_series(n_frames, shape, rng=seed, **dif)
    if kind == "session":
        return mixed_session(n_frames, shape, rng=seed, image_kwargs=dict(scene="mixed", **img), saed_kwargs=dif)
    raise ValueError(f"unknown synthetic kind {kind!r}; choose mixed, wire, particles, empty, saed or session")
