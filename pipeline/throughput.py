"""A bundle's transcripts of many clips, for throughput: the parity gate, calibration and the
quantize ladder transcribe hundreds of clips, one single-threaded worker per core."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.workers import map_in_workers
from whisper_npu.transcriber import Transcriber, Transcription


def _transcribe_in_worker(
    transcriber: Transcriber, clip: tuple[np.ndarray, str | None]
) -> Transcription:
    samples, language = clip
    return transcriber.transcribe(samples, language=language)


def transcribe_all(
    root: Path, clips: Sequence[np.ndarray], languages: Sequence[str | None] | None = None
) -> Generator[Transcription, None, None]:
    """A bundle's transcript of every clip on the CPU, in order, each in its language in
    `languages` (None: the bundle's default), in one single-threaded process per core: for
    throughput, not latency. Every session runs one thread, so the text does not depend on the
    machine's core count."""
    given = [None] * len(clips) if languages is None else list(languages)
    if len(given) != len(clips):
        raise ValueError(f"{len(clips)} clips but {len(given)} languages")
    return map_in_workers(
        _transcribe_in_worker,
        list(zip(clips, given, strict=True)),
        partial(Transcriber.from_bundle, Path(root), threads=1),
    )
