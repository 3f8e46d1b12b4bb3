"""Voice activity detection (`--vad`): only the speech is decoded, so long pauses cost the
Silero VAD's few milliseconds per second instead of encoder and decoder runs.

Silero's regions are cut out of the audio and packed, in order and without the pauses between
them, into chunks of at most one Whisper window (30 s); each chunk is decoded as one clip and
its segment times are mapped back to the original audio. The VAD comes from faster-whisper,
which ships Silero's ONNX model and runs it with onnxruntime (no torch); it is imported only
when VAD is asked for.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from whisper_npu.alignment import Word
from whisper_npu.errors import UserError
from whisper_npu.features import WINDOW_SAMPLES
from whisper_npu.result import SECONDS_PER_FRAME, Result, Segment
from whisper_npu.whisper_io import SAMPLE_RATE

VAD_EXTRA = "pip install 'whisper-npu[vad]'"


@dataclass(frozen=True)
class VadOptions:
    """Silero's settings; the defaults are faster-whisper's `vad_filter` defaults."""

    threshold: float = 0.5  # speech probability above which a 32 ms frame is speech
    min_speech_duration_ms: int = 0  # shorter regions are dropped
    min_silence_duration_ms: int = 2000  # a pause shorter than this does not end a region
    speech_pad_ms: int = 400  # kept on each side of a region, so words are not clipped

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and 0 < self.threshold < 1):
            raise UserError(f"VAD threshold must be between 0 and 1, got {self.threshold}")
        durations = (self.min_speech_duration_ms, self.min_silence_duration_ms, self.speech_pad_ms)
        if min(durations) < 0:
            raise UserError(f"VAD durations must be >= 0 ms, got {durations}")


@dataclass(frozen=True)
class Region:
    """Speech in the original audio: samples [start, end)."""

    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Chunk:
    """Regions decoded together as one clip: their samples back to back, pauses cut out."""

    regions: tuple[Region, ...]
    padding: float = 0.0  # seconds of silence Silero added on each side of every region

    def samples(self, audio: np.ndarray) -> np.ndarray:
        return np.concatenate([audio[region.start : region.end] for region in self.regions])

    def original_time(self, seconds: float, is_end: bool = False) -> float:
        """A time in the chunk's audio on the original audio's time line. A time on the seam
        of two regions is the end of the first when it ends a segment, else the start of the
        second."""
        sample = min(round(seconds * SAMPLE_RATE), sum(region.size for region in self.regions))
        ends = np.cumsum([region.size for region in self.regions]).tolist()
        index = (bisect.bisect_left if is_end else bisect.bisect_right)(ends, sample)
        index = min(index, len(self.regions) - 1)
        before = ends[index - 1] if index else 0
        return round((self.regions[index].start + sample - before) / SAMPLE_RATE, 3)

    def original_span(self, start: float, end: float) -> tuple[float, float]:
        """A segment's times on the original time line. Whisper often puts the timestamp that
        ends one segment and starts the next in the silence around a seam (the padding on both
        sides, 0.8 s by default); a segment that starts before a seam and ends that little
        past it ends at the seam instead of after the cut pause."""
        seams = np.cumsum([region.size for region in self.regions])[:-1] / SAMPLE_RATE
        for seam in seams.tolist():
            if start < seam < end <= seam + 2 * self.padding:
                end = seam
        return self.original_time(start), self.original_time(end, is_end=True)


def pack(
    regions: Sequence[Region], padding: float = 0.0, limit: int = WINDOW_SAMPLES
) -> list[Chunk]:
    """Regions in order into chunks of at most `limit` samples; a region longer than that is
    cut into pieces of `limit` first (Silero is asked for none, but a caller's may be).
    `padding` is the silence (seconds) the VAD added around each region."""
    pieces = [
        Region(start, min(start + limit, region.end))
        for region in regions
        for start in range(region.start, region.end, limit)
    ]
    chunks: list[list[Region]] = []
    for piece in pieces:
        if chunks and sum(r.size for r in chunks[-1]) + piece.size <= limit:
            chunks[-1].append(piece)
        else:
            chunks.append([piece])
    return [Chunk(tuple(chunk), padding) for chunk in chunks]


def _silero() -> Any:
    """faster-whisper's VAD module, or one line saying how to install it."""
    try:
        from faster_whisper import vad
    except ImportError:
        raise UserError(f"VAD needs faster-whisper: {VAD_EXTRA}") from None
    return vad


def require_vad() -> None:
    """Refuse VAD before any model or file is opened when it is not installed."""
    _silero()


def speech_regions(samples: np.ndarray, options: VadOptions) -> list[Region]:
    """Silero's speech regions of 16 kHz samples, none longer than one Whisper window."""
    vad = _silero()
    settings = vad.VadOptions(
        threshold=options.threshold,
        min_speech_duration_ms=options.min_speech_duration_ms,
        max_speech_duration_s=WINDOW_SAMPLES / SAMPLE_RATE,
        min_silence_duration_ms=options.min_silence_duration_ms,
        speech_pad_ms=options.speech_pad_ms,
    )
    found = vad.get_speech_timestamps(samples, settings, sampling_rate=SAMPLE_RATE)
    return [Region(int(region["start"]), int(region["end"])) for region in found]


def _moved(word: Word, chunk: Chunk) -> Word:
    start, end = chunk.original_span(word.start, word.end)
    return replace(word, start=start, end=end)


def on_original_time_line(chunks: Sequence[Chunk], results: Sequence[Result]) -> list[Segment]:
    """The chunks' segments, renumbered, with times (and seek, and their words' times) on the
    original audio's."""
    segments: list[Segment] = []
    for chunk, result in zip(chunks, results, strict=True):
        for segment in result.segments:
            seek = chunk.original_time(segment.seek * SECONDS_PER_FRAME)
            start, end = chunk.original_span(segment.start, segment.end)
            words = segment.words
            if words is not None:
                words = [_moved(word, chunk) for word in words]
            segments.append(
                replace(
                    segment,
                    id=len(segments),
                    seek=round(seek / SECONDS_PER_FRAME),
                    start=start,
                    end=end,
                    words=words,
                )
            )
    return segments


def transcribe_speech(
    samples: np.ndarray,
    chunks: Sequence[Chunk],
    decode: Callable[[np.ndarray, Result | None], Result],
    silent: Result,
) -> Result:
    """One Result for the whole audio from each chunk's. `decode` gets the first chunk's
    Result for the later ones (a detected language is kept); `silent` answers no speech."""
    if not chunks:
        return silent
    first = decode(chunks[0].samples(samples), None)
    results = [first, *(decode(chunk.samples(samples), first) for chunk in chunks[1:])]
    text = " ".join(result.text for result in results if result.text)
    segments = on_original_time_line(chunks, results)
    return replace(first, text=text, segments=segments, duration=silent.duration)
