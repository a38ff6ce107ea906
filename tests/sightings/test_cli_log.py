"""`monkeysee log ...` and `monkeysee predict RUN FOLDER --log DB`, through the command line."""

from __future__ import annotations

import csv
from pathlib import Path

from monkeysee.cli import main
from monkeysee.data.species import Species
from monkeysee.sightings import Store
from monkeysee.sightings.exports import export
from monkeysee.sightings.training import export_training
from tests.sightings.conftest import Clock
from tests.sightings.test_exports import fill


def test_keeper_add_prints_a_token_once_and_keeps_its_hash(tmp_path, capsys) -> None:
    db = str(tmp_path / "log.db")
    assert main(["log", "keeper", "add", "Ana", "--reviewer", "--db", db]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "reviewer Ana added. Token (shown this once; keep it safe):"
    token = out[1]
    store = Store.open(db)
    assert store.keeper(token).name == "Ana"
    assert token not in (tmp_path / "log.db").read_bytes().decode(errors="replace")
    assert main(["log", "keeper", "add", "Ana", "--db", db]) == 2
    assert "a keeper named 'Ana' exists already" in capsys.readouterr().err


def test_every_log_command_finds_the_database_in_the_environment(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MONKEYSEE_DB", str(tmp_path / "env.db"))
    assert main(["log", "place", "Island", "--site", "51.5,-0.15"]) == 0
    assert main(["log", "keeper", "list"]) == 0
    assert Store.open(str(tmp_path / "env.db")).places()[0].latitude == 51.5
    monkeypatch.delenv("MONKEYSEE_DB")
    assert main(["log", "keeper", "list"]) == 2
    assert "no sightings database given" in capsys.readouterr().err


def test_backup_restores_into_another_database_with_the_same_exports(db_url, tmp_path) -> None:
    source = Store.open(str(tmp_path / "src.db"), clock=Clock())
    fill(source)
    export(source, "csv", tmp_path / "before.csv")
    assert main(["log", "backup", str(tmp_path / "log.tar"), "--db", str(tmp_path / "src.db")]) == 0
    assert main(["log", "restore", str(tmp_path / "log.tar"), "--db", db_url,
                 "--photos", str(tmp_path / "restored-photos")]) == 0
    restored = Store.open(db_url, photos=tmp_path / "restored-photos", clock=Clock())
    export(restored, "csv", tmp_path / "after.csv")
    assert (tmp_path / "after.csv").read_bytes() == (tmp_path / "before.csv").read_bytes()
    assert [h.action for h in restored.history(3)] == ["recorded", "corrected"]
    assert restored.add_keeper("Bea")[0].id == 3  # new ids follow the restored ones
    assert main(["log", "restore", str(tmp_path / "log.tar"), "--db", db_url,
                 "--photos", str(tmp_path / "restored-photos")]) == 2


def test_export_command_writes_each_format(tmp_path, capsys) -> None:
    db = str(tmp_path / "log.db")
    fill(Store.open(db, clock=Clock()))
    for fmt, out in (("csv", "log.csv"), ("dwc", "dwc.csv"), ("camtrap-dp", "dp")):
        args = ["log", "export", "--db", db, "--format", fmt, str(tmp_path / out), "--site", "51.5,-0.1"]
        assert main(args) == 0
    assert len(list(csv.reader((tmp_path / "dwc.csv").open()))) == 1 + 3
    assert (tmp_path / "dp" / "datapackage.json").is_file()
    assert main(["log", "export", "--db", db, "--format", "camtrap-dp", str(tmp_path / "dp2")]) == 2
    assert "has no coordinates" in capsys.readouterr().err


def test_export_training_puts_reviewed_photos_in_a_folder_per_species(tmp_path) -> None:
    store = Store.open(str(tmp_path / "log.db"), clock=Clock())
    fill(store)
    rui = store.keepers()[1]
    store.confirm(1, by=rui)
    known = (Species("n0", "mantled_howler", "alouatta_palliata"), Species("n1", "white_faced", "cebus"))
    counts = export_training(store, tmp_path / "train", known)
    assert counts == {"ateles_geoffroyi": 1, "n0": 2}
    folders = sorted(p.parent.name for p in (tmp_path / "train").rglob("*.jpg"))
    assert folders == ["ateles_geoffroyi", "n0", "n0"]
    assert (tmp_path / "train" / "monkey_labels.txt").read_text() == (
        "Label, Latin Name, Common Name\nateles_geoffroyi, ateles_geoffroyi, ateles_geoffroyi\n"
        "n0, alouatta_palliata, mantled_howler\n")


def test_predict_logs_a_folder_once(tiny_run: Path, synthetic_data: Path, tmp_path, capsys) -> None:
    folder = synthetic_data / "training" / "n1"
    db = str(tmp_path / "log.db")
    assert main(["predict", str(tiny_run), str(folder), "--log", db, "--place", "Island"]) == 0
    assert "10 sightings logged, 0 photos already in the log" in capsys.readouterr().err
    assert main(["predict", str(tiny_run), str(folder), str(synthetic_data / "training" / "n0" / "n0_00.jpg"),
                 "--log", db]) == 0
    assert "1 sightings logged, 10 photos already in the log" in capsys.readouterr().err
    views = list(Store.open(db).all())
    assert len(views) == 11 and len({v.photos[0].sha256 for v in views}) == 11
    assert {v.place_text for v in views[:10]} == {"Island"}
    assert [v.species_hint for v in views[:10]] == ["Viridis simia"] * 10
    assert all(v.run == str(tiny_run) and v.verdict in ("species", "retake", "unknown") for v in views)


def test_export_training_with_the_run_gives_a_folder_to_grow_it_on(tiny_run, tmp_path, capsys) -> None:
    from monkeysee.data.layout import scan_dataset

    db = str(tmp_path / "log.db")
    store = Store.open(db, clock=Clock())
    fill(store)  # sighting 3 corrected to "Ateles geoffroyi", a species the run does not know
    rui = store.keepers()[1]
    store.correct(1, "caerulea simia", by=rui)  # the run's n2, by its Latin name
    out = tmp_path / "grow"
    assert main(["log", "export-training", str(out), "--run", str(tiny_run), "--db", db]) == 0
    assert "3 reviewed photos in 2 species folders" in capsys.readouterr().out
    index = scan_dataset(out, val_fraction=0.2, test_fraction=0.2, workers=1)
    assert [s.label for s in index.species] == ["ateles_geoffroyi", "n0", "n1", "n2"]
    assert [s.display_name for s in index.species] == ["ateles geoffroyi", "red monkey", "green monkey",
                                                        "blue monkey"]
    total = {s.label: 0 for s in index.species}
    for split in ("train", "val", "test"):
        for sample in index.split(split):
            total[index.species[sample.target].label] += 1
    assert total == {"ateles_geoffroyi": 1, "n0": 10, "n1": 10, "n2": 12}
    assert main(["log", "export-training", str(out), "--run", str(tiny_run), "--db", db]) == 0  # again: same
    assert sum(1 for p in out.rglob("*") if p.is_file()) == 1 + 30 + 3  # labels, run photos, reviewed
