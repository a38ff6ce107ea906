"""Small pure helpers that turn values into escaped HTML fragments (strings in, strings out)."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence

# Above this many rows a table sits in a scrolling box, so hundreds of species do not bury the page.
SCROLL_ROWS = 25


def esc(value: object) -> str:
    """Text made safe for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def attrs(**values: object) -> str:
    """' name="value"' pairs; None and False are left out, True is written as a bare attribute.

    A trailing underscore is dropped (`class_` -> class) and other underscores become dashes.
    """
    parts = []
    for key, value in values.items():
        name = key.rstrip("_").replace("_", "-")
        if value is None or value is False:
            continue
        parts.append(f" {name}" if value is True else f' {name}="{esc(value)}"')
    return "".join(parts)


def para(text_html: str, class_: str | None = None) -> str:
    return f"<p{attrs(class_=class_)}>{text_html}</p>"


def note(text_html: str) -> str:
    """A highlighted remark: something is missing, skipped, or needs the reader's attention."""
    return f'<p class="note">{text_html}</p>'


def code(text: object) -> str:
    return f"<code>{esc(text)}</code>"


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}%}"


def num(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def duration(seconds: float) -> str:
    """'42 s', '3 min 05 s', '1 h 02 min'."""
    s = round(seconds)
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def table(
    header: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    numeric: Iterable[int] = (),
    footer: Sequence[object] | None = None,
    class_: str = "",
    raw: bool = False,
) -> str:
    """A table with escaped cells (or HTML cells with raw=True); `numeric` columns are right-aligned.

    Long tables are wrapped in a scrolling box with a sticky header.
    """
    right = set(numeric)

    def cells(row: Sequence[object], cell: str) -> str:
        return "".join(
            f"<{cell}{attrs(class_='num' if i in right else None)}>{row[i] if raw else esc(row[i])}</{cell}>"
            for i in range(len(row))
        )

    body = [f"<tr>{cells(r, 'td')}</tr>" for r in rows]
    foot = f"<tfoot><tr>{cells(footer, 'th')}</tr></tfoot>" if footer is not None else ""
    html_table = (
        f"<table{attrs(class_=class_ or None)}><thead><tr>{cells(header, 'th')}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody>{foot}</table>"
    )
    if len(body) > SCROLL_ROWS:
        return f'<div class="scroll">{html_table}</div>'
    return html_table


def key_values(pairs: Iterable[tuple[str, str]]) -> str:
    """A two-column table of (label, HTML value) pairs."""
    rows = "".join(f"<tr><th>{esc(k)}</th><td>{v}</td></tr>" for k, v in pairs)
    return f'<table class="kv"><tbody>{rows}</tbody></table>'


def stat(label: str, value: str, detail: str = "") -> str:
    """One headline number in a box: the value large, what it is below."""
    more = f'<span class="detail">{detail}</span>' if detail else ""
    body = f'<span class="value">{value}</span><span class="label">{esc(label)}</span>{more}'
    return f'<div class="stat">{body}</div>'


def stats(boxes: Iterable[str]) -> str:
    return f'<div class="stats">{"".join(boxes)}</div>'


def img(uri: str, alt: str, width: int | None = None, class_: str | None = None) -> str:
    """An <img> for a data: URI; `width` is the displayed CSS width in pixels."""
    return f"<img{attrs(src=uri, alt=alt, width=width, class_=class_)}>"


def figure(image_html: str, caption_html: str = "", class_: str | None = None) -> str:
    caption = f"<figcaption>{caption_html}</figcaption>" if caption_html else ""
    return f"<figure{attrs(class_=class_)}>{image_html}{caption}</figure>"


def details(summary_html: str, body_html: str, open_: bool = False) -> str:
    """A collapsible block: closed by default so long galleries stay out of the way."""
    return f"<details{attrs(open=open_)}><summary>{summary_html}</summary>{body_html}</details>"


def bullet_list(items_html: Iterable[str]) -> str:
    return "<ul>" + "".join(f"<li>{item}</li>" for item in items_html) + "</ul>"


def missing_tile(why: str, width: int) -> str:
    """Stands in for a photo that could not be read, sized like the picture it replaces."""
    return f'<div class="missing" style="width:{width}px;height:{width}px">{esc(why)}</div>'
