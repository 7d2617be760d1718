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
from tem_operando.segment.reference import (
    mean_reference,
    network_input,
    reference_run,
    reference_shifts_px,
    refine_shifts,
    register_reference,
    shift_reference,
)
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


def test_a_frame_with_nothing_to_register_keeps_the_shift_before_it():
    """A blanked beam or a frame of noise alone has no peak to find: registered to the reference
    directly it landed 50–90 px off; it now keeps the shift of the frame before it (a blank first frame:
    the next registered frame's), as the drift pass holds the last drift. The other frames are registered
    as before."""
    from tem_operando.synth import image_series

    s = image_series(10, (160, 160), scene="mixed", rng=3, dose_e_per_px=20, drift_nm_per_s=(2.0, -1.5),
                     reference_frames=4)
    frames = s.frames.copy()
    rng = np.random.default_rng(1)
    frames[6] = rng.poisson(20, frames[6].shape)  # the beam's flat illumination, no sample
    frames[0] = rng.poisson(20, frames[0].shape)
    got = reference_shifts_px(frames, s.reference)
    ok = [k for k in range(10) if k not in (0, 6)]
    np.testing.assert_array_equal(got[ok], reference_shifts_px(s.frames[ok], s.reference))
    # (the objects swell and react in this scene, which pulls a registration against a reference 4.5 s
    # old by up to ~2 px: the drift pass registers frame to frame instead)
    assert np.abs(got[ok] - true_shifts_px(s)[ok]).max() < 2.5
    np.testing.assert_array_equal(got[6], got[5])
    np.testing.assert_array_equal(got[0], got[1])
    blank = np.stack([rng.poisson(20, frames[0].shape) for _ in range(3)]).astype(float)
    np.testing.assert_array_equal(reference_shifts_px(blank, s.reference), 0.0)


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
    np.testing.assert_allclose(fs.reference, register_reference(fs.frames, s6.reference, shifts_px=true_shifts_px(s6)))


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


def test_refined_model_starts_out_identical_and_round_trips(data, tmp_path):
    """A full-resolution refinement added to a model changes nothing until trained; it survives a
    model file, BatchNorm folding, odd frame sizes, and it learns: a few steps move its output."""
    from tem_operando.segment.modelfile import build_from_file, load_model_file, save_model_file
    from tem_operando.segment.network import SegNet, fuse_for_inference

    torch.manual_seed(0)
    two = SegNet(4, 2, 1, in_channels=2).eval()
    ref = with_input_channels(two, 2, refine=4).eval()
    assert ref.config == {"width": 4, "depth": 2, "blocks": 1, "in_channels": 2, "refine": 4}
    assert "refine" not in two.config  # model files without a refinement keep their config
    x = torch.from_numpy(network_input(data.frames[:2, :45, :61], data.frames[0, :45, :61], 2))
    with torch.no_grad():
        assert float((two(x) - ref(x)).abs().max()) == 0.0
    with pytest.raises(ValueError, match="already has a refinement"):
        with_input_channels(ref, 2, refine=8)
    for bad in (-1, 2.5, True):
        with pytest.raises(ValueError, match="refine must be"):
            SegNet(4, 2, 1, in_channels=2, refine=bad)
    # a few steps on the reacted class move the refined output away from the trunk's
    ref.train()
    opt = torch.optim.Adam([p for n, p in ref.named_parameters() if n.startswith(("fine.", "refine."))], lr=1e-2)
    for _ in range(3):
        loss = -ref(x)[:, 2].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    ref.eval()
    with torch.no_grad():
        moved = ref(x)
        assert float((moved - two(x)).abs().max()) > 1e-3
    save_model_file(tmp_path / "r.pt", ref, name="r")
    back = build_from_file(load_model_file(tmp_path / "r.pt", verify=False), "r").eval()
    assert back.config["refine"] == 4
    with torch.no_grad():
        assert float((back(x) - moved).abs().max()) < 1e-5
        assert float((fuse_for_inference(back)(x) - moved).abs().max()) < 1e-4


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
    want, _ = synthetic_frames(31, 3, size=64)  # the session's own averaged reference, moved onto each frame
    np.testing.assert_allclose(fs.reference[:3], want.reference, rtol=1e-2, atol=0.05)  # f16 storage

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


