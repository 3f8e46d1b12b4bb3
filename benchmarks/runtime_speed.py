"""Runtime speed on this machine: our ORT bundle vs transformers `generate` vs faster-whisper.

    python benchmarks/runtime_speed.py [--clips 24] [--rounds 5] [--threads 2]

Each engine transcribes the same eval clips in its own process (so one engine's allocator or
thread pool cannot slow another), the engines take turns over several rounds so machine drift
hits all alike, and the figures are medians with ratios against transformers measured in the
same run. Also prints decoder milliseconds per token at step 10 and step 400 of one window.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ENGINES = ("whisper-npu (ORT CPU)", "transformers generate", "faster-whisper fp32")
ENGINE_KEYS = ("ours", "transformers", "faster-whisper")


def eval_clips(data_dir: Path, count: int) -> list[np.ndarray]:
    from pipeline.speech_sets import clip_samples, load_saved_set

    rows = [row for row in load_saved_set(data_dir, "eval") if row["duration_s"] <= 30]
    return [clip_samples(row) for row in rows[:count]]


def engine(name: str, args: argparse.Namespace) -> Callable[[np.ndarray], str]:
    if name == "ours":
        from pipeline.runtime import Transcriber

        transcriber = Transcriber.from_bundle(args.bundle, threads=args.threads)
        return lambda audio: transcriber.transcribe(audio).text
    if name == "transformers":
        import torch

        from pipeline.reference import greedy_tokens, load_model, log_mel

        torch.set_num_threads(args.threads)
        model, processor = load_model(args.model)
        return lambda audio: processor.tokenizer.decode(
            greedy_tokens(model, log_mel(processor, audio)), skip_special_tokens=True
        )
    from faster_whisper import WhisperModel

    from pipeline.model_source import _builtin_dir

    peer = WhisperModel(
        str(_builtin_dir("builtin:tiny.en")),
        device="cpu",
        compute_type="float32",
        cpu_threads=args.threads,
    )

    def run(audio: np.ndarray) -> str:
        segments, _ = peer.transcribe(
            audio,
            beam_size=1,
            temperature=0.0,
            without_timestamps=True,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return "".join(segment.text for segment in segments)

    return run


def time_engine(args: argparse.Namespace) -> None:
    """Child process: warm up, then time each clip once; print JSON seconds per clip."""
    clips = eval_clips(args.data, args.clips)
    transcribe = engine(args.engine, args)
    for audio in clips[:2]:
        transcribe(audio)
    seconds = []
    for audio in clips:
        start = time.perf_counter()
        transcribe(audio)
        seconds.append(time.perf_counter() - start)
    print(json.dumps(seconds))


def decoder_step_ms(args: argparse.Namespace) -> dict[int, float]:
    """Median ms of one decoder call at cache positions 10 and 400 (static cache: should match)."""
    from pipeline.runtime import Bundle, OrtRunner

    runner = OrtRunner(Bundle.load(args.bundle), threads=args.threads)
    limit = runner.bundle.dims.max_decode_len
    per_position: dict[int, list[float]] = {10: [], 400: []}
    for _ in range(5):
        runner.encode(np.zeros((1, runner.bundle.dims.n_mels, 3000), np.float32))
        for position in range(min(limit, 410)):
            start = time.perf_counter()
            runner.decode_step(400 + position % 50, position)
            elapsed = (time.perf_counter() - start) * 1000
            for anchor, samples in per_position.items():
                if abs(position - anchor) <= 5:
                    samples.append(elapsed)
    return {anchor: statistics.median(samples) for anchor, samples in per_position.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", type=Path, default=Path("artifacts/bundles/fp32"))
    parser.add_argument("--model", type=Path, default=Path("artifacts/model"))
    parser.add_argument("--data", type=Path, default=Path("artifacts/data"))
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--engine", choices=ENGINE_KEYS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.engine:
        time_engine(args)
        return
    base = [
        sys.executable,
        __file__,
        "--bundle",
        str(args.bundle),
        "--model",
        str(args.model),
        "--data",
        str(args.data),
        "--clips",
        str(args.clips),
        "--threads",
        str(args.threads),
    ]
    totals: dict[str, list[float]] = {key: [] for key in ENGINE_KEYS}
    for round_index in range(args.rounds):
        for key in ENGINE_KEYS:
            out = subprocess.run(
                [*base, "--engine", key], capture_output=True, text=True, check=True
            )
            totals[key].append(sum(json.loads(out.stdout.strip().splitlines()[-1])))
        print(
            f"round {round_index + 1}/{args.rounds}: "
            + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in totals.items()),
            flush=True,
        )
    medians = {key: statistics.median(values) for key, values in totals.items()}
    print(
        f"\n{args.clips} eval clips, {args.rounds} rounds, {args.threads} threads; "
        "medians of the per-round totals"
    )
    print(f"{'engine':<26}{'total s':>9}{'ms/clip':>9}{'vs transformers':>17}")
    for label, key in zip(ENGINES, ENGINE_KEYS, strict=True):
        ratio = medians[key] / medians["transformers"]
        print(
            f"{label:<26}{medians[key]:>9.2f}"
            f"{1000 * medians[key] / args.clips:>9.0f}{ratio:>16.2f}x"
        )
    steps = decoder_step_ms(args)
    print(
        f"\ndecoder ms/token (median): step 10 {steps[10]:.2f}, step 400 {steps[400]:.2f} "
        f"(ratio {steps[400] / steps[10]:.2f})"
    )


if __name__ == "__main__":
    main()
