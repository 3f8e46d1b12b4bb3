"""How every command starts and ends: `whisper-npu <command>`, `python -m pipeline` and each DVC
stage (`python -m stages.<name>`) parse their arguments here and leave through `run`.

A command is a typed record (`Command`): the stage or tool module that owns it declares its
arguments and its run function; this module adds nothing but `--params`, the interrupt
handling and the one-line errors. Bad input of any kind ends in one line on stderr and exit
code 2, with previous outputs left as they were.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NoReturn

from whisper_npu.errors import UserError, say
from whisper_npu.fsutil import check_output

INTERRUPTED = 130  # exit code of a run stopped by SIGINT/SIGTERM (128 + SIGINT, as shells do)

Written = Literal["directory", "file"]


@dataclass(frozen=True)
class Command:
    """One sub-command. `run` returns an exit code, or a record printed as JSON (exit 0)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], object]
    # The params file a pipeline command reads (its --params default); None: the command reads
    # none (the runtime's commands run where a release is deployed, with no params.yaml).
    params: Path | None = None
    # What it writes, by argument (dest), a directory or a file: each is checked against every
    # other path argument before the run (`guard_outputs`), so no output can replace an input.
    writes: Mapping[str, Written] = field(default_factory=dict)


def build_parser(
    commands: Sequence[Command], description: str | None = None
) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="whisper-npu", description=description)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in commands:
        sub = subparsers.add_parser(command.name, help=command.help)
        if command.params is not None:
            sub.add_argument(
                "--params",
                type=Path,
                default=command.params,
                help="params file (default: params.yaml)",
            )
        command.add_arguments(sub)
        sub.set_defaults(run=command.run, writes=command.writes)
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


def shown(path: Path) -> str:
    """A path as printable text: undecodable bytes of a file name become \\xNN escapes."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def os_error(exc: OSError) -> str:
    """An OS error the user can cause (permissions, a full disk, a symlink loop) in one line."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    names = [shown(Path(name)) for name in (exc.filename, exc.filename2) if name]
    return f"{' -> '.join(names)}: {reason}" if names else reason


def _paths(value: object) -> Iterator[Path]:
    """The paths an argument holds: one, a list of them (nargs), or none."""
    values = value if isinstance(value, list) else [value]
    yield from (item for item in values if isinstance(item, Path))


def guard_outputs(args: argparse.Namespace) -> None:
    """One guard for every command: an output equal to, inside or holding any other path
    argument (an input, --params, another output) is refused before any work, in one line;
    the stage would otherwise swap its output over its own input (a model directory left
    holding only the stage's files)."""
    writes: Mapping[str, Written] = getattr(args, "writes", {})
    for dest, kind in writes.items():
        out = getattr(args, dest)
        if out is None:
            continue
        others = [
            path for name, value in vars(args).items() if name != dest for path in _paths(value)
        ]
        check_output(out, kind == "directory", *others)


def _run(args: argparse.Namespace) -> int:
    guard_outputs(args)
    outcome = args.run(args)
    if isinstance(outcome, int):
        return outcome
    print(json.dumps(outcome, indent=2, default=str))
    return 0


def main(parser: Callable[[], argparse.ArgumentParser], argv: Sequence[str] | None = None) -> int:
    """Every failure a user can cause ends here as one line and its exit code, including
    interrupts during the (slow) imports and OS errors such as a full disk."""
    _Interrupts.install()
    command = None
    try:
        try:
            args = parser().parse_args(argv)
            command = args.command
            return _run(args)
        except Exception:
            if _Interrupts.seen:  # the interrupt, disguised by the code it stopped
                raise KeyboardInterrupt from None
            raise
    except UserError as exc:
        say(command, str(exc))
        return exc.exit_code
    except BrokenPipeError:
        # stdout closed early (`| head`): say nothing, and keep the exit flush from failing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 2
    except OSError as exc:
        say(command, os_error(exc))
        return 2
    except KeyboardInterrupt:
        say(command, "interrupted; previous outputs left untouched", kind=None)
        return INTERRUPTED


def exit_with(code: int) -> NoReturn:
    """Leave with `code`, also after an interrupt.

    CPython kills itself with SIGINT at exit when a KeyboardInterrupt went unhandled inside code
    a C extension ran during its import (pybind11's), even though main caught the interrupt and
    returned 130; flushing and leaving with os._exit keeps the documented code.
    """
    if code == INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise SystemExit(code)


def run_stage(command: Command) -> NoReturn:
    """A DVC stage's process entry point: the same command as `whisper-npu <name>`."""
    exit_with(main(lambda: build_parser([command]), [command.name, *sys.argv[1:]]))
