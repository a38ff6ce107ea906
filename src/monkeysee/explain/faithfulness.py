"""How faithful is each CAM method to this model? Standard metrics, measured on the same photos.

* Deletion / insertion AUC (Petsiuk et al. 2018): the most salient pixels first are replaced by a blurred
  copy of the photo (deletion: the target probability should fall fast, lower AUC is better), or restored
  into the blurred copy (insertion: it should rise fast, higher is better). Baseline: Gaussian blur with
  sigma = 5% of the image side, so removed regions stay in the colour range the model knows.
* Average drop and increase in confidence (Chattopadhay et al. 2018): the photo is multiplied, in pixel
  space, by the map; drop = mean of max(0, Y - O) / Y (%), increase = share of photos where O > Y (%).
* Model-randomisation check (Adebayo et al. 2018): maps of a deep copy whose head (and, second level,
  the explained stage and everything after it) is re-initialised; the Spearman rank correlation with the
  original maps should be low. A method that does not change here does not depend on what was learned.
* Time per photo of each method on its own (gradient methods pay their own pass here).

`precision` "bf16" (or "auto" where the hardware has bf16) runs every model pass, the explanations' and
the metrics', under autocast; the report records which.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn
from tqdm.auto import tqdm

from monkeysee.errors import ImageError
from monkeysee.explain.engine import explain
from monkeysee.explain.methods import channels_last, resolve_methods
from monkeysee.models.hooks import evaluating, resolve_layer
from monkeysee.runtime import autocast, checked_precision

if TYPE_CHECKING:
    from monkeysee.explain.api import Explainer

BASELINE = "gaussian blur, sigma = 5% of the image side"


@dataclass(frozen=True)
class MethodScores:
    """One method's faithfulness numbers, averaged over the photos."""

    method: str
    deletion_auc: float
    insertion_auc: float
    average_drop: float
    increase_in_confidence: float
    randomization_rho_head: float
    randomization_rho_top: float
    seconds_per_photo: float
    photos: int

    @property
    def insertion_minus_deletion(self) -> float:
        return self.insertion_auc - self.deletion_auc


@dataclass(frozen=True)
class FaithfulnessReport:
    """Every method's scores on one model, layer and set of photos; `best` is the most faithful."""

    layer: str
    steps: int
    scores: tuple[MethodScores, ...]
    baseline: str = BASELINE
    precision: str = "fp32"

    @property
    def best(self) -> str:
        """The method with the highest insertion minus deletion AUC."""
        ranked = [s for s in self.scores if not math.isnan(s.insertion_minus_deletion)]
        return max(ranked, key=lambda s: s.insertion_minus_deletion).method if ranked else ""

    def table(self) -> str:
        """A plain-text table, one row per method, and the verdict."""
        head = (
            "method",
            "deletion",
            "insertion",
            "ins-del",
            "avg drop %",
            "increase %",
            "rand rho head",
            "rand rho top",
            "s/photo",
        )
        rows = [head] + [
            (
                s.method,
                f"{s.deletion_auc:.3f}",
                f"{s.insertion_auc:.3f}",
                f"{s.insertion_minus_deletion:+.3f}",
                f"{s.average_drop:.1f}",
                f"{s.increase_in_confidence:.1f}",
                f"{s.randomization_rho_head:.2f}",
                f"{s.randomization_rho_top:.2f}",
                f"{s.seconds_per_photo:.3f}",
            )
            for s in self.scores
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines = [
            "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows
        ]
        n = self.scores[0].photos if self.scores else 0
        lines.insert(1, "-" * len(lines[0]))
        lines += [
            "",
            "lower is better: deletion AUC, avg drop, rand rho; "
            "higher is better: insertion AUC, ins-del, increase",
            f"most faithful for this model: {self.best or 'n/a'} (highest insertion - deletion AUC; "
            f"{n} photos, layer {self.layer}, {self.steps} steps, baseline: {self.baseline}, "
            f"{self.precision} passes)",
        ]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "layer": self.layer,
            "steps": self.steps,
            "baseline": self.baseline,
            "precision": self.precision,
            "most_faithful": self.best,
            "criterion": "highest insertion AUC minus deletion AUC",
            "methods": [
                asdict(s) | {"insertion_minus_deletion": s.insertion_minus_deletion} for s in self.scores
            ],
        }

    def to_json(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """`to_dict` with `extra` fields, NaN written as null (JSON has no NaN)."""
        return _nan_to_none(self.to_dict() | (extra or {}))  # type: ignore[return-value]  # a dict stays one

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FaithfulnessReport:
        """What `to_dict` or `to_json` wrote (null read back as NaN)."""
        def value(v: Any) -> Any:  # noqa: ANN401 - a parsed JSON number or null
            return math.nan if v is None else v

        names = [f.name for f in fields(MethodScores)]
        scores = tuple(MethodScores(**{k: value(m[k]) for k in names}) for m in d["methods"])
        return cls(str(d["layer"]), int(d["steps"]), scores, str(d.get("baseline", BASELINE)),
                   str(d.get("precision", "fp32")))

    def save(self, directory: str | Path, extra: dict[str, Any] | None = None) -> Path:
        """Write `faithfulness.json` (NaN written as null), with `extra` fields such as the photos used."""
        path = Path(directory) / "faithfulness.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(extra), indent=2) + "\n")
        return path


def _nan_to_none(obj: object) -> object:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_to_none(v) for v in obj]
    return obj


