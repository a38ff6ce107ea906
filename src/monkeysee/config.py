"""Typed training configuration: defaults here, optionally overridden by a JSON/TOML file, then by the
CLI. The config is resolved here once (`resolved`, `resumed`), every value checked by type and range
before any work, and written into every run folder and into the checkpoint manifest."""

from __future__ import annotations

import json
import math
import types
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Union, get_args, get_origin, get_type_hints

from monkeysee.data.augment import AugmentConfig
from monkeysee.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what `monkeysee train` does. See README for the recipe."""

    data: str | None = None
    out: str = "runs/monkeysee"
    backbone: str = "efficientnet_lite0"
    weights: str | None = None  # ImageNet weights file; None = the backbone's own source
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.15
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    views: int = 8  # augmented views per training photo computed once through the frozen layers
    batch_size: int = 64
    # Phase 1: frozen body, the new head learns.
    head_epochs: int = 30
    head_lr: float = 3e-3
    # Phase 2: the top `unfreeze` stages fine-tuned with a lower learning rate.
    finetune_epochs: int = 12
    unfreeze: int | None = None  # None = the backbone's default
    finetune_lr: float = 3e-4
    finetune_head_lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    class_weights: str = "inverse_sqrt"  # none | inverse_sqrt | inverse: species loss weight by photo count
    dropout: float = 0.2
    patience: int = 3  # epochs without validation improvement before a phase stops early
    precision: str = "auto"  # auto | bf16 | fp32
    device: str = "auto"
    workers: int = 2
    grow_from: str | None = None  # a finished run whose weights and head rows start this one
    store: str | None = None  # feature-store folder; None = `feature-store` beside the run folder
    unknown_detector: str = "knn_either"
    unknown_keep: float = 0.95  # fraction of known-species photos the threshold accepts
    unknown_calibration: str = "crossfit"  # crossfit (out-of-fold training + val photos) | val
    calibration: str = "temperature"  # temperature | none: how shown probabilities are made honest
    taxonomy: str | None = None  # CSV of the ranks above species; None = genus and family from Latin names
    answer_accuracy: float = 0.995  # how often answers are right at the rank given (the ladder's thresholds)
    answer_max_share: float = 0.5  # above species, a taxon holding more of the species is never an answer

    def __post_init__(self) -> None:
        """Every setting is checked here, before any photo is read or any layer computed."""
        _check_types(self)
        self._check_ranges()

    def _check_ranges(self) -> None:
        from monkeysee.models import get_backbone
        from monkeysee.models.balance import CLASS_WEIGHTS
        from monkeysee.models.unknown import DETECTORS
        from monkeysee.runtime import check_device

        checks = [  # (ok, setting, what it must be, an example)
            (0.0 <= self.val_fraction < 1.0, "val_fraction", "in [0, 1)", "0.1"),
            (0.0 <= self.test_fraction < 1.0, "test_fraction", "in [0, 1)", "0.15"),
            (self.val_fraction + self.test_fraction < 0.9, "val_fraction + test_fraction", "below 0.9",
             "0.1 and 0.15"),
            (self.views >= 0, "views", ">= 0", "4"),
            (self.batch_size >= 1, "batch_size", ">= 1", "64"),
            (self.head_epochs >= 1, "head_epochs", ">= 1", "30"),
            (self.finetune_epochs >= 0, "finetune_epochs", ">= 0", "12"),
            (self.unfreeze is None or self.unfreeze >= 1, "unfreeze", ">= 1", "2"),
            (self.head_lr > 0, "head_lr", "> 0", "3e-3"),
            (self.finetune_lr > 0, "finetune_lr", "> 0", "3e-4"),
            (self.finetune_head_lr > 0, "finetune_head_lr", "> 0", "1e-3"),
            (self.weight_decay >= 0, "weight_decay", ">= 0", "1e-4"),
            (0.0 <= self.label_smoothing < 1.0, "label_smoothing", "in [0, 1)", "0.1"),
            (0.0 <= self.dropout < 1.0, "dropout", "in [0, 1)", "0.2"),
            (self.patience >= 1, "patience", ">= 1", "3"),
            (self.workers >= 0, "workers", ">= 0 (0 decodes in the main process)", "2"),
            (0.0 < self.unknown_keep <= 1.0, "unknown_keep", "in (0, 1]", "0.95"),
            (self.precision in {"auto", "bf16", "fp32"}, "precision", "auto, bf16 or fp32", "auto"),
            (self.unknown_calibration in {"crossfit", "val"}, "unknown_calibration", "crossfit or val",
             "crossfit"),
            (self.calibration in {"temperature", "none"}, "calibration", "temperature or none",
             "temperature"),
            (0.5 <= self.answer_accuracy < 1.0, "answer_accuracy", "in [0.5, 1)", "0.995"),
            (0.0 < self.answer_max_share <= 1.0, "answer_max_share", "in (0, 1]", "0.5"),
        ]
        for ok, name, must, example in checks:
            if not ok:
                flag = "--" + name.replace("_", "-")
                value = getattr(self, name, None)
                shown = f", not {value!r}" if value is not None else ""
                raise ConfigError(f"{name} must be {must}{shown}",
                                  fix=f"pass e.g. {flag} {example} (or correct the config file)")
        get_backbone(self.backbone)
        DETECTORS.check(self.unknown_detector)
        CLASS_WEIGHTS.check(self.class_weights)
        check_device(self.device)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """The config of a file's settings (missing ones take their defaults); unknown or ill-typed
        settings are a ConfigError naming them."""
        if not isinstance(d, dict):
            raise ConfigError(f"a config holds named settings, not {type(d).__name__} {_shown(d)}",
                              fix='write a JSON object (e.g. {"head_epochs": 30}) or TOML key = value lines')
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise ConfigError(f"unknown setting(s) {', '.join(extra)}",
                              fix=f"use: {', '.join(sorted(known))}")
        d = dict(d)
        if isinstance(d.get("augment"), dict):
            d["augment"] = AugmentConfig.from_dict(d["augment"])
        return cls(**d)

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """Each setting's default value."""
        return cls().to_dict()

    @classmethod
    def from_recorded(cls, d: dict[str, Any]) -> TrainConfig:
        """The config a run folder recorded. A setting added after that run was trained takes the value
        that reproduces it (`RECORDED_BEFORE`), not today's default, so resuming or growing an older
        run keeps its recipe."""
        return cls.from_dict({**RECORDED_BEFORE, **d})

    def updated(self, **changes: Any) -> TrainConfig:
        """A copy with the non-None `changes` applied (how CLI flags override file values)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


RECORDED_BEFORE: dict[str, Any] = {"class_weights": "none", "answer_max_share": 1.0}
"""What a run recorded before a setting existed did: runs trained before class weights used none, and
before `answer_max_share` any taxon could be an answer."""

RESUMABLE = ("data", "workers", "device", "store", "unknown_detector", "unknown_keep", "unknown_calibration",
             "calibration", "taxonomy", "answer_accuracy", "answer_max_share")
"""Settings a resumed run may change: where the photos are, how it runs, and what is decided after the
last epoch. Anything else would mix two recipes in one model."""


def resolved(base: dict[str, Any], changes: dict[str, Any], *, recorded: bool = False) -> TrainConfig:
    """The config of `base` (a config file's settings, or with `recorded` a run's recorded config) with
    the non-None `changes` (command-line flags) applied, checked once as a whole."""
    merged = {**base, **{k: v for k, v in changes.items() if v is not None}}
    return TrainConfig.from_recorded(merged) if recorded else TrainConfig.from_dict(merged)


def resumed(recorded: dict[str, Any], given: dict[str, Any]) -> TrainConfig:
    """The config a run recorded with the non-None settings `given` to `--resume` applied (a new device,
    say, where it was trained on one this machine lacks), or a ConfigError naming a setting that would
    change what has already been computed."""
    if not isinstance(recorded, dict):
        raise ConfigError("the recorded config is not a set of named settings",
                          fix="start a new run with --out NEW_FOLDER")
    was = {**TrainConfig.defaults(), **RECORDED_BEFORE, **recorded}
    changed = {k: v for k, v in given.items() if v is not None and was.get(k) != v}
    fixed = sorted(k for k in changed if k not in RESUMABLE)
    if fixed:
        shown = ", ".join(f"--{k.replace('_', '-')} {changed[k]} (recorded: {was.get(k)})" for k in fixed)
        raise ConfigError(f"{shown} would change a run that is half done",
                          fix="drop those flags to resume with the recorded settings, or start a new run "
                              "with --out NEW_FOLDER")
    return resolved(recorded, changed, recorded=True)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kinds(hint: Any) -> tuple[Any, ...]:  # noqa: ANN401 - a type hint
    """The types a field's hint allows: `int | None` -> (int, NoneType)."""
    if get_origin(hint) in (Union, types.UnionType):
        return get_args(hint)
    return (hint,)


