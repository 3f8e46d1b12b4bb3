"""What a transcription returns: the text, and segments with times and the figures the guards
judged them by (the fields of OpenAI's `verbose_json` and faster-whisper's segments).

Segment times come from the timestamp tokens, offset by their window's start, so they are
absolute across windows; a window decoded without timestamps is one segment. With word
timestamps each segment also lists its words (whisper_npu.alignment), and OpenAI's verbose_json
lists them all at the top level as well.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from whisper_npu.alignment import (
    AlignedSegment,
    TimedSegment,
    WindowAttention,
    Word,
    WordSplitter,
    align_window,
    in_speech,
    speech_levels,
)
from whisper_npu.decoding import Window
from whisper_npu.execution import Execution
from whisper_npu.transcriber import Decoded
from whisper_npu.whisper_io import HOP_LENGTH, SAMPLE_RATE

SECONDS_PER_FRAME = HOP_LENGTH / SAMPLE_RATE
SECONDS_PER_TIMESTAMP = 0.02


@dataclass(frozen=True)
class Segment:
    id: int
    seek: int  # the first mel frame of its window (OpenAI's field)
    start: float  # seconds from the start of the audio
    end: float
    text: str
    tokens: list[int]  # text and timestamp tokens, as OpenAI returns them
    temperature: float  # the fallback temperature its window was decoded at
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    words: list[Word] | None = None  # with word timestamps (openai-whisper's field)


@dataclass(frozen=True)
class Result:
    text: str
    segments: list[Segment]
    language: str  # the prompt's language ("en" for an English-only bundle)
    language_probability: float | None  # when it was detected (language "auto")
    duration: float  # seconds of audio
    execution: Execution | None = None  # what ran the model (set by whisper_npu.model)

    def to_json(self) -> dict[str, Any]:
        """OpenAI's verbose_json fields (segments as openai-whisper's, with their words), and
        with word timestamps OpenAI's top-level `words` (text without the leading space)."""
        found = {k: v for k, v in asdict(self).items() if k != "execution"}
        if any(segment.words is not None for segment in self.segments):
            found["words"] = [
                {"word": word.word.strip(), "start": word.start, "end": word.end}
                for segment in self.segments
                for word in segment.words or ()
            ]
        return found | ({"execution": self.execution.to_json()} if self.execution else {})


@dataclass(frozen=True)
class _Span:
    start: float
    end: float
    tokens: list[int]
    text_at: list[int] = field(default_factory=list)  # where its text tokens are in window.kept


def _spans(window: Window, timestamp_begin: int, text_end: int) -> list[_Span]:
    """A window's kept tokens cut at its timestamps: text between two stamps is one span; text
    before the first or after the last stamp runs from the window's start or to its end."""
    offset = window.seek * SECONDS_PER_FRAME
    window_end = offset + window.frames * SECONDS_PER_FRAME
    spans, current, text_at, start = [], [], [], offset
    for index, token in enumerate(window.kept):
        if token < timestamp_begin:
            current.append(token)
            text_at += [index] if token < text_end else []
            continue
        time = offset + (token - timestamp_begin) * SECONDS_PER_TIMESTAMP
        if text_at:
            spans.append(_Span(start, time, [*current, token], text_at))
        start, current, text_at = time, [token], []
    if text_at:
        spans.append(_Span(start, window_end, current, text_at))
    return spans


def _aligned(
    window: Window, spans: list[_Span], words: WordSplitter, last_speech: float
) -> tuple[list[AlignedSegment], float]:
    """The spans' words from the window's alignment scores: the rows that predicted their text
    tokens, then the row after the last one (what predicted the stamp or end-of-text)."""
    found = window.decoded
    text_at = [index for span in spans for index in span.text_at]
    if found.attention is None or not text_at:
        return [AlignedSegment((), span.start, span.end) for span in spans], last_speech
    after = min(text_at[-1] + 1, len(found.attention) - 1)
    attention = WindowAttention(
        found.attention[[*text_at, after]],
        [math.exp(found.logprobs[index]) for index in text_at],
        window.frames,
        window.seek * SECONDS_PER_FRAME,
    )
    segments = [
        TimedSegment(tuple(window.kept[i] for i in s.text_at), s.start, s.end) for s in spans
    ]
    return align_window(attention, segments, words, last_speech)


def textless(text: str) -> bool:
    """Punctuation and spaces alone (Unicode categories P* and Z*), or nothing: no words. A
    symbol such as Whisper's "♪" is text."""
    return all(unicodedata.category(char)[0] in "PZ" or char.isspace() for char in text)


def _clamped(word: Word, duration: float) -> Word:
    start = round(min(word.start, duration), 3)
    return replace(word, start=start, end=round(max(start, min(word.end, duration)), 3))


def build_result(
    decoded: Decoded,
    text: Callable[[list[int]], str],
    duration: float,
    drop_textless: bool,
    words: WordSplitter | None = None,
) -> Result:
    """The Result of a clip's windows. The text is the decode of every kept token at once, so
    it is the transcript the pipeline measures, not segments joined back together; with
    `drop_textless`, the tokens of a textless segment are not kept. With `words`, segments get
    their words (their times as openai-whisper adjusts them to the words)."""
    segments: list[Segment] = []
    tokens: list[int] = []
    windows, spec = decoded.windows, decoded.spec
    last_speech = 0.0
    for window in windows:
        found = window.decoded
        spans = _spans(window, spec.timestamp_begin, spec.eot)
        kept = [span for span in spans if not (drop_textless and textless(text(span.tokens)))]
        tokens += window.kept if len(kept) == len(spans) else [t for s in kept for t in s.tokens]
        aligned: list[AlignedSegment | None] = [None] * len(kept)
        if words is not None:
            aligned[:], last_speech = _aligned(window, kept, words, last_speech)
        for span, timed in zip(kept, aligned, strict=True):
            start = min(timed.start if timed else span.start, duration)
            end = min(timed.end if timed else span.end, duration)
            segments.append(
                Segment(
                    id=len(segments),
                    seek=window.seek,
                    start=round(start, 3),
                    end=round(max(start, end), 3),
                    text=text(span.tokens),
                    tokens=span.tokens,
                    temperature=found.temperature,
                    avg_logprob=found.avg_logprob,
                    compression_ratio=found.compression_ratio,
                    no_speech_prob=found.no_speech_prob,
                    words=[_clamped(w, duration) for w in timed.words] if timed else None,
                )
            )
    language = decoded.language or "en"
    return Result(text(tokens), segments, language, decoded.language_probability, duration)


def words_in_speech(result: Result, samples: np.ndarray, floor_db: float) -> Result:
    """Each segment's words trimmed out of the silence around them (alignment.in_speech), and
    the segment spanning its words, as openai-whisper's segments span theirs."""
    levels = speech_levels(samples)
    segments = []
    for segment in result.segments:
        if not segment.words:
            segments.append(segment)
            continue
        words = in_speech(segment.words, levels, floor_db)
        segments.append(replace(segment, words=words, start=words[0].start, end=words[-1].end))
    return replace(result, segments=segments)
