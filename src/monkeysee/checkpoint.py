"""Self-describing checkpoints: weights in safetensors plus a JSON manifest with everything needed to
rebuild the model and its preprocessing, so nothing downstream re-declares labels or transforms.

This module says what a manifest holds; `monkeysee.rundir` is the one that reads and writes the files."""

from __future__ import annotations

import math
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeGuard

import torch
from safetensors.torch import save

from monkeysee import __version__
from monkeysee.data.preprocess import Preprocess
from monkeysee.data.species import Species
from monkeysee.errors import CheckpointError
from monkeysee.io import atomic_write_bytes

FORMAT = "monkeysee-checkpoint"
FORMAT_VERSION = 2  # 2: `files` pins every checkpoint file by size and sha256


@dataclass(frozen=True)
class Manifest:
    """What a trained model is: its species, backbone, preprocessing, and how it came to be."""

    backbone: str
    species: tuple[Species, ...]
    preprocess: Preprocess
    explain_layer: str
    dropout: float = 0.2
    seed: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    data_fingerprint: str = ""
    unknown: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"bytes", "sha256"}
    calibration: dict[str, Any] = field(default_factory=dict)  # how logits become honest probabilities
    taxonomy: dict[str, Any] | None = None  # the ranks above species (data.taxonomy.Taxonomy.to_dict)
    ladder: dict[str, Any] | None = None  # {accuracy, ranks, thresholds, source, max_share}: answer ladder

    @property
    def num_classes(self) -> int:
        return len(self.species)

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "backbone": self.backbone,
            "num_classes": self.num_classes,
            "species": [s.to_dict() for s in self.species],
            "preprocess": self.preprocess.to_dict(),
            "explain_layer": self.explain_layer,
            "dropout": self.dropout,
            "seed": self.seed,
            "config": self.config,
            "metrics": self.metrics,
            "data_fingerprint": self.data_fingerprint,
            "unknown": self.unknown,
            "versions": self.versions or library_versions(),
            "created": self.created or datetime.now(UTC).isoformat(timespec="seconds"),
            "files": self.files,
            "calibration": self.calibration,
            "taxonomy": self.taxonomy,
            "ladder": self.ladder,
        }

    @classmethod
    def from_dict(cls, d: Any, source: str | Path | None = None) -> Manifest:  # noqa: ANN401 - parsed JSON
        """The manifest a dict describes, after `validate_manifest(d, source)`."""
        validate_manifest(d, source)
        return cls(
            backbone=d["backbone"],
            species=tuple(Species.from_dict(s) for s in d["species"]),
            preprocess=Preprocess.from_dict(d["preprocess"]),
            explain_layer=d["explain_layer"],
            dropout=float(d.get("dropout", 0.2)),
            seed=int(d.get("seed", 0)),
            config=d.get("config", {}),
            metrics=d.get("metrics", {}),
            data_fingerprint=d.get("data_fingerprint", ""),
            unknown=d.get("unknown", {}),
            versions=d.get("versions", {}),
            created=d.get("created", ""),
            files=dict(d.get("files", {})),
            calibration=dict(d.get("calibration", {})),
            taxonomy=d.get("taxonomy"),
            ladder=d.get("ladder"),
        )

    def replace(self, **changes: Any) -> Manifest:
        from dataclasses import replace

        return replace(self, **changes)


# --- validation on load ------------------------------------------------------------------------------------

_REWRITE = "re-run training to write a new manifest, or copy the whole run folder again"
_SHA256 = re.compile(r"[0-9a-f]{64}")
Check = Callable[[Any], str | None]  # a problem with the value, or None when it is fine


def _number(v: Any) -> TypeGuard[float]:  # noqa: ANN401 - any parsed JSON value
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> TypeGuard[int]:  # noqa: ANN401 - any parsed JSON value
    return isinstance(v, int) and not isinstance(v, bool)


def _text(v: Any) -> str | None:  # noqa: ANN401 - any parsed JSON value
    return None if isinstance(v, str) else "must be text"


def _name(v: Any) -> str | None:  # noqa: ANN401 - any parsed JSON value
    return None if isinstance(v, str) and v.strip() else "must be a non-empty name"


def _mapping(v: Any) -> str | None:  # noqa: ANN401 - any parsed JSON value
    return None if isinstance(v, dict) else "must be a JSON object"


def _in_range(lo: float, hi: float, hi_open: bool = False) -> Check:
    def check(v: Any) -> str | None:  # noqa: ANN401 - any parsed JSON value
        inside = _number(v) and lo <= v and (v < hi if hi_open else v <= hi)
        return None if inside else f"must be a number in [{lo}, {hi}{')' if hi_open else ']'}, not {v!r}"
    return check


def _format(v: Any) -> str | None:  # noqa: ANN401 - any parsed JSON value
    return None if v == FORMAT else f"is {v!r}, not {FORMAT!r}: this is not a monkeysee checkpoint"


