"""``tem-operando info FILE``: shape, calibration, frame rate and modes of a recording."""

from __future__ import annotations

import argparse
import json
import math

from ._common import add_calibration

NAME = "info"
HELP = "shape, calibration, frame rate and modes of a recording"


def add_arguments(info: argparse.ArgumentParser) -> None:
    info.description = "Describe a recording without loading its frames."
    info.add_argument("input", metavar="FILE", help="recording file or folder of frames")
    add_calibration(info)
    info.add_argument("--scan-modes", action="store_true",
                      help="read every frame to label image/diffraction frames the metadata does not")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")


def run(args: argparse.Namespace) -> int:
    from ..io import open_recording

    with open_recording(args.input, nm_per_px=args.nm_per_px, fps=args.fps,
                        inv_nm_per_px=args.inv_nm_per_px) as rec:
        if args.scan_modes:
            rec.modes  # noqa: B018 - computes the per-frame labels
        info = rec.info()
    if args.json:
        print(json.dumps(info, indent=1, default=str))
        return 0
    src = info["calibration_source"]

    def fmt(value: float, unit: str, key: str, hint: str) -> str:
        if value is None or not math.isfinite(value):
            return f"missing (give {hint})"
        return f"{value:.6g} {unit}  [{src.get(key, '?')}]"

    modes = info["modes"]
    lines = [
        f"file           {info['path']}",
        f"format         {info['format']}",
        f"frames         {info['frames']} × {info['frame_shape'][0]} × {info['frame_shape'][1]} px, {info['dtype']}",
        f"nm per px      {fmt(info['nm_per_px'], 'nm', 'nm_per_px', '--nm-per-px')}",
        f"1/nm per px    {fmt(info['inv_nm_per_px'], '1/nm', 'inv_nm_per_px', '--inv-nm-per-px')}",
        f"frame rate     {fmt(info['fps'], 'fps', 'time', '--fps')}",
        f"duration       {info['duration_s']:.4g} s" if math.isfinite(info["duration_s"]) else "duration       unknown",
        f"modes          image {modes['image']}, diffraction {modes['diffraction']}"
        + (f", not yet labelled {modes['unknown']} (--scan-modes)" if modes["unknown"] else ""),
        f"dose per frame {'known' if info['dose_known'] else 'unknown'}",
    ]
    print("\n".join(lines))
    return 0


