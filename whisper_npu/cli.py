"""`whisper-npu` (also `python -m whisper_npu`): the runtime's commands, which run where a release
is deployed (transcribe, serve, verify), and the pipeline's stages and tools where the build stack
is installed (`pip install 'whisper-npu[pipeline]'`), found through the `whisper_npu.commands`
entry point so that the runtime never imports the pipeline.

Bad input of any kind ends in one line on stderr and exit code 2, with previous outputs left as
they were (`whisper_npu.entry`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from whisper_npu import entry
from whisper_npu.entry import Command, os_error, shown
from whisper_npu.errors import UserError, say

if TYPE_CHECKING:
    from whisper_npu.execution import Execution

# Where other distributions (the pipeline) register more commands: a sequence of Command.
COMMANDS_GROUP = "whisper_npu.commands"
PIPELINE_EXTRA = "pip install 'whisper-npu[pipeline]'"

ARTIFACT_HELP = "release, compiled or bundle directory (see --device)"


def say_execution(command: str, execution: Execution) -> None:
    """What runs the model, once, where the user did not get what `auto` aims for: the CPU
    running an NPU artifact and why, the CPU as asked, and anything else worth knowing."""
    for line in execution.lines():
        say(command, line, kind=None)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    from whisper_npu.execution import DEVICE_HELP, Device

    parser.add_argument(
        "--device", type=Device, choices=list(Device), default=Device.AUTO, help=DEVICE_HELP
    )


def non_negative(text: str) -> float:
    """A finite threshold >= 0: nan would compare False and pass every regression."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def positive(text: str) -> float:
    """A finite number > 0."""
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


def port(text: str) -> int:
    """A TCP port (0: any free one), refused before the model loads."""
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port in 0..65535, got {text}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text}")
    return value


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
    from whisper_npu.vad import VadOptions, require_vad

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
    from whisper_npu.decoding import TRANSCRIBE, TRANSLATE
    from whisper_npu.formats import Format
    from whisper_npu.vad import VadOptions

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
    _word_arguments(parser)
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="intra-op threads (default: ORT's choice)",
    )
    add_device_argument(parser)
    _live_arguments(parser)
    parser.add_argument("audio", nargs="*", type=Path)


MICROPHONE = "mic"


def _live_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--live",
        nargs="?",
        const=MICROPHONE,
        metavar="-",
        help="transcribe as the audio comes, one line per utterance when it ends: from the "
        "microphone (needs pip install 'whisper-npu[live]'), or with `-` raw s16le mono 16 kHz "
        "PCM on stdin (e.g. ffmpeg -i talk.mp3 -f s16le -ac 1 -ar 16000 - | whisper-npu "
        "transcribe --live -)",
    )
    parser.add_argument(
        "--partials",
        action="store_true",
        help="with --live: also print each utterance's words to stderr once they are stable",
    )


def _transcribe_live(args: argparse.Namespace) -> int:
    """`--live`: the Realtime endpoint's engine on the microphone or stdin, its turn detection
    at OpenAI's server_vad defaults (`whisper_npu.live`)."""
    from whisper_npu import live
    from whisper_npu.decoding import TranscribeOptions
    from whisper_npu.model import load

    if args.live not in (MICROPHONE, "-"):
        raise UserError(f"--live takes - (stdin) or nothing (the microphone), got {args.live!r}")
    if args.audio or args.output_dir or args.json or args.vad or args.word_timestamps:
        raise UserError(
            "--live reads no files and takes no --output-dir, --json, --vad or --word-timestamps"
        )
    options = TranscribeOptions(
        language=args.language, task=args.task, initial_prompt=args.initial_prompt, seed=args.seed
    )
    source = live.pcm_chunks(sys.stdin.buffer) if args.live == "-" else live.microphone()
    model = load(args.artifact, threads=args.threads, device=args.device)
    model.transcriber.check_prompt(options)
    say_execution("transcribe", model.execution)

    def decode(job: live.Job) -> str:
        return model.transcribe(job.samples, live.decode_options(options, job)).text

    for event in live.transcribe_stream(source, live.LiveTranscriber(), decode):
        if isinstance(event, live.Completed):
            if event.transcript:
                print(event.transcript, flush=True)
            if args.partials:
                print(file=sys.stderr)  # the utterance's line of partials ends
        elif isinstance(event, live.Delta) and args.partials:
            print(event.delta, end="", file=sys.stderr, flush=True)
    return 0


def _word_arguments(parser: argparse.ArgumentParser) -> None:
    """openai-whisper's word-timestamp flags (its CLI's names, dashed)."""
    parser.add_argument(
        "--word-timestamps",
        action="store_true",
        help="word times from cross-attention (verbose_json: `words`; srt/vtt: cues from words)",
    )
    parser.add_argument(
        "--max-line-width", type=positive_int, help="srt/vtt with words: characters per line"
    )
    parser.add_argument(
        "--max-line-count", type=positive_int, help="srt/vtt with words: lines per cue"
    )
    parser.add_argument(
        "--highlight-words",
        action="store_true",
        help="srt/vtt with words: a cue per word, the word underlined",
    )


