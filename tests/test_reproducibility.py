"""Rebuilds that can be trusted: persistent, atomically replaced stage outputs, a default DVC
remote outside the repo, the registry in dvc.yaml, and sweep overrides that DVC accepts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import load_params
from tests.dvc_helpers import dvc, dvc_env, seeded_clone
from whisper_npu.fsutil import sha256_tree
from whisper_npu.layout import model_slug
from whisper_npu.variants import VARIANTS, Variant

REPO = Path(__file__).resolve().parent.parent


def dvc_yaml() -> dict[str, Any]:
    return yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))


def stage_bodies() -> dict[str, dict[str, Any]]:
    """Each stage's definition, `foreach` templates by their `do` body."""
    return {name: stage.get("do", stage) for name, stage in dvc_yaml()["stages"].items()}


def test_every_stage_output_is_persistent() -> None:
    """Without persist DVC deletes an output before the command runs, so an interrupted
    `dvc repro` would lose it however atomically the stage writes."""
    checked = 0
    for name, body in stage_bodies().items():
        for kind in ("outs", "metrics", "plots"):
            for entry in body.get(kind, []):
                assert isinstance(entry, dict), f"{name}.{kind}: {entry} has no options"
                ((path, options),) = entry.items()
                assert options.get("persist") is True, f"{name}.{kind}: {path} is not persist"
                checked += 1
    assert checked >= len(stage_bodies())


def test_registry_has_one_release_per_compile_variant() -> None:
    from dvc.repo import Repo
    from dvc.repo.artifacts import check_name_format

    params = load_params(REPO / "params.yaml")
    with Repo(str(REPO)) as repo:
        artifacts = repo.artifacts.read()["dvc.yaml"]
    slug = model_slug(params.model.source)
    expected = {f"whisper-{slug}-{v}": f"artifacts/release/{v}" for v in params.compile.variants}
    assert {name: a.path for name, a in artifacts.items()} == expected
    release_out = stage_bodies()["release"]["outs"][0]
    assert next(iter(release_out)) == "artifacts/release/${item}"
    for name, artifact in artifacts.items():
        check_name_format(name)
        variant = artifact.path.rsplit("/", 1)[-1]
        assert artifact.type == "model"
        assert artifact.desc
        size, *rest = artifact.labels
        assert model_slug(size) == slug
        # A CPU-only artifact (cpu-int8) names the CPU as its target, never an NPU.
        target = "cpu" if VARIANTS[Variant(variant)].cpu_only else params.compile.target
        assert rest == [variant, target]
        assert artifact.meta == {"model": size, "variant": variant, "target": target}


def test_default_remote_is_a_directory_outside_the_repo() -> None:
    """Read from the repo-level config only: a developer's config.local may override it."""
    from dvc.config import Config

    config = Config(dvc_dir=str(REPO / ".dvc"), validate=False).load_one("repo")
    name = config["core"]["remote"]
    url = Path(config["remote"][name]["url"])
    assert url.is_absolute()
    assert REPO not in (url, *url.parents)


@pytest.mark.parametrize(
    "overrides",
    [
        ["quantize.max_excluded=8"],
        [
            "quantize.variants=[a16w8]",
            "compile.variants=[fp32,a16w8]",
            "quantize.max_wer_delta.a16w8=0.5",
        ],
        ["model.source=openai/whisper-base.en", "model.name=base-en"],
        ["+quantize.decoder_variant.a8w8=a16w8"],
    ],
)
def test_documented_sweep_overrides_give_valid_params(tmp_path: Path, overrides) -> None:
    """The README's `dvc exp run -S ...` examples, applied the way DVC applies them."""
    from dvc.utils.hydra import apply_overrides

    params = tmp_path / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    apply_overrides(params, overrides)
    loaded = load_params(params)
    assert loaded != load_params(REPO / "params.yaml")


def test_documented_grid_sweep_expands_per_value() -> None:
    from dvc.utils.hydra import get_hydra_sweeps

    sweeps = get_hydra_sweeps({"params.yaml": ["quantize.max_excluded=4,8,16"]})
    assert [s["params.yaml"] for s in sweeps] == [
        ["quantize.max_excluded=4"],
        ["quantize.max_excluded=8"],
        ["quantize.max_excluded=16"],
    ]


def wait_for(condition, what: str, limit_s: float = 180.0) -> None:
    """Poll until `condition()`; the limit only stops a hung test, it asserts no timing."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)


def synthesis_started(parent: Path, name: str) -> bool:
    """The data stage is inside its scratch dir and has written its first clip. Not just the
    scratch dir: before the first clip the stage is still importing piper and onnxruntime,
    whose C initialisation turns a signal's KeyboardInterrupt into an ImportError."""
    return any(
        next((scratch / ".calibration-source").glob("*.wav"), None) is not None
        for scratch in parent.glob(f".{name}.tmp-*")
    )


@pytest.mark.integration
def test_interrupted_stage_leaves_previous_output(tmp_path: Path) -> None:
    """SIGTERM the real `data` stage mid-synthesis: exit 130, old output byte-identical."""
    out = tmp_path / "artifacts" / "data"
    out.mkdir(parents=True)
    (out / "manifest.json").write_text('{"from": "the last good run"}\n')
    (out / "calibration").mkdir()
    (out / "calibration" / "data.arrow").write_bytes(b"\x00previous\xff")
    before = sha256_tree(out)

    stage = subprocess.Popen(
        [sys.executable, "-m", "stages.data", "--out", str(out)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: synthesis_started(out.parent, "data"), "the stage's scratch dir")
    finally:
        stage.send_signal(signal.SIGTERM)
    _, stderr = stage.communicate(timeout=120)

    assert stage.returncode == 130, stderr
    assert "interrupted; previous outputs left untouched" in stderr
    assert sha256_tree(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["data"]


@pytest.mark.integration
def test_interrupted_dvc_repro_keeps_the_previous_output(tmp_path: Path) -> None:
    """`dvc repro` itself, killed mid-stage: persist keeps DVC from deleting the output first,
    the stage's atomic swap keeps the command from half-writing it."""
    clone = seeded_clone(tmp_path / "clone")
    dvc("pull", "-q", "-r", "seed", "data", cwd=clone)
    before = sha256_tree(clone / "artifacts" / "data")
    with (clone / "stages" / "data.py").open("a") as handle:
        handle.write("# a code change that makes `data` stale\n")

    repro = subprocess.Popen(
        [sys.executable, "-m", "dvc", "repro", "data"],
        cwd=clone,
        env=dvc_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        wait_for(lambda: synthesis_started(clone / "artifacts", "data"), "the stage's scratch")
    finally:
        os.killpg(repro.pid, signal.SIGTERM)
    repro.communicate(timeout=120)

    assert sha256_tree(clone / "artifacts" / "data") == before
    wait_for(lambda: not synthesis_started(clone / "artifacts", "data"), "scratch cleanup", 60)
    assert not list((clone / "artifacts").glob(".data.*"))
    assert "changed deps" in dvc("status", "data", cwd=clone)
