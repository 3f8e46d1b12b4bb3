"""The bench's timed passes alone, on a pipeline's artifacts: warm-up, `bench.latency_clips`
clips x `bench.repeats`, every variant and peer interleaved, each in its own worker, exactly as
the bench stage times them, without its WER and languages passes. For re-timing a run whose
timed passes shared the machine.

    python scripts/bench_latency.py --root . --out latency.json
"""

from __future__ import annotations

import argparse
import json
from contextlib import ExitStack
from pathlib import Path

from pipeline.bench import worker
from pipeline.bench.evaluate import load_eval_clips
from pipeline.bench.run import latency_clips, timed_passes
from pipeline.bench.selection import bench_specs
from pipeline.bench.stats import paired_speedup
from pipeline.config import load_params
from whisper_npu.timing import latency_stats
from whisper_npu.variants import BASELINE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."), help="the repo whose artifacts")
    parser.add_argument("--out", type=Path, required=True, help="the figures (JSON) to write")
    args = parser.parse_args()
    root = args.root
    params = load_params(root / "params.yaml")
    bench = params.bench
    clips = load_eval_clips(root / "artifacts" / "data")
    specs, _ = bench_specs(
        params.compile.variants,
        root / "artifacts" / "compiled",
        root / "artifacts" / "bundles" / BASELINE,
        root / "artifacts" / "model",
        bench,
    )
    latency = latency_clips(clips, bench)
    with ExitStack() as stack:
        workers = worker.open_workers(specs, stack)
        timed = timed_passes(workers, latency, clips, bench, lambda: None)
        peak_rss = {w.spec.name: w.finish() for w in workers}
    figures = {
        name: {
            **latency_stats(samples, clips.durations),
            "speedup_vs_fp32": paired_speedup(timed[BASELINE], samples),
            "peak_rss_mb": peak_rss[name],
        }
        for name, samples in timed.items()
    }
    text = json.dumps(figures, indent=1)
    args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
