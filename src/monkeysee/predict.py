"""Naming species in photos with a trained run: batched, streamed, thread-safe, bad files as error rows.

Everything (species, preprocessing, backbone, unknown detector) comes from the run folder's manifest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from monkeysee.checkpoint import Manifest
from monkeysee.data.collection import read_collection, restricted
from monkeysee.data.dataset import decoded_batches
from monkeysee.data.images import display_path
from monkeysee.data.quality import Quality, assess
from monkeysee.data.species import Species
from monkeysee.data.taxonomy import Taxonomy
from monkeysee.data.transforms import eval_transform
from monkeysee.models.calibration import Calibration
from monkeysee.models.evidence import Evidence
from monkeysee.models.forward import ForwardPass, forward_pass
from monkeysee.models.hooks import resolve_layer
from monkeysee.models.ladder import SPECIES, LadderAnswer, Rung, climb, rungs
from monkeysee.models.unknown import softmax
from monkeysee.registry import Registry
from monkeysee.rundir import LoadedRun, RunDir, load_run
from monkeysee.runtime import checked_precision

TestView = Callable[[torch.Tensor], torch.Tensor]
TTA_VIEWS: Registry[TestView] = Registry("test-time view")
"""Extra views of a normalised batch for test-time augmentation. The species logits of all views are
averaged; the unknown score, quality verdict and heatmap stay those of the photo as taken, so the
detector's calibrated thresholds keep their meaning."""


@TTA_VIEWS.register("hflip")
def _hflip(x: torch.Tensor) -> torch.Tensor:
    return x.flip(-1)


@TTA_VIEWS.register("zoom")
def _zoom(x: torch.Tensor) -> torch.Tensor:
    """The central 87.5% of the frame, scaled back up to the input size (a 1.14x zoom)."""
    h, w = x.shape[-2:]
    dh, dw = round(h / 16), round(w / 16)
    crop = x[..., dh:h - dh, dw:w - dw]
    return torch.nn.functional.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False,
                                           antialias=False)


class Heatmapper(Protocol):
    """Draws heatmaps from a pass that hooked `layer` (e.g. `monkeysee.explain.Explainer`)."""

    layer: str | None

    def overlays_for(self, x: torch.Tensor, p: ForwardPass) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class Guess:
    """One candidate species for a photo."""

    index: int
    species: Species
    probability: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "label": self.species.label,
            "common_name": self.species.display_name,
            "latin_name": self.species.display_latin,
            "probability": round(self.probability, 6),
        }


@dataclass(frozen=True)
class Prediction:
    """The answer for one photo: top-k guesses and whether it looks like none of the known species.

    `error` is set (and `top` empty) when the photo could not be read.
    """

    source: str
    top: tuple[Guess, ...] = ()
    unknown: bool = False
    unknown_score: float | None = None
    error: str | None = None
    quality: Quality | None = None  # None when not assessed
    extras: dict[str, Any] = field(default_factory=dict)
    overlay: np.ndarray | None = field(default=None, repr=False, compare=False)  # heatmap on the photo
    rank: str | None = None  # the rank answered at ("species", "genus", "family", ...); None: no answer
    taxon: str | None = None  # the name answered at `rank`; the species' common name at species rank
    taxon_probability: float | None = None  # the probability of `taxon`: its species' summed
    unsure: bool = False  # no rank reached its threshold: said as "not one of my species"
    evidence: Evidence | None = None  # nearest training photos; None for a run without an evidence bank

    @property
    def best(self) -> Guess | None:
        return self.top[0] if self.top else None

    @property
    def retake(self) -> bool:
        """True when the photo is too poor for a trustworthy answer: take another (the species is a hint).
        An unknown verdict wins: a poor photo that still looks like no known species is that."""
        return self.quality is not None and not self.quality.ok and not self.unknown

    @property
    def verdict(self) -> str:
        """"error", "unknown" (not one of my species), "retake" (take another photo) or "species"."""
        if self.error is not None:
            return "error"
        return "unknown" if self.unknown else "retake" if self.retake else "unknown" if self.unsure \
            else "species"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"source": self.source}
        if self.error is not None:
            d["error"] = self.error
            return d
        best = self.top[0]
        d |= {
            "species": best.species.display_name,
            "latin_name": best.species.display_latin,
            "label": best.species.label,
            "probability": round(best.probability, 6),
            "unknown": self.unknown,
            "unknown_score": None if self.unknown_score is None else round(self.unknown_score, 6),
            "quality": None if self.quality is None else {"ok": self.quality.ok,
                                                         "problems": list(self.quality.problems)},
            "verdict": self.verdict,
            "top": [g.to_dict() for g in self.top],
            "rank": self.rank,
            "taxon": self.taxon,
            "taxon_probability": None if self.taxon_probability is None else round(self.taxon_probability, 6),
        }
        d["evidence"] = None if self.evidence is None else self.evidence.to_dict()
        return d

    def line(self) -> str:
        """One line for people: the species (or "not one of my species"), then the runners-up."""
        if self.error or self.best is None:
            return f"ERROR {self.error}"
        best, source = self.best, display_path(self.source)
        name = f"{best.species.display_name} ({best.species.display_latin})"
        head = f"{source}: {name} {best.probability:.1%}"
        if self.retake:
            why = ", ".join(self.quality.problems) if self.quality else ""
            head = (f"{source}: TAKE ANOTHER PHOTO ({why}); "
                    f"looks most like {best.species.display_name}, {best.probability:.1%}")
        elif self.unknown:
            head = (f"{source}: NOT ONE OF MY SPECIES "
                    f"(nearest: {best.species.display_name}, {best.probability:.1%})")
        elif self.unsure:
            head = (f"{source}: NOT ONE OF MY SPECIES (not sure enough at any rank; "
                    f"nearest: {best.species.display_name}, {best.probability:.1%})")
        elif self.rank not in (None, SPECIES):
            rest = ", ".join(f"{g.species.display_name} {g.probability:.0%}" for g in self.top)
            return (f"{source}: {self.rank} {self.taxon} {self.taxon_probability or 0:.1%}; "
                    f"the species is uncertain: {rest}")
        rest = ", ".join(f"{g.species.display_name} {g.probability:.1%}" for g in self.top[1:])
        check = "  | CHECK THIS ONE" if self.evidence is not None and self.evidence.check else ""
        return head + (f"  | then {rest}" if rest else "") + check


