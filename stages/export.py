"""DVC stage `export`: the static-shape fp32 ONNX bundle, parity-gated against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, load_params
from whisper_npu.entry import Command, run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the model stage's output")
    parser.add_argument("--data", type=Path, required=True, help="the data stage's output")
    parser.add_argument(
        "--reference", type=Path, required=True, help="the reference stage's output"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="the fp32 bundle directory to write"
    )


def run(args: argparse.Namespace) -> object:
    from pipeline.export.onnx_bundle import export_bundle

    params = load_params(args.params).export
    return export_bundle(params, args.model, args.data, args.reference, args.out)


COMMAND = Command(
    "export",
    "static-shape ONNX bundle for the NPU, parity-gated against PyTorch",
    add_arguments,
    run,
    params=DEFAULT_PARAMS,
    writes={"out": "directory"},
)

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run_stage(COMMAND)
