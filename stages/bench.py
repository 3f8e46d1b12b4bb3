"""DVC stage `bench`: WER and latency of every compiled variant against the fp32 CPU baseline and
the peers, in one run, as DVC metrics and plots."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, load_params
from whisper_npu.entry import Command, run_stage
from whisper_npu.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--compiled", type=Path, required=True, help="the compiled variants")
    parser.add_argument("--data", type=Path, required=True, help="the data stage's output")
    parser.add_argument("--out", type=Path, required=True, help="the metrics JSON to write")
    parser.add_argument(
        "--clips", type=Path, required=True, help="the per-clip results (JSON Lines) to write"
    )
    parser.add_argument("--plots", type=Path, required=True, help="the plots directory to write")
    parser.add_argument(
        "--baseline-bundle",
        type=Path,
        required=True,
        help="the fp32 bundle every variant is measured against, on CPU",
    )
    parser.add_argument("--model", type=Path, required=True, help="weights for the peers")
    parser.add_argument(
        "--reference",
        type=Path,
        help="the reference stage's output: the fp32 baseline and the transformers peer take "
        "their eval transcripts from it (checked on the timed clips) instead of a full pass",
    )
    parser.add_argument(
        "--languages",
        type=Path,
        help="the data_languages stage's output: a multilingual model's language-ID accuracy "
        "and per-language WER on it",
    )
    parser.add_argument(
        "--device-reports",
        type=Path,
        help="a directory of `whisper-npu device-report` JSONs sent back from Ryzen AI laptops: "
        "those of a benched variant's bundle are shown as measured on device, never gated",
    )
    parser.add_argument(
        "--conditions",
        type=Path,
        help="the conditions stage's eval output: every engine's WER, loops and QoI on each "
        "degraded copy of the eval clips",
    )


def run(args: argparse.Namespace) -> int:
    """Its outputs are checked before it starts (the entry point: `writes`): a refusal after
    the measurements would waste the run."""
    from pipeline.bench.sharded import ray_missing

    params = load_params(args.params)
    if params.bench.ray is not None and (missing := ray_missing("bench.ray")):
        raise UserError(missing)
    from pipeline.bench.languages import format_languages
    from pipeline.bench.report import format_busy, format_conditions, format_table
    from pipeline.bench.run import BenchPaths, run_bench

    paths = BenchPaths(
        compiled_dir=args.compiled,
        data_dir=args.data,
        out_file=args.out,
        clips_file=args.clips,
        plots_dir=args.plots,
        baseline_bundle=args.baseline_bundle,
        model_dir=args.model,
        reference_dir=args.reference,
        languages_dir=args.languages,
        device_reports_dir=args.device_reports,
        conditions_dir=args.conditions,
    )
    result = run_bench(params.compile.variants, params.bench, paths)
    print(format_table(result))
    if result.metrics.conditions:
        print(f"\n{format_conditions(result.metrics)}")
    if busy := format_busy(result.metrics):
        print(f"\n{busy}")
    print(format_languages(result.metrics.languages, result.languages_note))
    return 0


COMMAND = Command(
    "bench",
    "WER and latency of every variant against fp32 CPU and the peers, one run",
    add_arguments,
    run,
    params=DEFAULT_PARAMS,
    writes={"out": "file", "clips": "file", "plots": "directory"},
)

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run_stage(COMMAND)
