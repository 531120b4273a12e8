"""`erc <command> --help`: every subcommand describes its arguments and shows an example."""

from __future__ import annotations

import argparse

import pytest

from pipeline.cli import build_parser
from pipeline.cli.extract import PRESETS

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


def test_extract_lists_the_presets_there_are():
    from extractors.presets import preset_names

    assert sorted(PRESETS) == sorted(preset_names())
    assert "{offline,paper,tiny}" in SUBCOMMANDS["extract"].format_help()
