"""Segmentation: shapes, tiling, determinism, training, model files, baseline, CLI.

Everything here uses tiny models trained in seconds; the shipped model's science check is in
``test_segment_shipped.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

torch = pytest.importorskip("torch")

from tem_operando.errors import TemOperandoError
from tem_operando.segment.datasets import (
    concat,
    load_annotation_set,
    synthetic_frames,
    write_annotation_set,
)
from tem_operando.segment.modelfile import ModelFileError, load_model_file, save_model_file
from tem_operando.segment.train import TrainConfig, iou, train

TINY = dict(width=4, depth=2, blocks=1, batch=4, crop=64, steps_per_epoch=6, epochs=2, threads=1)


@pytest.fixture(scope="module")
def small_data():
    return concat([synthetic_frames(s, 4, size=96)[0] for s in (11, 12, 13)])


@pytest.fixture(scope="module")
def tiny_model(small_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "tiny.pt"
    train(small_data, out, TrainConfig(seed=3, **TINY), progress=False, log=lambda *a: None)
    return out


def _seg(path, **kw):
    from tem_operando.segment import load_segmenter

    return load_segmenter(path, **kw)


# -- shapes and tiling ---------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 37, 53), (3, 64, 64), (2, 17, 101)])
def test_any_frame_size(tiny_model, shape):
    frames = np.random.default_rng(0).poisson(10, size=shape).astype(np.float32)
    out = _seg(tiny_model).predict(frames)
    assert out.classes.shape == shape and out.classes.dtype == np.uint8
    assert out.instances.shape == shape and out.instances.dtype == np.uint32
    assert out.confidence.shape == (shape[0],) and np.all((out.confidence >= 0) & (out.confidence <= 1))
    assert set(np.unique(out.classes)) <= {0, 1, 2}
    # instances and classes agree: every object pixel has a label and vice versa
    assert np.array_equal(out.instances > 0, out.classes > 0)


def test_single_frame_and_bad_dims(tiny_model):
    seg = _seg(tiny_model)
    frame = np.full((40, 40), 10.0, np.float32)
    assert seg.predict(frame).classes.shape == (1, 40, 40)
    with pytest.raises(ValueError, match="frames must be"):
        seg.predict(np.zeros((2, 2, 8, 8)))


def test_tiling_matches_untiled(tiny_model, small_data):
    f = small_data.frames
    frames = np.concatenate([np.concatenate([f[0:2], f[4:6]], 2), np.concatenate([f[8:10], f[1:3]], 2)], 1)
    frames = frames[:, :181, :170]  # two 181×170 frames, tiled as 3×3 tiles of 96 px
    whole = _seg(tiny_model, tile=512)
    tiled = _seg(tiny_model, tile=96, overlap=48)
    from tem_operando.segment.normalise import normalise

    xn = normalise(frames)[:, None]
    a, b = whole.logits(xn), tiled.logits(xn)
    assert a.shape == b.shape
    # blended tiles reproduce the whole-frame logits closely: no seams
    assert np.mean(np.abs(a - b)) < 0.05 * np.mean(np.abs(a)) + 1e-3
    agree = np.mean(whole.predict(frames).classes == tiled.predict(frames).classes)
    assert agree > 0.98


def test_eager_and_optimised_agree(tiny_model, small_data):
    frames = small_data.frames[:3]
    a = _seg(tiny_model, optimise="eager").predict(frames, probabilities=True)
    b = _seg(tiny_model, optimise="jit").predict(frames, probabilities=True)
    assert np.allclose(a.probabilities.astype(float), b.probabilities.astype(float), atol=2e-2)
    assert np.mean(a.classes == b.classes) > 0.99


def test_working_resolution(tiny_model, small_data):
    out = _seg(tiny_model, scale=0.5).predict(small_data.frames[:2])
    assert out.classes.shape == small_data.frames[:2].shape


def test_prediction_is_deterministic(tiny_model, small_data):
    seg = _seg(tiny_model)
    a, b = seg.predict(small_data.frames[:3]), seg.predict(small_data.frames[:3])
    assert np.array_equal(a.classes, b.classes) and np.array_equal(a.instances, b.instances)
    assert np.array_equal(a.confidence, b.confidence)


def test_normalisation_ignores_gain_and_offset():
    from tem_operando.segment.normalise import normalise

    f = np.random.default_rng(1).poisson(20, size=(64, 64)).astype(np.float32)
    assert np.allclose(normalise(f), normalise(3.0 * f + 100.0), atol=1e-4)


def test_detect_contrast():
    from tem_operando.segment.normalise import detect_contrast

    _, bf = synthetic_frames(21, 1, dose=50, contrast="bright-field", scene="particles", background="carbon")
    _, df = synthetic_frames(21, 1, dose=50, contrast="dark-field", scene="particles", background="carbon")
    assert detect_contrast(bf.frames[0]) == "bright-field"
    assert detect_contrast(df.frames[0]) == "dark-field"


# -- training ------------------------------------------------------------------------------------


def test_tiny_training_lowers_the_loss(small_data, tmp_path):
    from tem_operando.segment.network import SegNet
    from tem_operando.segment.normalise import normalise
    from tem_operando.segment.train import boundary_target, loss_fn

    x = torch.from_numpy(normalise(small_data.frames[:6]))[:, None]
    c = torch.from_numpy(small_data.classes[:6].astype(np.int64))
    s = torch.from_numpy(boundary_target(small_data.instances[:6]).astype(np.float32))
    torch.manual_seed(0)
    model = SegNet(4, 2, 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = loss_fn(model(x), c, s)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_refined_model_trains_loads_and_segments(small_data, tmp_path, capsys):
    out = tmp_path / "refined.pt"
    train(small_data, out, TrainConfig(seed=3, refine=4, **TINY), progress=False, log=lambda *a: None)
    assert load_model_file(out)["config"]["refine"] == 4
    assert "refine=4" in out.with_name("refined.MODEL_CARD.md").read_text()
    res = _seg(out).predict(small_data.frames[:2, :47, :59])
    assert res.classes.shape == (2, 47, 59)
    # fine-tuning keeps the refinement; a different one is refused, also by `tem-operando train`
    with pytest.raises(ValueError, match="already has a refinement"):
        train(small_data, tmp_path / "f.pt", TrainConfig(seed=3, refine=8, init=str(out), **TINY),
              progress=False, log=lambda *a: None)
    from tem_operando.cli import main

    for bad, why in ((["--refine", "-1"], "refine must be"), (["--refine", "8", "--from", str(out)], "already has")):
        capsys.readouterr()
        assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "g.pt"), *bad]) == 2
        assert why in capsys.readouterr().err and not (tmp_path / "g.pt").exists()


def test_training_is_deterministic_and_resumes(small_data, tmp_path):
    cfg = dict(seed=5, **TINY)
    a = train(small_data, tmp_path / "a.pt", TrainConfig(**cfg), progress=False, log=lambda *x: None)

    class Stop(Exception):
        pass

    def interrupt(msg):
        if msg.startswith("epoch=1 "):
            raise Stop

    with pytest.raises(Stop):
        train(small_data, tmp_path / "b.pt", TrainConfig(**cfg), progress=False, log=interrupt)
    assert (tmp_path / "b.ckpt").is_file() and not (tmp_path / "b.pt").exists()
    msgs = []
    b = train(small_data, tmp_path / "b.pt", TrainConfig(**cfg), progress=False, log=msgs.append)
    assert any("resuming" in m for m in msgs)
    sa, sb = load_model_file(a)["state_dict"], load_model_file(b)["state_dict"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    for suffix in ("_curves.csv", "_curves.png", ".MODEL_CARD.md"):
        assert (tmp_path / f"b{suffix}").is_file()


def test_fine_tune_from_model(small_data, tiny_model, tmp_path):
    cfg = TrainConfig(seed=1, init=str(tiny_model), lr=1e-3, **{**TINY, "epochs": 1, "width": 99})
    out = train(small_data, tmp_path / "ft.pt", cfg, progress=False, log=lambda *a: None)
    obj = load_model_file(out)
    assert obj["config"]["width"] == 4  # architecture comes from the parent model
    assert "ft.pt" in (tmp_path / "ft.MODEL_CARD.md").read_text() and "Fine-tuned from" in \
        (tmp_path / "ft.MODEL_CARD.md").read_text()


# -- model files ---------------------------------------------------------------------------------


def test_tampered_model_is_refused(tiny_model, tmp_path):
    import shutil

    bad = tmp_path / "tiny.pt"
    shutil.copy(tiny_model, bad)
    shutil.copy(tiny_model.with_name("tiny.MODEL_CARD.md"), tmp_path / "tiny.MODEL_CARD.md")
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match=r"tiny\.pt.*sha256.*changed or replaced"):
        _seg(bad)
    assert isinstance(ModelFileError("x", "y"), TemOperandoError)


def test_model_without_card_is_refused(tiny_model, tmp_path):
    import shutil

    lone = tmp_path / "lone.pt"
    shutil.copy(tiny_model, lone)
    with pytest.raises(ModelFileError, match="lone.pt.*no model card"):
        _seg(lone)


def _with_card(path):
    from tem_operando.segment.modelfile import sha256

    path.with_name(path.stem + ".MODEL_CARD.md").write_text(f"sha256: {sha256(path)}\n")
    return path


def test_foreign_files_are_refused(tmp_path):
    torch.save({"weight": torch.zeros(3)}, tmp_path / "plain.pt")
    with pytest.raises(ModelFileError, match="plain.pt.*not a tem-operando segmentation model"):
        _seg(_with_card(tmp_path / "plain.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a torch file at all")
    with pytest.raises(ModelFileError, match="junk.pt.*not a tem-operando model file"):
        _seg(_with_card(tmp_path / "junk.pt"))
    import collections

    torch.save(collections.Counter(a=1), tmp_path / "pickle.pt")  # needs full unpickling
    with pytest.raises(ModelFileError, match="pickle.pt"):
        _seg(_with_card(tmp_path / "pickle.pt"))
    with pytest.raises(ModelFileError, match="missing.pt.*not found"):
        _seg(tmp_path / "missing.pt")


def test_saved_model_round_trips(tmp_path):
    from tem_operando.segment.network import SegNet

    m = SegNet(4, 2, 1).eval()
    save_model_file(tmp_path / "m.pt", m, name="m")
    obj = load_model_file(tmp_path / "m.pt", verify=False)
    assert obj["class_names"] == ["background", "pristine", "reacted"]
    assert obj["config"] == {"width": 4, "depth": 2, "blocks": 1, "in_channels": 1}


# -- data ----------------------------------------------------------------------------------------


def test_annotation_set_round_trip(small_data, tmp_path):
    p = write_annotation_set(tmp_path / "set", small_data.frames[:3], small_data.classes[:3],
                             small_data.instances[:3], nm_per_px=0.8, provenance={"annotator": "t"})
    fs = load_annotation_set(p)
    assert np.array_equal(fs.classes, small_data.classes[:3]) and fs.nm_per_px[0] == 0.8
    info = json.loads((p / "annotation.json").read_text())
    info["format"] = "something-else"
    (p / "annotation.json").write_text(json.dumps(info))
    with pytest.raises(TemOperandoError, match="format"):
        load_annotation_set(p)


# -- baseline ------------------------------------------------------------------------------------


def test_baseline_on_an_easy_frame():
    from tem_operando.segment import load_segmenter

    fs, _ = synthetic_frames(31, 2, dose=100, scene="particles", background="vacuum", contrast="bright-field")
    out = load_segmenter("baseline").predict(fs.frames)
    assert iou(out.classes > 0, fs.classes > 0) > 0.8
    assert out.instances.max() >= 1


def test_baseline_runs_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import numpy as np\n"
            "from tem_operando.segment import load_segmenter\n"
            "out = load_segmenter('baseline').predict(np.random.default_rng(0).poisson(9, (2, 40, 40)))\n"
            "print(out.classes.shape)")
    r = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "(2, 40, 40)" in r.stdout


# -- metrics -------------------------------------------------------------------------------------


def test_metrics_are_perfect_on_the_truth():
    from tem_operando.segment.evaluate import evaluate, item_from_session

    class Oracle:
        def __init__(self, item):
            self.item = item

        def predict(self, frames):
            from tem_operando.segment.infer import SegmentationResult

            return SegmentationResult(self.item.classes, self.item.instances, np.ones(len(frames)))

    _, s = synthetic_frames(1_000_003, 4, dose=10)
    item = item_from_session(s, "t", 10)
    df = evaluate({"oracle": Oracle(item)}, [item])
    row = df[df["dose"] == "all"].iloc[0]
    for k in ("iou_objects", "iou_reacted", "boundary_f1", "instance_f1"):
        assert row[k] == pytest.approx(1.0)
    assert row["front_err_px"] < 0.5 and row["n_fronts"] > 0


# -- command line --------------------------------------------------------------------------------


def test_cli_train_and_evaluate(tmp_path, capsys):
    from tem_operando.cli import main
    from tem_operando.synth.images import image_series
    from tem_operando.synth.write import write_session

    rec = write_session(image_series(4, (80, 80), scene="mixed", rng=1_000_050, dose_e_per_px=10),
                        tmp_path / "data" / "s.npy", "npy")
    out = tmp_path / "m.pt"
    rc = main(["train", "--data", str(tmp_path / "data"), "--out", str(out), "--epochs", "1",
               "--steps-per-epoch", "3", "--width", "4", "--depth", "2", "--blocks", "1", "--batch", "2",
               "--crop", "48", "--threads", "1", "--no-progress"])
    assert rc == 0 and out.is_file() and (tmp_path / "m.MODEL_CARD.md").is_file()
    rc = main(["evaluate", "--model", str(out), "--data", str(rec), "--csv", str(tmp_path / "e.csv")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "network:iou_objects" in text and "baseline:iou_objects" in text
    import pandas as pd

    df = pd.read_csv(tmp_path / "e.csv")
    assert set(df["method"]) == {"network", "baseline"} and "front_err_nm" in df


def test_cli_errors_are_clear(tmp_path):
    from tem_operando.cli import main

    assert main(["train", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "m.pt")]) == 2
    assert main(["evaluate", "--model", str(tmp_path / "none.pt"), "--synthetic", "1", "--doses", "10"]) == 2


def test_help_does_not_import_torch():
    code = ("import sys, tem_operando.cli as c; c.build_parser(); "
            "print('torch' in sys.modules)")
    r = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "False", r.stderr


def test_fine_tuning_keeps_the_normalisation_statistics(small_data, tiny_model, tmp_path):
    """A few steps on a handful of frames must not drag BatchNorm's running statistics (forgetting)."""
    import torch

    parent = load_model_file(tiny_model)["state_dict"]
    stats = [k for k in parent if k.endswith("running_mean") or k.endswith("running_var")]
    assert stats
    base = dict(seed=1, init=str(tiny_model), lr=1e-3, **{**TINY, "epochs": 1})
    frozen = load_model_file(train(small_data, tmp_path / "f.pt", TrainConfig(**base), progress=False,
                                   log=lambda *a: None))["state_dict"]
    free = load_model_file(train(small_data, tmp_path / "u.pt", TrainConfig(**base, freeze_norm=False),
                                 progress=False, log=lambda *a: None))["state_dict"]
    assert all(torch.equal(frozen[k], parent[k]) for k in stats)
    assert not all(torch.equal(free[k], parent[k]) for k in stats)
    conv = next(k for k in parent if k.endswith("weight") and parent[k].ndim == 4)
    assert not torch.equal(frozen[conv], parent[conv])  # the weights themselves still learn


