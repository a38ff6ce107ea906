"""The report of a tiny run: one self-contained file, every section there, numbers as stored."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from monkeysee.cli import main
from monkeysee.evaluate.interpret import Interpretation
from monkeysee.evaluate.photos import plan_photos
from monkeysee.evaluate.unknown import UnknownScores, score_photos
from monkeysee.predict import Predictor
from monkeysee.report import ReportOptions, build_report
from monkeysee.report.html import pct
from monkeysee.rundir import RunDir
from tests.report.conftest import FAST, SECTION_IDS, SECTIONS_IN_ORDER, copy_run, parse


def test_report_is_one_self_contained_file(report_html):
    page = parse(report_html)
    assert report_html.name == "report.html" and report_html.parent.name == "run"
    images = [a["src"] for tag, a in page.tags if tag == "img"]
    data_uri = r"data:image/(png|jpeg|webp);base64,[A-Za-z0-9+/=]+"
    assert images and all(re.fullmatch(data_uri, s) for s in images)
    for tag, a in page.tags:
        assert tag not in {"link", "iframe", "object", "embed"}, f"<{tag}> would load another file"
        assert not (tag == "script" and a.get("src")), "scripts must be inline"
        href = a.get("href")
        if href is not None:
            assert href.startswith("#"), f"link {href!r} leaves the page"
        for name, value in a.items():
            if name in {"src", "href", "srcset", "poster", "data"} and value:
                assert value.startswith(("data:", "#")), f"<{tag} {name}={value[:40]!r}> is not inline"
    text = report_html.read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:|//|file:)""", text, re.I)
    assert "url(" not in text.split("</style>")[0], "the stylesheet must not fetch anything"


def test_every_section_is_there_in_order_with_content(report_html):
    page = parse(report_html)
    assert list(page.sections) == list(SECTION_IDS)
    for sid in SECTION_IDS:
        assert page.headings[sid].strip(), f"section {sid} has no <h2>"
        assert len(page.text(sid)) > 40, f"section {sid} is empty"
    for sid in ("augmentation", "training", "confusion", "mistakes", "gallery", "activations", "unknown"):
        assert page.images[sid], f"section {sid} shows no picture"
    nav = [a["href"] for tag, a in page.tags if tag == "a"]
    assert [h for h in nav if h != "#"] == [f"#{s}" for s in SECTION_IDS]


@pytest.mark.parametrize("section", SECTIONS_IN_ORDER, ids=lambda s: s.id)
def test_each_registered_section_renders_a_body_under_its_id(report_html, section):
    page = parse(report_html)
    assert section.id in page.sections, f"section {section.id} is registered but not in the report"
    position = SECTION_IDS.index(section.id) + 1
    assert page.headings[section.id] == f"{position}. {section.title}"
    assert page.text(section.id), f"section {section.id} rendered an empty body"


def test_report_evaluates_a_run_that_was_not_evaluated_and_stores_what_it_shows(report_html, report_run,
                                                                                 ood_dir):
    folder = RunDir(report_run).eval("test")
    interp = Interpretation.load(folder.predictions)
    metrics = json.loads(folder.metrics.read_text())
    assert metrics["n"] == len(interp) and metrics["accuracy"] == pytest.approx(interp.metrics()["accuracy"])
    options = ReportOptions(**FAST).photo_plan
    assert json.loads(folder.photo_plan.read_text()) == plan_photos(interp, options).to_dict()
    # The detector's scores stored by evaluate are those a prediction of each test photo gives.
    predictor = Predictor.from_run_dir(report_run)
    scores = UnknownScores.from_dict(json.loads(folder.unknown_scores.read_text()))
    again, unreadable = score_photos(predictor, [Path(p) for p in interp.paths])
    assert unreadable == 0 and scores.detector == predictor.detector.name
    np.testing.assert_allclose(scores.known, again, rtol=1e-5, atol=1e-6)
    other = scores.other  # scored and stored by the report, which was asked for --ood
    assert other is not None and other.folder == str(ood_dir)
    assert (other.total, len(other.scores), other.unreadable) == (8, 7, 1)  # broken.jpg is unreadable


def test_the_report_shows_the_stored_results_instead_of_computing_them(report_html, report_run, tmp_path):
    run = copy_run(report_run, tmp_path / "run", evaluated=True)
    folder = RunDir(run).eval("test")
    unknown = json.loads(folder.unknown_scores.read_text())
    unknown["known"] = [-1e9, -1e9, -1e9, 1e9]  # three kept, one rejected, whatever the threshold
    folder.unknown_scores.write_text(json.dumps(unknown))
    faithfulness = json.loads(folder.faithfulness.read_text())
    faithfulness["methods"][0]["deletion_auc"] = 0.123456
    folder.faithfulness.write_text(json.dumps(faithfulness))
    plan = json.loads(folder.photo_plan.read_text())
    first = plan["gallery"][0]
    plan["gallery"], plan["gallery_left_out"] = [first], []
    folder.photo_plan.write_text(json.dumps(plan))
    page = parse(build_report(run, ReportOptions(out=tmp_path / "r.html", **FAST)))
    assert f"{pct(0.75)} of 4 held-out photos of the known species" in page.text("unknown")
    assert "0.123" in page.text("faithfulness")
    name = json.loads((run / "manifest.json").read_text())["species"][first["species"]]["common_name"]
    listed = re.findall(r"(\S[^·]*?) · \d+ test photos ·", page.text("gallery"))
    assert len(listed) == 1 and listed[0].endswith(name.replace("_", " "))  # one species, the stored one


