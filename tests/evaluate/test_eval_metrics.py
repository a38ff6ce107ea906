"""Metrics on hand-computed cases: every expected number below was worked out on paper."""

from __future__ import annotations

import json
import math
import warnings
from statistics import NormalDist

import numpy as np
import pytest

from monkeysee.data.species import Species
from monkeysee.evaluate.metrics import (
    compute_metrics,
    confusion_matrix,
    expected_calibration_error,
    format_metrics_table,
    most_confused_pairs,
    per_class_report,
    reliability_table,
    sample_losses,
    topk_accuracy,
    wilson_interval,
)

SPECIES = (
    Species("n0", "mantled_howler", "alouatta_palliata"),
    Species("n1", "white_headed_capuchin", "cebus_capucinus"),
    Species("n2", "pygmy_marmoset", "cebuella_pygmea"),
)


def test_wilson_8_of_10_matches_closed_form_and_published_value():
    z = NormalDist().inv_cdf(0.975)
    n, p = 10, 0.8
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(centre - half, abs=1e-12)
    assert hi == pytest.approx(centre + half, abs=1e-12)
    assert (round(lo, 4), round(hi, 4)) == (0.4902, 0.9433)


def test_wilson_edges():
    z2 = NormalDist().inv_cdf(0.975) ** 2
    # 0 of n: lower bound 0, upper bound z²/(n + z²).
    assert wilson_interval(0, 10) == pytest.approx((0.0, z2 / (10 + z2)))
    assert wilson_interval(10, 10) == pytest.approx((10 / (10 + z2), 1.0))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    # Wider confidence, wider interval.
    lo90, hi90 = wilson_interval(8, 10, confidence=0.90)
    lo95, hi95 = wilson_interval(8, 10)
    assert lo95 < lo90 < hi90 < hi95
    with pytest.raises(ValueError):
        wilson_interval(11, 10)
    with pytest.raises(ValueError):
        wilson_interval(1, 10, confidence=1.0)


