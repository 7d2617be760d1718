"""Experiment (issue 4): segnet-s v2 with the registered first frame as a second input channel.

The shipped network outlines a swelling particle's dark pristine core and misses its thin, light
reacted shell, so widths lag and then jump. Here the session's first frame (before the reaction),
shifted by the true drift onto each frame, is given as a second channel. The new stem weights start
at zero, so the network starts out exactly as segnet-s v2 and learns what the reference adds.
Results and how to read them: ``models/experiments/README.md``.

    python models/experiments/reference_channel_train.py OUT.pt STEPS [--init MODEL] [--lr LR]
        [--data v3|v4|v5|v6|v7|v8|v9|v10] [--rim-weight W] [--change-weight W] [--refine C]
        [--refine-lr-factor F]
    python models/experiments/reference_channel_eval.py OUT.pt

``--init`` is a model file (default: the shipped model); a one-channel model is widened with zero
weights for the reference, a two-channel one continues as it is. ``--data v3`` renders the 7,800
frames segnet-s v3 was trained on, ``--data v4`` 9,600 frames of other seeds, more of them with wires, ``--data v7``
the v5 mix on new seeds with references averaged from 1–16 first exposures, ``--data v8`` the same
on new seeds with references also aged and misplaced per seed (see ``DATA``); ``--refine C`` adds a
full-resolution refinement of C channels (``network.SegNet(refine=)``, zero-initialised, trained at
``--refine-lr-factor`` × the peak lr; session 14's v10 attempt).
Needs ~9–11 GB of RAM for the rendered frames (two float16 channels of 256×256 each).
"""

import argparse
import time

import numpy as np
import torch
from scipy import ndimage as ndi

from tem_operando.segment import default_model_path
from tem_operando.segment import train as T
from tem_operando.segment.train import with_input_channels
from tem_operando.segment.datasets import (synthetic_frames, training_reference_age_s, training_reference_jitter_px,
                                          true_shifts_px)
from tem_operando.segment.modelfile import build_from_file, load_model_file
from tem_operando.segment.normalise import normalise
from tem_operando.segment.reference import network_input

CROP, BATCH, LR = 192, 7, 1e-3

# (first seed, last seed + 1, frames per session, scene, overrides of random_recipe or None)
DATA = {
    "v3": [(2000, 2300, 12, "particles"), (2300, 2500, 12, None), (0, 300, 6, None)],
    "v4": [(2500, 2700, 12, "particles"), (2700, 2850, 12, "mixed"), (2850, 2950, 12, "wire"), (3000, 3700, 6, None)],
    "v5": [(4000, 4300, 12, "particles"), (4300, 4450, 12, "mixed"), (4450, 4500, 12, "wire"), (5000, 5500, 6, None)],
    # liquid cells and dark field, the weakest held-apart scenes of v5 (objects IoU 0.74 / 0.80 at dose 10)
    "v6": [(6000, 6350, 6, {"background": "liquid"}), (6350, 6550, 6, {"contrast": "dark-field"}),
           (6550, 6650, 12, "particles"), (6650, 7150, 6, None)],
    # the v5 mix on new seeds, each session's reference the mean of its first 1–16 exposures (session 12)
    "v7": [(7200, 7500, 12, "particles"), (7500, 7650, 12, "mixed"), (7650, 7700, 12, "wire"), (7700, 8200, 6, None)],
    # the v7 mix on new seeds, each reference also taken 0 or 2–120 s before the session (bend contours
    # moved on) and placed 0 or 0.2–1 px off the true drift, per seed (session 13)
    "v8": [(8200, 8500, 12, "particles"), (8500, 8650, 12, "mixed"), (8650, 8700, 12, "wire"), (8700, 9200, 6, None)],
    # as v8 on new seeds (session 13, with --change-weight)
    "v9": [(9200, 9500, 12, "particles"), (9500, 9650, 12, "mixed"), (9650, 9700, 12, "wire"), (9700, 10200, 6, None)],
    # the v7 mix (fresh references) on new seeds, for the full-resolution refinement (session 14, --refine)
    "v10": [(10200, 10500, 12, "particles"), (10500, 10650, 12, "mixed"), (10650, 10700, 12, "wire"),
            (10700, 11200, 6, None)],
    # the v7 mix on new seeds with particle sessions whose edges have no bright Fresnel fringe, where v7's
    # reacted rims are outlined too small (session 15: expansions −6.6 pp at amplitudes −0.1…0)
    "v11": [(11200, 11300, 12, {"scene": "particles", "fresnel_amp": -0.08}),
            (11300, 11400, 12, {"scene": "particles", "fresnel_amp": -0.02}),
            (11400, 11500, 12, {"scene": "particles", "fresnel_amp": 0.04}),
            (11500, 11600, 12, "particles"), (11600, 11700, 12, {"scene": "mixed", "fresnel_amp": -0.03}),
            (11700, 11800, 12, "mixed"), (11800, 11850, 12, "wire"), (11850, 12350, 6, None)],
    # the v7 mix on new seeds, for a widened network (session 16, --widen)
    "v12": [(12400, 12700, 12, "particles"), (12700, 12850, 12, "mixed"), (12850, 12900, 12, "wire"),
            (12900, 13400, 6, None)],
}
AVERAGED = {"v7", "v8", "v9", "v10", "v11", "v12"}  # data sets whose reference is the averaged one
AGED = {"v8", "v9"}  # data sets whose reference is aged and misplaced (datasets.training_reference_age_s / _jitter_px)
RIM_PX = 3  # --rim-weight: the outer band of every true object, px


