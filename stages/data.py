"""DVC stage `data`: the calibration and evaluation speech sets, saved as `datasets`."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, load_params
from whisper_npu.entry import Command, run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, required=True, help="the speech sets directory to write"
    )


def run(args: argparse.Namespace) -> object:
    from pipeline.sources.speech_sets import build_speech_sets

    manifest = build_speech_sets(load_params(args.params).data, args.out)
    return {
        name: {k: v for k, v in info.items() if k != "source"}
        for name, info in manifest["sets"].items()
    }


COMMAND = Command(
    "data",
    "build the calibration and evaluation speech sets",
    add_arguments,
    run,
    params=DEFAULT_PARAMS,
    writes={"out": "directory"},
)

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run_stage(COMMAND)
