"""Atomic output, safe reading and file fingerprints: a failed run never leaves a half-written
artifact, and a hostile input file never blocks, floods memory or reaches outside its directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from whisper_npu.errors import UserError

MAX_RECORD_BYTES = 16 << 20  # any JSON record an artifact carries (bundle.json, card.json, ...)
SHA256 = re.compile(r"[0-9a-f]{64}")


def excerpt(value: object, limit: int = 80) -> str:
    """repr of `value` cut to `limit` characters: an error line must stay one short line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


def _strerror(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def open_regular(path: Path, what: str = "file") -> IO[bytes]:
    """Open for reading, refusing anything but a regular file; O_NONBLOCK so that a FIFO in
    the file's place is refused instead of blocking the process. `what` names the file in
    the error ("params file", ...)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise UserError(f"{path}: no such {what}") from None
    except OSError as exc:
        raise UserError(f"{path}: cannot open ({_strerror(exc)})") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(mode) else "a FIFO, socket or device"
        raise UserError(f"{path}: is {kind}, expected a {what}")
    return os.fdopen(fd, "rb")


def read_text(path: Path, limit: int = MAX_RECORD_BYTES, what: str = "file") -> str:
    """A small UTF-8 text file (params, JSON records), refused in one line when it is missing,
    not a regular file, empty, larger than `limit` bytes or not UTF-8."""
    path = Path(path)
    with open_regular(path, what) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise UserError(f"{path}: larger than {limit} bytes; refusing to read it")
    if not data.strip():
        raise UserError(f"{path}: empty file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start})") from None


def read_json(path: Path, limit: int = MAX_RECORD_BYTES, what: str = "file") -> Any:
    """JSON from `path` (`read_text`'s checks first); bad or too deeply nested JSON is one line."""
    text = read_text(path, limit, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except RecursionError:
        raise UserError(f"{path}: not valid JSON (nested too deeply)") from None


def read_json_object(
    path: Path, limit: int = MAX_RECORD_BYTES, what: str = "file", expected: str = "a JSON object"
) -> dict[str, Any]:
    """A JSON object from `path`; anything else (bad JSON, a list, too deep) is one line that
    says what was `expected`."""
    loaded = read_json(path, limit, what)
    if not isinstance(loaded, dict):
        raise UserError(f"{path}: expected {expected}, got {type(loaded).__name__}")
    return loaded


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block is done, then deliver them, so an interrupted swap
    never leaves neither the old nor the new output in place. Python-level handlers, not a
    signal mask: a mask would not stop ONNX Runtime's threads from taking the signal."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def defer(signum: int, frame: object) -> None:
        received.append(signum)

    previous = {signum: signal.signal(signum, defer) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for pending in received:
            signal.raise_signal(pending)


def _swap(scratch: Path, final: Path, retired: Path) -> None:
    had_previous = final.exists()
    if had_previous:
        final.rename(retired)
    try:
        scratch.rename(final)
    except BaseException:
        if had_previous:
            retired.rename(final)
        raise


def check_output(out: Path, directory: bool, *others: Path) -> None:
    """Refuse an output whose writing would destroy something: a file where a directory goes
    (or the reverse), or another path of the command (an input, another output) that it
    equals, holds or lies inside, links resolved. Call it before any work is done."""
    out = Path(out)
    if os.path.lexists(out) and out.is_dir() != directory:
        kind = "a directory" if directory else "a file"
        raise UserError(f"{out}: exists and is not {kind}; refusing to replace it")
    target = Path(os.path.realpath(out))
    for other in others:
        resolved = Path(os.path.realpath(other))
        if target == resolved or resolved in target.parents or target in resolved.parents:
            raise UserError(f"{out}: output overlaps {other}; choose a separate path")


def _running(pid: int) -> bool:
    """Whether process `pid` is running on this machine, whoever owns it."""
    if sys.platform == "win32":
        import _winapi

        try:  # PROCESS_QUERY_LIMITED_INFORMATION; os.kill(pid, 0) would end the process here
            handle = _winapi.OpenProcess(0x1000, False, pid)
        except PermissionError:
            return True
        except OSError:
            return False
        try:
            return _winapi.GetExitCodeProcess(handle) == _winapi.STILL_ACTIVE
        finally:
            _winapi.CloseHandle(handle)
    try:
        os.kill(pid, 0)  # no signal sent: only whether the process is there
    except ProcessLookupError:
        return False
    except PermissionError:  # there, and another user's
        pass
    return True


def remove_stale_scratch(final: Path) -> None:
    """Remove what a killed run writing `final` left beside it (SIGKILL, the OOM killer, a
    power cut: no handler ran), named as `atomic_dir` names it: `.<name>.tmp-<pid>`, the
    half-written output, and `.<name>.old-<pid>`, the previous output being swapped out. Only
    those of a process no longer running are touched, never a concurrent run's. A previous
    output whose swap was cut short, `final` already renamed away, goes back into place.
    """
    final = Path(final)
    left = re.compile(rf"\.{re.escape(final.name)}\.(tmp|old)-([0-9]+)")
    for entry in list(final.parent.iterdir()):
        match = left.fullmatch(entry.name)
        if not match or (int(match[2]) != os.getpid() and _running(int(match[2]))):
            continue
        if match[1] == "old" and not os.path.lexists(final):
            entry.rename(final)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a scratch dir beside `final`; swap it into place only if the body succeeds.

    The previous contents of `final` survive any exception (including KeyboardInterrupt), and
    `final` must be a directory or absent: a file there is refused, never renamed away. What
    a killed run of the same output left behind is cleaned up first (`remove_stale_scratch`).
    """
    final = Path(final)
    check_output(final, directory=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(final)
    scratch = final.parent / f".{final.name}.tmp-{os.getpid()}"
    retired = final.parent / f".{final.name}.old-{os.getpid()}"
    scratch.mkdir()
    try:
        yield scratch
        with _signals_deferred():
            _swap(scratch, final, retired)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(retired, ignore_errors=True)


def write_text(path: Path, text: str) -> None:
    """Write UTF-8 text through a temp file and rename, so readers never see a partial file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open_regular(Path(path)) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_files(root: Path) -> list[str]:
    """POSIX relative paths of the regular files under `root`, sorted.

    A symlink (to a file, a directory or nowhere) or a FIFO, socket or device is refused: an
    artifact's bytes must be its own, or copying and hashing it would pull in, or block on,
    something outside it.
    """
    root = Path(root)
    found: list[str] = []

    def walk(folder: Path) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = list(listing)
        except OSError as exc:
            raise UserError(f"{folder}: cannot list ({_strerror(exc)})") from None
        for entry in entries:
            path = Path(entry.path)
            if entry.is_symlink():
                raise UserError(f"{path}: is a symbolic link; an artifact holds regular files only")
            if entry.is_dir(follow_symlinks=False):
                walk(path)
            elif entry.is_file(follow_symlinks=False):
                found.append(path.relative_to(root).as_posix())
            else:
                raise UserError(f"{path}: is not a regular file (FIFO, socket or device)")

    walk(root)
    return sorted(found)


def sha256_tree(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, keyed by POSIX relative path (stable across OSes)."""
    root = Path(root)
    return {name: sha256_file(root / name) for name in artifact_files(root)}


def is_member_name(name: object) -> bool:
    """Whether a record's file name stays inside its directory: relative, POSIX, no `..`."""
    if not isinstance(name, str) or not name or "\\" in name or name.startswith("/"):
        return False
    parts = name.split("/")
    return ":" not in parts[0] and all(part not in ("", ".", "..") for part in parts)


def file_record(source: Path, files: object) -> dict[str, str]:
    """A record's "files" (relative path → sha256), refused unless every name stays inside
    the directory and every digest is a sha256."""
    if not isinstance(files, dict):
        raise UserError(f"{source}: 'files' is not a mapping of path to sha256")
    for name, digest in files.items():
        if not is_member_name(name):
            raise UserError(f"{source}: lists {excerpt(name)}, a path outside its directory")
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise UserError(f"{source}: {name}: {excerpt(digest)} is not a sha256")
    return files


def cache_root() -> Path:
    """Where whisper-npu keeps what it can rebuild, outside any repository or release:
    $WHISPER_NPU_CACHE, else $XDG_CACHE_HOME/whisper-npu, else %LOCALAPPDATA%\\whisper-npu on
    Windows, else ~/.cache/whisper-npu."""
    explicit = os.environ.get("WHISPER_NPU_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or (
        os.environ.get("LOCALAPPDATA") if os.name == "nt" else None
    )
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "whisper-npu"
