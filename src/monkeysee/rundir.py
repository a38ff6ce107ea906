"""The run folder, and the only module that knows its files: every other module asks a `RunDir`.

  config.json, splits.json, data_summary.json     what was asked and what data it saw
  history.csv, history.json, curves.png           how training went
  model.safetensors, unknown.safetensors          weights, and the "not one of my species" detector's arrays
  manifest.json                                   the self-describing checkpoint, written last; it pins the
                                                  other checkpoint files by size and sha256
  evidence.safetensors, thumbnails.bin            the training photos an answer is compared with: their
                                                  features and species, and their WebP thumbnails packed
  eval/<split>/                                   evaluation outputs (see `EvalFolder`)
  state/                                          resume state of an unfinished training run

Every write is atomic (temporary file, fsync, rename), so a reader or a resumed run never sees half a
file, and a checkpoint file that does not match its manifest (truncated, edited, copied from another
run) is refused with the file's name instead of being used.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load as load_numpy_bytes
from safetensors.torch import load as load_torch_bytes
from safetensors.torch import load_file

from monkeysee.checkpoint import Manifest, atomic_save_tensors, tensor_bytes
from monkeysee.data.layout import DataIndex
from monkeysee.data.thumbnails import Thumbnails
from monkeysee.errors import CheckpointError, DataError
from monkeysee.io import atomic_write_bytes, atomic_write_json
from monkeysee.models import Classifier, create_model
from monkeysee.models.evidence import EvidenceBank
from monkeysee.models.unknown import UnknownDetector

CONFIG = "config.json"
SPLITS = "splits.json"
SUMMARY = "data_summary.json"
HISTORY = "history.json"
HISTORY_CSV = "history.csv"
CURVES = "curves.png"
MANIFEST = "manifest.json"
WEIGHTS = "model.safetensors"
UNKNOWN = "unknown.safetensors"
STATE = "state"
EVAL = "eval"
PROGRESS = "progress.json"
LAST = "last.safetensors"
BEST = "best.safetensors"
OPTIMIZER = "optimizer.pt"
EVIDENCE = "evidence.safetensors"
THUMBNAILS = "thumbnails.bin"
ATLAS = "atlas"

_RERUN = "re-run training, or copy the whole run folder again"
_EVIDENCE_FIX = "rebuild it with `monkeysee evidence RUN`, or copy the whole run folder again"


@dataclass
class LoadedRun:
    """A model rebuilt from its run folder, in eval mode, with its manifest."""

    directory: Path
    model: Classifier
    manifest: Manifest

    @property
    def species(self) -> tuple:
        return self.manifest.species


class RunDir:
    """Paths, reads and atomic writes of one run folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # --- paths ----------------------------------------------------------------------------------------

    def file(self, name: str) -> Path:
        return self.path / name

    @property
    def state(self) -> RunState:
        """The resume state of an unfinished training run."""
        return RunState(self.path / STATE)

    def eval_dir(self, split: str) -> Path:
        return self.path / EVAL / split

    def eval(self, split: str) -> EvalFolder:
        """The evaluation outputs of `split` (a run split's name, or the folder name of an outside one)."""
        return EvalFolder(self.eval_dir(split))

    @property
    def atlas_dir(self) -> Path:
        """Where `monkeysee atlas` writes the channel atlas by default (read back by the report)."""
        return self.path / ATLAS

    def holds_run(self) -> bool:
        """True once training has started here (splits chosen, state or a checkpoint written); a folder
        with only the config of a start that failed before reading photos can be used again."""
        return any(self.file(n).exists() for n in (SPLITS, MANIFEST, STATE))

    def is_finished(self) -> bool:
        return self.file(MANIFEST).is_file()

    def discard_start(self, created: bool) -> None:
        """Remove what a training start wrote before its first epoch was saved (the config, the splits,
        the state folder), and the folder itself when the start `created` it and nothing else is there,
        so the same command can run again."""
        for name in (CONFIG, SPLITS, SUMMARY, HISTORY, HISTORY_CSV):
            self.file(name).unlink(missing_ok=True)
        shutil.rmtree(self.path / STATE, ignore_errors=True)
        if created and self.path.is_dir() and not any(self.path.iterdir()):
            self.path.rmdir()

    # --- what was asked, what data it saw, how training went ---------------------------------------------

    def write_config(self, config: dict[str, Any]) -> None:
        atomic_write_json(self.file(CONFIG), config)

    def read_config(self) -> dict[str, Any] | None:
        return self.read_json(CONFIG)

    def write_splits(self, index: DataIndex) -> None:
        """splits.json (membership, to reproduce the run) and data_summary.json (counts, skipped files)."""
        atomic_write_json(self.file(SPLITS), index.to_json())
        atomic_write_json(self.file(SUMMARY), {
            "root": str(index.root), "counts": index.counts(), "fingerprint": index.fingerprint(),
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in index.skipped],
            "warnings": index.warnings, "val_source": index.val_source,
        })

    def has_splits(self) -> bool:
        return self.file(SPLITS).is_file()

    def splits_root(self) -> Path | None:
        """The data folder recorded in splits.json, or None without one."""
        record = self.read_json(SPLITS)
        return Path(record["root"]) if isinstance(record, dict) and "root" in record else None

    def read_splits(self, data: str | Path | None = None) -> DataIndex:
        """The recorded split, with photos under `data` when given (the data moved), else where recorded."""
        record = self.read_json(SPLITS)
        if record is None:
            raise DataError("the run records no splits", fix="pass --split PATH, or re-run training",
                            path=self.path)
        try:
            root = data or record["root"]
        except (KeyError, TypeError):
            raise DataError("splits.json records no data folder", fix="pass --data DIR",
                            path=self.file(SPLITS)) from None
        return DataIndex.from_json(record, root)

    def read_summary(self) -> dict[str, Any] | None:
        return self.read_json(SUMMARY)

    def write_history(self, history: list[dict[str, Any]]) -> None:
        atomic_write_json(self.file(HISTORY), history)
        if history:
            buf = io.StringIO()
            writer = csv.DictWriter(buf, fieldnames=list(history[0]))
            writer.writeheader()
            writer.writerows(history)
            atomic_write_bytes(self.file(HISTORY_CSV), buf.getvalue().encode())

    def read_history(self) -> list[dict[str, Any]]:
        return self.read_json(HISTORY) or []

    # --- the checkpoint ------------------------------------------------------------------------------------

    def save_checkpoint(self, model: Classifier, manifest: Manifest,
                        detector: UnknownDetector | None = None) -> Manifest:
        """Weights, then the detector's arrays, then the manifest pinning both (each write atomic)."""
        files = {WEIGHTS: tensor_bytes(model.state_dict(), {"backbone": manifest.backbone})}
        unknown: dict[str, Any] = {}
        if detector is not None:
            unknown, arrays = detector.to_manifest()
            files[UNKNOWN] = tensor_bytes({k: torch.from_numpy(np.ascontiguousarray(v))
                                           for k, v in arrays.items()})
        for name, data in files.items():
            atomic_write_bytes(self.file(name), data)
        if detector is None:
            self.file(UNKNOWN).unlink(missing_ok=True)
        manifest = manifest.replace(unknown=unknown, files={n: _pin(d) for n, d in files.items()})
        self.write_manifest(manifest)
        return manifest

    def write_manifest(self, manifest: Manifest) -> None:
        atomic_write_json(self.file(MANIFEST), manifest.to_dict())

    def read_manifest(self) -> Manifest:
        if not self.path.is_dir():
            raise CheckpointError("run folder not found", fix="pass the folder that `monkeysee train` wrote",
                                  path=self.path)
        if not self.file(MANIFEST).is_file():
            raise CheckpointError(
                f"no {MANIFEST} here, so this is not a finished monkeysee run",
                fix="pass a run folder written by `monkeysee train` (or resume it with --resume)",
                path=self.path,
            )
        try:
            return Manifest.from_dict(json.loads(self.file(MANIFEST).read_text()), self.file(MANIFEST))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"manifest is damaged ({exc})", fix=_RERUN,
                                  path=self.file(MANIFEST)) from exc

    def update_manifest(self, change: Callable[[Manifest], Manifest]) -> Manifest:
        """Read, change and write back the manifest (e.g. evaluate records the held-out metrics)."""
        manifest = change(self.read_manifest())
        self.write_manifest(manifest)
        return manifest

    def record_metrics(self, key: str, metrics: dict[str, Any]) -> Manifest:
        """`manifest.metrics[key] = metrics`: the numbers travel with the checkpoint."""
        return self.update_manifest(lambda m: m.replace(metrics={**m.metrics, key: metrics}))

    def load(self, device: str | torch.device = "cpu") -> LoadedRun:
        """Rebuild the trained classifier from the manifest and its pinned weights (no pickle involved)."""
        manifest = self.read_manifest()
        model = create_model(manifest.backbone, num_classes=manifest.num_classes, dropout=manifest.dropout)
        weights = self._checked_bytes(manifest, WEIGHTS)
        try:
            model.load_state_dict(load_torch_bytes(weights))
        except (SafetensorError, RuntimeError, ValueError) as exc:  # a foreign or damaged file
            raise CheckpointError(f"cannot load weights ({exc})", fix=_RERUN,
                                  path=self.file(WEIGHTS)) from exc
        return LoadedRun(self.path, model.to(device).eval(), manifest)

    def load_detector(self, manifest: Manifest | None = None) -> UnknownDetector | None:
        """The unknown-photo detector calibrated at training time, or None for a run without one."""
        manifest = manifest or self.read_manifest()
        if not manifest.unknown:
            return None
        arrays: dict[str, np.ndarray] = {}
        if manifest.unknown.get("arrays") or UNKNOWN in manifest.files:  # a pinned file is always checked
            data = self._checked_bytes(manifest, UNKNOWN)
            try:
                arrays = load_numpy_bytes(data)
            except (SafetensorError, ValueError) as exc:
                raise CheckpointError(f"cannot read the detector's arrays ({exc})", fix=_RERUN,
                                      path=self.file(UNKNOWN)) from exc
        return UnknownDetector.from_manifest(manifest.unknown, arrays)

    # --- the evidence: training photos' features and thumbnails ------------------------------------------

    def save_evidence(self, bank: EvidenceBank, thumbnails: bytes, offsets: np.ndarray,
                      paths: list[str]) -> Manifest:
        """The evidence bank (features as float16, species, partners, thumbnail offsets and the training
        photos' paths) and the packed thumbnails, both pinned in the manifest, which is rewritten."""
        if len(offsets) != len(bank) + 1 or int(offsets[-1]) != len(thumbnails) or len(paths) != len(bank):
            raise ValueError(f"{len(bank)} bank rows, {len(offsets)} offsets, {len(paths)} paths and "
                             f"{len(thumbnails)} thumbnail bytes (offsets end at {int(offsets[-1])})")
        arrays = {"features": torch.from_numpy(bank.features).half(),
                  "targets": torch.from_numpy(bank.targets), "partners": torch.from_numpy(bank.partners),
                  "offsets": torch.from_numpy(offsets)}
        files = {EVIDENCE: tensor_bytes(arrays, {"paths": json.dumps(paths)}), THUMBNAILS: thumbnails}
        for name, data in files.items():
            atomic_write_bytes(self.file(name), data)
        pins = {n: _pin(d) for n, d in files.items()}
        return self.update_manifest(lambda m: m.replace(files={**m.files, **pins}))

    def has_evidence(self, manifest: Manifest | None = None) -> bool:
        return EVIDENCE in (manifest or self.read_manifest()).files

    def load_evidence(self, manifest: Manifest | None = None) -> Evidence | None:
        """The evidence bank and its thumbnails, or None for a run without them."""
        manifest = manifest or self.read_manifest()
        if EVIDENCE not in manifest.files:
            return None
        data = self._checked_bytes(manifest, EVIDENCE)
        try:
            arrays = load_numpy_bytes(data)
            header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
            paths = json.loads(header.get("__metadata__", {}).get("paths", "[]"))
            bank = EvidenceBank(arrays["features"], arrays["targets"], arrays["partners"], manifest.species)
        except (SafetensorError, KeyError, ValueError) as exc:
            raise CheckpointError(f"cannot read the evidence ({exc})", fix=_EVIDENCE_FIX,
                                  path=self.file(EVIDENCE)) from exc
        pin = manifest.files.get(THUMBNAILS, {})
        thumbs = Thumbnails(self.file(THUMBNAILS), arrays["offsets"], pin.get("bytes"), fix=_EVIDENCE_FIX)
        return Evidence(bank, thumbs,
                        [str(p) for p in paths])

    def _checked_bytes(self, manifest: Manifest, name: str) -> bytes:
        """The bytes of checkpoint file `name`, refused unless they match the manifest's pin."""
        path = self.file(name)
        if not path.is_file():
            raise CheckpointError(f"{name} is missing", fix=_RERUN, path=path)
        data = path.read_bytes()
        pin = manifest.files.get(name)
        if pin is not None and _pin(data) != pin:
            raise CheckpointError(
                f"{name} does not match manifest.json ({len(data)} bytes, sha256 {_sha256(data)[:12]}…; "
                f"the manifest expects {pin.get('bytes')} bytes, sha256 {str(pin.get('sha256'))[:12]}…): "
                "it is truncated, changed, or from another run",
                fix=_RERUN, path=path)
        return data

    def read_json(self, name: str | Path) -> Any:  # noqa: ANN401 - parsed JSON, any shape
        """A JSON file of the run folder (relative name), or None when it is not there."""
        return _read_json(self.path / name, fix="re-run the step that wrote it")


