"""The generated references (cvpipe/reference.py): the committed docs/reference files are current, and they name
every CLI flag and every pipeline key."""

from __future__ import annotations

import argparse

from cvpipe.cli import build_parser
from cvpipe.reference import _subcommands, cli_reference, config_keys, config_reference, documents

from .conftest import REPO

STALE = "docs/reference is stale: run `python -m cvpipe.reference docs/reference` and commit the result"


def test_the_committed_references_are_current():
    for name, text in documents().items():
        assert (REPO / "docs" / "reference" / name).read_text() == text, STALE


def test_every_flag_of_every_command_is_in_the_cli_reference():
    text = cli_reference()
    commands = _subcommands(build_parser())
    assert {"cvpipe predict", "cvpipe data fetch", "cvpipe video", "cvpipe eval"} <= {line for line, _, _ in commands}
    for line, parser, _ in commands:
        section = text.split(f"## `{line}`\n", 1)[1].split("\n## ", 1)[0]
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                for flag in action.option_strings or [action.dest]:
                    assert flag in section, (line, flag)


def test_every_pipeline_key_is_in_the_config_reference():
    text = config_reference()
    keys = [path for path, *_ in config_keys()]
    assert {"eval.area_ranges", "train.layer_decay", "model.head.reuse_classes", "model.head.anchor_sizes",
            "video.lines", "tiling.merge"} <= set(keys)
    for path in keys:
        assert f"| `{path}` |" in text, path
    assert "the best-F1 one" in text  # defaults.yaml's comments are the descriptions
