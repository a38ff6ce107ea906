"""Every training setting, from a config file, a recorded run or the command line, is checked by type and
range in `TrainConfig` before any work: a clear error naming the setting and the fix, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from monkeysee.cli import main
from monkeysee.config import TrainConfig, read_config_file, resumed
from monkeysee.errors import ConfigError


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