def _subtitles(args: argparse.Namespace) -> Any:
    from whisper_npu.formats import Subtitles

    subtitles = Subtitles(args.max_line_width, args.max_line_count, args.highlight_words)
    subtitles.check(args.word_timestamps)
    return subtitles


def _output_paths(args: argparse.Namespace) -> dict[Path, Path]:
    """Each input's output file; two inputs may not share one, nor an output be an input."""
    from whisper_npu.formats import EXTENSION, Format

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
    from whisper_npu.decoding import TranscribeOptions
    from whisper_npu.formats import TIMED, render
    from whisper_npu.fsutil import write_text
    from whisper_npu.model import load

    if args.live is not None:
        return _transcribe_live(args)
    if not args.audio:
        raise UserError("no audio files given (or --live for the microphone or stdin)")
    vad = _vad_options(args)
    subtitles = _subtitles(args)
    outputs = _output_paths(args)
    timestamps = args.format in TIMED
    prompt = {
        "language": args.language,
        "task": args.task,
        "initial_prompt": args.initial_prompt,
        "word_timestamps": args.word_timestamps,
    }
    options = (
        replace(TranscribeOptions.plain(timestamps), **prompt)
        if args.no_guards
        else TranscribeOptions(timestamps=timestamps, seed=args.seed, **prompt)
    )
    model = load(args.artifact, threads=args.threads, device=args.device)
    # What the bundle cannot do (translate with an English-only model) stops before any file.
    model.transcriber.check_prompt(options)
    say_execution("transcribe", model.execution)
    listed, failed = [], False
    for path in args.audio:
        try:
            result = model.transcribe(path, options, vad)
        except (UserError, OSError) as exc:
            say("transcribe", os_error(exc) if isinstance(exc, OSError) else str(exc))
            failed = True
            continue
        found = {"language": result.language, "language_probability": result.language_probability}
        listed.append(
            {
                "path": shown(path),
                "text": result.text,
                **found,
                "execution": model.execution.to_json(),
            }
        )
        if path in outputs:
            write_text(outputs[path], render(result, args.format, subtitles))
        elif not args.json:
            several = len(args.audio) > 1  # txt only (_output_paths): one line per file
            shown_result = f"{shown(path)}\t{result.text}\n" if several else None
            print(shown_result or render(result, args.format, subtitles), end="", flush=True)
    if args.json:
        print(json.dumps(listed, indent=2, ensure_ascii=False))
    return 2 if failed else 0


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    from whisper_npu.access import API_KEY_ENV, MAX_AUDIO_SECONDS

    parser.add_argument(
        "--artifact", type=Path, default=Path("artifacts/bundles/fp32"), help=ARTIFACT_HELP
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: this machine only)"
    )
    parser.add_argument("--port", type=port, default=8000)
    parser.add_argument(
        "--max-upload-mb", type=non_negative, default=25.0, help="largest upload (OpenAI: 25)"
    )
    parser.add_argument(
        "--max-audio-minutes",
        type=positive,
        default=MAX_AUDIO_SECONDS / 60,
        help="longest audio an upload may decode to; decoding stops past it (default "
        f"{MAX_AUDIO_SECONDS / 60:.2f}: what 25 MB holds as 16 kHz 16-bit PCM)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="also answer requests naming this host, any port (repeatable; always: "
        "localhost, 127.0.0.1, ::1 and the --host address)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages of this origin (scheme://host[:port], or *) read answers (repeatable; "
        "default: no CORS)",
    )
    parser.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"require Authorization: Bearer KEY on every request but /health (default: "
        f"${API_KEY_ENV} when set; the variable keeps the key out of the process list)",
    )
    parser.add_argument("--model-name", help="the id /v1/models lists (default: artifact name)")
    parser.add_argument("--threads", type=positive_int, default=None, help="intra-op threads")
    add_device_argument(parser)


def _serve(args: argparse.Namespace) -> int:
    """Needs the `serve` extra (FastAPI, uvicorn, python-multipart)."""
    from whisper_npu.access import API_KEY_ENV, LOCAL_HOSTS, Access

    try:
        from whisper_npu.server import ServeSettings, serve
    except ImportError as exc:
        raise UserError(
            f"serve needs the serve extra: pip install 'whisper-npu[serve]' ({exc})"
        ) from None
    from whisper_npu.model import load

    key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_ENV)
    access = Access.from_flags(args.host, args.allow_host, args.cors_origin, key)
    model = load(args.artifact, threads=args.threads, device=args.device)
    say_execution("serve", model.execution)
    if args.host not in LOCAL_HOSTS:
        keyless = "" if key else " with no API key (--api-key)"
        say(
            "serve",
            f"listening on {args.host}: reachable from other machines{keyless}",
            kind="warning",
        )
    name = args.model_name or args.artifact.resolve().name
    limit = int(args.max_upload_mb * 1024 * 1024)
    settings = ServeSettings(name, limit, args.max_audio_minutes * 60, access)
    serve(model, settings, args.host, args.port)
    return 0


