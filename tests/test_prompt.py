"""The initial prompt (OpenAI's `initial_prompt`, the server's `prompt`) against transformers'
`generate(prompt_ids=...)` on a tiny random Whisper with the real tiny.en tokenizer, and a
guard fallback that decodes again on the same encoder output."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from transformers import GenerationConfig, WhisperFeatureExtractor, WhisperProcessor

from pipeline.export.onnx_bundle import export_graphs
from pipeline.sources.builtin import builtin_dir
from pipeline.sources.ct2 import _tokenizer
from tests.conftest import bundle_record, tiny_whisper
from whisper_npu.bundle import Bundle
from whisper_npu.decoding import (
    GREEDY,
    DecodingSpec,
    TranscribeOptions,
    WindowDecoder,
    WindowTokens,
    _complete_segments,
    decode_encoded,
    decode_window,
)
from whisper_npu.errors import UserError
from whisper_npu.transcriber import OrtRunner, Transcriber
from whisper_npu.whisper_io import WhisperDims

MAX_LENGTH = 48  # cache slots of the test bundle: room for a prompt and some output
SPECIALS = tuple(range(50257, 50363))  # suppressed, so the random model writes text or stamps
SPEC = DecodingSpec((50257,), 50256, 50362, SPECIALS, (220, 50256), 50, MAX_LENGTH)
PROMPT = "Whisper on the NPU, by AMD."


@pytest.fixture(scope="module")
def peer() -> tuple:
    """The tiny random Whisper (transformers) and a processor with tiny.en's real tokenizer."""
    model = tiny_whisper()
    model.config._attn_implementation = "eager"
    model.generation_config = GenerationConfig(
        decoder_start_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50256,
        pad_token_id=50256,
        no_timestamps_token_id=SPEC.no_timestamps,
        prev_sot_token_id=SPEC.start_of_prev,
        is_multilingual=False,
        max_initial_timestamp_index=SPEC.max_initial_timestamp_index,
        suppress_tokens=list(SPEC.suppress_tokens),
        begin_suppress_tokens=list(SPEC.begin_suppress_tokens),
        max_length=448,
    )
    tokenizer = _tokenizer(builtin_dir("builtin:tiny.en"), 51864)
    return model, WhisperProcessor(WhisperFeatureExtractor(), tokenizer)


@pytest.fixture(scope="module")
def transcriber(peer, tmp_path_factory: pytest.TempPathFactory) -> Transcriber:
    """The same random Whisper exported to a bundle with 48 cache slots and tiny.en's
    tokenizer."""
    model, processor = peer
    dims = WhisperDims.from_config(model.config, max_decode_len=MAX_LENGTH)
    root = tmp_path_factory.mktemp("prompt") / "bundle"
    root.mkdir()
    export_graphs(model, dims, root)
    (root / "bundle.json").write_text(json.dumps(bundle_record("fp32", dims, SPEC)))
    processor.tokenizer.backend_tokenizer.save(str(root / "tokenizer.json"))
    np.save(root / "mel_filters.npy", np.zeros((201, 80)))
    bundle = Bundle.load(root)
    return Transcriber(bundle, OrtRunner(bundle, threads=1))


def features(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (1, 80, 3000)).astype(np.float32)


def prompted(
    runner: OrtRunner, window: np.ndarray, timestamps: bool, previous: tuple[int, ...]
) -> WindowTokens:
    runner.encode(window)
    return decode_encoded(runner, SPEC, timestamps, GREEDY, previous)


def test_prompt_tokens_are_transformers_get_prompt_ids(peer, transcriber):
    _, processor = peer
    ids = processor.get_prompt_ids(PROMPT).tolist()
    assert [SPEC.start_of_prev, *transcriber.previous_tokens(PROMPT)] == ids
    assert processor.tokenizer.convert_tokens_to_ids("<|startofprev|>") == SPEC.start_of_prev
    assert transcriber.previous_tokens(f"  {PROMPT}\n") == transcriber.previous_tokens(PROMPT)


