"""Sections made from the run's own files, no model needed: overview, data, training, metrics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from monkeysee.checkpoint import library_versions
from monkeysee.report.context import EVAL_SPLIT, ReportContext
from monkeysee.report.html import (
    bullet_list,
    code,
    details,
    duration,
    esc,
    figure,
    img,
    key_values,
    note,
    num,
    para,
    pct,
    stat,
    stats,
    table,
)
from monkeysee.report.images import stored_or_plot_uri
from monkeysee.report.sections import Section, section
from monkeysee.rundir import CURVES, RunDir

# Species whose F1 is below this are flagged in the per-species table.
WEAK_F1 = 0.8
# How many species names the overview lists before "and N more".
NAMES_SHOWN = 12


def accuracy_stat(metrics: dict[str, Any]) -> str:
    lo, hi = metrics["accuracy_ci95"]
    return stat(
        "test accuracy",
        pct(metrics["accuracy"]),
        f"95% CI {pct(lo)} – {pct(hi)} on {metrics['n']} photos",
    )


def species_label(ctx: ReportContext, i: int) -> str:
    """Common name, with the Latin name in italics where it is known."""
    s = ctx.species[i]
    latin = f" <i>{esc(s.display_latin)}</i>" if s.latin_name else ""
    return f"{esc(s.display_name)}{latin}"


def _phases(ctx: ReportContext) -> list[dict[str, Any]]:
    """Per training phase: epochs run and configured, best validation numbers and time spent."""
    configured = {"head": ctx.config.get("head_epochs"), "finetune": ctx.config.get("finetune_epochs")}
    out = []
    for phase in dict.fromkeys(r.get("phase", "") for r in ctx.history):
        rows = [r for r in ctx.history if r.get("phase", "") == phase]
        out.append(
            {
                "phase": phase,
                "epochs": len(rows),
                "configured": configured.get(phase),
                "best_val_acc": max((r.get("val_acc") or 0.0) for r in rows),
                "best_val_loss": min((r.get("val_loss") or float("inf")) for r in rows),
                "seconds": sum(float(r.get("seconds") or 0.0) for r in rows),
            }
        )
    return out


def _training_time(ctx: ReportContext) -> str:
    recorded = ctx.manifest.metrics.get("train_seconds")
    if recorded is not None:
        return duration(float(recorded))
    epochs = sum(float(r.get("seconds") or 0.0) for r in ctx.history)
    return (
        f"{duration(epochs)} in {len(ctx.history)} epochs (plus the one-off pass through the frozen layers)"
    )


def _fingerprint(ctx: ReportContext) -> str:
    recorded = ctx.manifest.data_fingerprint
    if not recorded:
        return "not recorded"
    shown = f'<code title="{esc(recorded)}">{esc(recorded[:16])}…</code>'
    if not ctx.photos_ok or ctx.index is None:
        return f"{shown} (data not available to check)"
    if ctx.index.fingerprint() == recorded:
        return f'{shown} <span class="good">matches the data now</span>'
    return (
        f'{shown} <span class="bad">differs from the data now</span>: photos were added, removed or '
        "changed since training, so the numbers below may not describe the current data"
    )


def _when(created: str) -> str:
    """'2026-11-26T10:26:45+00:00' -> '2026-11-26 10:26 UTC'."""
    from datetime import UTC, datetime

    try:
        return datetime.fromisoformat(created).astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return created or "at an unrecorded time"


def _versions(ctx: ReportContext) -> str:
    trained = ctx.manifest.versions
    text = ", ".join(f"{k} {v}" for k, v in trained.items()) or "not recorded"
    now = library_versions()
    changed = [
        f"{k} {now[k]}" for k in ("monkeysee", "torch", "timm") if k in trained and now.get(k) != trained[k]
    ]
    if changed:
        text += f"<br>report built with {esc(', '.join(changed))}"
    return esc(text) if not changed else text


@section
class Overview(Section):
    id = "overview"
    title = "Overview"
    order = 10

    def render(self, ctx: ReportContext) -> str:
        m, metrics = ctx.manifest, ctx.metrics
        boxes = [stat("species", str(m.num_classes))]
        if metrics:
            boxes = [
                accuracy_stat(metrics),
                stat("top-3 accuracy", pct(metrics["top3_accuracy"])),
                stat("macro F1", num(metrics["macro_f1"])),
                *boxes,
            ]
        names = [s.display_name for s in m.species]
        more = f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
        best = m.metrics.get("best", {})
        phases = "; ".join(
            f"{p['phase']} {p['epochs']}"
            + (f" of {p['configured']}" if p["configured"] else "")
            + " epochs"
            + (" (stopped early)" if p["configured"] and p["epochs"] < p["configured"] else "")
            for p in _phases(ctx)
        )
        pre = m.preprocess
        rows = [
            ("Run", f"{code(ctx.run_dir)}, trained {esc(_when(m.created))}"),
            ("Species", f"{m.num_classes}: {esc(', '.join(names[:NAMES_SHOWN]))}{more}"),
            (
                "Backbone",
                f"{code(m.backbone)}, {pre.input_size}×{pre.input_size} input, "
                f"explained at layer {code(m.explain_layer)}",
            ),
            (
                "Training",
                f"{esc(phases or 'no history recorded')}; {esc(_training_time(ctx))}; "
                f"precision {esc(m.metrics.get('precision', 'not recorded'))}",
            ),
            (
                "Checkpoint kept",
                esc(
                    f"{best.get('phase', '?')} epoch {best.get('epoch', '?')}, lowest "
                    f"validation loss {num(best.get('val_loss'))}, validation accuracy "
                    f"{pct(best.get('val_acc'))}"
                )
                if best
                else "not recorded",
            ),
        ]
        if metrics:
            lo, hi = metrics["accuracy_ci95"]
            rows.append(
                (
                    "Test accuracy",
                    f"<b>{pct(metrics['accuracy'])}</b> (95% CI {pct(lo)} – {pct(hi)}, "
                    f"Wilson) on {metrics['n']} held-out photos never used for "
                    "training or choosing the epoch",
                )
            )
        else:
            rows.append(("Test accuracy", esc(ctx.problems.get("metrics", "not evaluated"))))
        if m.unknown:
            keep = m.unknown.get("keep")
            rows.append(
                (
                    "Unknown detector",
                    f"{code(m.unknown.get('name'))}, threshold "
                    f"{num(m.unknown.get('threshold'), 4)}"
                    + (f", keeps {pct(keep, 0)} of known photos" if keep else ""),
                )
            )
        rows += [
            ("Data", f"{code(ctx.data_root or 'not recorded')}; fingerprint {_fingerprint(ctx)}"),
            ("Seed", esc(m.seed)),
            ("Versions", _versions(ctx)),
        ]
        return stats(boxes) + key_values(rows)


@section
class Data(Section):
    id = "data"
    title = "Data"
    order = 20

    def render(self, ctx: ReportContext) -> str:
        problem = note(esc(ctx.problems["data"])) if "data" in ctx.problems else ""
        counts = (ctx.summary or {}).get("counts") or (ctx.index.counts() if ctx.index else None)
        if not counts:
            return problem + note(
                "This run records no data summary or splits (data_summary.json, splits.json)."
            )
        labels = [s.label for s in ctx.species]
        rows: list[list[Any]]
        totals: Counter[str]
        rows, totals = [], Counter()
        for i, label in enumerate(labels):
            n = {split: counts.get(split, {}).get(label, 0) for split in ("train", "val", "test")}
            totals.update(n)
            rows.append([species_label(ctx, i), esc(label), n["train"], n["val"], n["test"], sum(n.values())])
        total = sum(totals.values())
        val_source = (ctx.summary or {}).get("val_source", ctx.index.val_source if ctx.index else "carved")
        val_text = (
            "carved from the training photos"
            if val_source == "carved"
            else "the data set's own validation folder"
        )
        parts = [
            problem,
            para(
                f"{total} photos of {len(labels)} species: {totals['train']} for training, "
                f"{totals['val']} for validation ({esc(val_text)}; it chose the epoch) and "
                f"{totals['test']} held out for the test numbers in this report (carved from training "
                "photos, stratified per species, seeded)."
            ),
        ]
        per_species = [sum(r[2:5]) for r in rows]
        if per_species and min(per_species) > 0 and max(per_species) / min(per_species) > 2:
            parts.append(
                note(
                    f"Species are unbalanced: from {min(per_species)} to {max(per_species)} photos. "
                    "Rare species usually score lower; see the per-species table."
                )
            )
        parts.append(
            table(
                ["species", "label", "train", "val", "test", "total"],
                rows,
                numeric=(2, 3, 4, 5),
                footer=["all species", "", totals["train"], totals["val"], totals["test"], total],
                raw=True,
            )
        )
        parts.append(self._skipped(ctx))
        warnings = (ctx.summary or {}).get("warnings", ctx.index.warnings if ctx.index else [])
        parts.append(
            "<h3>Warnings</h3>"
            + (bullet_list(esc(w) for w in warnings) if warnings else para("None while scanning the data."))
        )
        return "".join(parts)

    def _skipped(self, ctx: ReportContext) -> str:
        skipped = (ctx.summary or {}).get("skipped") or (
            [{"path": str(s.path), "reason": s.reason} for s in ctx.index.skipped] if ctx.index else [])
        if not skipped:
            return "<h3>Skipped files</h3>" + para("None: every file in the species folders could be read.")
        reasons = Counter(s["reason"] for s in skipped)
        summary = "; ".join(f"{n} × {r}" for r, n in reasons.most_common())
        rows = [[s["path"], s["reason"]] for s in skipped]
        return (
            f"<h3>Skipped files ({len(skipped)})</h3>"
            + para(esc(summary))
            + details(
                f"every skipped file ({len(skipped)})", table(["file", "why"], rows), open_=len(rows) <= 10
            )
        )


@section
class Training(Section):
    id = "training"
    title = "Training"
    order = 40

    def render(self, ctx: ReportContext) -> str:
        from monkeysee.evaluate.plots import plot_training_curves

        if not ctx.history:
            return note("This run records no training history (history.json).")
        curves = RunDir(ctx.run_dir).file(CURVES)
        uri = stored_or_plot_uri(curves, lambda p: plot_training_curves(ctx.history, p))
        best = ctx.manifest.metrics.get("best", {})
        parts = [
            figure(
                img(uri, "training curves: loss and accuracy per epoch", class_="wide"),
                "Loss and accuracy per epoch on training and validation photos; the dashed line "
                "separates the phases (frozen body, then the top stages fine-tuned).",
            )
        ]
        if best:
            parts.append(
                para(
                    f"Kept: <b>{esc(best.get('phase'))} epoch {esc(best.get('epoch'))}</b>, the lowest "
                    f"validation loss ({num(best.get('val_loss'))}; validation accuracy "
                    f"{pct(best.get('val_acc'))}). "
                    "Validation photos chose this epoch, so the honest numbers are the test ones below."
                )
            )
        patience = ctx.config.get("patience")
        rows = [
            [
                p["phase"],
                p["epochs"],
                p["configured"] or "",
                pct(p["best_val_acc"]),
                num(p["best_val_loss"]),
                duration(p["seconds"]),
            ]
            for p in _phases(ctx)
        ]
        parts.append(
            table(
                ["phase", "epochs run", "configured", "best val acc", "lowest val loss", "time"],
                rows,
                numeric=(1, 2, 3, 4, 5),
            )
        )
        if patience:
            parts.append(
                para(f"A phase stops early after {esc(patience)} epochs without a lower validation loss.")
            )
        keys = ["phase", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
        hist = [[_cell(r.get(k)) for k in keys] for r in ctx.history]
        parts.append(details(f"every epoch ({len(hist)})", table(keys, hist, numeric=range(1, len(keys)))))
        return "".join(parts)


def _cell(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


@section
class Metrics(Section):
    id = "metrics"
    title = "Metrics on the test photos"
    order = 50

    def render(self, ctx: ReportContext) -> str:
        metrics = ctx.metrics
        if not metrics:
            return note(esc(ctx.problems.get("metrics", "The run has not been evaluated.")))
        parts = [
            stats(
                [
                    accuracy_stat(metrics),
                    stat(
                        "top-3 accuracy",
                        pct(metrics["top3_accuracy"]),
                        "true species among the 3 most likely",
                    ),
                    stat("macro F1", num(metrics["macro_f1"]), "F1 averaged over species"),
                    *([stat("balanced accuracy", pct(metrics["balanced_accuracy"]),
                            "recall averaged over species")] if "balanced_accuracy" in metrics else []),
                    stat("log loss", num(metrics["log_loss"]), "lower is better"),
                    *([stat("calibration error", pct(metrics["ece"]), "ECE: shown confidence vs "
                            "accuracy, lower is better")] if "ece" in metrics else []),
                ]
            )
        ]
        unreadable = metrics.get("unreadable") or []
        parts.append(
            para(
                f"From {code(ctx.evaluation.metrics)}: {metrics['n']} photos of the held-out "
                f"{EVAL_SPLIT} split. The 95% interval (Wilson) says how far the accuracy could be from the "
                "model's true accuracy just because the test set is small."
                + (f" {len(unreadable)} photo(s) could not be read and are left out." if unreadable else "")
            )
        )
        per = metrics.get("per_species", [])
        order = sorted(range(len(per)), key=lambda i: (per[i]["f1"], per[i]["recall"], i))
        rows = []
        for i in order:
            r = per[i]
            flag = ' class="bad"' if r["support"] and r["f1"] < WEAK_F1 else ""
            rows.append(
                [
                    species_label(ctx, i) if i < len(ctx.species) else esc(r["common_name"]),
                    f"<span{flag}>{num(r['precision'])}</span>",
                    f"<span{flag}>{num(r['recall'])}</span>",
                    f"<span{flag}>{num(r['f1'])}</span>",
                    r["support"],
                ]
            )
        parts.append("<h3>Per species (weakest first)</h3>")
        parts.append(
            para(
                "Precision: of the photos called this species, the share that were. Recall: of the "
                "photos of this species, the share found. F1: their harmonic mean."
                f" Values below {WEAK_F1} are red."
            )
        )
        parts.append(
            table(["species", "precision", "recall", "F1", "photos"], rows, numeric=(1, 2, 3, 4), raw=True)
        )
        parts.append(self._confidence(ctx, metrics))
        return "".join(parts)

    @staticmethod
    def _confidence(ctx: ReportContext, metrics: dict[str, Any]) -> str:
        """How honest the shown confidence is: the reliability diagram and the temperature behind it."""
        from monkeysee.evaluate.metrics import reliability_table
        from monkeysee.evaluate.plots import plot_reliability

        stored, interp = ctx.evaluation.reliability, ctx.interp
        if not stored.is_file() and interp is None:
            return ""
        def draw(path: Path) -> Path:
            assert interp is not None  # drawn only when no diagram is stored, and then interp is there
            return plot_reliability(reliability_table(interp.probs, interp.targets), path,
                                    ece=metrics.get("ece"))

        uri = stored_or_plot_uri(stored, draw)
        temperature = (ctx.manifest.calibration or {}).get("temperature")
        calibrated = temperature is not None and ctx.manifest.config.get("calibration") != "none"
        how = (f"The probabilities shown are the softmax of the logits divided by a temperature of "
               f"{num(temperature, 3)}, fitted on the validation photos (never these)." if calibrated
               else "The probabilities shown are not calibrated (trained with --calibration none).")
        ece_text = f" Expected calibration error {pct(metrics['ece'])}." if "ece" in metrics else ""
        return ("<h3>Confidence</h3>" + para(
            "Of the test photos answered with about 80% confidence, about 80% should be right: each bar "
            f"is one confidence bin, the diagonal is perfect honesty. {how}{ece_text}")
            + figure(img(uri, "reliability diagram of the test photos", class_="matrix"),
                     "Accuracy per confidence bin against the diagonal, photos per bin below."))