def rim_weights(cls: np.ndarray, weight: float) -> np.ndarray:
    """1 everywhere, 1 + ``weight`` on object pixels within RIM_PX of the background: where a
    swelling particle's light reacted shell lies, which the network finds late (issue 4)."""
    obj = cls > 0
    inner = ndi.binary_erosion(obj, iterations=RIM_PX, border_value=1)
    return (1.0 + weight * (obj & ~inner)).astype(np.float32)


def weighted_loss(out, cls, seam, pix_w):
    """``train.loss_fn`` with its cross-entropy weighted per pixel as well as per class."""
    from torch.nn import functional as F

    w = torch.tensor(T.CLASS_WEIGHTS, dtype=out.dtype)
    ce_px = F.cross_entropy(out[:, :3], cls, weight=w, reduction="none")
    ce = (ce_px * pix_w).sum() / (w[cls] * pix_w).sum()
    return T.loss_fn(out, cls, seam) - F.cross_entropy(out[:, :3], cls, weight=w) + ce


def render(seeds, n_frames, averaged=False, aged=False, changes=False, **kw):
    """Frames as (n, 2, Y, X) float16 [frame, registered first frame], classes, instances.

    ``averaged``: the reference is the FrameSet's own (the mean of the session's first 1–16
    exposures, ``datasets.training_reference_frames``), given as inference does
    (``reference.network_input``); else frame 0 (the v3–v6 recipes)."""
    xs, cs, ins, chs = [], [], [], []
    for sd in seeds:
        age = {"reference_age_s": training_reference_age_s(sd),
               "reference_jitter_px": training_reference_jitter_px(sd)} if aged else {}
        fs, s = synthetic_frames(sd, n_frames, **age, **kw)
        if averaged:
            x2 = network_input(fs.frames, fs.reference, 2).astype(np.float16)
            xs += list(x2)
            cs += list(fs.classes)
            ins += list(fs.instances)
            chs += list(changed_since_first(fs.classes, s)) if changes else []
            continue
        ft = s.frame_table
        dx = ft["drift_x_nm"].to_numpy() / s.nm_per_px  # how far the sample moved since frame 0, px
        dy = ft["drift_y_nm"].to_numpy() / s.nm_per_px
        xn = normalise(fs.frames)
        for i in range(n_frames):
            ref = ndi.shift(xn[0], (dy[i] - dy[0], dx[i] - dx[0]), order=1, mode="nearest")
            xs.append(np.stack([xn[i], ref]).astype(np.float16))
            cs.append(fs.classes[i])
            ins.append(fs.instances[i])
        chs += list(changed_since_first(fs.classes, s)) if changes else []
    return xs, cs, ins, chs


