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
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn

from pipeline import entry
from pipeline.entry import Command, os_error, shown
from pipeline.errors import UserError, say
from stages import (
    amd_form,
    bench,
    calibrate,
    compile,
    data,
    data_languages,
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


def _share(text: str) -> float:
    value = _non_negative(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"must be a share between 0 and 1, got {text}")
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
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="shard the clips over Ray actors: alone, ray.init()'s default (a local cluster); "
        "'auto' or ray://host:10001 for a running cluster (needs pip install '.[ray]')",
    )
    parser.add_argument(
        "--workers", type=_positive_int, help="Ray actors (default: one per CPU of the cluster)"
    )
    parser.add_argument("--clips", type=Path, help="write the per-clip results (JSON Lines) here")


def _evaluate(args: argparse.Namespace) -> object:
    from pipeline.bench.evaluate import EvaluateOptions, evaluate_bundle

    if args.workers is not None and args.ray is None:
        raise UserError("--workers needs --ray")
    options = EvaluateOptions(args.ray, args.workers, args.clips)
    result = evaluate_bundle(args.artifact, args.data, options)
    _say_fallback("evaluate", result["execution"])
    return result


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--baseline", type=Path, required=True, help="a previous bench.json")
    parser.add_argument("--current", type=Path, default=Path("artifacts/metrics/bench.json"))
    parser.add_argument("--max-wer-increase", type=_non_negative, help="override gate (points)")
    parser.add_argument(
        "--max-latency-increase", type=_non_negative, help="override gate (relative, 0.25 = 25%%)"
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


# transcribe's VAD settings: flag → (VadOptions field, its type, what it sets).
VAD_FLAGS: dict[str, tuple[str, type, str]] = {
    "--vad-threshold": ("threshold", float, "speech probability above which a frame is speech"),
    "--vad-min-speech-ms": ("min_speech_duration_ms", int, "shorter speech regions are dropped"),
    "--vad-min-silence-ms": (
        "min_silence_duration_ms",
        int,
        "a pause shorter than this does not end a speech region",
    ),
    "--vad-speech-pad-ms": ("speech_pad_ms", int, "audio kept on each side of a speech region"),
}


def _vad_options(args: argparse.Namespace) -> Any:
    """--vad's VadOptions from the --vad-* flags (None without --vad); a bad value or a flag
    without --vad is one line."""
    from pipeline.runtime.vad import VadOptions, require_vad

    given = {
        flag: value
        for flag in VAD_FLAGS
        if (value := getattr(args, flag[2:].replace("-", "_"))) is not None
    }
    if not args.vad:
        if given:
            raise UserError(f"{next(iter(given))} needs --vad")
        return None
    settings: dict[str, float | int] = {}
    for flag, text in given.items():
        field, kind, _ = VAD_FLAGS[flag]
        try:
            settings[field] = kind(text)
            VadOptions(**{field: settings[field]})  # type: ignore[arg-type]  # its range
        except ValueError:
            noun = "number" if kind is float else "whole number of milliseconds"
            raise UserError(f"{flag}: expected a {noun}, got {text!r}") from None
        except UserError as exc:
            raise UserError(f"{flag}: {exc}") from None
    require_vad()
    return VadOptions(**settings)  # type: ignore[arg-type]


def _transcribe_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.runtime.decoding import TRANSCRIBE, TRANSLATE
    from pipeline.runtime.formats import Format
    from pipeline.runtime.vad import VadOptions

    parser.add_argument(
        "--artifact", type=Path, default=Path("artifacts/bundles/fp32"), help=ARTIFACT_HELP
    )
    parser.add_argument(
        "--format",
        type=Format,
        choices=list(Format),
        default=Format.TXT,
        help="output format; srt, vtt, tsv and verbose_json carry segment times",
    )
    parser.add_argument(
        "--output-dir", type=Path, help="write <name>.<format> per input here (else stdout)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list of {path, text}")
    parser.add_argument(
        "--language",
        default=None,
        help="multilingual bundles: auto (detected per file from its first 30 s) or a code "
        "such as fr (default: the bundle's export.language)",
    )
    parser.add_argument("--task", choices=(TRANSCRIBE, TRANSLATE), default=TRANSCRIBE)
    parser.add_argument(
        "--no-guards",
        action="store_true",
        help="greedy only: no silence, compression, log-prob or repetition guards",
    )
    parser.add_argument("--seed", type=int, default=0, help="the fallback sampler's seed")
    parser.add_argument(
        "--initial-prompt",
        metavar="TEXT",
        help="text decoded before the first window (names, spelling, style), as OpenAI's "
        "initial_prompt; only its last 223 tokens are read",
    )
    parser.add_argument(
        "--vad",
        action="store_true",
        help="decode only the speech Silero VAD finds, in chunks of up to 30 s; times stay the "
        "audio's (needs pip install 'whisper-npu[vad]')",
    )
    for flag, (field, _, what) in VAD_FLAGS.items():
        default = getattr(VadOptions(), field)
        parser.add_argument(flag, metavar="N", help=f"with --vad: {what} (default {default})")
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="intra-op threads (default: ORT's choice)",
    )
    parser.add_argument("audio", nargs="+", type=Path)


