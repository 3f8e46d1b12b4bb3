"""DVC stage `calibrate`: real encoder/decoder inputs for the quantizer, and the fp32
transcripts of the held-back clips, clean and degraded."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, load_params
from whisper_npu.entry import Command, run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="the fp32 bundle")
    parser.add_argument("--data", type=Path, required=True, help="the data stage's output")
    parser.add_argument(
        "--conditions",
        type=Path,
        help="the conditions stage's holdback sets: degraded held-back clips to transcribe too",
    )
    parser.add_argument(
        "--languages",
        type=Path,
        help="the data_languages stage's output: a multilingual model's held-back half, "
        "transcribed too",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="the calibration directory to write"
    )


def run(args: argparse.Namespace) -> object:
    from pipeline.quant.calibration import HeldBackSets, run_calibration
    from pipeline.sources.condition_sets import load_condition_sets
    from pipeline.sources.multilingual import load_language_half

    params = load_params(args.params).calibrate
    held_back = HeldBackSets(
        load_condition_sets(args.conditions) if args.conditions else [],
        load_language_half(args.languages, "holdback") if args.languages else None,
    )
    return run_calibration(params, args.bundle, args.data, args.out, held_back)


COMMAND = Command(
    "calibrate",
    "record real encoder/decoder inputs for quantization",
    add_arguments,
    run,
    params=DEFAULT_PARAMS,
    writes={"out": "directory"},
)

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run_stage(COMMAND)
