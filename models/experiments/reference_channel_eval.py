"""Evaluate a reference-channel experiment model (``reference_channel_train.py``) on the
two-particle session of ``tests/test_pipeline.py`` (seeds 4-6, dose 80 e⁻/px, 1 nm/px):
IoU of objects and of the reacted class, and each particle's width (equivalent diameter, nm)
over the first 18 frames and its mean error while the particle swells, beside segnet-s v2 and
the truth.

    python models/experiments/reference_channel_eval.py OUT.pt
"""

import sys
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage as ndi

from tem_operando.segment import load_segmenter
from tem_operando.segment.network import SegNet
from tem_operando.segment.normalise import normalise

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from test_pipeline import _two_particles  # noqa: E402


def width_nm(mask: np.ndarray) -> float:
    """Equivalent-circle diameter of a mask, px (= nm in this session)."""
    return float(2 * np.sqrt(mask.sum() / np.pi))


def widths(classes: np.ndarray, instances: np.ndarray, track: int, n: int = 18) -> list[float]:
    """Width of the predicted object that covers most of true particle ``track``, per frame."""
    out = []
    for f in range(n):
        cc, _ = ndi.label(classes[f] > 0)
        under = cc[instances[f] == track]
        lab = np.bincount(under[under > 0]).argmax() if (under > 0).any() else 0
        out.append(width_nm(cc == lab) if lab else 0.0)
    return out


def main(path: str) -> None:
    ck = torch.load(path, weights_only=False)
    model = SegNet(**ck["config"])
    model.load_state_dict(ck["state"])
    model.eval()
    cb = ck["class_bias"]
    bias = np.zeros(3) if cb is None else np.concatenate([[0.0], np.asarray(cb, float).ravel()[-2:]])
    torch.set_num_threads(2)
    for seed in (4, 5, 6):
        s = _two_particles(n=32, seed=seed)
        xn = normalise(s.frames.astype(np.float32))
        x = np.stack([xn, np.repeat(xn[:1], len(xn), 0)], 1)  # this session does not drift
        with torch.inference_mode():
            logits = model(torch.from_numpy(x)).numpy()[:, :3] + bias[None, :, None, None]
        preds = {"v2 ": load_segmenter(None).predict(s.frames.astype(np.float32)).classes,
                 "2ch": logits.argmax(1)}
        truth = {tid: np.array([width_nm(s.instances[f] == tid) for f in range(18)]) for tid in (1, 2)}
        for name, p in preds.items():
            iou_obj = ((p > 0) & (s.classes > 0)).sum() / ((p > 0) | (s.classes > 0)).sum()
            iou_re = ((p == 2) & (s.classes == 2)).sum() / max(((p == 2) | (s.classes == 2)).sum(), 1)
            print(f"seed {seed} {name} IoU objects {iou_obj:.3f} reacted {iou_re:.3f}")
            for tid in (1, 2):
                w = np.array(widths(p, s.instances, tid))
                swelling = np.flatnonzero(np.diff(truth[tid]) > 0.3) + 1  # frames where the truth grows
                err = np.abs(w[swelling] - truth[tid][swelling]).mean()
                print(f"    particle {tid}", np.round(w, 1).tolist(), f"mean |error| while swelling {err:.1f} nm")
        for tid in (1, 2):
            print(f"    truth    {tid}", np.round(truth[tid], 1).tolist())


if __name__ == "__main__":
    main(sys.argv[1])
