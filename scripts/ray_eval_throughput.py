"""Clips per second of `whisper-npu evaluate --ray` with 1, 2, ... Ray actors on one cluster.

    python scripts/ray_eval_throughput.py --artifact artifacts/bundles/fp32 --limit 32
    python scripts/ray_eval_throughput.py --ray auto --workers 1,2,4,8   # a running cluster

The cluster is started (or joined) once, before any timing; each count's time includes its
actors opening their engines, as a real evaluation's does. Every run's transcripts must equal
the first one's: a mismatch is an error, not a figure.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/bundles/fp32"))
    parser.add_argument("--data", type=Path, default=Path("artifacts/data"))
    parser.add_argument("--limit", type=int, default=None, help="the first N eval clips only")
    parser.add_argument("--ray", default="", help="cluster address (default: a local cluster)")
    parser.add_argument("--workers", default="1,2", help="comma-separated actor counts")
    args = parser.parse_args()

    import ray

    from pipeline.bench.evaluate import EvaluateOptions, load_eval_clips
    from pipeline.bench.records import EvalClips
    from pipeline.bench.sharded import PACKAGES, transcribe_on_ray

    clips = load_eval_clips(args.data)
    if args.limit:
        clips = EvalClips(*(values[: args.limit] for values in vars(clips).values()))
    ray.init(address=args.ray or None, runtime_env={"py_modules": list(PACKAGES)})
    cpus = ray.cluster_resources().get("CPU", 0)  # type: ignore[no-untyped-call]  # ray is untyped
    print(f"{len(clips.ids)} clips, {sum(clips.durations):.0f} s of audio; cluster: {cpus:g} CPUs")
    first: list[str] | None = None
    try:
        for workers in (int(n) for n in args.workers.split(",")):
            start = time.perf_counter()
            transcripts, _, _, sharding = transcribe_on_ray(
                args.artifact, clips, EvaluateOptions("", workers)
            )
            seconds = time.perf_counter() - start
            texts = [text for text, _ in transcripts]
            if first is not None and texts != first:
                raise SystemExit(f"{workers} workers: transcripts differ from the first run's")
            first = first or texts
            print(
                f"{sharding['workers']} worker(s): {len(texts) / seconds:.3f} clips/s "
                f"({seconds:.1f} s, {sharding['shards']} shards)"
            )
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
