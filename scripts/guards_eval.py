"""WER and end-to-end time per clip on the eval set with the hallucination guards on (OpenAI's
defaults, `TranscribeOptions()`) and off (`TranscribeOptions.plain()`, the pipeline's decoding),
through the Python API a user calls (`whisper_npu.load(...).transcribe`).

    nice -n 5 python scripts/guards_eval.py --artifact artifacts/release/fp32 \\
        --data artifacts/data --baseline artifacts/metrics/bench_clips.jsonl \\
        --clips guards_clips.jsonl

Single-threaded (one ORT thread), the two settings interleaved clip by clip (the first one
alternating) so drift in the machine's load falls on both. With --baseline, every guards-off
transcript must equal that per-clip table's hypothesis for --engine (the bench's fp32 rows):
a mismatch is an error, not a figure. A figure to read, not a timed test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClipFigures:
    """One clip, guards off and on."""

    clip: str
    duration_s: float
    off_ms: float
    on_ms: float
    fallback_windows: int  # windows decoded again at a temperature above 0 (guards on)
    off: str  # the transcripts
    on: str

    @property
    def same_text(self) -> bool:
        return self.off == self.on


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/release/fp32"))
    parser.add_argument("--data", type=Path, default=Path("artifacts/data"))
    parser.add_argument("--threads", type=int, default=1, help="ORT intra-op threads")
    parser.add_argument("--limit", type=int, default=None, help="the first N eval clips only")
    parser.add_argument("--baseline", type=Path, help="a bench_clips.jsonl to check against")
    parser.add_argument("--engine", default="fp32", help="the baseline rows' engine")
    parser.add_argument(
        "--clips", type=Path, help="append each clip's figures here as it is done (JSON Lines)"
    )
    args = parser.parse_args()

    from pipeline.bench.evaluate import load_eval_clips
    from pipeline.bench.results import ClipResult, read_table, score_clip, wer_figures
    from whisper_npu import TranscribeOptions, load

    clips = load_eval_clips(args.data)
    count = min(args.limit or len(clips.ids), len(clips.ids))
    model = load(args.artifact, threads=args.threads)
    settings = {"off": TranscribeOptions.plain(), "on": TranscribeOptions()}
    rows: dict[str, list[ClipResult]] = {name: [] for name in settings}
    per_clip: list[ClipFigures] = []
    if args.clips:
        args.clips.write_text("", encoding="utf-8")  # a run that stops keeps the clips done
    for i in range(count):
        samples = clips.samples[i]
        order = list(settings) if i % 2 == 0 else list(reversed(settings))
        found = {}
        for name in order:
            start = time.perf_counter()
            result = model.transcribe(samples, settings[name])
            ms = (time.perf_counter() - start) * 1000.0
            found[name] = (result, ms)
        for name, (result, ms) in found.items():
            texts = (clips.references[i], result.text)
            rows[name].append(score_clip(name, clips.ids[i], clips.durations[i], texts, [ms]))
        on = found["on"][0]
        fallbacks = len({s.seek for s in on.segments if s.temperature > 0})
        figures = ClipFigures(
            clips.ids[i],
            clips.durations[i],
            round(found["off"][1], 1),
            round(found["on"][1], 1),
            fallbacks,
            found["off"][0].text,
            on.text,
        )
        per_clip.append(figures)
        if args.clips:
            with args.clips.open("a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(figures), ensure_ascii=False) + "\n")
        print(
            f"{i + 1}/{count} {figures.clip}: off {figures.off_ms:.0f} ms, "
            f"on {figures.on_ms:.0f} ms{'' if figures.same_text else ', text differs'}",
            file=sys.stderr,
            flush=True,
        )

    mismatches = []
    if args.baseline:
        expected = {row.clip: row.hypothesis for row in read_table(args.baseline)[args.engine]}
        mismatches = [row.clip for row in rows["off"] if expected.get(row.clip) != row.hypothesis]

    print(f"{count} clips, {sum(clips.durations[:count]):.1f} s of audio, {args.threads} thread(s)")
    for name in ("off", "on"):
        wers = wer_figures(rows[name])
        times = [row.e2e_ms[0] for row in rows[name]]
        wer = " ".join(f"{key} {100 * value:.2f}%" for key, value in wers.items())
        print(
            f"guards {name:>3}: {wer}; e2e per clip median {statistics.median(times):.0f} ms, "
            f"mean {statistics.fmean(times):.0f} ms, total {sum(times) / 1000:.1f} s"
        )
    differ = [row.clip for row in per_clip if not row.same_text]
    fallback = [row.clip for row in per_clip if row.fallback_windows]
    print(f"transcripts that differ: {len(differ)} {differ}")
    print(f"clips with a fallback window (guards on): {len(fallback)} {fallback}")
    if args.baseline:
        print(
            f"guards-off transcripts equal to {args.baseline} ({args.engine}): "
            f"{count - len(mismatches)}/{count} {mismatches or ''}"
        )
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
