"""Set up a fresh clone and run the main job or the tests, on Linux or Windows.

    python scripts/bootstrap.py repro    # dvc repro on the embedded default (tiny.en)
    python scripts/bootstrap.py test     # what CI runs: repro, the regression gate, pytest
    python scripts/bootstrap.py pytest   # the test suite alone

Creates .venv, installs the CPU torch wheel first (a plain `torch` requirement would pull
several GB of CUDA packages), then the project with its dev extra, makes sure the FFmpeg
libraries that torchcodec (and so `datasets`' Audio feature) needs are present, and runs the
command inside the venv. `test` removes the bench metrics, so `dvc repro` measures afresh,
and gates the new run with `whisper-npu check` against those committed at HEAD. Extra arguments
go to dvc (repro) or pytest (test, pytest).
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
TORCH = "torch==2.13.0"
COMMANDS = ("repro", "test", "pytest")
BENCH_METRICS = ROOT / "artifacts" / "metrics" / "bench.json"
# Disk a clean clone's run takes at its peak, in GB, with some room: the venv, DVC's cache and
# workspace, the release remote, pytest's temporary files (measured on Linux: repro 5.0, test
# 7.6; a CI run once stopped at "No space left on device").
DISK_NEEDED_GB = {"repro": 6.0, "test": 9.0, "pytest": 9.0}


def venv_bin() -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin")


def run(command: list[str], **kwargs: object) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT, **kwargs)  # type: ignore[call-overload]


def ensure_system_packages() -> None:
    """torchcodec links FFmpeg's shared libraries at run time, and espeak-ng voices (the
    multilingual set, which `data_languages` builds for multilingual models only, and optional
    extra voices; its tests run where it is installed) are a program: pip provides neither."""
    have_ffmpeg = bool(
        ctypes.util.find_library("avcodec") or ctypes.util.find_library("avcodec-61")
    )
    wanted = [
        name
        for name, present in (("ffmpeg", have_ffmpeg), ("espeak-ng", shutil.which("espeak-ng")))
        if not present
    ]
    if not wanted:
        return
    apt = shutil.which("apt-get")
    if sys.platform.startswith("linux") and apt and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run([apt, "update", "-qq"], env=env)
        run([apt, "install", "-y", "-qq", "--no-install-recommends", *wanted], env=env)
        return
    if not have_ffmpeg:
        sys.exit(
            "bootstrap: FFmpeg shared libraries not found; install FFmpeg 4-7 "
            "(Debian/Ubuntu: apt install ffmpeg; Windows: a 'shared' FFmpeg build on PATH) "
            "and rerun"
        )


def warn_if_disk_is_short(command: str) -> None:
    """One line up front, rather than a disk-full error forty minutes in."""
    free_gb = shutil.disk_usage(ROOT).free / 1e9
    if free_gb < DISK_NEEDED_GB[command]:
        print(
            f"bootstrap: warning: {free_gb:.1f} GB free where {ROOT} is; "
            f"`{command}` takes about {DISK_NEEDED_GB[command]:.0f} GB at its peak",
            file=sys.stderr,
            flush=True,
        )


def committed_baseline(scratch: Path) -> Path | None:
    """The bench metrics as committed at HEAD, written into `scratch` (None: none committed),
    whatever the working tree holds: an edited or regenerated bench.json must not move the
    gate. Outside a git checkout, the working tree's file, said in one line."""
    baseline = scratch / "bench-committed.json"
    relative = f"HEAD:./{BENCH_METRICS.relative_to(ROOT).as_posix()}"
    try:
        inside = subprocess.run(
            ["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True
        )
    except OSError:  # no git at all
        inside = None
    if inside is None or inside.returncode:
        print(f"bootstrap: not a git checkout; gating against the working tree's {BENCH_METRICS}")
        if not BENCH_METRICS.is_file():
            return None
        shutil.copyfile(BENCH_METRICS, baseline)
        return baseline
    shown = subprocess.run(["git", "show", relative], cwd=ROOT, capture_output=True)
    if shown.returncode:
        return None
    baseline.write_bytes(shown.stdout)
    return baseline


def run_pipeline_gated(python: str, env: dict[str, str]) -> int:
    """dvc repro end to end, then `whisper-npu check` of the new metrics against the committed.

    The working tree's metrics are removed first: a clean clone rebuilds every artifact byte
    for byte, so DVC would find the bench up to date and skip measuring it again.
    """
    with tempfile.TemporaryDirectory() as scratch:
        baseline = committed_baseline(Path(scratch))
        BENCH_METRICS.unlink(missing_ok=True)
        shutil.rmtree(BENCH_METRICS.with_suffix(""), ignore_errors=True)  # its plots
        repro = subprocess.run([python, "-m", "dvc", "repro"], cwd=ROOT, env=env, check=False)
        if repro.returncode:
            return repro.returncode
        if baseline is None:
            print(f"bootstrap: no committed {BENCH_METRICS.name}; regression gate skipped")
            return 0
        check = [python, "-m", "pipeline", "check", "--baseline", str(baseline)]
        return subprocess.run(check, cwd=ROOT, env=env, check=False).returncode


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    warn_if_disk_is_short(argv[0])
    if not VENV.exists():
        venv.create(VENV, with_pip=True)
    python = str(venv_bin() / ("python.exe" if os.name == "nt" else "python"))
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    run([*pip, TORCH])
    run([*pip, "-e", ".[dev]"])
    ensure_system_packages()
    # dvc.yaml says `python -m …`: put the venv first on PATH so that is the venv's python.
    env = {**os.environ, "PATH": f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}"}
    command, extra = argv[0], argv[1:]
    if command == "repro":
        return subprocess.run([python, "-m", "dvc", "repro", *extra], cwd=ROOT, env=env).returncode
    if command == "test" and (failed := run_pipeline_gated(python, env)):
        return failed
    return subprocess.run([python, "-m", "pytest", *extra], cwd=ROOT, env=env).returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
