"""``tem-operando train --data DIR... --out MODEL``: (re)train the segmentation network."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

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
                   help="epochs (default 20 from scratch, 5 when fine-tuning)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    g = p.add_argument_group("training settings")
    g.add_argument("--steps-per-epoch", type=int, default=None, metavar="N",
                   help="optimiser steps per epoch (default 200, at most ~ frames/2 when fine-tuning)")
    g.add_argument("--batch", type=int, default=12, metavar="B", help="crops per step (default 12)")
    g.add_argument("--crop", type=int, default=128, metavar="PX", help="crop size, px (default 128)")
    g.add_argument("--lr", type=positive(float), default=None, metavar="LR",
                   help="peak learning rate (default 3e-3, 1e-3 when fine-tuning)")
    g.add_argument("--width", type=int, default=16, help="network width (from scratch only; default 16)")
    g.add_argument("--depth", type=int, default=4, help="network depth (from scratch only; default 4)")
    g.add_argument("--blocks", type=int, default=2, help="blocks per level (from scratch only; default 2)")
    g.add_argument("--threads", type=int, default=2, metavar="N", help="CPU threads (default 2)")
    g.add_argument("--val-fraction", type=float, default=0.05, help="share of sessions held out for validation")
    g.add_argument("--max-frames-per-recording", type=int, default=None, metavar="N",
                   help="use at most N frames (evenly spaced) of each synthetic recording")
    g.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")


def results_as_annotation_sets(paths: list[str], tmp: Path) -> tuple[list[str], list[dict]]:
    """Results folders (with a corrections journal) → annotation sets of their corrected frames.

    Other ``--data`` arguments pass through unchanged. Returns the paths to load and, per results
    folder, its provenance (folder, corrected frames) for the model card.
    """
    from ..errors import TemOperandoError

    out, sources = [], []
    for i, raw in enumerate(paths):
        p = Path(raw)
        if p.is_dir() and (p / "summary.json").is_file() and not (p / "annotation.json").is_file():
            from ..results import ResultStore
            from ..results.corrections import corrected_frames, export_annotation_set

            store = ResultStore(p)
            frames = sorted(corrected_frames(store))
            if not frames:
                raise TemOperandoError(f"{p}: this results folder has no hand-corrected frames to train on "
                                       "(correct some in tem-operando gui first)")
            ann = export_annotation_set(store, tmp / f"results_{i}")
            out.append(str(ann))
            sources.append({"results": str(p.resolve()), "n_frames": len(frames), "frames": frames})
        else:
            out.append(str(raw))
    return out, sources


def run(args: argparse.Namespace) -> int:
    from ..errors import TemOperandoError
    from ..segment.datasets import load_inputs
    from ..segment.infer import default_model_path, resolve_model
    from ..segment.train import TrainConfig, train

    out = Path(args.out)
    if out.suffix != ".pt":
        out = out.with_name(out.name + ".pt")
    init = ""
    if args.init:
        init_path = default_model_path() if args.init == "default" else resolve_model(args.init)
        if not init_path.is_file():
            raise TemOperandoError(f"{init_path}: model to fine-tune from not found")
        init = str(init_path)
    for name in ("batch", "crop", "threads"):
        if getattr(args, name) < 1:
            raise TemOperandoError(f"--{name} must be at least 1")
    with tempfile.TemporaryDirectory(prefix="tem-operando-train-") as tmp:
        paths, sources = results_as_annotation_sets(args.data, Path(tmp))
        data = load_inputs(paths, args.max_frames_per_recording)
    if sources:
        print(f"training on the hand-corrected frames of {len(sources)} results folder(s): "
              + ", ".join(f"{s['results']} ({s['n_frames']} frames)" for s in sources))
    fine = bool(init)
    epochs = args.epochs if args.epochs is not None else (5 if fine else 20)
    if epochs < 1:
        raise TemOperandoError(f"--epochs must be at least 1, got {epochs}")
    steps = args.steps_per_epoch or (max(20, min(200, len(data) // 2)) if fine else 200)
    cfg = TrainConfig(epochs=epochs, steps_per_epoch=steps, batch=args.batch, crop=args.crop,
                      lr=args.lr or (1e-3 if fine else 3e-3), seed=args.seed, val_fraction=args.val_fraction,
                      width=args.width, depth=args.depth, blocks=args.blocks, threads=args.threads,
                      name=out.stem, init=init)
    train(data, out, cfg, restart=args.restart, progress=not args.no_progress)
    if sources:  # provenance: which corrections of which sessions the model learned from
        from ..segment.modelfile import card_path

        card = card_path(out)
        lines = ["", "## Hand-corrected frames used", ""]
        lines += [f"- `{s['results']}`: frames {', '.join(map(str, s['frames']))}" for s in sources]
        with open(card, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
    return 0
