"""Wall time of every encoder and decoder call of a transcription, and the latency figures made
of them: the bench's and the device report's, one definition for both."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from whisper_npu.transcriber import OrtRunner


def elapsed_ms(start: float) -> float:
    """Milliseconds since `start`, a time.perf_counter() reading."""
    return (time.perf_counter() - start) * 1000.0


class TimingRunner:
    """The transcriber's runner, with the wall time of every encoder and decoder call recorded."""

    def __init__(self, inner: OrtRunner) -> None:
        self.inner = inner
        self.encoder_ms: list[float] = []
        self.decoder_ms: list[tuple[int, float]] = []

    def encode(self, features: np.ndarray) -> None:
        start = time.perf_counter()
        self.inner.encode(features)
        self.encoder_ms.append(elapsed_ms(start))

    def decode_step(self, token: int, position: int) -> np.ndarray:
        start = time.perf_counter()
        logits = self.inner.decode_step(token, position)
        self.decoder_ms.append((position, elapsed_ms(start)))
        return logits

    def reset(self) -> None:
        """Forwarded, so a guard fallback inside the bench costs what it costs at run time:
        decoder steps only, no second encoder call."""
        self.inner.reset()

    def take(self) -> tuple[tuple[float, ...], tuple[tuple[int, float], ...]]:
        """The calls recorded since the last take, and a clean slate for the next clip."""
        calls = tuple(self.encoder_ms), tuple(self.decoder_ms)
        self.encoder_ms.clear()
        self.decoder_ms.clear()
        return calls


@dataclass(frozen=True)
class Sample:
    """One timed transcription of one clip by one engine."""

    clip: int
    text: str
    tokens: int  # text tokens (below end-of-text), the same count for every engine
    e2e_ms: float
    encoder_ms: tuple[float, ...] = ()
    decoder_ms: tuple[tuple[int, float], ...] = ()  # (cache position, ms) per decoder call


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def latency_stats(samples: Sequence[Sample], durations: Sequence[float]) -> dict[str, float]:
    e2e = [s.e2e_ms for s in samples]
    seconds = sum(e2e) / 1000
    audio = sum(durations[s.clip] for s in samples)
    stats = {
        "e2e_ms_p50": percentile(e2e, 50),
        "e2e_ms_p90": percentile(e2e, 90),
        "rtf": seconds / audio,
        "rtfx": audio / seconds,  # the Open ASR Leaderboard's figure
        "tokens_per_s": sum(s.tokens for s in samples) / seconds,
    }
    encoder = [ms for s in samples for ms in s.encoder_ms]
    decoder = [ms for s in samples for _, ms in s.decoder_ms]
    if encoder:
        stats |= {
            "encoder_ms_p50": percentile(encoder, 50),
            "encoder_ms_p90": percentile(encoder, 90),
        }
    if decoder:
        stats |= {
            "decoder_ms_per_token_p50": percentile(decoder, 50),
            "decoder_ms_per_token_p90": percentile(decoder, 90),
        }
    return stats
