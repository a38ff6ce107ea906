"""The sightings store on SQLite and PostgreSQL: exact rows, photos once per content hash, review and
history, and hostile input refused with nothing lost."""

from __future__ import annotations

from datetime import timedelta

import pytest

from monkeysee.sightings import (
    AccessError,
    Filter,
    InputError,
    ModelAnswer,
    PhotoIn,
    PlaceView,
    Store,
    StoreUnavailable,
)
from monkeysee.sightings.photos import sha256_of
from tests.sightings.conftest import START
from tests.sightings.helpers import answer, jpeg, sighting


@pytest.fixture
def people(store: Store):
    store.add_places([PlaceView("Monkey house", 51.5, -0.15), PlaceView("Island")])
    ana, ana_token = store.add_keeper("Ana")
    rev, rev_token = store.add_keeper("Rui", reviewer=True)
    return ana, ana_token, rev, rev_token


def test_a_saved_sighting_reads_back_exactly(store: Store, people) -> None:
    ana = people[0]
    v = store.save(sighting(1, 2, place="Monkey house", notes="eating\nfigs"), by=ana)
    got = store.get(v.id)
    assert got == v
    assert (got.id, got.observed_at, got.place, got.recorded_by, got.taxon, got.probability, got.status,
            got.notes) == (1, START, "Monkey house", "Ana", "Alouatta palliata", 0.9, "unreviewed",
                           "eating\nfigs")
    assert [p.sha256 for p in got.photos] == [sha256_of(jpeg(1)), sha256_of(jpeg(2))]
    assert store.photos.read(got.photos[1].location) == jpeg(2)
    assert got.photos[0].location == f"{got.photos[0].sha256[:2]}/{got.photos[0].sha256}.jpg"


def test_a_photo_is_stored_once_and_known_as_logged(store: Store, people) -> None:
    a = store.save(sighting(1, 2), by=people[0])
    b = store.save(sighting(2, 3), by=people[0])
    assert a.photos[1].location == b.photos[0].location
    files = sorted(p.name for p in store.photos.root.rglob("*") if p.is_file())
    assert files == sorted(f"{sha256_of(jpeg(i))}.jpg" for i in (1, 2, 3))
    assert store.logged([sha256_of(jpeg(i)) for i in (1, 3, 4)]) == {sha256_of(jpeg(1)), sha256_of(jpeg(3))}


def test_a_save_repeated_with_its_key_is_stored_once(store: Store, people) -> None:
    first = store.save(sighting(1, key="phone-7f3a"), by=people[0])
    again = store.save(sighting(1, key="phone-7f3a"), by=people[0])
    assert again.id == first.id
    assert [v.id for v in store.sightings()] == [first.id]


def test_only_reviewers_confirm_or_correct_and_every_change_is_history(store: Store, people) -> None:
    ana, _, rui, _ = people
    v = store.save(sighting(1), by=ana)
    with pytest.raises(AccessError, match="Ana is a keeper, not a reviewer"):
        store.correct(v.id, "Ateles geoffroyi", by=ana)
    with pytest.raises(AccessError):
        store.confirm(v.id, by=ana)
    store.correct(v.id, "Ateles geoffroyi", by=rui)
    store.answer_again(v.id, answer("Cebus capucinus", p=0.97))
    got = store.get(v.id)
    assert (got.species, got.status, got.reviewed_by, got.taxon, got.name) == \
        ("Ateles geoffroyi", "corrected", "Rui", "Cebus capucinus", "Ateles geoffroyi")
    history = [(h.who, h.action, h.changes) for h in store.history(v.id)]
    assert history == [
        ("Ana", "recorded", {}),
        ("Rui", "corrected", {"species": [None, "Ateles geoffroyi"], "status": ["unreviewed", "corrected"]}),
        (None, "model answer", {"taxon": ["Alouatta palliata", "Cebus capucinus"],
                                "species_hint": ["Alouatta palliata", "Cebus capucinus"],
                                "probability": [0.9, 0.97]}),
    ]
    h = store.history(v.id)
    assert [e.at - h[0].at for e in h] == [timedelta(0), timedelta(minutes=1), timedelta(minutes=2)]


def test_confirm_takes_the_models_species(store: Store, people) -> None:
    v = store.save(sighting(1), by=people[0])
    got = store.confirm(v.id, by=people[2])
    assert (got.species, got.status) == ("Alouatta palliata", "confirmed")


def test_review_queue_puts_what_needs_a_person_first(store: Store, people) -> None:
    ana = people[0]
    sure = store.save(sighting(1, answer=answer(p=0.99)), by=ana)
    unsure = store.save(sighting(2, answer=answer(p=0.55)), by=ana)
    genus = store.save(sighting(3, answer=answer("Alouatta", p=0.9, rank="genus")), by=ana)
    retake = store.save(sighting(4, answer=answer(p=0.8, verdict="retake")), by=ana)
    unknown = store.save(sighting(5, answer=answer(None, p=0.4, verdict="unknown", rank=None)), by=ana)
    done = store.save(sighting(6, answer=answer(p=0.3)), by=ana)
    store.confirm(done.id, by=people[2])
    queue = [(v.id, need) for v, need in store.review_queue()]
    assert queue == [(unknown.id, 4.6), (retake.id, 2.2), (genus.id, 0.6), (unsure.id, 0.45),
                     (sure.id, 0.01)]