def test_pipeline_gives_two_channel_models_the_averaged_first_image_frames(two_channel_model, tmp_path, monkeypatch):
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
    events = []
    analyze(rec, tmp_path / "res", AnalyzeOptions(model=str(two_channel_model), chunk_frames=3,
                                                  scheduler="sync"), report=False,
            progress=lambda k, n: events.append(("frames", k, n)),
            drift_progress=lambda k, n: events.append(("drift", k, n)))
    # the drift pass reports its own progress, all of it before the first chunk is segmented
    assert [e for e in events if e[0] == "drift"] == [("drift", 3, 8), ("drift", 6, 8), ("drift", 8, 8)]
    assert [e for e in events if e[1] > 0][:3] == [("drift", 3, 8), ("drift", 6, 8), ("drift", 8, 8)]
    assert events[-1] == ("frames", 8, 8)
    # every chunk, the later ones too, gets the recording's first frame moved by the pipeline's drift
    assert [len(r) for r in seen] == [3, 3, 2]
    got = np.concatenate(seen)
    moved = np.load(tmp_path / "res" / ".work" / "reference_drift.npy")[:, ::-1]  # (dy, dx) of every frame
    true = true_shifts_px(s)
    assert np.abs(true[-1]).max() > 3  # the pipeline's drift follows the sample (as in test_training_reference_…)
    assert (np.abs(moved - true) <= 1.0 + 0.1 * np.abs(true)).all(), np.c_[true, moved]
    # the reference: frames 0 and 1 (its first second at 2 frames/s) moved back onto frame 0 and averaged
    # (two frames: not re-registered, REFINE_MIN_FRAMES)
    first = mean_reference(s.frames[:2], moved[:2])
    np.testing.assert_allclose(got, shift_reference(first, moved), atol=1e-3)
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
    summary = ResultStore(out).read_summary()
    assert summary["reference_frame"] == 2
    # 2 frames/s: the reference averages the frames of its first second (t = 1.0, 1.5 s), not t = 2.0 s
    assert summary["reference_run"] == [2, 3]
    # an annotation set exported from these results carries the same averaged reference
    from tem_operando.results.corrections import export_annotation_set

    ann = load_annotation_set(export_annotation_set(ResultStore(out), tmp_path / "ann", frames=[5, 7]))
    frames_tab = ResultStore(out).read_table("frames").set_index("frame")
    d = frames_tab[["drift_y_nm", "drift_x_nm"]].to_numpy(float) / s.nm_per_px
    d = d - d[2]
    want = shift_reference(mean_reference(s.frames[[2, 3]], d[[2, 3]]), d[[5, 7]])
    np.testing.assert_allclose(ann.reference, want, atol=1e-3)
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
    # the run is fixed by the first call (every chunk of a run gets the same reference): with chunks of 3
    # frames it holds only what the first chunk had (--follow analyses full chunks: 32 frames by default)
    assert state["run"] == [2]

    def read_times(index):
        return np.asarray(index, float) / 2.0  # 2 frames/s

    for k_max, run in ((8, [2, 3]), (1, [2])):  # --reference-frames 1: the first frame alone
        (work / REFERENCE_STATE).unlink()
        state = write_reference_drift(out, ranges, read_frames, read_times, reference_frames=k_max)
        assert state["run"] == run
    # without times (an uncalibrated time axis) the count alone decides
    (work / REFERENCE_STATE).unlink()
    assert write_reference_drift(out, ranges, read_frames, reference_frames=4)["run"] == [2, 3, 4, 5]