def changed_since_first(classes: np.ndarray, session) -> np.ndarray:
    """Pixels whose true class differs from the first frame's, moved by the true drift (n, Y, X) bool:
    where the network must not copy its reference (a swelling particle's new rim, a reacted core)."""
    sh = true_shifts_px(session)
    return np.stack([c != ndi.shift(classes[0], sh[i], order=0, mode="nearest") for i, c in enumerate(classes)])


def two_channel_from(path=None, refine: int = 0):
    """SegNet(in_channels=2) with a model file's weights; a 1-channel model's reference stem weights are zero.

    ``refine``: add a full-resolution refinement of that many channels (zero-initialised, so the
    model starts as the file's) if the file has none (``segment.train.with_input_channels``)."""
    obj = load_model_file(str(path or default_model_path()))
    base = build_from_file(obj, "segnet-s")
    has_refine = int(obj["config"].get("refine", 0))
    return with_input_channels(base, 2, None if has_refine else (refine or None)), obj.get("class_bias")


def widened(model, width: int):
    """A copy of a two-input SegNet with ``width`` channels at the first level (every level's channels
    grow with it) whose outputs are the original's: old weights copied, the new channels' weights into
    every old channel zero (their own incoming weights random, their frozen batch norm the identity), so
    training starts where the model is and grows the new channels from there (session 16)."""
    from torch import nn

    from tem_operando.segment.network import SegNet, Up

    cfg = model.config
    if width < int(cfg["width"]):
        raise ValueError(f"cannot narrow a model ({cfg['width']} → {width})")
    if int(cfg.get("refine", 0) or 0):  # its full-resolution refinement would be dropped silently
        raise ValueError("widening a model with a refinement (SegNet(refine=)) is not supported")
    torch.manual_seed(1)  # the new channels' random incoming weights
    new = SegNet(width, int(cfg["depth"]), int(cfg["blocks"]), in_channels=int(cfg["in_channels"]))
    old_mods, new_mods = dict(model.named_modules()), dict(new.named_modules())
    with torch.no_grad():
        for name, nm in new_mods.items():
            om = old_mods[name]
            if isinstance(nm, nn.Conv2d):
                wo, wn = om.weight, nm.weight
                co = wo.shape[0]
                if nm.groups > 1:  # depthwise: one filter per channel
                    wn[:co] = wo
                else:
                    parent = old_mods[name.rsplit(".", 2)[0]] if name.endswith(".mix.0") else None
                    wn[:co] = 0
                    if isinstance(parent, Up):  # input = cat(upsampled x, skip): map both parts
                        cin_o = old_mods[name.rsplit(".", 2)[0]].mix[0].in_channels
                        skip_o = _up_skip(model, name)
                        skip_n = _up_skip(new, name)
                        x_o = cin_o - skip_o
                        x_n = nm.in_channels - skip_n
                        wn[:co, :x_o] = wo[:, :x_o]
                        wn[:co, x_n:x_n + skip_o] = wo[:, x_o:]
                    else:
                        wn[:co, :wo.shape[1]] = wo
                if nm.bias is not None:
                    nm.bias[:co] = om.bias
            elif isinstance(nm, nn.BatchNorm2d):
                c = om.num_features
                for attr in ("weight", "bias", "running_mean", "running_var"):
                    getattr(nm, attr)[:c] = getattr(om, attr)
                nm.weight[c:], nm.bias[c:], nm.running_mean[c:], nm.running_var[c:] = 1, 0, 0, 1
    return new


def _up_skip(model, conv_name: str) -> int:
    """Channels of the skip connection entering the ``Up`` whose mix convolution is ``conv_name``."""
    k = int(conv_name.split(".")[1])  # ups.K.mix.0
    depth = int(model.config["depth"])
    w = int(model.config["width"])
    level = depth - 1 - k
    return min(w * 2 ** level, 8 * w)


