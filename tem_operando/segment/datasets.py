"""Training and evaluation data: synthetic sessions, annotation sets, pre-generated shards.

Three sources feed :mod:`tem_operando.segment.train` through one in-memory form, a
:class:`FrameSet` of frames (counts), classes and instances:

* **synthetic shards** -- :func:`generate_shards` renders many short random sessions with
  :func:`tem_operando.synth.image_series` (random scene, dose, pixel size, contrast, background,
  blur, drift) and writes ``shard_XXXX.npz`` files; run it in the background before training so
  rendering never slows training down;
* **synthetic sessions on disk** -- a recording plus its ``<stem>_truth/`` folder
  (``tem-operando synth``);
* **annotation sets** -- the folder format of ``datasets/README.md`` (what the GUI exports).

Training seeds and evaluation seeds never overlap: :data:`EVAL_SEED_OFFSET`.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._files import atomic_path
from ..errors import TemOperandoError
from .reference import mean_reference, reference_run, register_reference

#: seeds of held-apart evaluation sessions start here; training seeds stay below
EVAL_SEED_OFFSET = 1_000_000
#: annotation-set format version written to and checked in ``annotation.json``
ANNOTATION_FORMAT = "tem-operando-annotations/1"


@dataclass
class FrameSet:
    """Frames with their ground truth, all in memory.

    Attributes
    ----------
    frames : ndarray, (n, Y, X), float32
        Detector counts (electrons per pixel for synthetic data).
    classes : ndarray, (n, Y, X), uint8
        0 background, 1 pristine, 2 reacted.
    instances : ndarray, (n, Y, X), uint32
        Instance labels per frame, 0 = none.
    dose : ndarray, (n,), float
        Mean dose per frame, e⁻/px (NaN if unknown).
    nm_per_px : ndarray, (n,), float
        Pixel size of each frame, nm/px.
    source : list of str
        Where each frame comes from (file or shard and frame index).
    reference : ndarray, (n, Y, X), float32, or None
        The session's reference (counts: its first image frame(s) averaged) moved onto each frame: the second input of
        two-channel models (:mod:`.reference`). None: unknown (each frame is its own reference).
    """

    frames: np.ndarray
    classes: np.ndarray
    instances: np.ndarray
    dose: np.ndarray
    nm_per_px: np.ndarray
    source: list
    reference: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def subset(self, idx) -> FrameSet:
        idx = np.asarray(idx, dtype=int)
        return FrameSet(self.frames[idx], self.classes[idx], self.instances[idx], self.dose[idx],
                        self.nm_per_px[idx], [self.source[i] for i in idx],
                        None if self.reference is None else self.reference[idx])

    def crop(self, sl: tuple[slice, slice]) -> FrameSet:
        """The same frames cut to ``sl`` (rows, columns)."""
        full = (slice(None), *sl)
        return FrameSet(self.frames[full], self.classes[full], self.instances[full], self.dose, self.nm_per_px,
                        self.source, None if self.reference is None else self.reference[full])


def concat(sets: list[FrameSet]) -> FrameSet:
    """Concatenate frame sets of the same frame shape.

    When only some sets carry reference frames, the others' frames are their own reference.
    """
    if not sets:
        raise TemOperandoError("no training frames were found in the given data")
    ref = None
    if any(s.reference is not None for s in sets):
        ref = np.concatenate([s.reference if s.reference is not None else s.frames for s in sets]).astype(np.float32)
    return FrameSet(np.concatenate([s.frames for s in sets]), np.concatenate([s.classes for s in sets]),
                    np.concatenate([s.instances for s in sets]), np.concatenate([s.dose for s in sets]),
                    np.concatenate([s.nm_per_px for s in sets]), [x for s in sets for x in s.source], ref)


# --------------------------------------------------------------------------------------------
# Random synthetic recipe
# --------------------------------------------------------------------------------------------


def random_recipe(seed: int, *, dose: float | None = None, size: int = 256) -> dict:
    """The random ``image_series`` arguments of training/evaluation session ``seed``.

    Scene mixed/wire/particles/empty, dose log-uniform 2–100 e⁻/px (unless ``dose`` is given),
    nm_per_px log-uniform 0.5–3, bright-field 70 % / dark-field 30 %, background carbon/vacuum/
    liquid, blur σ 0.5–2 px, random slow drift and sometimes a stage jump.
    """
    rng = np.random.default_rng([seed, 7])
    scene = str(rng.choice(["mixed", "wire", "particles", "empty"], p=[0.45, 0.25, 0.25, 0.05]))
    nm_per_px = float(math.exp(rng.uniform(math.log(0.5), math.log(3.0))))
    drawn_dose = float(math.exp(rng.uniform(math.log(2), math.log(100))))  # always drawn: same scene at any dose
    return dict(
        scene=scene,
        shape=(size, size),
        nm_per_px=nm_per_px,
        dose_e_per_px=float(dose) if dose is not None else drawn_dose,
        contrast=str(rng.choice(["bright-field", "dark-field"], p=[0.7, 0.3])),
        background=str(rng.choice(["carbon", "vacuum", "liquid"], p=[0.5, 0.25, 0.25])),
        blur_px=float(rng.uniform(0.5, 2.0)),
        drift_nm_per_s=None,
        drift_jumps=int(rng.random() < 0.2),
        rng=int(seed),
    )


def training_reference_frames(seed: int) -> int:
    """How many first frames session ``seed`` averages into its reference in training: 1–16,
    log-uniform (slow cameras average one or two, fast ones :data:`.reference.REFERENCE_FRAMES`),
    drawn from a stream of its own so the scene of a seed does not change."""
    return int(round(math.exp(np.random.default_rng([seed, 11]).uniform(0.0, math.log(16.0)))))


def training_reference_age_s(seed: int) -> float:
    """How long before session ``seed``'s first frame its reference is taken in training, s: 0 for a
    third of the seeds, else log-uniform 2–120 s (late frames of a long recording see the
    recording's first frames, whose bend contours have moved on since). Own stream per seed."""
    r = np.random.default_rng([seed, 12])
    return 0.0 if r.uniform() < 1 / 3 else float(math.exp(r.uniform(math.log(2.0), math.log(120.0))))


def training_reference_jitter_px(seed: int) -> float:
    """How far off the reference is placed on each frame of session ``seed`` in training, px (RMS per
    axis): 0 for a third of the seeds, else 0.2–1.0 px (the drift pass' error: ``benchmarks/drift.py``)."""
    r = np.random.default_rng([seed, 13])
    return 0.0 if r.uniform() < 1 / 3 else float(r.uniform(0.2, 1.0))


def synthetic_frames(seed: int, n_frames: int = 6, *, dose: float | None = None, size: int = 256,
                     reference_frames: int | None = None, reference_age_s: float = 0.0,
                     reference_jitter_px: float = 0.0, **overrides) -> tuple[FrameSet, object]:
    """Render one random session (see :func:`random_recipe`) as a :class:`FrameSet` and Session.

    The FrameSet's reference is the mean of ``reference_frames`` exposures of the first frame's scene
    (``image_series(reference_frames=k)``, what :func:`.reference.mean_reference` makes of a fast
    camera's first frames) moved onto each frame by the true drift; None: drawn per seed
    (:func:`training_reference_frames`). ``reference_age_s``: the exposures are of the scene that
    long before the first frame (``image_series(reference_age_s=)``); ``reference_jitter_px``: each
    frame's reference is placed off the true drift by a normal error of this RMS per axis, px
    (drawn from a stream of the seed's own). Both 0: the idealised reference of the evaluation.
    """
    from ..synth.images import image_series

    if (isinstance(reference_jitter_px, bool) or not isinstance(reference_jitter_px, numbers.Real)
            or not (math.isfinite(reference_jitter_px) and reference_jitter_px >= 0)):
        raise ValueError(f"reference_jitter_px must be a finite number ≥ 0 (px), got {reference_jitter_px!r}")
    kw = random_recipe(seed, dose=dose, size=size)
    kw.update(overrides)
    shape = kw.pop("shape")
    k = training_reference_frames(seed) if reference_frames is None else int(reference_frames)
    s = image_series(n_frames, shape, reference_frames=max(k, 1), reference_age_s=reference_age_s, **kw)
    n = s.n_frames
    frames = s.frames.astype(np.float32)
    shifts = true_shifts_px(s)
    if reference_jitter_px > 0:
        shifts = shifts + np.random.default_rng([seed, 14]).normal(0.0, reference_jitter_px, shifts.shape)
    fs = FrameSet(frames, s.classes.astype(np.uint8), s.instances.astype(np.uint32),
                  np.asarray(s.dose_e_per_px, float), np.full(n, s.nm_per_px),
                  [f"synthetic seed {seed} frame {i}" for i in range(n)],
                  register_reference(frames, s.reference, shifts_px=shifts) if n else None)
    return fs, s


def true_shifts_px(session) -> np.ndarray:
    """(dy, dx) px the sample moved from the first frame to each frame of a synthetic Session."""
    ft = session.frame_table
    dx = ft["drift_x_nm"].to_numpy(float) / session.nm_per_px
    dy = ft["drift_y_nm"].to_numpy(float) / session.nm_per_px
    return np.stack([dy - dy[0], dx - dx[0]], 1)


def synthetic_mix(n_sessions: int, *, n_frames: int = 6, shape: tuple[int, int] = (256, 256),
                  seed: int = 0) -> FrameSet:
    """Random training sessions (:func:`random_recipe`) to mix into a fine-tuning run so the network
    does not forget what it knew (seeds drawn below :data:`EVAL_SEED_OFFSET`, reproducibly from ``seed``).

    Frames are rendered at ``shape`` (the shape of the frames they are mixed with); sources are
    ``synthetic-<seed>:<frame>`` so a validation split keeps a session's frames together.
    """
    rng = np.random.default_rng([seed, 31])
    seeds = rng.choice(EVAL_SEED_OFFSET // 2, size=int(n_sessions), replace=False)
    sets = []
    for sd in seeds:
        fs, _ = synthetic_frames(int(sd), n_frames, shape=tuple(int(v) for v in shape))
        fs.source = [f"synthetic-{int(sd)}:{i}" for i in range(len(fs))]
        sets.append(fs)
    return concat(sets)


def generate_shards(out: str | os.PathLike, seeds: range | list, *, n_frames: int = 6, size: int = 256,
                    per_shard: int = 40, progress: bool = True) -> list[Path]:
    """Render random sessions and write them as ``shard_XXXXX.npz`` (skips shards already there).

    Parameters
    ----------
    out : path-like
        Output folder (created).
    seeds : sequence of int
        One session per seed (use seeds below :data:`EVAL_SEED_OFFSET` for training).
    n_frames : int
        Frames per session (the reaction runs through the whole session, so they span it).
    size : int
        Frame size, px.
    per_shard : int
        Sessions per shard.

    Returns
    -------
    list of Path
        The shard files.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds)
    paths = []
    for k in range(0, len(seeds), per_shard):
        chunk = seeds[k:k + per_shard]
        path = out / f"shard_{chunk[0]:07d}_{len(chunk):03d}.npz"
        paths.append(path)
        if path.exists():
            continue
        sets = [synthetic_frames(s, n_frames, size=size)[0] for s in chunk]
        fs = concat(sets)
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, frames=fs.frames.astype(np.float16), classes=fs.classes,
                     instances=fs.instances.astype(np.uint16), dose=fs.dose, nm_per_px=fs.nm_per_px,
                     seeds=np.repeat(chunk, n_frames), reference=fs.reference.astype(np.float16))
        if progress:
            print(f"{path.name}: {len(fs)} frames", flush=True)
    return paths


def load_shards(paths: list[Path]) -> FrameSet:
    """Load ``shard_*.npz`` files written by :func:`generate_shards`."""
    sets = []
    for p in paths:
        with np.load(p) as z:
            n = z["frames"].shape[0]
            ref = z["reference"].astype(np.float32) if "reference" in z else None  # older shards: none
            sets.append(FrameSet(z["frames"].astype(np.float32), z["classes"], z["instances"].astype(np.uint32),
                                 z["dose"], z["nm_per_px"], [f"{p.name}:{i}" for i in range(n)], ref))
    return concat(sets)


# --------------------------------------------------------------------------------------------
# Folders given to `train --data` / `evaluate --data`
# --------------------------------------------------------------------------------------------


def is_annotation_set(path: Path) -> bool:
    return (path / "annotation.json").is_file()


def load_annotation_set(path: str | os.PathLike) -> FrameSet:
    """Read an annotation set (format in ``datasets/README.md``).

    Raises
    ------
    TemOperandoError
        When ``annotation.json`` or the arrays are missing or inconsistent.
    """
    path = Path(path)
    try:
        info = json.loads((path / "annotation.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TemOperandoError(f"{path}: not a readable annotation set ({exc})") from None
    if info.get("format") != ANNOTATION_FORMAT:
        raise TemOperandoError(f"{path}: annotation.json format is {info.get('format')!r}, "
                               f"expected {ANNOTATION_FORMAT!r}")
    try:
        with np.load(path / "frames.npz") as z:
            frames = z["frames"].astype(np.float32)
            classes = z["classes"].astype(np.uint8)
            instances = z["instances"].astype(np.uint32) if "instances" in z else None
            reference = z["reference"].astype(np.float32) if "reference" in z else None
    except (OSError, KeyError, ValueError) as exc:
        raise TemOperandoError(f"{path / 'frames.npz'}: cannot read frames/classes ({exc})") from None
    if frames.ndim != 3 or frames.shape != classes.shape:
        raise TemOperandoError(f"{path / 'frames.npz'}: frames {frames.shape} and classes {classes.shape} "
                               "must both be (n, Y, X)")
    if reference is not None and reference.shape not in (frames.shape, frames.shape[1:]):
        raise TemOperandoError(f"{path / 'frames.npz'}: reference {reference.shape} must be one frame "
                               f"{frames.shape[1:]} or one per frame {frames.shape}")
    if reference is not None and reference.ndim == 2:  # the recording's reference: move it onto each
        reference = register_reference(frames, reference)
    if classes.max(initial=0) > 2:
        raise TemOperandoError(f"{path / 'frames.npz'}: classes must be 0, 1 or 2")
    if instances is None:
        from scipy import ndimage

        instances = np.stack([ndimage.label(c > 0)[0] for c in classes]).astype(np.uint32)
    n = frames.shape[0]
    nm = float(info.get("nm_per_px") or math.nan)
    if not (nm > 0):
        raise TemOperandoError(f"{path / 'annotation.json'}: nm_per_px is missing or not positive")
    dose = np.asarray(info.get("dose_e_per_px", [math.nan] * n), float).reshape(-1)
    if dose.size == 1:
        dose = np.full(n, dose[0])
    idx = info.get("frame_index", list(range(n)))
    return FrameSet(frames, classes, instances, dose, np.full(n, nm),
                    [f"{path.name}:{i}" for i in idx], reference)


def write_annotation_set(path: str | os.PathLike, frames: np.ndarray, classes: np.ndarray,
                         instances: np.ndarray | None = None, *, nm_per_px: float,
                         provenance: dict | None = None, dose_e_per_px=None,
                         frame_index=None, reference: np.ndarray | None = None) -> Path:
    """Write an annotation set (the GUI's export; format in ``datasets/README.md``).

    ``reference``, optional: the recording's reference (Y, X; its first image frames averaged), or it moved onto each frame
    (n, Y, X) (:func:`.reference.register_reference`), for two-channel models.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    arrays = dict(frames=np.asarray(frames, np.float32), classes=np.asarray(classes, np.uint8))
    if instances is not None:
        arrays["instances"] = np.asarray(instances, np.uint32)
    if reference is not None:
        arrays["reference"] = np.asarray(reference, np.float32)
    np.savez_compressed(path / "frames.npz", **arrays)
    n = arrays["frames"].shape[0]
    info = {"format": ANNOTATION_FORMAT, "nm_per_px": float(nm_per_px),
            "frame_index": list(range(n)) if frame_index is None else [int(i) for i in frame_index],
            "provenance": provenance or {}}
    if dose_e_per_px is not None:
        info["dose_e_per_px"] = np.asarray(dose_e_per_px, float).reshape(-1).tolist()
    (path / "annotation.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    return path


def load_synthetic_session(path: str | os.PathLike, max_frames: int | None = None) -> tuple[FrameSet, object]:
    """Frames of a synthetic recording on disk plus its ground truth (image frames only)."""
    from ..io import open_recording
    from ..synth.truth import load_truth

    truth = load_truth(path)
    if truth.classes is None:
        raise TemOperandoError(f"{path}: its ground truth has no masks (no image frames)")
    rec = open_recording(path)
    try:
        modes = np.asarray(truth.frames["mode"]) if "mode" in truth.frames else np.full(rec.n_frames, "image")
        idx = np.flatnonzero(modes == "image")
        if max_frames is not None and idx.size > max_frames:
            idx = idx[np.linspace(0, idx.size - 1, max_frames).round().astype(int)]
        frames = np.stack([np.asarray(rec.frame(int(i)), np.float32) for i in idx])
        images = np.flatnonzero(modes == "image")
        reference = None
        if idx.size:  # the first image frames averaged as the pipeline does (reference.reference_run)
            ft = truth.frames.set_index("frame") if "frame" in truth.frames else truth.frames
            t = ft.reindex(images)["time_s"].to_numpy(float) if "time_s" in ft else np.full(images.size, np.nan)
            run = images[: reference_run(t)]
            first = np.stack([np.asarray(rec.frame(int(i)), np.float32) for i in run])
            if {"drift_x_nm", "drift_y_nm"} <= set(truth.frames):  # the true drift places them
                nm_px = float(truth.info.get("nm_per_px", math.nan))
                d = np.nan_to_num(ft.reindex(np.arange(modes.size))[["drift_y_nm", "drift_x_nm"]].to_numpy(float) / nm_px)
                reference = register_reference(frames, mean_reference(first, d[run]), shifts_px=d[idx] - d[run[0]])
            else:  # no drift known: the first frame alone, registered by phase correlation
                reference = register_reference(frames, first[0])
    finally:
        rec.close()
    classes = np.asarray(truth.classes[...])[idx].astype(np.uint8)
    instances = np.asarray(truth.instances[...])[idx].astype(np.uint32)
    dose = (np.asarray(truth.frames["dose_e_per_px"], float)[idx] if "dose_e_per_px" in truth.frames
            else np.full(idx.size, math.nan))
    nm = float(truth.info.get("nm_per_px", math.nan))
    return FrameSet(frames, classes, instances, dose, np.full(idx.size, nm),
                    [f"{Path(path).name}:{i}" for i in idx], reference), truth


def find_inputs(paths: list[str | os.PathLike]) -> list[tuple[str, Path]]:
    """Classify ``--data`` arguments: ``("shards", dir)``, ``("annotation", dir)``, ``("synthetic", rec)``.

    A folder may hold shards, be an annotation set, hold annotation sets, or hold synthetic
    recordings (each with its ``<stem>_truth/`` folder).
    """
    found: list[tuple[str, Path]] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise TemOperandoError(f"{p}: no such file or folder")
        if p.is_dir() and is_annotation_set(p):
            found.append(("annotation", p))
            continue
        if p.is_dir() and any(p.glob("shard_*.npz")):
            found.append(("shards", p))
            continue
        if p.is_dir() and not p.name.endswith("_truth") and not (p / "truth.json").exists():
            subs = sorted(q for q in p.iterdir() if not q.name.endswith("_truth") and not q.name.startswith("."))
            inner = [q for q in subs if (q.is_dir() and is_annotation_set(q))
                     or (q.parent / f"{q.name.split('.')[0]}_truth").is_dir() and q.suffix != ".json"]
            if inner:
                found.extend(find_inputs(inner))
                continue
        from ..synth.write import truth_dir

        if (truth_dir(p) / "truth.json").is_file():
            found.append(("synthetic", p))
            continue
        raise TemOperandoError(f"{p}: neither an annotation set (annotation.json), a folder of training "
                               "shards (shard_*.npz) nor a synthetic recording with a <stem>_truth/ folder")
    return found


def load_inputs(paths: list[str | os.PathLike], max_frames_per_recording: int | None = None) -> FrameSet:
    """Load every ``--data`` argument into one :class:`FrameSet` (frames cropped to a common size)."""
    sets = []
    for kind, p in find_inputs(paths):
        if kind == "annotation":
            sets.append(load_annotation_set(p))
        elif kind == "shards":
            sets.append(load_shards(sorted(p.glob("shard_*.npz"))))
        else:
            sets.append(load_synthetic_session(p, max_frames_per_recording)[0])
    return concat(_common_shape(sets))


def _common_shape(sets: list[FrameSet]) -> list[FrameSet]:
    """Centre-crop (or reflect-pad) every set to the smallest common frame shape."""
    if not sets:
        return sets
    ys = min(s.frames.shape[1] for s in sets)
    xs = min(s.frames.shape[2] for s in sets)
    out = []
    for s in sets:
        y0 = (s.frames.shape[1] - ys) // 2
        x0 = (s.frames.shape[2] - xs) // 2
        out.append(s.crop((slice(y0, y0 + ys), slice(x0, x0 + xs))))
    return out


if __name__ == "__main__":  # pragma: no cover - background cache generation
    import sys

    out_dir, first, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    generate_shards(out_dir, range(first, first + count))
