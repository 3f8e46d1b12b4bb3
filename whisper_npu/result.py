"""What a transcription returns: the text, and segments with times and the figures the guards
judged them by (the fields of OpenAI's `verbose_json` and faster-whisper's segments).

Segment times come from the timestamp tokens, offset by their window's start, so they are
absolute across windows; a window decoded without timestamps is one segment.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

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


@dataclass(frozen=True)
class Result:
    text: str
    segments: list[Segment]
    language: str  # the prompt's language ("en" for an English-only bundle)
    language_probability: float | None  # when it was detected (language "auto")
    duration: float  # seconds of audio
    execution: Execution | None = None  # what ran the model (set by whisper_npu.model)

    def to_json(self) -> dict[str, Any]:
        found = {k: v for k, v in asdict(self).items() if k != "execution"}
        return found | ({"execution": self.execution.to_json()} if self.execution else {})


@dataclass(frozen=True)
class _Span:
    start: float
    end: float
    tokens: list[int]


def _spans(window: Window, timestamp_begin: int, text_end: int) -> list[_Span]:
    """A window's kept tokens cut at its timestamps: text between two stamps is one span; text
    before the first or after the last stamp runs from the window's start or to its end."""
    offset = window.seek * SECONDS_PER_FRAME
    window_end = offset + window.frames * SECONDS_PER_FRAME
    spans, current, start = [], [], offset
    for token in window.kept:
        if token < timestamp_begin:
            current.append(token)
            continue
        time = offset + (token - timestamp_begin) * SECONDS_PER_TIMESTAMP
        if any(t < text_end for t in current):
            spans.append(_Span(start, time, [*current, token]))
            current = []
        start, current = time, [token]
    if any(t < text_end for t in current):
        spans.append(_Span(start, window_end, current))
    return spans


def textless(text: str) -> bool:
    """Punctuation and spaces alone (Unicode categories P* and Z*), or nothing: no words. A
    symbol such as Whisper's "♪" is text."""
    return all(unicodedata.category(char)[0] in "PZ" or char.isspace() for char in text)


def build_result(
    decoded: Decoded, text: Callable[[list[int]], str], duration: float, drop_textless: bool
) -> Result:
    """The Result of a clip's windows. The text is the decode of every kept token at once, so
    it is the transcript the pipeline measures, not segments joined back together; with
    `drop_textless`, the tokens of a textless segment are not kept."""
    segments: list[Segment] = []
    tokens: list[int] = []
    windows, spec = decoded.windows, decoded.spec
    for window in windows:
        found = window.decoded
        spans = _spans(window, spec.timestamp_begin, spec.eot)
        kept = [span for span in spans if not (drop_textless and textless(text(span.tokens)))]
        tokens += window.kept if len(kept) == len(spans) else [t for s in kept for t in s.tokens]
        for span in kept:
            start, end = min(span.start, duration), min(span.end, duration)
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
                )
            )
    language = decoded.language or "en"
    return Result(text(tokens), segments, language, decoded.language_probability, duration)
