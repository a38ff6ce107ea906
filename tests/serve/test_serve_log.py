"""The keeper's log over HTTP, on SQLite and on PostgreSQL: save, list, review, history, overview, and
who may do what."""

from __future__ import annotations

import numpy as np
import pytest

from monkeysee.sightings import Fusion
from tests.serve.log_fixtures import auth, save

LATIN = ("Alouatta palliata", "Erythrocebus patas", "Cacajao calvus")  # the served run's species, in order


def test_a_keeper_saves_a_sighting_with_two_photos_and_the_model_answers_each(log_client, people, make_photo):
    answers = [log_client.post("/api/predict?cam=false", files={"photo": ("p.jpg", make_photo(seed=s))})
               .json() for s in (1, 2)]
    r = save(log_client, [make_photo(seed=1), make_photo(seed=2)], people["ana"], place="Monkey house",
             notes="by the pond")
    assert r.status_code == 201, r.text
    s = r.json()
    assert (s["id"], s["recorded_by"], s["place"], s["place_text"], s["notes"], s["status"]) == (
        1, "Ana", "Monkey house", None, "by the pond", "unreviewed")
    assert s["observed_at"].startswith("2026-05-04T10:00:00")
    # A save's photos go through the model in one batch: equal to single answers up to float rounding.
    assert [p["probability"] for p in s["photos"]] == pytest.approx([a["probability"] for a in answers],
                                                                    abs=1e-5)
    assert [p["species_hint"] for p in s["photos"]] == [a["latin_name"] for a in answers]
    # The sighting's answer is the photos' fused probabilities, not the surest photo's.
    fused = Fusion().fuse(np.array([[g["probability"] for g in sorted(a["top"], key=lambda g: g["index"])]
                                    for a in answers]), [a["quality"]["ok"] for a in answers])
    assert (s["probability"], s["species_hint"], s["verdict"]) == (
        pytest.approx(fused.max(), abs=1e-5), LATIN[int(fused.argmax())], "species")
    assert s["probability"] != pytest.approx(max(a["probability"] for a in answers), abs=1e-3)
    assert s["photos"][1]["url"] == "/api/log/sightings/1/photos/1"
    photo = log_client.get(s["photos"][1]["url"], headers=auth(people["ana"]))
    assert photo.status_code == 200 and photo.content == make_photo(seed=2)
    assert photo.headers["content-type"] == "image/jpeg"


def test_a_sightings_answer_is_exactly_the_fusion_of_its_photos_answered_in_one_batch(
        log_client, people, make_photo, log_service):
    photos = [make_photo(seed=21), make_photo((64, 96), seed=22), make_photo(seed=23)]
    s = save(log_client, photos, people["ana"]).json()
    predictor = log_service.predictor
    images = [log_service.read(p, f"p{i}.jpg") for i, p in enumerate(photos)]
    probs = predictor.probabilities(predictor.forward(predictor.prepare(images)).logits.float().numpy())
    fused = Fusion().fuse(probs, [predictor.assess(im).ok for im in images])
    assert s["probability"] == float(fused.max())
    assert [p["probability"] for p in s["photos"]] == [pytest.approx(float(q.max()), abs=1e-6) for q in probs]
    assert [p["weight"] for p in s["photos"]] == [1.0, 1.0, 1.0]


def test_a_retry_with_the_same_key_saves_once(log_client, people, make_photo):
    first = save(log_client, [make_photo(seed=3)], people["ana"], key="phone-1-0001").json()
    again = save(log_client, [make_photo(seed=3)], people["ana"], key="phone-1-0001").json()
    assert first == again
    assert len(log_client.get("/api/log/sightings", headers=auth(people["ana"])).json()["sightings"]) == 1


def test_the_log_filters_by_species_place_date_and_status(log_client, people, make_photo):
    a = save(log_client, [make_photo(seed=4)], people["ana"], place="Island").json()
    b = save(log_client, [make_photo(seed=5)], people["ana"], place_text="car park",
             observed_at="2026-06-01T08:00:00+00:00").json()
    log_client.post(f"/api/log/sightings/{b['id']}/correct", json={"species": "Saimiri sciureus"},
                headers=auth(people["rui"]))

    def ids(**q: str) -> list[int]:
        r = log_client.get("/api/log/sightings", params=q, headers=auth(people["ana"]))
        return [s["id"] for s in r.json()["sightings"]]

    assert ids() == [b["id"], a["id"]]  # newest first
    assert ids(place="Island") == [a["id"]]
    assert ids(place="car park") == [b["id"]]
    assert ids(species="Saimiri sciureus") == [b["id"]]
    assert ids(status="corrected") == [b["id"]]
    assert ids(status="unreviewed") == [a["id"]]
    assert ids(since="2026-05-10T00:00:00Z") == [b["id"]]
    assert ids(until="2026-05-10T00:00:00Z") == [a["id"]]


def test_a_reviewer_corrects_with_a_new_name_and_the_history_says_who(log_client, people, make_photo):
    s = save(log_client, [make_photo(seed=6)], people["ana"]).json()
    r = log_client.post(f"/api/log/sightings/{s['id']}/correct", json={"species": "Ateles geoffroyi"},
                    headers=auth(people["rui"]))
    assert r.status_code == 200, r.text
    assert (r.json()["species"], r.json()["status"], r.json()["reviewed_by"], r.json()["name"]) == (
        "Ateles geoffroyi", "corrected", "Rui", "Ateles geoffroyi")
    h = log_client.get(f"/api/log/sightings/{s['id']}/history", headers=auth(people["ana"])).json()["history"]
    assert [(e["who"], e["action"]) for e in h] == [("Ana", "recorded"), ("Rui", "corrected")]
    assert h[1]["changes"] == {"species": [None, "Ateles geoffroyi"], "status": ["unreviewed", "corrected"]}
    names = log_client.get("/api/log/species", headers=auth(people["ana"])).json()["names"]
    assert names == ["Alouatta palliata", "Erythrocebus patas", "Cacajao calvus", "Ateles geoffroyi"]


