"""DVC stage `compile`: a bundle's VitisAI EP set-up and NPU compile, or, where the EP is absent,
the forecast of how it would partition."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, load_params
from whisper_npu.entry import Command, run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="the bundle to compile")
    parser.add_argument("--out", type=Path, required=True, help="e.g. artifacts/compiled/a16w8")
    parser.add_argument(
        "--target", choices=["stx", "krk", "phx", "hpt"], help="overrides params compile.target"
    )
    parser.add_argument(
        "--amd-form", type=Path, help="the amd_form stage's output, reported beside the forecast"
    )
    parser.add_argument(
        "--allow-split",
        action="store_true",
        help="write the outputs even when the forecast splits (exit 0)",
    )


def run(args: argparse.Namespace) -> int:
    from pipeline.npu.compile import compile_bundle

    params = load_params(args.params).compile
    if args.target:
        params = params.model_copy(update={"target": args.target})
    compile_bundle(params, args.bundle, args.out, args.amd_form, args.allow_split)
    return 0


COMMAND = Command(
    "compile",
    "VitisAI EP options and NPU compile (or, without the EP, the partition forecast); "
    "exit 1 if a graph would split",
    add_arguments,
    run,
    params=DEFAULT_PARAMS,
    writes={"out": "directory"},
)

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run_stage(COMMAND)
