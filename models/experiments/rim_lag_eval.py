"""Issue 4: how far a model's particle outlines lag behind a swelling particle, by reaction progress.

Held-apart particle sessions (seeds from ``EVAL_SEED_OFFSET``, 12 frames through the swelling, references of
8 exposures of the first frame moved by the true drift) are segmented; each true particle in each frame is
matched to the predicted instance it overlaps most, and the error of its equivalent diameter
(2·√(area/π)) relative to the true one is binned by the true reacted fraction (0: pristine, 1: fully
reacted, between: the swelling period). A model whose widths lag shows negative errors early in the
swelling and none on the plateaus; that pattern, not the plateaus, is what biases swelling rates.

    python models/experiments/rim_lag_eval.py [MODEL|default] [DOSE] [N_SESSIONS]

Results: ``models/experiments/README.md`` (session 14).
"""

import sys

import numpy as np

from tem_operando.segment import load_segmenter
from tem_operando.segment.datasets import EVAL_SEED_OFFSET, synthetic_frames

BINS = np.array([-0.01, 1e-4, 0.2, 0.4, 0.6, 0.8, 0.9999, 1.01])
LABELS = ["0 (pristine)", "0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1", "1 (reacted)"]


def errors(model: str | None, dose: float, n: int) -> list[list[float]]:
    seg = load_segmenter(model)
    acc: list[list[float]] = [[] for _ in LABELS]
    for sd in range(EVAL_SEED_OFFSET, EVAL_SEED_OFFSET + n):
        fs, s = synthetic_frames(sd, 12, scene="particles", dose=dose, reference_frames=8)
        r = seg.predict(fs.frames, reference=fs.reference)
        for row in s.objects[s.objects.kind == "particle"].itertuples():
            k = int(row.frame)
            gt = s.instances[k] == row.track_id
            if gt.sum() < 50:  # partly out of view or tiny
                continue
            lab = np.bincount(r.instances[k][gt].ravel())
            lab[0] = 0
            if lab.max() == 0:
                continue
            m = r.instances[k] == lab.argmax()
            b = int(np.searchsorted(BINS, row.reacted_fraction, side="right") - 1)
            acc[b].append(float(np.sqrt(m.sum() / gt.sum()) - 1))  # relative error of the equivalent diameter
    return acc


def main(model: str | None = None, dose: float = 20.0, n: int = 20) -> None:
    acc = errors(model, dose, n)
    print(f"model {model or 'default'}, dose {dose:g} e-/px, {n} sessions: equivalent-diameter error by reacted fraction")
    for lab, a in zip(LABELS, acc):
        a = np.asarray(a)
        if a.size:
            print(f"  {lab:13s} n={a.size:4d}  median {100 * np.median(a):+5.1f} %  mean {100 * a.mean():+5.1f} %")


if __name__ == "__main__":
    args = sys.argv[1:]
    main(None if not args or args[0] == "default" else args[0], float(args[1]) if len(args) > 1 else 20.0,
         int(args[2]) if len(args) > 2 else 20)
