"""The shortcut alarm: species whose evidence sits on the photo's border, or that a concept moves.

Border: for each photo, Grad-CAM of its own species (at the run's explanation layer, the map after
ReLU, bilinearly upsampled to the model's input crop, not min-max scaled) and the share of its mass
that falls in the outer band: the `band` fraction of the height at the top and at the bottom and of
the width at the left and at the right. With no segmentation of the animal, this band stands in for
the background: photographers centre their subject, while watermarks, enclosure edges, mesh and
glass reflections reach into the border. A map spread evenly puts the band's area share there
(1 − (1 − 2·band)²; 0.51 for band 0.15); a species whose mean share exceeds it leans on its border.

Concepts: where `monkeysee concepts` stored concept tests for the split, a concept that moves a
species (see `monkeysee.explain.concepts`) is an alarm too. Flagged species are listed worst first:
more alarms first, then the larger border share.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from monkeysee.explain.api import Explainer
from monkeysee.explain.batches import PhotoBatches
from monkeysee.explain.concepts import ConceptResult
from monkeysee.explain.engine import upsample

BAND = 0.15


def border_mask(size: tuple[int, int], band: float = BAND) -> np.ndarray:
    """(H, W) bool: True on the outer band (round(band·H) rows top and bottom, round(band·W) columns
    left and right)."""
    h, w = size
    by, bx = round(band * h), round(band * w)
    mask = np.ones((h, w), dtype=bool)
    mask[by: h - by, bx: w - bx] = False
    return mask


def border_shares(raw: np.ndarray | torch.Tensor, size: tuple[int, int], band: float = BAND) -> np.ndarray:
    """Per map of `raw` (B, h, w, non-negative): the share of its mass on the border band once upsampled
    to `size`; NaN for an all-zero map (no evidence anywhere)."""
    maps = upsample(torch.tensor(np.asarray(raw), dtype=torch.float32), size).clamp_min(0).double()
    mask = torch.from_numpy(border_mask(size, band))
    total = maps.sum(dim=(1, 2))
    share = (maps * mask).sum(dim=(1, 2)) / total
    return torch.where(total > 0, share, torch.nan).numpy()


def measure_border(explainer: Explainer, photos: Sequence[tuple[Path, int]], band: float = BAND,
                   batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(border share, species) per readable photo, Grad-CAM explaining each photo's own species."""
    size = (explainer.preprocess.input_size, explainer.preprocess.input_size)
    shares, labels = [], []
    for indices, x in PhotoBatches([p for p, _ in photos], explainer.preprocess, batch_size):
        species = [photos[i][1] for i in indices]
        cams = explainer.explain_prepared(x, methods=("gradcam",), species=species)[1]["gradcam"]
        shares.append(border_shares(cams.raw, size, band))
        labels += species
    if not shares:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return np.concatenate(shares), np.array(labels)


@dataclass(frozen=True)
class SpeciesAlarm:
    index: int
    name: str
    photos: int
    border_share: float | None
    concepts: list[str]
    reasons: list[str]

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)


def shortcut_alarm(shares: np.ndarray, labels: np.ndarray, names: Sequence[str], band: float = BAND,
                   concepts: Sequence[ConceptResult] = (), size: tuple[int, int] = (224, 224)
                   ) -> dict[str, Any]:
    """JSON-ready alarm: per species its mean border share and the concepts that move it; `flagged`
    names the species with an alarm, worst first (see the module docstring)."""
    area = float(border_mask(size, band).mean())
    species = []
    for k, name in enumerate(names):
        mine = shares[(labels == k) & ~np.isnan(shares)]
        share = float(mine.mean()) if len(mine) else None
        moved = [c.concept for c in concepts if k < len(c.moves) and c.moves[k]]
        reasons = ([f"{share:.0%} of its Grad-CAM mass on the border (an even map: {area:.0%})"]
                   if share is not None and share > area else [])
        reasons += [f"concept {c!r} raises its score" for c in moved]
        species.append(SpeciesAlarm(k, name, int((labels == k).sum()), share, moved, reasons))
    flagged = sorted((s for s in species if s.flagged),
                     key=lambda s: (-len(s.reasons), -(s.border_share or 0.0)))
    return {"band": band, "area_share": area, "method": "gradcam",
            "species": [asdict(s) for s in species], "flagged": [s.name for s in flagged]}


def format_alarm(alarm: dict[str, Any]) -> str:
    """The alarm as lines for a terminal, worst first."""
    if not alarm["flagged"]:
        return (f"shortcut alarm: none (no species has more than {alarm['area_share']:.0%} of its "
                "Grad-CAM mass on the border, and no concept test moves one)")
    by_name = {s["name"]: s for s in alarm["species"]}
    lines = [f"shortcut alarm: {len(alarm['flagged'])} species lean on a shortcut, worst first"]
    lines += [f"  {name}: {'; '.join(by_name[name]['reasons'])}" for name in alarm["flagged"]]
    return "\n".join(lines)


def run_photos(run_dir: str | Path, split: str, data: str | Path | None = None) -> list[tuple[Path, int]]:
    """(path, species index) of a split recorded in the run ('train', 'val', 'test'), refused when none
    of its photos are where the run says."""
    from monkeysee.errors import DataError
    from monkeysee.rundir import RunDir

    samples = RunDir(run_dir).read_splits(data).split(split)
    if not any(s.path.is_file() for s in samples):
        raise DataError(f"none of the run's {len(samples)} {split} photos are where it recorded them",
                        fix="pass --data DIR where the training data now lives",
                        path=samples[0].path if samples else Path(run_dir))
    return [(s.path, s.target) for s in samples]


def scan_shortcuts(run_dir: str | Path, split: str = "test", data: str | Path | None = None,
                   band: float = BAND, batch_size: int = 32, precision: str = "auto") -> dict[str, Any]:
    """Measure the border shares of a run's split, merge the concept tests stored for it, and store the
    alarm in the split's evaluation folder (`EvalFolder.shortcuts`)."""
    from monkeysee.rundir import RunDir

    run = RunDir(run_dir)
    loaded = run.load()
    explainer = Explainer.from_run(loaded, precision=precision)
    shares, labels = measure_border(explainer, run_photos(run_dir, split, data), band, batch_size)
    folder = run.eval(split)
    stored = folder.read_json(folder.concepts) or {}
    concepts = [ConceptResult.from_dict(c) for c in stored.get("concepts", [])]
    size = (explainer.preprocess.input_size,) * 2
    alarm = shortcut_alarm(shares, labels, [s.display_name for s in loaded.species], band, concepts, size)
    alarm |= {"split": split, "layer": explainer.layer}
    folder.path.mkdir(parents=True, exist_ok=True)
    folder.write_json(folder.shortcuts, alarm)
    return alarm
