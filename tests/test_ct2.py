"""The CT2 → transformers conversion, checked against ctranslate2's own converter (the inverse)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.sources.builtin import builtin_dir
from pipeline.sources.ct2 import _tokenizer, convert_ct2_whisper, read_ct2_model
from tests.conftest import tiny_whisper
from whisper_npu.errors import UserError

ctranslate2 = pytest.importorskip("ctranslate2")


def to_ct2(model, tmp_path: Path, quantization: str) -> Path:
    """Write `model` with ctranslate2's converter, the same path faster-whisper models come from."""
    hf_dir, ct2_dir = tmp_path / "hf", tmp_path / "ct2"
    model.save_pretrained(hf_dir)
    _tokenizer(builtin_dir("builtin:tiny.en"), model.config.vocab_size).save_pretrained(hf_dir)
    converter = ctranslate2.converters.TransformersConverter(
        str(hf_dir), copy_files=["tokenizer.json"]
    )
    converter.convert(str(ct2_dir), quantization=quantization)
    return ct2_dir


@pytest.mark.parametrize("num_mel_bins", [80, 128])
def test_round_trip_through_ctranslate2_is_exact(tmp_path, num_mel_bins):
    from transformers import WhisperForConditionalGeneration

    original = tiny_whisper(num_mel_bins=num_mel_bins)
    convert_ct2_whisper(to_ct2(original, tmp_path, "float32"), tmp_path / "back")
    restored = WhisperForConditionalGeneration.from_pretrained(
        tmp_path / "back", use_safetensors=True
    ).eval()

    expected, actual = original.state_dict(), restored.state_dict()
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert restored.config.num_mel_bins == num_mel_bins

    features = torch.randn(1, num_mel_bins, 3000)
    tokens = torch.tensor([[50257, 50362, 400, 500]])
    with torch.no_grad():
        want = original(input_features=features, decoder_input_ids=tokens).logits
        got = restored(input_features=features, decoder_input_ids=tokens).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_float16_weights_are_widened_exactly(tmp_path):
    original = tiny_whisper()
    ct2_dir = to_ct2(original, tmp_path, "float16")
    variables = read_ct2_model(ct2_dir / "model.bin").variables
    assert variables["encoder/conv1/weight"].dtype == np.float16
    weight = original.model.encoder.conv1.weight.detach().numpy()
    np.testing.assert_array_equal(variables["encoder/conv1/weight"], weight.astype(np.float16))


def test_tokenizer_and_generation_config_follow_whisper_tiny_en(tiny_en_dir):
    from transformers import GenerationConfig, WhisperTokenizerFast

    tokenizer = WhisperTokenizerFast.from_pretrained(tiny_en_dir)
    generation = GenerationConfig.from_pretrained(tiny_en_dir)
    assert len(tokenizer) == 51864
    assert tokenizer.convert_tokens_to_ids(["<|0.00|>", "<|30.00|>"]) == [50363, 51863]
    assert generation.decoder_start_token_id == 50257
    assert generation.eos_token_id == 50256
    assert generation.no_timestamps_token_id == 50362
    assert generation.is_multilingual is False
    assert generation.begin_suppress_tokens == [220, 50256]
    assert 50357 in generation.suppress_tokens


def ct2_header(spec: str) -> bytes:
    name = spec.encode() + b"\0"
    return struct.pack("I", 6) + struct.pack("H", len(name)) + name + struct.pack("I", 1)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (lambda good: good[: len(good) // 2], "corrupt"),
        (lambda good: good + b"\0\0\0\0", "trailing bytes"),
        (lambda good: b"\xff" * 64, "not a CTranslate2 model.bin"),
        (lambda good: ct2_header("TransformerSpec") + struct.pack("II", 0, 0), "not Whisper"),
    ],
)
def test_corrupt_or_foreign_model_bin_is_a_user_error(tmp_path, payload, message):
    source = builtin_dir("builtin:tiny.en")
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (bad / name).write_bytes((source / name).read_bytes())
    (bad / "model.bin").write_bytes(payload((source / "model.bin").read_bytes()))
    with pytest.raises(UserError, match=message):
        convert_ct2_whisper(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
