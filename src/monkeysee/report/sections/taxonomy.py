"""The ranks above species the run recorded: each species with its genus, family and so on."""

from __future__ import annotations

from monkeysee.data.taxonomy import Taxonomy
from monkeysee.report.context import ReportContext
from monkeysee.report.html import code, esc, note, para, table
from monkeysee.report.sections import Section, section
from monkeysee.report.sections.summary import species_label


@section
class TaxonomySection(Section):
    id = "taxonomy"
    title = "Taxonomy"
    order = 25

    def render(self, ctx: ReportContext) -> str:
        if ctx.manifest.taxonomy is None:
            return note("This run records no ranks above species: its species have no Latin names and no "
                        "taxonomy file was given (monkeysee train --taxonomy FILE.csv).")
        taxonomy = Taxonomy.from_dict(ctx.manifest.taxonomy)
        rows = [[species_label(ctx, i), *map(esc, taxonomy.lineage[s.label])]
                for i, s in enumerate(ctx.species)]
        sizes = ", ".join(f"{len(taxonomy.members(rank))} {esc(rank)} taxa" for rank in taxonomy.ranks)
        return para(f"{len(rows)} species in {sizes}, from {code(taxonomy.source)}.") + table(
            ["species", *taxonomy.ranks], rows, raw=True)
