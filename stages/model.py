"""DVC stage `model`: any Whisper checkpoint (builtin, hub, local, CTranslate2) as a
transformers directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, load_params
from whisper_npu.entry import Command, run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, required=True, help="the transformers model directory to write"
    )


def run(args: argparse.Namespace) -> object:
    from pipeline.sources.model import fetch_model

    return fetch_model(load_params(args.params).model, args.out)


COMMAND = Command(
    "model",
    "fetch or convert Whisper into a transformers directory",
    add_arguments,
    run,
    params=DEFAULT_PARAMS,
    writes={"out": "directory"},
)

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run_stage(COMMAND)
