"""Evaluate a run on a split: predictions stored once, then metrics, tables and pictures from them."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from monkeysee.data.dataset import decoded_batches
from monkeysee.data.layout import Sample, scan_dataset
from monkeysee.errors import ConfigError, DataError
from monkeysee.evaluate.answers import answer_metrics, format_answers, risk_coverage
from monkeysee.evaluate.evidence import evidence_summary
from monkeysee.evaluate.interpret import Interpretation
from monkeysee.evaluate.metrics import compute_metrics, format_metrics_table, reliability_table
from monkeysee.evaluate.photos import PhotoPlanOptions, plan_photos
from monkeysee.evaluate.plots import (
    BLOCK_SPECIES,
    plot_confused_block,
    plot_confusion_matrix,
    plot_reliability,
    plot_risk_coverage,
    plot_top_losses,
)
from monkeysee.evaluate.unknown import UnknownScores
from monkeysee.io import atomic_write_bytes
from monkeysee.models.ladder import SPECIES, rungs
from monkeysee.predict import Prediction, Predictor
from monkeysee.rundir import EvalFolder, RunDir

RUN_SPLITS = ("test", "val", "train")


def split_samples(run_dir: Path, split: str, data: str | Path | None, predictor: Predictor) -> list[Sample]:
    """Photos of `split`: a split recorded in the run ('test', 'val', 'train'), the data folder's
    'validation' folder, or a PATH laid out folder-per-species (species matched by label)."""
    if split in RUN_SPLITS:
        index = RunDir(run_dir).read_splits(data)
        samples = index.split(split)
        if not samples:
            raise DataError(f"split {split!r} of this run is empty", fix="choose another --split")
        missing = [s.path for s in samples if not s.path.is_file()]
        if len(missing) == len(samples):
            raise DataError(f"none of the {split} photos are at {index.root}",
                            fix="pass --data DIR where the training data now lives", path=missing[0])
        return samples
    folder = Path(split)
    if split == "validation":
        if data is None:
            raise ConfigError("--split validation needs --data DIR (the folder holding validation/)")
        folder = Path(data) / "validation"
    if not folder.is_dir():
        raise DataError("evaluation folder not found", fix="pass --split test|val|train|validation|PATH",
                        path=folder)
    index = scan_dataset(folder, val_fraction=0.0, test_fraction=0.0)
    labels = {s.label: i for i, s in enumerate(predictor.species)}
    unknown = [s.label for s in index.species if s.label not in labels]
    if unknown:
        raise DataError(f"species folders {', '.join(unknown)} are not species of this model",
                        fix=f"use folders named after: {', '.join(labels)}", path=folder)
    return [Sample(s.path, labels[index.species[s.target].label]) for s in index.train]


def predict_samples(
    predictor: Predictor, samples: list[Sample], batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray, list[int], list[dict[str, str]]]:
    """Logits and pooled features for samples; unreadable photos are left out and listed."""
    logits, feats, kept, errors = [], [], [], []
    with tqdm(total=len(samples), desc="evaluating", unit="photo", disable=None, leave=False) as bar:
        start = 0
        for batch in decoded_batches([s.path for s in samples], batch_size, workers=2,
                                     preprocess=predictor.run.manifest.preprocess):
            good = [(start + i, im) for i, (_, im) in enumerate(batch) if not isinstance(im, str)]
            errors += [{"path": src, "error": im} for src, im in batch if isinstance(im, str)]
            if good:
                out, f = predictor.logits_and_features(predictor.prepare([im for _, im in good]))
                logits.append(out.numpy())
                feats.append(f.numpy())
                kept += [i for i, _ in good]
            start += len(batch)
            bar.update(len(batch))
    if not kept:
        raise DataError("no photo of this split could be read", fix="check the data folder")
    return np.concatenate(logits), np.concatenate(feats), kept, errors


def evaluate_run(
    run_dir: str | Path,
    split: str = "test",
    data: str | Path | None = None,
    predictor: Predictor | None = None,
    log: Callable[[str], None] = print,
    photo_plan: PhotoPlanOptions | None = None,
) -> dict[str, Any]:
    """Metrics of a run on a split, written to RUN_DIR/eval/<split>/ and printed as a table, with the
    predictions, the photos worth showing (`photo_plan`) and the unknown-photo detector's scores."""
    run_dir = Path(run_dir)
    predictor = predictor or Predictor.from_run_dir(run_dir)
    samples = split_samples(run_dir, split, data, predictor)
    logits, feats, kept, errors = predict_samples(predictor, samples)
    probs = predictor.probabilities(logits)
    targets = np.array([samples[i].target for i in kept])
    interp = Interpretation(probs, targets, [str(samples[i].path) for i in kept], list(predictor.species))
    metrics = compute_metrics(probs, targets, predictor.species)
    metrics |= {"split": split, "unreadable": errors, "run": str(run_dir)}
    name = Path(split).name if split not in RUN_SPLITS and split != "validation" else split
    out = RunDir(run_dir).eval(name)
    # one decision per photo, as `predict` gives it: detector scores, ladder answers and evidence
    preds = predictor.decide(logits, feats, [""] * len(targets), top_k=1)
    metrics["answers"] = _answers(predictor, preds, probs, targets, out)
    interp.save(out.predictions)
    write_features(out, feats)
    out.write_json(out.metrics, metrics)
    out.write_json(out.photo_plan, plan_photos(interp, photo_plan).to_dict())
    if predictor.detector is not None:
        known = UnknownScores(predictor.detector.name, np.array([p.unknown_score for p in preds]))
        out.write_json(out.unknown_scores, known.to_dict())
    if predictor.evidence is not None:  # how far to trust "check this one"
        out.write_json(out.evidence, evidence_summary([p.evidence for p in preds if p.evidence], probs,
                                                      targets, interp.paths))
    cm = np.asarray(metrics["confusion_matrix"])
    names = [s.display_name for s in predictor.species]
    plot_confusion_matrix(cm, names, out.confusion_matrix)
    if len(names) > BLOCK_SPECIES:  # beyond this the full picture cannot name its species
        plot_confused_block(cm, names, out.confusion_block)
    _write_confusion_csv(out.confusion_csv, cm, names)
    plot_reliability(reliability_table(probs, targets), out.reliability, ece=metrics.get("ece"))
    _plot_top_losses(interp, predictor, out.top_losses)
    if split == "test":  # the held-out numbers travel with the checkpoint (manifest.metrics.test)
        keys = ("n", "accuracy", "accuracy_ci95", "top3_accuracy", "macro_f1", "log_loss", "ece")
        RunDir(run_dir).record_metrics("test", {k: metrics[k] for k in keys if k in metrics})
    log(format_metrics_table(metrics))
    log(format_answers(metrics["answers"]))
    log(f"evaluation written to {out.path}")
    return metrics


