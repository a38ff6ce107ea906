"""The trainer on the feature store: runs share encoded photos, growing a run reuses them and the old
head rows, and a species with very few photos still trains and is reported with its count."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import torch

from monkeysee.cli import main
from monkeysee.rundir import RunDir
from monkeysee.train.store import describe_store
from monkeysee.train.trainer import Trainer
from tests.conftest import make_dataset, tiny_config


def _encoded(logs: list[str]) -> int:
    line = next(m for m in logs if m.startswith("frozen layers:"))
    return int(re.match(r"frozen layers: (\d+) photos encoded", line).group(1))


def _train(cfg, out: Path) -> list[str]:
    logs: list[str] = []
    Trainer(cfg, out).run(log=logs.append)
    return logs


def _pooled_rows(store: Path) -> int:
    """Rows of pooled features in the feature store: every view pooled through a body (not read back) is
    stored there."""
    if not store.is_dir():
        return 0
    return sum(t.rows for t in describe_store(store) if t.what == "pooled features")


def _seen(run: Path) -> tuple[set[Path], set[Path]]:
    """(photos encoded with every view: the training photos, photos encoded clean: train and val)."""
    index = RunDir(run).read_splits()
    train = {s.path for s in index.train}
    return train, train | {s.path for s in index.val}


def test_a_second_run_over_the_same_photos_encodes_nothing(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6)
    runs = tmp_path / "runs"
    trainer, store = Trainer(tiny_config(data, runs / "a"), runs / "a"), runs / "feature-store"
    first: list[str] = []
    trainer.run(log=first.append)
    assert _encoded(first) == len(_seen(runs / "a")[1])
    # every view goes through the pretrained body to train the head, and through the fine-tuned one
    # (the best epoch's) again for the detector's bank: a new body is never read from the old rows
    train, clean = _seen(runs / "a")
    rows = len(train) * (trainer.cfg.views + 1) + len(clean - train)
    assert RunDir(runs / "a").read_manifest().metrics["best"]["phase"] == "finetune"
    assert _pooled_rows(store) == 2 * rows
    trainer = Trainer(tiny_config(data, runs / "b", unknown_detector="knn", head_lr=1e-2, finetune_epochs=0),
                      runs / "b")
    again: list[str] = []
    trainer.run(log=again.append)
    assert _encoded(again) == 0  # another head and detector over the same photos
    assert _pooled_rows(store) == 2 * rows  # on the same pretrained body: run a stored its pooled features
    other_seed = _train(tiny_config(data, runs / "c", seed=7), runs / "c")
    # another seed carves other splits: only views no earlier run computed are encoded (a photo that was
    # held out, or validated, and now trains)
    (train_a, clean_a), (train_c, clean_c) = _seen(runs / "a"), _seen(runs / "c")
    assert _encoded(other_seed) == len((train_c - train_a) | (clean_c - clean_a))
    assert (runs / "feature-store").is_dir()


def test_growing_a_run_encodes_only_the_new_species_and_starts_from_the_old_head(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6)
    moved = tmp_path / "n2"
    shutil.move(data / "training" / "n2", moved)  # the first run knows two species
    old = tmp_path / "runs" / "two"
    _train(tiny_config(data, old), old)
    shutil.move(moved, data / "training" / "n2")  # the folder gained a species
    grown = tmp_path / "runs" / "three"
    logs: list[str] = []
    cfg = tiny_config(data, grown, grow_from=str(old), head_epochs=1, finetune_epochs=0)
    trainer = Trainer(cfg, grown)
    loaded_rows = {}
    original = trainer.encode

    def spy(model, cut, index, log):  # the head as phase 1 starts
        loaded_rows["weight"] = model.head.fc.weight.detach().clone()
        return original(model, cut, index, log)

    trainer.encode = spy
    store = tmp_path / "runs" / "feature-store"
    pooled_before = _pooled_rows(store)
    trainer.run(log=logs.append)
    assert any("2 known species keep their head rows, 1 new; its body is kept" in m for m in logs)
    new = [p for p in _seen(grown)[1] if p.parent.name == "n2"]
    assert _encoded(logs) == len(new) == 5  # only n2's train and val photos (one of six is held out)
    # the body is the old run's, which pooled the old photos already: only n2's views go through it, once
    # (the head phase stores them, the detector after training reads them back)
    new_train = [p for p in _seen(grown)[0] if p.parent.name == "n2"]
    assert _pooled_rows(store) - pooled_before == len(new_train) * (cfg.views + 1) + len(new) - len(new_train)
    before = RunDir(old).load()
    assert torch.equal(loaded_rows["weight"][:2], before.model.head.fc.weight)
    after = RunDir(grown).load()
    assert [s.label for s in after.manifest.species] == ["n0", "n1", "n2"]


def test_a_species_with_very_few_photos_trains_and_is_reported_with_its_count(tmp_path, capsys):
    data = make_dataset(tmp_path / "data", per_class=10)
    for extra in sorted((data / "training" / "n2").iterdir())[5:]:
        extra.unlink()  # n2 has 5 photos
    out = tmp_path / "runs" / "rare"
    cfg = tiny_config(data, out)
    _train(cfg, out)
    counts = RunDir(out).read_summary()["counts"]
    assert sum(counts[s]["n2"] for s in ("train", "val", "test")) == 5
    assert counts["train"]["n2"] >= 1
    assert main(["evaluate", str(out)]) == 0
    table = capsys.readouterr().out
    assert "balanced accuracy" in table


def test_train_from_on_the_command_line_reuses_the_old_runs_store(tmp_path):
    data = make_dataset(tmp_path / "data", per_class=6)
    old = tmp_path / "old-runs" / "run"
    flags = ["--views", "1", "--head-epochs", "2", "--finetune-epochs", "1", "--workers", "0",
             "--unknown-detector", "energy", "--no-evaluate"]
    assert main(["train", "--data", str(data), "--out", str(old), *flags]) == 0
    grown = tmp_path / "elsewhere" / "grown"
    assert main(["train", "--data", str(data), "--from", str(old), "--out", str(grown), "--no-evaluate"]) == 0
    assert RunDir(grown).read_config()["store"] == str(old.resolve().parent / "feature-store")
    assert not (grown.parent / "feature-store").exists()  # nothing was encoded anew
    grown_cfg = RunDir(grown).read_config()
    assert (grown_cfg["finetune_epochs"], grown_cfg["head_epochs"]) == (0, 10)  # the head alone trains...
    again = tmp_path / "elsewhere" / "again"
    assert main(["train", "--data", str(data), "--from", str(old), "--out", str(again), "--no-evaluate",
                 "--finetune-epochs", "1"]) == 0
    assert RunDir(again).read_config()["finetune_epochs"] == 1  # ...unless told otherwise
