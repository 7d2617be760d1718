"""Fine-tune the segmentation network on hand-corrected frames: the library behind ``tem-operando
train`` and the GUI's *Retrain* button (issue 8).

>>> from tem_operando.pipeline.retrain import RetrainOptions, retrain          # doctest: +SKIP
>>> retrain(["results/session1"], "my-material.pt", RetrainOptions(init="default"))  # doctest: +SKIP

A results folder given as data contributes the frames the user corrected by hand (exported through
:func:`tem_operando.results.corrections.export_annotation_set`, so the user's pixels are the
truth). Fine-tuning on a handful of frames alone would make the network forget what it knew, so
random synthetic sessions (:func:`tem_operando.segment.datasets.synthetic_mix`) are mixed in and
40 % of the crops (``synthetic_share``) are drawn from them; the hand-corrected frames always train
and the validation frames come from the synthetic mix (a forgetting check). While fine-tuning,
BatchNorm statistics stay fixed and the moving average of the weights is what gets saved (see
:class:`tem_operando.segment.train.TrainConfig`); the decision biases are refitted on the
validation and the hand-corrected frames. The new model's card and its file record which
corrections of which sessions it learned from.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import TemOperandoError

#: synthetic sessions mixed into a fine-tuning run on user frames by default: many sessions of few
#: frames each, so the mix is a fair sample of the training distribution (a small one makes the
#: network drift towards its peculiarities, i.e. forget)
DEFAULT_SYNTHETIC_SESSIONS = 64


@dataclass
class RetrainOptions:
    """Settings of a (fine-)tuning run; None means "the default for this kind of run"."""

    init: str | None = "default"  #: model to start from: "default" (shipped), a name or path; None = scratch
    epochs: int | None = None  #: default 6 when fine-tuning, 20 from scratch
    steps_per_epoch: int | None = None  #: default 100 when fine-tuning, else 200
    batch: int = 12  #: crops per step
    crop: int = 128  #: crop size, px
    lr: float | None = None  #: peak learning rate (default 1e-3 fine-tuning, 3e-3 from scratch)
    seed: int = 0
    threads: int = 2  #: CPU threads
    val_fraction: float = 0.05
    width: int = 16  #: network shape (from scratch only)
    depth: int = 4
    blocks: int = 2
    #: 2: give the network the recording's first image frame beside each frame (a 1-channel
    #: starting model gets the new input at zero weight); 1: the frame alone; 0: the starting model's
    in_channels: int = 0
    #: channels of a full-resolution refinement to add (0: the starting model's; none from scratch).
    #: Experimental: it did not improve segnet-s (``models/experiments/README.md``, session 14)
    refine: int = 0
    synthetic_sessions: int | None = None  #: None: DEFAULT_SYNTHETIC_SESSIONS with user frames, else 0
    synthetic_frames: int = 2  #: frames per synthetic session
    synthetic_share: float = 0.4  #: share of the crops drawn from the synthetic mix
    max_frames_per_recording: int | None = None
    restart: bool = False  #: ignore an existing checkpoint
    distill: float | None = 3.0  #: weight of the pull towards the starting model on synthetic crops
    #: decision biases: None = refit on the hand-corrected frames and as many fresh synthetic frames
    #: (each group weighing the same) when fine-tuning on user frames, else the training default
    calibrate: str | None = None
    calibration_sessions: int = 16  #: fresh synthetic sessions (4 frames each) for that refit


def results_as_annotation_sets(paths: Sequence[str | os.PathLike], tmp: Path) -> tuple[list[str], list[dict]]:
    """Results folders (with a corrections journal) → annotation sets of their corrected frames.

    Other arguments pass through unchanged. Returns the paths to load and, per results folder,
    its provenance (folder, recording sha256, corrected frames, active journal ids) for the card.
    """
    from ..results import ResultStore
    from ..results.corrections import active_entries, corrected_frames, export_annotation_set

    out, sources = [], []
    for i, raw in enumerate(paths):
        p = Path(raw)
        if p.is_dir() and (p / "summary.json").is_file() and not (p / "annotation.json").is_file():
            store = ResultStore(p)
            frames = sorted(corrected_frames(store))
            if not frames:
                raise TemOperandoError(f"{p}: this results folder has no hand-corrected frames to train on "
                                       "(correct some in tem-operando gui first)")
            ann = export_annotation_set(store, tmp / f"results_{i}")
            summary = store.read_summary()
            out.append(str(ann))
            sources.append({"results": str(p.resolve()), "recording_sha256": summary.get("input_sha256"),
                            "n_frames": len(frames), "frames": frames,
                            "correction_ids": [e["id"] for e in active_entries(store.corrections())]})
        else:
            out.append(str(raw))
    return out, sources


def _resolve_init(init: str | None) -> str:
    from ..segment.infer import default_model_path, resolve_model

    if not init:
        return ""
    path = default_model_path() if init == "default" else resolve_model(init)
    if not path.is_file():
        raise TemOperandoError(f"{path}: model to fine-tune from not found")
    return str(path)


def retrain(data: Sequence[str | os.PathLike], out: str | os.PathLike, options: RetrainOptions | None = None, *,
            progress: bool = True, log: Callable[[str], None] = print,
            callback: Callable[[int, int], None] | None = None,
            cancel: Callable[[], bool] | None = None) -> Path:
    """Train or fine-tune the segmentation network and write the model file with its card.

    Parameters
    ----------
    data : sequence of path-like
        Results folders (their hand-corrected frames), annotation sets, folders of training shards
        or synthetic recordings with ground truth.
    out : path-like
        Model file to write (``.pt`` is added if missing); its card is ``<stem>.MODEL_CARD.md``.
    options : RetrainOptions
    progress : bool
        Progress bar on the terminal.
    log : callable(str)
        Receives one line per epoch and the final message.
    callback : callable(step, total_steps), optional
        Called after every optimisation step (progress in the GUI).
    cancel : callable() -> bool, optional
        Polled every step; True stops with :class:`~tem_operando.segment.train.TrainingCancelled`
        (the last epoch's checkpoint stays and the same call resumes from it).

    Returns
    -------
    Path
        The model file.

    Raises
    ------
    TemOperandoError
        Bad settings, missing data, a results folder without corrections, a missing start model.
    """
    from ..segment.datasets import FrameSet, concat, load_inputs, synthetic_mix
    from ..segment.train import TrainConfig, train

    o = options or RetrainOptions()
    out = Path(out)
    if out.suffix != ".pt":
        out = out.with_name(out.name + ".pt")
    for name in ("batch", "crop", "threads"):
        if getattr(o, name) < 1:
            raise TemOperandoError(f"{name} must be at least 1, got {getattr(o, name)}")
    if not 0.0 <= o.synthetic_share < 1.0:
        raise TemOperandoError(f"synthetic share must be in [0, 1), got {o.synthetic_share}")
    if not data:
        raise TemOperandoError("no training data given")
    init = _resolve_init(o.init)
    if init and o.in_channels:  # before the data are loaded (minutes for real data)
        from ..segment.modelfile import load_model_file

        have = int(load_model_file(init)["config"].get("in_channels", 1))
        if o.in_channels < have:
            raise TemOperandoError(f"{init}: a {have}-channel model cannot be fine-tuned to {o.in_channels} input "
                                   f"channel(s) (channels can be added, not dropped); leave --in-channels out")
    if o.refine < 0:
        raise TemOperandoError(f"refine must be ≥ 0 channels, got {o.refine}")
    if init and o.refine:
        from ..segment.modelfile import load_model_file

        have = int(load_model_file(init)["config"].get("refine", 0))
        if have and have != o.refine:
            raise TemOperandoError(f"{init}: the model already has a refinement of {have} channels; "
                                   f"leave --refine out")

    with tempfile.TemporaryDirectory(prefix="tem-operando-train-") as tmp:
        paths, sources = results_as_annotation_sets(data, Path(tmp))
        from ..segment.datasets import find_inputs

        kinds = [k for k, _ in find_inputs(paths)]
        user: FrameSet = load_inputs(paths, o.max_frames_per_recording)
    if sources:
        log(f"training on the hand-corrected frames of {len(sources)} results folder(s): "
            + ", ".join(f"{s['results']} ({s['n_frames']} frames)" for s in sources))
    user_frames = "annotation" in kinds
    n_syn = o.synthetic_sessions if o.synthetic_sessions is not None else (
        DEFAULT_SYNTHETIC_SESSIONS if (user_frames and init) else 0)
    if n_syn < 0:
        raise TemOperandoError(f"synthetic sessions must be ≥ 0, got {n_syn}")
    weights = always = None
    mix_info: dict = {}
    frames = user
    if n_syn:
        log(f"rendering {n_syn} synthetic sessions to mix in ({o.synthetic_share:.0%} of the crops) …")
        syn = synthetic_mix(n_syn, n_frames=o.synthetic_frames, shape=user.frames.shape[1:], seed=o.seed)
        frames = concat([user, syn])
        n_u, n_s = len(user), len(syn)
        share = o.synthetic_share
        weights = np.concatenate([np.full(n_u, (1 - share) / n_u), np.full(n_s, share / n_s)])
        always = np.concatenate([np.ones(n_u, bool), np.zeros(n_s, bool)])
        mix_info = {"sessions": int(n_syn), "frames": int(n_s), "frames_per_session": int(o.synthetic_frames),
                    "share_of_crops": float(share),
                    "seed": int(o.seed), "recipe": "tem_operando.segment.datasets.synthetic_mix"}

    fine = bool(init)
    epochs = o.epochs if o.epochs is not None else (6 if fine else 20)
    if epochs < 1:
        raise TemOperandoError(f"epochs must be at least 1, got {epochs}")
    steps = o.steps_per_epoch or (100 if fine else 200)
    extra = {}
    if sources:
        extra["corrections"] = sources
    if mix_info:
        extra["synthetic_mix"] = mix_info
    cfg = TrainConfig(epochs=epochs, steps_per_epoch=steps, batch=o.batch, crop=o.crop,
                      lr=o.lr or (1e-3 if fine else 3e-3), seed=o.seed, val_fraction=o.val_fraction,
                      width=o.width, depth=o.depth, blocks=o.blocks, in_channels=o.in_channels, refine=o.refine, threads=o.threads,
                      name=out.stem, init=init, extra=extra, distill=o.distill, calibrate=o.calibrate)
    calibration = None
    if o.calibrate is None and user_frames and fine and o.calibration_sessions > 0:
        from ..segment.train import calibration_frames

        cfg.calibrate = "fit"
        calibration = calibration_frames(o.calibration_sessions, 4, shape=user.frames.shape[1:])
    train(frames, out, cfg, restart=o.restart, progress=progress, log=log, weights=weights,
          always_train=always, callback=callback, cancel=cancel, calibration=calibration)
    _append_card(out, sources, mix_info)
    return out


def _append_card(out: Path, sources: list[dict], mix_info: dict) -> None:
    """Provenance sections of the card: the corrections and the synthetic mix it learned from."""
    from ..segment.modelfile import card_path

    lines: list[str] = []
    if sources:
        lines += ["", "## Hand-corrected frames used", ""]
        lines += [f"- `{s['results']}` (recording sha256 `{s.get('recording_sha256') or '?'}`): frames "
                  f"{', '.join(map(str, s['frames']))}; corrections.jsonl ids "
                  f"{', '.join(map(str, s['correction_ids']))}" for s in sources]
    if mix_info:
        lines += ["", "## Synthetic frames mixed in", "",
                  f"{mix_info['frames']} frames of {mix_info['sessions']} random synthetic sessions "
                  f"(`{mix_info['recipe']}`, seed {mix_info['seed']}), drawn for "
                  f"{mix_info['share_of_crops']:.0%} of the crops so the network keeps what it knew; "
                  "validation frames come from this mix (a forgetting check)."]
    if lines:
        with open(card_path(out), "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
