"""The species map: the pooled features (the head's input) of a run's training, validation and test photos
laid out in two dimensions, so a person sees where the species sit in the network's feature space, which
overlap, where the test mistakes fall and which photos the unknown detector calls "not one of my species".

`compute_species_map` gathers the features without a second pass where it can (the training and
validation photos from the run's feature store, the test photos from what `evaluate` stored), embeds
them with a registered method (openTSNE by default; see `benchmarks/species_map.py`) under a fixed seed, and
`SpeciesMap.save` stores the coordinates and marks in the evaluation folder for the report and
`monkeysee map` to draw.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monkeysee.data.layout import Sample
from monkeysee.errors import CheckpointError, DataError
from monkeysee.evaluate.interpret import Interpretation
from monkeysee.evaluate.runner import predict_samples, write_features
from monkeysee.io import atomic_write_bytes
from monkeysee.predict import Predictor
from monkeysee.registry import Registry
from monkeysee.rundir import EvalFolder, RunDir
from monkeysee.train.stored import stored_pooled

FORMAT = "monkeysee-species-map"
SPLITS = ("train", "val", "test")  # split codes stored per point: 0, 1, 2
DEFAULT_METHOD = "tsne"  # measured against umap in benchmarks/species_map.py (see README)

Embed = Callable[[np.ndarray, int], np.ndarray]
MAP_METHODS: Registry[Embed] = Registry("map method")


@MAP_METHODS.register("umap")
def umap_embedding(features: np.ndarray, seed: int) -> np.ndarray:
    """UMAP (umap-learn) with cosine distances; a fixed `random_state` makes it deterministic (and
    single-threaded). Its numba kernels compile on first use in each process."""
    import umap

    reducer = umap.UMAP(n_neighbors=min(15, len(features) - 1), min_dist=0.1, metric="cosine",
                        random_state=seed, n_jobs=1)
    return np.asarray(reducer.fit_transform(features), dtype=np.float32)


@MAP_METHODS.register("tsne")
def tsne_embedding(features: np.ndarray, seed: int) -> np.ndarray:
    """openTSNE (FFT-accelerated t-SNE) with cosine distances, seeded, on one thread so that the seed
    alone decides the result."""
    from openTSNE import TSNE

    perplexity = min(30.0, max(1.0, (len(features) - 1) / 3))  # openTSNE needs 3 x perplexity neighbours
    tsne = TSNE(perplexity=perplexity, metric="cosine", random_state=seed, n_jobs=1)
    return np.asarray(tsne.fit(features), dtype=np.float32)


def embed(features: np.ndarray, method: str = DEFAULT_METHOD, seed: int = 0) -> np.ndarray:
    """2-D coordinates of `features` (one row per photo) by `method`, the same for the same seed."""
    run = MAP_METHODS.get(method)
    if len(features) < 3:
        raise DataError(f"a map needs at least 3 photos, not {len(features)}", fix="evaluate more photos")
    return run(np.ascontiguousarray(features, dtype=np.float32), seed)


@dataclass(frozen=True, eq=False)
class SpeciesMap:
    """One point per photo: its 2-D place `xy`, true species `target`, predicted species `predicted`,
    split code (`SPLITS`), whether it is a test mistake and whether the detector rejects it."""

    xy: np.ndarray
    target: np.ndarray
    predicted: np.ndarray
    split: np.ndarray
    mistake: np.ndarray
    unknown: np.ndarray
    paths: list[str]
    method: str = DEFAULT_METHOD
    seed: int = 0
    info: dict[str, Any] = field(default_factory=dict)  # seconds, photos per split, ...

    def __len__(self) -> int:
        return len(self.paths)

    def save(self, folder: EvalFolder) -> Path:
        """The arrays as .npz and the paths and settings as .json beside them, each written atomically."""
        stem = folder.species_map
        buf = io.BytesIO()
        np.savez_compressed(buf, xy=self.xy, target=self.target, predicted=self.predicted, split=self.split,
                            mistake=self.mistake, unknown=self.unknown)
        meta = {"format": FORMAT, "method": self.method, "seed": self.seed, "info": self.info,
                "paths": self.paths}
        atomic_write_bytes(stem.with_name(stem.name + ".npz"), buf.getvalue())
        atomic_write_bytes(stem.with_name(stem.name + ".json"), json.dumps(meta).encode())
        return stem.with_name(stem.name + ".npz")

    @classmethod
    def load(cls, folder: EvalFolder) -> SpeciesMap | None:
        """The stored map, or None when there is none; a damaged one is a CheckpointError naming it."""
        stem = folder.species_map
        npz, meta_path = stem.with_name(stem.name + ".npz"), stem.with_name(stem.name + ".json")
        if not (npz.is_file() and meta_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            if meta.get("format") != FORMAT:
                raise ValueError(f"format is {meta.get('format')!r}, expected {FORMAT!r}")
            with np.load(npz, allow_pickle=False) as a:
                arrays = {k: a[k] for k in ("xy", "target", "predicted", "split", "mistake", "unknown")}
            if any(len(v) != len(meta["paths"]) for v in arrays.values()):
                raise ValueError("arrays and paths differ in length")
            return cls(**arrays, paths=list(meta["paths"]), method=str(meta["method"]),
                       seed=int(meta["seed"]), info=dict(meta.get("info", {})))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"the stored species map is damaged ({exc})",
                                  fix="run `monkeysee map RUN_DIR` again", path=npz) from exc


@dataclass(frozen=True, eq=False)
class MapPoints:
    """What a map is made of before it is laid out: features and marks, one row per photo."""

    features: np.ndarray
    target: np.ndarray
    predicted: np.ndarray
    split: np.ndarray
    mistake: np.ndarray
    unknown: np.ndarray
    paths: list[str]


def map_points(predictor: Predictor, run_dir: str | Path, data: str | Path | None = None,
               log: Callable[[str], None] = print) -> MapPoints:
    """The features and marks of the run's training and validation photos (from its feature store, any
    photo it lacks computed) and of its evaluated test photos (stored by `evaluate`, or computed).

    Test mistakes are exactly the stored predictions that are wrong; "not one of my species" is the
    run's detector's decision on each photo's features (none without a detector)."""
    rd = RunDir(run_dir)
    folder = rd.eval("test")
    interp = Interpretation.load(folder.predictions)  # a run not yet evaluated: the error says so
    index = rd.read_splits(data)
    parts = [_stored_or_computed(predictor, index.split(name), log) for name in SPLITS[:2]]
    test_feats = _test_features(predictor, folder, interp, log)
    feats = np.concatenate([p[0] for p in parts] + [test_feats]).astype(np.float32)
    targets = np.concatenate([p[1] for p in parts] + [interp.targets.astype(np.int64)])
    paths = [s for p in parts for s in p[2]] + list(interp.paths)
    split = np.concatenate([np.full(len(p[1]), i, dtype=np.int8) for i, p in enumerate(parts)]
                           + [np.full(len(interp), 2, dtype=np.int8)])
    logits = _logits(predictor, feats)
    predicted = logits.argmax(1)
    n_test = len(interp)
    predicted[-n_test:] = interp.preds  # the test photos' answers are the stored ones
    mistake = np.zeros(len(paths), dtype=bool)
    mistake[-n_test:] = interp.preds != interp.targets
    detector = predictor.detector
    unknown = (np.zeros(len(paths), dtype=bool) if detector is None
               else np.asarray(detector.is_unknown(logits, feats), dtype=bool))
    return MapPoints(feats, targets, predicted.astype(np.int64), split, mistake, unknown, paths)


