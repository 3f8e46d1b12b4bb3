"""The eval set in deterministic shards on Ray actors, each holding one loaded engine.

Ray (an optional extra, `.[ray]`) places the actors on this machine or on every node of a
cluster; each actor opens its transcriber once and takes shard after shard, pinned to one
thread as it reserves one CPU, so what it transcribes does not depend on where it runs. Shards
are fixed runs of consecutive clips: which actor takes one changes nothing but the wall time,
and results are put back in clip order. Only audio and transcripts travel; the artifact must be
at the same path on every node (a shared file system, or the same `dvc pull`). Latency is never
measured here: a cluster says nothing about the target device.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from pipeline.bench.evaluate import Transcript
    from pipeline.bench.records import EvalClips

SHARD_CLIPS = 8  # clips per shard: small enough to balance actors, large enough to amortise calls
PACKAGE = Path(__file__).resolve().parents[1]  # shipped to the actors: the driver's own code


def ray_missing() -> str | None:
    """Why `--ray` cannot run here, or None."""
    if importlib.util.find_spec("ray") is None:
        return "--ray needs Ray, which is not installed (pip install '.[ray]')"
    return None


def make_shards(count: int, size: int) -> list[range]:
    """Consecutive runs of `size` clip indices (the last may be shorter), in order."""
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


class EngineActor:
    """One transcriber, opened once when the actor starts."""

    def __init__(self, artifact: str) -> None:
        from pipeline.runtime.transcriber import Transcriber

        self.transcriber = Transcriber.from_artifact(Path(artifact), threads=1)

    def execution(self) -> dict[str, Any]:
        return {"variant": self.transcriber.bundle.record.variant, **self.transcriber.execution}

    def run(self, samples: Sequence[np.ndarray]) -> list[Transcript]:
        import time

        out = []
        for clip in samples:
            start = time.perf_counter()
            text = self.transcriber.transcribe(clip).text
            out.append((text, (time.perf_counter() - start) * 1000.0))
        return out


def _one_line(exc: BaseException) -> str:
    """A task's error as the user's one line: the actor's own UserError, else its last line."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, UserError):
        return str(cause)
    lines = str(cause or exc).strip().splitlines()
    return f"Ray: {lines[-1] if lines else type(exc).__name__}"


def _connect(address: str) -> bool:
    """Join the cluster at `address` ("" is ray.init()'s own choice: RAY_ADDRESS, the last
    local cluster, or a new one); True when this call started the connection."""
    import logging

    import ray

    if ray.is_initialized():
        return False
    runtime_env = {"py_modules": [str(PACKAGE)], "excludes": ["__pycache__"]}
    ray.init(address=address or None, runtime_env=runtime_env, logging_level=logging.WARNING)
    return True


def transcribe_on_ray(
    artifact: Path, clips: EvalClips, address: str, workers: int | None
) -> tuple[list[Transcript], dict[str, Any], dict[str, Any]]:
    """Every clip's transcript in clip order, the actors' execution record, and how the work
    was split. `workers` actors (default: one per CPU of the cluster, at most one per shard)."""
    import ray
    from ray.util import ActorPool

    started = _connect(address)
    try:
        shards = make_shards(len(clips.samples), SHARD_CLIPS)
        cpus = ray.cluster_resources().get("CPU", 1)  # type: ignore[no-untyped-call]
        count = min(workers or int(cpus), len(shards))
        # Ray's stubs cannot type an actor class made at run time.
        actor: Any = ray.remote(num_cpus=1)(EngineActor)
        actors = [actor.remote(str(Path(artifact).resolve())) for _ in range(count)]
        pool = ActorPool(actors)
        try:
            execution: dict[str, Any] = ray.get(actors[0].execution.remote())
            done = pool.map(
                lambda a, shard: a.run.remote([clips.samples[i] for i in shard]), shards
            )
            transcripts: list[Transcript] = [item for shard in done for item in shard]
        except ray.exceptions.RayError as exc:
            raise UserError(_one_line(exc)) from None
        finally:
            for handle in actors:
                ray.kill(handle)
    finally:
        if started:
            ray.shutdown()
    sharding = {
        "address": address or "ray.init() default",
        "workers": count,
        "shards": len(shards),
        "clips_per_shard": SHARD_CLIPS,
    }
    return transcripts, execution, sharding
