"""Sections that show photos: augmentation, confusion, mistakes, gallery and activations.

Photos are shown as the model saw them (the centre crop at its input size); every Grad-CAM overlay
explains one named species, computed in batches by the overlay bank before these sections render.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from monkeysee.errors import ImageError
from monkeysee.evaluate.metrics import most_confused_pairs
from monkeysee.evaluate.plots import BLOCK_SPECIES
from monkeysee.report.context import ReportContext
from monkeysee.report.html import (
    code,
    details,
    esc,
    figure,
    img,
    missing_tile,
    note,
    para,
    pct,
    table,
)
from monkeysee.report.images import figure_uri, file_uri, jpeg_uri, png_uri, stored_or_plot_uri
from monkeysee.report.sections import Section, section

CARD_PX = 150  # displayed width of photos in cards (confusion, mistakes)
GALLERY_PX = 128
ACTIVATION_PX = 96
AUGMENT_PHOTOS, AUGMENT_VIEWS = 4, 5
CHANNELS_PER_BLOCK = 9
MAX_PAIRS_LISTED = 15


def picture(ctx: ReportContext, path: Path, target: int | None, alt: str, width: int) -> str:
    """The photo (target None) or its Grad-CAM overlay for `target`, or a box saying why it is missing."""
    image = ctx.cams.photo(path) if target is None else ctx.cams.overlay(path, target)
    if image is None:
        return missing_tile(ctx.cams.problem(path) or "photo not found", width)
    return img(jpeg_uri(image), alt, width)


def strip(
    ctx: ReportContext, path: Path, panels: list[tuple[int | None, str]], caption: str, bad: bool = False
) -> str:
    """A card: the same photo several ways side by side (photo, overlays), one caption under all."""
    figures = "".join(
        figure(picture(ctx, path, target, f"{label}: {path.name}", CARD_PX), esc(label))
        for target, label in panels
    )
    return (
        f'<div class="card{" wrong" if bad else ""}"><div class="strip">{figures}</div><p>{caption}</p></div>'
    )


def _needs_predictions(ctx: ReportContext, what: str) -> str | None:
    """The note to show instead of `what`, when predictions or photos are missing; None when all is there."""
    if ctx.interp is None:
        why = (
            ctx.problems.get("predictions") or ctx.problems.get("metrics") or "the run has not been evaluated"
        )
        return note(f"No {esc(what)}: {esc(why)}.")
    if not ctx.photos_ok:
        return note(ctx.photos_missing(what))
    return None


@section
class Augmentation(Section):
    id = "augmentation"
    title = "Augmentation"
    order = 30

    def render(self, ctx: ReportContext) -> str:
        from monkeysee.data.augment import AugmentConfig
        from monkeysee.data.preview import augmentation_grid

        if ctx.index is None or not ctx.photos_ok:
            return note(ctx.photos_missing("augmentation preview"))
        cfg = AugmentConfig.from_dict(ctx.config["augment"]) if "augment" in ctx.config else AugmentConfig()
        grid = augmentation_grid(
            ctx.index.train,
            ctx.manifest.preprocess,
            cfg,
            AUGMENT_PHOTOS,
            AUGMENT_VIEWS,
            seed=ctx.manifest.seed,
            species=ctx.species,
        )
        ops = ", ".join(cfg.ops)
        return para(
            f"Each training photo gets a random crop (keeping {pct(cfg.base_scale[0], 0)} to "
            f"{pct(cfg.base_scale[1], 0)} of its area) and then one operation drawn from: {esc(ops)}. "
            "Each row: the photo as seen at test time, then augmented training views, each labelled "
            "with its operation."
        ) + figure(img(jpeg_uri(grid), "augmentation preview grid", class_="wide"))


@dataclass(frozen=True)
class Example:
    """One photo shown for a pair of species: its true one and the other one it was (nearly) called."""

    path: Path
    true: int
    other: int
    p_other: float
    p_true: float


@section
class Confusion(Section):
    id = "confusion"
    title = "Confusion"
    order = 60

    def __init__(self) -> None:
        self.pairs: list[tuple[int, int, int, list[Example]]] = []  # true, other, count, examples
        self.near_misses = False

    def plan(self, ctx: ReportContext) -> None:
        plan = ctx.photo_plan
        if plan is None or not ctx.photos_ok:
            return
        self.near_misses = plan.near_misses
        for pair in plan.pairs:
            examples = [self._example(ctx, row, pair.other) for row in pair.rows]
            self.pairs.append((pair.true, pair.other, pair.count, examples))
        for _, _, _, examples in self.pairs:
            for e in examples:
                ctx.cams.want(e.path, e.other)
                ctx.cams.want(e.path, e.true)

    @staticmethod
    def _example(ctx: ReportContext, row: int, other: int) -> Example:
        it = ctx.interp
        assert it is not None
        t = int(it.targets[row])
        return Example(
            ctx.photo_path(it.paths[row]), t, other, float(it.probs[row, other]), float(it.probs[row, t])
        )

    def render(self, ctx: ReportContext) -> str:
        parts = [self._matrix(ctx)]
        missing = _needs_predictions(ctx, "example photos")
        if missing:
            return "".join([*parts, missing])
        it = ctx.interp
        assert it is not None
        if self.near_misses:
            parts.append(
                para(
                    f"No photo of the {len(it)} test photos was given the wrong species. The closest "
                    "calls: for each pair, the photos whose second most likely species was the other one, "
                    "with Grad-CAM for both species (where each would look for evidence)."
                )
            )
        else:
            listed = most_confused_pairs(it.confusion_matrix())[:MAX_PAIRS_LISTED]
            support = np.bincount(it.targets, minlength=it.num_classes)
            rows = [[ctx.name(t), ctx.name(p), c, pct(c / support[t])] for t, p, c in listed]
            parts.append("<h3>Most confused pairs</h3>")
            parts.append(
                table(
                    ["true species", "predicted as", "photos", "share of the true species"],
                    rows,
                    numeric=(2, 3),
                )
            )
        for t, other, count, examples in self.pairs:
            what = "runner-up" if self.near_misses else "predicted"
            if self.near_misses:
                head = f"{esc(ctx.name(t))}, runner-up {esc(ctx.name(other))}"
            else:
                head = f"{esc(ctx.name(t))} → {esc(ctx.name(other))} ({count} photo{'s' * (count != 1)})"
            cards = [
                strip(
                    ctx,
                    e.path,
                    [(None, "photo"), (e.other, f"Grad-CAM: {what}"), (e.true, "Grad-CAM: true")],
                    f"{esc(e.path.name)}: p({esc(ctx.name(e.other))}) = {e.p_other:.2f}, "
                    f"p({esc(ctx.name(t))}) = {e.p_true:.2f}",
                    bad=not self.near_misses,
                )
                for e in examples
            ]
            parts.append(f'<h3>{head}</h3><div class="cards">{"".join(cards)}</div>')
        return "".join(parts)

    @staticmethod
    def _matrix(ctx: ReportContext) -> str:
        from monkeysee.evaluate.plots import plot_confused_block, plot_confusion_matrix

        stored = ctx.evaluation.confusion_matrix
        if not ctx.metrics:
            if not stored.is_file():
                return note(esc(ctx.problems.get("metrics", "The run has not been evaluated.")))
            return figure(img(file_uri(stored), "confusion matrix of the test photos", class_="matrix"),
                          "Rows: true species; columns: predicted species; counts of test photos.")
        cm = np.asarray(ctx.metrics["confusion_matrix"])
        names = [s.display_name for s in ctx.species]
        matrix = figure(
            img(stored_or_plot_uri(stored, lambda p: plot_confusion_matrix(cm, names, p)),
                "confusion matrix of the test photos", class_="matrix"),
            "Rows: true species; columns: predicted species; counts of test photos.",
        )
        if len(names) <= BLOCK_SPECIES:
            return matrix
        block = figure(
            img(stored_or_plot_uri(ctx.evaluation.confusion_block,
                                   lambda p: plot_confused_block(cm, names, p)),
                "the most-confused species", class_="matrix"),
            f"The {BLOCK_SPECIES} species most confused with each other, side by side and named; the full "
            f"matrix of all {len(names)} species is above and in {code(ctx.evaluation.confusion_csv)}.",
        )
        return block + matrix


@section
class Mistakes(Section):
    id = "mistakes"
    title = "Mistakes"
    order = 70

    def __init__(self) -> None:
        self.items: list = []

    def plan(self, ctx: ReportContext) -> None:
        if ctx.interp is None or not ctx.photos_ok:
            return
        self.items = ctx.interp.top_losses(ctx.options.top_losses)
        for item in self.items:
            path = ctx.photo_path(item.path)
            ctx.cams.want(path, item.pred)
            if not item.correct:
                ctx.cams.want(path, item.target)

    def render(self, ctx: ReportContext) -> str:
        missing = _needs_predictions(ctx, "mistakes to show")
        if missing:
            return missing
        assert ctx.interp is not None
        if ctx.options.top_losses == 0:
            return note("Skipped (top losses set to 0).")
        wrong = sum(not i.correct for i in self.items)
        if wrong == 0:
            intro = (
                f"No mistakes on the {len(ctx.interp)} test photos. These are the {len(self.items)} correct "
                "predictions the model was least sure of, with Grad-CAM for the species it named."
            )
        else:
            intro = (
                f"The {len(self.items)} test photos with the highest loss (lowest probability for the true "
                "species), worst first; Grad-CAM for the predicted species and for the true one."
            )
        cards = []
        for item in self.items:
            path = ctx.photo_path(item.path)
            true, pred = ctx.name(item.target), ctx.name(item.pred)
            panels: list[tuple[int | None, str]] = [(None, "photo"), (item.pred, "Grad-CAM: predicted")]
            if not item.correct:
                panels.append((item.target, "Grad-CAM: true"))
            said = f"right: {esc(true)}" if item.correct else f"{esc(true)} → {esc(pred)}"
            caption = (
                f"<b>{said} (p={item.pred_prob:.2f})</b><br>"
                f"{esc(path.name)}: loss {item.loss:.2f}, p(true) = {item.target_prob:.2f}"
            )
            cards.append(strip(ctx, path, panels, caption, bad=not item.correct))
        return para(intro) + f'<div class="cards">{"".join(cards)}</div>'


@section
class Gallery(Section):
    id = "gallery"
    title = "Gallery"
    order = 80

    def __init__(self) -> None:
        self.shown: dict[int, tuple[list[int], list[int]]] = {}  # species -> (correct rows, wrong rows)
        self.left_out: list[int] = []

    def plan(self, ctx: ReportContext) -> None:
        plan, it = ctx.photo_plan, ctx.interp
        if plan is None or it is None or not ctx.photos_ok:
            return
        self.shown = {c: (list(right), list(wrong)) for c, (right, wrong) in plan.gallery.items()}
        self.left_out = list(plan.gallery_left_out)
        for right, wrong in self.shown.values():
            for i in right + wrong:
                ctx.cams.want(ctx.photo_path(it.paths[i]), int(it.preds[i]))

    def render(self, ctx: ReportContext) -> str:
        if ctx.options.gallery_per_species == 0:
            return note("Skipped (--gallery-per-species 0).")
        missing = _needs_predictions(ctx, "gallery")
        if missing:
            return missing
        it = ctx.interp
        assert it is not None
        k = ctx.options.gallery_per_species
        preds = it.preds
        parts = [
            para(
                f"For each species, up to {k} correctly named test photos (most confident first) and up to "
                f"{k} it got wrong, each with Grad-CAM for the species the model named. Click a species "
                "to open it."
            )
        ]
        with_mistakes = [c for c, (_, w) in self.shown.items() if w]
        open_all = 0 < len(with_mistakes) <= 10
        for c in sorted(self.shown):
            right, wrong = self.shown[c]
            n = int((it.targets == c).sum())
            n_wrong = int(((it.targets == c) & (preds != c)).sum())
            tiles = [self._tile(ctx, i, False) for i in right]
            tiles += [self._tile(ctx, i, True) for i in wrong]
            status = (
                f'<span class="bad">{n_wrong} wrong</span>'
                if n_wrong
                else '<span class="good">all right</span>'
            )
            summary = f"<b>{esc(ctx.name(c))}</b> · {n} test photos · {status}"
            body = f'<div class="tiles">{"".join(tiles)}</div>' if tiles else para("No test photos.")
            opened = (open_all and c in with_mistakes) or (not with_mistakes and c == min(self.shown))
            parts.append(details(summary, body, open_=opened))
        if self.left_out:
            names = ", ".join(ctx.name(c) for c in self.left_out)
            parts.append(
                note(
                    f"{len(self.left_out)} species are left out to keep the page small (the best "
                    f"recognised ones): {esc(names)}."
                )
            )
        return "".join(parts)

    @staticmethod
    def _tile(ctx: ReportContext, row: int, wrong: bool) -> str:
        it = ctx.interp
        assert it is not None
        path, pred = ctx.photo_path(it.paths[row]), int(it.preds[row])
        p = float(it.probs[row, pred])
        caption = f"→ {esc(ctx.name(pred))} ({p:.2f})" if wrong else f"p = {p:.2f}"
        cls = "tile wrong" if wrong else "tile"
        return figure(picture(ctx, path, pred, f"Grad-CAM of {path.name}", GALLERY_PX), caption, class_=cls)


@section
class Activations(Section):
    id = "activations"
    title = "Activations"
    order = 90

    def plan(self, ctx: ReportContext) -> None:
        self.path: Path | None = None
        if not ctx.photos_ok:
            return
        if ctx.interp is not None and len(ctx.interp):
            it = ctx.interp
            best = int(np.argmax(it.probs[np.arange(len(it)), it.targets]))
            self.path = ctx.photo_path(it.paths[best])
        elif ctx.index is not None:
            self.path = next((s.path for s in ctx.index.test if s.path.is_file()), None)
        if self.path is not None:
            ctx.cams.want_photo(self.path)

    def render(self, ctx: ReportContext) -> str:
        from monkeysee.data.images import load_rgb
        from monkeysee.explain.render import channel_grid, heatmap

        if self.path is None:
            return note(ctx.photos_missing("activation maps"))
        try:
            photo = load_rgb(self.path)
        except ImageError as exc:
            return note(esc(exc.message))
        acts = {k: v[0].float().numpy() for k, v in ctx.explainer.activations([photo]).items()}
        seen = ctx.cams.photo(self.path)
        if seen is None:
            return note(esc(ctx.cams.problem(self.path) or "the photo could not be read"))
        tiles = [figure(img(jpeg_uri(seen), "the photo", ACTIVATION_PX), "photo")]
        for layer, act in acts.items():
            mean = _scaled(act.mean(axis=0))
            big = Image.fromarray(heatmap(mean, "viridis")).resize(
                (ACTIVATION_PX, ACTIVATION_PX), Image.Resampling.NEAREST
            )
            shape = "×".join(str(s) for s in act.shape)
            tiles.append(
                figure(
                    img(png_uri(big), f"mean activation of {layer}", ACTIVATION_PX),
                    f"{esc(layer)}<br><small>{shape}</small>",
                )
            )
        grids = "".join(
            figure(
                img(
                    figure_uri(channel_grid(act, layer, CHANNELS_PER_BLOCK), dpi=72, jpeg=True),
                    f"channels of {layer}",
                )
            )
            for layer, act in acts.items()
        )
        return (
            para(
                f"What every block of the network computes for one test photo ({esc(self.path.name)}): "
                "the mean over channels of each block's output, input side first. Early blocks respond to "
                "edges and colour at high resolution; late blocks to parts of the animal at low resolution."
            )
            + f'<div class="tiles">{"".join(tiles)}</div>'
            + details(
                f"the {CHANNELS_PER_BLOCK} most active channels of each block",
                f'<div class="grids">{grids}</div>',
            )
        )


def _scaled(a: np.ndarray) -> np.ndarray:
    lo, hi = float(a.min()), float(a.max())
    return (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
