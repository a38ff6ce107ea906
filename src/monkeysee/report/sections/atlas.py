"""What the network's channels respond to (the atlas `monkeysee atlas` stored), which concepts move each
species (`monkeysee concepts`) and which species lean on a shortcut (`monkeysee evaluate`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from monkeysee.report.context import ReportContext
from monkeysee.report.html import code, esc, figure, img, note, num, para, pct, table
from monkeysee.report.images import jpeg_uri
from monkeysee.report.sections import Section, section
from monkeysee.rundir import RunDir

ATLAS_CHANNELS = 8  # rows of each layer's contact sheet shown in the report (the page has them all)
ATLAS_LAYERS = 9


@section
class Atlas(Section):
    id = "atlas"
    title = "Channel atlas"
    order = 92

    def render(self, ctx: ReportContext) -> str:
        from monkeysee.explain.atlas_render import GAP, read_index

        folder = RunDir(ctx.run_dir).atlas_dir
        index = read_index(folder)
        if index is None:
            command = code(f"monkeysee atlas {ctx.run_dir}")
            return note(f"No channel atlas yet: run {command} to see what each channel of every block "
                        "responds to in the training photos.")
        size = int(index.get("patch_size", 64))
        parts = [para(
            f"For each channel, the regions of the {len(index['photos'])} training photos where it fires "
            f"most (its receptive field around the strongest position, one per photo, strongest first). "
            f"The first {ATLAS_CHANNELS} channels of each layer are shown; {code(folder / 'index.html')} "
            "has every drawn channel, and atlas.json every channel's top photos.")]
        for layer in index["layers"][:ATLAS_LAYERS]:
            sheet = folder / index["sheets"][layer["layer"]]
            if not sheet.is_file():
                continue
            rf = layer["receptive_field"]
            with Image.open(sheet) as im:
                rows = min(ATLAS_CHANNELS, len(index["shown_channels"][layer["layer"]]))
                top = im.convert("RGB").crop((0, 0, im.width, GAP + rows * (size + GAP)))
            caption = (f"{code(layer['layer'])}: {layer['channels']} channels; receptive field "
                       f"{rf['size'][0]} px, stride {rf['jump'][0]} px")
            parts.append(figure(img(jpeg_uri(np.asarray(top), quality=80), f"atlas of {layer['layer']}"),
                                caption))
        return "".join(parts)


@section
class Concepts(Section):
    id = "concepts"
    title = "Concepts (TCAV)"
    order = 94

    def render(self, ctx: ReportContext) -> str:
        stored = ctx.evaluation.read_json(ctx.evaluation.concepts)
        if not stored or not stored.get("concepts"):
            return note(f"No concept tests yet: run {code('monkeysee concepts RUN_DIR CONCEPT_DIR…')} with "
                        "folders of photos showing a concept (face/, mesh/, glass/).")
        parts = [para(
            "TCAV score: the share of a species' test photos whose score rises along the concept's direction "
            f"at the layer (random directions: their mean over the random sets, random photos from "
            f"{esc(stored.get('random', ''))}). p: two-sided t-test of the concept's scores against the "
            "random directions'. <b>moves</b>: p below the level and the score above random.")]
        for c in stored["concepts"]:
            rows = [[esc(ctx.name(k)), num(c["scores"][k], 2), num(c["random_scores"][k], 2),
                     f"{c['p_values'][k]:.2g}", "<b>moves</b>" if c["moves"][k] else ""]
                    for k in range(len(ctx.species))]
            parts.append(para(f"Concept <b>{esc(c['concept'])}</b> ({c['photos']} photos, {c['runs']} random "
                              f"sets, level {c['alpha']}) at {code(c['layer'])}"))
            parts.append(table(["species", "TCAV", "random", "p", ""], rows, numeric=(1, 2, 3), raw=True))
        return "".join(parts)


@section
class Shortcuts(Section):
    id = "shortcuts"
    title = "Shortcut alarm"
    order = 96

    def render(self, ctx: ReportContext) -> str:
        alarm: dict[str, Any] | None = ctx.evaluation.read_json(ctx.evaluation.shortcuts)
        if not alarm:
            return note(f"No shortcut alarm stored: run {code('monkeysee evaluate ' + str(ctx.run_dir))}.")
        by_name = {s["name"]: s for s in alarm["species"]}
        worst = [by_name[n] for n in alarm["flagged"]]
        rest = sorted((s for s in alarm["species"] if not s["reasons"]),
                      key=lambda s: -(s["border_share"] or 0.0))
        head = para(
            f"Grad-CAM of each test photo's own species at {code(alarm.get('layer', ''))}: the share "
            f"of its mass on the outer {pct(alarm['band'], 0)} of each side (no segmentation: the border "
            f"band stands in for the background). An evenly spread map puts {pct(alarm['area_share'], 0)} "
            "there; a species above that, or one a concept test says is moved by a concept, is listed first, "
            "worst first.")
        verdict = (para(f"<b>{len(worst)} species lean on a shortcut:</b> "
                        f"{esc(', '.join(alarm['flagged']))}.") if worst
                   else para("No species leans on its border or on a tested concept."))
        rows = [[esc(s["name"]), s["photos"], "–" if s["border_share"] is None else pct(s["border_share"]),
                 esc(", ".join(s["concepts"])), esc("; ".join(s["reasons"]))] for s in worst + rest]
        return head + verdict + table(["species", "photos", "on border", "concepts", "alarm"], rows,
                                      numeric=(1, 2), raw=True)
