"""``tem-operando models list``: the shipped and the user's segmentation models with their metrics;
``tem-operando models calibrate``: fit a model's decision biases on fresh synthetic sessions."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

NAME = "models"
HELP = "list segmentation models (shipped and your own) with their metrics"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("List the shipped models and user models (in the user data folder, or TEM_OPERANDO_DATA_DIR/"
                     "models, or --dir) with the held-apart metrics at 10 e-/px from their model cards.")
    sub = p.add_subparsers(dest="models_command", metavar="ACTION")
    sub.required = True
    ls = sub.add_parser("list", help="list models")
    ls.add_argument("--dir", action="append", default=[], metavar="DIR", help="also list models in DIR")
    cal = sub.add_parser("calibrate", help="fit a model's decision biases on fresh synthetic sessions")
    cal.add_argument("model", help="model file, shipped model name or user model name")
    cal.add_argument("--out", required=True, metavar="MODEL", help="new model file (may be the same path)")
    cal.add_argument("--sessions", type=int, default=24, metavar="N", help="synthetic sessions (default 24)")


def card_metrics(card: Path, dose: str = "10") -> dict[str, str]:
    """The network's row at ``dose`` of the card's evaluation table (empty when there is none)."""
    if not card.is_file():
        return {}
    header: list[str] | None = None
    for line in card.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "iou_objects" in cells:
            header = cells
        elif header and len(cells) == len(header) and cells[:2] == ["network", dose]:
            return dict(zip(header, cells))
    return {}


def run(args: argparse.Namespace) -> int:
    if args.models_command == "calibrate":
        from ..segment.infer import resolve_model
        from ..segment.train import calibrate_model

        if args.sessions < 1:
            raise SystemExit(f"tem-operando models calibrate: --sessions must be at least 1, got {args.sessions}")
        out, _, _ = calibrate_model(resolve_model(args.model), Path(args.out), n_sessions=args.sessions)
        print(f"wrote {out}; re-run `tem-operando evaluate --model {out} --update-card` for its metrics")
        return 0
    from ..segment.infer import DEFAULT_MODEL, models_dir, user_models_dir
    from ..segment.modelfile import card_path, card_sha256, sha256

    rows = []
    for origin, folder in [("shipped", models_dir()), ("user", user_models_dir())] + [("dir", Path(d)) for d in args.dir]:
        for pt in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
            if re.search(r"\.(latest|ckpt)\.pt$", pt.name):
                continue
            card = card_path(pt)
            ok = card_sha256(pt) == sha256(pt) if card.is_file() else False
            m = card_metrics(card)
            rows.append((origin + (" (default)" if origin == "shipped" and pt.name == DEFAULT_MODEL else ""),
                         pt.stem, "ok" if ok else "MISMATCH" if card.is_file() else "no card",
                         m.get("iou_objects", "–"), m.get("iou_reacted", "–"), m.get("front_err_px", "–"), str(pt)))
    head = ("origin", "name", "sha256 vs card", "IoU objects@10", "IoU reacted@10", "front err px@10", "path")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    for r in [head] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    return 0
