"""Photos in, explanations out: the convenience layer the CLI, the web app and the report share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from monkeysee.data.preprocess import Preprocess
from monkeysee.data.species import Species
from monkeysee.data.transforms import denormalize, eval_transform
from monkeysee.errors import ConfigError
from monkeysee.explain.activations import layer_activations
from monkeysee.explain.engine import cams_from_pass, explain_pass
from monkeysee.explain.methods import DEFAULT_METHOD
from monkeysee.explain.result import CamResult
from monkeysee.explain.targets import TargetSpec, resolve_species
from monkeysee.models.forward import ForwardPass
from monkeysee.models.hooks import resolve_layer
from monkeysee.rundir import LoadedRun
from monkeysee.runtime import checked_precision

SpeciesQuery = str | int | None
"""A species by index, label, common or Latin name; None means each photo's prediction."""


@dataclass
class Explainer:
    """A model with its preprocessing, species and default layer, ready to explain PIL photos.

    Build it with `Explainer.from_run(load_run(run_dir))`, or directly for a plain backbone.
    `precision` ("auto", "bf16" or "fp32") is resolved once for the model's device: "auto" runs the
    model passes in bf16 where the hardware has it, as prediction does; maps are formed in float32.
    The `monkeysee explain` CLI passes "auto"; the default here is "fp32", so that unless asked
    otherwise the maps equal those of a plain `explain()` call bit for bit.
    """

    model: nn.Module
    preprocess: Preprocess
    species: tuple[Species, ...] = ()
    layer: str | None = None
    precision: str = "fp32"
    _transform: object = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.layer = resolve_layer(self.model, self.layer)[0]  # fail early on a bad name
        param = next(self.model.parameters(), None)
        self.precision = checked_precision(self.precision, param.device if param is not None else "cpu")
        self._transform = eval_transform(self.preprocess)

    @classmethod
    def from_run(cls, run: LoadedRun, layer: str | None = None, precision: str = "fp32") -> Explainer:
        """Use the run's model, preprocessing, species and recorded explanation layer."""
        return cls(
            run.model,
            run.manifest.preprocess,
            tuple(run.manifest.species),
            layer or run.manifest.explain_layer,
            precision,
        )

    @property
    def class_names(self) -> list[str] | None:
        return [s.display_name for s in self.species] or None

    def target(self, species: str | int | None) -> int | None:
        """Class index for a species query (index, label, common or Latin name); None stays None."""
        if species is None:
            return None
        if not self.species:
            return resolve_species(
                species, [Species(str(i), f"class {i}") for i in range(_classes(self.model))]
            )
        return resolve_species(species, self.species)

    def prepare(self, photos: Sequence[Image.Image]) -> tuple[torch.Tensor, np.ndarray]:
        """Model input (B, 3, H, W) and the same crops as RGB uint8 (B, H, W, 3) for drawing on."""
        x = torch.stack([self._transform(p) for p in photos])
        seen = denormalize(x, self.preprocess).mul(255).round().to(torch.uint8)
        return x, seen.permute(0, 2, 3, 1).numpy()

    def targets(self, species: SpeciesQuery | Sequence[SpeciesQuery], n: int) -> TargetSpec:
        """Class indices for a species query for all `n` photos, or one query per photo."""
        if species is None or isinstance(species, str | int):
            return self.target(species)
        if len(species) != n:
            raise ConfigError(f"{len(species)} species for {n} photos",
                              fix="give one species, or one per photo")
        if any(s is None for s in species):
            raise ConfigError("a species per photo cannot leave some out",
                              fix="name every photo's species, or pass None for all")
        return [int(self.target(s)) for s in species]  # type: ignore[arg-type]

    def explain(
        self,
        photos: Sequence[Image.Image],
        methods: str | Sequence[str] = (DEFAULT_METHOD,),
        species: SpeciesQuery | Sequence[SpeciesQuery] = None,
        names: Sequence[str] | None = None,
        chunk_size: int = 32,
    ) -> dict[str, CamResult]:
        """Maps of `photos` for each method, explaining `species` (default: each photo's prediction):
        one species for all photos, or one per photo."""
        x, seen = self.prepare(photos)
        return self.explain_prepared(x, seen, methods, species, names, chunk_size)[1]

    def explain_prepared(
        self,
        x: torch.Tensor,
        seen: np.ndarray | None = None,
        methods: str | Sequence[str] = (DEFAULT_METHOD,),
        species: SpeciesQuery | Sequence[SpeciesQuery] = None,
        names: Sequence[str] | None = None,
        chunk_size: int = 32,
    ) -> tuple[ForwardPass, dict[str, CamResult]]:
        """`explain` on an already prepared batch (see `prepare`); also returns the pass the maps came
        from, whose logits and pooled features are the prediction."""
        return explain_pass(
            self.model,
            x,
            self.layer,
            methods,
            self.targets(species, len(x)),
            class_names=self.class_names,
            images=seen,
            names=names,
            chunk_size=chunk_size,
            precision=self.precision,
        )

    def cams(self, x: torch.Tensor, p: ForwardPass, methods: Sequence[str] = (DEFAULT_METHOD,),
             seen: np.ndarray | None = None) -> dict[str, CamResult]:
        """Maps from a pass that someone else ran on `x` (a predictor's `forward` with this layer), so the
        answer and its heatmap come from one forward pass; the same maps `explain` gives."""
        return cams_from_pass(self.model, x, p, methods, class_names=self.class_names, images=seen,
                              precision=self.precision)

    def overlays_for(self, x: torch.Tensor, p: ForwardPass) -> list[np.ndarray]:
        """Heatmap-over-photo pictures (RGB uint8) of the default method, one per photo of a pass."""
        seen = denormalize(x.float().cpu(), self.preprocess).mul(255).round().to(torch.uint8)
        return self.cams(x, p, seen=seen.permute(0, 2, 3, 1).numpy())[DEFAULT_METHOD].overlays()

    def activations(
        self, photos: Sequence[Image.Image], layers: Sequence[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """Outputs of `layers` (default: every body stage) for `photos`."""
        return layer_activations(self.model, self.prepare(photos)[0], layers)


def _classes(model: nn.Module) -> int:
    n = getattr(model, "num_classes", None)
    return int(n) if n is not None else 0


def photo_names(paths: Sequence[str | Path]) -> list[str]:
    """File stems, made unique ('a', 'a-2', ...) so outputs of same-named photos never collide."""
    used: set[str] = set()
    out = []
    for p in paths:
        stem = name = Path(p).stem or Path(p).name
        n = 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        out.append(name)
    return out
