"""``tem-operando batch INPUT... --out DIR``: many recordings, one results folder each, plus index.csv."""

from __future__ import annotations

import argparse
import sys

from .analyze import add_analysis_options, options_from_args

NAME = "batch"
HELP = "analyse many recordings into DIR/<name>/ and DIR/index.csv (local Dask or a cluster)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = HELP
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="recordings (files or folders of frames)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the results folders and index.csv")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs")
    add_analysis_options(p)


def run(args: argparse.Namespace) -> int:
    from ..pipeline.batch import batch

    def say(row: dict) -> None:
        if not args.quiet:
            state = row["status"] if row["status"] != "failed" else f"FAILED: {row['error']}"
            print(f"{row['input']}: {state}", file=sys.stderr)

    index = batch(args.inputs, args.out, options_from_args(args), resume=args.resume,
                  report=not args.no_report, on_result=say)
    failed = int((index["status"] == "failed").sum())
    print(f"{len(index) - failed} of {len(index)} recordings analysed; index in {args.out}/index.csv")
    return 1 if failed else 0
