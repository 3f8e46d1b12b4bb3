"""The bench's pictures: plot data `dvc plots` reads (CSV) and the same figures as PNGs.

Four questions a reader brings: what does each variant cost in WER for what it gains in speed
(`wer_vs_latency`), on how many clips is it as good as fp32 (`qoi`: an average can hide many
worse clips), does a decoder call get slower as the cache fills (`decoder_by_position`), and
where does a clip's time go (`time_split`). The device reports sent back are points of their
own in `wer_vs_latency`, never one of this run's engines. With degraded conditions, two more:
how each engine's WER grows as noise rises (`wer_vs_snr`, a panel per noise family; its data a
CSV per family, `wer_vs_snr_<family>.csv`, which `dvc plots` draws as a line per engine), and
every engine's WER on every condition (`conditions.csv`).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on CI or a headless box

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

from pipeline.bench.metrics import BenchMetrics, BenchResult, ConditionReport, DeviceRow, RunInfo
from whisper_npu.figures import PEERS, BenchRow
from whisper_npu.variants import BASELINE

PARTS = ("encoder", "decoder", "other")
PART_LABELS = {
    "encoder": "encoder",
    "decoder": "decoder (all tokens)",
    "other": "log-mel, decode loop, detokenise",
}
DPI = 120
# Where a wer_vs_latency point was measured: this bench run, or a Ryzen AI laptop's NPU (a
# device report). A column of the CSV, so `dvc plots` shows it beside each point.
MEASURED_HERE, MEASURED_ON_DEVICE = "bench", "device"


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _colours(names: Sequence[str]) -> dict[str, Any]:
    """One colour per engine, the same in every figure."""
    palette = plt.get_cmap("tab10")
    return {name: palette(i % palette.N) for i, name in enumerate(names)}


def _subtitle(run: RunInfo) -> str:
    threads = run.threads or "ORT default"
    return (
        f"{run.cpu.model}, threads {threads}; latency: {len(run.clips.latency)} clips x "
        f"{run.clips.repeats} repeats, engines interleaved"
    )


def _save(figure: Figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)


def _device_points(axes: Axes, device: Mapping[str, DeviceRow]) -> None:
    """Stars in colours of their own: another machine's points, never one of this run's."""
    palette = plt.get_cmap("Dark2")
    for i, (key, row) in enumerate(device.items()):
        variant, chip = key.split("@", 1)
        axes.scatter(
            row.npu.e2e_ms_p50,
            100 * row.npu.wer,
            s=220,
            color=palette(i % palette.N),
            marker="*",
            edgecolor="black",
            linewidth=0.6,
            zorder=4,
            label=f"{variant} on device ({chip}): {row.speedup_vs_cpu:.2f}x its laptop's CPU, "
            f"WER {100 * row.npu.wer:.2f}%",
        )


def _wer_vs_latency(
    out: Path,
    figures: Mapping[str, BenchRow],
    device: Mapping[str, DeviceRow],
    colours: dict[str, Any],
    run: RunInfo,
) -> None:
    # Every engine the bench timed has a median latency; a row without one has no place here.
    rows = [
        (name, m.e2e_ms_p50, round(100 * m.wer, 3), m.speedup_vs_fp32)
        for name, m in figures.items()
        if m.e2e_ms_p50 is not None
    ]
    # A device point has no speedup against this run's fp32: it was never timed beside it.
    on_device = [
        (key, round(row.npu.e2e_ms_p50, 1), round(100 * row.npu.wer, 3), "", MEASURED_ON_DEVICE)
        for key, row in device.items()
    ]
    _write_csv(
        out / "wer_vs_latency.csv",
        ("engine", "e2e_ms_p50", "wer_pct", "speedup_vs_fp32", "measured"),
        [*((*row, MEASURED_HERE) for row in rows), *on_device],
    )
    figure, axes = plt.subplots(figsize=(9, 5.5))
    baseline = figures[BASELINE]
    axes.axhline(100 * baseline.wer, color="grey", linewidth=0.8, linestyle="--")
    if baseline.e2e_ms_p50 is not None:
        axes.axvline(baseline.e2e_ms_p50, color="grey", linewidth=0.8, linestyle="--")
    for name, latency, wer, speedup in rows:
        missed = figures[name].budget_met == 0  # quantized outside its WER budget
        axes.scatter(
            latency,
            wer,
            s=90,
            color=colours[name],
            marker="s" if name in PEERS else "X" if missed else "o",
            edgecolor="black",
            linewidth=0.6,
            zorder=3,
            # In the legend rather than beside the points: close points cannot hide each other.
            label=f"{name}: {speedup:.2f}x fp32 speed, WER {wer:.2f}%"
            + (" (held-back WER budget missed)" if missed else ""),
        )
    _device_points(axes, device)
    # Log scale: an NPU variant several times faster and a slow peer both stay readable.
    axes.set_xscale("log")
    axes.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 3.0, 5.0, 7.0)))
    axes.xaxis.set_major_formatter(ScalarFormatter())
    axes.xaxis.set_minor_formatter(NullFormatter())
    axes.set_xlabel("end-to-end ms per clip, median (log scale)  ← faster")
    axes.set_ylabel("WER % on the eval set  ↓ better")
    axes.set_title(
        "WER vs latency (dashed: fp32 CPU baseline; squares: peers; X: budget missed)\n"
        + ("stars: measured on device, in another machine's ms\n" if device else "")
        + _subtitle(run),
        fontsize=10,
    )
    axes.margins(x=0.15, y=0.2)
    axes.grid(alpha=0.3, which="both")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    _save(figure, out / "wer_vs_latency.png")


def _decoder_by_position(
    out: Path, positions: dict[str, dict[int, float]], colours: dict[str, Any], run: RunInfo
) -> None:
    names = list(positions)
    shared = sorted(set.intersection(*(set(p) for p in positions.values()))) if names else []
    rows = [(position, *(round(positions[n][position], 4) for n in names)) for position in shared]
    _write_csv(out / "decoder_by_position.csv", ("position", *names), rows)
    figure, axes = plt.subplots(figsize=(8, 5))
    for name in names:
        xs = sorted(positions[name])
        axes.plot(
            xs, [positions[name][x] for x in xs], color=colours[name], label=name, linewidth=1.4
        )
    axes.set_xlabel("cache position of the token fed to the decoder (bins of 4)")
    # Log scale: a CPU-simulated variant can be 10x slower than the rest and still leave them
    # readable; a flat line means the static cache costs the same at every position.
    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(ScalarFormatter())
    axes.yaxis.set_minor_formatter(NullFormatter())
    axes.set_ylabel("ms per decoder call, median (log scale)")
    axes.set_title(
        "Decoder latency by token position (all decoder calls of the run)\n" + _subtitle(run),
        fontsize=10,
    )
    axes.legend(fontsize=8, ncols=len(names), loc="upper center", bbox_to_anchor=(0.5, -0.13))
    axes.grid(alpha=0.3, which="both")
    _save(figure, out / "decoder_by_position.png")


def _bar_labels(axes: Axes, totals: Sequence[float]) -> None:
    for row, total in enumerate(totals):
        axes.text(total, row, f" {total:.0f} ms", va="center", fontsize=8)


def _time_split(out: Path, split: dict[str, dict[str, float]], run: RunInfo) -> None:
    names = list(split)
    rows = [(f"{n} {part}", n, part, round(split[n][part], 3)) for n in names for part in PARTS]
    _write_csv(out / "time_split.csv", ("label", "engine", "part", "ms"), rows)
    figure, axes = plt.subplots(figsize=(8, 1.6 + 0.5 * len(names)))
    left = [0.0] * len(names)
    for part, colour in zip(PARTS, ("#4C72B0", "#DD8452", "#BBBBBB"), strict=True):
        widths = [split[n][part] for n in names]
        axes.barh(names, widths, left=left, color=colour, label=PART_LABELS[part])
        left = [a + b for a, b in zip(left, widths, strict=True)]
    _bar_labels(axes, left)
    axes.invert_yaxis()
    axes.set_xlabel("mean ms per clip")
    axes.set_xlim(right=max(left) * 1.15 if left else 1)
    axes.set_title(f"Where a clip's time goes\n{_subtitle(run)}", fontsize=10)
    axes.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=3, frameon=False)
    _save(figure, out / "time_split.png")


def _qoi(out: Path, figures: Mapping[str, BenchRow], colours: dict[str, Any], run: RunInfo) -> None:
    rows = [(name, round(100 * m.qoi, 2)) for name, m in figures.items() if m.qoi is not None]
    _write_csv(out / "qoi.csv", ("engine", "qoi_pct"), rows)
    figure, axes = plt.subplots(figsize=(8, 1.6 + 0.4 * len(rows)))
    names = [name for name, _ in rows]
    bars = axes.barh(names, [pct for _, pct in rows], color=[colours[n] for n in names])
    axes.bar_label(bars, fmt=" %.1f%%", fontsize=8)
    axes.invert_yaxis()
    axes.set_xlim(0, 112)
    axes.set_xlabel("% of eval clips whose WER is no worse than fp32's (same run)")
    axes.set_title(f"QoI per engine\n{_subtitle(run)}", fontsize=10)
    _save(figure, out / "qoi.png")


def _conditions_csv(out: Path, metrics: BenchMetrics) -> None:
    """One row per condition and engine, labelled for `dvc plots`' horizontal bars."""
    rows = [
        (f"{name} {engine}", name, engine, round(100 * row.wer, 3), row.loops)
        for name, report in (metrics.conditions or {}).items()
        for engine, row in report.engines.items()
    ]
    _write_csv(out / "conditions.csv", ("label", "condition", "engine", "wer_pct", "loops"), rows)