def test_class_bias_undoes_a_known_over_segmentation():
    """Logits that favour the objects by +1.2 on blurred rims: the fitted bias moves the decision back."""
    from scipy import ndimage

    from tem_operando.segment.infer import decode
    from tem_operando.segment.train import fit_class_bias

    rng = np.random.default_rng(0)
    truth = np.zeros((6, 64, 64), np.uint8)
    yy, xx = np.mgrid[:64, :64]
    for k in range(6):
        cy, cx, r = rng.uniform(20, 44, 2).tolist() + [rng.uniform(8, 14)]
        d = np.hypot(yy - cy, xx - cx)
        truth[k][d < r] = 1
        truth[k][(d < r) & (d > 0.6 * r)] = 2
    onehot = np.stack([(truth == c).astype(np.float32) for c in range(3)], 1)
    logits = 4 * np.stack([ndimage.gaussian_filter(onehot[:, c], (0, 2, 2)) for c in range(3)], 1)
    logits[:, 1:] += 1.2  # the over-segmenting network
    logits += rng.normal(0, 0.05, logits.shape).astype(np.float32)
    bias, info = fit_class_bias(logits, truth, step_px=1)
    # the rim is reacted: its bias is pinned; the pristine core never touches the background
    assert bias[0] == 0 and -1.6 < bias[2] < -0.8 and bias[1] < 0
    assert info["iou_objects_after"] > info["iou_objects_before"] + 0.05
    seams = np.full((6, 1, 64, 64), -10, np.float32)
    plain = decode(np.concatenate([logits, seams], 1), min_area_px=4).classes
    fixed = decode(np.concatenate([logits, seams], 1), min_area_px=4, class_bias=bias).classes
    assert (plain > 0).sum() > (fixed > 0).sum() and np.mean((fixed > 0) == (truth > 0)) > np.mean((plain > 0) == (truth > 0))
    # perfect logits: no bias (the gain would be below min_gain)
    b0, _ = fit_class_bias(10 * onehot, truth)
    assert not b0.any()