@dataclass
class Evidence:
    """A run's evidence: the bank of training photos' features, their thumbnails and their paths."""

    bank: EvidenceBank
    thumbnails: Thumbnails
    paths: list[str]


class EvalFolder:
    """eval/<split>/: what `evaluate` computed on one split, read back by the report. The only place the
    names of its files are spelled; JSON files are written atomically like every file of the run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.metrics = path / "metrics.json"
        self.predictions = path / "predictions"  # a stem: `Interpretation.save` adds .npz and .json
        self.confusion_matrix = path / "confusion_matrix.png"
        self.confusion_block = path / "confusion_block.png"  # the most-confused species, named
        self.confusion_csv = path / "confusion_matrix.csv"
        self.reliability = path / "reliability.png"
        self.top_losses = path / "top_losses.png"
        self.photo_plan = path / "photo_plan.json"  # the stored predictions the report shows as photos
        self.unknown_scores = path / "unknown_scores.json"  # detector scores: these photos, and others
        self.faithfulness = path / "faithfulness.json"
        self.features = path / "features.npy"  # pooled features, one row per stored prediction (float16)
        self.species_map = path / "species_map"  # a stem: `SpeciesMap.save` adds .npz and .json
        self.species_map_html = path / "species_map.html"  # `monkeysee map`'s page, unless --out
        self.risk_coverage = path / "risk_coverage.png"  # the answer ladder's species rank
        self.evidence = path / "evidence.json"  # the "check this one" flag's figures and a few examples
        self.concepts = path / "concepts.json"  # concept tests (TCAV) of `monkeysee concepts`
        self.shortcuts = path / "shortcuts.json"  # Grad-CAM mass on the border per species, and alarms

    def __repr__(self) -> str:
        return f"EvalFolder({str(self.path)!r})"

    def write_json(self, path: Path, data: Any) -> None:  # noqa: ANN401 - any JSON-ready value
        """One of this folder's JSON files (a property above), written atomically."""
        atomic_write_json(path, data)

    def read_json(self, path: Path) -> Any:  # noqa: ANN401 - parsed JSON, any shape
        """One of this folder's JSON files, or None when it is not there."""
        return _read_json(path, fix="run `monkeysee evaluate` on the run again")


