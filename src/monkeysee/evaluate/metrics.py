"""Classification metrics from stored predictions, in plain numpy so the report needs no model or torch.

Everything here takes class-probability arrays `(N, C)` and integer targets `(N,)` and returns numbers
that can go straight into a JSON manifest.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from monkeysee.data.species import Species

# Probabilities are clipped to this before taking logs, so a photo given probability 0 costs a finite loss.
PROB_EPS = 1e-12


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion: honest error bars for accuracy on a small validation set.

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0/n and n/n.
    With no trials at all, everything in [0, 1] is possible.
    """
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    p = successes / n
    z2n = z * z / n
    centre = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * np.sqrt(p * (1 - p) / n + z2n / (4 * n))
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def check_targets(targets: np.ndarray, num_classes: int, name: str = "targets") -> np.ndarray:
    """Validate 1-D integer class indices in [0, num_classes) and return them as int64."""
    targets = np.asarray(targets)
    if targets.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {targets.shape}")
    if targets.size and not np.issubdtype(targets.dtype, np.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {targets.dtype}")
    if targets.size and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got [{targets.min()}, {targets.max()}]")
    return targets.astype(np.int64, copy=False)


def _check_probs(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    probs = np.asarray(probs)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, C), got shape {probs.shape}")
    targets = check_targets(targets, probs.shape[1])
    if len(targets) != len(probs):
        raise ValueError(f"probs has {len(probs)} rows but targets has {len(targets)}")
    return probs, targets


def confusion_matrix(targets: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """`(C, C)` int64 counts: rows are the true species, columns the predicted one."""
    targets = check_targets(targets, num_classes)
    preds = check_targets(preds, num_classes, name="preds")
    if len(targets) != len(preds):
        raise ValueError(f"targets has {len(targets)} entries but preds has {len(preds)}")
    flat = np.bincount(targets * num_classes + preds, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def topk_accuracy(probs: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Fraction of photos whose true species is among the `k` most probable (k clipped to [1, C]).

    Ties are broken towards the lower class index, as `argmax` does, so top-1 equals accuracy.
    """
    probs, targets = _check_probs(probs, targets)
    if len(targets) == 0:
        return 0.0
    k = int(min(max(k, 1), probs.shape[1]))
    topk = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return float((topk == targets[:, None]).any(axis=1).mean())


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0, without a division warning."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.zeros(np.broadcast(num, den).shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def per_class_report(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix (0 where undefined)."""
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    precision = _safe_div(tp, cm.sum(axis=0))
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(np.int64)}


def most_confused_pairs(cm: np.ndarray, min_count: int = 1) -> list[tuple[int, int, int]]:
    """Off-diagonal `(true, predicted, count)` cells with count >= min_count, largest first.

    Equal counts keep row-major order, so the list is deterministic.
    """
    cm = np.asarray(cm)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    rows, cols = np.nonzero(off >= max(min_count, 1))
    counts = off[rows, cols]
    order = np.argsort(-counts, kind="stable")  # nonzero() is row-major, stable sort keeps that for ties
    return [(int(rows[i]), int(cols[i]), int(counts[i])) for i in order]


def sample_losses(probs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Per-photo cross-entropy `-log p(true)` from probabilities, clipped at PROB_EPS so it stays finite."""
    probs, targets = _check_probs(probs, targets)
    p_true = probs[np.arange(len(targets)), targets].astype(np.float64)
    return -np.log(np.clip(p_true, PROB_EPS, 1.0))


ECE_BINS = 15


def _bin_index(confidence: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width bins over [0, 1], each (lo, hi], the first also taking 0."""
    return np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)


def reliability_table(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> list[dict[str, Any]]:
    """Per confidence bin: its range, mean top-1 confidence, accuracy and photo count.

    Empty bins have count 0 and None for confidence and accuracy (JSON null), so the table always has
    `bins` rows.
    """
    probs, targets = _check_probs(probs, targets)
    if bins < 1:
        raise ValueError(f"need at least one bin, got {bins}")
    confidence = probs.max(axis=1).astype(np.float64)
    correct = (probs.argmax(axis=1) == targets).astype(np.float64)
    idx = _bin_index(confidence, bins)
    count = np.bincount(idx, minlength=bins)
    conf_sum = np.bincount(idx, weights=confidence, minlength=bins)
    acc_sum = np.bincount(idx, weights=correct, minlength=bins)
    return [
        {
            "lo": i / bins,
            "hi": (i + 1) / bins,
            "confidence": float(conf_sum[i] / count[i]) if count[i] else None,
            "accuracy": float(acc_sum[i] / count[i]) if count[i] else None,
            "count": int(count[i]),
        }
        for i in range(bins)
    ]


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the photo-weighted mean |accuracy - confidence| over equal-width top-1 confidence bins."""
    rows = reliability_table(probs, targets, bins)
    n = sum(r["count"] for r in rows)
    if n == 0:
        return 0.0
    return float(sum(r["count"] * abs(r["accuracy"] - r["confidence"]) for r in rows if r["count"]) / n)


def compute_metrics(probs: np.ndarray, targets: np.ndarray, species: Sequence[Species]) -> dict[str, Any]:
    """All evaluation numbers for one split, JSON-ready (plain floats, ints and lists).

    macro_f1 averages over species that occur in the targets or the predictions, so a species absent
    from a small split neither helps nor hurts.
    """
    probs, targets = _check_probs(probs, targets)
    num_classes = probs.shape[1]
    if len(species) != num_classes:
        raise ValueError(f"probs has {num_classes} classes but {len(species)} species were given")
    n = len(targets)
    preds = probs.argmax(axis=1)
    cm = confusion_matrix(targets, preds, num_classes)
    report = per_class_report(cm)
    present = (report["support"] > 0) | (cm.sum(axis=0) > 0)
    correct = int(np.trace(cm))
    lo, hi = wilson_interval(correct, n)
    return {
        "n": n,
        "accuracy": correct / n if n else 0.0,
        "accuracy_ci95": [lo, hi],
        "top3_accuracy": topk_accuracy(probs, targets, 3),
        "macro_f1": float(report["f1"][present].mean()) if present.any() else 0.0,
        "balanced_accuracy": float(report["recall"][report["support"] > 0].mean()) if n else 0.0,
        "log_loss": float(sample_losses(probs, targets).mean()) if n else 0.0,
        "ece": expected_calibration_error(probs, targets),
        "per_species": [
            {
                "label": s.label,
                "common_name": s.common_name,
                "latin_name": s.latin_name,
                "precision": float(report["precision"][i]),
                "recall": float(report["recall"][i]),
                "f1": float(report["f1"][i]),
                "support": int(report["support"][i]),
            }
            for i, s in enumerate(species)
        ],
        "confusion_matrix": cm.tolist(),
        "most_confused": [
            {"true": species[t].common_name, "predicted": species[p].common_name, "count": c}
            for t, p, c in most_confused_pairs(cm)[:10]
        ],
    }


TABLE_SPECIES = 25
"""Species rows the terminal table shows (worst F1 first); all of them are in metrics.json."""


def format_metrics_table(metrics: dict[str, Any], max_species: int = TABLE_SPECIES) -> str:
    """A fixed-width summary for the terminal: overall numbers, then the species, worst F1 first."""
    lo, hi = metrics["accuracy_ci95"]
    lines = [
        f"{'photos':<16}{metrics['n']}",
        f"{'accuracy':<16}{metrics['accuracy']:.1%}  (95% CI {lo:.1%} - {hi:.1%})",
        f"{'top-3 accuracy':<16}{metrics['top3_accuracy']:.1%}",
        f"{'macro F1':<16}{metrics['macro_f1']:.3f}",
        *([f"{'balanced accuracy':<16}{metrics['balanced_accuracy']:.1%}  (mean recall per species)"]
          if "balanced_accuracy" in metrics else []),
        f"{'log loss':<16}{metrics['log_loss']:.3f}",
    ]
    if "ece" in metrics:  # manifests written before calibration was measured lack it
        lines.append(f"{'calibration ECE':<16}{metrics['ece']:.1%}  ({ECE_BINS} bins, top-1 confidence)")
    everyone = sorted(metrics.get("per_species", []), key=lambda r: (r["f1"], -r["support"], r["label"]))
    rows = everyone[:max_species]
    if rows:
        names = [r["common_name"].replace("_", " ") for r in rows]
        lw = max(5, *(len(r["label"]) for r in rows))
        nw = max(7, *(len(n) for n in names))
        lines += ["", f"{'label':<{lw}}  {'species':<{nw}}  {'precision':>9}  {'recall':>6}  {'f1':>5}  "
                      f"{'support':>7}"]
        lines.append("-" * len(lines[-1]))
        lines += [
            f"{r['label']:<{lw}}  {name:<{nw}}  {r['precision']:>9.3f}  {r['recall']:>6.3f}  "
            f"{r['f1']:>5.3f}  {r['support']:>7d}"
            for r, name in zip(rows, names, strict=True)
        ]
        if len(everyone) > len(rows):
            lines.append(f"... and {len(everyone) - len(rows)} more species (best last), all in metrics.json")
    confused = metrics.get("most_confused", [])
    if confused:
        lines += ["", "most confused (true → predicted):"]
        lines += [
            f"  {c['true'].replace('_', ' ')} → {c['predicted'].replace('_', ' ')}: {c['count']}"
            for c in confused[:5]
        ]
    return "\n".join(lines)
