"""The bench's scoreboard on stdout: what a person reads after a run."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.bench.metrics import BenchMetrics, BenchResult, DeviceRow
from whisper_npu.figures import PEERS, DeviceFigures


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], left: int = 2) -> list[str]:
    """Left-aligned first `left` columns, the numbers right-aligned, widths from the content."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(w) if i < left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def _device_cells(key: str, figures: DeviceFigures, speedup: str) -> list[str]:
    return [
        key,
        figures.provider.replace("ExecutionProvider", ""),
        _fmt(100 * figures.wer, ".2f"),
        _fmt(figures.e2e_ms_p50, ".0f"),
        _fmt(figures.e2e_ms_p90, ".0f"),
        _fmt(figures.encoder_ms_p50, ".1f"),
        _fmt(figures.decoder_ms_per_token_p50, ".2f"),
        _fmt(figures.rtfx, ".2f"),
        _fmt(figures.tokens_per_s, ".1f"),
        speedup,
    ]


def _device_block(rows: dict[str, DeviceRow], note: str) -> list[str]:
    """The reports sent back from laptops, in a block of their own: another machine's
    milliseconds set beside this run's would read as a speedup neither machine measured."""
    lines = []
    if rows:
        header = [
            "variant@chip",
            "provider",
            "WER %",
            "e2e ms p50",
            "p90",
            "enc ms p50",
            "dec ms/token p50",
            "RTFx",
            "tokens/s",
            "speed vs its CPU",
        ]
        cells = [
            line
            for key, row in rows.items()
            for line in (
                _device_cells(key, row.npu, f"{row.speedup_vs_cpu:.2f}x"),
                _device_cells(key, row.cpu, "-"),
            )
        ]
        lines += [
            "measured on device (reports sent back from Ryzen AI laptops; never gated, not "
            "comparable with the milliseconds above):",
            *_table(header, cells),
            *(
                f"{key}: {row.report}, {row.artifact}, Ryzen AI {row.ryzen_ai or 'unknown'}, "
                f"{row.clips} clips ({row.audio_s:.0f} s of audio), sessions {row.session_s:.1f} s "
                + ("(compiled)" if row.compiled else "(from the EP cache)")
                + f", {row.created}"
                for key, row in rows.items()
            ),
        ]
    return lines + ([note] if note else [])


