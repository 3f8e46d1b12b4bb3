"""Segments, OpenAI's hallucination guards and the output formats, on scripted runners: what a
guard does when it fires, and that a window passing every guard keeps its greedy tokens."""

from __future__ import annotations

import numpy as np
import pytest
import srt
import webvtt

from whisper_npu.decoding import (
    DecodingSpec,
    Sampling,
    TranscribeOptions,
    Window,
    WindowDecoder,
    WindowTokens,
    decode_window,
)
from whisper_npu.errors import UserError
from whisper_npu.formats import Format, render
from whisper_npu.result import build_result
from whisper_npu.transcriber import Decoded

pytestmark = pytest.mark.runtime

VOCAB = 51864
SPEC = DecodingSpec(
    prefix=(50257,),
    eot=50256,
    no_timestamps=50362,
    suppress_tokens=(),
    begin_suppress_tokens=(),
    max_initial_timestamp_index=50,
    max_length=60,
)
TS = SPEC.timestamp_begin
MEL = np.zeros((80, 3000), np.float32)
LOUD = np.full(480_000, 0.5, np.float32)


def words(tokens: list[int]) -> str:
    return " ".join(f"w{t}" for t in tokens if t < SPEC.eot)


class Scripted:
    """Logits that prefer one scripted token per generated step by `margin` nats (steps after
    the script prefer end-of-text); `no_speech` sets <|nospeech|>'s logit after the SOT."""

    def __init__(self, script: list[int], margin: float = 12.0, no_speech: float = 0.0) -> None:
        self.script, self.margin, self.no_speech = script, margin, no_speech
        self.encodes, self.step = 0, 0

    def encode(self, features: np.ndarray) -> None:
        self.encodes += 1

    def decode_step(self, token: int, position: int) -> np.ndarray:
        logits = np.zeros(VOCAB, np.float32)
        if position == 0:
            logits[SPEC.no_speech] = self.no_speech
            self.step = 0
            return logits
        step, self.step = self.step, self.step + 1
        logits[self.script[step] if step < len(self.script) else SPEC.eot] = self.margin
        return logits


def decoder(runner: Scripted, **options: object) -> WindowDecoder:
    return WindowDecoder(runner, SPEC, words, TranscribeOptions(**options))  # type: ignore[arg-type]


def test_a_confident_window_keeps_its_greedy_tokens_with_every_guard_on() -> None:
    script = [10, 11, 12, 13]
    guarded = list(decoder(Scripted(script)).windows(MEL, LOUD[:16000], timestamps=False))
    plain = decode_window(Scripted(script), SPEC, MEL[None], timestamps=False)
    assert guarded[0].kept == plain.tokens == script
    assert guarded[0].decoded.temperature == 0.0
    assert guarded[0].decoded.avg_logprob > -1.0  # passes the log-prob check


def test_an_unlikely_window_falls_back_to_seeded_sampling() -> None:
    """Margin 0: every token is a guess (avg log-prob ~ -10.9 < -1), so each temperature is
    tried; the same seed gives the same tokens."""
    runs = [
        next(iter(decoder(Scripted([10] * 5, margin=0.0), seed=3).windows(MEL, LOUD, False)))
        for _ in range(2)
    ]
    assert runs[0].decoded.temperature == 1.0  # none passed: the last temperature's decode
    assert runs[0].kept == runs[1].kept
    assert runs[0].kept != [10] * 5


def test_the_repetition_guard_stops_a_loop_and_forces_a_fallback() -> None:
    runner = Scripted([10, 11] * 40)
    found = decode_window(runner, SPEC, MEL[None], False, Sampling(repetition_limit=8))
    assert found.looped and found.tokens == [10, 11] * 8
    window = next(iter(decoder(Scripted([10, 11] * 40)).windows(MEL, LOUD, False)))
    assert window.decoded.temperature > 0  # greedy looped; a sampled decode replaced it


