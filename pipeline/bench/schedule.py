"""The order clips reach the engines: one worker computes at a time, and each clip goes to
every engine in turn, the first engine rotating from clip to clip, so machine drift and cache
effects hit all engines alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from pipeline.bench.records import Samples

if TYPE_CHECKING:
    import numpy as np

    from pipeline.bench.worker import Worker


def interleave(
    workers: Sequence[Worker],
    clips: Sequence[int],
    audio: Sequence[np.ndarray],
    tick: Callable[[], object],
) -> Samples:
    """Each clip through every engine in turn, the first engine rotating from clip to clip."""
    out: Samples = {worker.spec.name: [] for worker in workers}
    for turn, clip in enumerate(clips):
        for k in range(len(workers)):
            worker = workers[(turn + k) % len(workers)]
            out[worker.spec.name].append(worker.transcribe(clip, audio[clip]))
            tick()
    return out
