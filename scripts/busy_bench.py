"""ONNX Runtime's thread settings against faster-whisper, on an idle machine and on one kept
busy by a background load (pipeline.bench.load): what the runtime's defaults should be.

Every configuration runs in this one process, configurations interleaved clip by clip and the
idle and busy passes alternating, so drift hits all alike. Figures are medians over clips of
each configuration's e2e milliseconds, and its ratio against faster-whisper int8's on the same
clip and pass.

    python -m scripts.busy_bench --root . --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.bench.evaluate import load_eval_clips
from pipeline.bench.load import background_load
from pipeline.bench.run import latency_clips
from pipeline.config import load_params
from whisper_npu.bundle import Bundle
from whisper_npu.transcriber import OrtRunner, Transcriber

Engine = Callable[[np.ndarray], str]


def ours(bundle_dir: Path, threads: int | None, spin: bool | None) -> Engine:
    bundle = Bundle.load(bundle_dir)
    transcriber = Transcriber(bundle, OrtRunner(bundle, threads=threads, spin=spin))
    return lambda samples: transcriber.transcribe(samples).text


def peer(model_dir: Path) -> Engine:
    """faster-whisper int8, opened as the bench opens it (its threads: one per physical core)."""
    from pipeline.bench.engines import OPENERS
    from pipeline.bench.selection import peer_specs

    specs, skipped = peer_specs(model_dir, None)
    spec = next((s for s in specs if s.name == "faster_whisper_int8"), None)
    if spec is None:
        raise SystemExit(f"busy_bench: faster_whisper_int8 unavailable: {skipped}")
    run, _ = OPENERS[spec.kind](spec)
    return lambda samples: run(0, samples).text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--rounds", type=int, default=3, help="idle + busy passes each")
    parser.add_argument("--load-cores", type=int, default=1)
    parser.add_argument("--out", type=Path, help="the figures (JSON) to write")
    args = parser.parse_args()
    root = args.root
    params = load_params(root / "params.yaml")
    clips = load_eval_clips(root / "artifacts" / "data")
    chosen = latency_clips(clips, params.bench)
    engines: dict[str, Engine] = {"faster_whisper_int8": peer(root / "artifacts" / "model")}
    for variant, bundle in (("fp32", "bundles/fp32"), ("cpu-int8", "bundles/cpu-int8")):
        path = root / "artifacts" / bundle
        # ORT's default (spinning), the runtime's (whisper_npu.transcriber.SPIN), one thread
        for threads, spin in ((None, None), (None, False), (1, None)):
            spinning = "off" if spin is False else "on"
            name = f"{variant} threads={threads or 'default'} spin={spinning}"
            engines[name] = ours(path, threads, spin)
    ms: dict[str, dict[str, list[list[float]]]] = {"idle": {}, "busy": {}}
    for engine in engines.values():  # warm-up
        engine(clips.samples[chosen[0]])
    for _ in range(args.rounds):
        for load, cores in (("idle", 0), ("busy", args.load_cores)):
            with background_load(cores):
                time.sleep(0.5 if cores else 0)
                for turn, clip in enumerate(chosen):
                    names = list(engines)
                    names = names[turn % len(names) :] + names[: turn % len(names)]
                    for name in names:
                        start = time.perf_counter()
                        engines[name](clips.samples[clip])
                        elapsed = (time.perf_counter() - start) * 1000
                        ms[load].setdefault(name, [[] for _ in chosen])[turn].append(elapsed)
    figures: dict[str, dict[str, object]] = {}
    for name in engines:
        row: dict[str, object] = {}
        for load, by_engine in ms.items():
            baseline = [statistics.median(runs) for runs in by_engine["faster_whisper_int8"]]
            medians = [statistics.median(runs) for runs in by_engine[name]]
            row[f"{load}_e2e_ms_p50"] = round(statistics.median(medians), 1)
            row[f"{load}_vs_faster_whisper_int8"] = round(
                statistics.median(b / m for b, m in zip(baseline, medians, strict=True)), 3
            )
        idle, busy = row["idle_e2e_ms_p50"], row["busy_e2e_ms_p50"]
        assert isinstance(idle, float) and isinstance(busy, float)
        row["busy_slowdown"] = round(busy / idle, 3)
        figures[name] = row
    text = json.dumps(figures, indent=1)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
