"""A bundle's transcripts of many clips, for throughput: the parity gate, calibration and the
quantize ladder transcribe hundreds of clips, one single-threaded worker per core."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from pipeline.workers import map_in_workers
from whisper_npu.transcriber import Transcriber, Transcription


def _transcribe_in_worker(transcriber: Transcriber, samples: np.ndarray) -> Transcription:
    return transcriber.transcribe(samples)


def transcribe_all(root: Path, clips: Sequence[np.ndarray]) -> Generator[Transcription, None, None]:
    """A bundle's transcript of every clip on the CPU, in order, in one single-threaded
    process per core: for throughput, not latency. Every session runs one thread, so the text
    does not depend on the machine's core count."""
    return map_in_workers(
        _transcribe_in_worker, clips, partial(Transcriber.from_bundle, Path(root), threads=1)
    )
