"""Issue 8, done when: corrections → fine-tuning → reprocessing, on a material the shipped model
handles poorly.

The "new material" has inverted phase contrast: its reacted phase is denser than the pristine one
(mean free path ratio 0.5, where every training material has 1.4–2.2: reacted lighter), so the
shipped model mistakes reacted regions for pristine ones or background (held-apart IoU 0.54, against
~0.81 on the original set). Both of its sessions are imaged under the same microscope conditions (one
fixed set of render parameters: support film, focus, fringes, noise), with different particles and
wires: the user outlines the true masks on 10 frames of the first through the same correction
functions the GUI calls; the shipped model is fine-tuned on them (mixed with synthetic sessions) for
a few CPU minutes; IoU must rise by ≥ 0.15 on frames of the second session (held apart) and drop by
≤ 0.02 on the original synthetic evaluation set. Reprocessing with the new model keeps every
correction. (With segnet-s v1 the test used a faint material, mean free path 250 nm; segnet-s v2
handles that one well already, 0.79.)

One fine-tuning run (a module fixture) serves every test here: the network learns the new material
(held-apart IoU up by ≥ 0.15), does not forget (≤ 0.02), records its provenance, and reprocessing
keeps the corrections. Measured with seed 1: segnet-s v3 (two channels, the session's first frame
beside each frame) 0.511 → 0.859 on the new material, 0.876 → 0.859 on the original set (the
forgetting margin is small: −0.017 of the −0.02 allowed); segnet-s v2 gave 0.540 → 0.706 and
0.814 → 0.807 (+0.15–0.17 over seeds 1–3); segnet-s v7 (the reference averaged over the first
exposures) 0.576 → 0.818 and 0.903 → 0.892; segnet-s v12 (v7 widened to 24 channels) 0.649 → 0.819 and
0.908 → 0.894.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest

from tem_operando.pipeline import AnalyzeOptions, analyze
from tem_operando.pipeline.retrain import RetrainOptions, retrain
from tem_operando.results import ResultStore
from tem_operando.results.corrections import effective_masks, erase, paint, recompute
from tem_operando.segment import load_segmenter
from tem_operando.segment.datasets import EVAL_SEED_OFFSET, random_recipe, synthetic_frames
from tem_operando.segment.modelfile import card_path, sha256
from tem_operando.synth import image_series, write_session
from tem_operando.synth.images import random_render_params

#: the new material: reacted phase darker than pristine (inverted contrast, outside the training
#: range), seen under one fixed set of imaging conditions
NEW_MATERIAL = {**asdict(random_render_params(7)), "mfp_reacted_ratio": 0.5, "dose_e_per_px": 50.0}
CORRECTED_FRAMES = list(range(0, 30, 3))  # 10 frames, the most the issue allows
SEED = 1


def outline(store: ResultStore, frame: int, truth: np.ndarray) -> None:
    """What a careful user does in the GUI: erase the prediction, then outline every pristine and
    reacted region with the polygon tool (pixel-centre outlines, so the polygons fill the truth)."""
    import cv2

    H, W = truth.shape
    erase(store, frame, polygon=[(-1, -1), (W, -1), (W, H), (-1, H)])
    for cls in (2, 1):  # a reacted shell first, then its pristine core on top
        contours, _ = cv2.findContours((truth == cls).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        for c in contours:
            pts = c[:, 0, :].astype(float)
            if len(pts) >= 3:
                paint(store, frame, cls, polygon=pts.tolist())
            else:  # a 1–2 px speck: brush it
                paint(store, frame, cls, points=pts.tolist(), radius=0.5)


def _iou(model, frames: np.ndarray, truth: np.ndarray, reference: np.ndarray) -> float:
    """IoU of the objects (pristine ∪ reacted) and of the reacted class, averaged; ``reference``
    (n, Y, X): each frame's session's first frame moved onto it (two-channel models)."""
    pred = load_segmenter(model).predict(frames, reference=reference).classes
    out = []
    for a, b in ((pred > 0, truth > 0), (pred == 2, truth == 2)):
        out.append(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))
    return float(np.mean(out))


def _original_set(n_sessions: int = 8, n_frames: int = 6):
    frames, truth, refs, seed = [], [], [], EVAL_SEED_OFFSET
    while len(frames) < n_sessions:
        if random_recipe(seed)["scene"] != "empty":
            fs, _ = synthetic_frames(seed, n_frames, dose=10.0)
            frames.append(fs.frames), truth.append(fs.classes), refs.append(fs.reference)
        seed += 1
    return np.concatenate(frames), np.concatenate(truth), np.concatenate(refs)


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """Correct ≤ 10 frames of a new-material session, fine-tune with the GUI button's defaults,
    and measure IoU before and after on held-apart frames and on the original synthetic set."""
    tmp = tmp_path_factory.mktemp("loop")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TEM_OPERANDO_DATA_DIR", str(tmp / "data"))
        yield _run_loop(tmp)


def _run_loop(tmp) -> dict:
    s = image_series(30, (256, 256), scene="mixed", nm_per_px=1.0, rng=101, **NEW_MATERIAL)
    rec = write_session(s, tmp / "new_material.hspy")
    res = tmp / "res"
    analyze(rec, res, AnalyzeOptions(chunk_frames=16), report=False)
    store = ResultStore(res)
    for f in CORRECTED_FRAMES:
        outline(store, f, s.classes[f])
    recompute(store)
    corrected = {f: effective_masks(store, f) for f in CORRECTED_FRAMES}

    held = image_series(12, (256, 256), scene="mixed", nm_per_px=1.0, rng=202, **NEW_MATERIAL)
    held_frames = held.frames.astype(np.float32)
    held_ref = np.broadcast_to(held_frames[0], held_frames.shape)  # the held session does not drift
    orig_frames, orig_truth, orig_ref = _original_set()
    log: list[str] = []
    steps: list[tuple[int, int]] = []
    model = retrain([res], tmp / "data" / "models" / "light-material.pt",
                    RetrainOptions(init="default", seed=SEED),  # the defaults the GUI's button uses
                    progress=False, log=log.append, callback=lambda k, n: steps.append((k, n)))
    out = dict(session=s, rec=rec, res=res, corrected=corrected, model=model, steps=steps,
               new_before=_iou(None, held_frames, held.classes, held_ref),
               new_after=_iou(model, held_frames, held.classes, held_ref),
               orig_before=_iou(None, orig_frames, orig_truth, orig_ref),
               orig_after=_iou(model, orig_frames, orig_truth, orig_ref))
    print(f"new material IoU {out['new_before']:.3f} → {out['new_after']:.3f}; "
          f"original set {out['orig_before']:.3f} → {out['orig_after']:.3f}")
    return out


def test_the_corrections_reproduce_the_truth(loop):
    for f, (classes, _) in loop["corrected"].items():
        assert np.mean(classes == loop["session"].classes[f]) > 0.995


def test_fine_tuning_does_not_forget_and_records_provenance(loop):
    assert loop["steps"][-1] == (600, 600)
    # the shipped model handles this material poorly: far below its IoU on the original set
    assert loop["new_before"] < loop["orig_before"] - 0.2
    assert loop["orig_before"] - loop["orig_after"] <= 0.02
    card = card_path(loop["model"]).read_text(encoding="utf-8")
    assert "## Hand-corrected frames used" in card and str(loop["res"].resolve()) in card
    assert ", ".join(map(str, CORRECTED_FRAMES)) in card and "Synthetic frames mixed in" in card


def test_issue_target_held_apart_iou_rises_by_015(loop):
    assert loop["new_after"] - loop["new_before"] >= 0.15


def test_reprocessing_with_the_new_model_keeps_every_correction(loop, monkeypatch):
    res = loop["res"]
    monkeypatch.setenv("TEM_OPERANDO_DATA_DIR", str(loop["model"].parent.parent))
    # a bare name finds the new model among the user's models
    analyze(loop["rec"], res, AnalyzeOptions(model="light-material", chunk_frames=16), report=False)
    summary = json.loads((res / "summary.json").read_text())
    assert summary["model_sha256"] == sha256(loop["model"])
    assert summary["corrections"]["corrected_frames"] == CORRECTED_FRAMES
    store = ResultStore(res)
    for f, (classes, _) in loop["corrected"].items():
        assert np.array_equal(effective_masks(store, f)[0], classes)
    fr = store.read_table("frames")
    assert fr.loc[fr["frame"].isin(CORRECTED_FRAMES), "corrected"].all()
