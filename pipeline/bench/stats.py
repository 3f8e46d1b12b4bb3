"""The bench's figures from its samples. Ratios against fp32 are medians of per-clip ratios
measured back to back, so the machine's speed cancels out; `check` gates on those ratios, never
on milliseconds."""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence

from pipeline.bench.metrics import ConditionReport, ConditionRow
from pipeline.bench.records import ConditionClips, EvalClips, Measurement, Samples
from pipeline.bench.results import ClipResult, qoi, wer_figures
from whisper_npu.errors import UserError
from whisper_npu.figures import PEERS, BenchRow
from whisper_npu.timing import Sample, latency_stats
from whisper_npu.variants import BASELINE
from whisper_npu.wer import total_edits

# Decoder calls are pooled over POSITION_BIN neighbouring cache positions: few clips reach the
# far positions, and a median of a handful of calls on a shared machine is mostly noise.
POSITION_BIN = 4
MIN_POSITION_SAMPLES = 8


def paired_speedup(reference: Sequence[Sample], other: Sequence[Sample]) -> float:
    """Median over clips of reference time / other time, each pair measured back to back."""
    return statistics.median(r.e2e_ms / o.e2e_ms for r, o in zip(reference, other, strict=True))


def round_sig(value: float, digits: int = 4) -> float:
    """A readable number for a diff: `digits` significant digits."""
    return float(f"{value:.{digits}g}")


def decoder_by_position(samples: Samples) -> dict[str, dict[int, float]]:
    """Median decoder ms per bin of cache positions (keyed by its first position), per engine
    that exposes its decoder."""
    out = {}
    for name, runs in samples.items():
        by_position: dict[int, list[float]] = defaultdict(list)
        for sample in runs:
            for position, ms in sample.decoder_ms:
                by_position[position - position % POSITION_BIN].append(ms)
        if by_position:
            out[name] = {
                position: statistics.median(values)
                for position, values in sorted(by_position.items())
                if len(values) >= MIN_POSITION_SAMPLES
            }
    return out


def time_split(samples: Samples) -> dict[str, dict[str, float]]:
    """Mean ms per clip in the encoder, in the decoder, and in the rest (log-mel, decode loop,
    detokenise) for engines that expose their calls; the parts add up to the mean e2e time."""
    out = {}
    for name, runs in samples.items():
        if not runs[0].encoder_ms:
            continue
        encoder = statistics.fmean(sum(s.encoder_ms) for s in runs)
        decoder = statistics.fmean(sum(ms for _, ms in s.decoder_ms) for s in runs)
        total = statistics.fmean(s.e2e_ms for s in runs)
        out[name] = {"encoder": encoder, "decoder": decoder, "other": total - encoder - decoder}
    return out


def busy_figures(busy: Samples, name: str, idle: Sequence[Sample]) -> dict[str, float]:
    """`name`'s median under the background load, that over its idle median, and its paired
    speedups there against fp32 and faster-whisper int8 (none without a busy pass)."""
    if name not in busy:
        return {}
    runs = busy[name]
    median = statistics.median(s.e2e_ms for s in runs)
    out = {
        "busy_e2e_ms_p50": median,
        "busy_slowdown": median / statistics.median(s.e2e_ms for s in idle),
    }
    for other in (BASELINE, "faster_whisper_int8"):
        if other in busy and other != name:
            out[f"busy_speedup_vs_{other.replace('-', '_')}"] = paired_speedup(busy[other], runs)
    return out


def engine_metrics(
    measured: Measurement, clips: EvalClips, tables: dict[str, list[ClipResult]]
) -> dict[str, BenchRow]:
    """Every engine's figures from its per-clip results and timed samples, with same-run
    ratios against fp32 and against each peer."""
    latency_pass = measured.latency
    peers = [name for name in PEERS if name in latency_pass]
    scores = {name: wer_figures(rows) for name, rows in tables.items()}
    out: dict[str, BenchRow] = {}
    for name, runs in latency_pass.items():
        figures: dict[str, float] = {
            **scores[name],
            "wer_delta_vs_fp32": 100 * (scores[name]["wer"] - scores[BASELINE]["wer"]),
            "qoi": qoi(tables[name], tables[BASELINE]),
            **latency_stats(runs, clips.durations),
            "speedup_vs_fp32": paired_speedup(latency_pass[BASELINE], runs),
            **{
                f"speedup_vs_{peer}": paired_speedup(latency_pass[peer], runs)
                for peer in peers
                if peer != name and name not in PEERS
            },
            **busy_figures(measured.busy, name, runs),
            **{
                key: measured.info[name][key]
                for key in ("peak_rss_mb", "size_mb", "load_s", "budget_met")
                if key in measured.info[name]
            },
        }
        out[name] = BenchRow.model_validate(
            {
                **{key: round_sig(value) for key, value in figures.items()},
                "loops": sum(row.looped for row in tables[name]),
            }
        )
    return out


def condition_row(rows: Sequence[ClipResult], baseline: Sequence[ClipResult]) -> ConditionRow:
    """One engine's figures on one condition's rows, against fp32's `baseline` rows of it."""
    total = total_edits([row.edits for row in rows])
    fp32 = total_edits([row.edits for row in baseline])
    if not total.words:
        raise UserError(f"condition {rows[0].condition}: no clip has a reference word to score")
    return ConditionRow(
        clips=len(rows),
        words=total.words,
        wer=round_sig(total.wer),
        substitution_rate=round_sig(total.substitutions / total.words),
        deletion_rate=round_sig(total.deletions / total.words),
        insertion_rate=round_sig(total.insertions / total.words),
        loops=sum(row.looped for row in rows),
        qoi=round_sig(qoi(rows, baseline)),
        wer_delta_vs_fp32=round_sig(100 * (total.wer - fp32.wer)),
    )


def condition_metrics(
    conditions: Sequence[ConditionClips], tables: dict[str, dict[str, list[ClipResult]]]
) -> dict[str, ConditionReport]:
    """bench.json's `conditions`: per condition its family and SNR, and every engine's row."""
    return {
        found.name: ConditionReport(
            family=found.family,
            snr_db=found.snr_db,
            engines={
                name: condition_row(rows, tables[found.name][BASELINE])
                for name, rows in tables[found.name].items()
            },
        )
        for found in conditions
    }