def test_confusion_matrix_and_per_class_report_by_hand():
    targets = np.array([0, 0, 1, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0, 2])
    cm = confusion_matrix(targets, preds, 4)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [1, 2, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 for class 3 must not warn
        rep = per_class_report(cm)
    np.testing.assert_allclose(rep["precision"], [1 / 2, 2 / 3, 1, 0])
    np.testing.assert_allclose(rep["recall"], [1 / 2, 2 / 3, 1, 0])
    np.testing.assert_allclose(rep["f1"], [1 / 2, 2 / 3, 1, 0])
    np.testing.assert_array_equal(rep["support"], [2, 3, 1, 0])


def test_precision_undefined_but_recall_defined():
    rep = per_class_report(confusion_matrix(np.array([0, 1]), np.array([0, 0]), 2))
    np.testing.assert_allclose(rep["precision"], [0.5, 0.0])
    np.testing.assert_allclose(rep["recall"], [1.0, 0.0])
    np.testing.assert_allclose(rep["f1"], [2 / 3, 0.0])


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(ValueError, match="must lie in"):
        confusion_matrix(np.array([0, 3]), np.array([0, 1]), 3)


def test_topk_accuracy_with_ties_and_clipping():
    probs = np.array([[0.1, 0.2, 0.3, 0.4], [0.4, 0.3, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]])
    targets = np.array([0, 1, 2])  # true class ranks 4th, 2nd, 3rd (ties go to the lower index)
    assert topk_accuracy(probs, targets, 1) == 0.0
    assert topk_accuracy(probs, targets, 2) == pytest.approx(1 / 3)
    assert topk_accuracy(probs, targets, 3) == pytest.approx(2 / 3)
    assert topk_accuracy(probs, targets, 4) == 1.0
    assert topk_accuracy(probs, targets, 10) == 1.0  # clipped to C
    assert topk_accuracy(probs, targets, 0) == 0.0  # clipped to 1


def test_most_confused_pairs_order_and_min_count():
    cm = np.array([[5, 1, 3], [2, 4, 2], [0, 3, 9]])
    assert most_confused_pairs(cm) == [(0, 2, 3), (2, 1, 3), (1, 0, 2), (1, 2, 2), (0, 1, 1)]
    assert most_confused_pairs(cm, min_count=3) == [(0, 2, 3), (2, 1, 3)]


def test_sample_losses_are_clipped_not_infinite():
    losses = sample_losses(np.array([[0.5, 0.5], [1.0, 0.0]]), np.array([0, 1]))
    assert losses[0] == pytest.approx(math.log(2))
    assert np.isfinite(losses[1]) and losses[1] == pytest.approx(-math.log(1e-12))


def _example() -> tuple[np.ndarray, np.ndarray]:
    probs = np.array([
        [0.7, 0.2, 0.1],  # true 0, right
        [0.1, 0.6, 0.3],  # true 0, said 1
        [0.2, 0.3, 0.5],  # true 1, said 2
        [0.05, 0.9, 0.05],  # true 0, said 1
        [0.3, 0.3, 0.4],  # true 2, right
    ])
    return probs, np.array([0, 0, 1, 0, 2])


def _two_class(confidence: list[float], correct: list[bool]) -> tuple[np.ndarray, np.ndarray]:
    probs = np.array([[c, 1 - c] for c in confidence])
    return probs, np.array([0 if ok else 1 for ok in correct])


def test_ece_by_hand():
    # Bins of width 1/15: 0.95 -> (14/15, 1], 0.55 -> (8/15, 9/15], 0.75 -> (11/15, 12/15].
    probs, targets = _two_class([0.95, 0.95, 0.55, 0.55, 0.75], [True, False, True, True, False])
    # |acc - conf| weighted by count: 2 * |0.5 - 0.95| + 2 * |1 - 0.55| + 1 * |0 - 0.75|, over 5 photos.
    assert expected_calibration_error(probs, targets) == pytest.approx((0.9 + 0.9 + 0.75) / 5)
    rows = reliability_table(probs, targets)
    assert len(rows) == 15 and [r["count"] for r in rows] == [0] * 8 + [2, 0, 0, 1, 0, 0, 2]
    assert rows[14] == {"lo": pytest.approx(14 / 15), "hi": 1.0, "confidence": pytest.approx(0.95),
                        "accuracy": 0.5, "count": 2}
    assert rows[0] == {"lo": 0.0, "hi": pytest.approx(1 / 15), "confidence": None, "accuracy": None,
                       "count": 0}


def test_ece_bin_edges_and_perfect_calibration():
    probs, targets = _two_class([1.0, 1.0], [True, True])
    assert expected_calibration_error(probs, targets) == 0.0
    assert reliability_table(probs, targets)[14]["count"] == 2  # 1.0 falls in the last bin
    assert reliability_table(*_two_class([0.5], [True]), bins=2)[0]["count"] == 1  # bins are (lo, hi]
    assert expected_calibration_error(np.zeros((0, 2)), np.zeros(0, dtype=int)) == 0.0


def test_compute_metrics_by_hand():
    probs, targets = _example()
    m = compute_metrics(probs, targets, SPECIES)
    json.dumps(m, allow_nan=False)  # JSON-ready, no NaN
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(2 / 5)
    assert m["accuracy_ci95"] == pytest.approx(list(wilson_interval(2, 5)))
    # True class rank: 1, 3, 2, 2, 1 -> all within top 3.
    assert m["top3_accuracy"] == 1.0
    assert m["log_loss"] == pytest.approx(-np.log([0.7, 0.1, 0.3, 0.05, 0.4]).mean())
    # Top-1 confidences 0.7, 0.6, 0.5, 0.9, 0.4 each fill their own bin; right, wrong, wrong, wrong, right.
    assert m["ece"] == pytest.approx((0.3 + 0.6 + 0.5 + 0.9 + 0.6) / 5)
    assert m["confusion_matrix"] == [[1, 2, 0], [0, 0, 1], [0, 0, 1]]
    # F1: howler p=1 r=1/3 -> 1/2; capuchin 0; marmoset p=1/2 r=1 -> 2/3.
    assert [r["f1"] for r in m["per_species"]] == pytest.approx([0.5, 0.0, 2 / 3])
    assert m["macro_f1"] == pytest.approx((0.5 + 0 + 2 / 3) / 3)
    assert m["per_species"][0] == {
        "label": "n0", "common_name": "mantled_howler", "latin_name": "alouatta_palliata",
        "precision": 1.0, "recall": pytest.approx(1 / 3), "f1": pytest.approx(0.5), "support": 3,
    }
    assert m["most_confused"] == [
        {"true": "mantled_howler", "predicted": "white_headed_capuchin", "count": 2},
        {"true": "white_headed_capuchin", "predicted": "pygmy_marmoset", "count": 1},
    ]


def test_macro_f1_ignores_species_absent_from_split():
    probs = np.array([[0.9, 0.05, 0.05], [0.1, 0.8, 0.1]])
    m = compute_metrics(probs, np.array([0, 1]), SPECIES)
    assert m["macro_f1"] == 1.0
    assert m["per_species"][2]["support"] == 0


def test_compute_metrics_checks_species_count():
    probs, targets = _example()
    with pytest.raises(ValueError, match="3 classes but 2 species"):
        compute_metrics(probs, targets, SPECIES[:2])


def test_format_metrics_table_is_readable():
    probs, targets = _example()
    table = format_metrics_table(compute_metrics(probs, targets, SPECIES))
    lines = table.splitlines()
    assert lines[1].startswith("accuracy") and "40.0%" in lines[1] and "95% CI" in lines[1]
    assert "calibration ECE 58.0%  (15 bins, top-1 confidence)" in lines
    assert any(line.startswith("n1     white headed capuchin") for line in lines)
    assert "mantled howler → white headed capuchin: 2" in table
    # Species rows line up: same length as the header.
    header = next(i for i, line in enumerate(lines) if line.startswith("label"))
    assert len({len(line) for line in lines[header : header + 5]}) == 1
