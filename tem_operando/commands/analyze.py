"""``tem-operando analyze INPUT --out DIR``: the whole pipeline on one recording."""

from __future__ import annotations

import argparse
import sys

from ._common import add_calibration, positive

NAME = "analyze"
HELP = "run every stage on one recording and write its results folder"


def add_analysis_options(p: argparse.ArgumentParser) -> None:
    """Options shared by ``analyze`` and ``batch``."""
    add_calibration(p)
    a = p.add_argument_group("analysis")
    a.add_argument("--mode", choices=("auto", "image", "diffraction"), default="auto",
                   help="frame mode: from metadata and a ring-pattern test (auto), or forced")
    a.add_argument("--model", metavar="M", default=None,
                   help="segmentation model: a file, a shipped or user model's name (see `models list`), or "
                        "'baseline' for the classical one (default: shipped network)")
    a.add_argument("--device", default="cpu", help="torch device for the network (cpu, cuda, ...)")
    a.add_argument("--phases", metavar="A,B,..", default=None,
                   help="candidate phases for diffraction frames (default: the whole library)")
    a.add_argument("--calibrate-with", metavar="PHASE", default=None,
                   help="fit the diffraction calibration from this standard's pattern (e.g. Au)")
    a.add_argument("--log", metavar="FILE", default=None,
                   help="electrochemistry/holder log (CSV: time_s, voltage_V, current_A, temperature_C)")
    a.add_argument("--log-offset", type=float, default=0.0, metavar="S",
                   help="seconds added to the log's times to put them on the recording's clock")
    a.add_argument("--every-nth", type=positive(int), default=1, metavar="N",
                   help="segment every N-th image frame only (default 1: all)")
    a.add_argument("--reference-frames", type=positive(int), default=8, metavar="K",
                   help="average at most K image frames of the recording's first second into the reference "
                        "the network compares each frame with (default 8; 1: the first frame alone, for a "
                        "sample that already changes then)")
    r = p.add_argument_group("execution")
    r.add_argument("--chunk-frames", type=positive(int), default=32, metavar="N", help="frames per chunk (32)")
    r.add_argument("--workers", type=positive(int), default=2, metavar="N", help="local threads (2)")
    r.add_argument("--scheduler", metavar="ADDR", default=None,
                   help="a dask.distributed scheduler address (default: local Dask threads)")
    r.add_argument("--no-report", action="store_true", help="skip plots and report.html")
    r.add_argument("--quiet", action="store_true", help="no progress bar")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = ("Segment, track and measure image frames; index diffraction frames; write tables, "
                     "masks, plots and report.html into DIR.")
    p.add_argument("input", metavar="INPUT", help="recording file or folder of frames")
    p.add_argument("--out", required=True, metavar="DIR", help="results folder")
    add_analysis_options(p)
    f = p.add_argument_group("interrupted and live runs")
    f.add_argument("--resume", action="store_true", help="continue an interrupted run from its last finished chunk")
    f.add_argument("--follow", action="store_true",
                   help="keep analysing a recording that is still growing (a folder receiving frames)")
    f.add_argument("--follow-timeout", type=positive(float), default=30.0, metavar="S",
                   help="with --follow: stop after S seconds without new frames (30)")


def options_from_args(args: argparse.Namespace):
    from ..pipeline.analyze import AnalyzeOptions

    phases = [p.strip() for p in args.phases.split(",") if p.strip()] if args.phases else None
    return AnalyzeOptions(nm_per_px=args.nm_per_px, inv_nm_per_px=args.inv_nm_per_px, fps=args.fps, mode=args.mode,
                          model=args.model, device=args.device, phases=phases, calibrate_with=args.calibrate_with,
                          log=args.log, log_offset_s=args.log_offset, chunk_frames=args.chunk_frames,
                          every_nth=args.every_nth, reference_frames=args.reference_frames, workers=args.workers,
                          scheduler=args.scheduler)


class Progress:
    """A rich progress bar with frames/s and time left (silent with ``quiet``)."""

    def __init__(self, quiet: bool, label: str):
        self.quiet, self.label, self.bar = quiet or not sys.stderr.isatty(), label, None
        self.task = self.drift_task = None

    def __enter__(self):
        if not self.quiet:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, \
                TimeRemainingColumn

            self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    TextColumn("{task.fields[rate]} frames/s"), TimeRemainingColumn(), transient=True)
            self.bar.__enter__()
        return self

    def __call__(self, done: int, total: int) -> None:
        self._update("task", self.label, done, total)

    def drift(self, done: int, total: int) -> None:
        """The drift pass' bar (two-channel models register the recording before they segment it)."""
        self._update("drift_task", "registering drift", done, total)

    def _update(self, name: str, label: str, done: int, total: int) -> None:
        import time

        if self.bar is None:
            return
        if getattr(self, name, None) is None:
            setattr(self, name, self.bar.add_task(label, total=total, rate="–"))
            setattr(self, name + "_t0", time.perf_counter())
        rate = done / max(time.perf_counter() - getattr(self, name + "_t0"), 1e-9)
        self.bar.update(getattr(self, name), completed=done, rate=f"{rate:.1f}")

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)


def run(args: argparse.Namespace) -> int:
    opts = options_from_args(args)
    if args.follow:
        if args.resume:
            from ..errors import TemOperandoError

            raise TemOperandoError("--follow cannot --resume: start a new --out, or analyse the finished "
                                   "recording with --resume")
        from ..pipeline.follow import follow

        follow(args.input, args.out, opts, timeout_s=args.follow_timeout, quiet=args.quiet,
               report=not args.no_report)
        return 0
    from ..pipeline.analyze import analyze

    with Progress(args.quiet, f"analysing {args.input}") as bar:
        summary = analyze(args.input, args.out, opts, resume=args.resume, progress=bar, report=not args.no_report,
                          drift_progress=bar.drift)
    if not args.quiet:
        print(f"{summary['frames']} frames ({summary['n_image_frames']} image, {summary['n_diffraction_frames']} "
              f"diffraction) in {summary['elapsed_s']:.1f} s ({summary['frames_per_s']:.1f} frames/s); "
              f"{summary['n_tracks']} tracks; results in {args.out}")
    return 0
