"""Concept tests in the manner of TCAV (Kim et al. 2018) on folders of concept photos.

At a layer, a concept activation vector (CAV) is the normal of a linear classifier (scikit-learn's
logistic regression, liblinear's dual solver) separating the layer's activations of the concept
photos from those of a random set of photos, pointing towards the concept. A species' TCAV score is
the share of its photos whose species logit rises along the CAV (a positive directional derivative:
gradient · CAV > 0).

Significance: `runs` CAVs, each against its own random set, give `runs` scores per species; as many
random-vs-random CAVs (random set i against random set i+1) give the scores that a direction without
meaning gets. A two-sided t-test (scipy) between the two gives the p-value. A concept *moves* a
species when p < alpha and its mean score is above the random mean (the concept raises the score);
below it, the concept counts against the species, which is reported but is no shortcut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from monkeysee.data.folders import is_sidecar, iter_photos
from monkeysee.data.preprocess import Preprocess
from monkeysee.errors import ConfigError, DataError
from monkeysee.explain.batches import PhotoBatches
from monkeysee.models.forward import forward_pass
from monkeysee.models.hooks import resolve_layer
from monkeysee.runtime import checked_precision

RUNS = 10
ALPHA = 0.01
POOL = 400  # random photos read at most: the random sets are drawn from these


@dataclass(frozen=True)
class LayerReader:
    """Runs photos through `model` and reads `layer`'s activations (and, with targets, the gradient
    of each photo's target logit there), flattened per photo."""

    model: nn.Module
    preprocess: Preprocess
    layer: str
    batch_size: int = 32
    precision: str = "fp32"

    def read(self, paths: Sequence[str | Path], targets: Sequence[int] | None = None
             ) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
        """(activations (N, D), gradients (N, D) or None, indices of the photos read) of `paths`."""
        name, module = resolve_layer(self.model, self.layer)
        param = next(self.model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        precision = checked_precision(self.precision, device)
        acts, grads, kept = [], [], []
        for indices, x in PhotoBatches(paths, self.preprocess, self.batch_size, device=device):
            t = None if targets is None else [targets[i] for i in indices]
            p = forward_pass(self.model, x, layer=(name, module), targets=t, gradients=t is not None,
                             precision=precision)
            assert p.activation is not None
            acts.append(p.activation.flatten(1).cpu().numpy())
            if p.gradients is not None:
                grads.append(p.gradients.flatten(1).cpu().numpy())
            kept += indices
        if not kept:
            raise DataError(f"none of the {len(paths)} photos could be read", fix="check the photo folder",
                            path=str(paths[0]) if paths else None)
        return np.concatenate(acts), np.concatenate(grads) if grads else None, kept


def concept_vector(concept: np.ndarray, random: np.ndarray, seed: int = 0) -> np.ndarray:
    """The unit CAV: the normal of a logistic regression separating `concept` rows (label 1) from
    `random` rows (label 0), pointing towards the concept."""
    from sklearn.linear_model import LogisticRegression

    x = np.concatenate([concept, random]).astype(np.float64)
    x /= np.linalg.norm(x, axis=1).mean() + np.finfo(np.float64).tiny  # one scale for all: same direction,
    y = np.r_[np.ones(len(concept)), np.zeros(len(random))]  # a well-conditioned solve
    # liblinear's dual solver: its cost grows with the photos, not with the layer's size (D >> N here).
    clf = LogisticRegression(solver="liblinear", dual=True, max_iter=1000, random_state=seed).fit(x, y)
    v = clf.coef_[0].astype(np.float64)
    return v / (np.linalg.norm(v) + np.finfo(np.float64).tiny)


def tcav_scores(gradients: np.ndarray, labels: np.ndarray, cav: np.ndarray, classes: int) -> np.ndarray:
    """Per class k: the share of class-k rows whose gradient · cav is positive (NaN without rows).
    `gradients` row i is d(logit of class labels[i])/d(activation) of photo i."""
    positive = (gradients.astype(np.float64) @ cav) > 0
    return np.array([positive[labels == k].mean() if (labels == k).any() else np.nan
                     for k in range(classes)])


@dataclass(frozen=True)
class ConceptResult:
    """One concept at one layer: per species the mean TCAV score, the random directions' mean, the
    two-sided t-test p-value and whether the concept moves the species (see the module docstring)."""

    concept: str
    layer: str
    photos: int
    scores: list[float]
    random_scores: list[float]
    p_values: list[float]
    moves: list[bool]
    runs: int
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConceptResult:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__})


