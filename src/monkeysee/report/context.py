"""Everything the report's sections read about one run, loaded once: files of the run folder, the data
index, what `evaluate` stored for the test split, and (lazily) the model.

What `evaluate` did not store (a run evaluated by an older monkeysee, other report options, an explanation
check nobody ran yet) is computed here on demand by the functions that `evaluate` and `explain` use, and
the unknown-photo scores and faithfulness table are stored for the next build."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from monkeysee.checkpoint import Manifest
from monkeysee.data.layout import DataIndex
from monkeysee.data.species import Species
from monkeysee.errors import CheckpointError, DataError, MonkeyseeError
from monkeysee.evaluate.interpret import Interpretation
from monkeysee.evaluate.photos import PhotoPlan, plan_photos
from monkeysee.evaluate.unknown import UnknownScores, score_other_photos, score_photos
from monkeysee.report.cams import OverlayBank
from monkeysee.report.html import code
from monkeysee.report.options import ReportOptions
from monkeysee.rundir import EvalFolder, RunDir

if TYPE_CHECKING:
    from monkeysee.explain.api import Explainer
    from monkeysee.explain.faithfulness import FaithfulnessReport
    from monkeysee.predict import Predictor

EVAL_SPLIT = "test"
# Grad-CAM (what the report's overlays use) against its best-known variant. Each method costs ~200 model
# passes for 8 photos (deletion/insertion, randomisation copies); Eigen-CAM and Ablation-CAM cost more, and
@dataclass
class ReportContext:
    """The run as the sections see it. Missing pieces are None, with the reason in `problems`."""

    run_dir: Path
    options: ReportOptions
    manifest: Manifest
    config: dict[str, Any]
    history: list[dict[str, Any]]
    summary: dict[str, Any] | None
    recorded_root: Path | None  # where splits.json says the photos were
    index: DataIndex | None
    data_root: Path | None
    photos_ok: bool
    metrics: dict[str, Any] | None = None
    interp: Interpretation | None = None
    problems: dict[str, str] = field(default_factory=dict)
    cams: OverlayBank = field(init=False)

    def __post_init__(self) -> None:
        self.cams = OverlayBank(lambda: self.explainer)

    @classmethod
    def load(cls, run_dir: str | Path, options: ReportOptions) -> ReportContext:
        run_dir = Path(run_dir)
        run = RunDir(run_dir)
        manifest = run.read_manifest()
        recorded_root = run.splits_root()
        root = options.data or recorded_root
        problems = {}
        index = None
        if run.has_splits() and root is not None:
            try:
                index = run.read_splits(root)
            except DataError as exc:
                problems["data"] = exc.message
        photos_ok = bool(
            index and root is not None and root.is_dir()
            and any(s.path.is_file() for s in index.test[:50] + index.train[:50])
        )
        ctx = cls(
            run_dir=run_dir,
            options=options,
            manifest=manifest,
            config=run.read_config() or manifest.config,
            history=run.read_history(),
            summary=run.read_summary(),
            recorded_root=recorded_root,
            index=index,
            data_root=root,
            photos_ok=photos_ok,
            problems=problems,
        )
        ctx._load_evaluation()
        return ctx

    # --- evaluation --------------------------------------------------------------------------------

    @property
    def evaluation(self) -> EvalFolder:
        return RunDir(self.run_dir).eval(EVAL_SPLIT)

    def _load_evaluation(self) -> None:
        """Stored test metrics and predictions; evaluates the run first when they are missing."""
        stored = self.evaluation
        if not stored.metrics.is_file():
            if not self.photos_ok:
                self.problems["metrics"] = (
                    f"the run has not been evaluated ({stored.metrics} is missing) and the photos to "
                    "evaluate it on are not available; run monkeysee evaluate RUN_DIR --data DIR, or pass "
                    "--data DIR here"
                )
                return
            from monkeysee.evaluate.runner import evaluate_run

            try:
                evaluate_run(self.run_dir, EVAL_SPLIT, self.options.data, self.predictor, log=lambda _: None,
                             photo_plan=self.options.photo_plan)
            except (MonkeyseeError, OSError) as exc:
                why = exc.message if isinstance(exc, MonkeyseeError) else f"{exc.strerror}: {exc.filename}"
                self.problems["metrics"] = f"evaluating the run on its test photos failed ({why})"
                return
        self.metrics = stored.read_json(stored.metrics)
        try:
            self.interp = Interpretation.load(stored.predictions)
        except CheckpointError as exc:
            self.problems["predictions"] = exc.message

    @cached_property
    def photo_plan(self) -> PhotoPlan | None:
        """The photos `evaluate` chose to show, or, chosen with other options, a plan made now."""
        if self.interp is None:
            return None
        stored = self.evaluation.read_json(self.evaluation.photo_plan)
        try:
            plan = PhotoPlan.from_dict(stored) if isinstance(stored, dict) else None
        except (KeyError, TypeError, ValueError):
            plan = None  # damaged: planned again below
        if plan is not None and plan.options == self.options.photo_plan and plan.fits(self.interp):
            return plan
        return plan_photos(self.interp, self.options.photo_plan)

    def unknown_scores(self) -> UnknownScores | None:
        """The detector's scores of the test photos (and of `options.ood`), stored by `evaluate`, or
        scored now and stored; None for a run without a detector."""
        detector = self.predictor.detector
        if detector is None:
            return None
        folder, opt = self.evaluation, self.options
        stored = folder.read_json(folder.unknown_scores)
        try:
            scores = UnknownScores.from_dict(stored) if isinstance(stored, dict) else None
        except (KeyError, TypeError, ValueError):
            scores = None
        keep = scores is not None and scores.detector == detector.name
        if scores is None or not keep:
            scores = UnknownScores(detector.name, np.array([]))  # no known photos to score
            if self.index is not None and self.photos_ok:
                paths = [s.path for s in self.index.test if s.path.is_file()]
                known, _ = score_photos(self.predictor, paths, opt.batch_size * 2, "known photos")
                scores, keep = UnknownScores(detector.name, known), True
        other = scores.other
        if opt.ood is not None and (other is None or other.folder != str(opt.ood)
                                    or other.max_photos != opt.max_ood_photos):
            scores = scores.with_other(score_other_photos(self.predictor, opt.ood, opt.max_ood_photos,
                                                          opt.batch_size * 2))
        if keep and scores.to_dict() != stored:
            folder.write_json(folder.unknown_scores, scores.to_dict())
        return scores

    def faithfulness(self) -> tuple[FaithfulnessReport, list[str]]:
        """The faithfulness of each CAM method on spread-out test photos, and those photos: stored in the
        evaluation folder, or measured now (and stored) when the stored one was made with other options."""
        from monkeysee.explain.faithfulness import FaithfulnessReport, faithfulness_on_photos
        from monkeysee.explain.photos import spread

        opt, folder = self.options, self.evaluation
        asked = {"photos": opt.faithfulness_photos, "steps": opt.faithfulness_steps,
                 "methods": list(opt.faithfulness_methods), "seed": self.manifest.seed}
        stored = folder.read_json(folder.faithfulness)
        if isinstance(stored, dict) and stored.get("asked") == asked:
            try:
                return FaithfulnessReport.from_dict(stored), list(stored["photos"])
            except (KeyError, TypeError, ValueError):
                pass  # damaged: measured again below
        assert self.index is not None
        report, chosen = faithfulness_on_photos(
            self.explainer, spread(s.path for s in self.index.test if s.path.is_file()),
            opt.faithfulness_photos, opt.faithfulness_methods, steps=opt.faithfulness_steps,
            batch_size=opt.batch_size, seed=self.manifest.seed)
        photos = [str(p) for p in chosen]
        if chosen:
            folder.write_json(folder.faithfulness, report.to_json({"photos": photos, "asked": asked}))
        return report, photos

    # --- model -------------------------------------------------------------------------------------

    @cached_property
    def predictor(self) -> Predictor:
        from monkeysee.predict import Predictor

        return Predictor.from_run_dir(self.run_dir, precision=self.options.precision)

    @cached_property
    def explainer(self) -> Explainer:
        from monkeysee.explain.api import Explainer

        return Explainer.from_run(self.predictor.run)

    # --- names and paths ---------------------------------------------------------------------------

    @property
    def species(self) -> tuple[Species, ...]:
        return self.manifest.species

    def name(self, index: int) -> str:
        return self.species[index].display_name

    def photo_path(self, stored: str | Path) -> Path:
        """Where a photo recorded in the run's files is now: moved along with --data when it was given."""
        path = Path(stored)
        if path.is_file() or self.recorded_root is None or self.data_root is None:
            return path
        try:
            return self.data_root / path.relative_to(self.recorded_root)
        except ValueError:
            return path

    def photos_missing(self, what: str) -> str:
        """The sentence a section shows instead of photos when the data folder is not there."""
        where = code(self.data_root) if self.data_root is not None else "the recorded data folder"
        return (
            f"No {what}: the photos are not at {where} (the data or the run folder may have moved). "
            f"Rebuild the report with {code('--data DIR')} pointing at the data folder to see them."
        )