def test_models_calibrate_writes_a_verified_model_with_biases(tiny_model, tmp_path, capsys):
    from tem_operando.cli import main
    from tem_operando.segment.modelfile import card_path, card_sha256, sha256

    out = tmp_path / "cal.pt"
    assert main(["models", "calibrate", str(tiny_model), "--out", str(out), "--sessions", "2"]) == 0
    obj = load_model_file(out)  # verified against its card
    assert len(obj["class_bias"]) == 3 and card_sha256(out) == sha256(out)
    card = card_path(out).read_text()
    assert "## Decision biases" in card and "`cal.pt`" in card
    assert torch_equal_state(obj["state_dict"], load_model_file(tiny_model)["state_dict"])  # weights unchanged
    from tem_operando.segment import load_segmenter

    seg = load_segmenter(out)
    assert seg.class_bias.shape == (3,)


def torch_equal_state(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_distillation_loss_is_smallest_at_the_teacher():
    import torch

    from tem_operando.segment.train import distill_loss

    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 4, 16, 16, generator=g)
    same = float(distill_loss(t, t))
    for _ in range(5):
        s = t + 0.5 * torch.randn(2, 4, 16, 16, generator=g)
        assert float(distill_loss(s, t)) > same


def test_fine_tuning_keeps_the_decision_biases_unless_asked_to_refit(small_data, tiny_model, tmp_path):
    from tem_operando.segment.train import calibrate_model

    cal, bias, _ = calibrate_model(tiny_model, tmp_path / "cal.pt", n_sessions=2, log=lambda *a: None)
    other, _, _ = calibrate_model(tiny_model, tmp_path / "cal2.pt", n_sessions=1, log=lambda *a: None)
    assert (tmp_path / "cal.MODEL_CARD.md").is_file() and (tmp_path / "cal2.MODEL_CARD.md").is_file()
    load_model_file(cal), load_model_file(other)  # each its own card: neither overwrote the other's sha256
    base = dict(seed=1, init=str(cal), lr=1e-3, **{**TINY, "epochs": 1})
    kept = train(small_data, tmp_path / "k.pt", TrainConfig(**base), progress=False, log=lambda *a: None)
    assert load_model_file(kept)["class_bias"] == [float(v) for v in bias]
    assert "kept from the model this one was fine-tuned from" in (tmp_path / "k.MODEL_CARD.md").read_text()
    none = train(small_data, tmp_path / "n.pt", TrainConfig(**base, calibrate="none"), progress=False,
                 log=lambda *a: None)
    assert "class_bias" not in load_model_file(none)
    with pytest.raises(ValueError, match="calibrate"):
        train(small_data, tmp_path / "x.pt", TrainConfig(**base, calibrate="maybe"), progress=False,
              log=lambda *a: None)