def _version(v: Any) -> str | None:  # noqa: ANN401 - any parsed JSON value
    if not _integer(v) or v < 1:
        return f"must be a whole number from 1 to {FORMAT_VERSION}, not {v!r}"
    return None if v <= FORMAT_VERSION else (
        f"is {v}: written by a newer monkeysee than this one, which reads versions up to {FORMAT_VERSION}")


def _seed(v: Any) -> str | None:  # noqa: ANN401 - any parsed JSON value
    return None if _integer(v) and v >= 0 else f"must be a whole number 0 or more, not {v!r}"


def _species(v: Any) -> str | None:  # noqa: ANN401 - any parsed JSON value
    if not isinstance(v, list) or not v:
        return "must be a non-empty list of species"
    if not all(isinstance(s, dict) and _name(s.get("label")) is None and isinstance(s.get("common_name"), str)
               for s in v):
        return "must hold a label and a common_name (text) for every species"
    labels = [s["label"] for s in v]
    return None if len(set(labels)) == len(labels) else "names a species label twice"


def _preprocess(v: Any) -> str | None:  # noqa: ANN401 - any parsed JSON value
    if not isinstance(v, dict):
        return "must be a JSON object"
    size, crop = v.get("input_size"), v.get("crop_pct")
    if not (_integer(size) and 8 <= size <= 4096):
        return f"input_size must be a whole number from 8 to 4096, not {size!r}"
    if not (_number(crop) and 0 < crop <= 1):
        return f"crop_pct must be a number in (0, 1], not {crop!r}"
    if not isinstance(v.get("interpolation"), str):
        return "interpolation must be text"
    for key in ("mean", "std"):
        values = v.get(key)
        if not (isinstance(values, list | tuple) and len(values) == 3 and all(map(_number, values))):
            return f"{key} must be three numbers, not {values!r}"
    return None if all(s > 0 for s in v["std"]) else "std must be above 0 for every channel"


def _files(v: Any) -> str | None:  # noqa: ANN401 - any parsed JSON value
    if not isinstance(v, dict):
        return "must be a JSON object"
    for name, pin in v.items():
        if "/" in name or "\\" in name or name.startswith("."):
            return f"names {name!r}, which is not a file of this run folder"
        if not (isinstance(pin, dict) and _integer(pin.get("bytes")) and pin["bytes"] >= 0
                and isinstance(pin.get("sha256"), str) and _SHA256.fullmatch(pin["sha256"])):
            return f"pins {name!r} without a byte count and a sha256"
    return None


def _taxonomy(v: Any) -> str | None:  # noqa: ANN401 - any parsed JSON value
    if not isinstance(v, dict) or set(v) != {"ranks", "lineage", "source"}:
        return "must be an object of ranks, lineage and source"
    ranks, lineage = v["ranks"], v["lineage"]
    if not (isinstance(ranks, list) and ranks and all(_name(r) is None for r in ranks)):
        return "ranks must be a non-empty list of rank names"
    if not (isinstance(lineage, dict) and all(
            isinstance(t, list) and len(t) == len(ranks) and all(_name(n) is None for n in t)
            for t in lineage.values())):
        return f"lineage must give every species one name for each of its {len(ranks)} ranks"
    return _text(v["source"])


def _ladder(v: Any) -> str | None:  # noqa: ANN401 - any parsed JSON value
    if not isinstance(v, dict) or set(v) - {"max_share"} != {"accuracy", "ranks", "thresholds", "source"}:
        return "must be an object of accuracy, ranks, thresholds, source and (optionally) max_share"
    ranks, thresholds = v["ranks"], v["thresholds"]
    if "max_share" in v and not (_number(v["max_share"]) and 0 < v["max_share"] <= 1):
        return f"max_share must be in (0, 1], not {v['max_share']!r}"
    if not (_number(v["accuracy"]) and 0 < v["accuracy"] < 1):
        return f"accuracy must be in (0, 1), not {v['accuracy']!r}"
    if not (isinstance(ranks, list) and ranks and ranks[0] == "species"
            and all(_name(r) is None for r in ranks)):
        return "ranks must list rank names, species first"
    if not (isinstance(thresholds, list) and len(thresholds) == len(ranks)
            and all(_number(t) and 0.5 <= t <= 1.001 for t in thresholds)):
        return f"thresholds must give each of the {len(ranks)} ranks a number in [0.5, 1]"
    return _text(v["source"])


def _optional(check: Check) -> Check:
    return lambda v: None if v is None else check(v)


_UNKNOWN: dict[str, Check] = {
    "name": _name,
    "threshold": lambda v: None if _number(v) else f"must be a finite number, not {v!r}",
    "keep": _optional(lambda v: None if _number(v) and 0 < v <= 1 else f"must be in (0, 1], not {v!r}"),
    "poor_threshold": _optional(lambda v: None if _number(v) else f"must be a finite number, not {v!r}"),
    "params": _mapping,
    "arrays": lambda v: None if isinstance(v, list) and all(isinstance(a, str) for a in v)
    else "must be a list of array names",
}
_CALIBRATION: dict[str, Check] = {
    "method": lambda v: None if v == "temperature" else f"is {v!r}; only 'temperature' is known",
    "temperature": lambda v: None if _number(v) and v > 0 else f"must be a number above 0, not {v!r}",
}


