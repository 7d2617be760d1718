"""``tem-operando gui [DIR|INPUT]``: the desktop review-and-correction app."""

from __future__ import annotations

import argparse

NAME = "gui"
HELP = "the desktop app: review and correct results (opens a results folder or a recording)"

INSTALL_HINT = "the desktop app needs Qt: pip install 'tem-operando[gui]'"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Review and correct a results folder: video with overlays, linked plots, tracks, review "
                     "queue, corrections journaled to corrections.jsonl. A recording without results is "
                     "offered for analysis.")
    p.add_argument("path", nargs="?", metavar="DIR|INPUT", help="results folder or recording (optional)")


def run(args: argparse.Namespace) -> int:
    import importlib.util

    from ..errors import TemOperandoError

    missing = [m for m in ("qtpy", "pyqtgraph") if importlib.util.find_spec(m) is None]
    if not missing and not any(importlib.util.find_spec(b) for b in ("PySide6", "PyQt6", "PyQt5", "PySide2")):
        missing = ["a Qt binding (PySide6)"]
    if missing:
        raise TemOperandoError(f"{INSTALL_HINT} (missing: {', '.join(missing)})")
    try:
        main = importlib.import_module("tem_operando_gui.app").main
    except ImportError as exc:
        raise TemOperandoError(f"the tem_operando_gui package is not installed ({exc}); "
                               f"pip install 'tem-operando[gui]'") from None
    return int(main([args.path] if args.path else []) or 0)
