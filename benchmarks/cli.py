"""Start-up time of ``tem-operando --help`` against a bare ``python -c pass`` in the same run.

Target (DESIGN.md): ``--help`` answers in < 0.5 s because heavy imports are lazy.
Run: ``python benchmarks/cli.py``
"""

from __future__ import annotations

import subprocess
import sys
import time


def best_of(cmd: list[str], repeat: int = 5) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    bare = best_of([sys.executable, "-c", "pass"])
    helpt = best_of([sys.executable, "-m", "tem_operando", "--help"])
    info = best_of([sys.executable, "-m", "tem_operando", "synth", "--help"])
    print(f"python -c pass          {bare * 1e3:7.1f} ms")
    print(f"tem-operando --help     {helpt * 1e3:7.1f} ms  ({helpt / bare:.1f}× bare Python; target < 500 ms)")
    print(f"tem-operando synth -h   {info * 1e3:7.1f} ms  ({info / bare:.1f}× bare Python)")


if __name__ == "__main__":
    main()