def test_resolve_model_names(tmp_path, monkeypatch):
    """None and "default" give the shipped default; a bare name a shipped or user model; else a path."""
    from tem_operando.segment.infer import default_model_path, resolve_model

    monkeypatch.setenv("TEM_OPERANDO_DATA_DIR", str(tmp_path / "data"))
    (tmp_path / "data" / "models").mkdir(parents=True)
    (tmp_path / "data" / "models" / "mine.pt").write_bytes(b"x")
    assert resolve_model(None) == resolve_model("default") == default_model_path()
    assert resolve_model(default_model_path().stem) == default_model_path()
    assert resolve_model("mine") == resolve_model("mine.pt") == tmp_path / "data" / "models" / "mine.pt"
    assert resolve_model(tmp_path / "elsewhere.pt") == tmp_path / "elsewhere.pt"


@pytest.mark.parametrize("threshold", [0.2, 0.5, 0.8])
def test_decode_splits_on_the_seam_probability_threshold(threshold):
    """decode thresholds seam logits; the instances equal a split on the seam probabilities."""
    from scipy import ndimage

    from tem_operando.segment.infer import decode
    from tem_operando.segment.instances import split_by_seams

    rng = np.random.default_rng(3)
    logits = np.zeros((2, 4, 64, 64), np.float32)
    yy, xx = np.mgrid[:64, :64]
    for c in ((20, 20), (20, 40), (45, 30)):  # three touching discs
        logits[:, 1] += 6.0 * (np.hypot(yy - c[0], xx - c[1]) < 11)
    logits[:, 0] = 3.0
    logits[:, 3] = ndimage.gaussian_filter(rng.normal(0, 3, (2, 64, 64)), (0, 2, 2)) * 4  # |logit| < ~8
    res = decode(logits, seam_threshold=threshold, min_area_px=4)
    seam_p = 1 / (1 + np.exp(-logits[:, 3].astype(np.float64)))
    for i in range(2):
        ref = split_by_seams(res.classes[i] > 0, seam_p[i], threshold=threshold, min_area_px=4)
        np.testing.assert_array_equal(res.instances[i], ref)
    counts = [decode(logits, seam_threshold=t, min_area_px=4).instances.max() for t in (0.2, 0.8)]
    assert counts[0] != counts[1]  # the threshold matters on these seams


