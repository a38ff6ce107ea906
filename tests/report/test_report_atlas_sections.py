"""The atlas, concepts and shortcut sections render what the commands stored, and say what to run when
nothing is stored."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
from PIL import Image

from monkeysee.data.species import Species
from monkeysee.report.context import ReportContext
from monkeysee.report.sections.atlas import Atlas, Concepts, Shortcuts
from monkeysee.rundir import EvalFolder, RunDir


@dataclass
class StoredRun:
    """The parts of a ReportContext these sections read."""

    run_dir: Path
    species: tuple[Species, ...]

    @property
    def evaluation(self) -> EvalFolder:
        return RunDir(self.run_dir).eval("test")

    def name(self, index: int) -> str:
        return self.species[index].display_name


def context(tmp_path: Path) -> ReportContext:
    species = (Species("n0", "square monkey"), Species("n1", "green monkey"))
    (tmp_path / "eval" / "test").mkdir(parents=True)
    return cast(ReportContext, StoredRun(tmp_path, species))


def test_sections_say_which_command_to_run_when_nothing_is_stored(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    assert "monkeysee atlas" in Atlas().render(ctx)
    assert "monkeysee concepts" in Concepts().render(ctx)
    assert "monkeysee evaluate" in Shortcuts().render(ctx)


def test_shortcut_section_lists_flagged_species_first(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    folder = ctx.evaluation
    folder.write_json(folder.shortcuts, {
        "band": 0.15, "area_share": 0.51, "layer": "body.head", "flagged": ["square monkey"],
        "species": [
            {"index": 0, "name": "square monkey", "photos": 4, "border_share": 0.7, "concepts": ["square"],
             "reasons": ["70% of its Grad-CAM mass on the border", "concept 'square' raises its score"]},
            {"index": 1, "name": "green monkey", "photos": 4, "border_share": 0.04, "concepts": [],
             "reasons": []}]})
    folder.write_json(folder.concepts, {"random": "ground/", "concepts": [
        {"concept": "square", "layer": "body.head", "photos": 16, "scores": [1.0, 0.0],
         "random_scores": [0.5, 0.6], "p_values": [0.0077, 0.0017], "moves": [True, False], "runs": 10,
         "alpha": 0.01}]})
    html = Shortcuts().render(ctx)
    assert "1 species lean on a shortcut:</b> square monkey." in html
    assert html.index("square monkey</td>") < html.index("green monkey</td>")
    assert "<td class=\"num\">70.0%</td>" in html
    concepts = Concepts().render(ctx)
    assert concepts.count("<b>moves</b>") == 2  # the legend and the square monkey's row
    assert "0.0077" in concepts


def test_atlas_section_shows_the_first_rows_of_each_stored_sheet(tmp_path: Path) -> None:
    ctx = context(tmp_path)
    atlas = RunDir(tmp_path).atlas_dir
    atlas.mkdir()
    Image.fromarray(np.zeros((2 + 20 * 18, 100, 3), np.uint8)).save(atlas / "body.stem.png")
    (atlas / "atlas.json").write_text(
        '{"photos": ["a.jpg"], "patch_size": 16, "sheets": {"body.stem": "body.stem.png"},'
        ' "shown_channels": {"body.stem": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}, "layers": [{"layer": "body.stem",'
        ' "channels": 32, "receptive_field": {"size": [3, 3], "jump": [2, 2]}}]}')
    html = Atlas().render(ctx)
    assert html.count("<img") == 1 and "receptive field 3 px, stride 2 px" in html
