"""``train --data RESULTS_DIR``: the hand-corrected frames of a results folder become training data."""

from __future__ import annotations

import numpy as np
import pytest

from tem_operando.pipeline.retrain import results_as_annotation_sets
from tem_operando.errors import TemOperandoError
from tem_operando.pipeline import AnalyzeOptions, analyze
from tem_operando.results import ResultStore
from tem_operando.results.corrections import paint
from tem_operando.segment.datasets import load_annotation_set
from tem_operando.synth import image_series, write_session


def test_corrected_frames_of_a_results_folder_become_an_annotation_set(tmp_path):
    s = image_series(6, (96, 96), scene="particles", rng=3)
    rec = write_session(s, tmp_path / "s.hspy")
    analyze(rec, tmp_path / "res", AnalyzeOptions(model="baseline", chunk_frames=3), report=False)
    store = ResultStore(tmp_path / "res")
    with pytest.raises(TemOperandoError, match="no hand-corrected frames"):
        results_as_annotation_sets([str(tmp_path / "res")], tmp_path / "tmp0")
    paint(store, 2, 2, points=[(40.0, 40.0), (44.0, 40.0)], radius=4)
    paths, sources = results_as_annotation_sets([str(tmp_path / "res")], tmp_path / "tmp1")
    assert sources[0]["frames"] == [2] and sources[0]["n_frames"] == 1
    ann = load_annotation_set(paths[0])
    assert len(ann) == 1
    assert (np.asarray(ann.classes)[0][40, 40]) == 2


def test_models_list_shows_shipped_and_user_models(tmp_path, monkeypatch, capsys):
    import shutil

    from tem_operando.cli import main
    from tem_operando.segment.infer import default_model_path
    from tem_operando.segment.modelfile import card_path

    monkeypatch.setenv("TEM_OPERANDO_DATA_DIR", str(tmp_path))
    user = tmp_path / "models"
    user.mkdir()
    shutil.copy(default_model_path(), user / "mine.pt")
    shutil.copy(card_path(default_model_path()), card_path(user / "mine.pt"))
    (user / "mine.pt").write_bytes((user / "mine.pt").read_bytes() + b"x")  # tampered: card no longer matches
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    import re

    # the dose-10 network row of the card's held-apart table is what the list shows
    row = re.search(r"^\| network \| 10 \| ([0-9.]+) \|", card_path(default_model_path()).read_text(), re.M)
    assert "shipped (default)" in out and "segnet-s" in out and row and row.group(1) in out
    line = next(ln for ln in out.splitlines() if "mine" in ln)
    assert line.startswith("user") and "MISMATCH" in line


def test_dropping_input_channels_fails_before_the_data_are_read(tmp_path):
    """The shipped model has two input channels: asking for one fails at once, naming the model,
    before the (here missing) data are looked at, and writes nothing."""
    from tem_operando.pipeline.retrain import RetrainOptions, retrain

    with pytest.raises(TemOperandoError, match="cannot be fine-tuned to 1 input"):
        retrain([tmp_path / "no-such-data"], tmp_path / "out.pt", RetrainOptions(init="default", in_channels=1),
                progress=False, log=lambda *a: None)
    assert not (tmp_path / "out.pt").exists()