def test_split_necks_separates_bridged_particles_and_keeps_wires_whole():
    """Two discs joined by a bridge (the network's merge at low dose) become two objects; a wire
    with a pinched, rough edge, a particle with a bump and an isolated disc stay one object each."""
    from skimage.draw import disk

    from tem_operando.segment.instances import split_necks

    lab = np.zeros((160, 220), np.uint32)
    lab[disk((40, 40), 16)] = 1
    lab[disk((40, 78), 13)] = 1
    lab[36:44, 40:78] = 1  # a bridge 8 px wide between them
    lab[100:120, 20:200] = 2  # a wire 20 px wide ...
    lab[100:106, 100:106] = lab[114:120, 100:106] = 0  # ... pinched to 8 px in the middle
    edge = np.flatnonzero(lab[99, 20:200] == 0)[::3]
    lab[99, 20 + edge] = 2  # rough edge
    lab[disk((40, 160), 20)] = 3
    lab[disk((22, 160), 6)] = 3  # a bump on a big particle
    lab[disk((140, 60), 9)] = 4  # an isolated disc
    out = split_necks(lab)
    assert out.max() == 5
    # the two bridged discs: one object each, split at the bridge
    a, b = out[40, 40], out[40, 78]
    assert a and b and a != b
    assert abs(int((out == a).sum()) - np.pi * 16 ** 2) < 0.15 * np.pi * 16 ** 2
    for y, x in ((110, 30), (140, 60), (40, 160)):  # the others are unchanged
        k = out[y, x]
        np.testing.assert_array_equal(out == k, lab == lab[y, x])
    assert split_necks(lab, min_roundness=0).max() == 6  # the pinched wire is a candidate: cut without the rule
    # nothing to split: returned as is (labels numbered 1..n)
    np.testing.assert_array_equal(split_necks(lab * (lab != 1)) > 0, (lab > 1))
    assert split_necks(np.zeros((8, 8), np.uint32)).max() == 0


