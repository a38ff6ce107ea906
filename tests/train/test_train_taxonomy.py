"""A run records the ranks above its species: from the labels file's Latin names, or a --taxonomy CSV
checked against the species before any photo is encoded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monkeysee.checkpoint import Manifest
from monkeysee.data.taxonomy import Taxonomy
from monkeysee.errors import CheckpointError, DataError
from monkeysee.train.trainer import Trainer, default_store
from tests.conftest import tiny_config


def test_a_taxonomy_file_is_recorded_in_the_run(synthetic_data: Path, tmp_path: Path):
    path = tmp_path / "taxonomy.csv"
    path.write_text("species,family,order\nred monkey,Rubridae,Colores\nn1,Viridae,Colores\n"
                    "caerulea_simia,Viridae,Colores\nother,Otheridae,Colores\n")
    out = tmp_path / "run"
    cfg = tiny_config(synthetic_data, out, taxonomy=str(path), head_epochs=1, finetune_epochs=0)
    lines: list[str] = []
    Trainer(cfg, out).run(log=lines.append)
    recorded = Taxonomy.from_dict(json.loads((out / "manifest.json").read_text())["taxonomy"])
    lineage = {"n0": ("Rubridae", "Colores"), "n1": ("Viridae", "Colores"), "n2": ("Viridae", "Colores")}
    assert recorded == Taxonomy(("family", "order"), lineage, str(path))
    assert f"taxonomy: 2 family taxa, 1 order taxa ({path})" in lines


def test_a_species_missing_from_the_taxonomy_file_stops_the_run_before_any_photo_is_encoded(
        synthetic_data: Path, tmp_path: Path):
    path = tmp_path / "taxonomy.csv"
    path.write_text("species,genus\nn0,Rubra\nn1,Viridis\n")
    out = tmp_path / "run"
    with pytest.raises(DataError) as err:
        Trainer(tiny_config(synthetic_data, out, taxonomy=str(path)), out).run(log=lambda _: None)
    assert "species 'n2' (blue monkey) is not in the taxonomy file" in err.value.message
    assert not any(default_store(out).rglob("*.npy")) and not (out / "config.json").exists()


def test_a_manifest_whose_taxonomy_names_other_species_is_refused(tiny_run: Path):
    d = json.loads((tiny_run / "manifest.json").read_text())
    d["taxonomy"]["lineage"] = {"n0": ["Rubra"], "x9": ["Nova"], "n2": ["Caerulea"]}
    with pytest.raises(CheckpointError, match=r"taxonomy\.lineage' does not name exactly the species"):
        Manifest.from_dict(d, "run/manifest.json")
    d["taxonomy"]["lineage"] = {"n0": ["Rubra", "extra"], "n1": ["Viridis"], "n2": ["Caerulea"]}
    with pytest.raises(CheckpointError, match="lineage must give every species one name for each of its 1"):
        Manifest.from_dict(d, "run/manifest.json")
