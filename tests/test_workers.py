"""`map_in_workers`: each worker's state opened once, results in order, one core in-process;
its workers end with the process that started them, however it ends: a SIGKILLed driver leaves
no process behind within 5 s (counted by process id: psutil's recursive children, recorded
before the kill), and SIGTERM ends a worker within 2 s. The helpers serve
tests/test_worker_lifetime.py too; this module stays light, as spawned workers import it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable
from functools import partial
from pathlib import Path

import psutil
import pytest

from pipeline import workers

REPO = Path(__file__).resolve().parent.parent
ORPHAN_LIMIT_S = 5.0
SIGTERM_LIMIT_S = 2.0


def _open_counter(start: int) -> dict[str, int]:
    return {"pid": os.getpid(), "start": start, "calls": 0}


def _count(state: dict[str, int], item: int) -> tuple[int, int, int]:
    state["calls"] += 1
    return item + state["start"], state["pid"], state["calls"]


def test_results_in_order_with_state_opened_once_per_worker() -> None:
    results = list(workers.map_in_workers(_count, list(range(40)), partial(_open_counter, 100)))
    assert [value for value, _, _ in results] == list(range(100, 140))
    calls: dict[int, int] = {}
    for _, pid, seen in results:
        calls[pid] = max(calls.get(pid, 0), seen)
    # One state per process: its call count grows across items instead of restarting at 1.
    assert sum(calls.values()) == 40
    if (os.cpu_count() or 1) > 1:
        assert os.getpid() not in calls


def test_one_core_runs_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    results = list(workers.map_in_workers(_count, [1, 2, 3], partial(_open_counter, 0)))
    assert results == [(1, os.getpid(), 1), (2, os.getpid(), 2), (3, os.getpid(), 3)]


def _pid_after(_: None, seconds: float) -> int:
    """Work for a pool driver: wait, then say which worker did it."""
    time.sleep(seconds)
    return os.getpid()


# One worker per core, but at least two even on a one-core runner, each busy 0.2 s per item;
# argv[1] names the module of the `open_state` (`state`), if not `no_state`.
POOL_DRIVER = """
import importlib, os, sys
from pipeline.workers import map_in_workers, no_state
from tests.test_workers import _pid_after
os.cpu_count = lambda: 2
open_state = importlib.import_module(sys.argv[1]).state if sys.argv[1:] else no_state
print("started", flush=True)
for pid in map_in_workers(_pid_after, [0.2] * 1000, open_state):
    print(pid, flush=True)
"""


def start(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def next_line(driver: subprocess.Popen[str]) -> str:
    assert driver.stdout is not None
    line = driver.stdout.readline()
    if not line:
        pytest.fail(f"the driver ended early: {ended(driver)}")
    return line.strip()


def ended(driver: subprocess.Popen[str]) -> str:
    """Wait for the driver's own end (not communicate(): its children hold its pipes open
    too) and return its stderr."""
    driver.wait(timeout=120)
    assert driver.stdout is not None and driver.stderr is not None
    driver.stdout.close()
    with driver.stderr:
        return driver.stderr.read()


def still_running(processes: Iterable[psutil.Process], limit_s: float) -> list[psutil.Process]:
    """Those of `processes` still running after up to `limit_s` seconds. A zombie has ended:
    only its exit status waits for a parent to collect it (here pid 1 may never do so)."""
    deadline = time.monotonic() + limit_s
    while True:
        running = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.05)


def kill_and_count(driver: subprocess.Popen[str]) -> list[psutil.Process]:
    """SIGKILL the driver; what of its process tree (recorded first) outlives it by 5 s."""
    family = psutil.Process(driver.pid).children(recursive=True)
    assert family
    driver.kill()
    driver.wait()
    running = still_running(family, ORPHAN_LIMIT_S)
    for process in running:  # leave nothing behind for the next test
        process.kill()
    ended(driver)
    return running


def test_pool_workers_end_with_their_stage() -> None:
    driver = start(POOL_DRIVER)
    assert next_line(driver) == "started"
    workers = {next_line(driver) for _ in range(4)}
    assert len(workers) == 2  # both workers are mid-work
    assert kill_and_count(driver) == []


def test_pool_workers_end_with_their_stage_while_still_starting() -> None:
    """Killed while its workers import what their state needs (a minute here; before, they
    finished the import first: 17 s measured for the reference stage's transformers)."""
    driver = start(POOL_DRIVER, "tests.slow_to_import")
    assert next_line(driver) == "started"
    deadline = time.monotonic() + 60
    while len(psutil.Process(driver.pid).children()) < 3:  # two workers, multiprocessing's tracker
        assert time.monotonic() < deadline, "the workers never started"
        time.sleep(0.05)
    time.sleep(1.0)
    assert kill_and_count(driver) == []


def test_sigterm_ends_a_pool_worker_and_then_its_stage() -> None:
    driver = start(POOL_DRIVER)
    assert next_line(driver) == "started"
    worker = psutil.Process(int(next_line(driver)))
    family = psutil.Process(driver.pid).children(recursive=True)
    worker.terminate()
    assert still_running([worker], SIGTERM_LIMIT_S) == []
    driver.wait(timeout=60)
    assert still_running(family, ORPHAN_LIMIT_S) == []
    assert "a worker process was killed" in ended(driver)