def test_filters_and_species_overview(store: Store, people) -> None:
    ana, rui = people[0], people[2]
    a = store.save(sighting(1, hours=0, place="Monkey house"), by=ana)
    b = store.save(sighting(2, hours=24 * 8, place="Island"), by=ana)
    c = store.save(sighting(3, hours=1, place_text="by the café"), by=ana)
    store.correct(c.id, "Ateles geoffroyi", by=rui)
    assert [v.id for v in store.sightings(Filter(species="Alouatta palliata"))] == [b.id, a.id]
    assert [v.id for v in store.sightings(Filter(place="Island"))] == [b.id]
    assert [v.id for v in store.sightings(Filter(place="by the café"))] == [c.id]
    assert [v.id for v in store.sightings(Filter(status="corrected"))] == [c.id]
    assert [v.id for v in store.sightings(Filter(since=START + timedelta(hours=1)))] == [b.id, c.id]
    assert [v.id for v in store.sightings(Filter(until=START + timedelta(hours=1)))] == [a.id]
    over = {o.name: o for o in store.overview()}
    assert sorted(over) == ["Alouatta palliata", "Ateles geoffroyi"]
    howler = over["Alouatta palliata"]
    assert (howler.sightings, howler.last_seen, howler.per_place, howler.per_week) == \
        (2, START + timedelta(hours=192), {"Island": 1, "Monkey house": 1}, {"2026-W18": 1, "2026-W19": 1})
    assert over["Ateles geoffroyi"].per_place == {"by the café": 1}


SQL = "'); DROP TABLE sightings; --"


def test_sql_in_every_text_field_is_kept_as_text(store: Store, people) -> None:
    ana, rui = people[0], people[2]
    hostile = ModelAnswer(run=SQL, taxon=SQL, species_hint=SQL, probability=0.5)
    v = store.save(sighting(1, place_text=SQL, notes=SQL, key="k1", answer=hostile), by=ana)
    store.edit_notes(v.id, SQL + " again", by=ana)
    with pytest.raises(InputError, match="may hold only letters"):
        store.correct(v.id, SQL, by=rui)
    with pytest.raises(InputError, match="keeper name"):
        store.add_keeper(SQL)
    got = store.get(v.id)
    assert (got.place_text, got.run, got.taxon, got.species_hint, got.notes) == (SQL, SQL, SQL, SQL,
                                                                                SQL + " again")
    assert len(store.sightings()) == 1


def test_hostile_values_are_refused_with_nothing_lost(store: Store, people) -> None:
    ana, ana_token, rui, rui_token = people
    kept = store.save(sighting(1), by=ana)
    with pytest.raises(InputError, match="notes is 10,485,760 characters long; at most 4,000 are kept"):
        store.save(sighting(2, notes="x" * 10 * 1024 * 1024), by=ana)
    for bad in ("../../etc/passwd", "..", "a/b", "a\\b", ".hidden", "", "x" * 121):
        with pytest.raises(InputError):
            store.correct(kept.id, bad, by=rui)
    with pytest.raises(InputError, match="not a readable photo"):
        store.save(sighting(2, photos=[PhotoIn(b"GIF89a not really")]), by=ana)
    with pytest.raises(InputError, match="1 to 3 photos"):
        store.save(sighting(1, 2, 3, 4), by=ana)
    with pytest.raises(InputError, match="the same photo is given twice"):
        store.save(sighting(5, 5), by=ana)
    with pytest.raises(InputError, match="no place named 'Moon'"):
        store.save(sighting(2, place="Moon"), by=ana)
    with pytest.raises(InputError, match="probability"):
        store.save(sighting(2, answer=ModelAnswer(probability=float("nan"))), by=ana)
    with pytest.raises(InputError, match="in the future"):
        store.save(sighting(2, hours=24 * 400), by=ana)
    with pytest.raises(InputError, match="control character"):
        store.save(sighting(2, place_text="a\x00b"), by=ana)
    with pytest.raises(AccessError, match="belongs to no keeper"):
        store.keeper(ana_token + "x")
    assert store.keeper(ana_token) == ana and store.keeper(rui_token) == rui
    bea, _ = store.add_keeper("Bea")
    with pytest.raises(AccessError, match="Bea did not record sighting 1"):
        store.edit_notes(kept.id, "mine now", by=bea)
    with pytest.raises(InputError, match="exists already"):
        store.add_keeper("Ana")
    assert [v.id for v in store.sightings()] == [kept.id]
    assert store.get(kept.id) == kept


def test_a_full_disk_fails_the_save_and_keeps_the_log(store: Store, people, monkeypatch) -> None:
    import errno

    import monkeysee.sightings.photos as photos

    def full(path, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    kept = store.save(sighting(1), by=people[0])
    monkeypatch.setattr(photos, "atomic_write_bytes", full)
    with pytest.raises(StoreUnavailable, match=r"No space left on device.*Fix: free disk space"):
        store.save(sighting(2), by=people[0])
    assert [v.id for v in store.sightings()] == [kept.id]


def test_an_unreachable_database_says_which_and_why(tmp_path) -> None:
    url = f"postgresql://nobody:secret@/nowhere?host={tmp_path}"
    with pytest.raises(StoreUnavailable) as e:
        Store.open(url, photos=tmp_path / "photos")
    assert "cannot be used" in str(e.value) and "secret" not in str(e.value)
    assert "check that the database server is running" in str(e.value)
