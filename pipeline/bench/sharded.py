"""The eval set in deterministic shards on Ray actors, each holding one loaded engine.

Ray (an optional extra, `.[ray]`) places the actors on this machine or on every node of a
cluster; each actor opens its engine once, with the code a bench worker opens it with (our
bundles, transformers, faster-whisper), and takes shard after shard, pinned to one thread as it
reserves one CPU, so what it transcribes does not depend on where it runs. Shards are fixed
runs of consecutive clips: which actor takes one changes nothing but the wall time, and results
are put back in clip order. Only audio and transcripts travel; the artifact must be at the same
path on every node (a shared file system, or the same `dvc pull`). `whisper-npu evaluate --ray`
and the bench's WER pass (`bench.ray`) both run here; latency is never measured here: a
cluster says nothing about the target device.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import whisper_npu
from pipeline.bench.records import EngineSpec
from pipeline.config import DEFAULT_RAY_TIMEOUT_S
from whisper_npu.errors import UserError
from whisper_npu.timing import Sample

if TYPE_CHECKING:
    import numpy as np

    from pipeline.bench.evaluate import EvaluateOptions, Transcript
    from pipeline.bench.records import EvalClips
    from whisper_npu.execution import Execution

SHARD_CLIPS = 8  # clips per shard: small enough to balance actors, large enough to amortise calls
# Shipped to the actors: the driver's own code, the pipeline and the runtime it runs.
PACKAGES = (str(Path(__file__).resolve().parents[1]), str(Path(whisper_npu.__file__).parent))


def ray_missing(setting: str = "--ray") -> str | None:
    """Why `setting` (the CLI's --ray, params bench.ray) cannot run here, or None."""
    if importlib.util.find_spec("ray") is None:
        return f"{setting} needs Ray, which is not installed (pip install '.[ray]')"
    return None


def make_shards(count: int, size: int) -> list[range]:
    """Consecutive runs of `size` clip indices (the last may be shorter), in order."""
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


class EngineActor:
    """One engine (any the bench runs: ours, transformers, faster-whisper), opened once when
    the actor starts, by the same code a bench worker process opens it with."""

    def __init__(self, spec: EngineSpec) -> None:
        # By name, as a bench worker process starts (pipeline.bench.worker): the engines'
        # imports are the actor's, never those of a stage that only imports this module.
        engines = importlib.import_module("pipeline.bench.engines")
        self.transcribe, self.info = engines.OPENERS[spec.kind](spec)

    def execution(self) -> Execution:
        execution: Execution = self.info["execution"]
        return execution

    def run(self, clips: Sequence[tuple[int, np.ndarray]]) -> list[Sample]:
        return [self.transcribe(clip, samples) for clip, samples in clips]


def _one_line(exc: BaseException) -> str:
    """A task's error as the user's one line: the actor's own UserError, else its last line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, UserError):
        return str(cause)
    lines = str(cause or exc).strip().splitlines()
    return f"Ray: {lines[-1] if lines else type(exc).__name__}"


def _answers(address: str, timeout_s: float) -> bool:
    """Whether a gRPC server (Ray's GCS and client server are) answers at the host:port of
    `address` within `timeout_s`; True for local and auto, found on this machine. Ray 2.60
    itself retries an address nobody answers on for about 12 minutes (a ray:// one for 30 s),
    in C++ calls nothing interrupts, and `ray.init` in another thread cannot start a local
    cluster: so the address is tried here first, with a deadline."""
    import grpc

    match = re.fullmatch(r"(?:ray://)?(.+:[0-9]+)", address)
    if match is None:
        return True
    channel = grpc.insecure_channel(match[1])
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout_s)
    except grpc.FutureTimeoutError:
        return False
    finally:
        channel.close()
    return True


@contextmanager
def connected(address: str, timeout_s: float = DEFAULT_RAY_TIMEOUT_S) -> Iterator[None]:
    """Ray joined at `address` for the duration ("" is ray.init()'s own choice: RAY_ADDRESS,
    the last local cluster, or a new one), and left again if this opened the connection; an
    address that does not answer within `timeout_s` is a UserError. A local cluster started
    here ends with this process, however it ends: its processes are reaped
    (`pipeline.workers.reaped`)."""
    import psutil
    import ray

    from pipeline.workers import reaped

    if ray.is_initialized():
        yield
        return
    where = address or os.environ.get("RAY_ADDRESS", "")
    no_answer = f"Ray: no cluster answered at {where} within {timeout_s:g} s"
    if not _answers(where, timeout_s):
        raise UserError(no_answer)
    this = psutil.Process()
    before = set(this.children(recursive=True))
    runtime_env = {"py_modules": list(PACKAGES), "excludes": ["__pycache__"]}
    # We say it in one line: the Ray client's own warning would be a second.
    warnings.filterwarnings("ignore", "Ray Client connection timed out", UserWarning)
    try:
        ray.init(address=address or None, runtime_env=runtime_env, logging_level=logging.WARNING)
    except ConnectionError:  # it answered, then no Ray came: the client's 30 s
        raise UserError(no_answer) from None
    with reaped(set(this.children(recursive=True)) - before):
        try:
            yield
        finally:
            ray.shutdown()


def run_sharded(
    spec: EngineSpec, audio: Sequence[np.ndarray], clips: Sequence[int], workers: int | None
) -> tuple[list[Sample], Execution, dict[str, Any]]:
    """`clips` (indices into `audio`) through one engine on Ray actors (inside `connected`):
    its samples in the order of `clips`, the actors' execution record, and how the work was
    split. `workers` actors (default: one per CPU of the cluster, at most one per shard), each
    pinned to one thread."""
    import ray
    from ray.util import ActorPool

    shards = [[clips[i] for i in shard] for shard in make_shards(len(clips), SHARD_CLIPS)]
    cpus = ray.cluster_resources().get("CPU", 1)  # type: ignore[no-untyped-call]
    count = max(1, min(workers or int(cpus), len(shards)))
    # Ray's stubs cannot type an actor class made at run time.
    actor: Any = ray.remote(num_cpus=1)(EngineActor)
    actors = [actor.remote(replace(spec, threads=1)) for _ in range(count)]
    pool = ActorPool(actors)
    try:
        execution: Execution = ray.get(actors[0].execution.remote())
        done = pool.map(
            lambda a, shard: a.run.remote([(clip, audio[clip]) for clip in shard]), shards
        )
        samples: list[Sample] = [sample for shard in done for sample in shard]
    except ray.exceptions.RayError as exc:
        raise UserError(_one_line(exc)) from None
    finally:
        for handle in actors:
            ray.kill(handle)
    sharding = {"workers": count, "shards": len(shards), "clips_per_shard": SHARD_CLIPS}
    return samples, execution, sharding


def transcribe_on_ray(
    artifact: Path, clips: EvalClips, options: EvaluateOptions
) -> tuple[list[Transcript], str, Execution, dict[str, Any]]:
    """Every clip's transcript in clip order, the actors' execution record, and how the work
    was split (`whisper-npu evaluate --ray`, its address, actors, device and Ray's time to
    answer in `options`): the artifact run as `from_artifact` runs it."""
    from whisper_npu.bundle import Artifact

    address = options.ray_address or ""
    variant = Artifact.open(Path(artifact)).bundle.record.variant
    spec = EngineSpec(str(variant), "ours", Path(artifact).resolve(), 1, device=options.device)
    with connected(address, options.ray_timeout_s):
        samples, execution, sharding = run_sharded(
            spec, clips.samples, range(len(clips.samples)), options.workers
        )
    transcripts = [(sample.text, sample.e2e_ms) for sample in samples]
    where = {"address": address or "ray.init() default", **sharding}
    return transcripts, str(variant), execution, where
