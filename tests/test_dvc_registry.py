"""Teams share builds through DVC: one clone pushes, another pulls, a third person fetches one
release by name and version. Every transfer must be byte-identical to what was pushed, verify
against its own record, and transcribe."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile as sf
import yaml

from pipeline.config import load_params
from tests.conftest import run_cli
from tests.dvc_helpers import REPO, dvc, git, seeded_clone
from whisper_npu.layout import model_slug

CACHE = REPO / ".dvc" / "cache" / "files" / "md5"
TEST_ARTIFACT = "test-fp32-bundle"


@dataclass(frozen=True)
class Shared:
    stage: str
    path: str
    md5: str
    artifact: str


def cached(md5: str) -> Path:
    return CACHE / md5[:2] / md5[2:]


def shared_target() -> Shared:
    """The fp32 release when this workspace has built one, else the export stage's bundle
    (registered under a test-only name in the throwaway clone)."""
    lock = yaml.safe_load((REPO / "dvc.lock").read_text(encoding="utf-8"))["stages"]
    slug = model_slug(load_params(REPO / "params.yaml").model.source)
    for stage, artifact in (("release@fp32", f"whisper-{slug}-fp32"), ("export", TEST_ARTIFACT)):
        outs = lock.get(stage, {}).get("outs", [])
        if outs and cached(outs[0]["md5"]).is_file():
            return Shared(stage, outs[0]["path"], outs[0]["md5"], artifact)
    pytest.skip("no fp32 release or bundle in this workspace's DVC cache (run `dvc repro`)")


def pushed_files(target: Shared) -> dict[str, str]:
    """relpath → md5 of every file the lock file says this output holds."""
    entries = json.loads(cached(target.md5).read_text(encoding="utf-8"))
    return {entry["relpath"]: entry["md5"] for entry in entries}


def md5_tree(root: Path) -> dict[str, str]:
    return {
        path.relative_to(root).as_posix(): hashlib.md5(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def whisper_npu(*args: str, cwd: Path) -> str:
    done = run_cli(*args, cwd=cwd)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def first_eval_clip(tmp_path: Path) -> tuple[Path, str]:
    """eval-0000 as a WAV file and the transcript the fp32 bundle must give (= reference)."""
    from pipeline.sources.speech_sets import clip_samples, load_saved_set

    reference = REPO / "artifacts" / "reference" / "transcripts.json"
    if not reference.is_file():
        pytest.skip("no reference transcripts in this workspace (run `dvc repro reference`)")
    row = load_saved_set(REPO / "artifacts" / "data", "eval")[0]
    wav = tmp_path / f"{row['id']}.wav"
    sf.write(wav, clip_samples(row), 16000)
    texts = {r["id"]: r["text"] for r in json.loads(reference.read_text(encoding="utf-8"))}
    return wav, texts[row["id"]]


def register(clone: Path, target: Shared) -> None:
    """Declare the test-only artifact in the clone's dvc.yaml (real releases already are)."""
    if target.artifact != TEST_ARTIFACT:
        return
    dvc_yaml = clone / "dvc.yaml"
    text = dvc_yaml.read_text(encoding="utf-8")
    entry = f"artifacts:\n  {TEST_ARTIFACT}:\n    path: {target.path}\n    type: model\n"
    dvc_yaml.write_text(text.replace("artifacts:\n", entry, 1), encoding="utf-8")


@pytest.mark.integration
def test_push_pull_and_artifacts_get_are_byte_identical(tmp_path: Path) -> None:
    target = shared_target()
    expected = pushed_files(target)
    wav, transcript = first_eval_clip(tmp_path)
    store = tmp_path / "store"
    store.mkdir()

    # Clone A rebuilt (here: fetched from this workspace's cache), pushes, tags a version.
    a = seeded_clone(tmp_path / "a")
    dvc("fetch", "-q", "-r", "seed", target.stage, cwd=a)
    dvc("remote", "add", "--local", "-d", "store", str(store), cwd=a)
    dvc("push", target.stage, cwd=a)
    register(a, target)
    git("commit", "-q", "-am", "register", "--allow-empty", cwd=a)
    git("tag", "-a", f"{target.artifact}@v0.0.1", "-m", "test release", cwd=a)

    # Clone B: a teammate with an empty cache pulls the output and deploys it.
    b = tmp_path / "b"
    git("clone", "-q", str(a), str(b), cwd=tmp_path)
    dvc("remote", "add", "--local", "-d", "store", str(store), cwd=b)
    dvc("pull", target.stage, cwd=b)
    pulled = b / target.path
    assert md5_tree(pulled) == expected
    assert whisper_npu("verify", str(pulled), cwd=tmp_path).startswith("OK: ")
    assert whisper_npu("transcribe", "--artifact", str(pulled), str(wav), cwd=tmp_path) == (
        transcript
    )

    # Anyone: one artifact by name and version into an empty dir, through a fresh clone.
    empty = tmp_path / "deploy"
    empty.mkdir()
    dvc(
        "artifacts",
        "get",
        f"file://{a}",
        target.artifact,
        "--rev",
        "v0.0.1",
        "-o",
        "model",
        "--remote-config",
        f"url={store}",
        cwd=empty,
    )
    assert sorted(p.name for p in empty.iterdir()) == ["model"]
    assert md5_tree(empty / "model") == expected
    assert whisper_npu("verify", "model", cwd=empty).startswith("OK: ")