def _rod(lab, a, b, width_px, value):
    """Draw a straight rod of ``width_px`` from point a to point b (row, col) into ``lab``."""
    from skimage.draw import polygon

    a, b = np.asarray(a, float), np.asarray(b, float)
    n = np.array([-(b - a)[1], (b - a)[0]]) / np.hypot(*(b - a)) * width_px / 2
    c = np.array([a + n, b + n, b - n, a - n])
    lab[polygon(c[:, 0], c[:, 1], lab.shape)] = value


@pytest.mark.parametrize("angle_deg", [0, 10, 30, 45, 60, 90])
def test_split_necks_cuts_a_blob_off_a_wire_at_any_angle_and_keeps_swollen_wires_whole(angle_deg):
    """A sodium source (a disc 4× the wire's half width) outlined with the wire is cut off at every
    angle; a wire whose first 30 px swell to 1.75× its width, one leaving the image at a slant,
    and one with a particle lying on its side (the wire goes on both ways) stay whole."""
    from skimage.draw import disk

    from tem_operando.segment.instances import split_necks

    t = np.deg2rad(angle_deg)
    u = np.array([np.sin(t), np.cos(t)])
    lab = np.zeros((400, 400), np.uint32)
    c = np.array([200.0, 200.0])
    lab[disk(tuple(c), 40)] = 1
    _rod(lab, c, c + 180 * u, 20, 1)
    out = split_necks(lab)
    assert out.max() == 2
    blob, wire = out[int(c[0]), int(c[1])], out[tuple((c + 120 * u).astype(int))]
    assert blob != wire
    assert abs(int((out == blob).sum()) - np.pi * 40**2) < 0.1 * np.pi * 40**2
    # a swollen wire: 16 px wide, its first 30 px 28 px wide (+75 %)
    lab = np.zeros((300, 300), np.uint32)
    a = np.array([150.0, 150.0]) - 100 * u
    _rod(lab, a, a + 200 * u, 16, 1)
    _rod(lab, a, a + 30 * u, 28, 1)
    assert split_necks(lab).max() == 1
    # a particle on a wire's side: neither is cut (the wire would fall into two)
    nrm = np.array([u[1], -u[0]])
    for half_length, r, off in ((120, 20, 20), (50, 25, 20), (60, 30, 30)):
        lab = np.zeros((300, 300), np.uint32)
        _rod(lab, np.array([150.0, 150.0]) - half_length * u, np.array([150.0, 150.0]) + half_length * u, 12, 1)
        lab[disk(tuple(np.array([150.0, 150.0]) + off * nrm), r, shape=lab.shape)] = 1
        assert split_necks(lab).max() == 1, (half_length, r)
    _assert_particle_on_wire_side_keeps_the_wire_whole(angle_deg)


