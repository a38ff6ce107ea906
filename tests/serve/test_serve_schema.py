"""Schema fuzzing with Schemathesis: whatever the OpenAPI schema allows (and much that it does not),
the app answers with a documented status and a body that matches the schema, and never with a 5xx."""

from __future__ import annotations

import pytest

from monkeysee.serve import ServeConfig, create_app

schemathesis = pytest.importorskip("schemathesis",
                                   reason="Schemathesis is not installed (pip install schemathesis)")
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES = 25
LOG_API = {"GET /api/log/me", "GET /api/log/places", "POST /api/log/sightings", "GET /api/log/sightings",
           "GET /api/log/sightings/{sighting_id}", "GET /api/log/sightings/{sighting_id}/history",
           "GET /api/log/sightings/{sighting_id}/photos/{n}", "GET /api/log/review",
           "POST /api/log/sightings/{sighting_id}/confirm", "POST /api/log/sightings/{sighting_id}/correct",
           "GET /api/log/overview", "GET /api/log/species"}
"""The keeper's log (fuzzed with a reviewer's token in test_serve_log_hostile.py)."""


@pytest.fixture(scope="module")
def schema(run_dir):
    app = create_app(ServeConfig(run_dir, max_upload_mb=0.25, max_megapixels=1.0))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def operations(schema):
    return {op.label: op for op in (result.ok() for result in schema.get_all_operations())}


def test_schema_lists_the_api(schema):
    assert set(operations(schema)) == {"GET /health", "GET /api/species", "POST /api/predict",
                                       "GET /api/evidence/{number}", *LOG_API}


@pytest.mark.parametrize("label, mode", [
    ("GET /health", GenerationMode.POSITIVE),
    ("GET /api/species", GenerationMode.POSITIVE),
    ("POST /api/predict", GenerationMode.POSITIVE),
    ("POST /api/predict", GenerationMode.NEGATIVE),
    ("GET /api/evidence/{number}", GenerationMode.POSITIVE),
    ("GET /api/evidence/{number}", GenerationMode.NEGATIVE),
])
def test_no_server_errors_and_answers_match_the_schema(schema, make_photo, label, mode):
    op = operations(schema)[label]
    photos = [make_photo((40 + 13 * i, 30 + 7 * i), seed=i, fmt=fmt)
              for i, fmt in enumerate(["JPEG", "PNG", "WEBP"])]
    statuses: list[int] = []

    # Half the positive examples carry a real photo, so the success path is fuzzed too (query options).
    @given(case=op.as_strategy(generation_mode=mode), photo=st.sampled_from([None, *photos]))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def check(case, photo):
        if photo is not None and mode is GenerationMode.POSITIVE and isinstance(case.body, dict):
            case.body = {**case.body, "photo": photo}
        statuses.append(case.call_and_validate(checks=CHECKS).status_code)

    check()
    assert statuses and max(statuses) < 500
    if label == "POST /api/predict" and mode is GenerationMode.POSITIVE:
        assert 200 in statuses and any(400 <= s < 500 for s in statuses)