def test_overview_numbers_match_metrics_json(report_html, report_run):
    metrics = json.loads((report_run / "eval" / "test" / "metrics.json").read_text())
    manifest = json.loads((report_run / "manifest.json").read_text())
    overview = parse(report_html).text("overview")
    lo, hi = metrics["accuracy_ci95"]
    assert (
        f"{pct(metrics['accuracy'])} (95% CI {pct(lo)} – {pct(hi)}, Wilson) on {metrics['n']} held-out"
        in overview
    )
    assert f"{pct(metrics['top3_accuracy'])} top-3 accuracy" in overview
    assert f"{metrics['macro_f1']:.3f} macro F1" in overview
    assert f"{len(manifest['species'])} species" in overview
    assert manifest["backbone"] in overview
    assert manifest["data_fingerprint"][:16] in overview and "matches the data now" in overview
    assert f"Seed {manifest['seed']}" in overview
    assert f"torch {manifest['versions']['torch']}" in overview
    assert f"precision {manifest['metrics']['precision']}" in overview


def test_metrics_show_balanced_accuracy_calibration_and_the_reliability_diagram(report_html, report_run):
    metrics = json.loads((report_run / "eval" / "test" / "metrics.json").read_text())
    temperature = json.loads((report_run / "manifest.json").read_text())["calibration"]["temperature"]
    page = parse(report_html)
    text = page.text("metrics")
    assert f"{pct(metrics['balanced_accuracy'])} balanced accuracy" in text
    assert f"{pct(metrics['ece'])} calibration error" in text
    assert f"temperature of {temperature:.3f}" in text
    assert 'alt="reliability diagram of the test photos"' in report_html.read_text()


def test_metrics_and_data_tables_list_every_species(report_html, report_run):
    page = parse(report_html)
    species = [
        s["common_name"].replace("_", " ")
        for s in json.loads((report_run / "manifest.json").read_text())["species"]
    ]
    summary = json.loads((report_run / "data_summary.json").read_text())
    for name in species:
        assert name in page.text("metrics") and name in page.text("data") and name in page.text("gallery")
    total = sum(sum(split.values()) for split in summary["counts"].values())
    assert f"all species {sum(summary['counts']['train'].values())}" in page.text("data")
    assert str(total) in page.text("data")


def test_unknown_section_with_an_ood_folder(report_html, ood_dir):
    text = parse(report_html).text("unknown")
    assert "AUROC" in text and "Unknown photos rejected" in text
    assert "of 7 photos" in text and "1 unreadable skipped" in text  # README.txt is not tried, broken.jpg is
    assert "energy" in text  # the tiny run's detector


def test_faithfulness_section_names_n_and_the_best_method(report_html):
    text = parse(report_html).text("faithfulness")
    assert "2 held-out test photos" in text
    best = re.search(r"Most faithful for this model: (\S+)", text)
    assert best and best.group(1) in {"Grad-CAM", "Eigen-CAM"}
    assert "Score-CAM" in text  # named as not compared


def test_without_ood_the_unknown_section_says_how_to_add_it(report_run, tmp_path):
    run = copy_run(report_run, tmp_path / "run", evaluated=True)  # building may evaluate: not the shared one
    out = build_report(
        run,
        ReportOptions(out=tmp_path / "r.html", faithfulness_photos=0, gallery_per_species=0, top_losses=1),
    )
    page = parse(out)
    assert "--ood DIR" in page.text("unknown") and "Unknown photos rejected" not in page.text("unknown")
    assert page.images["unknown"], "known photos' scores are still drawn"
    assert "Skipped" in page.text("faithfulness") and "Skipped" in page.text("gallery")


def test_data_folder_missing_degrades_gracefully(report_html, report_run, tmp_path):
    moved = copy_run(report_run, tmp_path / "moved", evaluated=True)
    out = build_report(moved, ReportOptions(data=tmp_path / "nowhere", **FAST))
    page = parse(out)
    assert list(page.sections) == list(SECTION_IDS)
    for sid in ("augmentation", "mistakes", "gallery", "activations", "faithfulness"):
        assert "the photos are not at" in page.text(sid), sid
        assert not page.images[sid], f"{sid} shows pictures of photos that are not there"
    assert "--data DIR" in page.text("gallery")
    # What the run folder itself holds is still reported.
    metrics = json.loads((moved / "eval" / "test" / "metrics.json").read_text())
    assert pct(metrics["accuracy"]) in page.text("metrics")
    assert page.images["training"] and page.images["confusion"]
    assert "data not available to check" in page.text("overview")


