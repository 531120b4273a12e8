"""Settings from the CLI and the flows: coerced to the config fields' types, checked, named."""

from __future__ import annotations

import pytest

from flows.params import check_seeds, check_training
from model.config import Ada2IConfig
from pipeline.cli import main as cli_main
from pipeline.cli.train import parse_overrides
from pipeline.training.train import TrainConfig, configs_for
from pipeline.training.train_config import SettingsError, coerce_settings


def test_configs_refuse_values_outside_their_declared_ranges():
    """The type and range declared on a field hold however the config is built, not only for
    settings from the edges."""
    with pytest.raises(ValueError, match=r"hidden=0: expected an integer >= 1"):
        Ada2IConfig(hidden=0)
    with pytest.raises(ValueError, match=r"dropout=1.0: expected a finite number in \[0, 1\)"):
        Ada2IConfig(dropout=1.0)
    with pytest.raises(ValueError, match="lr_schedule='step': expected one of plateau"):
        TrainConfig(lr_schedule="step")
    assert Ada2IConfig(modalities="VA").modalities == "av"


@pytest.mark.parametrize(
    "raw, expected",
    [("False", False), ("false", False), ("0", False), ("True", True), ("true", True), ("1", True)],
)
def test_bools_in_python_json_or_digit_spelling(raw, expected):
    assert parse_overrides([f"use_afw={raw}"]) == {"use_afw": expected}


def test_python_false_really_turns_afw_off():
    """The issue: `--set use_afw=False` became the truthy string "False", so the ablation
    silently kept AFW on."""
    model_cfg, train_cfg = configs_for(
        "tiny", "ta", parse_overrides(["use_afw=False", "modulation=False", "epochs=3"])
    )
    assert model_cfg.use_afw is False and train_cfg.modulation is False
    assert train_cfg.epochs == 3 and isinstance(train_cfg.epochs, int)


def test_values_are_coerced_to_the_field_types():
    got = parse_overrides(["lr=1e-3", "batch_size=4", "dropout=0", "lr_schedule=cosine"])
    assert got == {"lr": 0.001, "batch_size": 4, "dropout": 0.0, "lr_schedule": "cosine"}
    assert isinstance(got["dropout"], float) and isinstance(got["batch_size"], int)


@pytest.mark.parametrize(
    "item, fragments",
    [
        ("epochs=abc", ["epochs='abc'", "expected an integer >= 1"]),
        ("lr=nan", ["lr='nan'", "expected a finite number > 0"]),
        ("lr=inf", ["lr='inf'", "finite number > 0"]),
        ("lr=-0.1", ["lr='-0.1'", "> 0"]),
        ("batch_size=0", ["batch_size='0'", "expected an integer >= 1"]),
        ("epochs=-1", ["epochs='-1'", "expected an integer >= 1"]),
        ("epochs=2.5", ["epochs='2.5'", "integer"]),
        ("use_afw=maybe", ["use_afw='maybe'", "true or false"]),
        ("use_afw=yes", ["use_afw='yes'", "true or false"]),
        ("dropout=1", ["dropout='1'", "in [0, 1)"]),
        ("beta=1.5", ["beta='1.5'", "in [0, 1]"]),
        ("alpha=-1", ["alpha='-1'", ">= 0"]),
        ("rank=0", ["rank='0'", ">= 1"]),
        ("hidden=0", ["hidden='0'", ">= 1"]),
        ("lr_schedule=step", ["lr_schedule='step'", "one of plateau, cosine, none"]),
        ("encoder_style=big", ["encoder_style='big'", "projected, authors"]),
        ("device=gpu", ["device='gpu'", "auto, cpu, cuda"]),
        ("seed=-3", ["seed='-3'", "in [0, 4294967295]"]),
        ("n_classes=3", ["n_classes='3'", "from the feature set"]),
        ("epochz=3", ["unknown setting 'epochz'", "did you mean epochs"]),
        ("learning_rate=1", ["unknown setting 'learning_rate'"]),
    ],
)
def test_bad_values_name_key_value_and_expectation(item, fragments):
    with pytest.raises(SettingsError) as info:
        parse_overrides([item])
    for fragment in fragments:
        assert fragment in str(info.value)


def test_every_bad_setting_is_reported_at_once():
    with pytest.raises(SettingsError, match="3 bad settings") as info:
        coerce_settings({"epochs": "abc", "lr": float("nan"), "batch_size": 0, "rank": 2})
    assert all(k in str(info.value) for k in ("epochs=", "lr=nan", "batch_size=0"))


def test_modalities_are_given_once_and_checked():
    with pytest.raises(SettingsError, match="give the modalities once"):
        configs_for("tiny", "ta", {"modalities": "t"})
    with pytest.raises(SettingsError, match="modalities='tx'"):
        configs_for("tiny", "tx")
    assert configs_for("tiny", "at")[0].modalities == "ta"


def test_set_without_equals_is_refused():
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_overrides(["epochs"])


def test_cli_refuses_a_bad_setting_with_one_line_before_loading_anything(tmp_path, capsys):
    code = cli_main(
        [
            "train",
            "--features",
            str(tmp_path / "none"),
            "--out",
            str(tmp_path / "run"),
            "--set",
            "lr=nan",
        ]  # fmt: skip
    )
    err = capsys.readouterr().err
    assert code == 2 and "lr='nan': expected a finite number > 0" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_flow_parameters_are_coerced_and_checked():
    assert check_training("tiny", "ta", {"use_afw": "False", "epochs": 2.0}) == {
        "use_afw": False,
        "epochs": 2,
    }
    assert check_training("tiny", "ta", None) == {}
    for bad, fragment in [
        ({"lr": float("nan")}, "lr=nan"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"epochs": -1}, "epochs=-1"),
        ({"epochs": "abc"}, "epochs='abc'"),
        ({"use_afw": "maybe"}, "use_afw='maybe'"),
        ({"epochz": 1}, "did you mean epochs"),
    ]:
        with pytest.raises(ValueError, match="expected|unknown") as info:
            check_training("tiny", "ta", bad)
        assert fragment in str(info.value)
    assert check_seeds((0, "3")) == [0, 3]
    with pytest.raises(ValueError, match="seed=-1"):
        check_seeds((0, -1))
