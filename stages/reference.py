"""DVC stage `reference`: the float transformers model's transcripts and WER on the eval set."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS
from whisper_npu.entry import Command, run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the model stage's output")
    parser.add_argument("--data", type=Path, required=True, help="the data stage's output")
    parser.add_argument(
        "--out", type=Path, required=True, help="the transcripts directory to write"
    )
    parser.add_argument("--metrics", type=Path, required=True, help="the WER metrics JSON to write")


def run(args: argparse.Namespace) -> object:
    from pipeline.config import load_params
    from pipeline.export.reference import run_reference

    language = load_params(args.params).export.language
    return run_reference(args.model, args.data, args.out, args.metrics, language)


COMMAND = Command(
    "reference",
    "float transformers transcripts and WER on the eval set",
    add_arguments,
    run,
    params=DEFAULT_PARAMS,
    writes={"out": "directory", "metrics": "file"},
)

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run_stage(COMMAND)
