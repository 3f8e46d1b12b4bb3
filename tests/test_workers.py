"""`map_in_workers`: each worker's state opened once, results in order, one core in-process."""

from __future__ import annotations

import os
from functools import partial

import pytest

from pipeline import workers


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
