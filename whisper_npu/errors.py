"""Exceptions that reach the user as one line, each with its exit code, and that line's form."""

from __future__ import annotations

import sys


class UserError(Exception):
    """Bad input (params, paths, models, audio): reported in one line, exit code 2."""

    exit_code = 2


class GateFailure(UserError):
    """A check the stage promises failed (parity, regression): one line, exit code 1."""

    exit_code = 1


def say(command: str | None, message: str, kind: str | None = "error") -> None:
    """One stderr line, `whisper-npu <command>: <kind>: <message>` (a message never spans
    lines); no command before argparse has named one, no kind for a plain notice."""
    speaker = f"whisper-npu {command}" if command else "whisper-npu"
    label = f"{kind}: " if kind else ""
    print(f"{speaker}: {label}{' '.join(message.splitlines())}", file=sys.stderr)