def format_table(result: BenchResult) -> str:
    """The scoreboard a person reads: time and WER against fp32 CPU and against each peer,
    then where the time and memory go, then apart, the device reports sent back."""
    rows = result.metrics.engines()
    engines, clips = result.run.engines, result.run.clips
    peers = [p for p in PEERS if p in rows]
    ratios = [
        [
            name,
            engines[name].execution.provider.replace("ExecutionProvider", ""),
            _fmt(m.e2e_ms_p50, ".0f"),
            _fmt(m.speedup_vs_fp32, ".2f", "x"),
            *(_fmt(m.speedup_vs(p), ".2f", "x") for p in peers),
            _fmt(100 * m.wer, ".2f"),
            _fmt(m.wer_delta_vs_fp32, "+.2f"),
            *(_fmt(None if p == name else 100 * (m.wer - rows[p].wer), "+.2f") for p in peers),
            _fmt(None if m.qoi is None else 100 * m.qoi, ".1f"),
        ]
        for name, m in rows.items()
    ]
    header = [
        "engine",
        "provider",
        "e2e ms p50",
        "speed vs fp32",
        *(f"vs {p}" for p in peers),
        "WER %",
        "dWER vs fp32",
        *(f"vs {p}" for p in peers),
        "QoI %",
    ]
    costs = [
        [
            name,
            engines[name].execution.provider.replace("ExecutionProvider", ""),
            _fmt(m.encoder_ms_p50, ".1f"),
            _fmt(m.encoder_ms_p90, ".1f"),
            _fmt(m.decoder_ms_per_token_p50, ".2f"),
            _fmt(m.decoder_ms_per_token_p90, ".2f"),
            _fmt(m.e2e_ms_p90, ".0f"),
            _fmt(m.rtf, ".3f"),
            _fmt(m.rtfx, ".2f"),
            _fmt(m.tokens_per_s, ".1f"),
            _fmt(m.peak_rss_mb, ".0f"),
            _fmt(m.size_mb, ".1f"),
            _fmt(m.load_s, ".2f"),
        ]
        for name, m in rows.items()
    ]
    cost_header = [
        "engine",
        "provider",
        "enc ms p50",
        "p90",
        "dec ms/token p50",
        "p90",
        "e2e ms p90",
        "RTF",
        "RTFx",
        "tokens/s",
        "peak RSS MB",
        "size MB",
        "load s",
    ]
    notes = [
        f"WER: {clips.eval} eval clips ({clips.long_form} long-form)"
        + "".join(
            f"; {name}: {e.transcripts}"
            for name, e in engines.items()
            if e.transcripts.startswith("the reference")
        )
        + ". Latency: "
        f"{len(clips.latency)} clips x {clips.repeats} repeats after "
        f"{clips.warmup_runs_per_engine} warm-up run(s), engines interleaved, "
        f"threads {result.run.threads or 'ORT default'}. Speed = median of per-clip time "
        "ratios measured back to back (>1: faster); dWER in points; QoI = share of clips "
        "whose WER is no worse than fp32's; RTFx = audio s / compute s.",
        *(f"peer skipped: {k}: {v}" for k, v in result.run.peers_skipped.items()),
        *(
            f"{name}: NPU wanted, ran on CPU: {e.execution.fallback}"
            for name, e in engines.items()
            if e.execution.fallback
        ),
        *(
            f"{name}: quantized outside its held-back WER budget (budget_met 0; see its "
            "QUANTIZATION.md)"
            for name, m in rows.items()
            if m.budget_met == 0
        ),
        f"bench took {result.run.wall_s:.0f} s",
    ]
    device = _device_block(result.metrics.device or {}, result.device_note)
    return "\n".join(
        [
            *_table(header, ratios),
            "",
            *_table(cost_header, costs),
            "",
            *notes,
            *(["", *device] if device else []),
        ]
    )


def _wer_and_loops(wer: float, loops: int | None) -> str:
    return f"{100 * wer:.2f}" + (f" ({loops})" if loops else "")


def format_conditions(metrics: BenchMetrics) -> str:
    """Every engine's WER % on the clean eval set, then on each degraded condition, with the
    clips whose transcript looped in brackets where any did."""
    clean = metrics.conditioned_engines()
    conditions = metrics.conditions or {}
    rows = [
        ["clean", "-", *(_wer_and_loops(row.wer, row.loops) for row in clean.values())],
        *(
            [
                name,
                _fmt(report.snr_db, "g"),
                *(_wer_and_loops(report.engines[e].wer, report.engines[e].loops) for e in clean),
            ]
            for name, report in conditions.items()
        ),
    ]
    note = (
        "WER % per condition; (n): n clips looped (whisper_npu.wer.is_loop). QoI, loops and "
        "the WER change vs fp32 per condition are in bench.json's `conditions`."
    )
    return "\n".join([*_table(["condition", "SNR dB", *clean], rows, left=1), note])


def format_busy(metrics: BenchMetrics) -> str:
    """Each engine's median e2e idle and with the background load (`bench.busy_cores`), and
    its paired speedups in the busy pass; empty when no busy pass ran."""
    engines = {name: row for name, row in metrics.engines().items() if row.busy_e2e_ms_p50}
    if not engines:
        return ""
    rows = [
        [
            name,
            _fmt(row.e2e_ms_p50, ".0f"),
            _fmt(row.busy_e2e_ms_p50, ".0f"),
            _fmt(row.busy_slowdown, ".2f", "x"),
            _fmt(row.busy_speedup_vs_fp32, ".2f", "x"),
            _fmt(row.busy_speedup_vs_faster_whisper_int8, ".2f", "x"),
        ]
        for name, row in engines.items()
    ]
    header = ["engine", "idle ms", "busy ms", "slowdown", "busy vs fp32", "busy vs fw int8"]
    note = "busy: one timed pass over the latency clips with bench.busy_cores kept busy"
    return "\n".join([*_table(header, rows, left=1), note])
