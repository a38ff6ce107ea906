"""`monkeysee explain` and `monkeysee activations` on a tiny run folder (random EfficientNet-Lite0, 64 px)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from monkeysee.checkpoint import Manifest
from monkeysee.cli import main
from monkeysee.data.species import Species
from monkeysee.models import Preprocess, create_model
from monkeysee.rundir import RunDir

SPECIES = (
    Species("n0", "mantled_howler", "alouatta_palliata"),
    Species("n1", "patas_monkey", "erythrocebus_patas"),
    Species("n2", "bald_uakari", "cacajao_calvus"),
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0", num_classes=len(SPECIES))
    manifest = Manifest(
        backbone="efficientnet_lite0",
        species=SPECIES,
        preprocess=Preprocess(64, 0.875, "bicubic", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        explain_layer="body.head",
    )
    directory = tmp_path_factory.mktemp("run")
    RunDir(directory).save_checkpoint(model, manifest)
    return directory


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for cls in ("n0", "n1"):
        (folder / cls).mkdir()
        for i in range(2):
            pixels = rng.integers(0, 256, size=(70, 80, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / cls / f"{cls}_{i}.jpg")
    return folder


def test_explain_writes_overlays_maps_manifests_and_the_comparison(run_dir, photo_dir, tmp_path, capsys):
    photos = [photo_dir / "n0" / "n0_0.jpg", photo_dir / "n1" / "n1_0.jpg"]
    rc = main(
        [
            "explain",
            str(run_dir),
            *map(str, photos),
            "--method",
            "gradcam",
            "--method",
            "eigencam",
            "--species",
            "Erythrocebus patas",
            "--layer",
            "body.stage6",
            "--out",
            str(tmp_path),
            "--alpha",
            "0.4",
            "--batch-size",
            "1",
        ]
    )
    assert rc == 0
    names = {p.name for p in tmp_path.iterdir()}
    for stem in ("n0_0", "n1_0"):
        for method in ("gradcam", "eigencam"):
            assert {f"{stem}__{method}.png", f"{stem}__{method}.npy", f"{stem}__{method}_layer.npy"} <= names
        assert f"{stem}__all.png" in names
    manifest = json.loads((tmp_path / "gradcam.json").read_text())
    assert manifest["layer"] == "body.stage6" and manifest["alpha"] == 0.4
    assert [p["target"] for p in manifest["photos"]] == ["patas monkey", "patas monkey"]
    assert np.load(tmp_path / "n1_0__gradcam.npy").shape == (64, 64)
    assert Image.open(tmp_path / "n0_0__gradcam.png").mode == "RGB"
    assert "explaining patas monkey" in capsys.readouterr().out


def test_explain_defaults_to_gradcam_on_the_recorded_layer(run_dir, photo_dir, tmp_path):
    assert main(["explain", str(run_dir), str(photo_dir / "n0" / "n0_1.jpg"), "--out", str(tmp_path)]) == 0
    manifest = json.loads((tmp_path / "gradcam.json").read_text())
    assert manifest["layer"] == "body.head" and manifest["layer_shape"] == [2, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gradcam.json",
        "n0_1__gradcam.npy",
        "n0_1__gradcam.png",
        "n0_1__gradcam_layer.npy",
    ]


def test_precision_defaults_to_auto_and_is_recorded(run_dir, photo_dir, tmp_path, capsys):
    from monkeysee.runtime import bf16_supported

    photo = str(photo_dir / "n0" / "n0_0.jpg")
    assert main(["explain", str(run_dir), photo, "--out", str(tmp_path / "auto")]) == 0
    auto = "bf16" if bf16_supported() else "fp32"
    assert json.loads((tmp_path / "auto" / "gradcam.json").read_text())["precision"] == auto
    assert f"{auto} passes" in capsys.readouterr().out
    assert main(["explain", str(run_dir), photo, "--precision", "fp32", "--out", str(tmp_path / "fp32")]) == 0
    assert json.loads((tmp_path / "fp32" / "gradcam.json").read_text())["precision"] == "fp32"


def test_bad_photo_is_a_clear_error(run_dir, tmp_path, capsys):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a photo")
    assert main(["explain", str(run_dir), str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "notes.jpg" in err and "not an image" in err and "Traceback" not in err


def test_unknown_species_and_layer_list_the_valid_ones(run_dir, photo_dir, tmp_path, capsys):
    photo = str(photo_dir / "n0" / "n0_0.jpg")
    assert main(["explain", str(run_dir), photo, "--species", "gorilla", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "gorilla" in err and "patas monkey" in err and "Cacajao calvus" in err
    assert main(["explain", str(run_dir), photo, "--layer", "body.stage99", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "body.stage99" in err and "body.stage7" in err and "body.head" in err
    assert main(["explain", str(run_dir), photo, "--method", "gradkam", "--out", str(tmp_path)]) == 2
    assert "scorecam" in capsys.readouterr().err


def test_evaluate_writes_the_faithfulness_table(run_dir, photo_dir, tmp_path, capsys):
    photo_dir = shutil.copytree(photo_dir, tmp_path / "photos")  # shared by the module: add to a copy
    (photo_dir / "n1" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    rc = main(
        [
            "explain",
            str(run_dir),
            "--evaluate",
            "--data",
            str(photo_dir),
            "--n",
            "2",
            "--methods",
            "gradcam",
            "eigencam",
            "--steps",
            "2",
            "--out",
            str(tmp_path / "out"),
        ]
    )
    assert rc == 0
    out = capsys.readouterr().out
    assert "most faithful for this model:" in out and "evaluated on 2 photos" in out
    record = json.loads((tmp_path / "out" / "faithfulness.json").read_text())
    assert [m["method"] for m in record["methods"]] == ["gradcam", "eigencam"]
    assert record["most_faithful"] in {"gradcam", "eigencam"} and len(record["photos"]) == 2
    assert not any("broken" in p for p in record["photos"])


def test_activations_of_a_run(run_dir, photo_dir, tmp_path):
    rc = main(
        [
            "activations",
            str(run_dir),
            str(photo_dir / "n0" / "n0_0.jpg"),
            "--layers",
            "body.stem",
            "body.head",
            "--channels",
            "4",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "n0_0__activations.json",
        "n0_0__body.head.png",
        "n0_0__body.stem.png",
        "n0_0__overview.png",
    ]
    summary = json.loads((tmp_path / "n0_0__activations.json").read_text())
    assert [layer["shape"] for layer in summary["layers"]] == [[32, 32, 32], [1280, 2, 2]]
    assert len(summary["layers"][1]["top_channels"]) == 4


def test_activations_of_a_plain_imagenet_backbone(photo_dir, tmp_path, capsys):
    rc = main(
        [
            "activations",
            "--backbone",
            "efficientnet_lite0",
            str(photo_dir / "n1" / "n1_1.jpg"),
            "--layers",
            "body.stage2",
            "--channels",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert rc == 0
    summary = json.loads((tmp_path / "n1_1__activations.json").read_text())
    assert summary["model"] == "ImageNet efficientnet_lite0" and summary["layers"][0]["shape"] == [24, 56, 56]
    assert len(summary["layers"][0]["top_channels"]) == 2  # --channels 2
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "n1_1__activations.json",
        "n1_1__body.stage2.png",
        "n1_1__overview.png",
    ]
