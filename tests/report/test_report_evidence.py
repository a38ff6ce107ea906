"""The report's evidence section: the check flag's stored figures, and test photos beside the thumbnails
of their nearest training photos."""

from __future__ import annotations

import base64
import io
import json

from PIL import Image

from monkeysee.data.thumbnails import MAX_BYTES, SIDE
from monkeysee.rundir import RunDir
from tests.report.conftest import parse


def test_evidence_section_shows_the_flag_figures_and_thumbnails(report_html, report_run):
    stored = json.loads(RunDir(report_run).eval("test").evidence.read_text())
    page = parse(report_html)
    text = page.text("evidence")
    assert f"On {stored['photos']} test photos" in text and "check this one" in text
    thumbs = [src for src in page.images["evidence"] if src.startswith("data:image/webp;base64,")]
    shown = stored["examples"]
    assert len(thumbs) == sum(len(s["nearest"]) for ex in shown for s in ex["evidence"]["species"]) > 0
    data = base64.b64decode(thumbs[0].split(",", 1)[1])
    assert len(data) <= MAX_BYTES and max(Image.open(io.BytesIO(data)).size) == SIDE