def _output_paths(args: argparse.Namespace) -> dict[Path, Path]:
    """Each input's output file; two inputs may not share one, nor an output be an input."""
    from pipeline.runtime.formats import EXTENSION, Format

    if args.output_dir is None:
        if len(args.audio) > 1 and args.format != Format.TXT:
            raise UserError(f"--format {args.format} for several files needs --output-dir")
        return {}
    outputs = {
        path: args.output_dir / f"{path.stem}.{EXTENSION[args.format]}" for path in args.audio
    }
    taken: dict[Path, Path] = {}
    for source, out in outputs.items():
        if out in taken and taken[out] != source:
            raise UserError(
                f"{shown(taken[out])} and {shown(source)} would both write {shown(out)}"
            )
        if out.resolve() in {path.resolve() for path in args.audio}:
            raise UserError(f"{shown(out)}: output would overwrite an input")
        taken[out] = source
    args.output_dir.mkdir(parents=True, exist_ok=True)
    return outputs


def _transcribe(args: argparse.Namespace) -> int:
    """One result per file, to stdout or one file each in --output-dir; a bad file is
    reported and the others still run. Deployments transcribe with a pulled release and no
    params.yaml beside it."""
    from pipeline.fsutil import write_text
    from pipeline.runtime.decoding import TranscribeOptions
    from pipeline.runtime.formats import TIMED, render
    from pipeline.runtime.model import load

    vad = _vad_options(args)
    outputs = _output_paths(args)
    timestamps = args.format in TIMED
    prompt = {
        "language": args.language,
        "task": args.task,
        "initial_prompt": args.initial_prompt,
    }
    options = (
        replace(TranscribeOptions.plain(timestamps), **prompt)
        if args.no_guards
        else TranscribeOptions(timestamps=timestamps, seed=args.seed, **prompt)
    )
    model = load(args.artifact, threads=args.threads)
    # What the bundle cannot do (translate with an English-only model) stops before any file.
    model.transcriber.check_prompt(options)
    _say_fallback("transcribe", model.transcriber.execution)
    listed, failed = [], False
    for path in args.audio:
        try:
            result = model.transcribe(path, options, vad)
        except (UserError, OSError) as exc:
            say("transcribe", os_error(exc) if isinstance(exc, OSError) else str(exc))
            failed = True
            continue
        found = {"language": result.language, "language_probability": result.language_probability}
        listed.append({"path": shown(path), "text": result.text, **found})
        if path in outputs:
            write_text(outputs[path], render(result, args.format))
        elif not args.json:
            several = len(args.audio) > 1  # txt only (_output_paths): one line per file
            shown_result = f"{shown(path)}\t{result.text}\n" if several else None
            print(shown_result or render(result, args.format), end="", flush=True)
    if args.json:
        print(json.dumps(listed, indent=2, ensure_ascii=False))
    return 2 if failed else 0


def _forecast_arguments(parser: argparse.ArgumentParser) -> None:
    from pipeline.variants import Flow

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
    from pipeline.variants import Flow

    flow = Flow(args.flow) if args.flow else None
    found = [forecast_file(path, flow, args.column, args.target) for path in args.graphs]
    if args.json:
        print(json.dumps([record.to_json() for record in found], indent=2))
    for record in found if not args.json else []:
        print(graph_line(shown(Path(record.path)), record.placement, record.flow, record.column))
        if record.no_npu_reason:
            print(f"  no NPU path: {record.no_npu_reason}")
    return 0 if all(record.clean for record in found) else 1


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifact", type=Path, default=Path("artifacts/bundles/fp32"), help=ARTIFACT_HELP
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--max-upload-mb", type=_non_negative, default=25.0, help="largest upload (OpenAI: 25)"
    )
    parser.add_argument("--model-name", help="the id /v1/models lists (default: artifact name)")
    parser.add_argument("--threads", type=_positive_int, default=None, help="intra-op threads")


def _serve(args: argparse.Namespace) -> int:
    """Needs the `serve` extra (FastAPI, uvicorn, python-multipart)."""
    try:
        from pipeline.runtime.server import ServeSettings, serve
    except ImportError as exc:
        raise UserError(
            f"serve needs the serve extra: pip install 'whisper-npu[serve]' ({exc})"
        ) from None
    from pipeline.runtime.model import load

    model = load(args.artifact, threads=args.threads)
    _say_fallback("serve", model.transcriber.execution)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        say("serve", f"listening on {args.host}: reachable from other machines", kind="warning")
    name = args.model_name or args.artifact.resolve().name
    limit = int(args.max_upload_mb * 1024 * 1024)
    serve(model, ServeSettings(name, limit), args.host, args.port)
    return 0


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
        "forecast",
        "how the VitisAI EP would partition ONNX graphs (exit 1 if one would split)",
        _forecast_arguments,
        _forecast,
        params_option=False,
    ),
    Command(
        "serve",
        "OpenAI-compatible server (POST /v1/audio/transcriptions and /translations)",
        _serve_arguments,
        _serve,
        params_option=False,
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
        data_languages,
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


def build_parser() -> argparse.ArgumentParser:
    return entry.build_parser(COMMANDS, __doc__)


def main(argv: Sequence[str] | None = None) -> int:
    """`whisper-npu` on `argv`: the exit code, after one line on stderr if anything failed."""
    return entry.main(build_parser, argv)


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """The process entry point (console script, `python -m pipeline`)."""
    entry.exit_with(main(argv))
