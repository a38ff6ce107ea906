"""'Not one of my species': the run's calibrated detector, a hand-set threshold, and the max-softmax
fallback for runs trained without a detector."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from monkeysee.serve import ServeConfig, create_app


def answer(config: ServeConfig, photo: bytes) -> tuple[dict, dict]:
    with TestClient(create_app(config)) as c:
        r = c.post("/api/predict", params={"cam": "false"}, files={"photo": ("a.jpg", photo, "image/jpeg")})
        assert r.status_code == 200, r.text
        return r.json(), c.get("/health").json()


def test_the_runs_calibrated_detector_is_used(detector_run_dir, make_photo):
    a, health = answer(ServeConfig(detector_run_dir), make_photo(seed=20))
    assert a["detector"]["name"] == "mahalanobis" and a["detector"]["keep"] == pytest.approx(0.95)
    assert health["detector"] == a["detector"]
    assert isinstance(a["unknown_score"], float)
    assert a["unknown"] == (a["unknown_score"] > a["detector"]["threshold"])


@pytest.mark.parametrize("threshold, unknown", [(-1e12, True), (1e12, False)])
def test_a_hand_set_threshold_overrides_the_calibrated_one(detector_run_dir, make_photo, threshold, unknown):
    a, _ = answer(ServeConfig(detector_run_dir, unknown_threshold=threshold), make_photo(seed=21))
    assert a["unknown"] is unknown
    assert a["detector"] == {"name": "mahalanobis", "threshold": threshold, "keep": None}
    # The nearest species is still named, as a hint.
    assert a["species"] == a["top"][0]["common_name"] and a["top"]


def test_no_detector_means_never_unknown(run_dir, make_photo):
    a, health = answer(ServeConfig(run_dir), make_photo(seed=22))
    assert a["unknown"] is False and a["unknown_score"] is None and a["detector"] is None
    assert health["detector"] is None


@pytest.mark.parametrize("threshold, unknown", [(0.0, True), (0.99, False)])
def test_threshold_without_a_detector_falls_back_to_max_softmax(run_dir, make_photo, threshold, unknown):
    a, _ = answer(ServeConfig(run_dir, unknown_threshold=threshold), make_photo(seed=23))
    assert a["detector"] == {"name": "max_softmax", "threshold": threshold, "keep": None}
    assert a["unknown_score"] == pytest.approx(1 - a["probability"], abs=1e-5)
    assert a["unknown"] is unknown