def compute_species_map(predictor: Predictor, run_dir: str | Path, data: str | Path | None = None,
                        method: str = DEFAULT_METHOD, seed: int = 0,
                        log: Callable[[str], None] = print) -> SpeciesMap:
    """The run's species map (see `map_points`), laid out by `method` with `seed`, stored in eval/test/."""
    MAP_METHODS.check(method)
    t0 = time.perf_counter()
    points = map_points(predictor, run_dir, data, log)
    t1 = time.perf_counter()
    xy = embed(points.features, method, seed)
    t2 = time.perf_counter()
    counts = {name: int((points.split == i).sum()) for i, name in enumerate(SPLITS)}
    info = {"photos": counts, "features_seconds": round(t1 - t0, 2), "layout_seconds": round(t2 - t1, 2)}
    smap = SpeciesMap(xy, points.target, points.predicted, points.split, points.mistake, points.unknown,
                      points.paths, method, seed, info)
    smap.save(RunDir(run_dir).eval("test"))
    log(f"species map of {len(smap)} photos ({counts['train']} train, {counts['val']} val, {counts['test']} "
        f"test) by {method} in {t2 - t0:.1f} s")
    return smap


def species_map_of(predictor: Predictor, run_dir: str | Path, data: str | Path | None = None,
                   method: str = DEFAULT_METHOD, seed: int = 0, recompute: bool = False,
                   log: Callable[[str], None] = print) -> SpeciesMap:
    """The map stored in eval/test/ when it was laid out by `method` with `seed` (and `recompute` is
    off), else computed now and stored."""
    stored = None if recompute else SpeciesMap.load(RunDir(run_dir).eval("test"))
    if stored is not None and stored.method == method and stored.seed == seed:
        return stored
    return compute_species_map(predictor, run_dir, data, method, seed, log)


