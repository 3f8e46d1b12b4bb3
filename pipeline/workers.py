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
from functools import partial
from typing import Any, TypeVar

State = TypeVar("State")
Item = TypeVar("Item")
Result = TypeVar("Result")

# What `open_state` returned in this worker process: a spawned worker serves one call only.
_worker_state: list[Any] = []


def _start_worker(open_state: Callable[[], Any]) -> None:
    # Ctrl-C reaches the whole process group; the command, not each worker, answers it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_state[:] = [open_state()]


def _run_in_worker(function: Callable[[Any, Item], Result], item: Item) -> Result:
    return function(_worker_state[0], item)


def no_state() -> None:
    """The `open_state` of work that needs nothing opened first."""


def map_in_workers(
    function: Callable[[State, Item], Result],
    items: Sequence[Item],
    open_state: Callable[[], State],
) -> Generator[Result, None, None]:
    """`function(state, item)` for every item, yielded in order, where `state` is what
    `open_state()` returned once in the same worker (an opened model, say). Stop iterating and
    the items not started are dropped.

    `function` and `open_state` must pickle: module-level functions, or `functools.partial` of
    them. With one core or one item, everything runs in this process instead.
    """
    workers = min(os.cpu_count() or 1, len(items))
    if workers <= 1:
        state = open_state()
        yield from (function(state, item) for item in items)
        return
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(open_state,),
    )
    try:
        yield from pool.map(partial(_run_in_worker, function), items)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