def test_reference_run_counts_the_frames_of_the_first_second():
    assert reference_run(np.arange(30) / 25.0) == 8  # a fast camera: at most 8
    assert reference_run(np.arange(30) / 4.0) == 4  # 4 frames/s: t = 0, 0.25, 0.5, 0.75 s
    assert reference_run(np.array([3.0, 5.0, 6.0])) == 1  # one frame alone
    assert reference_run(np.full(12, np.nan)) == 8  # no time axis: the count alone
    assert reference_run(np.array([0.0, 0.5, np.nan, 1.5, 2.0])) == 2  # a frame of unknown time ends the run
    assert reference_run(np.array([0.0, 0.1, 3.0, 0.2])) == 2  # the run is the first frames, in order
    assert reference_run(np.arange(3) / 100.0) == 3
    assert reference_run(np.zeros(0)) == 0
    assert reference_run(np.arange(30) / 25.0, n_max=1) == 1


def test_mean_reference_moves_drifted_frames_back_and_averages_their_noise():
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[:96, :96]
    scene = 50.0 - 30.0 * (((yy - 40.0) ** 2 + (xx - 52.0) ** 2) < 15.0 ** 2)
    scene = ndimage.gaussian_filter(scene, 1.0)
    shifts = np.array([[0.0, 0.0], [1.5, -2.25], [3.0, -4.5], [4.5, -6.75], [6.0, -9.0], [7.5, -11.25],
                       [9.0, -13.5], [10.5, -15.75]])  # (dy, dx) the sample moved since the first frame
    frames = np.stack([ndimage.shift(scene, s, order=1, mode="nearest") for s in shifts])
    noisy = rng.poisson(frames).astype(np.float32)
    ref = mean_reference(noisy, shifts)
    inner = (slice(20, 76), slice(20, 76))
    err_mean = float(np.std((ref - scene)[inner]))
    err_one = float(np.std((noisy[0] - scene)[inner]))
    assert err_mean < 0.5 * err_one  # 8 frames: noise ~1/sqrt(8) (linear interpolation smooths a bit more)
    # aligned with the first frame: the disc's centre of mass where the first frame has it
    cy, cx = ndimage.center_of_mass(ndimage.gaussian_filter(ref, 1.5)[inner] < 35)
    ty, tx = ndimage.center_of_mass(scene[inner] < 35)
    assert abs(cy - ty) < 0.3 and abs(cx - tx) < 0.3
    # without its shifts the average is smeared along the drift
    smeared = mean_reference(noisy)
    assert np.std((smeared - scene)[inner]) > 2 * err_mean
    np.testing.assert_array_equal(mean_reference(noisy[:1], shifts[:1]), noisy[0])
    with pytest.raises(ValueError):
        mean_reference(np.zeros((0, 8, 8)))


def test_image_series_reference_averages_the_first_frame_without_changing_the_session():
    from tem_operando.synth import image_series

    kw = dict(scene="particles", rng=21, dose_e_per_px=5.0)
    plain = image_series(4, (96, 96), **kw)
    assert plain.reference is None
    one = image_series(4, (96, 96), reference_frames=1, **kw)
    np.testing.assert_array_equal(one.reference, one.frames[0])
    many = image_series(4, (96, 96), reference_frames=16, **kw)
    np.testing.assert_array_equal(many.frames, plain.frames)  # the frames do not depend on k
    np.testing.assert_array_equal(many.classes, plain.classes)
    assert many.params["reference_frames"] == 16
    clean = image_series(4, (96, 96), **{**kw, "dose_e_per_px": 5.0e5}).frames[0] / 1e5  # per 5 e-/px
    err16 = np.std(many.reference - clean)
    err1 = np.std(one.reference - clean)
    assert err16 < 0.4 * err1  # 16 exposures: ~1/4 of the noise
    with pytest.raises(ValueError, match="reference_frames"):
        image_series(2, (32, 32), reference_frames=-1)