def answer_ladder(manifest: Manifest) -> tuple[tuple[Rung, ...] | None, tuple[float, ...]]:
    """The rungs and thresholds a run's manifest records; (None, ()) for a run trained without them. A run
    that records no `max_share` was trained when any taxon could be an answer."""
    if not manifest.ladder:
        return None, ()
    taxonomy = Taxonomy.from_dict(manifest.taxonomy) if manifest.taxonomy else None
    max_share = float(manifest.ladder.get("max_share", 1.0))
    ladder = rungs([s.label for s in manifest.species], taxonomy, max_share)
    return ladder, tuple(float(t) for t in manifest.ladder["thresholds"])


class Predictor:
    """Batched inference for one trained run. Safe to share between threads: every pass goes through
    `forward_pass`, which holds the model lock while its hooks are on the shared model."""

    def __init__(
        self,
        run: LoadedRun,
        precision: str = "auto",
        unknown_threshold: float | None = None,
        channels_last: bool = True,
        assess_quality: bool = True,
        tta: Sequence[str] = (),
        collection: str | Path | None = None,
    ) -> None:
        self.run = run
        self.assess_quality = assess_quality
        self.tta = tuple(tta)
        for name in self.tta:
            TTA_VIEWS.check(name)
        self.model = run.model.eval()
        self.device = next(self.model.parameters()).device
        self.precision = checked_precision(precision, self.device)
        self.transform = eval_transform(run.manifest.preprocess)
        self.species = run.manifest.species
        self.calibration = Calibration.from_dict(run.manifest.calibration) if run.manifest.calibration \
            else Calibration()
        self.detector = RunDir(run.directory).load_detector(run.manifest)
        if self.detector is not None and unknown_threshold is not None:
            self.detector = self.detector.with_threshold(unknown_threshold)
        self.ladder, self.thresholds = answer_ladder(run.manifest)
        self.collection = None if collection is None else read_collection(collection, self.species)
        self.evidence = RunDir(run.directory).load_evidence(run.manifest)
        self.channels_last = channels_last
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    @classmethod
    def from_run_dir(cls, run_dir: str | Path, device: str = "cpu", **kwargs: Any) -> Predictor:
        return cls(load_run(run_dir, device=device), **kwargs)

    def prepare(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """The model's input batch for decoded RGB photos, on its device and in its memory layout."""
        return self.as_input(torch.stack([self.transform(im) for im in images]))

    def as_input(self, x: torch.Tensor) -> torch.Tensor:
        """A normalised batch on the model's device and in its memory layout."""
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def forward(self, x: torch.Tensor, cam_layer: str | None = None) -> ForwardPass:
        """The one pass: logits and pooled features, plus `cam_layer`'s activation and the gradient of
        each photo's predicted logit when a heatmap is wanted."""
        layer = resolve_layer(self.model, cam_layer) if cam_layer else None
        return forward_pass(self.model, x, layer=layer, gradients=layer is not None,
                            precision=self.precision)

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and pooled features (what the unknown detectors look at) for a normalised batch."""
        p = self.forward(x.to(self.device))
        assert p.features is not None  # a Classifier always has them
        return p.logits.cpu(), p.features.cpu()

    def predict_images(
        self,
        images: Sequence[Image.Image],
        top_k: int = 3,
        sources: Sequence[str] | None = None,
        heatmaps: Heatmapper | None = None,
    ) -> list[Prediction]:
        """Predictions for already-decoded RGB images; with `heatmaps`, each carries its `overlay`, drawn
        from the same forward pass."""
        if not images:
            return []
        x = self.prepare(images)
        p = self.forward(x, heatmaps.layer if heatmaps is not None else None)
        assert p.features is not None  # a Classifier always has them
        names = sources or [f"image{i}" for i in range(len(images))]
        qualities = [self.assess(im) for im in images] if self.assess_quality else None
        logits = p.logits.cpu().numpy()
        species = self._tta_logits(x, p.logits).cpu().numpy() if self.tta else None
        preds = self.decide(logits, p.features.cpu().numpy(), names, top_k, qualities, species)
        if heatmaps is None:
            return preds
        return [replace(pred, overlay=o) for pred, o in zip(preds, heatmaps.overlays_for(x, p), strict=True)]

    def _tta_logits(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Mean logits over the photo and its `tta` views, one pass per view (memory of one batch).
        The temperature fitted on single views is applied to the mean as it is."""
        total = logits.float()
        for name in self.tta:
            total = total + self.forward(self.as_input(TTA_VIEWS.get(name)(x))).logits.float()
        return total / (len(self.tta) + 1)

    def assess(self, image: Image.Image) -> Quality:
        """Is the photo good enough for a trustworthy answer? "Too small" means under half the model's
        input size, so a photo is never judged against a resolution the model does not use."""
        return assess(image, min_short_side=max(1, self.run.manifest.preprocess.input_size // 2))

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated species probabilities (temperature-scaled softmax) for raw logits (N, classes)."""
        return softmax(self.calibration.apply(np.asarray(logits, dtype=np.float64)))

    def decide(
        self,
        logits: np.ndarray,
        feats: np.ndarray,
        sources: Sequence[str],
        top_k: int,
        qualities: Sequence[Quality | None] | None = None,
        species_logits: np.ndarray | None = None,
        collection: np.ndarray | None = None,
    ) -> list[Prediction]:
        """Top-k species, the unknown verdict and the photo-quality verdict, one row per photo.

        `species_logits` (test-time-augmented logits) replace `logits` for the species probabilities
        only; the unknown detector always scores the photo's own logits and features.

        A photo too poor to judge is called "not one of my species" only when it is unlike the known
        species even for a degraded photo (the detector's `poor_threshold`); otherwise the keeper is
        asked for another photo, with the species as a hint.

        A photo with a species verdict is answered on the answer ladder (`rank`, `taxon`); when no
        rank reaches its threshold it is "not one of my species" (`unsure`). `collection` (a mask of
        species; default the predictor's) restricts the species to those it holds (`data.collection`).
        """
        probs = self.probabilities(logits if species_logits is None else species_logits)
        mask = self.collection if collection is None else collection
        probs = restricted(probs, mask)
        k = max(1, min(top_k, probs.shape[1] if mask is None else int(mask.sum())))
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        poor = np.array([q is not None and not q.ok for q in (qualities or [None] * len(sources))])
        scores = unknown = None
        if self.detector is not None:
            scores = self.detector.score(logits, feats)
            unknown = self.detector.decide(scores, poor)
        answers = self.answers(probs)
        ranked = np.argsort(-probs, axis=1, kind="stable")[:, :2]
        evidence = self.evidence.bank.explain(feats, ranked) if self.evidence is not None else None
        out = []
        for i, src in enumerate(sources):
            top = tuple(Guess(int(j), self.species[j], float(probs[i, j])) for j in order[i])
            out.append(
                Prediction(
                    source=src,
                    top=top,
                    unknown=bool(unknown[i]) if unknown is not None else False,
                    unknown_score=float(scores[i]) if scores is not None else None,
                    quality=qualities[i] if qualities is not None else None,
                    evidence=evidence[i] if evidence is not None else None,
                )
            )
            if out[-1].verdict == SPECIES:
                a = answers[i]
                out[-1] = replace(out[-1], rank=a.rank, taxon=a.taxon, unsure=a.rank is None,
                                  taxon_probability=a.probability if a.rank else None)
        return out

    def answers(self, probs: np.ndarray) -> list[LadderAnswer]:
        """Each photo's answer on the ladder; a run trained before it had one answers every photo at
        species rank."""
        if self.ladder is None:
            top = probs.argmax(axis=1)
            return [LadderAnswer(SPECIES, self.species[j].display_name, float(probs[i, j]))
                    for i, j in enumerate(top)]
        found = climb(probs, self.ladder, self.thresholds)
        named = [self.species[int(j)].display_name for j in probs.argmax(axis=1)]
        return [replace(a, taxon=name) if a.rank == SPECIES else a
                for a, name in zip(found, named, strict=True)]

    def predict_paths(
        self,
        paths: Iterable[str | Path],
        top_k: int = 3,
        batch_size: int = 16,
        workers: int = 2,
        heatmaps: Heatmapper | None = None,
    ) -> Iterator[Prediction]:
        """Stream predictions for any number of photo paths, in order; a bad file yields an error row.
        Photos are decoded no larger than the model needs (see `data.images.load_rgb`)."""
        for batch in decoded_batches(paths, batch_size, workers, self.run.manifest.preprocess):
            good = [(src, im) for src, im in batch if isinstance(im, Image.Image)]
            preds = iter(self.predict_images([im for _, im in good], top_k, [s for s, _ in good], heatmaps))
            for src, im in batch:
                yield next(preds) if isinstance(im, Image.Image) else Prediction(source=src, error=im)