def _noise_families(metrics: BenchMetrics) -> dict[str, list[tuple[float, ConditionReport]]]:
    """The conditions that add noise, by family, each family's from the lowest SNR up."""
    families: dict[str, list[tuple[float, ConditionReport]]] = {}
    for report in (metrics.conditions or {}).values():
        if report.snr_db is not None:
            families.setdefault(report.family, []).append((report.snr_db, report))
    return {family: sorted(points, key=lambda p: p[0]) for family, points in families.items()}


def _snr_panel(
    axes: Axes,
    family: str,
    points: list[tuple[float, ConditionReport]],
    clean: Mapping[str, BenchRow],
    colours: dict[str, Any],
) -> None:
    """Each engine's WER at the family's SNRs, and dotted on to its clean WER at the right."""
    snrs = [snr for snr, _ in points]
    clean_x = snrs[-1] + max(5.0, (snrs[-1] - snrs[0]) / 4)
    for name, row in clean.items():
        wers = [100 * report.engines[name].wer for _, report in points]
        axes.plot(snrs, wers, color=colours[name], marker="o", linewidth=1.4, label=name)
        axes.plot(
            [snrs[-1], clean_x], [wers[-1], 100 * row.wer], color=colours[name], linestyle=":"
        )
        axes.scatter([clean_x], [100 * row.wer], color=colours[name], marker="s", zorder=3)
    axes.set_xticks([*snrs, clean_x], [*(f"{snr:g}" for snr in snrs), "clean"])
    axes.set_title(f"{family} noise", fontsize=10)
    axes.set_xlabel("SNR dB  (less noise →)")
    axes.grid(alpha=0.3)


