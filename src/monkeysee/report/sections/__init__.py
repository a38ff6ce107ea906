"""The report's sections: each a small class registered with `@section`, in reading order.

A section may `plan` (ask the overlay bank for the Grad-CAM pictures it will show, so the builder can
compute them all in a few batches) and must `render` its HTML body. Adding a section is one class in one
of these modules; the builder and the table of contents find it through the registry.
"""

from __future__ import annotations

import importlib
from typing import ClassVar, TypeVar

from monkeysee.registry import Registry
from monkeysee.report.context import ReportContext

_MODULES = ("summary", "taxonomy", "photos", "checks", "evidence", "species_map", "atlas")


class Section:
    """One <section id=...> of the report, with an <h2> title."""

    id: ClassVar[str]
    title: ClassVar[str]
    order: ClassVar[int]

    def plan(self, ctx: ReportContext) -> None:
        """Say which overlays `render` will need (`ctx.cams.want`); nothing by default."""

    def render(self, ctx: ReportContext) -> str:
        """The section's HTML, without the <section> and <h2> around it."""
        raise NotImplementedError


S = TypeVar("S", bound=type[Section])
SECTIONS: Registry[type[Section]] = Registry("report section")


def section(cls: S) -> S:
    """Class decorator: add a section to the report under its `id`."""
    SECTIONS.add(cls.id, cls)
    return cls


def all_sections() -> list[Section]:
    """A fresh instance of every registered section, in reading order."""
    for name in _MODULES:
        importlib.import_module(f"{__name__}.{name}")
    return [cls() for cls in sorted(SECTIONS.values(), key=lambda c: c.order)]
