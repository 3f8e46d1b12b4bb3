"""`whisper-npu` (also `python -m pipeline`): one sub-command per pipeline stage.

params.yaml is validated before any command runs; bad input of any kind ends in one line on
stderr and exit code 2, with previous outputs left as they were.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.config import DEFAULT_PARAMS, Params, load_params
from pipeline.errors import UserError

Command = Callable[[argparse.Namespace, Params], Any]


def _model(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.model_source import fetch_model

    return fetch_model(params.model, args.out)


def _data(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.speech_sets import build_speech_sets

    manifest = build_speech_sets(params.data, args.out)
    return {
        name: {k: v for k, v in info.items() if k != "source"}
        for name, info in manifest["sets"].items()
    }


def _reference(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.reference import run_reference

    return run_reference(args.model, args.data, args.out, args.metrics)


def _export(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.export import export_bundle

    return export_bundle(params.export, args.model, args.data, args.reference, args.out)


def _calibrate(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.calibration import run_calibration

    return run_calibration(params.calibrate, args.bundle, args.data, args.out)


def _sensitivity(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.sensitivity import run_sensitivity

    return run_sensitivity(params.quantize, args.bundle, args.calibration, args.out)


def _quantize(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.quantize import quantize_variant

    out = args.out or Path("artifacts/bundles") / args.variant
    return quantize_variant(
        params.quantize,
        args.variant,
        args.bundle,
        args.calibration,
        args.sensitivity,
        args.data,
        out,
    )


def _evaluate(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.evaluate import evaluate_bundle

    return evaluate_bundle(args.artifact, args.data, args.providers)


def _transcribe(args: argparse.Namespace, params: Params) -> int:
    """One line per file (or a JSON list); a bad file is reported and the others still run."""
    from pipeline.audio import load_audio
    from pipeline.runtime import Transcriber

    transcriber = Transcriber.from_bundle(
        args.artifact, providers=args.providers, threads=args.threads
    )
    results, failed = [], False
    for path in args.audio:
        try:
            text = transcriber.transcribe(load_audio(path)).text
        except UserError as exc:
            print(f"whisper-npu transcribe: error: {exc}", file=sys.stderr)
            failed = True
            continue
        results.append({"path": str(path), "text": text})
        if not args.json:
            print(text if len(args.audio) == 1 else f"{path}\t{text}", flush=True)
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    return 2 if failed else 0


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--params", type=Path, default=DEFAULT_PARAMS, help="params file (default: params.yaml)"
    )
    parser = argparse.ArgumentParser(prog="whisper-npu", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    model = commands.add_parser(
        "model", parents=[common], help="fetch or convert Whisper into a transformers directory"
    )
    model.add_argument("--out", type=Path, default=Path("artifacts/model"))
    model.set_defaults(run=_model)

    data = commands.add_parser(
        "data", parents=[common], help="build the calibration and evaluation speech sets"
    )
    data.add_argument("--out", type=Path, default=Path("artifacts/data"))
    data.set_defaults(run=_data)

    reference = commands.add_parser(
        "reference", parents=[common], help="float transformers transcripts and WER on the eval set"
    )
    reference.add_argument("--model", type=Path, default=Path("artifacts/model"))
    reference.add_argument("--data", type=Path, default=Path("artifacts/data"))
    reference.add_argument("--out", type=Path, default=Path("artifacts/reference"))
    reference.add_argument("--metrics", type=Path, default=Path("artifacts/metrics/reference.json"))
    reference.set_defaults(run=_reference)

    export = commands.add_parser(
        "export",
        parents=[common],
        help="static-shape ONNX bundle for the NPU, parity-gated against PyTorch",
    )
    export.add_argument("--model", type=Path, default=Path("artifacts/model"))
    export.add_argument("--data", type=Path, default=Path("artifacts/data"))
    export.add_argument("--reference", type=Path, default=Path("artifacts/reference"))
    export.add_argument("--out", type=Path, default=Path("artifacts/bundles/fp32"))
    export.set_defaults(run=_export)

    calibrate = commands.add_parser(
        "calibrate", parents=[common], help="record real encoder/decoder inputs for quantization"
    )
    calibrate.add_argument("--bundle", type=Path, default=Path("artifacts/bundles/fp32"))
    calibrate.add_argument("--data", type=Path, default=Path("artifacts/data"))
    calibrate.add_argument("--out", type=Path, default=Path("artifacts/calibration"))
    calibrate.set_defaults(run=_calibrate)

    sensitivity = commands.add_parser(
        "sensitivity", parents=[common], help="per-layer output SNR under each quantization grid"
    )
    sensitivity.add_argument("--bundle", type=Path, default=Path("artifacts/bundles/fp32"))
    sensitivity.add_argument("--calibration", type=Path, default=Path("artifacts/calibration"))
    sensitivity.add_argument("--out", type=Path, default=Path("artifacts/sensitivity"))
    sensitivity.set_defaults(run=_sensitivity)

    quantize = commands.add_parser(
        "quantize", parents=[common], help="quantize the fp32 bundle for one variant"
    )
    quantize.add_argument("--variant", required=True, choices=["a16w8", "bf16", "xint8", "a8w8"])
    quantize.add_argument("--bundle", type=Path, default=Path("artifacts/bundles/fp32"))
    quantize.add_argument("--calibration", type=Path, default=Path("artifacts/calibration"))
    quantize.add_argument("--sensitivity", type=Path, default=Path("artifacts/sensitivity"))
    quantize.add_argument("--data", type=Path, default=Path("artifacts/data"))
    quantize.add_argument(
        "--out", type=Path, default=None, help="default: artifacts/bundles/<variant>"
    )
    quantize.set_defaults(run=_quantize)

    evaluate = commands.add_parser(
        "evaluate", parents=[common], help="WER of a bundle on the eval set"
    )
    evaluate.add_argument(
        "--artifact", type=Path, default=Path("artifacts/bundles/fp32"), help="bundle directory"
    )
    evaluate.add_argument("--data", type=Path, default=Path("artifacts/data"))
    evaluate.add_argument("--providers", nargs="+", default=["CPUExecutionProvider"])
    evaluate.set_defaults(run=_evaluate)

    transcribe = commands.add_parser(
        "transcribe", parents=[common], help="transcribe audio files with a bundle"
    )
    transcribe.add_argument(
        "--artifact", type=Path, default=Path("artifacts/bundles/fp32"), help="bundle directory"
    )
    transcribe.add_argument("--json", action="store_true", help="print a JSON list of {path, text}")
    transcribe.add_argument(
        "--providers",
        nargs="+",
        default=["CPUExecutionProvider"],
        help="ONNX Runtime execution providers, in order",
    )
    transcribe.add_argument(
        "--threads", type=int, default=None, help="intra-op threads (default: ORT's choice)"
    )
    transcribe.add_argument("audio", nargs="+", type=Path)
    transcribe.set_defaults(run=_transcribe)
    return parser


def _interrupt_on_sigterm() -> None:
    """Turn SIGTERM (dvc, CI or a user stopping the stage) into KeyboardInterrupt, so scratch
    outputs are removed and the previous outputs stay as they were."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _interrupt_on_sigterm()
    try:
        params = load_params(args.params)
        outcome = args.run(args, params)
    except UserError as exc:
        print(f"whisper-npu {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(
            f"whisper-npu {args.command}: interrupted; previous outputs left untouched",
            file=sys.stderr,
        )
        return 130
    if isinstance(outcome, int):
        return outcome
    print(json.dumps(outcome, indent=2, default=str))
    return 0
