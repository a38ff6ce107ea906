"""`evaluate` on a trained run: the predictions it stores come back exactly from the reloaded checkpoint,
and the metrics and confusion table it writes are those of the stored predictions."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monkeysee.cli import main
from monkeysee.evaluate.interpret import Interpretation
from monkeysee.evaluate.runner import evaluate_run
from monkeysee.predict import Predictor
from tests.conftest import private_copy


def test_evaluation_predictions_match_a_fresh_predictor(tiny_run: Path, tmp_path: Path):
    """The numbers evaluate wrote during training come back exactly from the reloaded checkpoint."""
    tiny_run = private_copy(tiny_run, tmp_path / "run")  # evaluate writes eval/ and the manifest
    metrics = evaluate_run(tiny_run, "test", log=lambda _: None)
    stored = Interpretation.load(tiny_run / "eval" / "test" / "predictions")
    predictor = Predictor.from_run_dir(tiny_run)
    probs = []
    for pred in predictor.predict_paths(stored.paths, top_k=3):
        p = np.zeros(3)
        for g in pred.top:
            p[g.index] = g.probability
        probs.append(p)
    np.testing.assert_allclose(np.array(probs), stored.probs, atol=1e-6)
    assert metrics["n"] == 6 and 0.0 <= metrics["accuracy_ci95"][0] <= metrics["accuracy"]
    assert metrics["accuracy"] == np.mean(stored.preds == stored.targets)
    folder = tiny_run / "eval" / "test"
    assert json.loads((folder / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    with (folder / "confusion_matrix.csv").open(newline="") as f:
        table = list(csv.reader(f))
    names = ["red monkey", "green monkey", "blue monkey"]
    assert table[0] == ["true \\ predicted", *names] and [r[0] for r in table[1:]] == names
    assert np.array_equal(np.array([r[1:] for r in table[1:]], dtype=int), stored.confusion_matrix())
    for name in ["confusion_matrix.png", "top_losses.png"]:
        with Image.open(folder / name) as picture:
            assert picture.format == "PNG"


@pytest.mark.parametrize("split", ["val", "train"])
def test_evaluate_cli_on_other_splits(tiny_run: Path, split: str, capsys, tmp_path: Path):
    tiny_run = private_copy(tiny_run, tmp_path / "run")  # evaluate writes eval/ and the manifest
    assert main(["evaluate", str(tiny_run), "--split", split]) == 0
    out = capsys.readouterr().out
    assert "accuracy" in out and "red monkey" in out
    metrics = json.loads((tiny_run / "eval" / split / "metrics.json").read_text())
    assert metrics["split"] == split and metrics["n"] == {"val": 6, "train": 18}[split]
    alarm = json.loads((tiny_run / "eval" / split / "shortcuts.json").read_text())
    assert "shortcut alarm" in out and [s["photos"] for s in alarm["species"]] == {"val": [2, 2, 2],
                                                                                  "train": [6, 6, 6]}[split]

