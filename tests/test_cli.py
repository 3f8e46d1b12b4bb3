"""The CLI as a user meets it: one line on stderr, exit code 2, previous outputs untouched."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

from tests.conftest import REPO, run_cli
from whisper_npu.layout import model_slug


def params_with(tmp_path: Path, **model: str) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    if "source" in model:  # the registry names follow the source (config.py checks it)
        raw["model"]["name"] = model_slug(model["source"])
    raw["model"].update(model)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def previous_output(tmp_path: Path) -> Path:
    out = tmp_path / "artifacts" / "model"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("from the last good run")
    return out


def assert_failed_cleanly(
    result: subprocess.CompletedProcess[str], out: Path, expected: str
) -> None:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in out.parent.iterdir()] == ["model"]


def test_offline_hub_id(tmp_path):
    out = previous_output(tmp_path)
    params = params_with(tmp_path, source="openai/whisper-base.en")
    result = run_cli(
        "model",
        "--params",
        str(params),
        "--out",
        str(out),
        cwd=tmp_path,
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert_failed_cleanly(
        result, out, "cannot reach the Hugging Face hub for model 'openai/whisper-base.en'"
    )


def test_an_unreachable_hub_data_set_is_one_line_at_once(tmp_path):
    """Before: 12 lines of retry reprs over ~25 s, then the error. The hub is pointed at a
    closed local port, so the test means the same with or without a network."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"]["calibration"] = {
        "kind": "hub",
        "dataset": "openslr/librispeech_asr",
        "split": "test",
    }
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    out = tmp_path / "artifacts" / "data"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("from the last good run")
    env = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}
    result = run_cli("data", "--params", str(params), "--out", str(out), env=env)
    assert result.returncode == 2, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.strip()]
    assert "cannot reach the Hugging Face hub for dataset 'openslr/librispeech_asr'" in line
    assert "HF_HUB_OFFLINE=1" in line
    assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_corrupt_ct2_model(tmp_path):
    out = previous_output(tmp_path)
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.bin").write_bytes(b"\x06\x00\x00\x00garbage")
    result = run_cli(
        "model",
        "--params",
        str(params_with(tmp_path, source=str(corrupt))),
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert_failed_cleanly(result, out, "corrupt CTranslate2 model.bin")


def test_params_with_unknown_key(tmp_path):
    out = previous_output(tmp_path)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["model"]["sorce"] = "x"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    result = run_cli("model", "--out", str(out), cwd=tmp_path)
    assert_failed_cleanly(result, out, "unknown key 'model.sorce'")


def test_help_lists_the_stages():
    result = run_cli("--help", cwd=REPO)
    assert result.returncode == 0
    for command in ("model", "data", "reference"):
        assert command in result.stdout


def test_say_writes_one_stderr_line_with_its_kind(capsys):
    from whisper_npu.errors import say

    say("compile", "two\nlines", kind="note")
    say(None, "before argparse")
    say("quantize", "plain", kind=None)
    assert capsys.readouterr().err.splitlines() == [
        "whisper-npu compile: note: two lines",
        "whisper-npu: error: before argparse",
        "whisper-npu quantize: plain",
    ]