@pytest.mark.parametrize("timestamps", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_prompted_decode_is_transformers_generate_with_prompt_ids(
    peer, transcriber, timestamps, seed
):
    model, processor = peer
    previous = transcriber.previous_tokens(PROMPT)
    window = features(seed)
    ours = prompted(transcriber.runner, window, timestamps, previous)
    prompt = [SPEC.start_of_prev, *previous, *SPEC.prefix]
    prompt += [] if timestamps else [SPEC.no_timestamps]
    with torch.inference_mode():
        generated = model.generate(
            torch.from_numpy(window),
            prompt_ids=torch.from_numpy(processor.get_prompt_ids(PROMPT)),
            return_timestamps=timestamps,
            do_sample=False,
            num_beams=1,
            max_new_tokens=MAX_LENGTH - len(prompt),
        )
    theirs = [int(t) for t in generated[0] if t != SPEC.eot]
    if timestamps:
        # transformers keeps the window's complete segments, then decodes the next window
        # from the last timestamp: the long-form seek, which ours does in WindowDecoder.
        kept, _ = _complete_segments(ours.tokens, SPEC.timestamp_begin, 3000)
        assert len(kept) >= 10 and theirs[: len(kept)] == kept
    else:
        assert len(ours.tokens) >= 10 and theirs == ours.tokens
    unprompted = decode_window(transcriber.runner, SPEC, window, timestamps)
    assert unprompted.tokens != ours.tokens  # the prompt is read


def test_no_speech_probability_is_read_after_start_of_transcript(peer, transcriber):
    """OpenAI's and transformers' no-speech probability: the raw logits at the
    <|startoftranscript|> position, which the prompt moves along."""
    model, _ = peer
    previous = transcriber.previous_tokens(PROMPT)
    window = features(2)
    found = prompted(transcriber.runner, window, False, previous)
    prompt = [SPEC.start_of_prev, *previous, *SPEC.prefix, SPEC.no_timestamps]
    with torch.inference_mode():
        logits = model(
            input_features=torch.from_numpy(window), decoder_input_ids=torch.tensor([prompt])
        ).logits[0]
    probabilities = logits.double().softmax(-1)[:, SPEC.no_speech]
    sot = len(previous) + 1
    assert found.no_speech_prob == pytest.approx(float(probabilities[sot]), rel=1e-4)
    assert float(probabilities[0]) != pytest.approx(float(probabilities[sot]), rel=0.05)


def test_a_long_prompt_keeps_its_last_tokens_and_leaves_room_to_decode(transcriber):
    words = " ".join(f"word{i}" for i in range(200))
    full = transcriber.tokenizer.encode(" " + words, add_special_tokens=False).ids
    kept = transcriber.previous_tokens(words)
    assert kept == tuple(full[-SPEC.max_previous :]) and len(kept) == MAX_LENGTH // 2 - 1
    found = prompted(transcriber.runner, features(0), False, kept)
    assert found.tokens  # 48 - (1 + 23 + 2) = 22 positions were left to decode
    assert replace(SPEC, max_length=448).max_previous == 223  # OpenAI's n_text_ctx // 2 - 1


@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ("say <|endoftext|> now", "special tokens: <|endoftext|>"),
        ("at <|1.00|>", "special tokens: <|1.00|>"),
        ("x" * 8193, "8193 characters long, more than 8192"),
    ],
)
def test_prompts_it_cannot_take_are_one_line(transcriber, prompt, message):
    with pytest.raises(UserError, match=message.replace("|", r"\|")) as refused:
        transcriber.check_prompt(TranscribeOptions(initial_prompt=prompt))
    assert "\n" not in str(refused.value)


def test_no_prompt_and_a_blank_prompt_decode_exactly_as_before(transcriber):
    """No prompt: the same decoder calls as before the feature (<|startoftranscript|> at 0)."""
    assert transcriber.previous_tokens(None) == transcriber.previous_tokens(" \n") == ()
    samples = np.random.default_rng(0).normal(0, 0.1, 16_000).astype(np.float32)
    plain = transcriber.decode(samples, TranscribeOptions.plain())
    blank = transcriber.decode(samples, replace(TranscribeOptions.plain(), initial_prompt=" "))
    assert plain.windows[0].decoded == blank.windows[0].decoded


class Counting:
    """A runner's calls counted; `reset` only when the wrapped runner is to have it."""

    def __init__(self, inner, with_reset: bool = True) -> None:
        self.inner, self.encodes, self.resets, self.fed = inner, 0, 0, []
        if with_reset:
            self.reset = self._reset

    def encode(self, features: np.ndarray) -> None:
        self.encodes += 1
        self.inner.encode(features)

    def _reset(self) -> None:
        self.resets += 1
        self.inner.reset()

    def decode_step(self, token: int, position: int) -> np.ndarray:
        self.fed.append((token, position))
        return self.inner.decode_step(token, position)


def test_a_fallback_decodes_again_on_the_same_encoder_output(transcriber):
    """logprob_threshold 0 fails every decode, so each window tries all three temperatures:
    one encoder run per window with `reset`, and the same tokens as encoding again."""
    options = TranscribeOptions(temperatures=(0.0, 0.5, 1.0), logprob_threshold=0.0, seed=5)
    mel = np.random.default_rng(3).normal(0, 1, (80, 4500)).astype(np.float32)
    samples = np.full(4500 * 160, 0.5, np.float32)
    found = {}
    for with_reset in (True, False):
        runner = Counting(transcriber.runner, with_reset)
        decoder = WindowDecoder(runner, SPEC, transcriber.text, options)
        windows = list(decoder.windows(mel, samples, timestamps=True))
        found[with_reset] = (windows, runner)
    windows, runner = found[True]
    assert len(windows) >= 2 and all(w.decoded.temperature == 1.0 for w in windows)
    assert runner.encodes == len(windows) and runner.resets == 2 * len(windows)
    again, encoder_again = found[False]
    assert encoder_again.encodes == 3 * len(windows)
    assert [w.decoded for w in windows] == [w.decoded for w in again]
    assert runner.fed == encoder_again.fed


def test_an_initial_prompt_conditions_windows_until_one_is_not_silent():
    """OpenAI's transcribe() without condition_on_previous_text: the prompt is fed until a
    window gives text; a window judged silent (here: below silence_db) keeps it for the next."""

    class Recording:
        def __init__(self) -> None:
            self.prompts: list[list[int]] = []

        def encode(self, features: np.ndarray) -> None:
            self.prompts.append([])

        def reset(self) -> None:
            self.prompts.append([])

        def decode_step(self, token: int, position: int) -> np.ndarray:
            self.prompts[-1].append(token)
            logits = np.zeros(51864, np.float32)
            logits[SPEC.eot if position > 8 else 100] = 10.0
            return logits

    runner = Recording()
    options = TranscribeOptions.plain(timestamps=True)
    decoder = WindowDecoder(runner, SPEC, lambda t: "", replace(options, silence_db=-60.0), (7, 8))
    samples = np.concatenate([np.zeros(480_000), np.full(960_000, 0.5)]).astype(np.float32)
    mel = np.zeros((80, 9000), np.float32)
    windows = list(decoder.windows(mel, samples, timestamps=True))
    assert windows[0].decoded.tokens == [] and len(windows) >= 3  # silence: not decoded
    assert runner.prompts[0][:4] == [SPEC.start_of_prev, 7, 8, 50257]  # the second window
    assert all(p[0] == 50257 for p in runner.prompts[1:])
