"""Sections that test the model's claims: are its explanations faithful, and does it know what it does
not know (photos of none of its species)?"""

from __future__ import annotations

import math

import numpy as np

from monkeysee.report.context import ReportContext
from monkeysee.report.html import code, esc, figure, img, key_values, note, num, para, pct, table
from monkeysee.report.images import plot_uri
from monkeysee.report.sections import Section, section

# A randomisation rank correlation this high means the map hardly depends on the trained head.
RHO_BLIND = 0.5


@section
class Faithfulness(Section):
    id = "faithfulness"
    title = "Faithfulness of the explanations"
    order = 100

    def render(self, ctx: ReportContext) -> str:
        from monkeysee.explain import METHODS

        if ctx.options.faithfulness_photos == 0:
            return note("Skipped (--faithfulness-photos 0).")
        if ctx.index is None or not ctx.photos_ok:
            return note(ctx.photos_missing("faithfulness table"))
        report, chosen = ctx.faithfulness()
        if not chosen:
            return note("No readable test photos to measure faithfulness on.")
        best = report.best
        rows = []
        for s in report.scores:
            mark = ' class="best"' if s.method == best else ""
            rows.append(
                [
                    f"<span{mark}>{esc(METHODS[s.method].title)}</span>",
                    num(s.deletion_auc),
                    num(s.insertion_auc),
                    f"{s.insertion_minus_deletion:+.3f}",
                    f"{s.average_drop:.1f}",
                    f"{s.increase_in_confidence:.1f}",
                    _rho(s.randomization_rho_head),
                    _rho(s.randomization_rho_top),
                    f"{s.seconds_per_photo:.3f}",
                ]
            )
        header = [
            "method",
            "deletion ↓",
            "insertion ↑",
            "ins − del ↑",
            "avg drop % ↓",
            "increase % ↑",
            "rand ρ head ↓",
            "rand ρ top ↓",
            "s / photo",
        ]
        best_title = METHODS[best].title if best else "none"
        left_out = [METHODS[m].title for m in METHODS if m not in ctx.options.faithfulness_methods]
        blind = [METHODS[s.method].title for s in report.scores if s.randomization_rho_head >= RHO_BLIND]
        sanity = (
            f" {esc(', '.join(blind))} barely change{'s' * (len(blind) == 1)} when the head is "
            f"re-initialised (ρ ≥ {RHO_BLIND}): such maps show where the layer fires more than what the "
            "trained head uses."
            if blind
            else ""
        )
        return (
            para(
                f"Each CAM method, measured on <b>{len(chosen)} held-out test photos</b> (spread over "
                f"species) at layer {code(report.layer)}, {report.steps} deletion/insertion steps, baseline: "
                f"{esc(report.baseline)}. Deletion: remove the pixels the map calls important first; the "
                "probability should fall fast (low area). Insertion: add them first to a blurred photo; it "
                "should rise fast (high area). Randomisation: the maps of a copy whose head (or top stages) "
                "were re-initialised should look different (low rank correlation ρ)."
            )
            + table(header, rows, numeric=range(1, len(header)), raw=True)
            + para(
                f'Most faithful for this model: <b class="best">{esc(best_title)}</b> (highest insertion '
                "minus deletion area). The overlays in this report use Grad-CAM. "
                f"{len(chosen)} photos give a rough ranking; for a firmer one, with every method, run "
                f"{code(f'monkeysee explain {ctx.run_dir} --evaluate --n 64')}."
                + sanity
                + (f" Not compared here: {esc(', '.join(left_out))}." if left_out else "")
            )
        )


def _rho(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.2f}"


@section
class Unknown(Section):
    id = "unknown"
    title = "Not one of my species"
    order = 110

    def render(self, ctx: ReportContext) -> str:
        from monkeysee.evaluate.plots import plot_unknown_scores
        from monkeysee.models.unknown import auroc

        detector = ctx.predictor.detector
        scores = ctx.unknown_scores()
        if detector is None or scores is None:
            return note(
                "This run has no unknown-photo detector (its manifest records none); retrain to get one."
            )
        opt = ctx.options
        keep = (f"{pct(detector.keep, 1)} of known photos (out-of-fold training and validation photos)"
                if detector.keep else "set by hand")
        rows = [
            ("Detector", f"{code(detector.name)}: a higher score means less like any known species"),
            (
                "Threshold",
                f"{num(detector.threshold, 4)}, calibrated to keep {keep}; photos scoring above "
                "it are answered with “not one of my species”",
            ),
        ]
        parts = []
        known = scores.known
        if known.size:
            rows.append(
                (
                    "Known test photos kept",
                    f"{pct(float((known <= detector.threshold).mean()))} of "
                    f"{known.size} held-out photos of the known species",
                )
            )
        elif ctx.index is None or not ctx.photos_ok:
            parts.append(note(ctx.photos_missing("scores of known photos")))
        unknown = np.array([])
        if opt.ood is not None and scores.other is not None:
            other = scores.other
            unknown = other.scores
            sample = other.sampled != other.total
            share = f" (an evenly spaced sample of the {other.total} there)" if sample else ""
            rows.append(
                (
                    "Unknown photos rejected",
                    f"{pct(float((unknown > detector.threshold).mean()))} of "
                    f"{unknown.size} photos from {code(opt.ood)}{share}"
                    + (f"; {other.unreadable} unreadable skipped" if other.unreadable else ""),
                )
            )
            if known.size and unknown.size:
                rows.append(
                    (
                        "AUROC",
                        f"<b>{num(auroc(known, unknown))}</b>: the chance that an unknown photo "
                        "scores higher than a known one (1 = perfect separation, 0.5 = chance)",
                    )
                )
        if known.size or unknown.size:
            uri = plot_uri(
                lambda p: plot_unknown_scores(known, unknown, detector.threshold, p, detector.name)
            )
            parts.append(
                figure(
                    img(uri, "unknown-photo scores and ROC", class_="wide"),
                    "Scores of held-out known photos"
                    + (" and of the unknown photos" if unknown.size else "")
                    + ", with the threshold dashed.",
                )
            )
        if opt.ood is None:
            parts.append(
                note(
                    "Only known photos are scored. To see how well the detector separates them from "
                    f"photos of other things, rebuild with {code('--ood DIR')}: a folder of photos of "
                    "no known species (other animals, people, empty scenes). The report then adds "
                    "the share rejected and the AUROC."
                )
            )
        return key_values(rows) + "".join(parts)