class RunState:
    """The resume state of an unfinished training run, in its `state/` folder: the last completed
    epoch's weights, optimizer and progress, and the best epoch's weights. Every write is atomic."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def __repr__(self) -> str:
        return f"RunState({str(self.folder)!r})"

    def read_progress(self) -> dict[str, Any] | None:
        """What has been completed, or None before the first epoch was saved."""
        progress: dict[str, Any] | None = _read_json(self.folder / PROGRESS,
                                                     fix="start the run again with a new --out")
        return progress

    def save(self, weights: dict[str, torch.Tensor], optimizer: dict[str, Any],
             progress: dict[str, Any]) -> None:
        """The last epoch's weights, then the optimizer, then the progress: progress never runs ahead."""
        atomic_save_tensors(self.folder / LAST, weights)
        buf = io.BytesIO()
        torch.save(optimizer, buf)
        atomic_write_bytes(self.folder / OPTIMIZER, buf.getvalue())
        atomic_write_json(self.folder / PROGRESS, progress)

    def save_best(self, weights: dict[str, torch.Tensor]) -> None:
        atomic_save_tensors(self.folder / BEST, weights)

    def last_weights(self) -> dict[str, torch.Tensor] | None:
        """The last completed epoch's weights, or None before the first."""
        path = self.folder / LAST
        return load_file(str(path)) if path.is_file() else None

    def best_weights(self) -> dict[str, torch.Tensor]:
        path = self.folder / BEST
        if not path.is_file():
            raise CheckpointError("no best epoch was saved", fix="resume the run with --resume, or start "
                                  "it again with a new --out", path=path)
        return load_file(str(path))

    def optimizer(self) -> dict[str, Any] | None:
        """What `save` stored as the optimizer's state, or None."""
        path = self.folder / OPTIMIZER
        return torch.load(path, map_location="cpu", weights_only=True) if path.is_file() else None


def _read_json(path: Path, fix: str) -> Any:  # noqa: ANN401 - parsed JSON, any shape
    """A JSON file, or None when it is not there; a damaged one is a CheckpointError with `fix`."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path.name} ({exc})", fix=fix, path=path) from exc


def load_run(directory: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Rebuild a trained classifier from a run folder: `RunDir(directory).load(device)`."""
    return RunDir(directory).load(device)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _pin(data: bytes) -> dict[str, Any]:
    return {"bytes": len(data), "sha256": _sha256(data)}
