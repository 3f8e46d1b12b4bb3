"""The pipeline's commands: one per DVC stage (declared by its module in `stages/`), and the tools
that need the build stack: evaluate, check, forecast. `whisper-npu` (whisper_npu.cli) finds them
through the `whisper_npu.commands` entry point when the `pipeline` extra is installed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.config import (
    DEFAULT_PARAMS,
    DEFAULT_RAY_TIMEOUT_S,
    checked_ray_address,
    init_address,
)
from stages import (
    amd_form,
    bench,
    calibrate,
    compile,
    conditions,
    data,
    data_languages,
    export,
    model,
    quantize,
    reference,
    release,
    sensitivity,
)
from whisper_npu.cli import (
    ARTIFACT_HELP,
    add_device_argument,
    non_negative,
    positive_int,
    say_execution,
)
from whisper_npu.entry import Command, shown
from whisper_npu.errors import UserError


def _share(text: str) -> float:
    value = non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1, got {text}")
    return value


def _seconds(text: str) -> float:
    value = non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0, got {text}")
    return value


def _ray_address(text: str) -> str:
    """A checked address, "" (ray.init()'s own choice) for `--ray` alone: argparse passes its
    const through here too."""
    if not text:
        return ""
    try:
        return init_address(checked_ray_address(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is {exc}") from None


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifact", type=Path, default=Path("artifacts/bundles/fp32"), help=ARTIFACT_HELP
    )
    parser.add_argument("--data", type=Path, default=Path("artifacts/data"))
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        type=_ray_address,
        metavar="ADDRESS",
        help="shard the clips over Ray actors: alone, ray.init()'s default (a local cluster); "
        "'auto' or ray://host:10001 for a running cluster (needs pip install '.[ray]')",
    )
    parser.add_argument(
        "--ray-timeout",
        type=_seconds,
        default=DEFAULT_RAY_TIMEOUT_S,
        metavar="S",
        help="seconds to wait for the Ray cluster to answer (default: %(default)g)",
    )
    parser.add_argument(
        "--workers", type=positive_int, help="Ray actors (default: one per CPU of the cluster)"
    )
    parser.add_argument("--clips", type=Path, help="write the per-clip results (JSON Lines) here")
    add_device_argument(parser)


def _evaluate(args: argparse.Namespace) -> object:
    from pipeline.bench.evaluate import EvaluateOptions, evaluate_bundle
    from whisper_npu.execution import Execution

    if args.workers is not None and args.ray is None:
        raise UserError("--workers needs --ray")
    options = EvaluateOptions(args.ray, args.workers, args.clips, args.device, args.ray_timeout)
    result = evaluate_bundle(args.artifact, args.data, options)
    say_execution("evaluate", Execution.model_validate(result["execution"]))
    return result


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", type=Path, required=True, help="a previous bench.json")
    parser.add_argument("--current", type=Path, default=Path("artifacts/metrics/bench.json"))
    parser.add_argument("--max-wer-increase", type=non_negative, help="override gate (points)")
    parser.add_argument(
        "--max-latency-increase", type=non_negative, help="override gate (relative, 0.25 = 25%%)"
    )
    parser.add_argument("--min-qoi", type=_share, help="override gate (0.9 = 90%% of clips)")


def _check(args: argparse.Namespace) -> int:
    from pipeline.bench.gate import check
    from pipeline.config import load_params

    overrides = {
        "max_wer_increase": args.max_wer_increase,
        "max_latency_increase": args.max_latency_increase,
        "min_qoi": args.min_qoi,
    }
    gate = load_params(args.params).gate
    gate = gate.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    return check(args.baseline, args.current, gate)


def _forecast_arguments(parser: argparse.ArgumentParser) -> None:
    from whisper_npu.variants import Flow

    parser.add_argument("graphs", nargs="+", type=Path, help="ONNX files, e.g. your own exports")
    parser.add_argument(
        "--flow",
        choices=[flow.value for flow in Flow],
        help="default: x2-int for a graph with Q/DQ nodes, else vaiml",
    )
    parser.add_argument(
        "--column",
        choices=["BF16", "A16W8", "A8W8", "XINT8"],
        help="AMD's table column (default: read from the graph's quantizers)",
    )
    parser.add_argument("--target", choices=["stx", "krk", "phx", "hpt"], default="stx")
    parser.add_argument("--json", action="store_true", help="print the forecasts as JSON")


def _forecast(args: argparse.Namespace) -> int:
    """Exit 0 when every graph is clean, 1 when one would split (or has no NPU path)."""
    from pipeline.npu.forecast import forecast_file, graph_line
    from whisper_npu.variants import Flow

    flow = Flow(args.flow) if args.flow else None
    found = [forecast_file(path, flow, args.column, args.target) for path in args.graphs]
    if args.json:
        print(json.dumps([record.to_json() for record in found], indent=2))
    for record in found if not args.json else []:
        print(graph_line(shown(Path(record.path)), record.placement, record.flow, record.column))
        if record.no_npu_reason:
            print(f"  no NPU path: {record.no_npu_reason}")
    return 0 if all(record.clean for record in found) else 1


TOOLS = (
    Command(
        "evaluate",
        "WER of a bundle on the eval set",
        _evaluate_arguments,
        _evaluate,
        params=DEFAULT_PARAMS,
        writes={"clips": "file"},
    ),
    Command(
        "check",
        "exit 1 if a bench run regresses against a baseline (thresholds: params gate)",
        _check_arguments,
        _check,
        params=DEFAULT_PARAMS,
    ),
    Command(
        "forecast",
        "how the VitisAI EP would partition ONNX graphs (exit 1 if one would split)",
        _forecast_arguments,
        _forecast,
    ),
)
STAGES = tuple(
    stage.COMMAND
    for stage in (
        model,
        data,
        data_languages,
        conditions,
        reference,
        export,
        calibrate,
        sensitivity,
        quantize,
        amd_form,
        compile,
        bench,
        release,
    )
)
COMMANDS = (*STAGES, *TOOLS)