def main(out: str, steps: int, init=None, lr: float = LR, data: str = "v3", rim_weight: float = 0.0,
         threads: int = 2, change_weight: float = 0.0, refine: int = 0, refine_lr_factor: float = 5.0, widen: int = 0) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    t0 = time.time()
    parts = [render(range(a, b), n, data in AVERAGED, data in AGED, change_weight > 0, **(sc if isinstance(sc, dict) else {"scene": sc} if sc else {}))
             for a, b, n, sc in DATA[data]]
    x_all = np.stack([a for p in parts for a in p[0]])
    cls_all = np.stack([a for p in parts for a in p[1]])
    inst_all = np.stack([a for p in parts for a in p[2]])
    chg_all = np.stack([a for p in parts for a in p[3]]) if change_weight else None
    print(f"data {x_all.shape} in {time.time() - t0:.0f} s", flush=True)
    model, class_bias = two_channel_from(init, refine)
    if widen:
        model = widened(model, widen)
    model.train()
    for mod in model.modules():  # keep v2's normalisation statistics, as fine-tuning does
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.eval()
    new = [p for n, p in model.named_parameters() if n.startswith(("fine.", "refine."))]
    old = [p for n, p in model.named_parameters() if not n.startswith(("fine.", "refine."))]
    groups = [{"params": old, "lr": lr}] + ([{"params": new, "lr": lr * refine_lr_factor}] if new else [])
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], total_steps=steps,
                                                pct_start=0.05)
    rng = np.random.default_rng(0)
    size = x_all.shape[-1]
    for step in range(steps):
        xs, cs, bs, ws = [], [], [], []
        for i in rng.integers(0, len(x_all), BATCH):
            y0, x0 = rng.integers(0, size - CROP + 1, 2)
            sl = (slice(y0, y0 + CROP), slice(x0, x0 + CROP))
            x = x_all[i][(slice(None), *sl)].astype(np.float32)
            c, b = cls_all[i][sl], T.boundary_target(inst_all[i][sl], 2)
            k = int(rng.integers(4))
            x, c, b = np.rot90(x, k, axes=(1, 2)), np.rot90(c, k), np.rot90(b, k)
            x = x * rng.uniform(0.8, 1.25) + rng.uniform(-0.15, 0.15)
            xs.append(np.ascontiguousarray(x))
            cs.append(np.ascontiguousarray(c).astype(np.int64))
            bs.append(np.ascontiguousarray(b).astype(np.float32))
            w = rim_weights(cs[-1], rim_weight)
            if change_weight:  # the pixels whose class changed since the first frame
                w = w + change_weight * np.ascontiguousarray(np.rot90(chg_all[i][sl], k))
            ws.append(w)
        pred = model(torch.from_numpy(np.stack(xs)))
        cls_t, seam_t = torch.from_numpy(np.stack(cs)), torch.from_numpy(np.stack(bs))
        loss = (weighted_loss(pred, cls_t, seam_t, torch.from_numpy(np.stack(ws))) if rim_weight or change_weight
                else T.loss_fn(pred, cls_t, seam_t))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 200 == 0:
            print(step, round(loss.item(), 4), f"{time.time() - t0:.0f} s", flush=True)
    torch.save({"state": model.state_dict(), "config": model.config, "class_bias": class_bias}, out)
    print("done", round(time.time() - t0), "s", flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("steps", type=int)
    ap.add_argument("--init", default=None, help="model file to start from (default: the shipped model)")
    ap.add_argument("--lr", type=float, default=LR, help="one-cycle peak learning rate")
    ap.add_argument("--data", choices=sorted(DATA), default="v3")
    ap.add_argument("--rim-weight", type=float, default=0.0,
                    help=f"extra cross-entropy weight on the outer {RIM_PX} px of every true object")
    ap.add_argument("--change-weight", type=float, default=0.0,
                    help="extra cross-entropy weight on pixels whose true class changed since the first frame")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--refine", type=int, default=0,
                    help="add a full-resolution refinement of this many channels (network.SegNet(refine=))")
    ap.add_argument("--refine-lr-factor", type=float, default=5.0,
                    help="peak learning rate of the new refinement = --lr × this")
    ap.add_argument("--widen", type=int, default=0,
                    help="widen the model to this many first-level channels first (function-preserving)")
    a = ap.parse_args()
    main(a.out, a.steps, a.init, a.lr, a.data, a.rim_weight, a.threads, a.change_weight, a.refine, a.refine_lr_factor,
         a.widen)
