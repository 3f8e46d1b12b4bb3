"""DVC stage `quantize`: one variant of the fp32 bundle, with the fewest float layers that keep
its held-back WER within budget on every held-back condition."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, load_params
from whisper_npu.entry import Command, run_stage
from whisper_npu.variants import QUANTIZED


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variant", required=True, choices=[v.value for v in QUANTIZED])
    parser.add_argument("--bundle", type=Path, required=True, help="the fp32 bundle")
    parser.add_argument(
        "--calibration", type=Path, required=True, help="the calibrate stage's output"
    )
    parser.add_argument(
        "--sensitivity", type=Path, required=True, help="the sensitivity stage's output"
    )
    parser.add_argument("--data", type=Path, required=True, help="the data stage's output")
    parser.add_argument(
        "--conditions",
        type=Path,
        help="the conditions stage's holdback sets (the ones the calibrate stage transcribed)",
    )
    parser.add_argument(
        "--languages",
        type=Path,
        help="the data_languages stage's output (the one the calibrate stage transcribed)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="the variant's bundle directory to write"
    )


def run(args: argparse.Namespace) -> object:
    from pipeline.quant.quantize import QuantizeInputs, quantize_variant

    params = load_params(args.params).quantize
    inputs = QuantizeInputs(
        args.bundle, args.calibration, args.sensitivity, args.data, args.conditions, args.languages
    )
    return quantize_variant(params, args.variant, inputs, args.out)


COMMAND = Command(
    "quantize",
    "quantize the fp32 bundle for one variant",
    add_arguments,
    run,
    params=DEFAULT_PARAMS,
    writes={"out": "directory"},
)

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run_stage(COMMAND)