def test_synthetic_training_frames_average_a_drawn_number_of_first_exposures():
    from tem_operando.segment.datasets import training_reference_frames

    ks = [training_reference_frames(s) for s in range(400)]
    assert min(ks) == 1 and max(ks) == 16 and 3 <= np.median(ks) <= 5  # log-uniform 1-16
    fs, s = synthetic_frames(7, 3, size=64, reference_frames=4)
    assert s.params["reference_frames"] == 4
    np.testing.assert_allclose(fs.reference, register_reference(fs.frames, s.reference, shifts_px=true_shifts_px(s)))


def test_aged_reference_shows_the_pristine_scene_with_its_bend_contours_elsewhere():
    """``reference_age_s``: the reference is the scene Δ s before frame 0 (objects pristine, at frame 0's
    place), so inside a pristine particle the bend contours differ from frame 0's; outside they do not."""
    from tem_operando.synth import image_series
    from tem_operando.synth.images import ParticleSpec

    p = ParticleSpec(track_id=1, center_nm=(48.0, 48.0), diameter0_nm=40.0, onset_s=0.5, swelling_rate_nm_s=0.5)
    kw = dict(objects=[p], rng=3, dose_e_per_px=1e6, background="vacuum", bend_contour_amp=0.5,
              bend_contour_speed_nm_s=2.0, thickness_fringe_amp=0.0, flicker=0.0)
    fresh = image_series(2, (96, 96), reference_frames=2, **kw)
    aged = image_series(2, (96, 96), reference_frames=2, reference_age_s=10.0, **kw)
    np.testing.assert_array_equal(aged.frames, fresh.frames)  # the session itself does not change
    assert aged.params["reference_age_s"] == 10.0
    yy, xx = np.mgrid[:96, :96]
    r = np.hypot(yy - 47.5, xx - 47.5)
    inside, outside = r < 15, r > 26
    rel = np.abs(aged.reference / fresh.reference - 1)
    assert np.median(rel[outside]) < 0.01  # background: the same up to shot noise at 10⁶ e⁻/px
    assert np.percentile(rel[inside], 90) > 0.1  # the contours moved 20 nm
    assert (fresh.classes[0] == 1).any() and not (fresh.classes[0] == 2).any()  # pristine at t = 0 and −Δ
    for bad in (-1.0, float("nan"), "soon", "5", True):
        with pytest.raises(ValueError, match="reference_age_s"):
            image_series(2, (32, 32), reference_frames=1, reference_age_s=bad)
    with pytest.raises(ValueError, match="reference_age_s needs reference_frames"):
        image_series(2, (32, 32), reference_age_s=3.0)


def test_synthetic_frames_reference_misplaced_by_the_jitter_asked_for():
    from tem_operando.segment.datasets import training_reference_age_s, training_reference_jitter_px

    ages = np.array([training_reference_age_s(s) for s in range(600)])
    assert 0.25 < np.mean(ages == 0) < 0.42 and ages.max() <= 120 and ages[ages > 0].min() >= 2
    jit = np.array([training_reference_jitter_px(s) for s in range(600)])
    assert 0.25 < np.mean(jit == 0) < 0.42 and jit.max() <= 1.0 and jit[jit > 0].min() >= 0.2
    fs, s = synthetic_frames(7, 3, size=64, reference_frames=4, dose=1e5)
    off, _ = synthetic_frames(7, 3, size=64, reference_frames=4, dose=1e5, reference_jitter_px=0.7)
    np.testing.assert_array_equal(off.frames, fs.frames)
    # how far each reference sits off the place the true drift gives it (dy, dx px)
    off_px = reference_shifts_px(off.reference, s.reference) - true_shifts_px(s)
    on_px = reference_shifts_px(fs.reference, s.reference) - true_shifts_px(s)
    assert np.abs(on_px).max() < 0.15, on_px
    assert 0.3 < np.abs(off_px).max() < 2.5 and np.abs(off_px - on_px).max() > 0.3, off_px
    for bad in (-0.5, True, "1", None):
        with pytest.raises(ValueError, match="reference_jitter_px"):
            synthetic_frames(7, 1, size=64, reference_jitter_px=bad)


