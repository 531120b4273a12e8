"""`erc <command>`: every subcommand is documented, the example its --help shows is a command line
that parses, and its flags reach the code they configure."""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.cli import build_parser, main

PARSER = build_parser()
SUBCOMMANDS = next(a for a in PARSER._actions if isinstance(a, argparse._SubParsersAction)).choices


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_every_subcommand_has_a_description_a_working_example_and_argument_help(name):
    sub = SUBCOMMANDS[name]
    assert sub.description, f"erc {name} has no description"
    assert sub.epilog.startswith("example:\n")  # shown at the end of --help
    examples = [line.strip() for line in sub.epilog.splitlines() if line.startswith("  erc ")]
    assert examples, f"erc {name} shows no example"
    for example in examples:  # each one a command line that parses
        prog, *argv = shlex.split(example.replace("<name>", "demo"))
        assert prog == "erc" and PARSER.parse_args(argv).command == name, example
    undocumented = [
        a.dest for a in sub._actions if not a.help and not isinstance(a, argparse._HelpAction)
    ]
    assert undocumented == [], name


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--features", "f", "--out", "o", "--seed", "3"], {"seed": 3}),
        (["evaluate", "--checkpoint", "c", "--features", "f", "--split", "dev",
          "--device", "cuda:1"], {"split": "dev", "device": "cuda:1"}),
        (["predict", "a.mp4", "clips/", "--checkpoint", "c", "--out", "o"],
         {"inputs": [Path("a.mp4"), Path("clips")]}),
        (["manifest", "meld", "--out", "m.csv"], {"dataset": "meld"}),
        (["import", "synthetic", "--out", "fs"], {"name": "synthetic"}),
    ],
)  # fmt: skip
def test_flags_parse_to_typed_values(argv, expected):
    args = PARSER.parse_args(argv)
    assert {k: getattr(args, k) for k in expected} == expected


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--checkpoint", "c", "--features", "f", "--split", "validation"],
        ["train", "--features", "f", "--out", "o", "--seed", "one"],
        ["manifest", "voxceleb", "--out", "m.csv"],
        ["extract", "--manifest", "m", "--store", "s", "--preset", "huge"],
    ],
)
def test_a_bad_value_is_refused_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        PARSER.parse_args(argv)
    assert exit_.value.code == 2 and "invalid" in capsys.readouterr().err


def test_grid_seeds_reach_the_grid_as_integers(monkeypatch, tmp_path):
    import pipeline.training.grid

    seen = {}

    def run_grid(features, out, subsets, seeds, *rest, **kw):
        seen.update(subsets=subsets, seeds=seeds)
        (tmp_path / "grid.md").write_text("table")
        return tmp_path / "grid.md"

    monkeypatch.setattr(pipeline.training.grid, "run_grid", run_grid)
    argv = ["grid", "--features", "f", "--out", "o", "--subsets", "ta,t", "--seeds", "4,7"]
    assert main(argv) == 0
    assert seen == {"subsets": ["ta", "t"], "seeds": [4, 7]}


def test_extract_offers_every_extractor_preset():
    from extractors.presets import preset_names

    for name in preset_names():
        argv = ["extract", "--manifest", "m", "--store", "s", "--preset", name]
        assert PARSER.parse_args(argv).preset == name
    assert SUBCOMMANDS["extract"].get_default("preset") in preset_names()


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


def test_a_command_loads_only_its_own_area():
    # `erc train` must not pay for speech recognition, media decoding or extractor presets: a
    # fresh interpreter, so nothing was imported before.
    code = (
        "import sys; from pipeline.cli import build_parser; "
        "build_parser(['-v', 'train', '--features', 'f', '--out', 'o']); "
        "print(sorted(m for m in sys.modules if m.startswith(('pipeline', 'extractors'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = out.stdout
    assert "pipeline.cli.train" in loaded
    for other in ("pipeline.cli.predict", "pipeline.cli.extract", "pipeline.inference.asr",
                  "pipeline.dataset.media", "extractors.presets"):  # fmt: skip
        assert other not in loaded, loaded


def test_every_area_registers_the_commands_the_table_names():
    from pipeline.cli import AREAS

    assert sorted(SUBCOMMANDS) == sorted(c for commands in AREAS.values() for c in commands)
