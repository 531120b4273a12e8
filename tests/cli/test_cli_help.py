"""`erc <command> --help`: every subcommand describes its arguments and shows an example."""

from __future__ import annotations

import argparse

import pytest

from pipeline.cli import build_parser

PARSER = build_parser()
SUBCOMMANDS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_a_description_an_example_and_argument_help(name):
    sub = SUBCOMMANDS[name]
    text = sub.format_help()
    assert "example:\n  erc " + name in text
    assert sub.description, f"erc {name} has no description"
    undocumented = [
        a.dest for a in sub._actions if not a.help and not isinstance(a, argparse._HelpAction)
    ]
    assert undocumented == [], name


@pytest.mark.parametrize(
    "name, option, words",
    [
        ("train", "--seed", "seed of initialisation"),
        ("evaluate", "--split", "split to evaluate"),
        ("evaluate", "--device", "torch device"),
        ("grid", "--seeds", "comma-separated seeds"),
        ("predict", "inputs", "folders of them"),
        ("manifest", "dataset", "raw layout"),
        ("import", "name", "what to import"),
    ],
)
def test_named_arguments_have_help(name, option, words):
    [action] = [
        a for a in SUBCOMMANDS[name]._actions if option in a.option_strings or a.dest == option
    ]
    assert words in action.help


@pytest.mark.parametrize(
    "argv",
    [
        ["extract", "--manifest", "m.csv", "--store", "s", "--modalities", "tx"],
        ["train", "--features", "fs", "--out", "run", "--modalities", "tat"],
        ["grid", "--features", "fs", "--out", "run", "--subsets", "ta,q"],
        ["gc", "--store", "s", "--modalities", ""],
    ],
)
def test_a_bad_modality_string_is_refused_before_anything_runs(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        PARSER.parse_args(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert "argument --" in err and "expected a non-empty subset of the letters" in err


def test_modalities_reach_the_commands_in_canonical_order():
    args = PARSER.parse_args(["extract", "--manifest", "m", "--store", "s", "--modalities", "VT"])
    assert args.modalities == "tv"
    args = PARSER.parse_args(["grid", "--features", "fs", "--out", "o", "--subsets", "at,v"])
    assert args.subsets == ["ta", "v"]


def test_extract_takes_an_extractor_preset_and_train_a_model_preset(capsys):
    assert PARSER.parse_args(["extract", "--manifest", "m", "--store", "s"]).preset == "offline"
    args = PARSER.parse_args(["train", "--features", "fs", "--out", "o", "--model-preset", "tiny"])
    assert args.model_preset == "tiny"
    for argv in (
        ["extract", "--manifest", "m", "--store", "s", "--preset", "iemocap"],
        ["train", "--features", "fs", "--out", "o", "--model-preset", "offline"],
    ):
        with pytest.raises(SystemExit):
            PARSER.parse_args(argv)
        assert "invalid choice" in capsys.readouterr().err
