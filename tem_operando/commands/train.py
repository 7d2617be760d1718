"""``tem-operando train --data DIR... --out MODEL``: (re)train the segmentation network."""

from __future__ import annotations

import argparse

from ._common import positive

NAME = "train"
HELP = "(re)train the segmentation network on synthetic sessions or annotation sets"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Train the segmentation network. DIR may be a synthetic recording with its "
                     "<stem>_truth/ folder, a folder of them, a results folder (its hand-corrected "
                     "frames are used), an annotation set exported by the GUI "
                     "(datasets/README.md), or a folder of pre-rendered shard_*.npz files. Re-running "
                     "the same command after an interruption resumes from MODEL's checkpoint.")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR", help="training data (one or more)")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.pt); its card, "
                   "curves (CSV, PNG) and checkpoint go beside it")
    p.add_argument("--from", dest="init", metavar="MODEL", default=None,
                   help="fine-tune this model (a path, a shipped model name, or 'default')")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="epochs (default 20 from scratch, 6 when fine-tuning)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    g = p.add_argument_group("training settings")
    g.add_argument("--steps-per-epoch", type=int, default=None, metavar="N",
                   help="optimiser steps per epoch (default 200, 100 when fine-tuning)")
    g.add_argument("--batch", type=int, default=12, metavar="B", help="crops per step (default 12)")
    g.add_argument("--crop", type=int, default=128, metavar="PX", help="crop size, px (default 128)")
    g.add_argument("--lr", type=positive(float), default=None, metavar="LR",
                   help="peak learning rate (default 3e-3, 1e-3 when fine-tuning)")
    g.add_argument("--width", type=int, default=16, help="network width (from scratch only; default 16)")
    g.add_argument("--depth", type=int, default=4, help="network depth (from scratch only; default 4)")
    g.add_argument("--blocks", type=int, default=2, help="blocks per level (from scratch only; default 2)")
    g.add_argument("--in-channels", type=int, choices=(1, 2), default=None,
                   help="2: the network also sees the recording's first image frame registered onto each frame "
                        "(better on thin reacted shells; fine-tuning a 1-channel model adds that input at zero "
                        "weight); 1: the frame alone, from scratch only (default: the starting model's, 1 from scratch; "
                        "channels can be added to a model, not dropped)")
    g.add_argument("--refine", type=int, default=0, metavar="C",
                   help="experimental: add a full-resolution refinement of C channels (the trunk works at half "
                        "resolution; ~2.5× the network's cost at 256×256; it did not improve segnet-s, see "
                        "models/experiments/README.md). Fine-tuning a model without one adds it at zero weight "
                        "(default: the starting model's, none from scratch)")
    g.add_argument("--threads", type=int, default=2, metavar="N", help="CPU threads (default 2)")
    g.add_argument("--val-fraction", type=float, default=0.05, help="share of sessions held out for validation")
    g.add_argument("--max-frames-per-recording", type=int, default=None, metavar="N",
                   help="use at most N frames (evenly spaced) of each synthetic recording")
    g.add_argument("--synthetic", type=int, default=None, metavar="N",
                   help="random synthetic sessions (2 frames each) mixed in so the network does not forget "
                        "(default 64 when fine-tuning on hand-corrected frames or annotation sets, else 0)")
    g.add_argument("--synthetic-share", type=float, default=0.4, metavar="F",
                   help="share of the crops drawn from the synthetic mix (default 0.4)")
    g.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..pipeline.retrain import RetrainOptions, retrain

    opts = RetrainOptions(init=args.init, epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                          batch=args.batch, crop=args.crop, lr=args.lr, seed=args.seed, threads=args.threads,
                          val_fraction=args.val_fraction, width=args.width, depth=args.depth,
                          blocks=args.blocks, in_channels=args.in_channels or 0, refine=args.refine, synthetic_sessions=args.synthetic,
                          synthetic_share=args.synthetic_share,
                          max_frames_per_recording=args.max_frames_per_recording, restart=args.restart)
    retrain(args.data, args.out, opts, progress=not args.no_progress)
    return 0
