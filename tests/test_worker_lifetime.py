"""The bench's engine workers, a local Ray cluster and a real stage end with the process that
started them, however it ends (the pool's own workers: tests/test_workers.py): a SIGKILLed
driver leaves no process behind within 5 s, SIGTERM ends a worker within 2 s, and the next run
of a killed stage removes the scratch it left and succeeds."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml

from pipeline.bench.records import EngineSpec
from pipeline.bench.worker import Worker
from tests.conftest import REPO, write_tiny_bundle
from tests.test_bench_results import needs_ray
from tests.test_workers import (
    ORPHAN_LIMIT_S,
    SIGTERM_LIMIT_S,
    ended,
    kill_and_count,
    next_line,
    start,
    still_running,
)

# An engine worker on the tiny bundle (argv[1]), as the bench opens it, kept transcribing; with
# argv[3], first a transformers peer's worker, busy for seconds importing torch before it opens
# (or fails to open: argv[3] need not be a model).
BENCH_DRIVER = """
import sys
from pathlib import Path
import numpy as np
from pipeline.bench.records import EngineSpec
from pipeline.bench.worker import Worker
from whisper_npu.errors import UserError
log = open(sys.argv[2], "wb")
worker = Worker(EngineSpec("ours", "ours", Path(sys.argv[1]), 1, cpu_only=True), log)
print(worker.process.pid, flush=True)
if sys.argv[3:]:
    try:
        Worker(EngineSpec("peer", "transformers", Path(sys.argv[3]), 1), log)
    except UserError:
        pass
while True:
    worker.transcribe(0, np.zeros(16000, np.float32))
"""

# A local Ray cluster (ray.init() started here) with two engine actors kept transcribing.
RAY_DRIVER = """
import sys
from pathlib import Path
import numpy as np
from pipeline.bench.records import EngineSpec
from pipeline.bench.sharded import connected, run_sharded
spec = EngineSpec("a", "ours", Path(sys.argv[1]), 1, cpu_only=True)
with connected(""):
    while True:
        run_sharded(spec, [np.zeros(16000, np.float32)] * 32, range(32), 2)
        print("shards done", flush=True)
"""


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("lifetime") / "bundle")


def test_bench_engine_workers_end_with_the_bench(tmp_path: Path, tiny_bundle: Path) -> None:
    """One worker idle between clips, one importing its engine's runtime: before, the busy one
    lived on until its imports were done (13 s measured), the idle one ended on its own."""
    driver = start(BENCH_DRIVER, str(tiny_bundle), str(tmp_path / "log"), str(tmp_path / "peer"))
    ours = int(next_line(driver))
    deadline = time.monotonic() + 60
    while len(children := psutil.Process(driver.pid).children()) < 2:
        assert time.monotonic() < deadline, "the peer's worker never started"
        time.sleep(0.05)
    assert ours in {child.pid for child in children}
    time.sleep(0.5)  # the peer's worker is importing torch
    assert kill_and_count(driver) == []


def test_sigterm_ends_a_bench_engine_worker(tmp_path: Path, tiny_bundle: Path) -> None:
    driver = start(BENCH_DRIVER, str(tiny_bundle), str(tmp_path / "log"))
    worker = psutil.Process(int(next_line(driver)))
    worker.terminate()
    assert still_running([worker], SIGTERM_LIMIT_S) == []
    assert "worker exited" in ended(driver)  # the bench's one line


def test_a_bench_worker_still_finishes_cleanly(tmp_path: Path, tiny_bundle: Path) -> None:
    """Its requests are read on a thread that never returns: the worker's own end stays a
    plain exit 0, with nothing fatal in its log."""
    with (tmp_path / "log").open("wb") as log:
        worker = Worker(EngineSpec("ours", "ours", tiny_bundle, 1, cpu_only=True), log)
        worker.transcribe(0, np.zeros(16000, np.float32))
        assert worker.finish() > 0
    assert worker.process.returncode == 0
    assert "Fatal" not in (tmp_path / "log").read_text()


@needs_ray
@pytest.mark.integration
def test_a_local_ray_cluster_ends_with_its_driver(tiny_bundle: Path) -> None:
    """Without the reaper, the raylet's two agents outlived the SIGKILLed driver by ~60 s."""
    driver = start(RAY_DRIVER, str(tiny_bundle))
    assert next_line(driver) == "shards done"
    assert kill_and_count(driver) == []


def tiny_data_params(tmp_path: Path) -> Path:
    """The default params, with speech sets of a few sentences: a data stage of seconds."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for name, lines in (("calibration", 12), ("eval", 2)):
        sentences = REPO / "calibration" / f"sentences_{name}.txt"
        chosen = tmp_path / f"{name}.txt"
        chosen.write_text("".join(sentences.open(encoding="utf-8").readlines()[:lines]))
        raw["data"][name] = {"kind": "builtin", "sentences": str(chosen)}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return params


@pytest.mark.integration
def test_a_killed_stage_leaves_no_process_and_its_next_run_cleans_up(tmp_path: Path) -> None:
    """The real `data` stage, SIGKILLed mid-synthesis: its workers end within 5 s, its scratch
    stays until the next run, which removes it and writes the output."""
    params, out = tiny_data_params(tmp_path), tmp_path / "artifacts" / "data"
    command = [sys.executable, "-m", "stages.data", "--params", str(params), "--out", str(out)]
    stage = subprocess.Popen(command, cwd=REPO, stderr=subprocess.DEVNULL)
    scratch = out.parent / f".data.tmp-{stage.pid}"
    deadline = time.monotonic() + 300
    while next((scratch / ".calibration-source").glob("*.wav"), None) is None:
        assert time.monotonic() < deadline and stage.poll() is None, "no clip synthesised"
        time.sleep(0.05)
    family = psutil.Process(stage.pid).children(recursive=True)
    assert len(family) >= 2  # the spawned workers (and multiprocessing's resource tracker)
    stage.kill()
    stage.wait()
    assert still_running(family, ORPHAN_LIMIT_S) == []
    assert scratch.is_dir()

    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(path.name for path in out.parent.iterdir()) == ["data"]
    assert (out / "manifest.json").is_file()
