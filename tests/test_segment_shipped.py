"""The shipped segmentation model: found from a checkout and from a wheel, and accurate.

The science check renders held-apart synthetic frames (seeds ≥ EVAL_SEED_OFFSET, never used in
training) at a dose of 10 e⁻/px and asserts the targets of issue 3 against the classical
baseline. It uses a few frames only, so it runs in well under a minute.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from tem_operando.segment.infer import default_model_path

ROOT = Path(__file__).resolve().parent.parent


def test_default_model_and_card_are_present():
    from tem_operando.segment.modelfile import card_sha256, sha256

    path = default_model_path()
    assert path.is_file(), f"the shipped model {path} is missing"
    assert card_sha256(path) == sha256(path)


def test_default_model_is_in_the_wheel_and_found_when_installed(tmp_path):
    if not (ROOT / "pyproject.toml").is_file():
        pytest.skip("not a source checkout")
    r = subprocess.run(check=False, args=[sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "wheel"), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (whl,) = (tmp_path / "wheel").glob("tem_operando-*.whl")
    names = zipfile.ZipFile(whl).namelist()
    model = f"tem_operando/models/{default_model_path().name}"
    assert model in names
    assert model.replace(".pt", ".MODEL_CARD.md") in names
    # "install" by unpacking the wheel and load the default model from there, not from the checkout
    site = tmp_path / "site"
    zipfile.ZipFile(whl).extractall(site)
    code = ("import tem_operando, sys\n"
            f"assert tem_operando.__file__.startswith({str(site)!r}), tem_operando.__file__\n"
            "from tem_operando.segment import load_segmenter, default_model_path\n"
            "seg = load_segmenter()\n"
            "print(default_model_path(), seg.sha256)")
    r = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert str(site) in r.stdout


@pytest.fixture(scope="module")
def dose10_table():
    """Network and baseline on 100 held-apart sessions × 6 frames at 10 e⁻/px (the card's "More held-apart
    sessions" table; 4 sessions are too few to judge: one scene moves IoU objects by 0.01) ("all" row)."""
    from tem_operando.segment import load_segmenter
    from tem_operando.segment.evaluate import evaluate, held_apart_items

    items = held_apart_items(n_sessions=100, doses=(10,), n_frames=6)
    segs = {"network": load_segmenter(threads=2), "baseline": load_segmenter("baseline")}
    df = evaluate(segs, items)
    return df[df["dose"] == "all"].set_index("method")


def test_shipped_model_meets_the_issue_targets_at_dose_10_with_a_fast_cameras_reference(dose10_table):
    """Issue 3's targets, with each session's reference averaged from 8 exposures of its first frame (a camera at
    ≥ 8 frames/s whose first second is before the sample changes). Not met with the 2 frames a 2 frames/s
    recording of these scenes gives (v12 0.890, v7 0.887): see the model card; issue 3 is open."""
    net = dose10_table.loc["network"]
    assert net["iou_objects"] >= 0.90
    assert net["iou_reacted"] >= 0.80
    assert net["n_fronts"] >= 3
    assert net["front_err_px"] <= 3.0


def test_shipped_model_does_not_regress_at_dose_10(dose10_table):
    """What segnet-s v12 achieves today (held-apart, dose 10: 0.911 / 0.856 / 0.962 / 1.87 px), with a small
    margin (v7: 0.905 / 0.845 / 0.950 / 2.16 px would fail it)."""
    net = dose10_table.loc["network"]
    assert net["iou_objects"] >= 0.905
    assert net["iou_reacted"] >= 0.848
    assert net["instance_f1"] >= 0.952
    assert net["n_fronts"] >= 300
    assert net["front_err_px"] <= 2.1


def test_shipped_model_beats_the_baseline(dose10_table):
    from tem_operando.segment.evaluate import LOWER_IS_BETTER, METRICS

    net, base = dose10_table.loc["network"], dose10_table.loc["baseline"]
    for k in METRICS:
        if k in LOWER_IS_BETTER:
            assert net[k] < base[k], k
        else:
            assert net[k] > base[k], k
    assert np.isfinite(net["instance_f1"])
