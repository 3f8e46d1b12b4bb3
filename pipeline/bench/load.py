"""A controlled background load: what a laptop running other work looks like to the bench.

Each load process keeps one core busy with a seeded integer recurrence in pure Python (no
threads, no BLAS), at normal priority, until the context exits: the same load on every machine,
whatever its libraries."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from contextlib import contextmanager
from multiprocessing.synchronize import Event

# Iterations between checks of the stop event: ~1 ms of work on a 2020s core.
CHUNK = 20_000


def _spin(stop: Event, seed: int) -> None:
    state = seed
    while not stop.is_set():
        for _ in range(CHUNK):
            state = (state * 1103515245 + 12345) % 2147483648


@contextmanager
def background_load(cores: int, seed: int = 0) -> Iterator[None]:
    """`cores` processes kept busy while the block runs (0: none)."""
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    workers = [
        context.Process(target=_spin, args=(stop, seed + k), daemon=True) for k in range(cores)
    ]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