def blurred(x: torch.Tensor, sigma_fraction: float = 0.05) -> torch.Tensor:
    """A heavily blurred copy of (B, 3, H, W) photos: the deletion / insertion baseline."""
    sigma = max(sigma_fraction * max(x.shape[-2:]), 0.5)
    kernel = min(2 * round(3 * sigma) + 1, 2 * (min(x.shape[-2:]) // 2) - 1)
    return TF.gaussian_blur(x, kernel_size=[max(kernel, 1)] * 2, sigma=[sigma, sigma])


def _probabilities(
    model: nn.Module, xs: torch.Tensor, targets: torch.Tensor, chunk: int, precision: str = "fp32"
) -> torch.Tensor:
    out = []
    with torch.inference_mode(), autocast(precision, xs.device):
        for part, t in zip(xs.split(chunk), targets.split(chunk), strict=True):
            out.append(torch.softmax(model(channels_last(part)).float(), dim=1).gather(1, t[:, None])[:, 0])
    return torch.cat(out)


def deletion_insertion(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 16,
    chunk_size: int = 32,
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-photo deletion and insertion AUC of `saliency` (B, H, W) for photos `x` (B, 3, H, W).

    Pixels are taken most salient first (ties in raster order), `steps` equal fractions at a time; the AUC
    is the trapezoid area under the target probability over the fraction in [0, 1]. `precision` is a
    resolved one ("fp32" or "bf16").
    """
    base = blurred(x)
    h, w = x.shape[-2:]
    counts = torch.round(torch.linspace(0, 1, steps + 1, device=x.device) * h * w).long()
    deletion, insertion = [], []
    with evaluating(model):
        for i in range(len(x)):
            order = torch.argsort(-saliency[i].flatten().to(x.device), stable=True)
            rank = torch.empty_like(order)
            rank[order] = torch.arange(len(order), device=x.device)
            masks = (rank[None] < counts[:, None]).reshape(steps + 1, 1, h, w)
            t = targets[i].expand(steps + 1)
            p_del = _probabilities(model, torch.where(masks, base[i], x[i]), t, chunk_size, precision)
            p_ins = _probabilities(model, torch.where(masks, x[i], base[i]), t, chunk_size, precision)
            deletion.append(float(torch.trapezoid(p_del.cpu(), dx=1.0 / steps)))
            insertion.append(float(torch.trapezoid(p_ins.cpu(), dx=1.0 / steps)))
    return np.array(deletion), np.array(insertion)


def drop_and_increase(
    model: nn.Module,
    x: torch.Tensor,
    saliency: torch.Tensor,
    targets: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    chunk_size: int = 32,
    precision: str = "fp32",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-photo relative drop max(0, Y - O) / Y and whether O > Y, where O is the target probability of
    the photo multiplied by the map in pixel space (x is normalised with `mean` and `std`)."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    masked = ((x * s + m) * saliency[:, None].to(x) - m) / s
    with evaluating(model):
        y = _probabilities(model, x, targets, chunk_size, precision)
        o = _probabilities(model, masked, targets, chunk_size, precision)
    drop = (torch.clamp(y - o, min=0) / y.clamp_min(torch.finfo(y.dtype).tiny)).cpu().numpy()
    return drop, (o > y).cpu().numpy()


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho of two maps (ties get their average rank); NaN when either map is constant."""
    ra, rb = _average_ranks(np.ravel(a)), _average_ranks(np.ravel(b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ordered = values[order]
    new_group = np.concatenate([[True], ordered[1:] != ordered[:-1]])
    group = np.cumsum(new_group) - 1
    starts = np.flatnonzero(new_group)
    ends = np.append(starts[1:], len(values))
    ranks = np.empty(len(values))
    ranks[order] = ((starts + ends - 1) / 2.0)[group]
    return ranks


def randomized_copy(model: nn.Module, layer: str, level: str = "head", seed: int = 0) -> nn.Module:
    """A deep copy with its top re-initialised by each module's own `reset_parameters`.

    level 'head': the classification head (a module named 'head', else the last Linear). level 'top': the
    head plus the body stage holding `layer` and every stage after it. The caller's model and the global
    random state are left untouched.
    """
    clone = copy.deepcopy(model)
    modules = dict(clone.named_modules())
    linears: list[nn.Module] = [m for m in clone.modules() if isinstance(m, nn.Linear)]
    targets: list[nn.Module] = [modules["head"]] if "head" in modules else linears[-1:]
    if level == "top":
        stages: list[str] = getattr(clone, "stage_names", lambda: [])()
        hit = [i for i, s in enumerate(stages) if layer == s or layer.startswith(s + ".")]
        targets += [modules[s] for s in stages[hit[0] :]] if hit else [resolve_layer(clone, layer)[1]]
    elif level != "head":
        raise ValueError(f"level must be 'head' or 'top', not {level!r}")
    devices = sorted({p.device.index or 0 for p in clone.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for top in targets:
            for m in top.modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()  # type: ignore[operator]  # nn.Module types attributes as Tensor | Module
    return clone


def evaluate_faithfulness(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | None = None,
    methods: str | Sequence[str] = "all",
    *,
    mean: Sequence[float] = (0.5, 0.5, 0.5),
    std: Sequence[float] = (0.5, 0.5, 0.5),
    targets: torch.Tensor | None = None,
    steps: int = 16,
    batch_size: int = 8,
    chunk_size: int = 32,
    seed: int = 0,
    precision: str = "fp32",
) -> FaithfulnessReport:
    """Score each method on photos `x` (N, 3, H, W), normalised with `mean`/`std`, explaining each photo's
    predicted class (or `targets`), with every model pass in `precision` ("auto", "bf16" or "fp32").
    The model is not modified; randomisation works on deep copies."""
    names = resolve_methods(methods if isinstance(methods, str) else list(methods))
    param = next(model.parameters(), None)
    precision = checked_precision(precision, param.device if param is not None else x.device)
    layer_name = resolve_layer(model, layer)[0]
    copies = {lvl: randomized_copy(model, layer_name, lvl, seed) for lvl in ("head", "top")}
    if targets is None:
        with evaluating(model):
            targets = torch.cat([_predict(model, part, precision) for part in x.split(batch_size)])
    per: dict[str, dict[str, list[float]]] = {n: {} for n in names}
    with tqdm(total=len(names) * len(x), desc="faithfulness", unit="map", disable=None) as bar:
        for start in range(0, len(x), batch_size):
            xb, tb = x[start : start + batch_size], targets[start : start + batch_size].to(x.device)
            for name in names:
                t0 = time.perf_counter()
                res = explain(model, xb, layer_name, (name,), tb, chunk_size=chunk_size, precision=precision)[
                    name
                ]
                seconds = time.perf_counter() - t0
                sal = torch.tensor(res.upsampled, device=xb.device)
                d, i = deletion_insertion(model, xb, sal, tb, steps, chunk_size, precision)
                drop, inc = drop_and_increase(model, xb, sal, tb, mean, std, chunk_size, precision)
                rho = {}
                for lvl, rand in copies.items():
                    other = explain(
                        rand, xb, layer_name, (name,), tb, chunk_size=chunk_size, precision=precision
                    )[name]
                    rho[lvl] = [rank_correlation(a, b) for a, b in zip(res.maps, other.maps, strict=True)]
                acc = per[name]
                for key, values in (
                    ("del", d),
                    ("ins", i),
                    ("drop", drop),
                    ("inc", inc),
                    ("rho_head", rho["head"]),
                    ("rho_top", rho["top"]),
                ):
                    acc.setdefault(key, []).extend(float(v) for v in values)
                acc.setdefault("sec", []).append(seconds)
                bar.update(len(xb))
    scores = tuple(
        MethodScores(
            method=n,
            deletion_auc=_mean(per[n]["del"]),
            insertion_auc=_mean(per[n]["ins"]),
            average_drop=100 * _mean(per[n]["drop"]),
            increase_in_confidence=100 * _mean(per[n]["inc"]),
            randomization_rho_head=_mean(per[n]["rho_head"]),
            randomization_rho_top=_mean(per[n]["rho_top"]),
            seconds_per_photo=sum(per[n]["sec"]) / len(x),
            photos=len(x),
        )
        for n in names
    )
    return FaithfulnessReport(layer_name, steps, scores, precision=precision)


def _predict(model: nn.Module, x: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    # no_grad, not inference_mode: the targets become an index that a gradient pass saves.
    with torch.no_grad(), autocast(precision, x.device):
        return model(channels_last(x)).argmax(dim=1)


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def faithfulness_on_photos(
    explainer: Explainer, paths: Iterable[Path], n: int, methods: str | Sequence[str] = "all", *,
    steps: int = 16, batch_size: int = 8, chunk_size: int = 32, seed: int = 0, precision: str = "fp32",
    skipped: Callable[[ImageError], None] | None = None,
) -> tuple[FaithfulnessReport, list[Path]]:
    """`evaluate_faithfulness` of `explainer`'s model on the first `n` readable photos of `paths`, and
    those photos; unreadable ones are passed over (and handed to `skipped`)."""
    from monkeysee.data.images import load_rgb

    chosen: list[Path] = []
    tensors: list[torch.Tensor] = []
    for path in paths:
        if len(chosen) == n:
            break
        try:
            tensors.append(explainer.prepare([load_rgb(path, preprocess=explainer.preprocess)])[0])
        except ImageError as exc:
            if skipped is not None:
                skipped(exc)
            continue
        chosen.append(path)
    if not chosen:
        return FaithfulnessReport(str(explainer.layer), steps, ()), []
    pre = explainer.preprocess
    report = evaluate_faithfulness(explainer.model, torch.cat(tensors), explainer.layer, methods,
                                   mean=pre.mean, std=pre.std, steps=steps, batch_size=batch_size,
                                   chunk_size=chunk_size, seed=seed, precision=precision)
    return report, chosen
