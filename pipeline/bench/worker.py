"""The coordinator's side of a worker process: start it, send it clips, collect its figures.

Requests and replies are pickled; a worker that fails reports one line, and one that dies is
reported with the last line of its log.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pipeline.bench import engines
from pipeline.bench.records import EngineSpec
from pipeline.workers import child_env
from whisper_npu.errors import UserError
from whisper_npu.timing import Sample

if TYPE_CHECKING:
    import numpy as np


class Worker:
    """One engine in its own process, spoken to with pickled requests."""

    def __init__(self, spec: EngineSpec, log: IO[bytes]) -> None:
        self.spec, self.log = spec, log
        # Its stdin is its pipe from this process: when this process ends, the worker ends.
        self.process = subprocess.Popen(
            [sys.executable, "-m", engines.__name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env=child_env(),
        )
        self.info: dict[str, Any] = self._ask(spec)

    def _ask(self, request: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            pickle.dump(request, self.process.stdin)
            self.process.stdin.flush()
            status, payload = pickle.load(self.process.stdout)
        except (EOFError, BrokenPipeError, pickle.UnpicklingError):
            status, payload = "error", f"worker exited ({self._last_log_line()})"
        if status != "ok":
            raise UserError(f"{self.spec.name} ({self.spec.path}): {payload}")
        return payload

    def _last_log_line(self) -> str:
        self.log.flush()
        lines = Path(self.log.name).read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no message"

    def transcribe(self, clip: int, samples: np.ndarray) -> Sample:
        sample: Sample = self._ask(("run", clip, samples))
        return sample

    def finish(self) -> float:
        """Stop the worker; its peak RSS in MiB."""
        peak: float = self._ask(("stop",))
        self.process.wait(timeout=60)
        return peak

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def open_workers(specs: Sequence[EngineSpec], stack: ExitStack) -> list[Worker]:
    """Start the workers one after another, so each load time is measured alone."""
    workers = []
    for spec in specs:
        # The stack closes (and deletes) each log when the bench ends.
        log = stack.enter_context(tempfile.NamedTemporaryFile(prefix=f"bench-{spec.name}-"))  # noqa: SIM115
        worker = Worker(spec, log)
        stack.callback(worker.kill)
        workers.append(worker)
    return workers
