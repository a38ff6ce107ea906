"""The evidence bank on hand-made features: exact nearest training photos (ties by row), the majority of
the nearest photos and the "check this one" flag, and the confusion partners from soft counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from monkeysee.data.species import Species
from monkeysee.models.evidence import EvidenceBank, confusion_partners, top_rows

SPECIES = (Species("a", "alpha"), Species("b", "beta"), Species("c", "gamma"))
# rows:        0       1       2           3       4           5
FEATURES = [[1, 0], [2, 0], [0.8, 0.6], [0, 1], [0.6, 0.8], [-1, 0]]
TARGETS = [0, 1, 0, 1, 1, 2]


def bank(partners: list[int] | None = None) -> EvidenceBank:
    return EvidenceBank(np.array(FEATURES, dtype=np.float32), np.array(TARGETS),
                        np.array(partners or [1, 0, -1]), SPECIES)


def test_top_rows_breaks_ties_by_the_lower_row() -> None:
    sims = np.array([0.5, 0.9, 0.9, 0.1, 0.9], dtype=np.float32)
    assert top_rows(sims, 2).tolist() == [1, 2]
    assert top_rows(sims, 3).tolist() == [1, 2, 4]
    assert top_rows(sims, 4).tolist() == [1, 2, 4, 0]
    assert top_rows(sims, 9).tolist() == [1, 2, 4, 0, 3]


def test_nearest_photos_of_each_species_are_exact() -> None:
    b = bank()
    sims = b.similarities(np.array([[3.0, 0.0]]))[0]
    np.testing.assert_allclose(sims, [1, 1, 0.8, 0, 0.6, -1], atol=1e-6)
    near_a = b.nearest_of(sims, 0)
    assert [n.row for n in near_a] == [0, 2]  # only two photos of alpha
    assert [n.row for n in b.nearest_of(sims, 1)] == [1, 4, 3]
    assert near_a[1].similarity == pytest.approx(0.8, abs=1e-6)
    assert [n.row for n in b.nearest_of(sims, 1, k=1)] == [1]


def test_check_flag_when_the_nearest_photos_outvote_the_answer() -> None:
    b = bank()
    query = np.array([[1.0, 0.0]])  # the 5 nearest: rows 0, 1, 2, 4, 3 -> alpha 2 votes, beta 3
    flagged = b.explain(query, np.array([[0, 1]]))[0]
    assert flagged.check and flagged.vote == 1
    assert [s.index for s in flagged.species] == [0, 1]
    assert [n.row for n in flagged.species[0].nearest] == [0, 2]
    assert flagged.confused_index == 1 and flagged.confused_with == SPECIES[1]
    agreed = b.explain(query, np.array([[1, 0]]))[0]
    assert not agreed.check and agreed.vote == 1
    assert agreed.confused_index == 0


def test_evidence_dict_names_photos_species_and_flag() -> None:
    ev = bank().explain(np.array([[1.0, 0.0]]), np.array([[0, 2]]))[0]
    d = ev.to_dict()
    assert d["check"] is True
    assert d["confused_with"] == {"index": 1, "label": "b", "common_name": "beta"}
    assert d["nearest_vote"] == {"index": 1, "label": "b", "common_name": "beta"}
    assert d["species"][1] == {"index": 2, "label": "c", "common_name": "gamma",
                               "nearest": [{"photo": 5, "similarity": -1.0}]}
    assert [n["photo"] for n in d["species"][0]["nearest"]] == [0, 2]
    assert "CHECK THIS ONE" in ev.line()


def test_no_partner_is_none() -> None:
    ev = bank([1, 0, -1]).explain(np.array([[-1.0, 0.0]]), np.array([[2, 0]]))[0]
    assert ev.confused_with is None and ev.to_dict()["confused_with"] is None


def test_confusion_partners_from_soft_counts() -> None:
    probs = np.array([[0.7, 0.2, 0.1], [0.6, 0.1, 0.3], [0.1, 0.8, 0.1]])
    # C = [[.65, .15, .2], [.1, .8, .1], [0, 0, 0]]; pairs: ab .25, ac .2, bc .1
    assert confusion_partners(probs, np.array([0, 0, 1]), 3).tolist() == [1, 0, 0]
    assert confusion_partners(np.zeros((0, 3)), np.zeros(0, dtype=int), 3).tolist() == [-1, -1, -1]


def test_bank_refuses_mismatched_arrays() -> None:
    with pytest.raises(ValueError, match="targets"):
        EvidenceBank(np.ones((3, 2)), np.zeros(2), np.zeros(3), SPECIES)


def test_bfloat16_candidates_then_float32_give_the_exact_answer() -> None:
    rng = np.random.default_rng(1)
    feats = np.abs(rng.normal(size=(3000, 64))).astype(np.float32)  # all alike: many near-ties
    feats[1500:1600] = feats[:100]  # and exact ties, broken by the lower row
    targets = rng.integers(0, 20, len(feats))
    species = [Species(f"s{i}", f"s{i}") for i in range(20)]
    b = EvidenceBank(feats, targets, np.arange(20), species)
    b.coarse = torch.from_numpy(b.features).bfloat16()  # the bfloat16 path, whatever this CPU has
    queries = np.concatenate([feats[:20], np.abs(rng.normal(size=(20, 64)))]).astype(np.float32)
    ranked = np.stack([rng.permutation(20)[:2] for _ in queries])
    fast = b.explain(queries, ranked)
    exact = b.similarities(queries)
    for ev, sims, order in zip(fast, exact, ranked, strict=True):
        for shown, s in zip(ev.species, order, strict=True):
            want = b.nearest_of(sims, int(s))
            assert [n.row for n in shown.nearest] == [n.row for n in want]
            np.testing.assert_allclose([n.similarity for n in shown.nearest], [n.similarity for n in want],
                                       atol=1e-6)
        assert ev.vote == b.vote(sims)[0]
