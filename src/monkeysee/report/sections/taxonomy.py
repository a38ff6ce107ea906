"""The ranks above species the run recorded: each species with its genus, family and so on; and how the
answers given at those ranks did on the test photos."""

from __future__ import annotations

from monkeysee.data.taxonomy import Taxonomy
from monkeysee.report.context import ReportContext
from monkeysee.report.html import code, esc, figure, img, note, num, para, pct, table
from monkeysee.report.images import file_uri
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


@section
class AnswersSection(Section):
    id = "answers"
    title = "Answers by rank"
    order = 26

    def render(self, ctx: ReportContext) -> str:
        d = (ctx.metrics or {}).get("answers")
        if not d:
            return note("No answer figures: evaluate the run again (monkeysee evaluate RUN_DIR).")
        rows = [[esc(rank), str(r["answered"]), pct(r["coverage"]), pct(r["accuracy"], 2),
                 num(d.get("thresholds", {}).get(rank))] for rank, r in d["ranks"].items()]
        text = para(f"Of {d['n']} test photos, {d['answered']} ({pct(d['coverage'])}) were answered, each "
                    "at the finest rank its probabilities support; "
                    f"{pct(d['accuracy_at_rank'], 2)} of the answers were right at the rank given, and "
                    f"{d['wrong']} ({pct(d['wrong_rate'], 2)} of all photos) named a species that is not "
                    "the photo's or a taxon that does not hold it.")
        closed = "; ".join(f"{esc(rank)} {', '.join(map(esc, names))}"
                           for rank, names in d.get("closed", {}).items())
        if closed:
            text += para("Never an answer, each holding more of the run's species than its answer_max_share: "
                         f"{closed}.")
        parts = [text, table(["rank", "answered", "share", "right", "threshold"], rows, numeric=(1, 2, 3, 4),
                             raw=True)]
        stored = ctx.evaluation.risk_coverage
        if stored.is_file():
            picture = img(file_uri(stored), "risk-coverage curve of the species rank", class_="matrix")
            parts.append(figure(picture,
                                "Answering the surest photos first: the share answered at species rank "
                                "against the share of those answers that are wrong; the dot is the run's "
                                "species threshold."))
        return "".join(parts)
