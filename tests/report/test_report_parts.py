"""The report's building blocks on their own: HTML helpers, the overlay bank, the gallery's page budget."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from monkeysee.report import ReportOptions
from monkeysee.report.cams import OverlayBank
from monkeysee.report.context import ReportContext
from monkeysee.report.html import SCROLL_ROWS, attrs, duration, table
from monkeysee.report.images import figure_uri, jpeg_uri, png_uri
from tests.report.conftest import copy_run


def decode(uri: str) -> Image.Image:
    head, data = uri.split(",", 1)
    assert head in {"data:image/png;base64", "data:image/jpeg;base64"}
    return Image.open(io.BytesIO(base64.b64decode(data)))


def test_table_escapes_cells_unless_told_they_are_html():
    html = table(["name", "n"], [["<script>x</script> & co", 3]], numeric=(1,))
    assert "&lt;script&gt;x&lt;/script&gt; &amp; co" in html and "<script>" not in html
    assert '<td class="num">3</td>' in html
    assert "<i>ok</i>" in table(["a"], [["<i>ok</i>"]], raw=True)


def test_long_tables_scroll_short_ones_do_not():
    assert table(["a"], [[i] for i in range(SCROLL_ROWS)]).startswith("<table")
    assert table(["a"], [[i] for i in range(SCROLL_ROWS + 1)]).startswith('<div class="scroll">')


def test_attrs_quotes_values_and_drops_missing_ones():
    assert (
        attrs(src='a"b', alt=None, open=True, class_="x", data_id=1)
        == ' src="a&quot;b" open class="x" data-id="1"'
    )


@pytest.mark.parametrize(
    ("seconds", "text"), [(4.25, "4.2 s"), (42, "42 s"), (185, "3 min 05 s"), (3720, "1 h 02 min")]
)
def test_duration(seconds, text):
    assert duration(seconds) == text


def test_images_round_trip_as_data_uris():
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :15] = (255, 0, 0)
    assert decode(png_uri(rgb)).size == (30, 20)
    assert np.array_equal(np.asarray(decode(png_uri(rgb)).convert("RGB")), rgb)
    small = decode(jpeg_uri(Image.fromarray(rgb).resize((300, 200)), max_side=60))
    assert small.format == "JPEG" and small.size == (60, 40)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    fig.add_subplot().plot([0, 1])
    assert decode(figure_uri(fig, dpi=50)).format == "PNG"
    assert decode(figure_uri(fig, dpi=50, jpeg=True)).format == "JPEG"


@pytest.fixture(scope="module")
def context(report_html, report_run, tmp_path_factory) -> ReportContext:
    """The evaluated tiny run as the sections see it (a private copy; the shared one is never written)."""
    run = copy_run(report_run, tmp_path_factory.mktemp("parts") / "run", evaluated=True)
    return ReportContext.load(run, ReportOptions(gallery_per_species=2, max_gallery_photos=3))


def test_overlay_bank_batches_dedupes_and_reports_unreadable_photos(context, tmp_path):
    calls: list[int] = []  # the batch size of every forward pass through the model
    handle = context.explainer.model.register_forward_pre_hook(lambda _m, args: calls.append(len(args[0])))
    paths = [context.photo_path(p) for p in context.interp.paths[:3]]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a photo")
    bank = OverlayBank(lambda: context.explainer)
    for p in paths:
        bank.want(p, 0)
        bank.want(p, 1)
        bank.want(p, 0)  # asked twice, made once
    bank.want(broken, 0)
    bank.want_photo(paths[0])
    assert len(bank) == 7
    try:
        bank.compute(batch_size=4)
    finally:
        handle.remove()
    assert calls == [4, 2]  # six readable pairs in two passes, one forward pass each
    size = context.manifest.preprocess.input_size
    for p in paths:
        assert bank.photo(p).shape == (size, size, 3) and bank.photo(p).dtype == np.uint8
        a, b = bank.overlay(p, 0), bank.overlay(p, 1)
        assert a.shape == (size, size, 3) and not np.array_equal(a, b)  # each species its own map
    assert bank.overlay(broken, 0) is None and bank.photo(broken) is None
    assert "not an image" in bank.problem(broken) and bank.problem(paths[0]) == ""


def test_gallery_keeps_to_its_budget_and_names_who_is_left_out(context):
    from monkeysee.report.sections.photos import Gallery

    gallery = Gallery()
    gallery.plan(context)
    shown = sum(len(r) + len(w) for r, w in gallery.shown.values())
    assert 0 < shown <= 3
    assert gallery.left_out and set(gallery.left_out).isdisjoint(gallery.shown)
    assert len(gallery.shown) + len(gallery.left_out) == len(context.species)
    html = gallery.render(context)
    assert "left out to keep the page small" in html
    assert all(context.name(c) in html for c in gallery.left_out)
