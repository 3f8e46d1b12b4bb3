"""DVC stage `release`: one deployable directory per variant (bundle + npu/ + model card),
verifiable with `whisper-npu verify` and pulled through the DVC remote."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, load_params
from whisper_npu.entry import Command, run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, required=True, help="the variant's bundle")
    parser.add_argument("--compiled", type=Path, required=True, help="its compiled directory")
    parser.add_argument("--metrics", type=Path, required=True, help="the bench metrics JSON")
    parser.add_argument(
        "--data", type=Path, help="the data stage's output, whose first eval clips ship in eval/"
    )
    parser.add_argument("--out", type=Path, required=True, help="the release directory to write")


def run(args: argparse.Namespace) -> object:
    from pipeline.release.build import EvalSet, build_release

    clips = load_params(args.params).release.eval_clips
    eval_set = EvalSet(args.data, clips) if args.data and clips else None
    return build_release(args.bundle, args.compiled, args.metrics, args.out, eval_set)


COMMAND = Command(
    "release",
    "one deployable dir per variant: bundle + npu/ + model card",
    add_arguments,
    run,
    params=DEFAULT_PARAMS,
    writes={"out": "directory"},
)

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run_stage(COMMAND)