def _stored_or_computed(predictor: Predictor, samples: Sequence[Sample], log: Callable[[str], None]
                        ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Features, targets and paths of `samples`: read from the run's store, the rest computed; photos
    that cannot be read are left out."""
    feats, found = stored_pooled(predictor.run, samples)
    keep = found.copy()
    todo = [i for i in range(len(samples)) if not found[i] and Path(samples[i].path).is_file()]
    if todo:
        log(f"species map: computing the features of {len(todo)} photos the feature store lacks")
        _, fresh, kept, _ = predict_samples(predictor, [samples[i] for i in todo])
        rows = [todo[k] for k in kept]
        feats[rows] = fresh
        keep[rows] = True
    at = np.flatnonzero(keep).tolist()
    return (feats[at], np.array([samples[i].target for i in at], dtype=np.int64),
            [str(samples[i].path) for i in at])


def _test_features(predictor: Predictor, folder: EvalFolder, interp: Interpretation,
                   log: Callable[[str], None]) -> np.ndarray:
    """The evaluated test photos' features, in the stored predictions' order: stored by `evaluate`, or
    computed now (an evaluation made before features were stored) and stored."""
    if folder.features.is_file():
        feats = np.load(folder.features, allow_pickle=False)
        if len(feats) == len(interp):
            return feats.astype(np.float32)
    log(f"species map: computing the features of {len(interp)} test photos")
    samples = [Sample(Path(p), int(t)) for p, t in zip(interp.paths, interp.targets, strict=True)]
    _, feats, kept, _ = predict_samples(predictor, samples)
    if len(kept) != len(interp):
        raise DataError("some evaluated test photos can no longer be read",
                        fix="run `monkeysee evaluate RUN_DIR` again", path=folder.path)
    write_features(folder, feats)
    return feats.astype(np.float32)


@torch.no_grad()
def _logits(predictor: Predictor, feats: np.ndarray) -> np.ndarray:
    """The head's logits of pooled features."""
    head = predictor.run.model.head.fc
    weight, bias = head.weight.detach().float().cpu(), head.bias.detach().float().cpu()
    return (torch.from_numpy(feats) @ weight.T + bias).numpy()