def test_never_evaluated_and_no_data_still_makes_a_report(report_run, tmp_path):
    bare = copy_run(report_run, tmp_path / "bare", evaluated=False)
    out = build_report(bare, ReportOptions(data=tmp_path / "nowhere", **FAST))
    page = parse(out)
    assert list(page.sections) == list(SECTION_IDS)
    assert "has not been evaluated" in page.text("metrics")
    assert "has not been evaluated" in page.text("overview")
    assert not (bare / "eval").exists()


def test_moved_data_is_found_with_data(report_run, synthetic_data, tmp_path):
    """Photos recorded under the old root are looked up under --data."""
    import shutil

    moved_data = tmp_path / "elsewhere"
    shutil.copytree(synthetic_data, moved_data)
    run = copy_run(report_run, tmp_path / "run", evaluated=True)
    splits = json.loads((run / "splits.json").read_text())
    splits["root"] = str(tmp_path / "old-place")
    (run / "splits.json").write_text(json.dumps(splits))
    preds = json.loads((run / "eval" / "test" / "predictions.json").read_text())
    preds["paths"] = [p.replace(str(synthetic_data), str(tmp_path / "old-place")) for p in preds["paths"]]
    (run / "eval" / "test" / "predictions.json").write_text(json.dumps(preds))
    out = build_report(
        run, ReportOptions(data=moved_data, faithfulness_photos=0, gallery_per_species=1, top_losses=2)
    )
    page = parse(out)
    assert page.images["mistakes"] and page.images["gallery"]
    assert "not at" not in page.text("mistakes")


def test_cli_writes_the_report_and_reports_bad_input(report_run, tmp_path, capsys):
    report_run = copy_run(report_run, tmp_path / "run", evaluated=True)  # the CLI may evaluate it
    out = tmp_path / "cli.html"
    code = main(
        [
            "report",
            str(report_run),
            "--out",
            str(out),
            "--faithfulness-photos",
            "0",
            "--gallery-per-species",
            "1",
        ]
    )
    assert code == 0 and str(out) in capsys.readouterr().out
    page = parse(out)  # the options reached the report: no faithfulness photos, one gallery photo a species
    assert "Skipped" in page.text("faithfulness")
    assert len(page.images["gallery"]) == 3
    assert main(["report", str(report_run), "--ood", str(tmp_path / "missing")]) == 2
    assert "unknown-photo folder not found" in capsys.readouterr().err
    assert main(["report", str(report_run), "--gallery-per-species", "-1"]) == 2
    assert "gallery-per-species must be 0 or more, not -1" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 2  # not a run folder
    assert "not a finished monkeysee run" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad",
    [
        dict(faithfulness_photos=-1),
        dict(faithfulness_steps=0),
        dict(faithfulness_methods=("nonsense",)),
        dict(max_ood_photos=0),
    ],
)
def test_options_reject_nonsense(bad):
    from monkeysee.errors import ConfigError

    with pytest.raises(ConfigError):
        ReportOptions(**bad)


def test_the_taxonomy_section_lists_each_species_with_its_recorded_ranks(report_html, report_run):
    recorded = json.loads((report_run / "manifest.json").read_text())["taxonomy"]
    lineage = {"n0": ["Rubra"], "n1": ["Viridis"], "n2": ["Caerulea"]}
    assert recorded == {"ranks": ["genus"], "lineage": lineage, "source": "Latin names of the labels file"}
    text = " ".join(parse(report_html).text("taxonomy").split())
    assert "3 species in 3 genus taxa, from Latin names of the labels file" in text
    assert "red monkey Rubra simia Rubra" in text and "blue monkey Caerulea simia Caerulea" in text


def test_the_answers_section_names_the_taxa_that_are_never_an_answer(report_run):
    from monkeysee.report.context import ReportContext
    from monkeysee.report.sections.taxonomy import AnswersSection

    ctx = ReportContext.load(report_run, ReportOptions(**FAST))
    ranks = {"species": {"answered": 8, "coverage": 0.8, "accuracy": 1.0},
             "superfamily": {"answered": 0, "coverage": 0.0, "accuracy": None}}
    closed = {"superfamily": ["Papilionoidea"]}
    ctx.metrics = {"answers": {"n": 10, "answered": 8, "coverage": 0.8, "accuracy_at_rank": 1.0, "wrong": 0,
                               "wrong_rate": 0.0, "ranks": ranks, "closed": closed}}
    text = re.sub(r"<[^>]+>", " ", AnswersSection().render(ctx))
    assert ("Never an answer, each holding more of the run's species than its answer_max_share: superfamily "
            "Papilionoidea.") in text
    del ctx.metrics["answers"]["closed"]  # an evaluation before answer_max_share
    assert "Never an answer" not in AnswersSection().render(ctx)
