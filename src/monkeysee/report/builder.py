"""`build_report`: one self-contained HTML page that shows how good a trained run is and why.

Order of work: load the run's files, let every section plan the Grad-CAM overlays it needs, compute them
in batches, render the sections, and write the page atomically. Images are inline data: URIs and the
stylesheet is inline, so the file can be mailed or opened offline; no JavaScript is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from pathlib import Path

from tqdm.auto import tqdm

from monkeysee import __version__
from monkeysee.errors import ConfigError, DataError, MonkeyseeError
from monkeysee.io import atomic_write_text
from monkeysee.report.context import ReportContext
from monkeysee.report.html import code, details, duration, esc, note, pct, table
from monkeysee.report.options import ReportOptions
from monkeysee.report.sections import all_sections

DEFAULT_NAME = "report.html"


@dataclass(frozen=True)
class Rendered:
    """One finished section and how long it took."""

    id: str
    title: str
    body: str
    seconds: float


def build_report(run_dir: str | Path, options: ReportOptions | None = None) -> Path:
    """Write the report of `run_dir` to `options.out` (default RUN_DIR/report.html) and return its path."""
    options = options or ReportOptions()
    start = time.perf_counter()
    run_dir = Path(run_dir)
    if options.ood is not None and not Path(options.ood).is_dir():
        raise DataError(
            "unknown-photo folder not found", fix="pass --ood DIR, a folder of photos", path=options.ood
        )
    ctx = ReportContext.load(run_dir, options)
    sections = all_sections()
    rendered: list[Rendered] = []
    with tqdm(total=len(sections) + 1, desc="report", unit="section", disable=None) as bar:
        planned = {}
        t0 = time.perf_counter()
        for s in sections:
            planned[s.id] = _guarded(s.plan, ctx)
        if len(ctx.cams):
            bar.set_postfix_str(f"Grad-CAM of {len(ctx.cams)} photos")
        ctx.cams.compute(options.batch_size)  # also when only photos (no overlays) are wanted
        cam_seconds = time.perf_counter() - t0
        bar.update()
        for s in sections:
            bar.set_postfix_str(s.id)
            t0 = time.perf_counter()
            body = planned[s.id] if planned[s.id] is not None else _guarded(s.render, ctx)
            rendered.append(Rendered(s.id, s.title, body or "", time.perf_counter() - t0))
            bar.update()
    out = Path(options.out) if options.out is not None else run_dir / DEFAULT_NAME
    page = render_page(ctx, rendered, cam_seconds, time.perf_counter() - start)
    try:
        atomic_write_text(out, page)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the report ({exc.strerror})", fix="pass --out FILE in a writable folder", path=out
        ) from None
    return out


def _guarded(step: Callable[[ReportContext], str | None], ctx: ReportContext) -> str | None:
    """Run a section step; a problem with the user's files becomes a note in that section, not a crash.

    Returns None when the step went well (plan's result is unused), or the note's HTML.
    """
    try:
        result = step(ctx)
    except MonkeyseeError as exc:
        return note(f"This section could not be made: {esc(exc.message)}")
    return result if isinstance(result, str) else None


def _stylesheet() -> str:
    return files("monkeysee.report").joinpath("report.css").read_text(encoding="utf-8")


def render_page(ctx: ReportContext, sections: list[Rendered], cam_seconds: float, seconds: float) -> str:
    """The whole HTML document around the rendered sections."""
    m = ctx.manifest
    name = ctx.run_dir.resolve().name
    headline = f"{m.backbone} · {m.num_classes} species"
    if ctx.metrics:
        headline += f" · test accuracy {pct(ctx.metrics['accuracy'])} on {ctx.metrics['n']} photos"
    nav = "".join(f'<a href="#{esc(s.id)}">{i}. {esc(s.title)}</a>' for i, s in enumerate(sections, 1))
    body = "".join(
        f'<section id="{esc(s.id)}"><h2>{i}. {esc(s.title)}</h2>{s.body}</section>'
        for i, s in enumerate(sections, 1)
    )
    built = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    timing = table(
        ["step", "seconds"],
        [["Grad-CAM overlays (all sections)", f"{cam_seconds:.1f}"]]
        + [[s.title, f"{s.seconds:.1f}"] for s in sections],
        numeric=(1,),
    )
    footer = (
        f"Built by monkeysee {esc(__version__)} on {built} in {duration(seconds)} from {code(ctx.run_dir)}. "
        "Everything is inside this one file; it needs no network." + details("build time per section", timing)
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>monkeysee report: {esc(name)}</title><style>{_stylesheet()}</style></head>"
        f'<body><header><h1>monkeysee report: {esc(name)}</h1><p class="headline">{esc(headline)}</p>'
        f"</header><nav>{nav}</nav><main>{body}</main><footer>{footer}</footer></body></html>\n"
    )
