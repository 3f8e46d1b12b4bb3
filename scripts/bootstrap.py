"""Set up a fresh clone and run the main job or the tests, on Linux or Windows.

    python scripts/bootstrap.py repro   # dvc repro on the embedded default (tiny.en)
    python scripts/bootstrap.py test    # the test suite

Creates .venv, installs the CPU torch wheel first (a plain `torch` requirement would pull
several GB of CUDA packages), then the project with its dev extra, makes sure the FFmpeg
libraries that torchcodec (and so `datasets`' Audio feature) needs are present, and runs the
command inside the venv. Extra arguments go to dvc or pytest.
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
TORCH = "torch==2.13.0"
COMMANDS = {"repro": ["-m", "dvc", "repro"], "test": ["-m", "pytest"]}


def venv_bin() -> Path:
    return VENV / ("Scripts" if os.name == "nt" else "bin")


def run(command: list[str], **kwargs: object) -> None:
    print("+", " ".join(command), flush=True)
    subprocess.run(command, check=True, cwd=ROOT, **kwargs)  # type: ignore[call-overload]


def ensure_ffmpeg() -> None:
    """torchcodec links FFmpeg's shared libraries at run time; pip cannot provide them."""
    if ctypes.util.find_library("avcodec") or ctypes.util.find_library("avcodec-61"):
        return
    apt = shutil.which("apt-get")
    if sys.platform.startswith("linux") and apt and hasattr(os, "geteuid") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        run([apt, "update", "-qq"], env=env)
        run([apt, "install", "-y", "-qq", "--no-install-recommends", "ffmpeg"], env=env)
        return
    sys.exit(
        "bootstrap: FFmpeg shared libraries not found; install FFmpeg 4-7 "
        "(Debian/Ubuntu: apt install ffmpeg; Windows: a 'shared' FFmpeg build on PATH) and rerun"
    )


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    if not VENV.exists():
        venv.create(VENV, with_pip=True)
    python = str(venv_bin() / ("python.exe" if os.name == "nt" else "python"))
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    run([*pip, TORCH])
    run([*pip, "-e", ".[dev]"])
    ensure_ffmpeg()
    # dvc.yaml says `python -m …`: put the venv first on PATH so that is the venv's python.
    env = {**os.environ, "PATH": f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '')}"}
    completed = subprocess.run(
        [python, *COMMANDS[argv[0]], *argv[1:]], cwd=ROOT, env=env, check=False
    )
    return completed.returncode


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
