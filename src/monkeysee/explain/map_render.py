"""Drawing a `SpeciesMap`: a static PNG (matplotlib, for the report) and a standalone HTML page with
hover, zoom and pan (a canvas and the small script `species_map.js` shipped in this package, inlined, so
the page needs no network).

Marks are the same in both: one colour per species, test photos predicted wrong as a black cross,
photos the unknown detector rejects ("not one of my species") as a thin black ring.
"""

from __future__ import annotations

import base64
import colorsys
import html
import io
import json
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from PIL import Image

from monkeysee.data.images import load_rgb
from monkeysee.errors import ConfigError, ImageError
from monkeysee.explain.species_map import DEFAULT_METHOD, SPLITS, SpeciesMap, species_map_of
from monkeysee.io import atomic_write_text
from monkeysee.predict import Predictor
from monkeysee.rundir import RunDir

THUMB_SIDE = 64  # pixels of a hover thumbnail's longer side
THUMB_QUALITY = 60  # WebP quality: a 64-pixel thumbnail is about 1.5 kB
THUMBS_MAX_SPECIES = 24  # the static picture shows a thumbnail per species up to this many species
MISTAKE = "#111111"
UNKNOWN = "#000000"


def species_colours(n: int) -> list[str]:
    """`n` distinct hex colours: matplotlib's tab10/tab20 up to 20 species, beyond that hues spread by
    the golden angle at three lightness levels, so neighbours in the list differ most."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    if n <= 20:
        cmap = colormaps["tab10" if n <= 10 else "tab20"]
        return [to_hex(cmap(i)) for i in range(n)]
    out = []
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0
        light, sat = (0.42, 0.55, 0.68)[i % 3], (0.85, 0.65, 0.75)[i % 3]
        r, g, b = colorsys.hls_to_rgb(hue, light, sat)
        out.append(f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}")
    return out


def plot_species_map(smap: SpeciesMap, names: Sequence[str], path: str | Path,
                     thumbs: dict[int, Image.Image] | None = None, dpi: int = 120) -> Path:
    """The map as a PNG at `path`: points coloured by true species (test photos larger), crosses on test
    mistakes, rings on rejected photos, a legend (or names at the species' medians beyond 20 species)
    and, when given, a thumbnail per species at its median."""
    fig = Figure(figsize=(11, 9), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colours = np.array(species_colours(len(names)))
    test = smap.split == SPLITS.index("test")
    for mask, size, alpha in ((~test, 7, 0.5), (test, 16, 0.9)):
        ax.scatter(smap.xy[mask, 0], smap.xy[mask, 1], s=size, c=colours[smap.target[mask]], alpha=alpha,
                   linewidths=0, rasterized=True)
    rejected, wrong = smap.xy[smap.unknown], smap.xy[smap.mistake]
    ax.scatter(rejected[:, 0], rejected[:, 1], s=36, facecolors="none", edgecolors=UNKNOWN, linewidths=0.6,
               label=f'"not one of my species" ({int(smap.unknown.sum())})')
    ax.scatter(wrong[:, 0], wrong[:, 1], s=30, c=MISTAKE, marker="x", linewidths=1.1,
               label=f"test photo predicted wrong ({int(smap.mistake.sum())})")
    medians = {int(s): np.median(smap.xy[smap.target == s], axis=0) for s in np.unique(smap.target)}
    if len(names) <= 20:
        for i, name in enumerate(names):
            ax.scatter([], [], s=25, c=colours[i], label=name)
    else:
        for s, (x, y) in medians.items():
            ax.annotate(names[s], (x, y), fontsize=5.5, ha="center", va="center", alpha=0.85)
    for s, im in (thumbs or {}).items():
        if s in medians:
            box = AnnotationBbox(OffsetImage(np.asarray(im), zoom=0.45), medians[s], frameon=True,
                                 pad=0.1, bboxprops={"edgecolor": colours[s], "linewidth": 1.5})
            ax.add_artist(box)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, markerscale=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    counts = ", ".join(f"{int((smap.split == i).sum())} {name}" for i, name in enumerate(SPLITS))
    ax.set_title(f"Pooled features of {len(smap)} photos ({counts}) by {smap.method}, seed {smap.seed}",
                 fontsize=10)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, facecolor="white")
    return path


def thumbnail(path: str | Path, side: int = THUMB_SIDE) -> Image.Image | None:
    """A small upright RGB copy of the photo at `path`, or None when it cannot be read."""
    try:
        im = load_rgb(path)
    except (ImageError, OSError):
        return None
    im.thumbnail((side, side), Image.Resampling.LANCZOS)
    return im


def species_thumbnails(smap: SpeciesMap, limit: int = THUMBS_MAX_SPECIES,
                       locate: Callable[[str], Path] = Path) -> dict[int, Image.Image]:
    """For a map of at most `limit` species, the photo nearest each species' median (found where
    `locate` says a recorded path now is)."""
    species = np.unique(smap.target)
    if len(species) > limit:
        return {}
    out = {}
    for s in species.tolist():
        at = np.flatnonzero(smap.target == s)
        centre = np.median(smap.xy[at], axis=0)
        nearest = at[np.argmin(((smap.xy[at] - centre) ** 2).sum(1))]
        im = thumbnail(locate(smap.paths[nearest]), 80)
        if im is not None:
            out[s] = im
    return out


def thumbnail_sample(smap: SpeciesMap, count: int, seed: int = 0) -> np.ndarray:
    """Indices of the points that carry a thumbnail in the HTML: every mistake and rejected photo first,
    then an even share of each species' photos, `count` in all."""
    marked = np.flatnonzero(smap.mistake | smap.unknown)[:count]
    rest = np.setdiff1d(np.arange(len(smap)), marked)
    rng = np.random.default_rng(seed)
    order = rng.permutation(rest)
    # round-robin over species, so a rare species gets its share
    ranks = np.zeros(len(order), dtype=np.int64)
    seen: dict[int, int] = {}
    for j, i in enumerate(order.tolist()):
        t = int(smap.target[i])
        ranks[j] = seen.get(t, 0)
        seen[t] = ranks[j] + 1
    picked = order[np.argsort(ranks, kind="stable")][: max(0, count - len(marked))]
    return np.sort(np.concatenate([marked, picked]))


