"""The ``tem-operando`` command line.

The parser is built from the light command modules of :mod:`tem_operando.commands`; each
command imports its stage only when it runs, so ``tem-operando --help`` answers at once.
Errors about the user's input (a bad file, a missing calibration, an unknown phase) print as
one line naming the file and the problem, with exit code 2; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .commands import COMMANDS
from .errors import TemOperandoError


def _modules():
    return [importlib.import_module(f".commands.{name}", __package__) for name in COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every command (no heavy imports)."""
    p = argparse.ArgumentParser(
        prog="tem-operando",
        description="Turn in situ TEM recordings of battery electrodes into swelling rates, "
                    "reaction-front velocities and phase timelines.",
    )
    p.add_argument("--version", action="version", version=f"tem-operando {__version__}")
    p.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for mod in _modules():
        sp = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except TemOperandoError as exc:
        if args.debug:
            raise
        print(f"tem-operando: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tem-operando: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError) as exc:
        if args.debug:
            raise
        print(f"tem-operando: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
