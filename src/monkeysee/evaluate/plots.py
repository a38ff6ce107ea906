"""Pictures of evaluation results: pure helpers that take data and a path, write a PNG and return the path.

Figures are built with matplotlib's object API on an Agg canvas, never through pyplot, so nothing global
(backend, open-figure list) is touched and every figure is freed when the function returns. Sizes are fixed
in inches at `dpi`, so the PNG's pixel size is known in advance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from monkeysee.data.species import Species
from monkeysee.evaluate.metrics import most_confused_pairs
from monkeysee.models.unknown import auroc, roc_curve

if TYPE_CHECKING:
    from PIL.Image import Image

    from monkeysee.evaluate.interpret import TopLoss

# Beyond these many classes a confusion matrix shows no numbers in cells / no names on the axes:
# they would be unreadable, and thousands of text objects make drawing slow.
BLOCK_SPECIES = 20  # species in the most-confused block of a big confusion matrix
ANNOTATE_MAX_CLASSES = 25
NAMES_MAX_CLASSES = 60
DPI = 100
TITLE_WIDTH = 36  # characters that fit above one photo in the top-losses grid


def _figure(width: float, height: float, dpi: int) -> Figure:
    fig = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=fig.dpi, facecolor="white")
    return path


def _confusion_size(num_classes: int) -> tuple[float, float]:
    """Inches: grows with the class count while names fit, capped so hundreds of classes stay one page."""
    if num_classes > NAMES_MAX_CLASSES:
        return 10.0, 9.0
    side = min(max(6.0, 3.0 + 0.45 * num_classes), 16.0)
    return side + 1.0, side


def _confusion_figure(cm: np.ndarray, names: Sequence[str], normalize: bool, dpi: int) -> Figure:
    cm = np.asarray(cm)
    c = cm.shape[0]
    if cm.ndim != 2 or cm.shape[1] != c or len(names) != c:
        raise ValueError(f"need a square confusion matrix and one name per class, got {cm.shape} "
                         f"and {len(names)} names")
    if normalize:
        rows = cm.sum(axis=1, keepdims=True).astype(np.float64)
        values = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
        vmax = 1.0
    else:
        values = cm.astype(np.float64)
        vmax = max(float(values.max()), 1.0)
    fig = _figure(*_confusion_size(c), dpi)
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest", aspect="equal")
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of true species" if normalize else "photos")
    ax.set_title("Confusion matrix" + (" (each row sums to 1)" if normalize else ""))
    if c <= NAMES_MAX_CLASSES:
        labels = [n.replace("_", " ") for n in names]
        ax.set_xticks(range(c), labels, rotation=45, ha="right", rotation_mode="anchor",
                      fontsize=9 if c <= 20 else 7)
        ax.set_yticks(range(c), labels, fontsize=9 if c <= 20 else 7)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
    else:
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_locator(MaxNLocator(8, integer=True))
        ax.set_xlabel(f"predicted (class index, {c} classes)")
        ax.set_ylabel("true (class index)")
    if c <= ANNOTATE_MAX_CLASSES:
        for (i, j), v in np.ndenumerate(values):
            text = f"{v:.2f}" if normalize else f"{int(cm[i, j])}"
            colour = "#b0b0b0" if v == 0 else "white" if v > 0.55 * vmax else "black"
            ax.text(j, i, text, ha="center", va="center", color=colour, fontsize=9 if c <= 12 else 7)
    return fig


def plot_confusion_matrix(
    cm: np.ndarray, names: Sequence[str], path: str | Path, normalize: bool = False, *, dpi: int = DPI
) -> Path:
    """Confusion matrix (rows true, columns predicted) with species names; counts in cells for few classes."""
    return _save(_confusion_figure(cm, names, normalize, dpi), path)


def confused_block(cm: np.ndarray, size: int = BLOCK_SPECIES) -> list[int]:
    """The species (indices) of the most-confused block: taken pair by pair from the largest off-diagonal
    cells until `size` are in, then ordered so species confused with each other sit together."""
    cm = np.asarray(cm)
    chosen: list[int] = []
    for t, p, _ in most_confused_pairs(cm):
        for k in (t, p):
            if k not in chosen and len(chosen) < size:
                chosen.append(k)
        if len(chosen) >= size:
            break
    if len(chosen) < 2:
        return chosen
    sub = cm[np.ix_(chosen, chosen)].astype(np.float64)
    sym = sub + sub.T
    np.fill_diagonal(sym, 0.0)
    order = [int(np.argmax(sym.sum(axis=1)))]  # greedy chain: next, the species most confused with the last
    while len(order) < len(chosen):
        rest = [i for i in range(len(chosen)) if i not in order]
        order.append(max(rest, key=lambda i: (sym[order[-1], i], sym[i].sum(), -i)))
    return [chosen[i] for i in order]


def plot_confused_block(
    cm: np.ndarray, names: Sequence[str], path: str | Path, size: int = BLOCK_SPECIES, *, dpi: int = DPI
) -> Path:
    """The readable part of a big confusion matrix: the species most confused with each other, named
    and counted (the full matrix stays in confusion_matrix.csv)."""
    keep = confused_block(cm, size) or list(range(min(size, len(names))))
    sub = np.asarray(cm)[np.ix_(keep, keep)]
    fig = _confusion_figure(sub, [names[i] for i in keep], False, dpi)
    title = f"Most-confused species ({len(keep)} of {len(names)}; rows true, columns predicted)"
    fig.axes[0].set_title(title)
    return _save(fig, path)


def _value(row: Mapping[str, Any], key: str) -> float:
    v = row.get(key)
    return float("nan") if v is None else float(v)


def _training_figure(history: Sequence[Mapping[str, Any]], dpi: int) -> Figure:
    fig = _figure(11.0, 4.5, dpi)
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs: list[Any] = [r.get("epoch") for r in history]
    # Per-phase epoch counters restart at 0/1: then plot against the overall step instead.
    if all(e is not None for e in epochs) and all(b > a for a, b in pairwise(epochs)):
        x = np.array(epochs, dtype=np.float64)
    else:
        x = np.arange(1, len(history) + 1, dtype=np.float64)
    phases = [str(r.get("phase", "") or "") for r in history]
    panels = ((ax_loss, "loss", "train_loss", "val_loss"), (ax_acc, "accuracy", "train_acc", "val_acc"))
    for ax, title, train_key, val_key in panels:
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        plotted = False
        for key, label, style in ((train_key, "train", "o-"), (val_key, "validation", "s-")):
            y = np.array([_value(r, key) for r in history], dtype=np.float64)
            if np.isfinite(y).any():
                ax.plot(x[np.isfinite(y)], y[np.isfinite(y)], style, label=label, markersize=4)
                plotted = True
        if not plotted:
            ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")
            continue
        if title == "accuracy":
            accs = np.array([_value(r, k) for r in history for k in (train_key, val_key)])
            if np.nanmax(accs) <= 1.0:
                ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
            val = np.array([_value(r, val_key) for r in history])
            if np.isfinite(val).any():
                best = int(np.nanargmax(val))
                ax.plot(x[best], val[best], "*", color="gold", markeredgecolor="black", markersize=14,
                        label=f"best val ({x[best]:g})", zorder=5)
        ax.legend(loc="best", fontsize=9)
    # Phase boundaries: a dashed line halfway between the last epoch of one phase and the first of the next,
    # with each phase's name written at the top of its stretch.
    starts = [i for i in range(len(phases)) if i == 0 or phases[i] != phases[i - 1]]
    for ax in (ax_loss, ax_acc):
        for n, s in enumerate(starts):
            if s > 0:
                ax.axvline((x[s - 1] + x[s]) / 2, color="grey", linestyle="--", linewidth=1)
            end = starts[n + 1] - 1 if n + 1 < len(starts) else len(x) - 1
            if phases[s] and len(starts) > 1:
                ax.text((x[s] + x[end]) / 2, 0.98, phases[s], transform=ax.get_xaxis_transform(),
                        ha="center", va="top", fontsize=8, color="dimgrey")
    return fig


def plot_training_curves(history: Sequence[Mapping[str, Any]], path: str | Path, *, dpi: int = DPI) -> Path:
    """Loss and accuracy per epoch, train and validation, with the frozen/unfrozen phase boundary marked.

    Rows are dicts with epoch, phase, train_loss, train_acc, val_loss, val_acc; any may be missing or None.
    """
    return _save(_training_figure(history, dpi), path)


def plot_top_losses(
    items: Sequence[TopLoss],
    images: Sequence[Image | np.ndarray],
    species: Sequence[Species],
    path: str | Path,
    overlays: Sequence[np.ndarray] | None = None,
    *,
    dpi: int = DPI,
) -> Path:
    """Grid of the worst photos, each titled "true → predicted (p=…)"; overlays (RGB) replace the photos."""
    if len(images) != len(items) or (overlays is not None and len(overlays) != len(items)):
        raise ValueError(f"need one image (and overlay) per item: {len(items)} items, {len(images)} images, "
                         f"{'no' if overlays is None else len(overlays)} overlays")
    n = max(len(items), 1)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig = _figure(3.4 * cols, 3.9 * rows, dpi)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    shown = overlays if overlays is not None else images
    for ax in axes:
        ax.set_axis_off()
    for ax, item, img in zip(axes, items, shown, strict=False):  # a grid may have spare axes
        arr = np.asarray(img)
        ax.imshow(arr, cmap="gray" if arr.ndim == 2 else None)
        true, pred = species[item.target].display_name, species[item.pred].display_name
        title = f"{true} → {pred} (p={item.pred_prob:.2f})"
        if len(title) > TITLE_WIDTH:  # break after the arrow, never inside a species name
            title = f"{true} →\n{pred} (p={item.pred_prob:.2f})"
        ax.set_title(f"{title}\nloss {item.loss:.2f}, p(true)={item.target_prob:.2f}",
                     fontsize=9, color="black" if item.correct else "firebrick")
    if not items:
        axes[0].text(0.5, 0.5, "no photos", ha="center", va="center", color="grey")
    return _save(fig, path)


def _unknown_figure(known: np.ndarray, unknown: np.ndarray, threshold: float, name: str, dpi: int) -> Figure:
    fig = _figure(11.0, 4.5, dpi)
    ax_hist, ax_roc = fig.subplots(1, 2, width_ratios=[1.6, 1])
    both = np.concatenate([known, unknown, [threshold]])
    lo, hi = float(np.min(both)), float(np.max(both))
    bins = np.linspace(lo, hi if hi > lo else lo + 1.0, 41)
    kept = float((known <= threshold).mean()) if known.size else float("nan")
    rejected = float((unknown > threshold).mean()) if unknown.size else float("nan")
    ax_hist.hist(known, bins=bins, alpha=0.6, color="tab:blue", label=f"known species (n={known.size})")
    ax_hist.hist(unknown, bins=bins, alpha=0.6, color="tab:orange", label=f"unknown (n={unknown.size})")
    label = f"threshold {threshold:.3g}: keeps {kept:.0%} known, rejects {rejected:.0%} unknown"
    ax_hist.axvline(threshold, color="black", linestyle="--", label=label)
    ax_hist.set_xlabel(f"{name} score (higher = more likely unknown)")
    ax_hist.set_ylabel("photos")
    ax_hist.set_title(f"Unknown-photo scores: {name}")
    ax_hist.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1, frameon=False)
    ax_roc.set_title("ROC (unknown = positive)")
    ax_roc.set_xlabel("known photos rejected")
    ax_roc.set_ylabel("unknown photos rejected")
    ax_roc.plot([0, 1], [0, 1], color="lightgrey", linestyle=":")
    if known.size and unknown.size:
        fpr, tpr = roc_curve(known, unknown)
        ax_roc.plot(fpr, tpr, color="tab:purple", label=f"AUROC {auroc(known, unknown):.3f}")
        ax_roc.plot(1 - kept, rejected, "o", color="black", label="threshold")
        ax_roc.legend(loc="lower right", fontsize=9)
    ax_roc.set_xlim(0, 1)
    ax_roc.set_ylim(0, 1.01)
    ax_roc.set_aspect("equal")
    return fig


def plot_unknown_scores(
    known_scores: np.ndarray,
    unknown_scores: np.ndarray,
    threshold: float,
    path: str | Path,
    name: str,
    *,
    dpi: int = DPI,
) -> Path:
    """Histograms of known and unknown photos' scores with the threshold, and the ROC curve beside them."""
    known = np.asarray(known_scores, dtype=np.float64).ravel()
    unknown = np.asarray(unknown_scores, dtype=np.float64).ravel()
    return _save(_unknown_figure(known, unknown, float(threshold), name, dpi), path)


