"""Exports: exact rows, the same bytes from SQLite and PostgreSQL, and a Camtrap DP package that
frictionless accepts against the Camtrap DP 1.0 table schemas shipped in the package (the official URLs
cannot be fetched offline; the files are the 1.0 release's)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from monkeysee.sightings import PlaceView, Store
from monkeysee.sightings.exports import EXPORTS, ExportOptions, export
from tests.sightings.conftest import Clock
from tests.sightings.helpers import answer, sighting

SITE = (51.535, -0.153)


def fill(store: Store) -> None:
    """Four sightings: machine answers at species and genus rank, one corrected, one not ours."""
    store.add_places([PlaceView("Monkey house", 51.5351, -0.1534), PlaceView("Island")])
    ana, _ = store.add_keeper("Ana")
    rui, _ = store.add_keeper("Rui", reviewer=True)
    store.save(sighting(1, 2, key="s-one", place="Monkey house", notes="two, 'quoted', \"notes\""), by=ana)
    genus = answer("Alouatta", 0.7, rank="genus")
    store.save(sighting(3, hours=2, key="s-two", place="Island", answer=genus), by=ana)
    c = store.save(sighting(4, hours=30, key="s-three", place_text="café; by the gate"), by=ana)
    store.save(sighting(5, hours=31, key="s-four", answer=answer(None, 0.3, "unknown", None)), by=None)
    store.correct(c.id, "Ateles geoffroyi", by=rui)


def write_all(store: Store, out: Path) -> dict[str, bytes]:
    opts = ExportOptions(site=SITE, local_schemas=True)
    for fmt in EXPORTS.names():
        export(store, fmt, out / (fmt if fmt == "camtrap-dp" else f"{fmt}.csv"), opts)
    return {str(f.relative_to(out)): f.read_bytes() for f in out.rglob("*") if f.is_file()}


def test_exports_hold_the_log_exactly(store: Store, tmp_path) -> None:
    fill(store)
    write_all(store, tmp_path)
    rows = list(csv.DictReader((tmp_path / "csv.csv").open()))
    assert [(r["key"], r["place"], r["rank"], r["name"], r["status"], r["probability"]) for r in rows] == [
        ("s-one", "Monkey house", "species", "Alouatta palliata", "unreviewed", "0.900000"),
        ("s-two", "Island", "genus", "Alouatta", "unreviewed", "0.700000"),
        ("s-three", "café; by the gate", "species", "Ateles geoffroyi", "corrected", "0.900000"),
        ("s-four", "", "", "", "unreviewed", "0.300000"),
    ]
    assert rows[0]["notes"] == "two, 'quoted', \"notes\""
    assert rows[0]["observed_at"] == "2026-05-01T09:00:00+00:00"
    dwc = list(csv.DictReader((tmp_path / "dwc.csv").open()))
    assert [(r["occurrenceID"], r["basisOfRecord"], r["scientificName"], r["taxonRank"], r["identifiedBy"],
             r["decimalLatitude"]) for r in dwc] == [
        ("monkeysee:s-one", "MachineObservation", "Alouatta palliata", "species", "monkeysee (runs/monkeys)",
         "51.535100"),
        ("monkeysee:s-two", "MachineObservation", "Alouatta", "genus", "monkeysee (runs/monkeys)",
         "51.535000"),
        ("monkeysee:s-three", "HumanObservation", "Ateles geoffroyi", "species", "Rui", "51.535000"),
    ]
    obs = list(csv.DictReader((tmp_path / "camtrap-dp" / "observations.csv").open()))
    assert [(r["observationType"], r["scientificName"], r["classificationMethod"], r["classifiedBy"],
             r["classificationProbability"], r["observationTags"]) for r in obs] == [
        ("animal", "Alouatta palliata", "machine", "monkeysee (runs/monkeys)", "0.900000",
         "rank:species|status:unreviewed|verdict:species"),
        ("animal", "Alouatta", "machine", "monkeysee (runs/monkeys)", "0.700000",
         "rank:genus|status:unreviewed|verdict:species"),
        ("animal", "Ateles geoffroyi", "human", "Rui", "", "rank:species|status:corrected|verdict:species"),
        ("unknown", "", "machine", "monkeysee (runs/monkeys)", "0.300000",
         "status:unreviewed|verdict:unknown"),
    ]
    package = json.loads((tmp_path / "camtrap-dp" / "datapackage.json").read_text())
    assert package["taxonomic"] == [{"scientificName": "Alouatta", "taxonRank": "genus"},
                                    {"scientificName": "Alouatta palliata", "taxonRank": "species"},
                                    {"scientificName": "Ateles geoffroyi", "taxonRank": "species"}]
    media = list(csv.DictReader((tmp_path / "camtrap-dp" / "media.csv").open()))
    assert len(media) == 5 and all((tmp_path / "camtrap-dp" / m["filePath"]).is_file() for m in media)


def test_the_camtrap_dp_package_validates(store: Store, tmp_path, monkeypatch) -> None:
    frictionless = pytest.importorskip("frictionless")
    fill(store)
    export(store, "camtrap-dp", tmp_path / "dp", ExportOptions(site=SITE, local_schemas=True))
    monkeypatch.chdir(tmp_path / "dp")  # frictionless reads a local profile from the working folder
    report = frictionless.validate("datapackage.json")
    assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])
    assert [t.stats.get("rows") for t in report.tasks] == [4, 5, 4]


def test_camtrap_dp_without_coordinates_says_how(store: Store, tmp_path) -> None:
    from monkeysee.sightings import InputError

    fill(store)
    with pytest.raises(InputError, match=r"place '\(none\)' of sighting 4 has no coordinates"):
        export(store, "camtrap-dp", tmp_path / "dp")


def test_sqlite_and_postgresql_export_the_same_bytes(tmp_path, pg_url) -> None:
    outputs = []
    for name, db in (("sqlite", str(tmp_path / "log.db")), ("postgresql", pg_url)):
        store = Store.open(db, photos=tmp_path / f"photos-{name}", clock=Clock())
        try:
            fill(store)
            outputs.append(write_all(store, tmp_path / name))
        finally:
            store.close()
    assert sorted(outputs[0]) == sorted(outputs[1])
    assert len(outputs[0]) == 2 + 4 + 3 + 5  # csv, dwc; package and tables; schemas; photos
    for name, data in outputs[0].items():
        assert outputs[1][name] == data, name


def test_the_camtrap_dp_metadata_meets_the_profile(store: Store, tmp_path) -> None:
    pytest.importorskip("frictionless")
    from monkeysee.sightings.exports import camtrap_metadata_errors

    fill(store)
    export(store, "camtrap-dp", tmp_path / "dp", ExportOptions(site=SITE))
    package = json.loads((tmp_path / "dp" / "datapackage.json").read_text())
    assert package["profile"] == "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0/camtrap-dp-profile.json"
    assert camtrap_metadata_errors(package) == []
    assert camtrap_metadata_errors(package | {"project": {"title": "x"}}) == [
        "project: 'samplingDesign' is a required property", "project: 'captureMethod' is a required property",
        "project: 'individualAnimals' is a required property",
        "project: 'observationLevel' is a required property"]
