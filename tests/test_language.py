"""The decoder prompt is built at run time for each (language, task), and language detection
picks what transformers' `detect_language` picks, with OpenAI's probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from pipeline.export.onnx_bundle import decoding_spec, export_graphs
from tests.conftest import TINY_SPEC, bundle_record, tiny_whisper
from whisper_npu.bundle import Bundle, BundleRecord
from whisper_npu.decoding import DecodingSpec, prompt_tokens, with_prompt
from whisper_npu.errors import UserError
from whisper_npu.language import detect_language, language_probabilities
from whisper_npu.transcriber import OrtRunner, Transcriber
from whisper_npu.whisper_io import WhisperDims

SOT, TRANSLATE, TRANSCRIBE = 50258, 50358, 50359
# Multilingual Whisper: <|en|> is 50259 and the languages follow in LANGUAGES' order.
LANGUAGE_IDS = {code: 50259 + index for index, code in enumerate(LANGUAGES)}
MULTILINGUAL = DecodingSpec(
    prefix=(SOT,),
    eot=50257,
    no_timestamps=50363,
    suppress_tokens=(),
    begin_suppress_tokens=(),
    max_initial_timestamp_index=None,
    max_length=16,
    languages=LANGUAGE_IDS,
    tasks={"translate": TRANSLATE, "transcribe": TRANSCRIBE},
    language="en",
)


@pytest.mark.parametrize(
    ("language", "task", "prompt"),
    [
        (None, "transcribe", (SOT, 50259, TRANSCRIBE)),  # the bundle's default: en
        ("en", "transcribe", (SOT, 50259, TRANSCRIBE)),
        ("de", "transcribe", (SOT, 50261, TRANSCRIBE)),
        ("fr", "translate", (SOT, 50265, TRANSLATE)),
        ("ja", "translate", (SOT, 50266, TRANSLATE)),
        ("es", "transcribe", (SOT, 50262, TRANSCRIBE)),
    ],
)
def test_multilingual_prompt_for_each_language_and_task(language, task, prompt):
    assert prompt_tokens(MULTILINGUAL, language, task) == prompt
    resolved = with_prompt(MULTILINGUAL, language, task)
    assert resolved.prefix == prompt
    assert MULTILINGUAL.prefix == (SOT,)  # the bundle's spec is not changed


@pytest.mark.parametrize("language", [None, "en"])
def test_english_only_prompt_is_start_of_transcript_alone(language):
    assert prompt_tokens(TINY_SPEC, language, "transcribe") == TINY_SPEC.prefix


@pytest.mark.parametrize(
    ("spec", "language", "task", "message"),
    [
        (TINY_SPEC, None, "translate", "English-only: it cannot --task translate"),
        (TINY_SPEC, "fr", "transcribe", "English-only: it cannot --language fr"),
        (MULTILINGUAL, "xx", "transcribe", "--language xx: not a language this model knows"),
        (MULTILINGUAL, "fr", "summarize", "--task summarize: not a task this model knows"),
    ],
)
def test_prompt_refusals_are_one_line(spec, language, task, message):
    with pytest.raises(UserError, match=message) as error:
        prompt_tokens(spec, language, task)
    assert "\n" not in str(error.value)


def test_export_records_language_and_task_tables_not_a_baked_prompt():
    model = tiny_whisper(vocab_size=51865)
    generation = model.generation_config
    generation.is_multilingual = True
    generation.lang_to_id = {f"<|{code}|>": token for code, token in LANGUAGE_IDS.items()}
    generation.task_to_id = {"translate": TRANSLATE, "transcribe": TRANSCRIBE}
    generation.no_timestamps_token_id = 50363
    generation.decoder_start_token_id = SOT
    spec = decoding_spec(generation, 16, "de")
    assert spec.prefix == (SOT,)
    assert spec.languages == LANGUAGE_IDS and spec.language == "de"
    assert spec.tasks == {"translate": TRANSLATE, "transcribe": TRANSCRIBE}


@pytest.fixture(scope="module")
def multilingual(tmp_path_factory):
    """A tiny random multilingual Whisper and a runner on its exported graphs."""
    model = tiny_whisper(vocab_size=51865, seed=3)
    model.config._attn_implementation = "eager"
    model.config.decoder_start_token_id = SOT
    generation = model.generation_config
    generation.decoder_start_token_id = SOT
    generation.lang_to_id = {f"<|{code}|>": token for code, token in LANGUAGE_IDS.items()}
    dims = WhisperDims.from_config(model.config, max_decode_len=16)
    root = tmp_path_factory.mktemp("multilingual")
    export_graphs(model, dims, root)
    record = bundle_record("fp32", dims, MULTILINGUAL)
    (root / "bundle.json").write_text(json.dumps(record))
    return model, OrtRunner(Bundle(root, BundleRecord.model_validate(record)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_detection_matches_transformers_detect_language(multilingual, seed):
    model, runner = multilingual
    features = np.random.default_rng(seed).standard_normal((1, 80, 3000)).astype(np.float32)
    detected = detect_language(runner, MULTILINGUAL, features)
    with torch.inference_mode():
        expected = int(model.detect_language(input_features=torch.from_numpy(features))[0])
        logits = model(
            input_features=torch.from_numpy(features), decoder_input_ids=torch.tensor([[SOT]])
        ).logits[0, -1]
    assert LANGUAGE_IDS[detected.code] == expected
    torch_probabilities = torch.softmax(logits[list(LANGUAGE_IDS.values())].double(), -1)
    ours = language_probabilities(runner, MULTILINGUAL, features)
    np.testing.assert_allclose(list(ours.values()), torch_probabilities.numpy(), atol=1e-5)
    assert detected.probability == max(ours.values())


def test_english_only_bundle_detects_nothing():
    detected = detect_language(None, TINY_SPEC, np.zeros((1, 80, 3000), np.float32))
    assert (detected.code, detected.probability) == ("en", 1.0)


def test_transcriber_refuses_translate_on_an_english_only_bundle(tmp_path):
    from tests.conftest import write_tiny_bundle

    transcriber = Transcriber.from_bundle(write_tiny_bundle(tmp_path / "bundle"))
    with pytest.raises(UserError, match="English-only"):
        transcriber.transcribe(np.zeros(16000, np.float32), task="translate")
