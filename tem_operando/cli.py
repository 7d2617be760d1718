"""The ``tem-operando`` command line.

The parser lives here and imports nothing heavy: each command imports its stage when it runs,
so ``tem-operando --help`` answers at once. Errors about the user's input (a bad file, a missing
calibration, an unknown phase) are printed as one line naming the file and the problem, with
exit code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from . import __version__
from .errors import TemOperandoError

SYNTH_KINDS = ("mixed", "wire", "particles", "empty", "saed", "session")
SYNTH_FORMATS = ("hspy", "zspy", "emd", "velox", "dm4", "dm3", "ser", "mrc", "tif", "npy", "avi", "mp4",
                 "gatan", "folder")


def _positive(kind):
    def conv(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not (v > 0 and math.isfinite(v)):
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return v

    return conv


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

    info = sub.add_parser("info", help="shape, calibration, frame rate and modes of a recording",
                          description="Describe a recording without loading its frames.")
    info.add_argument("input", metavar="FILE", help="recording file or folder of frames")
    cal = info.add_argument_group("calibration (overrides the file's metadata)")
    cal.add_argument("--nm-per-px", type=_positive(float), metavar="X", help="image pixel size in nm")
    cal.add_argument("--inv-nm-per-px", type=_positive(float), metavar="Q", help="diffraction pixel size in 1/nm")
    cal.add_argument("--fps", type=_positive(float), metavar="F", help="frames per second")
    info.add_argument("--scan-modes", action="store_true",
                      help="read every frame to label image/diffraction frames the metadata does not")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")

    syn = sub.add_parser("synth", help="write a synthetic session with exact ground truth",
                         description="Write a synthetic in situ session (recording + OUT_truth/ folder).")
    syn.add_argument("out", metavar="OUT", help="output file (its extension picks the format) or folder")
    syn.add_argument("--kind", choices=SYNTH_KINDS, default="mixed",
                     help="scene: a wire with particles (mixed), wire, particles, empty, a SAED series "
                          "(saed), or image and diffraction frames on one time axis (session)")
    syn.add_argument("--format", choices=SYNTH_FORMATS, default=None,
                     help="file format (default: from OUT's extension, else hspy)")
    syn.add_argument("--frames", type=int, default=60, metavar="N", help="number of frames (default 60)")
    syn.add_argument("--size", type=int, default=256, metavar="PX", help="frame size in px (default 256)")
    syn.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    syn.add_argument("--dose", type=_positive(float), default=20.0, metavar="E",
                     help="electron dose per pixel per frame, e-/px (default 20)")
    syn.add_argument("--nm-per-px", type=_positive(float), default=1.0, metavar="X", help="pixel size, nm (default 1)")
    syn.add_argument("--inv-nm-per-px", type=_positive(float), default=0.04, metavar="Q",
                     help="diffraction pixel size, 1/nm (default 0.04)")
    syn.add_argument("--fps", type=_positive(float), default=2.0, metavar="F", help="frames per second (default 2)")
    syn.add_argument("--contrast", choices=("bright-field", "dark-field"), default="bright-field")
    syn.add_argument("--sequence", default="Sn", metavar="NAME",
                     help="phase sequence of a SAED series: Sn, MoO3, FeS2, Sb (default Sn)")
    return p


def _cmd_info(args: argparse.Namespace) -> int:
    from .io import open_recording

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


def _cmd_synth(args: argparse.Namespace) -> int:
    from .synth import make_session
    from .synth.write import FORMATS, truth_dir, write_session

    out = Path(args.out)
    fmt = args.format
    if fmt is None:
        by_ext = [f for f, ext in FORMATS.items() if ext and ext == out.suffix.lower()]
        fmt = by_ext[0] if by_ext else "hspy"
    if FORMATS[fmt] and out.suffix.lower() != FORMATS[fmt]:
        out = out.with_name(out.name + FORMATS[fmt])
    if args.frames < 1:
        raise TemOperandoError(f"--frames must be at least 1, got {args.frames}")
    if args.size < 16:
        raise TemOperandoError(f"--size must be at least 16 px, got {args.size}")
    session = make_session(args.kind, n_frames=args.frames, size_px=args.size, seed=args.seed,
                           dose_e_per_px=args.dose, nm_per_px=args.nm_per_px, inv_nm_per_px=args.inv_nm_per_px,
                           fps=args.fps, contrast=args.contrast, sequence=args.sequence)
    path = write_session(session, out, fmt)
    print(f"wrote {path} ({session.n_frames} frames, {fmt}) and its ground truth in {truth_dir(path)}")
    return 0


COMMANDS = {"info": _cmd_info, "synth": _cmd_synth}


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command](args)
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
