"""The shared decode loop against transformers' own logits processors, on a scripted runner."""

from __future__ import annotations

import numpy as np
import pytest

from whisper_npu.decoding import (
    DecodingSpec,
    TranscribeOptions,
    WindowDecoder,
    _apply_timestamp_rules,
    _complete_segments,
    greedy_decode,
)

VOCAB = 51864
SPEC = DecodingSpec(
    prefix=(50257,),
    eot=50256,
    no_timestamps=50362,
    suppress_tokens=(1, 2, 50361),
    begin_suppress_tokens=(220, 50256),
    max_initial_timestamp_index=50,
    max_length=12,
)
TS = SPEC.timestamp_begin


class ScriptedRunner:
    """Returns logits that prefer a scripted token at each step; records what it was fed."""

    def __init__(self, script: list[int]) -> None:
        self.script, self.fed, self.encodes = script, [], 0

    def encode(self, features: np.ndarray) -> None:
        self.encodes += 1
        self.fed.clear()

    def decode_step(self, token: int, position: int) -> np.ndarray:
        assert position == len(self.fed)
        self.fed.append(token)
        logits = np.zeros(VOCAB, dtype=np.float32)
        step = len(self.fed) - 1
        if step < len(self.script):
            logits[self.script[step]] = 10.0
        return logits


@pytest.mark.runtime
def test_greedy_prompt_suppression_and_stop_at_eot():
    runner = ScriptedRunner([0, 0, 220, 1, 500, 600, SPEC.eot])
    # steps 0-1 answer the prompt tokens; 220 is begin-suppressed, so step 2 picks the best other
    tokens = greedy_decode(runner, SPEC, np.zeros((1, 80, 3000), np.float32), timestamps=False)
    assert runner.fed[:2] == [50257, SPEC.no_timestamps]
    assert 220 not in tokens[:1] and 1 not in tokens
    assert tokens[-2:] == [500, 600]


@pytest.mark.runtime
def test_greedy_stops_at_the_length_limit():
    runner = ScriptedRunner([0, 0, *[700] * 50])
    tokens = greedy_decode(runner, SPEC, np.zeros((1, 80, 3000), np.float32), timestamps=False)
    assert len(tokens) + 2 == SPEC.max_length


@pytest.mark.parametrize("seed", range(40))
def test_timestamp_rules_match_transformers(seed):
    import torch
    from transformers import GenerationConfig
    from transformers.generation.logits_process import WhisperTimeStampLogitsProcessor

    rng = np.random.default_rng(seed)
    history = list(rng.choice([100, 200, TS + 3, TS + 7, TS + 40], size=rng.integers(0, 6)))
    scores = rng.normal(0, 3, VOCAB).astype(np.float32)
    scores[TS:] += rng.normal(0, 3)  # sometimes timestamps dominate, sometimes text
    config = GenerationConfig(
        no_timestamps_token_id=SPEC.no_timestamps,
        eos_token_id=SPEC.eot,
        max_initial_timestamp_index=SPEC.max_initial_timestamp_index,
    )
    processor = WhisperTimeStampLogitsProcessor(config, begin_index=1)
    input_ids = torch.tensor([[50257, *history]])
    want = processor(input_ids, torch.from_numpy(scores.copy()[None]))[0].numpy()
    got = scores.copy()
    _apply_timestamp_rules(got, [int(t) for t in history], SPEC)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    assert int(np.argmax(got)) == int(np.argmax(want))


@pytest.mark.runtime
@pytest.mark.parametrize(
    ("tokens", "kept", "covered"),
    [
        ([TS, 10, 11, TS + 50, TS + 50, 12, TS + 80, TS + 80, 13], 8, 160),  # seek to last pair
        ([TS, 10, TS + 50, TS + 50, 12, TS + 90], 6, 3000),  # single timestamp ending: whole window
        ([10, 11, 12], 3, 3000),  # no timestamps at all
        ([TS, TS, 10], 2, 3000),  # a pair at 0.00 would never advance: move on
    ],
)
def test_complete_segments(tokens, kept, covered):
    got_tokens, got_covered = _complete_segments(tokens, TS, 3000)
    assert got_tokens == tokens[:kept]
    assert got_covered == covered


@pytest.mark.runtime
def test_long_form_walks_windows_until_the_end():
    runner = ScriptedRunner([TS, 10, TS + 100, SPEC.eot])  # each window: one segment, single ending
    mel = np.zeros((80, 7000), dtype=np.float32)
    decoder = WindowDecoder(runner, SPEC, lambda tokens: "", TranscribeOptions.plain())
    windows = list(decoder.windows(mel, np.ones(7000 * 160, np.float32), timestamps=True))
    tokens = [token for window in windows for token in window.kept]
    assert runner.encodes == 3  # 3000 + 3000 + 1000 frames
    assert tokens.count(10) == 3
