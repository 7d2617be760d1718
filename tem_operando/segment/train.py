"""Training loop of the segmentation network (CPU or GPU), with resume and curves.

:func:`train` takes a :class:`~tem_operando.segment.datasets.FrameSet`, splits off a validation
set by source, and optimises a :class:`~tem_operando.segment.network.SegNet` on random
augmented crops. Every epoch it writes a checkpoint (``MODEL.ckpt``: weights, optimiser,
scheduler, RNG states, history), the curves (``MODEL_curves.csv`` / ``.png``), and at the end
the model file and its card. Re-running the same command after an interruption resumes from the
checkpoint and gives the same weights as an uninterrupted run (same seed, same data).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from .._files import atomic_path, atomic_write_text
from .datasets import FrameSet
from .reference import network_input

#: class weights of the cross-entropy (background, pristine, reacted)
CLASS_WEIGHTS = (1.0, 1.5, 2.0)


@dataclass
class TrainConfig:
    """Hyper-parameters of a training run (stored in the checkpoint, the model and its card)."""

    epochs: int = 20
    steps_per_epoch: int = 200
    batch: int = 12
    crop: int = 128
    lr: float = 3e-3
    weight_decay: float = 1e-4
    seed: int = 0
    val_fraction: float = 0.05
    max_val_frames: int = 64
    width: int = 16
    depth: int = 4
    blocks: int = 2
    #: 1: the frame alone; 2: the frame and the registered first frame of its session
    #: (:mod:`.reference`). Fine-tuning a 1-channel model with 2 adds the reference's input
    #: weights at zero (the new model starts out as the old one); 0: the starting model's.
    in_channels: int = 0
    #: channels of the full-resolution refinement (``network.SegNet(refine=)``); 0: none, or the
    #: starting model's. Fine-tuning a model without one adds it zero-initialised (the new model
    #: starts out as the old one; its batch norms stay at their initial statistics, like the
    #: others, and it trains at ``lr`` — the session-14 experiment gave it 5× the lr). Experimental:
    #: it did not improve segnet-s (``models/experiments/README.md``, session 14).
    refine: int = 0
    threads: int = 2
    boundary_px: int = 2
    name: str = ""
    init: str = ""  # model fine-tuned from ('' = from scratch)
    #: keep BatchNorm statistics fixed (None: when fine-tuning). A few hundred steps on a handful of
    #: frames would otherwise drag the running statistics away from what the network learned on.
    freeze_norm: bool | None = None
    #: exponential moving average of the weights, per step (None: 0.98 when fine-tuning, else off).
    #: The average of the last ~1/(1-decay) steps is what gets validated and saved: a few hundred
    #: small-batch steps on a handful of frames are noisy, their average much less so.
    ema_decay: float | None = None
    #: decision biases at the end: "fit" them on the validation frames, "keep" the starting
    #: model's, or "none". None: "keep" when fine-tuning from a model that has them (distillation
    #: keeps its decisions on the original data, and a few validation frames would make a noisy
    #: fit), else "fit". ``tem-operando models calibrate`` refits on fresh synthetic sessions.
    calibrate: str | None = None
    #: weight of the distillation term (learning without forgetting): on the crops of frames that
    #: are not always-trained (the synthetic mix), the fine-tuned network is also pulled towards
    #: the outputs of the model it started from. None: 1.0 when fine-tuning with always-trained
    #: (hand-corrected) frames, else 0.
    distill: float | None = None
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Targets and augmentation (numpy)
# --------------------------------------------------------------------------------------------


def boundary_target(instances: np.ndarray, radius: int = 2) -> np.ndarray:
    """Object pixels within ``radius`` px of a *different* object: the seams between touching objects.

    Parameters
    ----------
    instances : ndarray, (..., Y, X), int
        Instance labels (0 = none).
    radius : int
        Half width of the seam, px.

    Returns
    -------
    ndarray of bool, same shape
    """
    inst = np.asarray(instances).astype(np.int64)
    size = [1] * (inst.ndim - 2) + [2 * radius + 1] * 2
    big = np.where(inst > 0, inst, np.iinfo(np.int64).max)
    hi = ndimage.maximum_filter(inst, size=size, mode="nearest")
    lo = ndimage.minimum_filter(big, size=size, mode="nearest")
    return (inst > 0) & ((hi > inst) | (lo < inst))


def _augment(x: np.ndarray, c: np.ndarray, b: np.ndarray, rng: np.random.Generator):
    """Random dihedral transform, gain/offset and a smooth illumination ramp (normalised units).

    ``x`` is (C, y, x): every input channel gets the same transform."""
    k = int(rng.integers(4))
    x, c, b = np.rot90(x, k, axes=(-2, -1)), np.rot90(c, k), np.rot90(b, k)
    if rng.random() < 0.5:
        x, c, b = x[..., ::-1], c[:, ::-1], b[:, ::-1]
    x = x * rng.uniform(0.8, 1.25) + rng.uniform(-0.15, 0.15)
    if rng.random() < 0.5:
        yy, xx = np.mgrid[0:x.shape[-2], 0:x.shape[-1]] / max(x.shape[-2:])
        a = rng.uniform(0, 2 * np.pi)
        x = x + rng.uniform(-0.3, 0.3) * (np.cos(a) * xx + np.sin(a) * yy - 0.5)
    return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(c), np.ascontiguousarray(b)


def sample_batch(xn: np.ndarray, classes: np.ndarray, instances: np.ndarray, idx: np.ndarray,
                 cfg: TrainConfig, rng: np.random.Generator, p: np.ndarray | None = None,
                 return_index: bool = False):
    """A batch of augmented random crops: inputs (B,C,c,c), classes (B,c,c), seams (B,c,c).

    ``xn`` is the network input (n, C, Y, X) (:func:`.reference.network_input`); ``p`` (optional)
    gives the probability of drawing each frame of ``idx``; ``return_index`` also returns the frame
    each crop came from.
    """
    n, _, Y, X = xn.shape
    cy, cx = min(cfg.crop, Y), min(cfg.crop, X)
    xs, cs, bs = [], [], []
    drawn = rng.choice(idx, size=cfg.batch, p=p)
    for i in drawn:
        y0, x0 = int(rng.integers(0, Y - cy + 1)), int(rng.integers(0, X - cx + 1))
        sl = (slice(y0, y0 + cy), slice(x0, x0 + cx))
        b = boundary_target(instances[i][sl], cfg.boundary_px)
        x, c, b = _augment(xn[i][(slice(None), *sl)].astype(np.float32), classes[i][sl], b, rng)
        xs.append(x), cs.append(c), bs.append(b)
    out = np.stack(xs), np.stack(cs).astype(np.int64), np.stack(bs).astype(np.float32)
    return (*out, drawn) if return_index else out


def distill_loss(student, teacher):
    """Per-pixel KL divergence of the class outputs + soft-target BCE of the seams (teacher → student)."""
    from torch.nn import functional as F

    p = teacher[:, :3].softmax(1)
    kl = (p * (p.clamp_min(1e-8).log() - student[:, :3].log_softmax(1))).sum(1).mean()
    seam = F.binary_cross_entropy_with_logits(student[:, 3], teacher[:, 3].sigmoid())
    return kl + 0.5 * seam


# --------------------------------------------------------------------------------------------
# Loss and metrics (torch)
# --------------------------------------------------------------------------------------------


def loss_fn(out, cls, seam):
    """Weighted cross-entropy + soft Dice on objects and on reacted + BCE on seams."""
    import torch
    from torch.nn import functional as F

    logits, blogit = out[:, :3], out[:, 3]
    w = torch.tensor(CLASS_WEIGHTS, dtype=logits.dtype, device=logits.device)
    ce = F.cross_entropy(logits, cls, weight=w)
    p = logits.softmax(1)
    dice = 0.0
    for pred, tgt in ((1 - p[:, 0], (cls > 0).float()), (p[:, 2], (cls == 2).float())):
        inter = (pred * tgt).sum()
        dice = dice + 1 - (2 * inter + 1) / (pred.sum() + tgt.sum() + 1)
    bce = F.binary_cross_entropy_with_logits(blogit, seam, pos_weight=torch.tensor(4.0, device=out.device))
    return ce + 0.5 * dice + 0.5 * bce


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of two boolean masks (NaN when both are empty)."""
    u = np.logical_or(pred, truth).sum()
    return float(np.logical_and(pred, truth).sum() / u) if u else float("nan")


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------


