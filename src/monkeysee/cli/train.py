"""`monkeysee train`: two-phase transfer learning into a self-describing run folder."""

from __future__ import annotations

import argparse
import gc
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from monkeysee.cli import command
from monkeysee.cli.options import add_options
from monkeysee.cli.outputs import check_folder, declare_outputs
from monkeysee.config import TrainConfig, read_config_file, resolved, resumed
from monkeysee.data.augment import AugmentConfig
from monkeysee.errors import ConfigError
from monkeysee.models import available_backbones

if TYPE_CHECKING:
    from monkeysee.train.trainer import Trainer

# Help per TrainConfig field given a flag; type and default come from the field. Every flag defaults to
# None so the config file's value stands.
_HELP: dict[str, str] = {
    "backbone": f"one of: {', '.join(available_backbones())}",
    "weights": "ImageNet weights file for backbones that otherwise need a download",
    "seed": "seed for splits, augmentation and training order",
    "val_fraction": "share of training photos carved out for validation (no validation/ folder)",
    "test_fraction": "share of training photos held out for the final, untouched test",
    "views": "augmented views per training photo computed through the frozen layers",
    "batch_size": "mini-batch size",
    "head_epochs": "max epochs of phase 1 (frozen body, new head)",
    "finetune_epochs": "max epochs of phase 2 (top stages unfrozen); 0 skips it",
    "unfreeze": "how many top stages phase 2 trains (default: the backbone's)",
    "head_lr": "phase 1 learning rate",
    "finetune_lr": "phase 2 learning rate of the body",
    "class_weights": "loss weight per species for long-tailed data: inverse_sqrt, inverse (each species "
                     "counts alike) or none",
    "patience": "early stopping: epochs without validation improvement",
    "precision": "auto, bf16 or fp32",
    "device": "auto, cpu or cuda",
    "workers": "photo-decoding worker processes",
    "store": "feature-store folder, shared by runs over the same photos (default: beside --out)",
    "unknown_detector": "max_softmax, energy, max_logit, mahalanobis, knn, knn_either or knn_imagenet",
    "unknown_keep": "share of known photos the unknown threshold accepts (knn_either: by its views route)",
    "unknown_calibration": "crossfit (out-of-fold training photos + val) or val",
    "calibration": "temperature (shown probabilities fitted on val) or none",
    "taxonomy": "CSV of the ranks above species: a header 'species,RANK,...' (ranks fine to coarse, e.g. "
                "genus,family) and a row per species (default: genus from the labels file's Latin names, "
                "primate families built in)",
    "answer_accuracy": "how often answers must be right at the rank they are given (species, genus, "
                       "family...): the answer ladder's thresholds are fitted to it",
    "answer_max_share": "above species, a taxon holding more than this share of the run's species (e.g. "
                        "a superfamily of most of them) is never an answer: it would say little more than "
                        "'one of my species'",
}
_FLAGS = tuple(_HELP)


GROW_DEFAULTS = {"finetune_epochs": 0, "head_epochs": 10}
"""What a grown run changes in the recipe it grows from, unless flags say otherwise. The body stays the
old run's: on butterflies (90 -> 100 species) fine-tuning it again never beat the retrained head, and
the old photos' pooled features through it are in the store already. The head, starting near its
optimum, gets a 10-epoch one-cycle schedule that early stopping does not cut while the rate is at its
peak (validation loss 1.173 with the recipe's 30 epochs, 1.154 with 10)."""