def _assert_particle_on_wire_side_keeps_the_wire_whole(angle_deg):
    """A big particle only touching a wire's side (a few px of overlap): the particle may be cut off,
    the wire is never cut in two."""
    from skimage.draw import disk

    from tem_operando.segment.instances import split_necks

    t = np.deg2rad(angle_deg)
    u = np.array([np.sin(t), np.cos(t)])
    nrm = np.array([u[1], -u[0]])
    for w, r, overlap, along in ((20, 50, 8, 0.5), (10, 25, 3, 0.35), (16, 40, 6, 0.35)):
        wire = np.zeros((360, 360), np.uint32)
        a = np.array([180.0, 180.0]) - 100 * u
        _rod(wire, a, a + 200 * u, w, 1)
        particle = np.zeros((360, 360), bool)
        particle[disk(tuple(a + 200 * along * u + nrm * (w / 2 + r - overlap)), r, shape=particle.shape)] = True
        out = split_necks(np.where(particle, 1, wire).astype(np.uint32))
        labels, counts = np.unique(out[(wire > 0) & ~particle], return_counts=True)
        main = labels[np.argmax(counts)]  # the wire's piece: most of the wire, in one piece
        assert counts.max() > 0.85 * counts.sum() and ndimage.label(out == main, np.ones((3, 3)))[1] == 1, (w, r, counts)


@pytest.mark.parametrize("angle_deg", [20, 40])
def test_split_necks_never_cuts_a_wire_in_two_beside_a_particle_on_its_side(angle_deg):
    _assert_particle_on_wire_side_keeps_the_wire_whole(angle_deg)


@pytest.mark.parametrize("angle_deg", [4, 8, 12, 20])
def test_split_necks_keeps_a_wire_leaving_the_image_at_a_slant_whole(angle_deg):
    from tem_operando.segment.instances import split_necks

    t = np.deg2rad(angle_deg)
    for w in (12, 16, 22):
        lab = np.zeros((200, 300), np.uint32)
        b = np.array([0.0, 150.0]) + 40 * np.array([-np.sin(t), np.cos(t)])  # beyond the top border
        _rod(lab, b - 220 * np.array([-np.sin(t), np.cos(t)]), b, w, 1)
        assert split_necks(lab).max() == 1, w