def write_features(out: EvalFolder, feats: np.ndarray) -> None:
    """The pooled features of the stored predictions, in their order (float16), for the species map."""
    buf = io.BytesIO()
    np.save(buf, feats.astype(np.float16))
    atomic_write_bytes(out.features, buf.getvalue())


def _answers(predictor: Predictor, preds: list[Prediction], probs: np.ndarray, targets: np.ndarray,
             out: EvalFolder) -> dict[str, Any]:
    """The answers as `predict` gives them (the unknown detector included, photo quality not judged):
    coverage and accuracy per rank of the answer ladder, and the species rank's risk–coverage curve,
    drawn into `out`."""
    ladder = predictor.ladder or rungs([s.label for s in predictor.species], None)
    names = [s.display_name for s in predictor.species]
    d = answer_metrics([p.rank for p in preds], [p.taxon for p in preds], targets, ladder, names)
    curve = risk_coverage(probs, targets)
    species = d["ranks"][SPECIES]
    point = None if species["accuracy"] is None else (species["coverage"], 1 - species["accuracy"])
    plot_risk_coverage(curve, out.risk_coverage, point)
    return d | {"thresholds": dict(zip([r.rank for r in ladder], predictor.thresholds, strict=False)),
                "closed": {r.rank: sorted(r.closed) for r in ladder if r.closed}, "risk_coverage": curve}


def _write_confusion_csv(path: Path, cm: np.ndarray, names: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["true \\ predicted", *names])
    for name, row in zip(names, cm, strict=True):
        writer.writerow([name, *row.tolist()])
    atomic_write_bytes(path, buf.getvalue().encode())


def _plot_top_losses(interp: Interpretation, predictor: Predictor, path: Path, k: int = 9) -> None:
    from monkeysee.data.images import load_rgb

    items = interp.top_losses(k)
    images = [load_rgb(item.path, preprocess=predictor.run.manifest.preprocess) for item in items]
    plot_top_losses(items, images, predictor.species, path)
