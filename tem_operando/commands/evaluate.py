"""``tem-operando evaluate --model M --data DIR...``: accuracy against ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

NAME = "evaluate"
HELP = "segmentation and measurement accuracy against ground truth, network vs baseline"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Per-class IoU, boundary F1, instance F1 and reaction-front error (px and nm) by dose "
                     "level, for the network and the classical baseline side by side. DIR is a synthetic "
                     "recording with its <stem>_truth/ folder or a folder of them; --synthetic N renders N "
                     "held-apart sessions (seeds never used in training) at each --doses level instead. "
                     "Two-channel models get each session's reference as the pipeline builds it: a "
                     "recording's first image frames of its first second averaged (--synthetic: 8 "
                     "exposures of the first frame at the same dose, a camera at >= 8 frames/s).")
    p.add_argument("--model", default=None, metavar="M", help="model file or shipped model name (default: the shipped model)")
    p.add_argument("--data", nargs="+", default=None, metavar="DIR", help="synthetic recordings with ground truth")
    p.add_argument("--synthetic", type=int, default=None, metavar="N", help="render N held-apart sessions per dose")
    p.add_argument("--doses", default="2,5,10,20,50,100", metavar="E,E,..",
                   help="dose levels for --synthetic, e-/px (default 2,5,10,20,50,100)")
    p.add_argument("--frames", type=int, default=6, metavar="N", help="frames per --synthetic session (default 6)")
    p.add_argument("--csv", default=None, metavar="FILE", help="write the table as CSV (default: beside the model)")
    p.add_argument("--no-baseline", action="store_true", help="skip the classical baseline")
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (default cpu)")
    p.add_argument("--scale", type=float, default=1.0, help="working resolution of the network (default 1)")
    p.add_argument("--update-card", action="store_true",
                   help="write the table into the model's card (section 'Held-apart evaluation')")


def run(args: argparse.Namespace) -> int:
    from ..errors import TemOperandoError
    from ..segment.evaluate import comparison_table, evaluate, held_apart_items, item_from_disk
    from ..segment.infer import load_segmenter, resolve_model

    if not args.data and not args.synthetic:
        raise TemOperandoError("give --data DIR... (synthetic recordings with ground truth) or --synthetic N")
    items = []
    if args.data:
        from ..segment.datasets import find_inputs

        for kind, path in find_inputs(args.data):
            if kind != "synthetic":
                raise TemOperandoError(f"{path}: evaluate needs synthetic recordings with ground truth "
                                       f"(got {'an annotation set' if kind == 'annotation' else 'training shards'})")
            items.append(item_from_disk(path))
    if args.synthetic:
        try:
            doses = [float(d) for d in args.doses.split(",") if d.strip()]
        except ValueError:
            raise TemOperandoError(f"--doses must be numbers separated by commas, got {args.doses!r}") from None
        items += held_apart_items(args.synthetic, doses, n_frames=args.frames)
    segs = {"network": load_segmenter(args.model, device=args.device, scale=args.scale)}
    if not args.no_baseline:
        segs["baseline"] = load_segmenter("baseline")
    df = evaluate(segs, items)
    print(comparison_table(df))
    csv = Path(args.csv) if args.csv else resolve_model(args.model).with_name(
        resolve_model(args.model).stem + "_evaluation.csv")
    try:
        df.to_csv(csv, index=False)
    except OSError:
        csv = Path.cwd() / csv.name
        df.to_csv(csv, index=False)
    print(f"wrote {csv}")
    if args.update_card:
        from ..segment.evaluate import update_card

        card = update_card(resolve_model(args.model), df, describe=_describe(args))
        print(f"updated {card}")
    return 0


def _describe(args: argparse.Namespace) -> str:
    parts = []
    if args.synthetic:
        parts.append(f"{args.synthetic} held-apart synthetic sessions (seeds ≥ 1,000,000) × {args.frames} frames "
                     f"at each dose {args.doses} e⁻/px (`tem-operando evaluate --synthetic {args.synthetic} "
                     f"--doses {args.doses} --frames {args.frames}`)")
    if args.data:
        parts.append("recordings " + ", ".join(args.data))
    return "; ".join(parts)
