"""Segmentation speed: frames/s at 256×256 and 512×512, network (eager, optimised) and baseline.

Run: ``python benchmarks/segment.py [--model M] [--threads 2] [--frames 64] [--device cuda]``
(``--device``: the network's device, ``cpu`` or a torch device such as ``cuda``; the baseline runs on the CPU).
All timings come from the same run on the same synthetic frames, so the ratios are fair on a
busy machine. "network only" times the forward passes; "full" includes normalisation, decoding
and the instance watershed (what ``Segmenter.predict`` costs).
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _frames(size: int, n: int) -> np.ndarray:
    from tem_operando.segment.datasets import synthetic_frames

    fs, _ = synthetic_frames(1_000_123, 4, dose=10, size=size)
    reps = -(-n // len(fs))
    return np.concatenate([fs.frames] * reps)[:n]


def _rate(fn, frames: np.ndarray, repeat: int = 2) -> float:
    fn(frames[: min(8, len(frames))])  # warm-up (tracing, caches)
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(frames)
        best = min(best, time.perf_counter() - t0)
    return len(frames) / best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--sizes", default="256,512")
    ap.add_argument("--device", default="cpu", help="the network's torch device (cpu, cuda, cuda:1, mps)")
    args = ap.parse_args(argv)

    import torch

    from tem_operando.segment import load_segmenter
    from tem_operando.segment.reference import network_input

    torch.set_num_threads(args.threads)
    dev = args.device
    eager = load_segmenter(args.model, optimise="eager", batch=args.batch, device=dev)
    opt = load_segmenter(args.model, optimise="jit", batch=args.batch, device=dev)
    half = load_segmenter(args.model, optimise="jit", batch=args.batch, scale=0.5, device=dev)
    base = load_segmenter("baseline")
    print(f"model {opt.name} ({opt.sha256[:12]}), torch {torch.__version__}, network on {dev}, {args.threads} threads")
    print(f"{'size':>8} {'what':<34} {'frames/s':>9} {'vs eager':>9}")
    for size in (int(s) for s in args.sizes.split(",")):
        frames = _frames(size, args.frames)
        xn = network_input(frames, frames[0], opt.in_channels)
        rows = [
            ("network eager, forward only", lambda f, xn=xn: eager.logits(xn[: len(f)])),
            ("network optimised, forward only", lambda f, xn=xn: opt.logits(xn[: len(f)])),
            # as in the pipeline: the reference already moved onto each frame (n, Y, X)
            ("network eager, full predict", lambda f: eager.predict(f, reference=np.broadcast_to(f[0], f.shape))),
            ("network optimised, full predict", lambda f: opt.predict(f, reference=np.broadcast_to(f[0], f.shape))),
            ("network optimised, scale 0.5, full",
             lambda f: half.predict(f, reference=np.broadcast_to(f[0], f.shape))),
            ("baseline (scikit-image)", base.predict),
        ]
        ref = None
        for name, fn in rows:
            n = args.frames if "baseline" not in name else max(8, args.frames // 4)
            r = _rate(fn, frames[:n], repeat=2 if "baseline" not in name else 1)
            ref = r if ref is None else ref
            print(f"{size:>4}x{size:<3} {name:<34} {r:9.1f} {r / ref:9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
