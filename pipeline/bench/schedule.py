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


def pick_latency_clips(durations: Sequence[float], count: int, limit_s: float) -> list[int]:
    """`count` clips of at most `limit_s`, evenly spaced by duration from shortest to longest."""
    ranked = [i for _, i in sorted((d, i) for i, d in enumerate(durations) if d <= limit_s)]
    if len(ranked) <= count:
        return sorted(ranked)
    step = (len(ranked) - 1) / max(count - 1, 1)
    return sorted(ranked[round(k * step)] for k in range(count))


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