def split_validation(data: FrameSet, fraction: float, seed: int, max_frames: int,
                     always_train: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Train/validation frame indices, split by session (frames of one session stay together).

    Groups are shard sessions (6 consecutive frames of a shard), recordings or annotation sets;
    with fewer than 5 groups, frames are split one by one. Frames flagged in ``always_train``
    (e.g. a handful of hand-corrected frames) are never held out.
    """
    if always_train is not None and np.asarray(always_train, bool).any():
        keep = np.asarray(always_train, bool)
        rest = np.flatnonzero(~keep)
        if rest.size == 0:
            return np.arange(len(data)), np.array([], int)
        tr, va = split_validation(data.subset(rest), fraction, seed, max_frames)
        return np.sort(np.concatenate([np.flatnonzero(keep), rest[tr]])), rest[va]
    groups = np.array([s.rsplit(":", 1)[0] for s in data.source])
    keys = np.array([f"{g}#{i // 6}" if g.startswith("shard_") else g for i, g in enumerate(groups)])
    if np.unique(keys).size < 5:
        keys = np.array([str(i) for i in range(len(data))])
    uniq = np.unique(keys)
    rng = np.random.default_rng([seed, 99])
    n_val = max(1, int(round(fraction * len(uniq)))) if len(uniq) > 1 else 0
    val_keys = set(rng.choice(uniq, size=n_val, replace=False)) if n_val else set()
    is_val = np.array([k in val_keys for k in keys])
    val = np.flatnonzero(is_val)
    if val.size > max_frames:
        val = np.sort(rng.choice(val, size=max_frames, replace=False))
    train = np.flatnonzero(~is_val)
    if train.size == 0:
        train = np.arange(len(data))
    return train, val


def _validate(model, xn, classes, instances, val, radius):
    import torch

    if val.size == 0:
        return dict(val_loss=float("nan"), val_iou_objects=float("nan"), val_iou_reacted=float("nan"))
    model.eval()
    losses, po, pr, to, tr = [], [], [], [], []
    with torch.inference_mode():
        for k in range(0, val.size, 8):
            ii = val[k:k + 8]
            x = torch.from_numpy(xn[ii].astype(np.float32))
            c = torch.from_numpy(classes[ii].astype(np.int64))
            s = torch.from_numpy(boundary_target(instances[ii], radius).astype(np.float32))
            out = model(x)
            losses.append(float(loss_fn(out, c, s)) * len(ii))
            pred = out[:, :3].argmax(1).numpy()
            po.append(pred > 0), pr.append(pred == 2), to.append(classes[ii] > 0), tr.append(classes[ii] == 2)
    return dict(val_loss=sum(losses) / val.size,
                val_iou_objects=iou(np.concatenate(po), np.concatenate(to)),
                val_iou_reacted=iou(np.concatenate(pr), np.concatenate(tr)))


def fit_class_bias(logits: np.ndarray, classes: np.ndarray, *, step_px: int = 2,
                   min_gain: float = 0.005, groups: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Decision biases for the class logits that maximise mean(IoU objects, IoU reacted).

    Class-weighted cross-entropy and the Dice terms make the network over-segment: uncertain
    pixels on an object's rim go to the object. Adding a bias to the pristine and reacted logits
    before the argmax moves the decision back to where the truth draws it. The biases are found
    by a coarse then a fine grid search on frames with ground truth (every ``step_px``-th pixel).

    Parameters
    ----------
    logits : ndarray, (n, ≥3, Y, X)
        Network outputs (the first three channels are the class logits).
    classes : ndarray, (n, Y, X)
        True classes.
    min_gain : float
        Keep zero biases unless the score improves by at least this much.
    groups : ndarray, (n,), optional
        A group label per frame (e.g. the user's frames and synthetic ones): the score is the
        mean over groups, so each group weighs the same whatever its number of pixels.

    Returns
    -------
    bias : ndarray, (3,)
        Added to the class logits (background's is 0).
    info : dict
        Scores (``iou_objects``, ``iou_reacted`` before and after) and the number of frames.
    """
    lg = np.asarray(logits[:, :3, ::step_px, ::step_px], np.float32)
    t = np.asarray(classes[:, ::step_px, ::step_px])
    g = np.zeros(len(t), int) if groups is None else np.unique(np.asarray(groups), return_inverse=True)[1]
    parts = []
    for k in np.unique(g):
        sel = g == k
        tk = t[sel].ravel()
        d1 = (lg[sel, 1] - lg[sel, 0]).ravel()
        d2 = (lg[sel, 2] - lg[sel, 0]).ravel()
        parts.append((d1, d2, tk > 0, tk == 2))

    def score(b1: float, b2: float) -> tuple[float, float, float]:
        ios, irs = [], []
        for d1, d2, to, tr in parts:
            e1, e2 = d1 + b1, d2 + b2
            po = np.maximum(e1, e2) > 0
            pr = po & (e2 >= e1)
            ios.append((po & to).sum() / max(int((po | to).sum()), 1))
            irs.append((pr & tr).sum() / max(int((pr | tr).sum()), 1))
        io, ir = float(np.mean(ios)), float(np.mean(irs))
        return (io + ir) / 2, io, ir

    base = score(0.0, 0.0)
    best = (base, 0.0, 0.0)
    for grid in (np.arange(-3.0, 1.01, 0.25), None):
        if grid is None:  # refine around the coarse optimum
            c1, c2 = best[1], best[2]
            g1, g2 = c1 + np.arange(-0.25, 0.26, 0.05), c2 + np.arange(-0.25, 0.26, 0.05)
        else:
            g1 = g2 = grid
        for b1 in g1:
            for b2 in g2:
                sc = score(float(b1), float(b2))
                if sc[0] > best[0][0]:
                    best = (sc, float(b1), float(b2))
    if best[0][0] - base[0] < min_gain:
        best = (base, 0.0, 0.0)
    bias = np.array([0.0, round(best[1], 3), round(best[2], 3)])
    info = {"frames": int(len(classes)), "iou_objects_before": base[1], "iou_reacted_before": base[2],
            "iou_objects_after": best[0][1], "iou_reacted_after": best[0][2]}
    return bias, info


def _model_logits(model, xn: np.ndarray, idx: np.ndarray) -> np.ndarray:
    import torch

    model.eval()
    out = []
    with torch.inference_mode():
        for k in range(0, idx.size, 8):
            out.append(model(torch.from_numpy(xn[idx[k:k + 8]].astype(np.float32)))[:, :3].numpy())
    return np.concatenate(out)


def with_input_channels(model, in_channels: int, refine: int | None = None):
    """A copy of a :class:`~.network.SegNet` taking ``in_channels`` inputs; the weights of the
    added inputs start at zero, so the copy's outputs are the original's whatever they hold.

    ``refine``: give the copy a full-resolution refinement of that many channels if the model has
    none (zero-initialised output: the outputs stay the original's); None keeps the model's."""
    import torch

    from .network import SegNet

    cfg = model.config
    have = int(cfg.get("in_channels", 1))
    if in_channels < have:
        raise ValueError(f"cannot drop input channels ({have} → {in_channels})")
    have_refine = int(cfg.get("refine", 0))
    if refine is not None and have_refine and refine != have_refine:
        raise ValueError(f"the model already has a refinement of {have_refine} channels (asked for {refine})")
    new = SegNet(int(cfg["width"]), int(cfg["depth"]), int(cfg["blocks"]), in_channels=in_channels,
                 refine=have_refine or int(refine or 0))
    state = new.state_dict()
    for k, v in model.state_dict().items():
        if state[k].shape == v.shape:
            state[k] = v.clone()
        else:  # the stem's first convolution sees 4 unshuffled channels per input, the frame's first
            w = torch.zeros_like(state[k])
            w[:, : v.shape[1]] = v
            state[k] = w
    new.load_state_dict(state)
    return new


def _train_mode(model, freeze_norm: bool) -> None:
    """Training mode; with ``freeze_norm`` the BatchNorm layers stay in eval mode (fixed statistics)."""
    from torch import nn

    model.train()
    if freeze_norm:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _rng_state(rng: np.random.Generator) -> str:
    return json.dumps(rng.bit_generator.state)


class TrainingCancelled(RuntimeError):
    """Raised by :func:`train` when its ``cancel`` callable returns True (the checkpoint of the
    last finished epoch stays, so the same call resumes)."""


def sampling_probabilities(weights: np.ndarray | None, idx: np.ndarray) -> np.ndarray | None:
    """Per-frame weights → probabilities of drawing each frame of ``idx`` (None: uniform)."""
    if weights is None:
        return None
    w = np.asarray(weights, float)[idx]
    if not (np.isfinite(w).all() and (w >= 0).all() and w.sum() > 0):
        raise ValueError("sampling weights must be finite, non-negative and not all zero")
    return w / w.sum()


def train(data: FrameSet, out: str | os.PathLike, cfg: TrainConfig, *, restart: bool = False,
          progress: bool = True, log=print, weights: np.ndarray | None = None,
          always_train: np.ndarray | None = None, callback=None, cancel=None,
          calibration: FrameSet | None = None) -> Path:
    """Train (or fine-tune, ``cfg.init``) a network on ``data`` and write the model ``out``.

    Parameters
    ----------
    data : FrameSet
        Frames (counts) and ground truth.
    out : path-like
        Model file to write (``.pt``). Beside it: ``<stem>.ckpt``, ``<stem>_curves.csv``,
        ``<stem>_curves.png`` and the card ``<stem>.MODEL_CARD.md``.
    cfg : TrainConfig
    restart : bool
        Ignore an existing checkpoint instead of resuming from it.
    weights : ndarray, (n,), optional
        Relative probability of drawing each frame (e.g. to give a few hand-corrected frames the
        same share of the crops as many synthetic ones); uniform when None.
    always_train : ndarray of bool, (n,), optional
        Frames never held out for validation.
    callback : callable(step, total_steps), optional
        Called after every optimisation step (for a progress bar in the GUI).
    cancel : callable() -> bool, optional
        Polled every step; when it returns True, :class:`TrainingCancelled` is raised.
    calibration : FrameSet, optional
        More frames (never trained on) for fitting the decision biases, with the validation
        frames; the always-trained frames form a group of their own that weighs the same
        (:func:`fit_class_bias` ``groups``).

    Returns
    -------
    Path
        The model file.
    """
    import torch

    from .modelfile import build_from_file, load_model_file, save_model_file
    from .network import SegNet

    if cfg.calibrate not in (None, "fit", "keep", "none"):
        raise ValueError(f"calibrate must be 'fit', 'keep' or 'none', got {cfg.calibrate!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    ckpt_path = out.with_suffix(".ckpt")
    torch.set_num_threads(max(1, cfg.threads))
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    name = cfg.name or out.stem

    parent_bias = None
    if cfg.init:
        obj = load_model_file(cfg.init)
        model = build_from_file(obj, cfg.init)
        if obj.get("class_bias") is not None:
            parent_bias = np.asarray(obj["class_bias"], float)
        cfg.width, cfg.depth, cfg.blocks = (int(obj["config"][k]) for k in ("width", "depth", "blocks"))
        have = int(obj["config"].get("in_channels", 1))
        have_refine = int(obj["config"].get("refine", 0))
        cfg.in_channels = cfg.in_channels or have
        cfg.refine = cfg.refine or have_refine
        if cfg.in_channels != have or cfg.refine != have_refine:
            model = with_input_channels(model, cfg.in_channels, cfg.refine)
    else:
        cfg.in_channels = cfg.in_channels or 1
        model = SegNet(cfg.width, cfg.depth, cfg.blocks, in_channels=cfg.in_channels, refine=cfg.refine)
    freeze = bool(cfg.init) if cfg.freeze_norm is None else bool(cfg.freeze_norm)
    _train_mode(model, freeze)
    decay = (0.98 if cfg.init else 0.0) if cfg.ema_decay is None else float(cfg.ema_decay)
    ema = _ema_copy(model) if decay > 0 else None
    user = np.zeros(len(data), bool) if always_train is None else np.asarray(always_train, bool)
    w_distill = ((1.0 if (cfg.init and user.any()) else 0.0) if cfg.distill is None else float(cfg.distill))
    teacher = _ema_copy(model) if (w_distill > 0 and cfg.init) else None  # the model it started from
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.epochs * cfg.steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(total, 1),
                                                pct_start=0.1 if not cfg.init else 0.02)
    rng = np.random.default_rng(cfg.seed)
    history: list[dict] = []
    start_epoch = 0
    if ckpt_path.is_file() and not restart:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if json.loads(ck["config"]) == _cfg_key(cfg):
            model.load_state_dict(ck["model"])
            if ema is not None and "ema" in ck:
                ema.load_state_dict(ck["ema"])
            opt.load_state_dict(ck["opt"])
            sched.load_state_dict(ck["sched"])
            rng.bit_generator.state = json.loads(ck["rng"])
            torch.set_rng_state(ck["torch_rng"])
            history = json.loads(ck["history"])
            start_epoch = int(ck["epoch"])
            log(f"resuming {out.name} from its checkpoint after epoch {start_epoch}")
        else:
            log(f"checkpoint {ckpt_path.name} belongs to other settings; starting afresh")

    log(f"normalising {len(data)} frames …")
    xn = network_input(data.frames, data.reference, cfg.in_channels).astype(np.float16)
    train_idx, val_idx = split_validation(data, cfg.val_fraction, cfg.seed, cfg.max_val_frames, always_train)
    p_train = sampling_probabilities(weights, train_idx)
    log(f"{train_idx.size} training frames, {val_idx.size} validation frames; "
        f"{cfg.epochs} epochs × {cfg.steps_per_epoch} steps of {cfg.batch} crops of {cfg.crop} px")

    t0 = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        losses = []
        for k in _progress(range(cfg.steps_per_epoch), f"epoch {epoch + 1}/{cfg.epochs}", progress):
            if cancel is not None and cancel():
                raise TrainingCancelled(f"training of {out.name} cancelled during epoch {epoch + 1}")
            x, c, s, drawn = sample_batch(xn, data.classes, data.instances, train_idx, cfg, rng, p_train,
                                          return_index=True)
            xt = torch.from_numpy(x)
            pred = model(xt)
            loss = loss_fn(pred, torch.from_numpy(c), torch.from_numpy(s))
            keep = torch.from_numpy(~user[drawn])
            if teacher is not None and bool(keep.any()):
                with torch.no_grad():
                    target = teacher(xt[keep])
                loss = loss + w_distill * distill_loss(pred[keep], target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                _ema_update(ema, model, decay)
            losses.append(float(loss.detach()))
            if callback is not None:
                callback(epoch * cfg.steps_per_epoch + k + 1, total)
        row = dict(epoch=epoch + 1, step=(epoch + 1) * cfg.steps_per_epoch, train_loss=float(np.mean(losses)),
                   lr=float(sched.get_last_lr()[0]), elapsed_s=time.perf_counter() - t0)
        final = ema if ema is not None else model
        row.update(_validate(final, xn, data.classes, data.instances, val_idx, cfg.boundary_px))
        _train_mode(model, freeze)
        history.append(row)
        _write_curves(out, history)
        _save_checkpoint(ckpt_path, model, opt, sched, rng, cfg, history, epoch + 1, ema)
        # the latest weights are always usable as a model (load with verify=False: no card yet)
        save_model_file(out.with_name(out.stem + ".latest.pt"), final, name=name,
                        training=_training_info(cfg, data, history))
        log(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))

    final = ema if ema is not None else model
    final.eval()
    bias, bias_info = None, None
    mode = cfg.calibrate or ("keep" if parent_bias is not None else "fit")
    cal_idx = np.union1d(val_idx, np.flatnonzero(always_train) if always_train is not None else [])
    cal_idx = cal_idx.astype(int)
    if mode == "keep" and parent_bias is not None:
        bias = parent_bias
        log(f"decision biases kept from {Path(cfg.init).name}: {bias[1]:+.2f}, {bias[2]:+.2f}")
    elif mode == "fit" and (cal_idx.size or calibration is not None):
        lgs, cls = [_model_logits(final, xn, cal_idx)] if cal_idx.size else [], [data.classes[cal_idx]]
        grp = [user[cal_idx].astype(int)]
        if calibration is not None and len(calibration):
            xc = network_input(calibration.frames, calibration.reference, cfg.in_channels)
            lgs.append(_model_logits(final, xc, np.arange(len(calibration))))
            cls.append(calibration.classes)
            grp.append(np.zeros(len(calibration), int))
        bias, bias_info = fit_class_bias(np.concatenate(lgs), np.concatenate(cls), groups=np.concatenate(grp))
        log(f"decision biases (pristine, reacted) {bias[1]:+.2f}, {bias[2]:+.2f}: IoU objects "
            f"{bias_info['iou_objects_before']:.3f} → {bias_info['iou_objects_after']:.3f}, reacted "
            f"{bias_info['iou_reacted_before']:.3f} → {bias_info['iou_reacted_after']:.3f} on {bias_info['frames']} frames")
    info = _training_info(cfg, data, history)
    if bias_info is not None:
        info["class_bias_fit"] = bias_info
    sha = save_model_file(out, final, name=name, training=info, class_bias=bias)
    write_card(out, sha, cfg, data, history, class_bias=bias, bias_info=bias_info)
    latest = out.with_name(out.stem + ".latest.pt")
    if latest.exists():
        latest.unlink()
    log(f"wrote {out} (sha256 {sha}) and {out.with_name(out.stem + '.MODEL_CARD.md').name}")
    return out


def _cfg_key(cfg: TrainConfig) -> dict:
    d = asdict(cfg)
    d.pop("threads", None)
    return json.loads(json.dumps(d))


def _ema_copy(model):
    """A frozen copy of ``model`` to hold the moving average of its weights."""
    import copy

    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    ema.eval()
    return ema


def _ema_update(ema, model, decay: float) -> None:
    """``ema ← decay·ema + (1 − decay)·model`` for the weights; buffers (BatchNorm statistics) copied."""
    import torch

    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


def _save_checkpoint(path, model, opt, sched, rng, cfg, history, epoch, ema=None):
    import torch

    obj = dict(model=model.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(), rng=_rng_state(rng),
               torch_rng=torch.get_rng_state(), history=json.dumps(history),
               config=json.dumps(_cfg_key(cfg)), epoch=epoch)
    if ema is not None:
        obj["ema"] = ema.state_dict()
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _training_info(cfg: TrainConfig, data: FrameSet, history: list[dict]) -> dict:
    last = history[-1] if history else {}
    return {"config": json.dumps(_cfg_key(cfg)), "n_frames": len(data),
            "epochs_done": len(history),
            "val_iou_objects": float(last.get("val_iou_objects", math.nan)),
            "val_iou_reacted": float(last.get("val_iou_reacted", math.nan))}


def _progress(it, desc: str, enabled: bool):
    if not enabled:
        return it
    try:
        from rich.progress import track

        return track(it, description=desc, transient=True)
    except ImportError:  # pragma: no cover
        return it


def _write_curves(out: Path, history: list[dict]) -> None:
    import pandas as pd

    df = pd.DataFrame(history)
    csv = out.with_name(out.stem + "_curves.csv")
    atomic_write_text(csv, df.to_csv(index=False))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    a.plot(df["epoch"], df["train_loss"], label="train")
    a.plot(df["epoch"], df["val_loss"], label="validation")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    b.plot(df["epoch"], df["val_iou_objects"], label="objects")
    b.plot(df["epoch"], df["val_iou_reacted"], label="reacted")
    b.set_xlabel("epoch"), b.set_ylabel("validation IoU"), b.set_ylim(0, 1), b.legend()
    fig.tight_layout()
    fig.savefig(out.with_name(out.stem + "_curves.png"), dpi=90)
    plt.close(fig)


def bias_section(bias, info: dict | None, source: str = "validation frames") -> str:
    """The model card's paragraph on the decision biases (empty without biases)."""
    if bias is None:
        return ""
    if info is None:
        return (f"## Decision biases\n{float(bias[1]):+.2f} (pristine) and {float(bias[2]):+.2f} (reacted) are added "
                "to the class logits before the decision, kept from the model this one was fine-tuned from.\n")
    return (f"## Decision biases\n{float(bias[1]):+.2f} (pristine) and {float(bias[2]):+.2f} (reacted) are added to the "
            f"class logits before the decision (stored in the file as `class_bias`), fitted on {info['frames']} "
            f"{source} to undo the over-segmentation that the class weights and Dice terms cause: IoU "
            f"objects {info['iou_objects_before']:.3f} → {info['iou_objects_after']:.3f}, reacted "
            f"{info['iou_reacted_before']:.3f} → {info['iou_reacted_after']:.3f} on those frames.\n")


def write_card(out: Path, sha: str, cfg: TrainConfig, data: FrameSet, history: list[dict],
               metrics_md: str = "", class_bias=None, bias_info: dict | None = None) -> Path:
    """Write ``<stem>.MODEL_CARD.md``: architecture, data, recipe, validation metrics, sha256."""
    from .network import SegNet, n_parameters

    last = history[-1] if history else {}
    n_par = n_parameters(SegNet(cfg.width, cfg.depth, cfg.blocks, in_channels=cfg.in_channels or 1,
                                refine=cfg.refine))
    inputs = ("the frame normalised per frame (median, 1–99 % range of the 4×4-binned frame)" if (cfg.in_channels or 1) == 1
              else "two channels, each normalised per frame (median, 1–99 % range of the 4×4-binned frame): the "
                   "frame, and the first image frame of its recording registered onto it "
                   "(`tem_operando.segment.reference`)")
    doses = data.dose[np.isfinite(data.dose)]
    nms = data.nm_per_px[np.isfinite(data.nm_per_px)]
    text = f"""# Model card: {cfg.name or out.stem}

- file: `{out.name}`
- sha256: `{sha}`
- format: `tem-operando-segnet/1` (torch.save of a plain dict; load with `torch.load(weights_only=True)`)
- classes: 0 background, 1 pristine, 2 reacted; plus a seam (touching-objects boundary) output

## Architecture
Compact U-Net `SegNet(width={cfg.width}, depth={cfg.depth}, blocks={cfg.blocks}, in_channels={cfg.in_channels or 1}{f", refine={cfg.refine}" if cfg.refine else ""})`,
{n_par:,} parameters: 2×2 pixel-unshuffle stem, stride-2 3×3 convolutions and depthwise-separable
residual blocks per level, bilinear up-sampling with skip connections, pixel-shuffle head to 4
channels at full resolution{f", refined at full resolution (a 3×3 convolution of the input to {cfg.refine} channels, then 3×3, 3×3 and 1×1 convolutions added to the output)" if cfg.refine else ""}. Input: {inputs}.

## Training data
{len(data)} frames of {data.frames.shape[1]}×{data.frames.shape[2]} px;
dose {doses.min() if doses.size else float('nan'):.3g}–{doses.max() if doses.size else float('nan'):.3g} e⁻/px,
pixel size {nms.min() if nms.size else float('nan'):.3g}–{nms.max() if nms.size else float('nan'):.3g} nm/px.
{('Fine-tuned from `' + Path(cfg.init).name + '`.') if cfg.init else 'Trained from scratch.'}

## Recipe
```json
{json.dumps(_cfg_key(cfg), indent=2)}
```
Loss: weighted cross-entropy (weights {CLASS_WEIGHTS}) + 0.5 soft Dice (objects, reacted) + 0.5
BCE on seams (positive weight 4). AdamW, one-cycle learning rate. Augmentation: random crops,
dihedral transforms, gain/offset, illumination ramps.

## Validation (held-out sessions of the training data, last epoch)
- loss {last.get('val_loss', float('nan')):.4f}
- IoU objects (pristine ∪ reacted) {last.get('val_iou_objects', float('nan')):.3f}
- IoU reacted {last.get('val_iou_reacted', float('nan')):.3f}
- epochs {len(history)}, training time {last.get('elapsed_s', float('nan')) / 60:.1f} min

{bias_section(class_bias, bias_info)}
{metrics_md}
"""
    card = out.with_name(out.stem + ".MODEL_CARD.md")
    atomic_write_text(card, text)
    return card


#: seeds of the synthetic sessions that calibrate decision biases: never used for training
#: (below EVAL_SEED_OFFSET // 2) nor for the held-apart evaluation (≥ EVAL_SEED_OFFSET)
CALIBRATION_SEED_OFFSET = 750_000


def calibration_frames(n_sessions: int = 24, n_frames: int = 4, shape: tuple[int, int] = (256, 256)) -> FrameSet:
    """Frames of random synthetic sessions reserved for calibration (seeds from :data:`CALIBRATION_SEED_OFFSET`)."""
    from .datasets import concat, random_recipe, synthetic_frames

    sets, seed = [], CALIBRATION_SEED_OFFSET
    while len(sets) < n_sessions:
        if random_recipe(seed)["scene"] != "empty":
            sets.append(synthetic_frames(seed, n_frames, shape=tuple(int(v) for v in shape))[0])
        seed += 1
    return concat(sets)


def calibrate_model(model: str | os.PathLike, out: str | os.PathLike, *, n_sessions: int = 24,
                    n_frames: int = 4, log=print) -> tuple[Path, np.ndarray, dict]:
    """Fit a model's decision biases on fresh synthetic sessions and write it as a new model file.

    The weights are unchanged; the new file carries ``class_bias`` and a card (the old card with
    the new sha256 and a "Decision biases" section; its evaluation tables are dropped, since they
    describe the old decisions: re-run ``tem-operando evaluate --update-card``).

    Parameters
    ----------
    model : path-like
        Model file (with its card).
    out : path-like
        The new model file (may be the same path: it is replaced atomically).
    n_sessions, n_frames : int
        Synthetic sessions (seeds from :data:`CALIBRATION_SEED_OFFSET`, their random dose and
        appearance) and frames from each.

    Returns
    -------
    (Path, ndarray, dict)
        The file, the biases and the fit's scores.
    """
    from .modelfile import build_from_file, card_path, load_model_file, own_card_path, save_model_file

    model, out = Path(model), Path(out)
    obj = load_model_file(model)
    net = build_from_file(obj, model).eval()
    data = calibration_frames(n_sessions, n_frames)
    xn = network_input(data.frames, data.reference, int(obj["config"].get("in_channels", 1)))
    bias, info = fit_class_bias(_model_logits(net, xn, np.arange(len(data))), data.classes)
    log(f"decision biases (pristine, reacted) {bias[1]:+.2f}, {bias[2]:+.2f}: IoU objects "
        f"{info['iou_objects_before']:.3f} → {info['iou_objects_after']:.3f}, reacted "
        f"{info['iou_reacted_before']:.3f} → {info['iou_reacted_after']:.3f} on {len(data)} frames")
    training = dict(obj.get("training") or {})
    training["class_bias_fit"] = {**info, "sessions": n_sessions, "seed_offset": CALIBRATION_SEED_OFFSET}
    old_card = card_path(model).read_text(encoding="utf-8")
    sha = save_model_file(out, net, name=str(obj.get("name", out.stem)), training=training, class_bias=bias)
    text = re.sub(r"(- sha256: `)[0-9a-f]{64}(`)", lambda m: m.group(1) + sha + m.group(2), old_card, count=1)
    text = re.sub(r"(- file: `)[^`]+(`)", lambda m: m.group(1) + out.name + m.group(2), text, count=1)
    text = re.split(r"\n## (?:Decision biases|Held-apart evaluation)\n", text)[0].rstrip() + "\n"
    text += "\n" + bias_section(bias, info, f"frames of {n_sessions} synthetic sessions (seeds from "
                                              f"{CALIBRATION_SEED_OFFSET:,}, never used for training or evaluation)")
    atomic_write_text(own_card_path(out), text)
    return out, bias, info
