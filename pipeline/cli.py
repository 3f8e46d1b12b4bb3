"""`whisper-npu` (also `python -m pipeline`): one sub-command per pipeline stage.

params.yaml is validated before any command runs; bad input of any kind ends in one line on
stderr and exit code 2, with previous outputs left as they were.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from pipeline.errors import UserError
from pipeline.variants import QUANTIZED

if TYPE_CHECKING:  # imported in main, after the SIGTERM handler: an early signal is no traceback
    from pipeline.config import Params

INTERRUPTED = 130  # exit code of a run stopped by SIGINT/SIGTERM (128 + SIGINT, as shells do)
ARTIFACT_HELP = (
    "bundle, compiled (runs on the VitisAI EP where it is installed) or release directory"
)


def _model(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.sources.model import fetch_model

    return fetch_model(params.model, args.out)


def _data(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.sources.speech_sets import build_speech_sets

    manifest = build_speech_sets(params.data, args.out)
    return {
        name: {k: v for k, v in info.items() if k != "source"}
        for name, info in manifest["sets"].items()
    }


def _reference(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.export.reference import run_reference

    return run_reference(args.model, args.data, args.out, args.metrics)


def _export(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.export.onnx_bundle import export_bundle

    return export_bundle(params.export, args.model, args.data, args.reference, args.out)


def _calibrate(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.quant.calibration import run_calibration

    return run_calibration(params.calibrate, args.bundle, args.data, args.out)


def _sensitivity(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.quant.sensitivity import run_sensitivity

    return run_sensitivity(params.quantize, args.bundle, args.calibration, args.out)


def _quantize(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.quant.quantize import quantize_variant

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


def _say_fallback(command: str, execution: dict[str, Any]) -> None:
    """One plain line when a compiled artifact wanted the NPU and runs on the CPU instead."""
    if execution.get("fallback"):
        print(f"whisper-npu {command}: {execution['fallback']}", file=sys.stderr)


def _evaluate(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.bench.evaluate import evaluate_bundle

    result = evaluate_bundle(args.artifact, args.data)
    _say_fallback("evaluate", result["execution"])
    return result


def _compile(args: argparse.Namespace, params: Params) -> int:
    from pipeline.npu.compile import compile_bundle

    compile_bundle(params.compile, args.bundle, args.out, args.target, args.allow_split)
    return 0


def _bench(args: argparse.Namespace, params: Params) -> int:
    """Output paths are checked first: a refusal after the measurements would waste the run."""
    from pipeline.fsutil import check_output_dir

    if os.path.lexists(args.out) and not args.out.is_file():
        raise UserError(f"{args.out}: exists and is not a file; bench writes its JSON there")
    inputs = [args.compiled, args.data, args.baseline_bundle, args.model]
    check_output_dir(args.plots, *inputs, *([args.reference] if args.reference else []))
    from pipeline.bench.run import format_table, run_bench

    result = run_bench(
        params.compile.variants,
        params.bench,
        args.compiled,
        args.data,
        args.out,
        args.plots,
        baseline_bundle=args.baseline_bundle,
        model_dir=args.model,
        reference_dir=args.reference,
    )
    print(format_table(result))
    return 0


def _check(args: argparse.Namespace, params: Params) -> int:
    from pipeline.bench.gate import check

    overrides = {
        "max_wer_increase": args.max_wer_increase,
        "max_latency_increase": args.max_latency_increase,
    }
    gate = params.gate.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    return check(args.baseline, args.current, gate)


def _non_negative(text: str) -> float:
    """A finite threshold >= 0: nan would compare False and pass every regression."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


def _shown(path: Path) -> str:
    """A path as printable text: undecodable bytes of a file name become \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _os_error(exc: OSError) -> str:
    """An OS error the user can cause (permissions, a full disk, a symlink loop) in one line."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    names = [_shown(Path(name)) for name in (exc.filename, exc.filename2) if name]
    return f"{' -> '.join(names)}: {reason}" if names else reason


