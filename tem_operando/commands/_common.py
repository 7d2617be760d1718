"""Argument types and groups shared by several commands."""

from __future__ import annotations

import argparse
import math


def positive(kind=float):
    """An argparse type: a strictly positive, finite number."""

    def conv(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return v

    return conv


def add_calibration(parser: argparse.ArgumentParser) -> None:
    """--nm-per-px, --inv-nm-per-px and --fps, which override the file's metadata."""
    cal = parser.add_argument_group("calibration (overrides the file's metadata)")
    cal.add_argument("--nm-per-px", type=positive(float), metavar="X", help="image pixel size in nm")
    cal.add_argument("--inv-nm-per-px", type=positive(float), metavar="Q", help="diffraction pixel size in 1/nm")
    cal.add_argument("--fps", type=positive(float), metavar="F", help="frames per second")