def _wer_vs_snr(out: Path, metrics: BenchMetrics, colours: dict[str, Any], run: RunInfo) -> None:
    families = _noise_families(metrics)
    if not families:
        return
    clean = metrics.conditioned_engines()
    for family, points in families.items():
        rows = [
            (snr, *(round(100 * report.engines[name].wer, 3) for name in clean))
            for snr, report in points
        ]
        _write_csv(out / f"wer_vs_snr_{family}.csv", ("snr_db", *clean), rows)
    figure, panels = plt.subplots(
        1, len(families), figsize=(1 + 4 * len(families), 4.5), sharey=True, squeeze=False
    )
    for axes, (family, points) in zip(panels[0], families.items(), strict=True):
        _snr_panel(axes, family, points, clean, colours)
    panels[0][0].set_ylabel("WER %  ↓ better")
    panels[0][-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    figure.suptitle(f"WER vs SNR per noise family\n{_subtitle(run)}", fontsize=10)
    _save(figure, out / "wer_vs_snr.png")


def write_plots(out: Path, result: BenchResult) -> None:
    """CSV plot data and a PNG per question, in `out`; the device reports only in
    wer_vs_latency, where a point can say where it was measured."""
    figures, run = result.metrics.engines(), result.run
    colours = _colours(list(figures))
    _wer_vs_latency(out, figures, result.metrics.device or {}, colours, run)
    _qoi(out, figures, colours, run)
    _decoder_by_position(out, result.positions, colours, run)
    _time_split(out, result.split, run)
    if result.metrics.conditions:
        _conditions_csv(out, result.metrics)
        _wer_vs_snr(out, result.metrics, colours, run)
