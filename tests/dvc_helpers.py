"""Git and DVC command-line helpers for tests that build throwaway clones of this repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IDENTITY = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **IDENTITY},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def dvc_env() -> dict[str, str]:
    """DVC runs stage commands through the shell: the venv's python must come first."""
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
        **IDENTITY,
    }


def dvc(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=cwd,
        env=dvc_env(),
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def clone_with_worktree(destination: Path) -> Path:
    """A git clone of this repo carrying the working tree's files (what the next commit
    will hold), committed, without any DVC outputs."""
    git("clone", "-q", str(REPO), str(destination), cwd=REPO)
    listed = git("ls-files", "-co", "--exclude-standard", cwd=REPO).splitlines()
    for name in listed:
        source = REPO / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    git("add", "-A", cwd=destination)
    git("commit", "-q", "--allow-empty", "-m", "working tree", cwd=destination)
    return destination


def seeded_clone(destination: Path) -> Path:
    """A clone whose DVC cache can fetch what this workspace built (its cache as a remote)."""
    if not (REPO / ".dvc" / "cache" / "files").is_dir():
        pytest.skip("this workspace has no DVC cache to seed a clone from (run `dvc repro`)")
    clone = clone_with_worktree(destination)
    dvc("remote", "add", "--local", "seed", str(REPO / ".dvc" / "cache"), cwd=clone)
    return clone
