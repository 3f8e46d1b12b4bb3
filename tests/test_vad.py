"""`--vad`: Silero's regions packed into ≤ 30 s chunks, and every chunk's segment times mapped
back to the original audio. The mapping is checked on hand-made regions (no model)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import write_tiny_bundle
from whisper_npu import TranscribeOptions, load
from whisper_npu.cli import main
from whisper_npu.errors import UserError
from whisper_npu.result import Result, Segment
from whisper_npu.vad import Chunk, Region, VadOptions, pack, transcribe_speech

SR = 16_000


def seconds(*pairs: tuple[float, float]) -> list[Region]:
    return [Region(round(start * SR), round(end * SR)) for start, end in pairs]


def segment(start: float, end: float, text: str) -> Segment:
    return Segment(0, 0, start, end, text, [], 0.0, -0.1, 1.0, 0.0)


@pytest.mark.runtime
def test_pack_fills_windows_in_order_and_cuts_overlong_regions():
    regions = seconds((2, 12), (30, 45), (70, 75), (80, 90), (100, 165))
    chunks = pack(regions)
    assert [chunk.regions for chunk in chunks] == [
        tuple(seconds((2, 12), (30, 45), (70, 75))),  # exactly 30 s
        tuple(seconds((80, 90))),  # the next piece does not fit beside it
        tuple(seconds((100, 130))),  # the 65 s region, cut into 30 s pieces
        tuple(seconds((130, 160))),
        tuple(seconds((160, 165))),
    ]
    assert all(sum(r.size for r in chunk.regions) <= 30 * SR for chunk in chunks)
    assert pack([]) == []


@pytest.mark.runtime
def test_chunk_times_map_back_across_the_cut_pauses():
    chunk = Chunk(tuple(seconds((2, 6), (26, 30.5), (50, 52))))
    # chunk time 0..4 is 2..6, 4..8.5 is 26..30.5, 8.5..10.5 is 50..52
    assert chunk.original_time(0.0) == 2.0
    assert chunk.original_time(1.5) == 3.5
    assert chunk.original_time(5.0) == 27.0
    assert chunk.original_time(9.0) == 50.5
    # On a seam: a segment ending there ends before the pause, one starting there after it.
    assert chunk.original_time(4.0, is_end=True) == 6.0
    assert chunk.original_time(4.0) == 26.0
    assert chunk.original_time(8.5, is_end=True) == 30.5
    # Whisper's window (and a timestamp token) may run past the chunk's audio: clamped.
    assert chunk.original_time(30.0, is_end=True) == 52.0


@pytest.mark.runtime
def test_a_segment_ending_in_the_padding_past_a_seam_ends_at_the_seam():
    chunk = Chunk(tuple(seconds((2, 6), (26, 30))), padding=0.4)  # seam at chunk time 4.0
    assert chunk.original_span(0.0, 4.44) == (2.0, 6.0)  # measured: Whisper's end ~0.44 s past
    assert chunk.original_span(0.0, 4.8) == (2.0, 6.0)
    assert chunk.original_span(0.0, 5.0) == (2.0, 27.0)  # past both paddings: speech
    assert chunk.original_span(4.44, 8.0) == (26.44, 30.0)  # starts after the seam: as it is
    assert Chunk(chunk.regions).original_span(0.0, 4.44) == (2.0, 26.44)  # no padding known


@pytest.mark.runtime
def test_chunk_samples_are_its_regions_back_to_back():
    audio = np.arange(10 * SR, dtype=np.float32)
    chunk = Chunk(tuple(seconds((1, 2), (5, 5.5))))
    expected = np.concatenate([audio[SR : 2 * SR], audio[5 * SR : 5 * SR + SR // 2]])
    np.testing.assert_array_equal(chunk.samples(audio), expected)


@pytest.mark.runtime
def test_results_are_joined_on_the_original_time_line():
    audio = np.zeros(80 * SR, np.float32)
    chunks = pack(seconds((2, 6), (26, 30), (50, 75)))
    answers = iter(
        [
            Result("one. two.", [segment(0, 3.5, "one."), segment(4, 8, "two.")], "fr", 0.9, 8),
            Result("three.", [segment(0, 25, "three.")], "fr", None, 25),
        ]
    )
    seen: list[Result | None] = []

    def decode(samples: np.ndarray, first: Result | None) -> Result:
        seen.append(first)
        return next(answers)

    silent = Result("", [], "en", None, 80.0)
    result = transcribe_speech(audio, chunks, decode, silent)
    assert result.text == "one. two. three."
    assert [(s.id, s.start, s.end, s.text) for s in result.segments] == [
        (0, 2.0, 5.5, "one."),
        (1, 26.0, 30.0, "two."),
        (2, 50.0, 75.0, "three."),
    ]
    assert result.segments[2].seek == 5000  # 50 s in 10 ms mel frames
    assert (result.language, result.language_probability, result.duration) == ("fr", 0.9, 80.0)
    assert seen[0] is None and seen[1] is not None and seen[1].language == "fr"
    assert transcribe_speech(audio, [], decode, silent) is silent


@pytest.mark.runtime
def test_vad_options_are_checked():
    with pytest.raises(UserError, match="threshold"):
        VadOptions(threshold=1.5)
    with pytest.raises(UserError, match=">= 0 ms"):
        VadOptions(speech_pad_ms=-1)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("vad") / "bundle")


def test_model_decodes_only_the_speech_and_reports_original_times(bundle, monkeypatch):
    model = load(bundle)
    audio = np.random.default_rng(0).normal(0, 0.1, 70 * SR).astype(np.float32)
    regions = seconds((3, 8), (40, 44))
    monkeypatch.setattr("whisper_npu.model.speech_regions", lambda samples, opts: regions)
    plain = TranscribeOptions.plain(timestamps=True)
    result = model.transcribe(audio, plain, vad=VadOptions())
    assert result.duration == 70.0 and result.segments
    assert all(3.0 <= s.start <= s.end <= 44.0 for s in result.segments)
    assert not any(8.0 < s.start < 40.0 for s in result.segments)


def test_model_with_vad_on_silence_decodes_nothing(bundle):
    """Real Silero (faster-whisper's model) finds no speech in digital silence."""
    result = load(bundle).transcribe(np.zeros(5 * SR, np.float32), vad=VadOptions())
    assert (result.text, result.segments, result.language, result.duration) == ("", [], "en", 5.0)


def test_vad_without_faster_whisper_is_one_line_exit_2(bundle, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "faster_whisper", None)
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(SR, np.float32), SR)
    assert main(["transcribe", "--vad", "--artifact", str(bundle), str(wav)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "whisper-npu transcribe: error: VAD needs faster-whisper: pip install 'whisper-npu[vad]'\n"
    )