def test_no_speech_with_unlikely_tokens_gives_no_text_and_confident_text_stays() -> None:
    silent = list(decoder(Scripted([10], margin=0.0, no_speech=30.0)).windows(MEL, LOUD, False))
    assert silent[0].kept == [] and silent[0].decoded.no_speech_prob > 0.99
    spoken = list(decoder(Scripted([10], no_speech=30.0)).windows(MEL, LOUD, False))
    assert spoken[0].kept == [10]  # OpenAI keeps text the model is sure of


def test_digital_silence_is_not_decoded() -> None:
    runner = Scripted([10])
    windows = list(decoder(runner).windows(MEL, np.zeros(480_000, np.float32), False))
    assert runner.encodes == 0 and windows[0].kept == []


@pytest.mark.parametrize(
    "options",
    [{"temperatures": ()}, {"temperatures": (float("nan"),)}, {"logprob_threshold": float("inf")}],
)
def test_options_are_checked(options: dict[str, object]) -> None:
    with pytest.raises(UserError):
        TranscribeOptions(**options)  # type: ignore[arg-type]


def two_windows() -> list[Window]:
    """A 45 s recording: the first window ends at a pair of stamps at 24 s, the second
    starts there."""
    first = [TS, 10, 11, TS + 250, TS + 250, 12, TS + 1200, TS + 1200]
    second = [TS, 13, TS + 500, TS + 500, 14, 15, TS + 1000]
    found = [WindowTokens(t, -1.0, 0.01, 0.0, compression_ratio=1.2) for t in (first, second)]
    return [
        Window(0, 3000, found[0], first, timestamps=True),
        Window(2400, 2100, found[1], second, timestamps=True),
    ]


def test_segment_times_are_absolute_across_windows_and_within_the_duration() -> None:
    result = build_result(Decoded(two_windows(), SPEC, None, None), words, 44.5, drop_textless=True)
    assert [(s.start, s.end, s.text) for s in result.segments] == [
        (0.0, 5.0, "w10 w11"),
        (5.0, 24.0, "w12"),
        (24.0, 34.0, "w13"),
        (34.0, 44.0, "w14 w15"),
    ]
    assert result.text == "w10 w11 w12 w13 w14 w15"
    assert [s.id for s in result.segments] == [0, 1, 2, 3]
    assert result.segments[2].seek == 2400


def dotted(tokens: list[int]) -> str:
    """Token 12 reads ". . ." (quiet noise), 13 a music note, the others words."""
    shown = {12: ". . .", 13: "\u266a"}
    return " ".join(shown.get(t, f"w{t}") for t in tokens if t < SPEC.eot).strip()


@pytest.mark.parametrize("drop", [True, False])
def test_a_segment_of_punctuation_alone_is_no_text_under_the_guards(drop: bool) -> None:
    """ ". . ." is dropped with its tokens, from the segments and the text; a symbol is text;
    without the guard (`plain()`, the pipeline's transcript) nothing is dropped."""
    assert TranscribeOptions().drop_textless and not TranscribeOptions.plain().drop_textless
    result = build_result(Decoded(two_windows(), SPEC, None, None), dotted, 44.5, drop)
    texts = [segment.text for segment in result.segments]
    if drop:
        assert texts == ["w10 w11", "\u266a", "w14 w15"]
        assert result.text == "w10 w11 \u266a w14 w15"
    else:
        assert texts == ["w10 w11", ". . .", "\u266a", "w14 w15"]
        assert result.text == "w10 w11 . . . \u266a w14 w15"


def test_srt_and_vtt_are_valid_for_their_own_parsers() -> None:
    result = build_result(Decoded(two_windows(), SPEC, None, None), words, 44.5, drop_textless=True)
    cues = list(srt.parse(render(result, Format.SRT)))
    assert [cue.content for cue in cues] == [s.text for s in result.segments]
    assert [cue.end.total_seconds() for cue in cues] == [5.0, 24.0, 34.0, 44.0]
    vtt = webvtt.from_string(render(result, Format.VTT))
    assert [(c.start, c.end) for c in vtt][-1] == ("00:00:34.000", "00:00:44.000")
    ends = [c.end_in_seconds for c in vtt]
    assert ends == sorted(ends) and ends[-1] <= result.duration
    assert render(result, Format.TSV).splitlines()[1] == "0\t5000\tw10 w11"
