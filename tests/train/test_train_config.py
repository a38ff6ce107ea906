"""Every training setting, from a config file, a recorded run or the command line, is checked by type and
range in `TrainConfig` before any work: a clear error naming the setting and the fix, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monkeysee.cli import build_parser, main
from monkeysee.cli.train import resolve_config
from monkeysee.config import TrainConfig, read_config_file, resumed
from monkeysee.errors import ConfigError
from monkeysee.train.trainer import Trainer
from tests.conftest import private_copy, tiny_config


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"head_epochs": "ten"}, "head_epochs must be a whole number, not 'ten'"),
        ({"head_lr": -1}, "head_lr must be > 0, not -1.0"),
        ({"head_lr": [0.1, 0.2]}, "head_lr must be a finite number, not [0.1, 0.2]"),
        ({"dropout": float("nan")}, "dropout must be a finite number, not nan"),
        ({"views": 2.5}, "views must be a whole number, not 2.5"),
        ({"patience": True}, "patience must be a whole number, not True"),
        ({"unfreeze": "all"}, "unfreeze must be a whole number or unset (null), not 'all'"),
        ({"backbone": 3}, "backbone must be text, not 3"),
        ({"augment": "flip"}, "augment must be a table of augmentation settings, not 'flip'"),
    ],
)
def test_a_wrong_value_is_refused_naming_the_setting(values, message):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(values)
    assert str(err.value).startswith(message)
    assert err.value.fix


def test_a_whole_number_where_a_fraction_belongs_is_that_number():
    cfg = TrainConfig.from_dict({"head_lr": 1, "val_fraction": 0})
    assert (cfg.head_lr, cfg.val_fraction) == (1.0, 0.0)
    assert isinstance(cfg.head_lr, float)


@pytest.mark.parametrize(("name", "text"), [("c.json", '["head_epochs", 3]'),
                                            ("c.toml", "head_epochs = 'ten'\n"),
                                            ("c.json", '{"head_epochs": 3, "epochs": 4}')])
def test_the_train_command_refuses_a_bad_config_file_in_one_line(tmp_path: Path, capsys, name, text):
    path = tmp_path / name
    path.write_text(text)
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("monkeysee train: error: ") and "Fix:" in err[0]
    assert "Traceback" not in err[0]
    assert not out.exists()


def test_a_config_file_that_is_not_a_table_names_the_file(tmp_path: Path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps([1, 2]))
    with pytest.raises(ConfigError, match=r"holds list \[1, 2\], not settings") as err:
        read_config_file(path)
    assert str(path) in str(err.value)


def test_resuming_applies_the_new_device_before_checking_it():
    recorded = TrainConfig(head_epochs=3).to_dict() | {"device": "cuda:99"}
    assert resumed(recorded, {"device": "cpu", "workers": 1, "head_epochs": None}).device == "cpu"
    with pytest.raises(ConfigError, match=r"--head-epochs 4 \(recorded: 3\)"):
        resumed(recorded, {"device": "cpu", "head_epochs": 4})


def test_config_file_values_are_used_and_flags_override_them(synthetic_data: Path, tmp_path: Path):
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(tiny_config(synthetic_data, tmp_path / "x", head_epochs=2,
                                               finetune_epochs=0).to_dict()))
    out = tmp_path / "flags"
    assert main(["train", "--config", str(cfg_path), "--out", str(out), "--seed", "7", "--no-evaluate"]) == 0
    written = json.loads((out / "config.json").read_text())
    assert written["seed"] == 7 and written["head_epochs"] == 2 and written["out"] == str(out)
    assert [r["phase"] for r in json.loads((out / "history.json").read_text())] == ["head", "head"]


def test_unknown_config_key_is_rejected(tmp_path: Path, capsys):
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"head_epoch": 3}))
    assert main(["train", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("monkeysee train: error: unknown setting(s) head_epoch. Fix: use: ")
    assert "head_epochs" in err.split("Fix:")[1]  # the setting meant is among those offered



@pytest.mark.parametrize(("key", "was", "default"), [("class_weights", "none", "inverse_sqrt"),
                                                     ("answer_max_share", 1.0, 0.5)])
def test_a_recorded_run_without_a_later_setting_resumes_and_grows_as_it_was_trained(
        tiny_run, tmp_path, key: str, was: object, default: object) -> None:
    """A recorded config or manifest without `class_weights` was trained with plain cross-entropy, and one
    without `answer_max_share` let any taxon answer, so resuming or growing that run keeps that; a config
    file without the key gets the default."""
    old = private_copy(tiny_run, tmp_path / "old")
    for name in ("config.json", "manifest.json"):  # a recorded run without the key
        d = json.loads((old / name).read_text())
        (d["config"] if name == "manifest.json" else d).pop(key)
        (old / name).write_text(json.dumps(d))
    assert getattr(Trainer.resume(old).cfg, key) == was
    args = build_parser().parse_args(["train", "--from", str(old), "--out", str(tmp_path / "grown")])
    assert getattr(resolve_config(args), key) == was
    recorded = json.loads((old / "config.json").read_text())
    assert getattr(TrainConfig.from_dict(recorded), key) == default  # a config file: the default


def test_a_bad_augment_table_in_the_file_is_refused_even_when_the_flag_names_the_ops(tmp_path: Path):
    path = tmp_path / "c.toml"
    path.write_text('augment = "hflip"\n')
    args = build_parser().parse_args(["train", "--data", str(tmp_path), "--config", str(path),
                                      "--augment", "hflip"])
    with pytest.raises(ConfigError, match="augment must be a table of augmentation settings, not 'hflip'"):
        resolve_config(args)
    path.write_text("[augment]\nblur_sigma = [0.5, 1.5]\n")
    assert resolve_config(args).augment.blur_sigma == (0.5, 1.5)  # the file's settings stand beside the flag
