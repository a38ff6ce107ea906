"""`monkeysee predict` and `monkeysee demo`: tables, JSON, resumable CSV, bad files as error rows."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from monkeysee.cli import main


def _photos(synthetic_data: Path) -> list[Path]:
    return sorted((synthetic_data / "training").rglob("*.jpg"))


def test_table_names_species_with_latin_names(tiny_run: Path, synthetic_data: Path, capsys):
    red = synthetic_data / "training" / "n0" / "n0_00.jpg"
    # A threshold nothing exceeds: the verdict is the species, and the line must name it exactly.
    assert main(["predict", str(tiny_run), str(red), "--top-k", "2", "--unknown-threshold", "1e9"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{red}: red monkey (Rubra simia) ")
    assert line.count("| then") == 1 and line.endswith("%")


def test_table_says_not_one_of_my_species_below_the_threshold(tiny_run: Path, synthetic_data: Path, capsys):
    red = synthetic_data / "training" / "n0" / "n0_00.jpg"
    assert main(["predict", str(tiny_run), str(red), "--unknown-threshold=-1e9"]) == 0
    assert capsys.readouterr().out.startswith(f"{red}: NOT ONE OF MY SPECIES (nearest: ")


def test_json_lines_carry_top_k_and_the_unknown_flag(tiny_run: Path, synthetic_data: Path, capsys):
    photos = _photos(synthetic_data)[:3]
    assert main(["predict", str(tiny_run), *map(str, photos), "--json", "--top-k", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["source"] for r in rows] == [str(p) for p in photos]
    for r in rows:
        assert len(r["top"]) == 3 and isinstance(r["unknown"], bool)
        probs = [g["probability"] for g in r["top"]]
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-3
        assert r["species"] == r["top"][0]["common_name"]


def test_bad_files_become_error_rows_and_the_rest_go_on(tiny_run, synthetic_data: Path, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = shutil.copy(_photos(synthetic_data)[0], folder / "a_good.jpg")
    (folder / "b_text.jpg").write_text("not a photo")
    (folder / "c_empty.jpg").write_bytes(b"")
    truncated = Path(_photos(synthetic_data)[1]).read_bytes()
    (folder / "d_truncated.jpg").write_bytes(truncated[: len(truncated) // 3])
    assert main(["predict", str(tiny_run), str(folder), "--json"]) == 0
    rows = {Path(r["source"]).name: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert set(rows) == {"a_good.jpg", "b_text.jpg", "c_empty.jpg", "d_truncated.jpg"}
    assert "error" not in rows["a_good.jpg"] and rows["a_good.jpg"]["source"] == str(good)
    for name in ["b_text.jpg", "c_empty.jpg", "d_truncated.jpg"]:
        assert name in rows[name]["error"] and "Fix:" in rows[name]["error"]


def test_csv_resume_skips_rows_already_written(tiny_run: Path, synthetic_data: Path, tmp_path, capsys):
    photos = _photos(synthetic_data)
    out = tmp_path / "preds.csv"
    assert main(["predict", str(tiny_run), *map(str, photos[:5]), "--csv", str(out)]) == 0
    first = list(csv.DictReader(out.open()))
    assert [r["source"] for r in first] == [str(p) for p in photos[:5]]
    assert main(["predict", str(tiny_run), str(synthetic_data / "training"), "--csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert sorted(r["source"] for r in rows) == sorted(map(str, photos))  # each photo exactly once
    assert rows[:5] == first
    assert "5 already in" in capsys.readouterr().err


def test_cams_are_written_per_photo(tiny_run: Path, synthetic_data: Path, tmp_path, capsys):
    """One overlay per photo, named by the photo, a hash of its full path and the predicted species, holding
    the heatmap of that prediction (the same pixels the library's explainer draws)."""
    import hashlib

    import numpy as np
    from PIL import Image

    from monkeysee.explain import Explainer
    from monkeysee.predict import Predictor

    cams = tmp_path / "cams"
    photos = _photos(synthetic_data)[:2]
    assert main(["predict", str(tiny_run), *map(str, photos), "--cams", str(cams), "--json"]) == 0
    labels = [json.loads(line)["label"] for line in capsys.readouterr().out.splitlines()]
    tags = [hashlib.sha1(str(p).encode()).hexdigest()[:8] for p in photos]
    names = [f"{p.stem}-{tag}.{label}.png" for p, tag, label in zip(photos, tags, labels, strict=True)]
    assert sorted(p.name for p in cams.iterdir()) == sorted(names)
    predictor = Predictor.from_run_dir(tiny_run)
    explainer = Explainer.from_run(predictor.run, precision=predictor.precision)
    for pred, name in zip(predictor.predict_paths(photos, heatmaps=explainer), names, strict=True):
        assert pred.overlay is not None
        assert np.array_equal(np.asarray(Image.open(cams / name)), pred.overlay)


def test_missing_run_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["predict", str(tmp_path / "nope"), "x.jpg"]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_demo_without_data_names_the_cat(tmp_path, capsys):
    import numpy as np
    import skimage.data
    from PIL import Image

    from monkeysee.explain import Explainer
    from monkeysee.models import create_model, get_backbone

    assert main(["demo", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    chelsea = next(line for line in out.splitlines() if line.strip().startswith("chelsea"))
    assert "cat" in chelsea.split(",")[0]
    assert f"heatmap: {tmp_path / 'chelsea.gradcam.png'}" in out
    spec = get_backbone("efficientnet_lite0")
    explainer = Explainer(create_model(spec.name, pretrained=True).eval(), spec.preprocess,
                          layer=spec.explain_layer)
    cat = Image.fromarray(np.asarray(skimage.data.chelsea())).convert("RGB")
    expected = explainer.explain([cat], methods=("gradcam",))["gradcam"].overlays()[0]
    drawn = np.asarray(Image.open(tmp_path / "chelsea.gradcam.png").convert("RGB"))
    assert drawn.shape == expected.shape  # the explain API's Grad-CAM of the cat, to a rounding step
    assert np.abs(drawn.astype(int) - expected.astype(int)).max() <= 1
    assert "monkeysee demo --data" in out


def test_tta_averages_the_logits_of_the_photo_and_its_views(tiny_run: Path, synthetic_data: Path):
    """With --tta hflip the species probabilities are those of the mean logits of the photo and its
    mirror image; the unknown score stays the photo's own, so the calibrated threshold keeps its meaning."""
    import numpy as np
    import torch

    from monkeysee.data.images import load_rgb
    from monkeysee.predict import TTA_VIEWS, Predictor

    images = [load_rgb(p) for p in _photos(synthetic_data)[:4]]
    plain = Predictor.from_run_dir(tiny_run, precision="fp32", assess_quality=False)
    tta = Predictor.from_run_dir(tiny_run, precision="fp32", assess_quality=False, tta=["hflip"])
    x = plain.prepare(images)
    own, _ = plain.logits_and_features(x)
    mirrored, _ = plain.logits_and_features(x.flip(-1))
    expected = plain.probabilities(((own + mirrored) / 2).numpy())
    got = tta.predict_images(images, top_k=3)
    for i, pred in enumerate(got):
        for guess in pred.top:
            assert abs(guess.probability - expected[i, guess.index]) < 1e-5
    base = plain.predict_images(images, top_k=1)
    assert [p.unknown_score for p in got] == [p.unknown_score for p in base]
    assert not np.allclose(own.numpy(), mirrored.numpy())  # the mirror view does change the logits
    # zoom on a ramp whose value is its column: bilinear resampling of a line is exact, so column j of
    # the zoomed frame shows column 14 + (j + 0.5) * 196 / 224 - 0.5 (the central 196 of 224 columns)
    ramp = torch.arange(224.0).expand(1, 3, 224, 224)
    zoom = TTA_VIEWS.get("zoom")(ramp)
    expected_cols = 14 + (torch.arange(224.0) + 0.5) * 196 / 224 - 0.5
    assert zoom.shape == ramp.shape
    assert torch.allclose(zoom[0, 0, 100], expected_cols.clamp(14, 209), atol=1e-3)


def test_unknown_tta_view_is_refused_before_any_work(tiny_run: Path, synthetic_data: Path, capsys):
    photo = _photos(synthetic_data)[0]
    assert main(["predict", str(tiny_run), str(photo), "--tta", "hflip,spin"]) == 2
    err = capsys.readouterr().err
    assert "unknown test-time view 'spin'" in err and "hflip, zoom" in err