def test_confirm_keeps_the_models_species(log_client, people, make_photo):
    s = save(log_client, [make_photo(seed=7)], people["ana"]).json()
    r = log_client.post(f"/api/log/sightings/{s['id']}/confirm", headers=auth(people["rui"])).json()
    assert (r["species"], r["status"], r["reviewed_by"]) == (s["species_hint"], "confirmed", "Rui")


def test_the_overview_counts_per_place_and_week(log_client, people, make_photo):
    for seed, place in ((8, "Island"), (9, "Island"), (10, "Monkey house")):
        s = save(log_client, [make_photo(seed=seed)], people["ana"], place=place).json()
        log_client.post(f"/api/log/sightings/{s['id']}/correct", json={"species": "Cebus imitator"},
                    headers=auth(people["rui"]))
    [row] = log_client.get("/api/log/overview", headers=auth(people["ana"])).json()["species"]
    assert row == {"name": "Cebus imitator", "sightings": 3, "last_seen": row["last_seen"],
                   "per_place": {"Island": 2, "Monkey house": 1}, "per_week": {"2026-W19": 3}}
    assert row["last_seen"].startswith("2026-05-04T10:00:00")


def test_the_review_queue_puts_disagreeing_photos_first_and_says_why(log_client, people, make_photo):
    one = save(log_client, [make_photo(seed=11)], people["ana"]).json()
    # Two photos whose answers differ (if this tiny model calls them alike, the queue order is by need).
    two = save(log_client, [make_photo(seed=12), make_photo((64, 96), seed=40)], people["ana"]).json()
    queue = log_client.get("/api/log/review", headers=auth(people["ana"])).json()["queue"]
    assert {q["sighting"]["id"] for q in queue} == {one["id"], two["id"]}
    needs = [q["need"] for q in queue]
    assert needs == sorted(needs, reverse=True)
    for q in queue:
        s = q["sighting"]
        disagree = len({p["species_hint"] for p in s["photos"]}) > 1
        assert ("photos disagree" in q["reasons"]) == disagree
        assert ("low probability" in q["reasons"]) == (s["probability"] < 0.5)
        base = 1.0 - s["probability"] + {"unknown": 3.0, "retake": 2.0}.get(s["verdict"], 0.0)
        assert q["need"] == pytest.approx(base + (1.0 if disagree else 0.0), abs=1e-6)


def test_places_come_from_the_config(log_client, people):
    r = log_client.get("/api/log/places", headers=auth(people["ana"])).json()
    assert r == {"places": [{"name": "Monkey house", "latitude": None, "longitude": None},
                            {"name": "Island", "latitude": None, "longitude": None}]}


def test_photos_that_name_different_species_go_first_in_the_review_queue(log_client, people, log_db,
                                                                         tmp_path, make_photo):
    from datetime import UTC, datetime

    from monkeysee.sightings import ModelAnswer, NewSighting, PhotoIn, Store

    def said(species: str, p: float) -> ModelAnswer:
        return ModelAnswer(run="r", rank="species", taxon=species, species_hint=species, probability=p)

    store = Store.open(log_db, photos=tmp_path / "photos")
    try:
        alike = store.save(NewSighting(
            photos=[PhotoIn(make_photo(seed=60), answer=said("Cacajao calvus", 0.6)),
                    PhotoIn(make_photo(seed=61), answer=said("Cacajao calvus", 0.7))],
            observed_at=datetime(2026, 5, 4, tzinfo=UTC), answer=said("Cacajao calvus", 0.7)))
        differ = store.save(NewSighting(
            photos=[PhotoIn(make_photo(seed=62), answer=said("Cacajao calvus", 0.9)),
                    PhotoIn(make_photo(seed=63), answer=said("Erythrocebus patas", 0.8))],
            observed_at=datetime(2026, 5, 4, tzinfo=UTC), answer=said("Cacajao calvus", 0.9)))
    finally:
        store.close()
    queue = log_client.get("/api/log/review", headers=auth(people["ana"])).json()["queue"]
    assert [(q["sighting"]["id"], q["need"], q["reasons"]) for q in queue] == [
        (differ.id, pytest.approx(1.1), ["photos disagree"]), (alike.id, pytest.approx(0.3), [])]


def test_serve_takes_the_log_options(run_dir, tmp_path):
    from monkeysee.cli import build_parser
    from monkeysee.cli import serve as serve_cli
    from monkeysee.serve import ServeConfig

    args = build_parser().parse_args(["serve", str(run_dir), "--db", "postgresql://zoo/log", "--photos",
                                      str(tmp_path), "--places", "Monkey house", "Island"])
    config = serve_cli.config_from_args(args)
    assert (config.db, config.photos, config.places) == ("postgresql://zoo/log", tmp_path,
                                                         ("Monkey house", "Island"))
    assert ServeConfig(run_dir).log_default == run_dir.with_name(run_dir.name + "-log.db")
