"""Reports built once from copies of the tiny run, shared by the report tests (each build takes seconds)."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from monkeysee.report import ReportOptions, build_report
from monkeysee.report.sections import all_sections

SECTIONS_IN_ORDER = all_sections()
SECTION_IDS = tuple(s.id for s in SECTIONS_IN_ORDER)
"""Every registered section, in reading order: a section is tested the moment it is registered."""
# Small enough for a test, large enough that every section has something to show.
FAST = dict(
    faithfulness_photos=2,
    faithfulness_steps=2,
    faithfulness_methods=("gradcam", "eigencam"),
    gallery_per_species=2,
    top_losses=4,
)


def copy_run(run: Path, dest: Path, evaluated: bool = False) -> Path:
    """A private copy of a run folder (the session's tiny run is shared, so tests never write into it)."""
    shutil.copytree(
        run, dest, ignore=shutil.ignore_patterns("state", "report.html", *(() if evaluated else ("eval",)))
    )
    return dest


@pytest.fixture(scope="session")
def ood_dir(tmp_path_factory) -> Path:
    """Photos of no known species (grey noise and checkerboards), a read-me and one broken file."""
    root = tmp_path_factory.mktemp("ood")
    rng = np.random.default_rng(0)
    for i in range(6):
        noise = rng.integers(90, 160, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(noise).save(root / f"noise_{i}.jpg")
    board = (np.indices((64, 64)).sum(0) // 8 % 2 * 255).astype(np.uint8)
    Image.fromarray(np.stack([board] * 3, axis=-1)).save(root / "board.png")
    (root / "README.txt").write_text("not photos of monkeys\n")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return root


@pytest.fixture(scope="session")
def report_run(tiny_run, tmp_path_factory) -> Path:
    """A copy of the tiny run that has not been evaluated yet (the report evaluates it)."""
    return copy_run(tiny_run, tmp_path_factory.mktemp("report") / "run")


@pytest.fixture(scope="session")
def report_html(report_run, ood_dir) -> Path:
    """The full report of the tiny run, with an unknown-photo folder."""
    return build_report(report_run, ReportOptions(ood=ood_dir, **FAST))


class Page(HTMLParser):
    """The parts of a report the tests look at: every tag's attributes, and each section's text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.sections: dict[str, list[str]] = {}
        self.headings: dict[str, str] = {}
        self.images: dict[str, list[str]] = {}
        self._section: str | None = None
        self._in_h2 = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag == "section":
            self._section = a.get("id") or ""
            self.sections[self._section] = []
            self.images[self._section] = []
        elif tag == "h2" and self._section is not None:
            self._in_h2 = True
            self.headings[self._section] = ""
        elif tag == "img" and self._section is not None:
            self.images[self._section].append(a.get("src") or "")

    def handle_endtag(self, tag):
        if tag == "section":
            self._section = None
        elif tag == "h2":
            self._in_h2 = False

    def handle_data(self, data):
        if self._section is None:
            return
        if self._in_h2:
            self.headings[self._section] += data
        else:
            self.sections[self._section].append(data)

    def text(self, section: str) -> str:
        return " ".join(" ".join(self.sections[section]).split())


def parse(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))
