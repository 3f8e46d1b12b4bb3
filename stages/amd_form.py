"""DVC stage `amd_form`: the configured model in AMD's documented Whisper demo form (optimum
opset-17 export, shapes fixed by make_dynamic_shape_fixed), forecast under VAIML with the rules
our bundles are forecast by: the calibration the forecast is judged against."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, load_params
from whisper_npu.entry import Command, run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", type=Path, required=True, help="the model stage's output")
    parser.add_argument("--out", type=Path, required=True, help="e.g. artifacts/amd_form")


def run(args: argparse.Namespace) -> int:
    from pipeline.npu.amd_form import forecast_amd_form
    from pipeline.npu.forecast import summary_lines
    from whisper_npu.fsutil import atomic_dir
    from whisper_npu.layout import AMD_FORM_FILE

    params = load_params(args.params)
    with tempfile.TemporaryDirectory() as graphs, atomic_dir(Path(args.out)) as scratch:
        record = forecast_amd_form(
            args.model, params.model.source, Path(graphs), params.compile.tokens_per_window
        )
        record.write(scratch / AMD_FORM_FILE)
    print("\n".join(summary_lines("AMD demo form", record.forecast)), flush=True)
    return 0


COMMAND = Command(
    "amd_form",
    "the model in AMD's Whisper demo form, forecast as our bundles are (the calibration)",
    add_arguments,
    run,
    params=DEFAULT_PARAMS,
    writes={"out": "directory"},
)

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run_stage(COMMAND)
