"""What `evaluate` stores for the report beside the predictions: the photos to show (exact picks on a
hand-made split), the unknown-photo scores, and the folder that names their files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from monkeysee.data.species import Species
from monkeysee.errors import CheckpointError, DataError
from monkeysee.evaluate.interpret import Interpretation
from monkeysee.evaluate.photos import (
    ConfusedPair,
    PhotoPlan,
    PhotoPlanOptions,
    confused_pairs,
    gallery_picks,
    plan_photos,
)
from monkeysee.evaluate.unknown import OtherPhotos, UnknownScores, other_photos
from monkeysee.rundir import RunDir

SPECIES = [Species(f"s{i}", f"Species {i}") for i in range(3)]


def _interp(probs: list[list[float]], targets: list[int]) -> Interpretation:
    return Interpretation(np.array(probs), np.array(targets), [f"p{i}.jpg" for i in range(len(targets))],
                          SPECIES)


def _mixed() -> Interpretation:
    return _interp(
        [
            [0.7, 0.2, 0.1],  # 0: true 0, right
            [0.1, 0.6, 0.3],  # 1: true 0, said 1
            [0.2, 0.3, 0.5],  # 2: true 1, said 2
            [0.05, 0.9, 0.05],  # 3: true 0, said 1 (more sure than row 1)
            [0.3, 0.3, 0.4],  # 4: true 2, right
            [0.1, 0.8, 0.1],  # 5: true 1, right
        ],
        [0, 0, 1, 0, 2, 1],
    )


def test_confused_pairs_are_the_most_confused_with_the_most_confidently_wrong_first():
    pairs, near = confused_pairs(_mixed(), pairs=4, per_pair=3)
    assert not near
    assert pairs == (ConfusedPair(0, 1, 2, (3, 1)), ConfusedPair(1, 2, 1, (2,)))
    assert confused_pairs(_mixed(), pairs=1, per_pair=1) == ((ConfusedPair(0, 1, 2, (3,)),), False)
    assert confused_pairs(_mixed(), pairs=0, per_pair=3) == ((), False)


def test_without_mistakes_the_closest_calls_are_each_photos_runner_up():
    interp = _interp(
        [[0.8, 0.15, 0.05], [0.6, 0.1, 0.3], [0.3, 0.7, 0.0], [0.1, 0.2, 0.7]], [0, 0, 1, 2]
    )
    # Runner-up probabilities: 0.15 (row 0 -> 1), 0.3 (row 1 -> 2), 0.3 (row 2 -> 0), 0.2 (row 3 -> 1).
    pairs, near = confused_pairs(interp, pairs=2, per_pair=3)
    assert near
    assert pairs == (ConfusedPair(0, 2, 1, (1,)), ConfusedPair(1, 0, 1, (2,)))


def test_gallery_gives_the_weakest_species_their_place_first_within_the_budget():
    # Recall: species 0 1/3, species 1 1/2, species 2 1. Species 0 takes 2 of 3 places; species 1
    # would need 2 more and is left out; species 2 fits in the last one.
    shown, left_out = gallery_picks(_mixed(), per_species=1, budget=3)
    assert shown == {0: ((0,), (3,)), 2: ((4,), ())}
    assert left_out == (1,)
    everything, none_left = gallery_picks(_mixed(), per_species=2, budget=400)
    assert everything == {0: ((0,), (3, 1)), 1: ((5,), (2,)), 2: ((4,), ())} and none_left == ()
    assert gallery_picks(_mixed(), per_species=0, budget=400) == ({}, ())


def test_a_plan_round_trips_through_json_and_knows_which_predictions_it_fits():
    options = PhotoPlanOptions(confused_pairs=2, examples_per_pair=1, gallery_per_species=1,
                               max_gallery_photos=3)
    plan = plan_photos(_mixed(), options)
    back = PhotoPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert back == plan and back.options == options
    assert plan.fits(_mixed())
    assert not plan.fits(_interp([[0.5, 0.3, 0.2]], [0]))  # rows 3 and 4 do not exist there


def test_unknown_scores_round_trip_through_json():
    other = OtherPhotos("/photos/other", total=10, max_photos=5, scores=np.array([2.5, 4.0]), unreadable=1)
    scores = UnknownScores("energy", np.array([0.25, -1.0]), other)
    back = UnknownScores.from_dict(json.loads(json.dumps(scores.to_dict())))
    assert back.detector == "energy" and back.known.tolist() == [0.25, -1.0]
    assert back.other is not None and back.other.scores.tolist() == [2.5, 4.0]
    assert (back.other.folder, back.other.total, back.other.sampled) == ("/photos/other", 10, 3)
    assert UnknownScores.from_dict(UnknownScores("knn", np.array([1.0])).to_dict()).other is None


def test_a_folder_of_other_photos_must_hold_photos(tmp_path: Path):
    with pytest.raises(DataError, match="unknown-photo folder not found"):
        other_photos(tmp_path / "missing")
    (tmp_path / "README.txt").write_text("no photos here")
    with pytest.raises(DataError, match="no photos in the unknown-photo folder"):
        other_photos(tmp_path)


def test_the_evaluation_folder_names_its_files_and_refuses_a_damaged_one(tmp_path: Path):
    folder = RunDir(tmp_path).eval("test")
    assert folder.path == tmp_path / "eval" / "test"
    assert folder.read_json(folder.photo_plan) is None
    folder.write_json(folder.photo_plan, {"a": 1})
    assert folder.read_json(folder.photo_plan) == {"a": 1}
    folder.faithfulness.parent.mkdir(parents=True, exist_ok=True)
    folder.faithfulness.write_text("{not json")
    with pytest.raises(CheckpointError, match=r"cannot read faithfulness\.json") as caught:
        folder.read_json(folder.faithfulness)
    assert caught.value.path == str(folder.faithfulness)


def test_a_stored_faithfulness_table_reads_back_with_its_missing_values():
    from monkeysee.explain.faithfulness import FaithfulnessReport, MethodScores

    scores = (MethodScores("gradcam", 0.25, 0.75, 10.0, 50.0, float("nan"), 0.125, 0.5, 4),
              MethodScores("eigencam", 0.5, 0.5, 20.0, 25.0, 0.75, 0.625, 0.25, 4))
    report = FaithfulnessReport("body.4", 8, scores)
    stored = json.loads(json.dumps(report.to_json({"photos": ["a.jpg"]})))  # JSON has no NaN: null
    assert stored["methods"][0]["randomization_rho_head"] is None and stored["photos"] == ["a.jpg"]
    back = FaithfulnessReport.from_dict(stored)
    assert back.scores[1] == scores[1] and back.best == "gradcam" and back.layer == "body.4"
    assert np.isnan(back.scores[0].randomization_rho_head)
    assert back.scores[0].insertion_minus_deletion == 0.5