def _transcribe(args: argparse.Namespace, params: Params) -> int:
    """One line per file (or a JSON list); a bad file is reported and the others still run."""
    from pipeline.runtime.audio import load_audio
    from pipeline.runtime.transcriber import Transcriber

    transcriber = Transcriber.from_artifact(args.artifact, threads=args.threads)
    _say_fallback("transcribe", transcriber.execution)
    results, failed = [], False
    for path in args.audio:
        try:
            text = transcriber.transcribe(load_audio(path)).text
        except (UserError, OSError) as exc:
            _error("transcribe", _os_error(exc) if isinstance(exc, OSError) else str(exc))
            failed = True
            continue
        results.append({"path": _shown(path), "text": text})
        if not args.json:
            print(text if len(args.audio) == 1 else f"{_shown(path)}\t{text}", flush=True)
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    return 2 if failed else 0


def _release(args: argparse.Namespace, params: Params) -> Any:
    from pipeline.release.build import build_release

    return build_release(args.bundle, args.compiled, args.metrics, args.out)


def _verify(args: argparse.Namespace, params: Params | None) -> int:
    from pipeline.release.verify import verify_artifact

    print(verify_artifact(args.artifact))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from pipeline.config import DEFAULT_PARAMS

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
    quantize.add_argument("--variant", required=True, choices=[v.value for v in QUANTIZED])
    quantize.add_argument("--bundle", type=Path, default=Path("artifacts/bundles/fp32"))
    quantize.add_argument("--calibration", type=Path, default=Path("artifacts/calibration"))
    quantize.add_argument("--sensitivity", type=Path, default=Path("artifacts/sensitivity"))
    quantize.add_argument("--data", type=Path, default=Path("artifacts/data"))
    quantize.add_argument(
        "--out", type=Path, default=None, help="default: artifacts/bundles/<variant>"
    )
    quantize.set_defaults(run=_quantize)

    compile_ = commands.add_parser(
        "compile",
        parents=[common],
        help="VitisAI EP options and NPU compile (or, without the EP, the partition forecast); "
        "exit 1 if a graph would split",
    )
    compile_.add_argument("--bundle", type=Path, required=True)
    compile_.add_argument("--out", type=Path, required=True, help="e.g. artifacts/compiled/a16w8")
    compile_.add_argument(
        "--target", choices=["stx", "krk", "phx", "hpt"], help="overrides params compile.target"
    )
    compile_.add_argument(
        "--allow-split",
        action="store_true",
        help="write the outputs even when the forecast splits (exit 0)",
    )
    compile_.set_defaults(run=_compile)

    evaluate = commands.add_parser(
        "evaluate", parents=[common], help="WER of a bundle on the eval set"
    )
    evaluate.add_argument(
        "--artifact", type=Path, default=Path("artifacts/bundles/fp32"), help=ARTIFACT_HELP
    )
    evaluate.add_argument("--data", type=Path, default=Path("artifacts/data"))
    evaluate.set_defaults(run=_evaluate)

    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="WER and latency of every variant against fp32 CPU and the peers, one run",
    )
    bench.add_argument("--compiled", type=Path, default=Path("artifacts/compiled"))
    bench.add_argument("--data", type=Path, default=Path("artifacts/data"))
    bench.add_argument("--out", type=Path, default=Path("artifacts/metrics/bench.json"))
    bench.add_argument("--plots", type=Path, default=Path("artifacts/metrics/bench"))
    bench.add_argument(
        "--baseline-bundle",
        type=Path,
        default=Path("artifacts/bundles/fp32"),
        help="the fp32 bundle every variant is measured against, on CPU",
    )
    bench.add_argument(
        "--model", type=Path, default=Path("artifacts/model"), help="weights for the peers"
    )
    bench.add_argument(
        "--reference",
        type=Path,
        help="the reference stage's output: the fp32 baseline and the transformers peer take "
        "their eval transcripts from it (checked on the timed clips) instead of a full pass",
    )
    bench.set_defaults(run=_bench)

    check = commands.add_parser(
        "check",
        parents=[common],
        help="exit 1 if a bench run regresses against a baseline (thresholds: params gate)",
    )
    check.add_argument("--baseline", type=Path, required=True, help="a previous bench.json")
    check.add_argument("--current", type=Path, default=Path("artifacts/metrics/bench.json"))
    check.add_argument("--max-wer-increase", type=_non_negative, help="override gate (points)")
    check.add_argument(
        "--max-latency-increase", type=_non_negative, help="override gate (relative, 0.25 = 25%%)"
    )
    check.set_defaults(run=_check)

    transcribe = commands.add_parser(
        "transcribe", parents=[common], help="transcribe audio files with a bundle"
    )
    transcribe.add_argument(
        "--artifact", type=Path, default=Path("artifacts/bundles/fp32"), help=ARTIFACT_HELP
    )
    transcribe.add_argument("--json", action="store_true", help="print a JSON list of {path, text}")
    transcribe.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="intra-op threads (default: ORT's choice)",
    )
    transcribe.add_argument("audio", nargs="+", type=Path)
    # Deployments transcribe with a pulled release and no params.yaml beside it.
    transcribe.set_defaults(run=_transcribe, needs_params=False)

    release = commands.add_parser(
        "release",
        parents=[common],
        help="one deployable dir per variant: bundle + npu/ + model card",
    )
    release.add_argument("--bundle", type=Path, required=True)
    release.add_argument("--compiled", type=Path, required=True)
    release.add_argument("--metrics", type=Path, default=Path("artifacts/metrics/bench.json"))
    release.add_argument("--out", type=Path, required=True)
    release.set_defaults(run=_release)

    verify = commands.add_parser(
        "verify",
        help="re-hash a release (card.json) or bundle (bundle.json); exit 1 on any difference",
    )
    verify.add_argument("artifact", type=Path, help="release or bundle directory")
    # Runs where a pulled release is deployed, which has no params.yaml.
    verify.set_defaults(run=_verify, needs_params=False)
    return parser