def significance(concept: np.ndarray, random: np.ndarray) -> np.ndarray:
    """Two-sided t-test p-value per column of (runs, classes) score tables; 1 where both are constant
    and equal (no evidence either way), 0 where they are constant and differ."""
    import warnings

    from scipy.stats import ttest_ind

    with warnings.catch_warnings():  # constant columns (every photo one way) are handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        p = np.asarray(ttest_ind(concept, random, axis=0).pvalue, dtype=np.float64)
    same = np.isclose(concept.std(0), 0) & np.isclose(random.std(0), 0)
    p[same] = np.where(np.isclose(concept.mean(0), random.mean(0)), 1.0, 0.0)[same]
    return np.where(np.isnan(p), 1.0, p)


def run_concept_tests(
    reader: LayerReader,
    concepts: Mapping[str, Sequence[Path]],
    random_pool: Sequence[Path],
    scored: Sequence[tuple[Path, int]],
    classes: int,
    runs: int = RUNS,
    alpha: float = ALPHA,
    seed: int = 0,
) -> list[ConceptResult]:
    """TCAV of each concept (name -> its photos) for the `scored` photos (path, species index), against
    `runs` random sets drawn (seeded) from `random_pool`, each as large as the concept set."""
    if runs < 2:
        raise ConfigError(f"runs must be at least 2 for a t-test, not {runs}", fix="use 10 or more")
    _, grads, kept = reader.read([p for p, _ in scored], [t for _, t in scored])
    assert grads is not None
    labels = np.array([scored[i][1] for i in kept])
    rng = np.random.default_rng(seed)
    if len(random_pool) > POOL:
        random_pool = [random_pool[i] for i in sorted(rng.choice(len(random_pool), POOL, replace=False))]
    pool_acts = reader.read(random_pool)[0]
    results = []
    for name, photos in concepts.items():
        concept_acts = reader.read(photos)[0]
        n = min(len(concept_acts), len(pool_acts) // 2)
        if n < 2:
            raise DataError(f"too few photos for concept {name!r} ({len(concept_acts)}) or random photos "
                            f"({len(pool_acts)})", fix="give at least 2 concept photos and 4 random photos")
        sets = [pool_acts[rng.choice(len(pool_acts), n, replace=False)] for _ in range(runs)]
        def scores(positive: np.ndarray, negative: np.ndarray) -> np.ndarray:
            return tcav_scores(grads, labels, concept_vector(positive, negative, seed), classes)

        concept_scores = np.stack([scores(concept_acts[:n], r) for r in sets])
        random_scores = np.stack([scores(sets[i], sets[(i + 1) % runs]) for i in range(runs)])
        p = significance(concept_scores, random_scores)
        mean_c, mean_r = np.nanmean(concept_scores, 0), np.nanmean(random_scores, 0)
        results.append(ConceptResult(
            name, reader.layer, len(concept_acts), _floats(mean_c), _floats(mean_r), _floats(p),
            [bool(pk < alpha and c > r) for pk, c, r in zip(p, mean_c, mean_r, strict=True)], runs, alpha))
    return results


def _floats(a: np.ndarray) -> list[float]:
    return [round(float(v), 6) for v in a]


def concept_photos(folder: Path) -> list[Path]:
    """The photos of a concept folder (sorted), refused when there are none."""
    if not folder.is_dir():
        raise DataError("concept folder not found", fix="pass folders of concept photos, e.g. face/ mesh/",
                        path=folder)
    photos = sorted(p for p in iter_photos(folder) if not is_sidecar(p))
    if len(photos) < 2:
        raise DataError(f"{len(photos)} photos in the concept folder", path=folder,
                        fix="put at least 2 (better 30 or more) photos showing the concept in it")
    return photos


def concepts_for_run(run_dir: str | Path, folders: Sequence[Path], random: Path | None = None,
                     layer: str | None = None, split: str = "test", data: str | Path | None = None,
                     runs: int = RUNS, alpha: float = ALPHA, precision: str = "auto",
                     batch_size: int = 32) -> list[ConceptResult]:
    """Concept tests of a run on a split's photos, random sets drawn from `random` (a folder) or else
    from the run's training photos; stored in the split's evaluation folder (`EvalFolder.concepts`)."""
    from monkeysee.explain.shortcuts import run_photos
    from monkeysee.rundir import RunDir

    run = RunDir(run_dir)
    loaded = run.load()
    reader = LayerReader(loaded.model, loaded.manifest.preprocess, layer or loaded.manifest.explain_layer,
                         batch_size, precision)
    pool = (concept_photos(random) if random is not None
            else [p for p, _ in run_photos(run_dir, "train", data)])
    concepts = {f.name: concept_photos(f) for f in folders}
    results = run_concept_tests(reader, concepts, pool, run_photos(run_dir, split, data),
                                loaded.manifest.num_classes, runs, alpha, seed=loaded.manifest.seed)
    folder = run.eval(split)
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.write_json(folder.concepts, {"split": split, "random": str(random) if random else "train photos",
                                        "concepts": [r.to_dict() for r in results]})
    return results