def _reliability_figure(table: Sequence[Mapping[str, Any]], ece: float | None, dpi: int) -> Figure:
    fig = _figure(6.0, 7.0, dpi)
    ax, ax_count = fig.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    lo = np.array([float(r["lo"]) for r in table])
    width = np.array([float(r["hi"]) - float(r["lo"]) for r in table])
    count = np.array([int(r["count"]) for r in table])
    acc = np.array([_value(r, "accuracy") for r in table])
    conf = np.array([_value(r, "confidence") for r in table])
    filled = count > 0
    ax.bar(lo[filled], acc[filled], width=width[filled], align="edge", color="tab:blue", edgecolor="black",
           linewidth=0.6, label="accuracy")
    ax.plot(conf[filled], acc[filled], "o", color="tab:red", markersize=4, label="mean confidence in bin")
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfectly calibrated")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    title = "Reliability diagram" + (f" (ECE {ece:.1%})" if ece is not None else "")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(True, alpha=0.3)
    ax_count.bar(lo, count, width=width, align="edge", color="lightgrey", edgecolor="black", linewidth=0.6)
    ax_count.set_xlabel("confidence (top-1 probability)")
    ax_count.set_ylabel("photos")
    return fig


def plot_reliability(
    table: Sequence[Mapping[str, Any]], path: str | Path, ece: float | None = None, *, dpi: int = DPI
) -> Path:
    """Reliability diagram from `metrics.reliability_table` rows: accuracy per confidence bin against the
    diagonal, with the photo count per bin below."""
    return _save(_reliability_figure(table, ece, dpi), path)


def _risk_coverage_figure(curve: Mapping[str, Sequence[float]], point: tuple[float, float] | None,
                          dpi: int) -> Figure:
    fig = _figure(6.0, 4.5, dpi)
    ax = fig.subplots()
    ax.plot(curve["coverage"], curve["risk"], color="tab:blue", label="species rank, by top probability")
    if point is not None:
        ax.plot(*point, "o", color="tab:red", markersize=7, label="the run's species threshold")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("coverage (photos answered at species rank)")
    ax.set_ylabel("risk (answers that are wrong)")
    ax.set_title("Risk–coverage")
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(True, alpha=0.3)
    return fig


def plot_risk_coverage(curve: Mapping[str, Sequence[float]], path: str | Path,
                       point: tuple[float, float] | None = None, *, dpi: int = DPI) -> Path:
    """The risk–coverage curve of `evaluate.answers.risk_coverage`, with the run's operating point (the
    coverage and risk of its species threshold) marked."""
    return _save(_risk_coverage_figure(curve, point, dpi), path)
