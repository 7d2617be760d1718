"""Two-channel segmentation: the recording's first image frame, registered, beside each frame.

Checks the registration against known shifts and the synthetic truth's drift, that a one-channel
model widened to two channels starts out identical, and that the reference travels through
training data (synthetic, shards, annotation sets, results folders), inference (tiling included)
and the pipeline. Tiny models only; the shipped model's science is in ``test_segment_shipped.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

torch = pytest.importorskip("torch")

from tem_operando.errors import TemOperandoError
from tem_operando.segment.datasets import (
    concat,
    generate_shards,
    load_annotation_set,
    load_shards,
    synthetic_frames,
    true_shifts_px,
    write_annotation_set,
)
from tem_operando.segment.reference import network_input, reference_shifts_px, register_reference, shift_reference
from tem_operando.segment.train import TrainConfig, train, with_input_channels

TINY = dict(width=4, depth=2, blocks=1, batch=4, crop=64, steps_per_epoch=6, epochs=2, threads=1)


@pytest.fixture(scope="module")
def data():
    return concat([synthetic_frames(s, 4, size=96)[0] for s in (21, 22, 23)])


@pytest.fixture(scope="module")
def two_channel_model(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "tiny2.pt"
    train(data, out, TrainConfig(seed=1, in_channels=2, **TINY), progress=False, log=lambda *a: None)
    return out


def test_registration_recovers_a_known_subpixel_shift():
    fs, _ = synthetic_frames(5, 1, dose=50.0, size=256)
    ref = fs.frames[0]
    rng = np.random.default_rng(0)
    for shift in [(3.4, -5.2), (-7.0, 0.6), (0.0, 0.0)]:
        moved = rng.poisson(np.clip(ndimage.shift(ref, shift, order=3, mode="nearest"), 0, None)).astype(np.float32)
        got = reference_shifts_px(moved[None], ref)[0]
        assert np.allclose(got, shift, atol=0.25), (shift, got)  # ~0.1–0.2 px at 256²
        out = register_reference(moved[None], ref)[0]
        np.testing.assert_allclose(out, ndimage.shift(ref, got, order=1, mode="nearest"), atol=1e-4)


def test_training_reference_moves_like_the_pipeline_drift():
    # training data shift the first frame by the truth's drift; the pipeline shifts it by its own
    # chained drift estimate: both must agree in sign and size
    from tem_operando.synth import image_series
    from tem_operando.track import estimate_drift

    s = image_series(30, (128, 128), scene="particles", drift_nm_per_s=(3.0, -2.0), dose_e_per_px=50.0, rng=2)
    shifts = true_shifts_px(s)
    assert np.abs(shifts).max() > 5  # the sample did move
    measured = estimate_drift(s.frames)[:, ::-1]  # (dx, dy) → (dy, dx)
    # same sign and size (the chained estimate drifts by up to ~1.5 px over a 50-px path; a flipped sign
    # or swapped axes would be off by the whole path)
    assert (np.abs(measured - shifts) <= 1.0 + 0.05 * np.abs(shifts)).all(), np.c_[shifts, measured]
    fs, s6 = synthetic_frames(3, 4, dose=100.0, size=96, drift_nm_per_s=(3.0, -2.0))
    np.testing.assert_allclose(fs.reference, register_reference(fs.frames, fs.frames[0], shifts_px=true_shifts_px(s6)))


def test_reference_shape_is_checked():
    with pytest.raises(ValueError, match="reference frame shape"):
        register_reference(np.zeros((2, 32, 32)), np.zeros((32, 30)))
    with pytest.raises(ValueError, match="differ from the frames"):
        network_input(np.zeros((2, 32, 32)), np.zeros((3, 32, 32)), 2)


def test_network_input_without_reference_repeats_the_frame_and_warns(data):
    with pytest.warns(UserWarning, match="without a reference frame"):
        x = network_input(data.frames[:2], None, 2)
    assert x.shape == (2, 2, 96, 96)
    np.testing.assert_array_equal(x[:, 0], x[:, 1])
    assert network_input(data.frames[:2], data.frames[0], 1).shape == (2, 1, 96, 96)


def test_widened_model_starts_out_identical(data):
    from tem_operando.segment.network import SegNet

    torch.manual_seed(0)
    one = SegNet(4, 2, 1).eval()
    two = with_input_channels(one, 2).eval()
    assert two.config["in_channels"] == 2
    x = torch.from_numpy(network_input(data.frames[:3], data.frames[0], 2))
    with torch.no_grad():
        a, b = one(x[:, :1]), two(x)
    assert float((a - b).abs().max()) < 1e-5
    with pytest.raises(ValueError, match="cannot drop"):
        with_input_channels(two, 1)


def test_two_channel_model_predicts_with_and_without_reference(two_channel_model, data):
    from tem_operando.segment import load_segmenter
    from tem_operando.segment.modelfile import load_model_file

    assert load_model_file(two_channel_model)["config"]["in_channels"] == 2
    seg = load_segmenter(two_channel_model)
    assert seg.in_channels == 2
    frames = data.frames[:4]
    with_ref = seg.predict(frames, reference=frames[0])
    assert with_ref.classes.shape == frames.shape
    # the reference is used: another one changes the logits
    xa = network_input(frames, frames[0], 2)
    with pytest.warns(UserWarning, match="without a reference frame"):
        xb = network_input(frames, None, 2)
    assert np.abs(seg.logits(xa) - seg.logits(xb)).max() > 1e-4
    with pytest.warns(UserWarning, match="without a reference frame"):
        assert seg.predict(frames).classes.shape == frames.shape  # each frame its own reference
    # a registered stack (n, Y, X) is taken as it is
    regd = register_reference(frames, frames[0])
    np.testing.assert_array_equal(seg.predict(frames, reference=regd).classes, with_ref.classes)
    # tiles carry both channels
    tiled = load_segmenter(two_channel_model, tile=48, overlap=24).predict(frames, reference=frames[0])
    assert np.mean(tiled.classes == with_ref.classes) > 0.97


def test_fine_tuning_a_one_channel_model_to_two_channels(data, tmp_path):
    one = tmp_path / "one.pt"
    train(data, one, TrainConfig(seed=2, **TINY), progress=False, log=lambda *a: None)
    two = tmp_path / "two.pt"
    train(data, two, TrainConfig(seed=2, init=str(one), in_channels=2, **{**TINY, "epochs": 1}),
          progress=False, log=lambda *a: None)
    from tem_operando.segment.modelfile import load_model_file

    assert load_model_file(one)["config"]["in_channels"] == 1
    assert load_model_file(two)["config"]["in_channels"] == 2
    card = (tmp_path / "two.MODEL_CARD.md").read_text()
    assert "in_channels=2" in card and "first image frame" in card


def test_shards_and_annotation_sets_carry_the_reference(tmp_path, data):
    (path,) = generate_shards(tmp_path / "shards", [31, 32], n_frames=3, size=64, progress=False)
    fs = load_shards([path])
    assert fs.reference is not None and fs.reference.shape == fs.frames.shape
    np.testing.assert_allclose(fs.reference[0], fs.frames[0], rtol=1e-2, atol=0.05)  # f16 storage

    sub = data.subset([4, 5, 6])  # one session's frames 0–2
    ann = write_annotation_set(tmp_path / "ann", sub.frames, sub.classes, sub.instances, nm_per_px=1.0,
                               reference=sub.frames[0])
    got = load_annotation_set(ann)
    assert got.reference.shape == sub.frames.shape  # registered onto each frame when read
    np.testing.assert_allclose(got.reference[0], sub.frames[0], atol=1e-3)

    bad = write_annotation_set(tmp_path / "bad", sub.frames, sub.classes, nm_per_px=1.0,
                               reference=np.zeros((5, 5), np.float32))
    with pytest.raises(TemOperandoError, match=r"frames\.npz.*reference"):
        load_annotation_set(bad)

    # mixed with sets without a reference, those frames are their own reference
    plain = write_annotation_set(tmp_path / "plain", sub.frames, sub.classes, nm_per_px=1.0)
    both = concat([load_annotation_set(plain), got])
    np.testing.assert_array_equal(both.reference[:3], sub.frames)


def test_pipeline_gives_two_channel_models_the_first_image_frame(two_channel_model, tmp_path, monkeypatch):
    from tem_operando.pipeline import AnalyzeOptions, analyze
    from tem_operando.results.corrections import export_annotation_set, paint
    from tem_operando.results import ResultStore
    from tem_operando.segment import infer
    from tem_operando.synth import image_series, write_session

    s = image_series(8, (96, 96), scene="particles", rng=4, drift_nm_per_s=(4.0, -3.0), dose_e_per_px=50.0)
    rec = write_session(s, tmp_path / "s.hspy")
    seen = []
    real = infer.NetworkSegmenter.predict

    def spy(self, frames, *, reference=None, probabilities=False):
        seen.append(None if reference is None else np.asarray(reference).copy())
        return real(self, frames, reference=reference, probabilities=probabilities)

    monkeypatch.setattr(infer.NetworkSegmenter, "predict", spy)
    analyze(rec, tmp_path / "res", AnalyzeOptions(model=str(two_channel_model), chunk_frames=3,
                                                  scheduler="sync"), report=False)
    # every chunk, the later ones too, gets the recording's first frame moved by the pipeline's drift
    assert [len(r) for r in seen] == [3, 3, 2]
    got = np.concatenate(seen)
    moved = np.load(tmp_path / "res" / ".work" / "reference_drift.npy")[:, ::-1]  # (dy, dx) of every frame
    true = true_shifts_px(s)
    assert np.abs(true[-1]).max() > 3  # the pipeline's drift follows the sample (as in test_training_reference_…)
    assert (np.abs(moved - true) <= 1.0 + 0.1 * np.abs(true)).all(), np.c_[true, moved]
    np.testing.assert_allclose(got, shift_reference(s.frames[0], moved), atol=1e-4)
    store = ResultStore(tmp_path / "res")
    assert store.read_summary()["status"] == "complete"
    assert store.read_summary()["reference_frame"] == 0

    # the GUI's export carries it too, for retraining
    paint(store, 5, 2, points=[(40.0, 40.0)], radius=4)
    ann = load_annotation_set(export_annotation_set(store, tmp_path / "ann"))
    assert ann.reference.shape == (1, 96, 96)


def test_structure_score_and_the_reference_choice():
    from tem_operando.segment.reference import choose_reference, structure_score
    from tem_operando.synth import image_series

    rng = np.random.default_rng(0)
    flat = rng.poisson(40.0, (128, 128)).astype(np.float32)
    dark = rng.poisson(0.5, (128, 128)).astype(np.float32)  # beam blanked
    s = image_series(3, (128, 128), scene="particles", rng=3, dose_e_per_px=20.0)
    scores = [structure_score(f) for f in (dark, flat, *s.frames)]
    assert scores[0] < 2 and scores[1] < 2, scores
    assert min(scores[2:]) > 5, scores
    assert choose_reference(scores) == 2
    assert choose_reference(scores[2:]) == 0
    assert choose_reference([1.0, 1.1]) == 0  # nothing with structure: the first frame
    with pytest.raises(ValueError):
        choose_reference([])


def test_pipeline_passes_over_blank_first_frames_and_chains_drift_incrementally(two_channel_model, tmp_path):
    from tem_operando.pipeline import AnalyzeOptions, analyze
    from tem_operando.pipeline.analyze import REFERENCE_DRIFT, REFERENCE_STATE, write_reference_drift
    from tem_operando.pipeline.chunks import chunk_ranges
    from tem_operando.results import ResultStore
    from tem_operando.synth import image_series, write_session

    s = image_series(9, (96, 96), scene="particles", rng=4, drift_nm_per_s=(4.0, -3.0), dose_e_per_px=50.0)
    s.frames[:2] = np.random.default_rng(1).poisson(0.3, s.frames[:2].shape)  # the beam was still blanked
    rec = write_session(s, tmp_path / "s.hspy")
    out = tmp_path / "res"
    analyze(rec, out, AnalyzeOptions(model=str(two_channel_model), chunk_frames=3, scheduler="sync"), report=False)
    assert ResultStore(out).read_summary()["reference_frame"] == 2
    work = out / ".work"
    whole = np.load(work / REFERENCE_DRIFT)
    assert whole.shape == (9, 2) and np.isfinite(whole).all()
    # chained again chunk by chunk (as --follow does): the same drift, the same reference
    (work / REFERENCE_DRIFT).unlink()
    (work / REFERENCE_STATE).unlink()
    ranges = chunk_ranges(9, 3)
    from tem_operando.io import open_recording

    def read_frames(index):
        with open_recording(rec) as r:
            return np.stack([r.frame(int(i)) for i in index])

    for k in range(1, len(ranges) + 1):
        state = write_reference_drift(out, ranges[:k], read_frames)
        assert state["chained_to"] == ranges[k - 1][1]
    np.testing.assert_allclose(np.load(work / REFERENCE_DRIFT), whole)
    assert state["frame"] == 2