class _Interrupts:
    """SIGINT/SIGTERM (dvc, CI or a user stopping the stage) become KeyboardInterrupt, so scratch
    outputs are removed and the previous outputs stay as they were; and the arrival is noted,
    because a KeyboardInterrupt raised inside a C extension's import (onnxruntime's) comes out
    as an ImportError instead."""

    seen = False

    @classmethod
    def install(cls) -> None:
        def handler(signum: int, frame: object) -> None:
            cls.seen = True
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)


def _speaker(command: str | None) -> str:
    """Who a stderr line comes from: the command once argparse has named it."""
    return f"whisper-npu {command}" if command else "whisper-npu"


def _error(command: str | None, message: str) -> None:
    """The one stderr line of a refused call (a message never spans lines)."""
    print(f"{_speaker(command)}: error: {' '.join(message.splitlines())}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from pipeline.config import load_params

    params = load_params(args.params) if getattr(args, "needs_params", True) else None
    outcome = args.run(args, params)
    if isinstance(outcome, int):
        return outcome
    print(json.dumps(outcome, indent=2, default=str))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Every failure a user can cause ends here as one line and its exit code, including
    interrupts during the (slow) imports and OS errors such as a full disk."""
    _Interrupts.install()
    command = None
    try:
        try:
            args = build_parser().parse_args(argv)
            command = args.command
            return _run(args)
        except Exception:
            if _Interrupts.seen:  # the interrupt, disguised by the code it stopped
                raise KeyboardInterrupt from None
            raise
    except UserError as exc:
        _error(command, str(exc))
        return exc.exit_code
    except BrokenPipeError:
        # stdout closed early (`| head`): say nothing, and keep the exit flush from failing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 2
    except OSError as exc:
        _error(command, _os_error(exc))
        return 2
    except KeyboardInterrupt:
        print(f"{_speaker(command)}: interrupted; previous outputs left untouched", file=sys.stderr)
        return INTERRUPTED


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """The process entry point (console script, `python -m pipeline`, every DVC stage): main's
    exit code, also after an interrupt.

    CPython kills itself with SIGINT at exit when a KeyboardInterrupt went unhandled inside code
    a C extension ran during its import (pybind11's), even though main caught the interrupt and
    returned 130; flushing and leaving with os._exit keeps the documented code.
    """
    code = main(argv)
    if code == INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)