def _arguments(p: argparse.ArgumentParser) -> None:
    add_options(p, TrainConfig, names=["data", "out"], defaults=False, help={
        "data": "data folder: DIR/training/<species>/... or DIR/<species>/...",
        "out": "run folder to write"})
    p.add_argument("--config", help="JSON or TOML file with TrainConfig values (flags override it)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last epoch")
    p.add_argument("--from", dest="grow_from", metavar="RUN_DIR",
                   help="grow a finished run (same recipe) on a data folder that gained species or "
                        "photos: its weights and known species' head rows start it, its features are reused; "
                        "by default the head alone trains, for 10 epochs (see GROW_DEFAULTS)")
    p.add_argument("--augment", help="comma-separated augmentations, one applied per photo")
    p.add_argument("--no-evaluate", action="store_true", help="skip evaluating the held-out test split")
    add_options(p, TrainConfig, names=_FLAGS, help=_HELP, defaults=False)
    declare_outputs(p, out=check_folder, store=check_folder)


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in _FLAGS}


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """The config of a new run: a config file's values (or a grown run's recipe), then the flags."""
    flags = _flags(args)
    if args.grow_from:  # the grown run keeps the recipe it grows from; flags still override
        from monkeysee.rundir import RunDir
        from monkeysee.train.trainer import default_store

        if not args.out:
            raise ConfigError("--from needs --out for the grown run", fix="pass --out NEW_RUN_DIR")
        recipe = RunDir(args.grow_from).read_manifest().config
        # the old run's photos are encoded in its store: use it unless told otherwise
        flags["store"] = args.store or recipe.get("store") or str(default_store(args.grow_from))
        flags |= {k: v for k, v in GROW_DEFAULTS.items() if flags[k] is None}
        return resolved(recipe, flags | {"grow_from": args.grow_from, "data": args.data, "out": args.out},
                        recorded=True)
    base = read_config_file(args.config) if args.config else {}
    changes = flags | {"data": args.data, "out": args.out}
    if args.augment:  # the file's other augmentation settings stand, checked like every setting of it
        current = resolved(base, {}).augment
        changes["augment"] = AugmentConfig.from_dict(
            current.to_dict() | {"ops": [op.strip() for op in args.augment.split(",") if op.strip()]})
    return resolved(base, changes)


def resumed_config(recorded: dict[str, Any], args: argparse.Namespace) -> TrainConfig:
    """The recorded config with the flags given to `--resume` applied, or a ConfigError naming a flag that
    would change what has already been computed."""
    for flag in ("config", "augment", "out"):
        if getattr(args, flag):
            raise ConfigError(f"--{flag} cannot change a run being resumed",
                              fix=f"drop --{flag} to resume with the recorded settings, or start a new run")
    return resumed(recorded, _flags(args) | {"data": args.data})


@command("train", help="Train a species classifier (two-phase transfer learning)", arguments=_arguments,
         order=10)
def run(args: argparse.Namespace) -> int:
    from monkeysee import distributed
    from monkeysee.evaluate.runner import evaluate_run
    from monkeysee.rundir import RunDir
    from monkeysee.runtime import trim_malloc
    from monkeysee.train.trainer import Trainer

    if args.resume:
        trainer = Trainer.resume(args.resume, resumed_config(Trainer.recorded(args.resume), args))
    else:
        cfg = resolve_config(args)
        trainer = _restarted(cfg) or Trainer(cfg, Path(cfg.out))
    try:
        run_dir = trainer.run(log=tqdm.write)
    except KeyboardInterrupt:
        if distributed.is_main():
            print(f"monkeysee train: interrupted; every completed epoch is saved. Continue with:\n"
                  f"  monkeysee train --resume {trainer.dir}", file=sys.stderr)
        return 130
    if not distributed.is_main():  # rank 0 evaluates and reports for every rank
        return 0
    if not args.no_evaluate and trainer.cfg.test_fraction > 0:
        if RunDir(run_dir).read_splits(trainer.cfg.data).test:
            gc.collect()  # training's tensors are garbage now: give their memory back before evaluating
            trim_malloc()
            evaluate_run(run_dir, split="test", log=tqdm.write)
        else:
            print("no held-out test photos (no species has a photo to spare), so the run is not evaluated; "
                  "three photos per species leave one each for validation and the test")
    print(f"run folder: {run_dir}")
    return 0


def _restarted(cfg: TrainConfig) -> Trainer | None:
    """Under `torchrun --max-restarts K`, the workers restarted after a failure run the same command
    again: that continues the run it started (the same recipe into the same folder), like `--resume`."""
    from monkeysee import distributed
    from monkeysee.rundir import RunDir
    from monkeysee.train.trainer import Trainer

    run_dir = RunDir(cfg.out)
    if not distributed.restarted() or not run_dir.holds_run():
        return None
    trainer = Trainer.resume(cfg.out)
    if trainer.cfg.to_dict() != cfg.to_dict():
        raise ConfigError("torchrun restarted this command, but the run folder holds a run of another recipe",
                          fix="pass a new --out", path=cfg.out)
    return trainer
