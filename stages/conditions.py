"""DVC stage `conditions`: seeded, deterministic degradations (noise, rooms, telephone, levels)
of the clean eval clips or of the held-back calibration clips, saved as `datasets`."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, load_params
from whisper_npu.entry import Command, run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="set_name",
        choices=("eval", "holdback"),
        required=True,
        help="degrade the eval clips (the bench) or the held-back calibration clips (quantize)",
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="the data stage's output (the clean sets)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the conditions directory to write")


def run(args: argparse.Namespace) -> object:
    from pipeline.sources.conditions import build_condition_set

    manifest = build_condition_set(load_params(args.params), args.set_name, args.data, args.out)
    return {
        name: {"clips": entry.clips, "total_s": entry.total_s}
        for name, entry in manifest.conditions.items()
    }


COMMAND = Command(
    "conditions",
    "degrade the clean eval or held-back calibration clips (noise, rooms, telephone, levels)",
    add_arguments,
    run,
    params=DEFAULT_PARAMS,
    writes={"out": "directory"},
)

# Guarded: pipeline.cli imports this module for the command alone.
if __name__ == "__main__":
    run_stage(COMMAND)