def _section(schema: dict[str, Check], required: tuple[str, ...]) -> Callable[[Any, str], None]:
    """A check of a nested object (empty allowed: the run has none) against `schema`."""
    def check(v: Any, where: str) -> None:  # noqa: ANN401 - any parsed JSON value
        problem = _mapping(v)
        if problem is None and v:
            missing = [k for k in required if k not in v]
            if missing:
                raise _ManifestField(f"{where}.{missing[0]}", "is missing")
            for key, value in v.items():
                if key not in schema:
                    raise _ManifestField(f"{where}.{key}", "is not part of a monkeysee manifest")
                problem = schema[key](value)
                if problem:
                    raise _ManifestField(f"{where}.{key}", problem)
        elif problem:
            raise _ManifestField(where, problem)
    return check


# Field -> (required, check). Every field a manifest may hold; any other is refused.
_FIELDS: dict[str, tuple[bool, Check]] = {
    "format": (True, _format),
    "format_version": (True, _version),
    "backbone": (True, _name),
    "num_classes": (False, lambda v: None if _integer(v) else f"must be a whole number, not {v!r}"),
    "species": (True, _species),
    "preprocess": (True, _preprocess),
    "explain_layer": (True, _name),
    "dropout": (False, _in_range(0.0, 1.0, hi_open=True)),
    "seed": (False, _seed),
    "config": (False, _mapping),
    "metrics": (False, _mapping),
    "data_fingerprint": (False, _text),
    "unknown": (False, _mapping),
    "versions": (False, _mapping),
    "created": (False, _text),
    "files": (False, _files),
    "calibration": (False, _mapping),
    "taxonomy": (False, _optional(_taxonomy)),
    "ladder": (False, _optional(_ladder)),
}
_SECTIONS = {"unknown": _section(_UNKNOWN, ("name", "threshold")),
             "calibration": _section(_CALIBRATION, ("temperature",))}


class _ManifestField(Exception):
    def __init__(self, name: str, problem: str, fix: str = _REWRITE) -> None:
        super().__init__(problem)
        self.name, self.problem, self.fix = name, problem, fix


def validate_manifest(d: Any, source: str | Path | None = None) -> None:  # noqa: ANN401 - parsed JSON
    """Refuse a manifest with a field of the wrong type or out of range, a field no manifest holds, or
    a format version this monkeysee does not read: a CheckpointError naming `source`, the field and
    the fix."""
    try:
        _validate(d)
    except _ManifestField as bad:
        raise CheckpointError(f"manifest field {bad.name!r} {bad.problem}", fix=bad.fix,
                              path=source) from None


def _validate(d: Any) -> None:  # noqa: ANN401 - parsed JSON
    if not isinstance(d, dict):
        raise _ManifestField("(top level)", "must be a JSON object")
    for key in d:
        if key not in _FIELDS:
            raise _ManifestField(key, "is not part of a monkeysee manifest",
                                 fix="remove that field, or re-run training")
    for key, (required, check) in _FIELDS.items():
        if key not in d:
            if required:
                raise _ManifestField(key, "is missing")
            continue
        problem = check(d[key])
        if problem:
            upgrade = key == "format_version" and _integer(d[key]) and d[key] > FORMAT_VERSION
            raise _ManifestField(key, problem, fix="upgrade monkeysee to read it" if upgrade else _REWRITE)
    for key, check_section in _SECTIONS.items():
        check_section(d.get(key, {}), key)
    lineage = (d.get("taxonomy") or {}).get("lineage", {})
    if lineage and set(lineage) != {s["label"] for s in d["species"]}:
        raise _ManifestField("taxonomy.lineage", "does not name exactly the species of the manifest")
    ladder = d.get("ladder")
    if ladder and ladder["ranks"][1:] != (d.get("taxonomy") or {}).get("ranks", []):
        raise _ManifestField("ladder.ranks", "must be species then the ranks of the taxonomy")
    if "num_classes" in d and d["num_classes"] != len(d["species"]):
        raise _ManifestField("num_classes",
                             f"is {d['num_classes']} but {len(d['species'])} species are listed")


def library_versions() -> dict[str, str]:
    import numpy
    import PIL
    import timm
    import torchvision

    return {
        "monkeysee": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
    }


def tensor_bytes(tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> bytes:
    """A safetensors file's bytes (contiguous CPU copies of `tensors`)."""
    return save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)


def atomic_save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None,
                        ) -> None:
    """safetensors file written atomically (temporary name, fsync, rename)."""
    atomic_write_bytes(path, tensor_bytes(tensors, metadata))
