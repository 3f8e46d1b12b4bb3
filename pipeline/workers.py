"""Work that splits into independent items (clips to read aloud or transcribe, layers to score)
spread over one single-threaded worker process per core; and how every worker process of the
project (these, the bench's engine workers) ends with the process that started it.

On 2 cores two one-thread ONNX Runtime sessions get through ~1.2x the clips of one two-thread
session (measured on tiny.en), and Python-side work (protobuf copies, session creation) runs in
parallel at all only this way. Each worker pins its sessions to one thread, so results do not
depend on how many cores the machine has. Workers are spawned, not forked, as on Windows; like
any spawned worker they import the caller's main module again, so a script that calls this
(through `runtime.transcribe_all`, say) keeps its own work under `if __name__ == "__main__":`.

A worker's end is tied to its parent by a pipe only the parent writes to: when the parent ends,
however it ends (SIGKILL, the OOM killer, a CI timeout, Windows' End task), the OS closes the
pipe and the worker exits at once instead of waiting for work that will never come. One
mechanism, the same on Linux and Windows, and it needs nothing from the parent at its end.
Processes that cannot watch a pipe of ours themselves (a local Ray cluster's) get a reaper.
"""

from __future__ import annotations

import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    import psutil

State = TypeVar("State")
Item = TypeVar("Item")
Result = TypeVar("Result")
Message = TypeVar("Message")

ORPHANED = 3  # exit code of a worker whose parent has ended
ROOT = Path(__file__).resolve().parents[1]

# What `open_state` returned in this worker process: a spawned worker serves one call only.
_worker_state: list[Any] = []


def exit_with_parent(receive: Callable[[], Message]) -> queue.SimpleQueue[Message]:
    """Read the pipe from this worker's parent on a daemon thread, and end this process the
    moment the pipe ends (`receive` raises: end of file, a broken pipe): the parent is gone.
    Returns what `receive` read, in order, for a worker that takes its requests on that pipe.

    SIGTERM gets its default action back, so it ends the worker at once: an ignored SIGTERM
    is inherited through exec from whoever started the parent. Call it from the main thread.
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()

    def read() -> None:
        try:
            while True:
                inbox.put(receive())
        except BaseException:
            # os._exit, not sys.exit: the main thread may be deep in a C call that never returns.
            os._exit(ORPHANED)

    threading.Thread(target=read, name="exit-with-parent", daemon=True).start()
    return inbox


def _start_worker(open_state: bytes, parent: Connection) -> None:
    exit_with_parent(parent.recv_bytes)
    # Ctrl-C reaches the whole process group; the command, not each worker, answers it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker_state[:] = [pickle.loads(open_state)()]


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
    # Imported here: the bench's engine workers import this module (`exit_with_parent`), and
    # their peak RSS is to be their engine's, not the ~3 MiB of a process pool's imports.
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    from whisper_npu.errors import UserError

    workers = min(os.cpu_count() or 1, len(items))
    if workers <= 1:
        state = open_state()
        yield from (function(state, item) for item in items)
        return
    context = multiprocessing.get_context("spawn")
    # The workers get the reading end; this process holds the writing end and never writes.
    reader, writer = context.Pipe(duplex=False)
    # Pickled here, unpickled once the worker watches the pipe: unpickling imports its module
    # (torch, transformers: seconds), and a worker killed then must not finish that first.
    initargs = (pickle.dumps(open_state), reader)
    pool = ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=initargs
    )
    try:
        yield from pool.map(partial(_run_in_worker, function), items)
    except BrokenProcessPool:
        raise UserError("a worker process was killed (SIGTERM, out of memory?)") from None
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        writer.close()
        reader.close()


def child_env() -> dict[str, str]:
    """This environment with the project first on PYTHONPATH: a `python -m` child imports this
    checkout's code whatever its working directory."""
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path}


@contextmanager
def reaped(processes: Collection[psutil.Process]) -> Iterator[None]:
    """`processes` killed when the block ends, or when this process ends however it ends, by
    a reaper process that watches the same kind of pipe a worker does: for processes we start
    but cannot make watch us (a local Ray cluster's: its raylet dies with us, as Ray binds it,
    but the two agents the raylet starts outlive a SIGKILLed driver by 60 s, measured with
    Ray 2.60, retrying a report to the dead GCS)."""
    if not processes:
        yield
        return
    reaper = subprocess.Popen(
        [sys.executable, "-m", __name__], stdin=subprocess.PIPE, env=child_env()
    )
    assert reaper.stdin is not None
    try:
        for process in processes:
            reaper.stdin.write(f"{process.pid} {process.create_time()!r}\n".encode())
        reaper.stdin.flush()
        yield
    finally:
        reaper.stdin.close()  # the reaper's cue, as this process's end would be
        reaper.wait()


def _reap() -> None:
    """The reaper (`python -m pipeline.workers`): kill the processes listed on stdin, each
    still the process that was listed (pid and start time), once stdin ends."""
    import psutil

    # Ctrl-C reaches the whole process group; the reaper's work comes after the parent's.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    listed = [line.split() for line in sys.stdin.buffer.read().splitlines()]
    for pid, created in listed:
        with suppress(psutil.Error):
            process = psutil.Process(int(pid))
            if process.create_time() == float(created):
                process.kill()


if __name__ == "__main__":
    _reap()