def test_synthetic_recording_on_disk_gets_the_pipelines_averaged_reference(tmp_path):
    from tem_operando.segment.datasets import load_synthetic_session
    from tem_operando.synth import image_series, write_session

    s = image_series(10, (64, 64), scene="particles", rng=5, fps=4.0, drift_nm_per_s=(3.0, 2.0), dose_e_per_px=20.0)
    path = write_session(s, tmp_path / "s.hspy")
    fs, _ = load_synthetic_session(path, max_frames=4)
    shifts = true_shifts_px(s)
    first = mean_reference(s.frames[:4], shifts[:4])  # 4 frames/s: t = 0, 0.25, 0.5, 0.75 s
    idx = [int(x.rsplit(":", 1)[1]) for x in fs.source]
    np.testing.assert_allclose(fs.reference, register_reference(fs.frames, first, shifts_px=shifts[idx]), atol=1e-3)


def test_reference_frames_option_reaches_the_analysis_and_is_checked():
    from tem_operando.cli import build_parser
    from tem_operando.commands.analyze import options_from_args

    parser = build_parser()
    opts = options_from_args(parser.parse_args(["analyze", "in.hspy", "--out", "o", "--reference-frames", "3"]))
    assert opts.reference_frames == 3 and opts.analysis_params()["reference_frames"] == 3  # in summary.json
    assert options_from_args(parser.parse_args(["analyze", "in.hspy", "--out", "o"])).reference_frames == 8
    with pytest.raises(SystemExit):
        parser.parse_args(["analyze", "in.hspy", "--out", "o", "--reference-frames", "0"])


def _chunked_drift(frames: np.ndarray, chunk: int) -> np.ndarray:
    """(dy, dx) as the pipeline's drift pass chains it: each chunk registered to the last frame before it."""
    from tem_operando.track import estimate_drift

    out = np.zeros((len(frames), 2))
    for s in range(0, len(frames), chunk):
        if s == 0:
            out[:chunk] = estimate_drift(frames[:chunk])
        else:
            d = estimate_drift(np.concatenate([frames[s - 1:s], frames[s:s + chunk]]))
            out[s:s + chunk] = out[s - 1] + d[1:]
    return out[:, ::-1]


def test_refine_shifts_lands_closer_to_the_true_drift_than_the_chained_drift_pass():
    """A fast camera at 10 e⁻/px: the chained drift pass inherits each anchor frame's error; registering
    every frame to the averaged reference instead does not (ground truth: the generator's drift)."""
    from tem_operando.synth import image_series

    before, after = [], []
    for seed in range(6):
        s = image_series(40, (128, 128), scene="particles", rng=seed, fps=25.0, dose_e_per_px=10.0,
                         drift_nm_per_s=None)
        truth = true_shifts_px(s)
        prior = _chunked_drift(s.frames, 8)
        k = reference_run(s.time_s)
        assert k == 8
        refined, took = refine_shifts(s.frames, mean_reference(s.frames[:k], prior[:k]), prior)
        assert took.all()
        rms = [float(np.sqrt(np.mean(np.sum((d - truth) ** 2, 1)))) for d in (prior, refined)]
        assert rms[1] <= rms[0] + 0.1, (seed, rms)
        before.append(rms[0])
        after.append(rms[1])
    assert np.mean(after) < 0.8 * np.mean(before), (before, after)  # 1.06 → 0.65 px when written


