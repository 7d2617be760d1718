"""``tem-operando synth OUT``: write a synthetic session with exact ground truth."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import TemOperandoError
from ._common import positive

NAME = "synth"
HELP = "write a synthetic session with exact ground truth"
KINDS = ("mixed", "wire", "particles", "empty", "saed", "session")
FORMATS = ("hspy", "zspy", "emd", "velox", "dm4", "dm3", "ser", "mrc", "tif", "npy", "avi", "mp4",
           "gatan", "folder")


def add_arguments(syn: argparse.ArgumentParser) -> None:
    syn.description = "Write a synthetic in situ session (recording + OUT_truth/ folder)."
    syn.add_argument("out", metavar="OUT", help="output file (its extension picks the format) or folder")
    syn.add_argument("--kind", choices=KINDS, default="mixed",
                     help="scene: a wire with particles (mixed), wire, particles, empty, a SAED series "
                          "(saed), or image and diffraction frames on one time axis (session)")
    syn.add_argument("--format", choices=FORMATS, default=None,
                     help="file format (default: from OUT's extension, else hspy)")
    syn.add_argument("--frames", type=int, default=60, metavar="N", help="number of frames (default 60)")
    syn.add_argument("--size", type=int, default=256, metavar="PX", help="frame size in px (default 256)")
    syn.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    syn.add_argument("--dose", type=positive(float), default=20.0, metavar="E",
                     help="electron dose per pixel per frame, e-/px (default 20)")
    syn.add_argument("--nm-per-px", type=positive(float), default=1.0, metavar="X", help="pixel size, nm (default 1)")
    syn.add_argument("--inv-nm-per-px", type=positive(float), default=0.08, metavar="Q",
                     help="diffraction pixel size, 1/nm (default 0.08: rings up to ~10 1/nm on 256 px)")
    syn.add_argument("--fps", type=positive(float), default=2.0, metavar="F", help="frames per second (default 2)")
    syn.add_argument("--contrast", choices=("bright-field", "dark-field"), default="bright-field")
    syn.add_argument("--sequence", default="Sn", metavar="NAME",
                     help="phase sequence of a SAED series: Sn, MoO3, FeS2, Sb (default Sn)")


def run(args: argparse.Namespace) -> int:
    from ..synth import make_session
    from ..synth.write import FORMATS, truth_dir, write_session

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