def _webp_uri(im: Image.Image) -> str:
    buf = io.BytesIO()
    im.save(buf, format="WEBP", quality=THUMB_QUALITY, method=4)
    return "data:image/webp;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def map_html(smap: SpeciesMap, names: Sequence[str], title: str, thumbnails: int = 1500) -> str:
    """The standalone page: every point with its species, split, file and marks, thumbnails for
    `thumbnails` of them (WebP data URIs), the script inlined. No URL points outside the page."""
    lo, hi = smap.xy.min(0), smap.xy.max(0)
    unit = np.round((smap.xy - lo) / np.maximum(hi - lo, 1e-9), 4)  # 0..1 on both axes
    thumbs: dict[int, str] = {}
    for i in thumbnail_sample(smap, thumbnails).tolist():
        im = thumbnail(smap.paths[i])
        if im is not None:
            thumbs[i] = _webp_uri(im)
    data = {
        "title": title,
        "species": list(names),
        "colours": species_colours(len(names)),
        "splits": list(SPLITS),
        "x": unit[:, 0].tolist(), "y": unit[:, 1].tolist(),
        "target": smap.target.tolist(), "predicted": smap.predicted.tolist(),
        "split": smap.split.tolist(),
        "flags": (smap.mistake.astype(int) + 2 * smap.unknown.astype(int)).tolist(),
        "paths": [Path(p).name if len(Path(p).parts) < 2 else str(Path(*Path(p).parts[-2:]))
                  for p in smap.paths],
        "thumbs": {str(k): v for k, v in thumbs.items()},
        "method": smap.method, "seed": smap.seed,
    }
    script = resources.files("monkeysee.explain").joinpath("species_map.js").read_text(encoding="utf-8")
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return _PAGE.format(title=html.escape(title), data=payload, script=script)


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
html,body{{margin:0;height:100%;font:13px system-ui,sans-serif;color:#222;background:#fff}}
#bar{{position:absolute;top:0;left:0;right:0;height:34px;display:flex;gap:14px;align-items:center;
padding:0 10px;border-bottom:1px solid #ddd;background:#fafafa;z-index:2}}
#bar label{{white-space:nowrap}} #bar .key{{color:#555}}
#map{{position:absolute;top:35px;left:0;width:calc(100% - 261px);height:calc(100% - 35px);cursor:grab}}
#legend{{position:absolute;top:35px;right:0;width:260px;bottom:0;overflow:auto;border-left:1px solid #ddd;
font-size:12px}}
#legend div{{padding:1px 6px;cursor:pointer;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}}
#legend div.on{{background:#e8f0ff}} #legend span{{display:inline-block;width:10px;height:10px;
margin-right:5px;border-radius:50%}}
#tip{{position:absolute;pointer-events:none;background:#fff;border:1px solid #999;padding:6px;
box-shadow:0 2px 6px rgba(0,0,0,.2);display:none;max-width:280px;z-index:3}}
#tip img{{display:block;margin-top:4px}}
</style></head><body>
<div id="bar"><b>{title}</b>
<label><input type="checkbox" id="show-train" checked> train</label>
<label><input type="checkbox" id="show-val" checked> val</label>
<label><input type="checkbox" id="show-test" checked> test</label>
<label><input type="checkbox" id="only-marked"> only marked</label>
<span class="key">&#x2715; test photo predicted wrong &nbsp; &#x25cb;
"not one of my species" &nbsp; wheel: zoom, drag: pan, double-click: reset, click a species: highlight</span>
</div>
<canvas id="map"></canvas><div id="legend"></div><div id="tip"></div>
<script id="map-data" type="application/json">{data}</script>
<script>
{script}
</script>
</body></html>
"""


def write_map_page(predictor: Predictor, run_dir: str | Path, out: str | Path | None = None, *,
                   data: str | Path | None = None, method: str = DEFAULT_METHOD, seed: int = 0,
                   thumbnails: int = 1500, recompute: bool = False,
                   log: Callable[[str], None] = print) -> Path:
    """The run's species map (stored, or computed and stored) as a standalone HTML page at `out`
    (default: the evaluation folder's `species_map.html`)."""
    if thumbnails < 0:
        raise ConfigError(f"thumbnails must be 0 or more, not {thumbnails}", fix="pass a count such as 1500")
    smap = species_map_of(predictor, run_dir, data, method, seed, recompute, log)
    names = [s.display_name for s in predictor.species]
    path = Path(out) if out is not None else RunDir(run_dir).eval("test").species_map_html
    title = f"Species map of {Path(run_dir).name}"
    atomic_write_text(path, map_html(smap, names, title, thumbnails))
    return path
