"""The committed dvc.lock describes the committed code.

A fresh clone that finds a stage's code or params changed since the lock rebuilds from a dirty
state, and artifacts pulled from the remote no longer match the code that would rebuild them.
This test recomputes, as DVC does, the md5 of every dependency that is not a pipeline output
(the stages' code, sentence lists, op tables) and the params each stage reads, and compares
them with the dvc.lock in git's HEAD (CI's `dvc repro` rewrites the working copy first).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
OUTPUT_ROOT = "artifacts/"


def committed_lock() -> dict[str, Any]:
    shown = subprocess.run(
        ["git", "show", "HEAD:dvc.lock"], cwd=REPO, capture_output=True, text=True, check=False
    )
    text = shown.stdout if shown.returncode == 0 else (REPO / "dvc.lock").read_text("utf-8")
    lock: dict[str, Any] = yaml.safe_load(text)
    return lock


def file_md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def dvc_md5(path: Path) -> str:
    """DVC 3's md5 of a file, or of a directory's sorted {md5, relpath} listing plus `.dir`."""
    if path.is_file():
        return file_md5(path)
    listing = sorted(
        (
            {"md5": file_md5(item), "relpath": item.relative_to(path).as_posix()}
            for item in path.rglob("*")
            if item.is_file()
        ),
        key=lambda entry: entry["relpath"],
    )
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"


def lookup(params: dict[str, Any], dotted: str) -> Any:
    value: Any = params
    for key in dotted.split("."):
        value = value[key]
    return value


def stale_entries() -> list[str]:
    current_params = yaml.safe_load((REPO / "params.yaml").read_text("utf-8"))
    stale = []
    for stage, entry in committed_lock()["stages"].items():
        for dep in entry.get("deps", []):
            if dep["path"].startswith(OUTPUT_ROOT):
                continue
            path = REPO / dep["path"]
            if not path.exists() or dvc_md5(path) != dep["md5"]:
                stale.append(f"{stage}: {dep['path']}")
        for key, value in entry.get("params", {}).get("params.yaml", {}).items():
            if lookup(current_params, key) != value:
                stale.append(f"{stage}: params {key}")
    return stale


def test_dir_hash_matches_dvc(tmp_path: Path) -> None:
    """The directory hash above is DVC's own (checked against dvc-data on a small tree)."""
    from dvc_data.hashfile.build import build
    from dvc_data.hashfile.db import HashFileDB
    from dvc_objects.fs.local import LocalFileSystem

    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "a.txt").write_text("one\n")
    (tmp_path / "tree" / "sub" / "b.txt").write_text("two\r\n")
    fs = LocalFileSystem()
    odb = HashFileDB(fs, str(tmp_path / "odb"))
    _, _, obj = build(odb, str(tmp_path / "tree"), fs, "md5")
    assert dvc_md5(tmp_path / "tree") == obj.hash_info.value


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs the git checkout")
def test_committed_lock_matches_code_and_params() -> None:
    stale = stale_entries()
    assert not stale, (
        "dvc.lock is stale against the code: run `dvc repro` and commit dvc.lock; changed: "
        + ", ".join(stale)
    )
