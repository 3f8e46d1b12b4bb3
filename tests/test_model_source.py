from __future__ import annotations

import json

import pytest
from transformers import WhisperForConditionalGeneration

from pipeline.config import ModelParams
from pipeline.sources.builtin import builtin_dir
from pipeline.sources.ct2 import _tokenizer
from pipeline.sources.model import classify_source, fetch_model
from tests.conftest import tiny_whisper
from whisper_npu.errors import UserError


@pytest.fixture
def local_transformers_dir(tmp_path):
    folder = tmp_path / "local"
    tiny_whisper().save_pretrained(folder)
    _tokenizer(builtin_dir("builtin:tiny.en"), 51864).save_pretrained(folder)
    from transformers import WhisperFeatureExtractor

    WhisperFeatureExtractor().save_pretrained(folder)
    return folder


def test_local_transformers_dir_round_trips(tmp_path, local_transformers_dir):
    record = fetch_model(ModelParams(source=str(local_transformers_dir)), tmp_path / "out")
    assert record["kind"] == "transformers"
    saved = json.loads((tmp_path / "out" / "source.json").read_text())
    assert saved["model_sha256"] == record["model_sha256"]
    model = WhisperForConditionalGeneration.from_pretrained(tmp_path / "out", use_safetensors=True)
    assert model.config.d_model == 64


def test_pickled_checkpoints_are_refused(tmp_path):
    folder = tmp_path / "pickled"
    tiny_whisper().save_pretrained(folder, safe_serialization=False)
    assert (folder / "pytorch_model.bin").is_file()
    with pytest.raises(UserError, match=r"model\.safetensors"):
        fetch_model(ModelParams(source=str(folder)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("builtin:large-v9", "unknown built-in model"),
        ("not a model at all", "not a model directory, built-in name, or hub id"),
        ("./missing/dir", "not a model directory"),
    ],
)
def test_unusable_sources(source, message):
    with pytest.raises(UserError, match=message):
        classify_source(source)


def test_directory_that_is_not_whisper(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(UserError, match="not a Whisper model directory"):
        classify_source(str(tmp_path))


def test_ct2_directory_and_hub_id_are_recognised(tmp_path):
    assert classify_source("builtin:tiny.en")[0] == "ct2"
    assert classify_source("openai/whisper-base.en") == ("hub", "openai/whisper-base.en")


def test_remote_code_is_refused_not_copied(tmp_path):
    """A whisper config with auto_map names Python classes in the model's own files: refused
    before anything loads, never carried into artifacts."""
    (tmp_path / "config.json").write_text(
        json.dumps({"model_type": "whisper", "auto_map": {"AutoModel": "modeling.Evil"}})
    )
    with pytest.raises(UserError, match=r"asks for remote code \(auto_map\); refusing it"):
        classify_source(str(tmp_path))


@pytest.mark.parametrize("content", [b"\xff\xfe not utf-8", b"{not json", b"[1, 2]"])
def test_unreadable_model_config_is_one_line(tmp_path, content):
    (tmp_path / "config.json").write_bytes(content)
    with pytest.raises(UserError, match="config"):
        classify_source(str(tmp_path))
