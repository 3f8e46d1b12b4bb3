"""DVC stage `sensitivity`: per-layer output SNR of both graphs under each rounding grid in use."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, load_params
from whisper_npu.entry import Command, run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="the fp32 bundle")
    parser.add_argument(
        "--calibration", type=Path, required=True, help="the calibrate stage's output"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="the sensitivity directory to write"
    )


def run(args: argparse.Namespace) -> object:
    from pipeline.quant.sensitivity import run_sensitivity

    params = load_params(args.params).quantize
    return run_sensitivity(params, args.bundle, args.calibration, args.out)


COMMAND = Command(
    "sensitivity",
    "per-layer output SNR under each quantization grid",
    add_arguments,
    run,
    params=DEFAULT_PARAMS,
    writes={"out": "directory"},
)

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run_stage(COMMAND)
