"""Finding the photos of a data set and splitting them into train / validation / test.

Two layouts are understood:

* Kaggle: `root/training/<label>/...`, optional `root/validation/<label>/...` and an optional labels
  file in `root` (`monkey_labels.txt` or any `*labels*.txt`);
* folder-per-class: `root/<label>/...`.

The held-out `test` split is always carved from training photos, so that the numbers reported at the
end were never seen while training or choosing the epoch. Carving is seeded and stratified per class
and independent of filesystem order; each class is shuffled by its own generator, so adding a class
leaves the splits of the others as they were.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from monkeysee.data.copies import copy_groups, digest
from monkeysee.data.images import is_sidecar, iter_photos, load_rgb
from monkeysee.data.labels import read_labels_file
from monkeysee.data.species import Species
from monkeysee.errors import ConfigError, DataError, ImageError

SPLITS = ("train", "val", "test")
_TRAIN_DIRS = ("training", "train")
_VAL_DIRS = ("validation", "valid", "val")
_INDEX_VERSION = 1
_CHUNK = 4096  # photos decoded per batch of thread-pool work
_LAYOUT_FIX = "arrange photos as DIR/<species>/photo.jpg or DIR/training/<species>/photo.jpg"


@dataclass(frozen=True)
class Sample:
    """One usable photo and the index of its species in `DataIndex.species`."""

    path: Path
    target: int


@dataclass(frozen=True)
class Skipped:
    """A file found in a class folder that could not be used, and why."""

    path: Path
    reason: str


@dataclass
class DataIndex:
    """Everything a run needs to know about its data: species, split membership and what was left out."""

    root: Path
    species: list[Species]
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    val_source: str = "carved"

    def split(self, name: str) -> list[Sample]:
        """The samples of 'train', 'val' or 'test'."""
        if name not in SPLITS:
            raise ConfigError(f"unknown split {name!r}", fix=f"choose one of: {', '.join(SPLITS)}")
        return getattr(self, name)

    def relative(self, path: Path) -> str:
        """`path` relative to the data root, with '/' separators, as recorded in manifests."""
        try:
            return Path(path).relative_to(self.root).as_posix()
        except ValueError:
            return Path(path).as_posix()

    def fingerprint(self) -> str:
        """sha256 over 'relative_path, size, label, split' of every sample, as the files are now.

        Cheap (one stat per file), independent of where the data lives, and it changes when a photo is
        added, removed, resized on disk, relabelled or moved to another split. A missing file counts
        as size -1.
        """
        lines = []
        for name in SPLITS:
            for s in self.split(name):
                try:
                    size = s.path.stat().st_size
                except OSError:
                    size = -1
                lines.append(f"{self.relative(s.path)}\t{size}\t{self.species[s.target].label}\t{name}")
        digest = hashlib.sha256()
        for line in sorted(lines):
            digest.update(line.encode("utf-8", "surrogateescape") + b"\n")  # names need not be UTF-8
        return digest.hexdigest()

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {species label: number of photos}}, with zeros for species a split lacks."""
        out = {}
        for name in SPLITS:
            per = Counter(s.target for s in self.split(name))
            out[name] = {sp.label: per.get(i, 0) for i, sp in enumerate(self.species)}
        return out

    def to_json(self) -> dict[str, Any]:
        """JSON-ready record of species and split membership (relative paths), to reproduce a run."""
        return {
            "version": _INDEX_VERSION,
            "root": str(self.root),
            "val_source": self.val_source,
            "species": [sp.to_dict() for sp in self.species],
            "splits": {
                name: {
                    sp.label: [self.relative(s.path) for s in self.split(name) if s.target == i]
                    for i, sp in enumerate(self.species)
                }
                for name in SPLITS
            },
            "skipped": [{"path": self.relative(s.path), "reason": s.reason} for s in self.skipped],
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any], root: str | Path) -> DataIndex:
        """Rebuild an index written by `to_json`, with paths under `root` (which may have moved)."""
        root = Path(root)
        try:
            if d.get("version") != _INDEX_VERSION:
                raise ValueError(f"version {d.get('version')!r}, expected {_INDEX_VERSION}")
            species = [Species.from_dict(x) for x in d["species"]]
            target = {sp.label: i for i, sp in enumerate(species)}
            splits: dict[str, list[Sample]] = {}
            for name in SPLITS:
                splits[name] = [
                    Sample(root / rel, target[label])
                    for label, rels in d["splits"][name].items()
                    for rel in rels
                ]
            skipped = [Skipped(root / x["path"], str(x["reason"])) for x in d.get("skipped", [])]
            return cls(
                root=root,
                species=species,
                **splits,
                skipped=skipped,
                warnings=[str(w) for w in d.get("warnings", [])],
                val_source=str(d["val_source"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(
                f"data index record is malformed ({type(exc).__name__}: {exc})",
                fix="re-create it with scan_dataset, or use the run folder it came from",
            ) from None


def scan_dataset(
    root: str | Path,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.15,
    seed: int = 0,
    labels_file: Path | None = None,
    workers: int = 4,
    verify: bool = True,
    min_species: int = 1,
    need_val: bool = False,
) -> DataIndex:
    """Find species and photos under `root`, drop unreadable files, and split the rest.

    `val_fraction` and `test_fraction` are fractions of each class's training photos (see `_carve`).
    With `verify` (the default) every file is decoded once, in `workers` threads, so unreadable files
    land in `skipped` now rather than crashing an epoch later; `verify=False` trusts every file (for
    quick looks such as the augmentation preview). Fewer than `min_species` class folders is refused
    before any photo is read (a classifier needs two species to tell apart).
    """
    _check_fractions(val_fraction, test_fraction)
    if workers < 1:
        raise ConfigError(f"workers must be at least 1, not {workers}", fix="pass a positive number")
    root = Path(root)
    if not root.exists():
        raise DataError("data folder not found", fix="check the path passed as the data folder", path=root)
    if not root.is_dir():
        raise DataError("data path is a file, not a folder", fix=_LAYOUT_FIX, path=root)

    train_dir = _first_dir(root, _TRAIN_DIRS) or root
    val_dir = _first_dir(root, _VAL_DIRS) if train_dir != root else None
    warnings: list[str] = []
    labels = _class_dirs(train_dir, warnings)
    if not labels:
        raise DataError("no class folders found", fix=_LAYOUT_FIX, path=train_dir)
    if len(labels) < min_species:
        raise DataError(
            f"only {len(labels)} species folder ({', '.join(labels)}); a classifier needs at least "
            f"{min_species} species to tell apart",
            fix="add a folder of photos for each other species (DIR/<species>/photo.jpg)", path=train_dir)
    if val_dir is not None:
        _check_same_classes(labels, _class_dirs(val_dir, warnings), train_dir, val_dir)

    if need_val and val_dir is None and val_fraction <= 0:
        raise ConfigError("val_fraction is 0 and there is no validation folder, so nothing would be left "
                          "for early stopping and calibration",
                          fix="pass --val-fraction 0.1, or add DIR/validation/<species>/ folders")
    species = _species(root, labels, labels_file, warnings)
    train_files = {label: list(iter_photos(train_dir / label)) for label in labels}
    val_files = {label: list(iter_photos(val_dir / label)) for label in labels} if val_dir else {}

    skipped: list[Skipped] = []
    digests: dict[Path, str] = {}
    if verify:
        train_files, val_files, skipped, digests = _drop_unreadable(train_files, val_files, workers, warnings)
    _check_usable(labels, train_files, val_files, skipped, train_dir, val_dir, warnings)
    splits = _split(labels, train_files, val_files if val_dir is not None else None, val_fraction,
                    test_fraction, seed, warnings, digests)

    return DataIndex(
        root=root,
        species=species,
        **splits,
        skipped=skipped,
        warnings=warnings,
        val_source="carved" if val_dir is None else "folder",
    )


Files = dict[str, list[Path]]
"""Photo paths by species label."""


def _drop_unreadable(train_files: Files, val_files: Files, workers: int,
                     warnings: list[str]) -> tuple[Files, Files, list[Skipped], dict[Path, str]]:
    """Every file decoded once in `workers` threads: the readable ones, the others with the reason, and
    the readable ones' sha256."""
    all_files = [p for files in (*train_files.values(), *val_files.values()) for p in files]
    bad, digests = _unreadable(all_files, workers)
    skipped = [Skipped(p, bad[p]) for p in all_files if p in bad]
    if skipped:
        warnings.append(f"{len(skipped)} unreadable file(s) skipped; see the skipped list for each reason")
    return ({k: [p for p in v if p not in bad] for k, v in train_files.items()},
            {k: [p for p in v if p not in bad] for k, v in val_files.items()}, skipped, digests)


def _check_usable(labels: list[str], train_files: Files, val_files: Files, skipped: list[Skipped],
                  train_dir: Path, val_dir: Path | None, warnings: list[str]) -> None:
    """Refuse a species folder with no usable training photo; warn of an empty validation folder."""
    for label in labels:
        if not train_files[label]:
            n_bad = sum(1 for s in skipped if train_dir / label in s.path.parents)
            why = f" ({n_bad} unreadable file(s) skipped)" if n_bad else ""
            raise DataError(
                f"class folder has no usable photos{why}",
                fix="add photos of this species, or remove the folder",
                path=train_dir / label,
            )
        if val_dir is not None and not val_files[label]:
            warnings.append(
                f"validation folder {val_dir / label} has no usable photos; that class is not validated"
            )


def _split(labels: list[str], train_files: Files, val_files: Files | None, val_fraction: float,
           test_fraction: float, seed: int, warnings: list[str],
           digests: dict[Path, str]) -> dict[str, list[Sample]]:
    """Each species' training photos carved into train, test and (without a validation folder) val;
    copies are looked for only when something is carved (`digests`: the sha256 already taken)."""
    fractions = {"test": test_fraction}
    if val_files is None:
        fractions["val"] = val_fraction
    splits: dict[str, list[Sample]] = {name: [] for name in SPLITS}
    copies = 0
    carving = any(f > 0 for f in fractions.values())
    for target, label in enumerate(labels):
        ordered = sorted(train_files[label], key=str)
        groups = copy_groups(ordered, digests) if carving else [[p] for p in ordered]
        copies += sum(len(g) - 1 for g in groups)
        carved = _carve(groups, fractions, f"{seed}:{label}", label, warnings)
        for name, paths in carved.items():
            splits[name].extend(Sample(p, target) for p in paths)
        if val_files is not None:
            splits["val"].extend(Sample(p, target) for p in sorted(val_files[label], key=str))
    if copies:
        warnings.append(f"{copies} training photo(s) are byte-identical copies of another photo of their "
                        "species; each photo and its copies are kept in one split")
    return splits


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise ConfigError(f"{name} must be in [0, 1), not {value}", fix="pass e.g. 0.1")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction:g} leaves nothing to train on",
            fix="keep their sum well below 1 (e.g. 0.1 and 0.15)",
        )


def _first_dir(root: Path, names: Sequence[str]) -> Path | None:
    return next((root / n for n in names if (root / n).is_dir()), None)


def _class_dirs(folder: Path, warnings: list[str]) -> list[str]:
    """Sorted names of the visible sub-folders; loose files beside them are reported, not used."""
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise DataError(
            f"cannot list the folder ({exc.strerror})", fix="check its permissions", path=folder
        ) from None
    visible = [p for p in entries if not p.name.startswith(".") and p.name != "__MACOSX"]
    loose = [p for p in visible if p.is_file() and not is_sidecar(p)]
    if loose:
        warnings.append(
            f"{len(loose)} file(s) directly in {folder} are ignored (e.g. {loose[0].name}); "
            "put photos inside a folder named after their species"
        )
    return [p.name for p in visible if p.is_dir()]


def _check_same_classes(train: list[str], val: list[str], train_dir: Path, val_dir: Path) -> None:
    only_train, only_val = sorted(set(train) - set(val)), sorted(set(val) - set(train))
    if only_train or only_val:
        parts = []
        if only_train:
            parts.append(f"only in {train_dir.name}/: {', '.join(only_train)}")
        if only_val:
            parts.append(f"only in {val_dir.name}/: {', '.join(only_val)}")
        raise DataError(
            f"validation class folders differ from training ({'; '.join(parts)})",
            fix="give both folders the same species sub-folders, or remove the validation folder "
            "to carve validation photos from training",
            path=val_dir,
        )


def _find_labels_file(root: Path, warnings: list[str]) -> Path | None:
    preferred = root / "monkey_labels.txt"
    if preferred.is_file():
        return preferred
    found = sorted(p for p in root.glob("*labels*.txt") if p.is_file() and not p.name.startswith("."))
    if len(found) > 1:
        warnings.append(
            f"several labels files in {root}; using {found[0].name} (pass a labels file to choose)"
        )
    return found[0] if found else None


def _species(root: Path, labels: list[str], labels_file: Path | None, warnings: list[str]) -> list[Species]:
    """Species per class folder, named from the labels file where it has the folder."""
    path = Path(labels_file) if labels_file is not None else _find_labels_file(root, warnings)
    named = read_labels_file(path) if path is not None else {}
    if path is not None:
        unnamed = [label for label in labels if label not in named]
        if unnamed:
            warnings.append(
                f"class folder(s) {', '.join(unnamed)} missing from {path.name}; "
                "they are trained under their folder name (add rows to name them)"
            )
        unused = [label for label in named if label not in labels]
        if unused:
            warnings.append(
                f"{path.name} lists {', '.join(unused)} but there is no such class folder; "
                "those species are not trained (add their folders or remove the rows)"
            )
    return [named.get(label, Species(label=label, common_name=label)) for label in labels]


def _unreadable(paths: list[Path], workers: int) -> tuple[dict[Path, str], dict[Path, str]]:
    """Decode every file once, in threads (Pillow releases the GIL): {path: reason} for the failures, and
    {path: sha256} of the readable ones, taken while the file is fresh in the page cache (`copy_groups`
    needs it, and would otherwise read every photo a second time)."""

    def check(path: Path) -> tuple[str | None, str | None]:
        try:
            load_rgb(path)
            return None, digest(path)
        except ImageError as exc:
            return exc.problem, None

    bad: dict[Path, str] = {}
    digests: dict[Path, str] = {}
    with (
        ThreadPoolExecutor(max_workers=workers) as pool,
        tqdm(total=len(paths), desc="checking photos", unit="photo", disable=None, leave=False) as bar,
    ):
        # In chunks, so a million-photo set never holds a million pending futures at once.
        for start in range(0, len(paths), _CHUNK):
            chunk = paths[start : start + _CHUNK]
            for path, (reason, sha) in zip(chunk, pool.map(check, chunk), strict=True):
                bar.update()
                if reason is not None:
                    bad[path] = reason
                elif sha is not None:
                    digests[path] = sha
    return bad, digests


def _carve(
    groups: list[list[Path]], fractions: dict[str, float], rng_key: str, label: str, warnings: list[str]
) -> dict[str, list[Path]]:
    """Split one class, given as its sorted paths grouped by `copy_groups`: seeded shuffle of the groups,
    then `round(n * fraction)` photos per split.

    Copies of one photo (identical bytes) move as one, so a held-out photo is never a copy of a training
    photo; a split may then get one or two photos more than its share. Without copies the shuffle and
    the splits are those of a plain shuffle of the paths. Each split with a positive fraction gets at
    least one photo, and training keeps at least one; a class too small for that stays whole in
    training, with a warning.
    """
    wanted = {name: f for name, f in fractions.items() if f > 0}
    out: dict[str, list[Path]] = {name: [] for name in SPLITS}
    paths = sorted((p for g in groups for p in g), key=str)
    groups = list(groups)  # shuffled below: the caller's list stays as given
    if not wanted:
        out["train"] = list(paths)
        return out
    if len(groups) < len(wanted) + 1:
        names = " and ".join(["train", *wanted])
        copies = f" ({len(paths)} files, copies counted once)" if len(groups) < len(paths) else ""
        warnings.append(
            f"class {label} has only {len(groups)} usable photo(s){copies}, too few for one each in {names}; "
            f"all are used for training only, so it has no {' or '.join(wanted)} photos (add photos)"
        )
        out["train"] = list(paths)
        return out
    n = len(paths)
    sizes = {name: max(1, math.floor(n * f + 0.5)) for name, f in wanted.items()}
    while sum(sizes.values()) > n - 1:
        largest = max(sizes, key=lambda k: sizes[k])
        sizes[largest] -= 1
    random.Random(rng_key).shuffle(groups)
    start = 0
    for name in ("test", "val"):
        if name in sizes:
            taken: list[Path] = []
            # leave a group for each split still to fill and one for training
            last = len(groups) - 1 - (name == "test" and "val" in sizes)
            while len(taken) < sizes[name] and start < last:
                taken += groups[start]
                start += 1
            out[name] = sorted(taken, key=str)
    out["train"] = sorted((p for g in groups[start:] for p in g), key=str)
    return out
