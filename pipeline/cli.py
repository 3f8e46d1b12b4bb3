"""`whisper-npu` (also `python -m pipeline`): one sub-command per pipeline stage (declared by
its module in `stages/`), and the tools a user runs on artifacts: evaluate, check, transcribe,
verify.

Bad input of any kind ends in one line on stderr and exit code 2, with previous outputs left as
they were (`pipeline.entry`).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pipeline import entry
from pipeline.entry import Command, os_error, shown
from pipeline.errors import UserError, say
from stages import (
    bench,
    calibrate,
    compile,
    data,
    export,
    model,
    quantize,
    reference,
    release,
    sensitivity,
)

ARTIFACT_HELP = (
    "bundle, compiled (runs on the VitisAI EP where it is installed) or release directory"
)


def _say_fallback(command: str, execution: dict[str, Any]) -> None:
    """One plain line when a compiled artifact wanted the NPU and runs on the CPU instead."""
    if execution.get("fallback"):
        say(command, str(execution["fallback"]), kind=None)


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


def _evaluate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifact", type=Path, default=Path("artifacts/bundles/fp32"), help=ARTIFACT_HELP
    )
    parser.add_argument("--data", type=Path, default=Path("artifacts/data"))


def _evaluate(args: argparse.Namespace) -> object:
    from pipeline.bench.evaluate import evaluate_bundle

    result = evaluate_bundle(args.artifact, args.data)
    _say_fallback("evaluate", result["execution"])
    return result


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", type=Path, required=True, help="a previous bench.json")
    parser.add_argument("--current", type=Path, default=Path("artifacts/metrics/bench.json"))
    parser.add_argument("--max-wer-increase", type=_non_negative, help="override gate (points)")
    parser.add_argument(
        "--max-latency-increase", type=_non_negative, help="override gate (relative, 0.25 = 25%%)"
    )


def _check(args: argparse.Namespace) -> int:
    from pipeline.bench.gate import check
    from pipeline.config import load_params

    overrides = {
        "max_wer_increase": args.max_wer_increase,
        "max_latency_increase": args.max_latency_increase,
    }
    gate = load_params(args.params).gate
    gate = gate.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    return check(args.baseline, args.current, gate)


def _transcribe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifact", type=Path, default=Path("artifacts/bundles/fp32"), help=ARTIFACT_HELP
    )
    from pipeline.runtime.decoding import TRANSCRIBE, TRANSLATE

    parser.add_argument(
        "--json",
        action="store_true",
        help="print a JSON list of {path, text} (+ language, language_probability if multilingual)",
    )
    parser.add_argument(
        "--language",
        default=None,
        help="multilingual bundles: auto (detected per file from its first 30 s) or a code "
        "such as fr (default: the bundle's export.language)",
    )
    parser.add_argument("--task", choices=(TRANSCRIBE, TRANSLATE), default=TRANSCRIBE)
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="intra-op threads (default: ORT's choice)",
    )
    parser.add_argument("audio", nargs="+", type=Path)


def _transcribe(args: argparse.Namespace) -> int:
    """One line per file (or a JSON list); a bad file is reported and the others still run.
    Deployments transcribe with a pulled release and no params.yaml beside it."""
    from pipeline.runtime.audio import load_audio
    from pipeline.runtime.language import AUTO
    from pipeline.runtime.transcriber import Transcriber

    transcriber = Transcriber.from_artifact(args.artifact, threads=args.threads)
    # What the bundle cannot do (translate with an English-only model) stops before any file.
    transcriber.spec(None if args.language == AUTO else args.language, args.task)
    _say_fallback("transcribe", transcriber.execution)
    results: list[dict[str, object]] = []
    failed = False
    for path in args.audio:
        try:
            result = transcriber.transcribe(load_audio(path), args.language, args.task)
        except (UserError, OSError) as exc:
            say("transcribe", os_error(exc) if isinstance(exc, OSError) else str(exc))
            failed = True
            continue
        text = result.text
        found = {"language": result.language, "language_probability": result.language_probability}
        results.append({"path": shown(path), "text": text, **(found if result.language else {})})
        if not args.json:
            print(text if len(args.audio) == 1 else f"{shown(path)}\t{text}", flush=True)
    if args.json:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    return 2 if failed else 0


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", type=Path, help="release or bundle directory")


def _verify(args: argparse.Namespace) -> int:
    """Runs where a pulled release is deployed, which has no params.yaml."""
    from pipeline.release.verify import verify_artifact

    print(verify_artifact(args.artifact))
    return 0


TOOLS = (
    Command("evaluate", "WER of a bundle on the eval set", _evaluate_arguments, _evaluate),
    Command(
        "check",
        "exit 1 if a bench run regresses against a baseline (thresholds: params gate)",
        _check_arguments,
        _check,
    ),
    Command(
        "transcribe", "transcribe audio files with a bundle", _transcribe_arguments, _transcribe
    ),
    Command(
        "verify",
        "re-hash a release (card.json) or bundle (bundle.json); exit 1 on any difference",
        _verify_arguments,
        _verify,
        params_option=False,
    ),
)
STAGES = tuple(
    stage.COMMAND
    for stage in (
        model,
        data,
        reference,
        export,
        calibrate,
        sensitivity,
        quantize,
        compile,
        bench,
        release,
    )
)
COMMANDS = (*STAGES, *TOOLS)


def build_parser() -> argparse.ArgumentParser:
    return entry.build_parser(COMMANDS, __doc__)


def main(argv: Sequence[str] | None = None) -> int:
    """`whisper-npu` on `argv`: the exit code, after one line on stderr if anything failed."""
    return entry.main(build_parser, argv)


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """The process entry point (console script, `python -m pipeline`)."""
    entry.exit_with(main(argv))