def _fits(value: object, kind: Any) -> bool:  # noqa: ANN401 - a type hint
    if kind is type(None):
        return value is None
    if kind is float:  # a whole number is a number too; booleans are not
        return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


_WORDS = {str: "text", int: "a whole number", float: "a finite number", type(None): "unset (null)",
          AugmentConfig: "a table of augmentation settings"}


def _check_types(cfg: TrainConfig) -> None:
    """Each setting of the type its field declares, or a ConfigError naming the setting and an example;
    a whole number where a fraction belongs is taken as that number."""
    hints = get_type_hints(TrainConfig)
    for f in fields(cfg):
        value, kinds = getattr(cfg, f.name), _kinds(hints[f.name])
        if not any(_fits(value, k) for k in kinds):
            must = " or ".join(_WORDS.get(k, getattr(k, "__name__", str(k))) for k in kinds)
            example = f.default if f.default is not MISSING and f.default is not None else None
            flag = "--" + f.name.replace("_", "-")
            fix = (f"pass e.g. {flag} {example}, or write {f.name} = {json.dumps(example)} in the config file"
                   if example is not None else f"pass {flag} with {must}, or correct the config file")
            raise ConfigError(f"{f.name} must be {must}, not {_shown(value)}", fix=fix)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            object.__setattr__(cfg, f.name, float(value))


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file (a run's own config.json works too)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("config file not found", fix="check the --config path", path=path)
    try:
        if path.suffix == ".toml":
            import tomllib

            values = tomllib.loads(path.read_text())
        else:
            values = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse config ({exc})", fix="write valid JSON or TOML", path=path) from exc
    if not isinstance(values, dict):
        raise ConfigError(f"the config file holds {type(values).__name__} {_shown(values)}, not settings",
                          fix='write a JSON object such as {"head_epochs": 30}, or TOML lines key = value',
                          path=path)
    return values