def test_split_necks_keeps_a_wire_pinched_near_its_end_and_an_egg_whole():
    """Noise that pinches a wire 20 px from its end leaves two rods of the same width: one wire.
    An egg (one end narrower, no waist) is one particle; a particle with a small bump too."""
    from skimage.draw import disk

    from tem_operando.segment.instances import split_necks

    for angle_deg in (0, 20):
        t = np.deg2rad(angle_deg)
        u = np.array([np.sin(t), np.cos(t)])
        nrm = np.array([u[1], -u[0]])
        lab = np.zeros((240, 240), np.uint32)
        a = np.array([120.0, 120.0]) - 100 * u
        _rod(lab, a, a + 200 * u, 16, 1)
        for s in (1, -1):  # notch both edges: 16 -> 7 px
            lab[disk(tuple(a + 20 * u + s * nrm * 8), 4.5, shape=lab.shape)] = 0
        assert split_necks(lab).max() == 1
    lab = np.zeros((200, 200), np.uint32)
    for s in np.linspace(0, 1, 40):
        lab[disk((100, 60 + 30 * s), 25 - 13 * s)] = 1
    assert split_necks(lab).max() == 1
    lab = np.zeros((200, 200), np.uint32)
    lab[disk((100, 100), 30)] = 1
    lab[disk((100 + 32 * 0.6, 100 + 32 * 0.8), 10)] = 1
    assert split_necks(lab).max() == 1


def test_decode_splits_necks_only_when_asked():
    from skimage.draw import disk

    from tem_operando.segment.infer import decode

    logits = np.zeros((1, 4, 96, 96), np.float32)
    logits[:, 0] = 1.0
    m = np.zeros((96, 96), bool)
    m[disk((48, 30), 14)] = True
    m[disk((48, 64), 12)] = True
    m[45:51, 30:64] = True
    logits[0, 1] = 4.0 * m
    logits[:, 3] = -5.0  # no seams at all
    assert decode(logits, neck_h_px=None).instances.max() == 1
    assert decode(logits, neck_h_px=3.0).instances.max() == 2


def test_split_necks_cuts_a_blob_off_a_wire_end_and_a_small_particle_off_a_big_one():
    """A sodium source (big blob, cut by the image border) outlined together with the wire that
    touches it, and a small particle touching a big one along a broad contact (no narrow neck):
    each is cut at the blob's own outline. A wire whose reacted half is 40 % wider stays whole."""
    from skimage.draw import disk, polygon

    from tem_operando.segment.instances import split_necks

    lab = np.zeros((200, 240), np.uint32)
    lab[disk((200, 30), 45, shape=lab.shape)] = 1  # the blob, cut by the bottom border
    a, b = np.array([185.0, 40.0]), np.array([50.0, 160.0])  # (row, col): from inside the blob up
    n = np.array([-(b - a)[1], (b - a)[0]]) / np.hypot(*(b - a)) * 11  # half of 22 px across
    corners = np.array([a + n, b + n, b - n, a - n])
    lab[polygon(corners[:, 0], corners[:, 1], lab.shape)] = 1
    lab[disk((60, 40), 22)] = 2
    lab[disk((60, 70), 11)] = 2  # a small particle pressed into the big one
    lab[120:136, 170:235] = 3  # a wire ...
    lab[117:139, 170:200] = 3  # ... whose first part is swollen
    out = split_necks(lab)
    assert out.max() == 5
    blob, w = out[195, 30], out[95, 120]
    assert blob and w and blob != w
    # the cut lies where the blob's circle meets the wire
    yy, xx = np.nonzero(out == w)
    assert np.hypot(yy - 200, xx - 30).min() > 42
    big, small = out[60, 40], out[60, 76]
    assert big and small and big != small
    assert abs(int((out == small).sum()) - np.pi * 11**2) < 0.35 * np.pi * 11**2
    np.testing.assert_array_equal(out == out[128, 200], lab == 3)
