"""A manifest is checked field by field when a run folder is read: wrong types, out-of-range values,
fields no manifest holds and format versions from a newer monkeysee are refused with the field's name."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monkeysee.checkpoint import FORMAT_VERSION, Manifest
from monkeysee.data.preprocess import Preprocess
from monkeysee.data.species import Species
from monkeysee.errors import CheckpointError, ConfigError
from monkeysee.models.unknown import UnknownDetector
from monkeysee.rundir import RunDir

SHA = "ab" * 32


def _manifest() -> dict[str, Any]:
    species = (Species("a", "Ape A"), Species("b", "Ape B"))
    d = Manifest(backbone="resnet18", species=species, preprocess=Preprocess(32), explain_layer="body.4",
                 seed=3, files={"model.safetensors": {"bytes": 10, "sha256": SHA}}).to_dict()
    d["unknown"] = {"name": "max_softmax", "threshold": 0.4, "keep": 0.95, "poor_threshold": None,
                    "params": {}, "arrays": []}
    d["calibration"] = {"method": "temperature", "temperature": 1.5}
    return d


def _run(tmp_path: Path, manifest: dict[str, Any]) -> RunDir:
    run = tmp_path / "run"
    run.mkdir()
    (run / "manifest.json").write_text(json.dumps(manifest))  # json writes NaN as the literal NaN
    return RunDir(run)


def test_a_well_formed_manifest_reads_back_field_for_field(tmp_path: Path) -> None:
    m = _run(tmp_path, _manifest()).read_manifest()
    assert (m.backbone, m.num_classes, m.seed, m.explain_layer) == ("resnet18", 2, 3, "body.4")
    assert m.unknown["threshold"] == 0.4 and m.calibration["temperature"] == 1.5
    assert m.files == {"model.safetensors": {"bytes": 10, "sha256": SHA}}
    assert Manifest.from_dict(m.to_dict()) == m  # in memory, before JSON turns tuples into lists


def _set(d: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        d = d[key]
    d[last] = value


BAD = [
    ("format_version", FORMAT_VERSION + 1, r"'format_version' is 3: written by a newer monkeysee.*upgrade"),
    ("format_version", "2", r"'format_version' must be a whole number from 1 to 2, not '2'"),
    ("format", "other-tool", r"'format' is 'other-tool', not 'monkeysee-checkpoint'"),
    ("weights_url", "http://example.com/x.pt", r"'weights_url' is not part of a monkeysee manifest"),
    ("unknown.threshold", math.nan, r"'unknown.threshold' must be a finite number, not nan"),
    ("unknown.threshold", "0.4", r"'unknown.threshold' must be a finite number, not '0.4'"),
    ("unknown.keep", 1.5, r"'unknown.keep' must be in \(0, 1\], not 1.5"),
    ("unknown.script", "x", r"'unknown.script' is not part of a monkeysee manifest"),
    ("calibration.temperature", -1, r"'calibration.temperature' must be a number above 0, not -1"),
    ("dropout", 1.0, r"'dropout' must be a number in \[0.0, 1.0\), not 1.0"),
    ("seed", True, r"'seed' must be a whole number 0 or more, not True"),
    ("species", [], r"'species' must be a non-empty list of species"),
    ("num_classes", 3, r"'num_classes' is 3 but 2 species are listed"),
    ("preprocess.std", [0.5, 0.0, 0.5], r"'preprocess' std must be above 0 for every channel"),
    ("files", {"../../etc/passwd": {"bytes": 1, "sha256": SHA}}, r"names '\.\./\.\./etc/passwd'"),
    ("files", {"model.safetensors": {"bytes": 10}}, r"pins 'model.safetensors' without a byte count"),
    ("config", [], r"'config' must be a JSON object"),
]


@pytest.mark.parametrize(("field", "value", "message"), BAD, ids=[f"{f}={v!r}" for f, v, _ in BAD])
def test_a_bad_field_is_refused_naming_the_run_folder_the_field_and_the_fix(
    tmp_path: Path, field: str, value: Any, message: str
) -> None:
    d = _manifest()
    _set(d, field, value)
    run = _run(tmp_path, d)
    with pytest.raises(CheckpointError, match=message) as caught:
        run.read_manifest()
    assert caught.value.path == str(run.path / "manifest.json")
    assert caught.value.fix


def test_a_missing_required_field_is_named(tmp_path: Path) -> None:
    d = _manifest()
    del d["explain_layer"]
    with pytest.raises(CheckpointError, match=r"manifest field 'explain_layer' is missing\. Fix: re-run"):
        _run(tmp_path, d).read_manifest()


def test_a_run_without_detector_or_calibration_is_still_read(tmp_path: Path) -> None:
    d = _manifest()
    d["unknown"], d["calibration"] = {}, {}
    m = _run(tmp_path, d).read_manifest()
    assert m.unknown == {} and m.calibration == {}


@pytest.mark.parametrize("field", ["threshold", "poor_threshold"])
def test_a_detector_with_a_nan_threshold_cannot_be_built(field: str) -> None:
    values = {"threshold": 0.5, "poor_threshold": 1.0} | {field: math.nan}
    with pytest.raises(ConfigError, match="must be a finite number, not nan"):
        UnknownDetector("max_softmax", keep=None, **values)
    with pytest.raises(ConfigError, match="threshold must be a finite number, not nan"):
        UnknownDetector("max_softmax", 0.4, 0.95).with_threshold(math.nan)  # e.g. --unknown-threshold nan
    logits = np.array([[0.0, 0.0], [5.0, 0.0]])  # max softmax score 0.5 and 0.0067
    assert UnknownDetector("max_softmax", 0.4, None).is_unknown(logits).tolist() == [True, False]
