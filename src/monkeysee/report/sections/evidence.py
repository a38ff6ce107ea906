"""The evidence behind the answers: how much more often an answer flagged "check this one" (its nearest
training photos favour another species) is wrong, and a few test photos beside their nearest training
photos, as `evaluate` stored them (eval/test/evidence.json)."""

from __future__ import annotations

import base64
from typing import Any

from monkeysee.data.images import load_rgb
from monkeysee.data.thumbnails import Thumbnails
from monkeysee.errors import MonkeyseeError
from monkeysee.report.context import ReportContext
from monkeysee.report.html import esc, figure, img, missing_tile, note, para, pct
from monkeysee.report.images import jpeg_uri
from monkeysee.report.sections import Section, section
from monkeysee.rundir import RunDir

SIDE = 96  # displayed size of every picture in this section


@section
class EvidenceSection(Section):
    id = "evidence"
    title = "The evidence behind the answers"
    order = 65

    def render(self, ctx: ReportContext) -> str:
        run = RunDir(ctx.run_dir)
        stored = ctx.evaluation.read_json(ctx.evaluation.evidence)
        evidence = run.load_evidence(ctx.manifest)
        if evidence is None:
            return note("This run has no evidence bank (build one with monkeysee evidence RUN_DIR).")
        if not isinstance(stored, dict):
            return note("The evaluation stored no evidence: run monkeysee evaluate RUN_DIR again.")
        on, off = stored.get("wrong_if_flagged"), stored.get("wrong_if_not_flagged")
        ratio = f" ({on / off:.1f} times as often)" if on is not None and off else ""
        text = (f"Each answer is shown with its nearest photos among the {len(evidence.bank):,} training "
                f"photos. On {stored['photos']} test photos the nearest training photos outvoted the answer "
                f"on {stored['flagged']} ({pct(stored['flagged'] / max(1, stored['photos']))}): those are "
                f"marked <b>check this one</b>. ")
        if on is None:
            text += f"{stored['wrong']} answers were wrong, none of them flagged."
        else:
            text += (f"Flagged answers were wrong {pct(on)} of the time, the others {pct(off)}{ratio}; "
                     f"{stored['errors_flagged']} of the {stored['wrong']} wrong answers were flagged.")
        cards = [_example(ctx, ex, evidence.thumbnails) for ex in stored.get("examples", [])]
        return para(text) + f'<div class="cards">{"".join(cards)}</div>'


def _example(ctx: ReportContext, ex: dict[str, Any], thumbs: Thumbnails) -> str:
    ev = ex["evidence"]
    answer, truth = ctx.name(ex["answer"]), ctx.name(ex["target"])
    head = f"<b>{esc(answer)}</b> {pct(ex['probability'])}"
    head += "" if ex["answer"] == ex["target"] else f" (wrong: it is {esc(truth)})"
    if ev["check"]:
        head += f" · <b>check this one</b>: nearest photos show {esc(ev['nearest_vote']['common_name'])}"
    if ev["confused_with"]:
        head += f" · often confused with {esc(ev['confused_with']['common_name'])}"
    try:
        photo = img(jpeg_uri(load_rgb(ctx.photo_path(ex["path"])), max_side=SIDE * 2), "test photo", SIDE)
    except MonkeyseeError as exc:
        photo = missing_tile(exc.message, SIDE)
    tiles = [figure(photo, "test photo")]
    for s in ev["species"]:
        for n in s["nearest"]:
            uri = "data:image/webp;base64," + base64.b64encode(thumbs.read(n["photo"])).decode("ascii")
            tiles.append(figure(img(uri, f"training photo of {s['common_name']}", SIDE),
                                f"{esc(s['common_name'])} {n['similarity']:.2f}"))
    return f'<div class="card"><div class="strip">{"".join(tiles)}</div><p>{head}</p></div>'
