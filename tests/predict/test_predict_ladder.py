"""The answer ladder through Predictor.decide on a hand-built taxonomy with hand-set logits: exact ranks,
taxa and verdicts, the JSON and CSV fields, the table line, and the collection list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from monkeysee.data.species import Species
from monkeysee.errors import ConfigError, DataError
from monkeysee.predict import Predictor
from monkeysee.results_csv import csv_row
from tests.conftest import untrained_run

SPECIES = (Species("a1", "pygmy_marmoset", "cebuella_pygmaea"),
           Species("a2", "silvery_marmoset", "mico_argentatus"),
           Species("b1", "tamarin", "saguinus_oedipus"), Species("c1", "howler", "alouatta_palliata"))
# a1, a2 in genus A; b1 in genus B; A and B in family Callitrichidae; c1 in genus C, family Atelidae
TAXONOMY = {"ranks": ["genus", "family"], "source": "hand-built",
            "lineage": {"a1": ["A", "Callitrichidae"], "a2": ["A", "Callitrichidae"],
                        "b1": ["B", "Callitrichidae"], "c1": ["C", "Atelidae"]}}
LADDER = {"accuracy": 0.99, "ranks": ["species", "genus", "family"], "thresholds": [0.8, 0.8, 0.8],
          "source": "hand-set"}


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    directory = untrained_run(tmp_path_factory.mktemp("ladder_run"), "efficientnet_lite0", SPECIES, 64,
                              taxonomy=TAXONOMY, ladder=LADDER)
    return Predictor.from_run_dir(directory, precision="fp32")


PROBS = np.array([[0.90, 0.05, 0.05, 0.00],   # species a1
                  [0.45, 0.40, 0.10, 0.05],   # genus A (0.85)
                  [0.30, 0.20, 0.35, 0.15],   # family Callitrichidae (0.85)
                  [0.25, 0.25, 0.25, 0.25]])  # nothing reaches 0.8


def decide(predictor: Predictor, probs: np.ndarray = PROBS, **kw: object) -> list:
    logits = np.log(np.maximum(probs, 1e-12))  # T = 1: softmax gives the probabilities back
    return predictor.decide(logits, np.zeros((len(probs), 1280)), [f"p{i}.jpg" for i in range(len(probs))],
                            top_k=2, **kw)


def test_each_answer_is_given_at_the_finest_rank_its_probabilities_support(predictor):
    preds = decide(predictor)
    assert [(p.verdict, p.rank, p.taxon) for p in preds] == [
        ("species", "species", "pygmy marmoset"), ("species", "genus", "A"),
        ("species", "family", "Callitrichidae"), ("unknown", None, None)]
    assert [p.taxon_probability for p in preds[:3]] == [pytest.approx(0.9), pytest.approx(0.85),
                                                        pytest.approx(0.85)]
    assert preds[3].unsure and not preds[3].unknown
    assert preds[1].best.species.label == "a1" and preds[1].best.probability == pytest.approx(0.45)


def test_json_csv_and_line_carry_the_rank_and_taxon(predictor):
    genus, none = decide(predictor)[1], decide(predictor)[3]
    d = genus.to_dict()
    assert (d["rank"], d["taxon"], d["taxon_probability"], d["verdict"], d["species"]) == (
        "genus", "A", 0.85, "species", "pygmy marmoset")
    nd = none.to_dict()
    assert (nd["rank"], nd["taxon"], nd["taxon_probability"], nd["verdict"]) == (None, None, None, "unknown")
    row = csv_row(genus)
    assert (row["rank"], row["taxon"], row["taxon_probability"]) == ("genus", "A", 0.85)
    assert (csv_row(none)["rank"], csv_row(none)["taxon"]) == ("", "")
    assert genus.line() == ("p1.jpg: genus A 85.0%; the species is uncertain: pygmy marmoset 45%, "
                            "silvery marmoset 40%")
    assert none.line().startswith("p3.jpg: NOT ONE OF MY SPECIES (not sure enough at any rank; nearest: ")


def test_a_collection_renormalises_over_its_species_so_others_are_never_the_answer(predictor):
    mask = np.array([True, False, True, True])  # no silvery marmoset here
    preds = decide(predictor, collection=mask)
    # photo 1: 0.45 / (0.45 + 0.10 + 0.05) = 0.75 pygmy marmoset: below 0.8, genus A 0.75 too, family 0.9167
    assert [(p.rank, p.taxon) for p in preds] == [("species", "pygmy marmoset"), ("family", "Callitrichidae"),
                                                  ("family", "Callitrichidae"), (None, None)]
    assert preds[1].taxon_probability == pytest.approx(0.55 / 0.60)
    assert [g.species.label for g in preds[1].top] == ["a1", "b1"]
    assert all(g.species.label != "a2" for p in preds for g in p.top)
    assert preds[0].best.probability == pytest.approx(0.90 / 0.95)


def test_a_collection_file_names_species_by_any_name_and_refuses_an_unknown_line(predictor, tmp_path):
    from monkeysee.data.collection import collection_mask, read_collection

    path = tmp_path / "zoo.txt"
    path.write_text("# our marmosets\nPygmy marmoset\n\nmico_argentatus\nc1\n")
    assert read_collection(path, SPECIES).tolist() == [True, True, False, True]
    path.write_text("a1\nspider monkey\n")
    with pytest.raises(DataError, match="line 2 names 'spider monkey', not a species of this model"):
        read_collection(path, SPECIES)
    with pytest.raises(ConfigError, match="collection item 2 'gorilla' is not a species"):
        collection_mask(["a1", "gorilla"], SPECIES)


def test_a_run_without_a_ladder_answers_every_species_verdict_at_species_rank(predictor, tmp_path):
    plain = Predictor(predictor.run, precision="fp32")
    plain.ladder, plain.thresholds = None, ()
    preds = decide(plain)
    assert [(p.verdict, p.rank, p.taxon) for p in preds] == [
        ("species", "species", "pygmy marmoset"), ("species", "species", "pygmy marmoset"),
        ("species", "species", "tamarin"), ("species", "species", "pygmy marmoset")]


def test_the_predictor_reads_its_collection_file(predictor, tmp_path: Path):
    (tmp_path / "zoo.txt").write_text("howler\ntamarin\n")
    zoo = Predictor(predictor.run, precision="fp32", collection=tmp_path / "zoo.txt")
    preds = decide(zoo)
    assert [g.species.label for g in preds[0].top] == ["b1", "c1"]
    assert (preds[0].rank, preds[0].taxon) == ("species", "tamarin")  # 0.05 / 0.05 = 1


def test_a_run_recording_a_max_share_never_answers_with_a_taxon_of_most_of_its_species(tmp_path: Path):
    # Callitrichidae holds 3 of the 4 species: over the recorded max_share 0.5, so the photo it answered
    # in a run recording none has no answer; genus A (2 of 4) still answers
    directory = untrained_run(tmp_path / "run", "efficientnet_lite0", SPECIES, 64, taxonomy=TAXONOMY,
                              ladder=LADDER | {"max_share": 0.5})
    preds = decide(Predictor.from_run_dir(directory, precision="fp32"))
    assert [(p.verdict, p.rank, p.taxon) for p in preds] == [
        ("species", "species", "pygmy marmoset"), ("species", "genus", "A"), ("unknown", None, None),
        ("unknown", None, None)]
    assert preds[2].unsure and not preds[2].unknown
