"""The species map: layouts that separate what is separate and repeat with a seed, marks that are exactly
the stored wrong predictions and the detector's rejections, features read back from the feature store,
and a page that works offline."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from monkeysee.cli import main
from monkeysee.evaluate.interpret import Interpretation
from monkeysee.explain.map_render import map_html, species_colours, thumbnail_sample
from monkeysee.explain.species_map import MAP_METHODS, SPLITS, SpeciesMap, compute_species_map, embed
from monkeysee.predict import Predictor
from monkeysee.rundir import RunDir
from monkeysee.train.stored import stored_pooled
from tests.conftest import private_copy

# umap-learn compiles its numba kernels on first use (tens of seconds on two cores)
METHODS = [pytest.param(m, marks=pytest.mark.slow) if m == "umap" else m for m in MAP_METHODS.names()]


def two_clusters(n: int = 40, dim: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """`n` photos around each of two orthogonal directions (cosine distance ~1 apart), spread 0.05."""
    rng = np.random.default_rng(0)
    a, b = np.zeros(dim, np.float32), np.zeros(dim, np.float32)
    a[0], b[1] = 1.0, 1.0
    x = np.concatenate([a + rng.normal(0, 0.05, (n, dim)), b + rng.normal(0, 0.05, (n, dim))])
    return x.astype(np.float32), np.repeat([0, 1], n)


@pytest.mark.parametrize("method", METHODS)
def test_two_separate_clusters_are_separate_on_the_map_and_the_seed_repeats_it(method):
    x, y = two_clusters()
    xy = embed(x, method, seed=3)
    assert xy.shape == (80, 2)
    # every photo's nearest neighbour on the map is of its own cluster ...
    d = ((xy[:, None] - xy[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    assert (y[d.argmin(1)] == y).all()
    # ... and the clusters lie apart: the gap between them exceeds either cluster's own width
    gap = np.sqrt(d[:40, 40:].min())
    width = max(np.sqrt(d[:40, :40][np.isfinite(d[:40, :40])].max()),
                np.sqrt(d[40:, 40:][np.isfinite(d[40:, 40:])].max()))
    assert gap > 0.2 * width
    assert np.array_equal(embed(x, method, seed=3), xy)


def test_too_few_photos_and_an_unknown_method_are_refused():
    with pytest.raises(Exception, match="at least 3 photos"):
        embed(np.zeros((2, 4), np.float32), "tsne")
    with pytest.raises(Exception, match="choose one of: umap, tsne"):
        embed(np.zeros((9, 4), np.float32), "pca")


@pytest.fixture(scope="module")
def mapped(tiny_run, tmp_path_factory):
    """A private copy of the tiny run evaluated with `--species-map` (the default layout, seed 0), and
    the same map computed again."""
    run = private_copy(tiny_run, tmp_path_factory.mktemp("map") / "run")
    assert main(["evaluate", str(run), "--species-map"]) == 0
    first = SpeciesMap.load(RunDir(run).eval("test"))
    predictor = Predictor.from_run_dir(run)
    second = compute_species_map(predictor, run, method="tsne", seed=0, log=lambda _: None)
    return run, predictor, first, second


def test_the_run_store_holds_every_training_photos_pooled_features(tiny_run):
    predictor = Predictor.from_run_dir(tiny_run)
    index = RunDir(tiny_run).read_splits()
    feats, found = stored_pooled(predictor.run, index.train)
    assert found.all() and len(found) == len(index.train)
    # the stored rows are the trained body's pooled features: its head gets the answers right
    with torch.no_grad():
        logits = predictor.run.model.head.fc(torch.from_numpy(feats)).numpy()
    assert (logits.argmax(1) == np.array([s.target for s in index.train])).mean() >= 0.9


def test_the_map_covers_every_split_and_repeats_exactly_with_its_seed(mapped):
    run, _, smap, again = mapped
    index = RunDir(run).read_splits()
    counts = [int((smap.split == i).sum()) for i in range(len(SPLITS))]
    assert counts == [len(index.train), len(index.val), len(index.test)]
    assert smap.paths[: counts[0]] == [str(s.path) for s in index.train]
    assert np.array_equal(smap.xy, again.xy)
    loaded = SpeciesMap.load(RunDir(run).eval("test"))
    assert loaded is not None and np.array_equal(loaded.xy, smap.xy) and loaded.paths == smap.paths
    assert (loaded.method, loaded.seed, loaded.info["photos"]["test"]) == ("tsne", 0, counts[2])
    # the copy has no feature store beside it: its photos were pooled in one pass, and none was created
    assert not (run.parent / "feature-store").exists()


def test_mistakes_are_exactly_the_wrong_test_predictions(mapped):
    run, _, smap, _ = mapped
    interp = Interpretation.load(RunDir(run).eval("test").predictions)
    test = smap.split == 2
    assert not smap.mistake[~test].any()
    assert np.array_equal(smap.mistake[test], interp.preds != interp.targets)
    assert np.array_equal(smap.predicted[test], interp.preds)
    assert smap.paths[-len(interp):] == interp.paths


def test_rejected_photos_are_the_detectors_decisions_on_their_features(mapped):
    run, predictor, smap, _ = mapped
    folder = RunDir(run).eval("test")
    feats = np.load(folder.features).astype(np.float32)
    w = predictor.run.model.head.fc.weight.detach().numpy()
    b = predictor.run.model.head.fc.bias.detach().numpy()
    expected = predictor.detector.score(feats @ w.T + b, feats) > predictor.detector.threshold
    assert np.array_equal(smap.unknown[smap.split == 2], expected)


def hand_map(n: int = 12) -> SpeciesMap:
    xy = np.stack([np.arange(n, dtype=np.float32), np.arange(n, dtype=np.float32) % 3], 1)
    target = np.arange(n) % 3
    predicted = target.copy()
    predicted[[1, 7]] = 0
    split = np.array([0] * 6 + [2] * 6, dtype=np.int8)
    mistake = (predicted != target) & (split == 2)
    unknown = np.zeros(n, bool)
    unknown[[2, 9]] = True
    return SpeciesMap(xy, target, predicted, split, mistake, unknown, [f"/nowhere/s{i % 3}/{i}.jpg"
                                                                       for i in range(n)], "tsne", 0)


def test_the_page_holds_the_points_and_marks_and_no_address_outside_it():
    smap = hand_map()
    page = map_html(smap, ["red", "green", "blue"], "a <map>", thumbnails=5)
    assert not re.search(r"https?://", page)
    assert "<title>a &lt;map&gt;</title>" in page
    data = json.loads(re.search(r'<script id="map-data" type="application/json">(.*?)</script>', page,
                                re.S).group(1))
    assert [i for i, f in enumerate(data["flags"]) if f & 1] == [7]  # the one wrong test photo
    assert [i for i, f in enumerate(data["flags"]) if f & 2] == [2, 9]
    assert data["x"][0] == 0.0 and data["x"][-1] == 1.0
    assert data["paths"][4] == "s1/4.jpg" and data["thumbs"] == {}  # the photos are not there
    assert data["colours"] == species_colours(3)


def test_thumbnails_go_to_marked_photos_first_then_species_in_turn():
    smap = hand_map()
    picked = thumbnail_sample(smap, 5)
    assert {2, 7, 9} <= set(picked.tolist()) and len(picked) == 5
    rest = [i for i in picked.tolist() if i not in (2, 7, 9)]
    assert len({int(smap.target[i]) for i in rest}) == 2  # two more photos, two species


@pytest.mark.browser
def test_map_command_writes_a_page_that_works_offline_in_a_browser(mapped, tmp_path, browser):
    run, _, smap, _ = mapped
    out = tmp_path / "map.html"
    assert main(["map", str(run), "--out", str(out), "--method", "tsne"]) == 0
    page = browser.new_page(viewport={"width": 1000, "height": 700})
    requested, errors = [], []
    page.on("request", lambda r: requested.append(r.url))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(out.as_uri(), wait_until="load")
    assert page.evaluate("window.speciesMap.count") == len(smap)
    x, y = page.evaluate("window.speciesMap.at(0)")
    box = page.locator("#map").bounding_box()
    page.mouse.move(box["x"] + x, box["y"] + y)
    tip = page.locator("#tip")
    assert tip.is_visible()
    names = [s.display_name for s in Predictor.from_run_dir(run).species]
    assert tip.inner_text().splitlines()[0] in names
    assert tip.locator("img").count() == 1  # the tiny run's photos all carry thumbnails
    page.mouse.wheel(0, -400)
    assert page.evaluate("window.speciesMap.view().s") > 1
    assert requested == [out.as_uri()] and not errors
    page.close()


def test_the_report_section_draws_the_stored_map(mapped):
    from monkeysee.report import ReportOptions
    from monkeysee.report.context import ReportContext
    from monkeysee.report.sections.species_map import SpeciesMapSection

    run, _, smap, _ = mapped
    body = SpeciesMapSection().render(ReportContext.load(run, ReportOptions(faithfulness_photos=0)))
    assert body.count("<img") == 1 and "data:image/png;base64," in body
    assert f"the {int(smap.mistake.sum())} test photos predicted wrong" in body


def test_a_report_without_a_stored_map_says_how_to_make_one(mapped, tmp_path):
    from monkeysee.report import ReportOptions
    from monkeysee.report.context import ReportContext
    from monkeysee.report.sections.species_map import SpeciesMapSection

    run = private_copy(mapped[0], tmp_path / "run")
    stem = RunDir(run).eval("test").species_map
    for suffix in (".npz", ".json"):
        stem.with_name(stem.name + suffix).unlink()
    body = SpeciesMapSection().render(ReportContext.load(run, ReportOptions(faithfulness_photos=0)))
    assert "monkeysee map RUN_DIR" in body and "<img" not in body
