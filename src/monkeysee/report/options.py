"""What a report holds and how much of it: the options of `monkeysee report`, light enough to import
when the command line is built (the report itself loads the model and the photos)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from monkeysee.errors import ConfigError

if TYPE_CHECKING:
    from monkeysee.evaluate.photos import PhotoPlanOptions

# Score-CAM runs the whole model once per channel. `monkeysee explain --evaluate` compares them all.
FAITHFULNESS_METHODS = ("gradcam", "gradcam++")


@dataclass(frozen=True)
class ReportOptions:
    """What goes into the report and how much of it. The defaults keep a build to a minute or two."""

    data: Path | None = None  # data root; default: the root recorded in splits.json
    out: Path | None = None  # HTML file; default: RUN_DIR/report.html
    ood: Path | None = None  # photos of no known species, for the unknown-detector curve
    faithfulness_photos: int = 8  # 0 skips the faithfulness table
    faithfulness_steps: int = 8  # deletion / insertion steps
    faithfulness_methods: tuple[str, ...] = FAITHFULNESS_METHODS  # or ("all",)
    gallery_per_species: int = 4
    max_gallery_photos: int = 400  # beyond this, the gallery shows the weakest species first
    top_losses: int = 9
    confused_pairs: int = 4
    examples_per_pair: int = 3
    max_ood_photos: int = 250  # an evenly spaced sample beyond this
    precision: str = "auto"
    batch_size: int = 16
    species_map: bool = False  # lay out the species map now when evaluate or `monkeysee map` stored none

    def __post_init__(self) -> None:
        from monkeysee.explain import resolve_methods
        from monkeysee.runtime import checked_precision

        checked_precision(self.precision)  # a bad value fails before the run is read
        object.__setattr__(
            self, "faithfulness_methods", tuple(resolve_methods(list(self.faithfulness_methods)))
        )
        counts = {
            "faithfulness_photos": self.faithfulness_photos,
            "gallery_per_species": self.gallery_per_species,
            "top_losses": self.top_losses,
            "confused_pairs": self.confused_pairs,
            "examples_per_pair": self.examples_per_pair,
        }
        for name, value in counts.items():
            if value < 0:
                raise ConfigError(
                    f"{name.replace('_', '-')} must be 0 or more, not {value}", fix="pass a count such as 4"
                )
        for name in ("faithfulness_steps", "max_gallery_photos", "max_ood_photos", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(
                    f"{name.replace('_', '-')} must be at least 1, not {getattr(self, name)}",
                    fix="pass a positive number",
                )

    @property
    def photo_plan(self) -> PhotoPlanOptions:
        from monkeysee.evaluate.photos import PhotoPlanOptions

        return PhotoPlanOptions(self.confused_pairs, self.examples_per_pair, self.gallery_per_species,
                                self.max_gallery_photos)