def test_refine_shifts_registers_a_frame_too_noisy_alone_with_its_neighbours():
    """A liquid cell at 10 e⁻/px, 25 frames/s: most single frames have no peak against the reference, and
    the drift pass took one chance peak for a 3-px jump that stays in every later frame. Registered with
    its neighbours (moved onto it by the drift pass' shifts), a frame finds the reference again."""
    from tem_operando.synth import image_series

    alone, together = [], []
    for seed in range(3):
        s = image_series(40, (128, 128), scene="particles", rng=seed, fps=25.0, dose_e_per_px=10.0,
                         background="liquid", drift_nm_per_s=None, n_bubbles=0)
        truth = true_shifts_px(s)
        prior = truth.copy()
        prior[20:] += [2.5, -2.0]  # one chance peak taken for a jump
        reference = mean_reference(s.frames[:8], truth[:8])
        r0, took0 = refine_shifts(s.frames, reference, prior, neighbours=0)
        r2, took2 = refine_shifts(s.frames, reference, prior, time_s=s.time_s)
        assert took2.sum() > took0.sum()
        rms = [float(np.sqrt(np.mean(np.sum((d[20:] - truth[20:]) ** 2, 1)))) for d in (r0, r2)]
        alone.append(rms[0])
        together.append(rms[1])
    assert np.mean(together) < 0.75 * np.mean(alone), (alone, together)  # 3.1 → 2.0 px when written
    # neighbours farther than neighbour_s are not averaged: at 2 frames/s none are within 0.25 s
    s = image_series(6, (96, 96), scene="particles", rng=1, fps=2.0, dose_e_per_px=2.0, background="liquid",
                     n_bubbles=0)
    truth = true_shifts_px(s)
    slow = refine_shifts(s.frames, s.frames[0], truth, time_s=s.time_s)
    np.testing.assert_array_equal(slow[0], refine_shifts(s.frames, s.frames[0], truth, neighbours=0)[0])


def test_neighbour_mean_moves_each_neighbour_onto_the_frame():
    """The neighbours of a frame are moved onto it by the difference of their shifts: with a fast drift
    (3–4 px per frame) their mean registers onto the frame itself within a fraction of a pixel."""
    from tem_operando._registration import SIGMA_HI_PX, Bands, edge_window, register_bands
    from tem_operando.segment.reference import _neighbour_mean
    from tem_operando.synth import image_series

    s = image_series(7, (128, 128), scene="particles", rng=2, fps=25.0, dose_e_per_px=200.0,
                     drift_nm_per_s=(100.0, -75.0), background="carbon")
    truth = true_shifts_px(s)
    assert np.abs(np.diff(truth, axis=0)).min() > 2.0
    w = edge_window(s.frames.shape[1:])
    mean = _neighbour_mean(s.frames, truth, s.time_s, 3, 3, 1.0)
    shift, _ = register_bands(Bands(s.frames[3], SIGMA_HI_PX, w), Bands(mean, SIGMA_HI_PX, w), 10)
    assert np.abs(shift).max() < 0.3, shift
    assert _neighbour_mean(s.frames, truth, s.time_s, 3, 3, 0.01) is None  # none within 0.01 s
    assert _neighbour_mean(s.frames, truth, None, 3, 0, 1.0) is None  # no neighbours asked for


def test_refine_shifts_keeps_the_drift_pass_where_the_reference_cannot_tell():
    from tem_operando.synth import image_series

    s = image_series(4, (96, 96), scene="particles", rng=3, dose_e_per_px=50.0, drift_nm_per_s=(3.0, 2.0))
    truth = true_shifts_px(s)
    frames = s.frames.copy()
    frames[2] = 100.0  # the beam blanked: nothing to register
    prior = truth + np.array([[0, 0], [0.5, -0.5], [0.7, 0.2], [30.0, 0.0]])  # the last one 30 px off: > 0.1 × 96
    refined, took = refine_shifts(frames, s.frames[0], prior, neighbours=0)  # each frame alone
    assert took.tolist() == [True, True, False, False]
    np.testing.assert_array_equal(refined[2:], prior[2:])
    assert np.abs(refined[:2] - truth[:2]).max() < 0.5
    with pytest.raises(ValueError, match="shape"):
        refine_shifts(frames, s.frames[0][:50], prior)
    assert not refine_shifts(frames, s.frames[0], np.full_like(prior, np.nan))[1].any()  # no prior: kept


