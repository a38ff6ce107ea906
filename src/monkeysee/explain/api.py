"""Photos in, explanations out: the convenience layer the CLI, the web app and the report share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from monkeysee.checkpoint import LoadedRun
from monkeysee.data.species import Species
from monkeysee.data.transforms import denormalize, eval_transform
from monkeysee.explain.activations import layer_activations
from monkeysee.explain.engine import checked_precision, explain
from monkeysee.explain.layers import resolve_layer
from monkeysee.explain.result import CamResult
from monkeysee.explain.targets import resolve_species
from monkeysee.models import Preprocess


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

    def explain(
        self,
        photos: Sequence[Image.Image],
        methods: str | Sequence[str] = ("gradcam",),
        species: str | int | None = None,
        names: Sequence[str] | None = None,
        chunk_size: int = 32,
    ) -> dict[str, CamResult]:
        """Maps of `photos` for each method, explaining `species` (default: each photo's prediction)."""
        x, seen = self.prepare(photos)
        return explain(
            self.model,
            x,
            self.layer,
            methods,
            self.target(species),
            class_names=self.class_names,
            images=seen,
            names=names,
            chunk_size=chunk_size,
            precision=self.precision,
        )

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
