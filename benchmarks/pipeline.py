"""End-to-end ``analyze`` speed, peak memory and the share of time per stage.

For image recordings at 256×256 and 512×512 (segmentation on every frame) and for a
diffraction recording, prints frames/s end to end, the peak RSS of the analysing process, and
each stage's share of the chunk time. Memory flatness: the same recording at two lengths, peak
RSS side by side (it must not grow with length). The baseline measured in the same run is
reading the recording alone (``iter_chunks``), so the ratio says what the stages cost on top.

Run: ``python benchmarks/pipeline.py [--model baseline|PATH] [--frames 240]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = """
import json, resource, sys, time
from tem_operando.pipeline import analyze, AnalyzeOptions
from tem_operando.io import open_recording
path, out, model, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.perf_counter()
with open_recording(path) as rec:
    n = sum(len(c.frames) for c in rec.iter_chunks(chunk))
read_s = time.perf_counter() - t0
opts = AnalyzeOptions(model=None if model == "network" else model, chunk_frames=chunk, workers=2)
t0 = time.perf_counter()
s = analyze(path, out, opts, report=False)
wall = time.perf_counter() - t0
print(json.dumps({"frames": n, "read_s": read_s, "wall_s": wall, "stage_s": s["stage_s"],
                  "chunks_wall_s": s.get("chunks_wall_s"),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_child(path: Path, out: Path, model: str, chunk: int) -> dict:
    r = subprocess.run([sys.executable, "-c", CHILD, str(path), str(out), model, str(chunk)],
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def make(kind: str, n: int, size: int, folder: Path) -> Path:
    from tem_operando.synth import make_session, write_session

    s = make_session(kind, n_frames=n, size_px=size, seed=7, dose_e_per_px=20.0)
    return write_session(s, folder / f"{kind}_{size}_{n}.hspy")


def report(name: str, res: dict) -> None:
    n = res["frames"]
    st = {k: v for k, v in res["stage_s"].items() if k.endswith("_s") and k not in ("chunks_cpu_s",)}
    total = sum(st.values()) or 1.0
    shares = ", ".join(f"{k[:-2]} {100 * v / total:.0f}%" for k, v in sorted(st.items(), key=lambda kv: -kv[1]))
    print(f"{name:28s} {n / res['wall_s']:8.1f} frames/s  (reading alone {n / res['read_s']:8.0f} frames/s, "
          f"ratio {res['read_s'] / res['wall_s']:.3f})  peak RSS {res['peak_rss_mb']:6.0f} MB")
    if res.get("chunks_wall_s"):
        print(f"{'':28s} steady state (chunks only, without start-up and final fits): "
              f"{n / res['chunks_wall_s']:.1f} frames/s")
    print(f"{'':28s} time per stage: {shares}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="network", help="'network' (shipped), 'baseline' or a model file")
    ap.add_argument("--frames", type=int, default=240, help="frames per recording (2 min at 2 frames/s)")
    ap.add_argument("--chunk", type=int, default=32)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"model: {args.model}; targets (2 cores): ≥ 20 frames/s at 256×256 with segmentation on every "
              "frame; peak RSS flat in length")
        for size in (256, 512):
            p = make("mixed", args.frames, size, tmp)
            report(f"image {size}×{size}", run_child(p, tmp / f"out_{size}", args.model, args.chunk))
        p = make("saed", args.frames, 256, tmp)
        try:
            report("diffraction 256×256", run_child(p, tmp / "out_saed", args.model, args.chunk))
        except RuntimeError as exc:
            print(f"diffraction 256×256: not run ({str(exc).strip().splitlines()[-1]})")
        print("\nmemory flat in length (image 256×256):")
        for n in (args.frames, 4 * args.frames):
            p = make("mixed", n, 256, tmp)
            res = run_child(p, tmp / f"len_{n}", args.model, args.chunk)
            print(f"  {n:5d} frames: peak RSS {res['peak_rss_mb']:6.0f} MB, {n / res['wall_s']:.1f} frames/s end to end")


if __name__ == "__main__":
    main()