def test_pipeline_re_registers_a_fast_cameras_frames_to_the_averaged_reference(two_channel_model, tmp_path,
                                                                                monkeypatch):
    """At 25 frames/s eight frames are averaged into the reference: each analysed frame's drift is then
    re-measured against it (refine_shifts), and the objects and frames.csv carry that drift."""
    from tem_operando.pipeline import AnalyzeOptions, analyze
    from tem_operando.pipeline.analyze import REFINE_MIN_FRAMES
    from tem_operando.results import ResultStore
    from tem_operando.segment import infer
    from tem_operando.synth import image_series, write_session

    s = image_series(12, (96, 96), scene="particles", rng=4, fps=25.0, drift_nm_per_s=(40.0, -30.0),
                     dose_e_per_px=20.0)
    rec = write_session(s, tmp_path / "s.hspy")
    seen = []
    real = infer.NetworkSegmenter.predict

    def spy(self, frames, *, reference=None, probabilities=False):
        seen.append(np.asarray(reference).copy())
        return real(self, frames, reference=reference, probabilities=probabilities)

    monkeypatch.setattr(infer.NetworkSegmenter, "predict", spy)
    analyze(rec, tmp_path / "res", AnalyzeOptions(model=str(two_channel_model), chunk_frames=5, scheduler="sync"),
            report=False)
    store = ResultStore(tmp_path / "res")
    assert len(store.read_summary()["reference_run"]) == 8 >= REFINE_MIN_FRAMES
    moved = np.load(tmp_path / "res" / ".work" / "reference_drift.npy")[:, ::-1]  # the drift pass', (dy, dx)
    first = mean_reference(s.frames[:8], moved[:8])
    chunks = [slice(a, a + 5) for a in range(0, 12, 5)]  # as the pipeline: chunk by chunk, with the frames' times
    parts = [refine_shifts(s.frames[c], first, moved[c], time_s=s.time_s[c]) for c in chunks]
    refined, took = np.concatenate([r for r, _ in parts]), np.concatenate([k for _, k in parts])
    assert took.all()
    true = true_shifts_px(s)
    assert np.abs(true[-1]).max() > 3 and (np.abs(refined - true) <= 1.0 + 0.1 * np.abs(true)).all()
    np.testing.assert_allclose(np.concatenate(seen), shift_reference(first, refined), atol=1e-3)
    frames_csv = store.read_table("frames")
    drift = frames_csv[["drift_y_nm", "drift_x_nm"]].to_numpy() / s.nm_per_px
    np.testing.assert_allclose(drift, refined - refined[0] + moved[0], atol=1e-4)  # 0 on the first frame
    assert np.abs(drift[0]).max() < 1e-9 and np.abs(refined[0] - moved[0]).max() > 0.01  # a first frame's fix to undo
    # objects.csv: the positions in the masks less frames.csv's drift
    from tem_operando.track import measure_objects

    classes, instances = store.read_masks()
    raw = measure_objects(classes, instances, frame=np.arange(12), time_s=s.time_s, nm_per_px=s.nm_per_px,
                          drift_nm=np.zeros((12, 2)))
    both = store.read_table("objects").merge(raw, on=["frame", "label"], suffixes=("", "_raw"))
    assert len(both) == len(raw) > 12
    d = frames_csv.set_index("frame").loc[both["frame"], ["drift_x_nm", "drift_y_nm"]].to_numpy()
    np.testing.assert_allclose(both["x_nm"], both["x_nm_raw"] - d[:, 0], atol=1e-6)
    np.testing.assert_allclose(both["y_nm"], both["y_nm_raw"] - d[:, 1], atol=1e-6)


