"""Work that splits into independent items (clips to read aloud or transcribe, layers to score)
spread over one single-threaded worker process per core.

On 2 cores two one-thread ONNX Runtime sessions get through ~1.2x the clips of one two-thread
session (measured on tiny.en), and Python-side work (protobuf copies, session creation) runs in
parallel at all only this way. Each worker pins its sessions to one thread, so results do not
depend on how many cores the machine has. Workers are spawned, not forked, as on Windows; like
any spawned worker they import the caller's main module again, so a script that calls this
(through `runtime.transcribe_all`, say) keeps its own work under `if __name__ == "__main__":`.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def _start_worker(setup: Callable[..., None] | None, setup_args: tuple[Any, ...]) -> None:
    # Ctrl-C reaches the whole process group; the command, not each worker, answers it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if setup is not None:
        setup(*setup_args)


def map_in_workers(
    function: Callable[[Item], Result],
    items: Sequence[Item],
    setup: Callable[..., None] | None = None,
    setup_args: tuple[Any, ...] = (),
) -> Generator[Result, None, None]:
    """`function(item)` for every item, yielded in order; `setup(*setup_args)` runs once in each
    worker first (to open a model, say). Stop iterating and the items not started are dropped.

    `function` and `setup` must be module-level functions (they are pickled by name). With one
    core or one item, everything runs in this process instead.
    """
    workers = min(os.cpu_count() or 1, len(items))
    if workers <= 1:
        if setup is not None:
            setup(*setup_args)
        yield from map(function, items)
        return
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(setup, setup_args),
    )
    try:
        yield from pool.map(function, items)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