def _verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("artifact", type=Path, help="release or bundle directory")


def _verify(args: argparse.Namespace) -> int:
    """Runs where a pulled release is deployed, which has no params.yaml."""
    from whisper_npu.verify import verify_artifact

    print(verify_artifact(args.artifact))
    return 0


def _doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifact",
        type=Path,
        help="a release (or compiled or bundle) directory, or a directory of releases",
    )
    parser.add_argument("--json", action="store_true", help="print the diagnosis as JSON")


def _doctor(args: argparse.Namespace) -> int:
    """Exit 0 when the artifact (without one: the NPU path) would run on the NPU, else 1."""
    from whisper_npu.doctor import diagnose, render

    diagnosis = diagnose(args.artifact)
    print(json.dumps(diagnosis.to_json(), indent=2) if args.json else render(diagnosis))
    return 0 if diagnosis.on_npu else 1


def _device_report_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifact", type=Path, required=True, help="the release to measure")
    parser.add_argument(
        "--data",
        type=Path,
        help="an audiofolder (audio + metadata.csv with file_name,text); default: the "
        "release's eval/",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("device-report.json"), help="where the report goes"
    )


def _device_report(args: argparse.Namespace) -> int:
    """On the laptop with the NPU: exit 0 when the device's partition agrees with the
    forecast, 1 when it does not (the report is written either way)."""
    from whisper_npu.device_report import (
        compare,
        measure,
        render_comparison,
        summary,
        write_report,
    )

    report = measure(args.artifact, args.data)
    write_report(report, args.out)
    rows, found = compare(report, args.artifact)
    print(f"{summary(report)}\n{render_comparison(rows, found)}\nwrote {shown(args.out)}")
    return 1 if found else 0


def _compare_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--artifact", type=Path, required=True, help="the release it measured")
    parser.add_argument("--report", type=Path, required=True, help="a device-report JSON")


def _compare(args: argparse.Namespace) -> int:
    """Anywhere: exit 1 when the device's partition disagrees with the forecast."""
    from whisper_npu.device_report import DeviceReport, compare, render_comparison

    rows, found = compare(DeviceReport.read(args.report), args.artifact)
    print(render_comparison(rows, found))
    return 1 if found else 0


RUNTIME_COMMANDS = (
    Command(
        "transcribe", "transcribe audio files with a bundle", _transcribe_arguments, _transcribe
    ),
    Command(
        "serve",
        "OpenAI-compatible server (POST /v1/audio/transcriptions and /translations)",
        _serve_arguments,
        _serve,
    ),
    Command(
        "doctor",
        "can this environment run a release on the NPU? (exit 0 NPU, 1 CPU)",
        _doctor_arguments,
        _doctor,
    ),
    Command(
        "device-report",
        "on a Ryzen AI laptop: compile, partition, latency and WER of a release on the NPU "
        "(exit 1 if the partition disagrees with the forecast)",
        _device_report_arguments,
        _device_report,
        writes={"out": "file"},
    ),
    Command(
        "compare",
        "a device report's partition against the release's forecast (exit 1 if they disagree)",
        _compare_arguments,
        _compare,
    ),
    Command(
        "verify",
        "re-hash a release (card.json) or bundle (bundle.json); exit 1 on any difference",
        _verify_arguments,
        _verify,
    ),
)


def _registered_commands() -> tuple[list[Command], str | None]:
    """Commands other packages register (the pipeline's), and the module missing when they are
    installed without their dependencies (a runtime-only install)."""
    found: list[Command] = []
    missing = None
    for point in entry_points(group=COMMANDS_GROUP):
        try:
            found.extend(point.load())
        except ImportError as exc:
            missing = exc.name or str(exc)
    return found, missing


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The runtime's commands alone when `argv` names one (nothing of the pipeline is imported
    to transcribe), else every command installed; a pipeline command the install lacks is one
    line naming the extra."""
    if argv and argv[0] in {command.name for command in RUNTIME_COMMANDS}:
        return entry.build_parser(RUNTIME_COMMANDS, __doc__)
    registered, missing = _registered_commands()
    wanted = next((arg for arg in argv or () if not arg.startswith("-")), None)
    known = {command.name for command in (*RUNTIME_COMMANDS, *registered)}
    if missing and wanted is not None and wanted not in known:
        raise UserError(
            f"{wanted!r} is not a runtime command ({', '.join(sorted(known))}); the pipeline's "
            f"commands need {PIPELINE_EXTRA} (missing module {missing!r})"
        )
    return entry.build_parser((*RUNTIME_COMMANDS, *registered), __doc__)


def main(argv: Sequence[str] | None = None) -> int:
    """`whisper-npu` on `argv`: the exit code, after one line on stderr if anything failed."""
    given = list(sys.argv[1:] if argv is None else argv)
    return entry.main(lambda: build_parser(given), given)


def run(argv: Sequence[str] | None = None) -> NoReturn:
    """The process entry point (console script, `python -m whisper_npu`, `python -m pipeline`)."""
    entry.exit_with(main(argv))