@pytest.mark.parametrize("finished_refined", [True, False])
def test_a_resumed_run_keeps_one_drift_estimate_throughout(two_channel_model, tmp_path, finished_refined):
    """A run whose reference was chosen by an older version (no ``refine`` in .work/reference.json) and
    resumed: its remaining chunks re-measure the drift exactly when its finished ones did (their
    image_frames.csv has the corrections' columns) — no step where the resume began."""
    import json
    import shutil

    import pandas as pd

    from tem_operando.pipeline import AnalyzeOptions, analyze
    from tem_operando.synth import image_series, write_session

    s = image_series(12, (96, 96), scene="particles", rng=4, fps=25.0, drift_nm_per_s=(40.0, -30.0),
                     dose_e_per_px=20.0)
    rec = write_session(s, tmp_path / "s.hspy")
    out = tmp_path / "res"
    opts = AnalyzeOptions(model=str(two_channel_model), chunk_frames=5, scheduler="sync")
    analyze(rec, out, opts, report=False)
    work = out / ".work"

    def fixes(chunk: str) -> np.ndarray:
        return pd.read_csv(work / chunk / "image_frames.csv")[["drift_fix_x_px", "drift_fix_y_px"]].to_numpy()

    last = "chunk_000000010_000000012"
    assert np.abs(fixes(last)).max() > 0  # this version re-measures
    state = json.loads((work / "reference.json").read_text())
    del state["refine"]  # as an older version wrote it
    (work / "reference.json").write_text(json.dumps(state))
    if not finished_refined:  # a version before re-measuring: no corrections' columns
        for c in ("chunk_000000000_000000005", "chunk_000000005_000000010"):
            t = pd.read_csv(work / c / "image_frames.csv")
            t.drop(columns=["drift_fix_x_px", "drift_fix_y_px"]).to_csv(work / c / "image_frames.csv", index=False)
    shutil.rmtree(work / last)  # the chunk left when it stopped
    analyze(rec, out, opts, resume=True, report=False)
    assert (np.abs(fixes(last)).max() > 0) == finished_refined
    assert json.loads((work / "reference.json").read_text())["refine"] == finished_refined


def test_drift_fixes_of_skipped_frames_are_interpolated_and_the_first_frames_is_zero():
    import pandas as pd

    from tem_operando.pipeline.analyze import _drift_fixes

    t = pd.DataFrame({"frame": [7, 3, 5, 9, 11], "analysed": [False, True, True, True, False],
                      "drift_fix_x_px": [0.0, 1.0, 2.0, 4.0, 0.0], "drift_fix_y_px": [0.0, -1.0, -1.0, -3.0, np.nan]})
    fixes, first = _drift_fixes(t)
    assert fixes["frame"].tolist() == [3, 5, 7, 9, 11]
    np.testing.assert_allclose(first, [1.0, -1.0])
    np.testing.assert_allclose(fixes["drift_fix_x_px"], [0.0, 1.0, 2.0, 3.0, 3.0])  # 7: between 5 and 9; 11: 9's
    np.testing.assert_allclose(fixes["drift_fix_y_px"], [0.0, 0.0, -1.0, -2.0, -2.0])
    # a skipped first image frame takes the first analysed one's correction (then 0 after subtracting it)
    t2 = pd.concat([pd.DataFrame({"frame": [1], "analysed": [False], "drift_fix_x_px": [0.0],
                                  "drift_fix_y_px": [0.0]}), t])
    fixes2, first2 = _drift_fixes(t2)
    np.testing.assert_allclose(first2, [1.0, -1.0])
    np.testing.assert_allclose(fixes2["drift_fix_x_px"], [0.0, 0.0, 1.0, 2.0, 3.0, 3.0])
    # an analysed frame whose chunk wrote no correction (NaN) was measured with 0: it is not interpolated over
    t3 = t.assign(drift_fix_x_px=[0.0, 1.0, np.nan, 4.0, 0.0])
    np.testing.assert_allclose(_drift_fixes(t3)[0]["drift_fix_x_px"], [0.0, -1.0, 1.0, 3.0, 3.0])
