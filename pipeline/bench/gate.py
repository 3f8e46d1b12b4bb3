"""`whisper-npu check`: does a bench run regress against a baseline run, variant by variant?

Latency is compared on the same-run ratio against fp32 (time / fp32 time = 1 / speedup_vs_fp32),
never on milliseconds, so a slower or busier machine cancels out. What a same-run ratio does not
cancel is another instruction set: int8 kernels with and without VNNI, say, move a quantized
variant's ratio on their own. When the two runs name different CPUs (bench.json's `machine`),
the latency limit is the wider `max_latency_increase_other_cpu`. WER is compared in absolute
points. QoI (the share of clips no worse than fp32's in the same run) must reach `min_qoi`: a
variant worse on many clips but equal on average fails it. Peers are context, not gated; nor
are the device reports bench.json quotes (another machine's figures: see `compare`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.bench.metrics import BenchMetrics
from pipeline.config import GateParams
from whisper_npu.errors import GateFailure, UserError


@dataclass(frozen=True)
class Comparison:
    variant: str
    wer: tuple[float, float]  # baseline, current (fractions)
    time_ratio: tuple[float, float]  # time / fp32 time, baseline and current
    qoi: float  # current run, against its own fp32
    max_wer_increase: float  # points
    max_latency_increase: float  # relative
    min_qoi: float

    @property
    def wer_increase(self) -> float:
        """In WER points."""
        return 100 * (self.wer[1] - self.wer[0])

    @property
    def latency_increase(self) -> float:
        """Relative change of the time ratio against fp32."""
        return self.time_ratio[1] / self.time_ratio[0] - 1

    @property
    def failures(self) -> list[str]:
        found = []
        if self.wer_increase > self.max_wer_increase:
            found.append(f"WER {self.wer_increase:+.2f} points (max +{self.max_wer_increase:.2f})")
        if self.latency_increase > self.max_latency_increase:
            found.append(
                f"latency {self.latency_increase:+.1%} vs fp32 "
                f"(max +{self.max_latency_increase:.0%})"
            )
        if self.qoi < self.min_qoi:
            found.append(f"QoI {self.qoi:.1%} (min {self.min_qoi:.1%})")
        return found


def latency_limit(baseline: BenchMetrics, current: BenchMetrics, gate: GateParams) -> float:
    """The same-CPU limit, unless both runs name their CPUs and the names differ."""
    other = baseline.cpu is not None and current.cpu is not None and baseline.cpu != current.cpu
    return gate.max_latency_increase_other_cpu if other else gate.max_latency_increase


def current_qoi(current: BenchMetrics, name: str, where: Path) -> float:
    qoi = current.variants[name].qoi
    if qoi is None:
        raise UserError(f"{where}: {name}.qoi: missing (a bench.json from before QoI; rerun bench)")
    return qoi


def compare(
    baseline: BenchMetrics, current: BenchMetrics, gate: GateParams, current_file: Path
) -> list[Comparison]:
    """One comparison per baseline variant (the current run has them all). Both files were
    validated on load: every WER and speedup is a finite number, every speedup positive. QoI
    is the current run's own (against its fp32), so only the current file must have it."""
    limit = latency_limit(baseline, current, gate)
    return [
        Comparison(
            name,
            (row.wer, current.variants[name].wer),
            (1 / row.speedup_vs_fp32, 1 / current.variants[name].speedup_vs_fp32),
            current_qoi(current, name, current_file),
            gate.max_wer_increase,
            limit,
            gate.min_qoi,
        )
        # `variants` alone: bench.json's `device` section is never gated. Its figures come from
        # another machine (a laptop's NPU, in a report sent back), not from the run being
        # checked, so a change there says nothing about this code on this machine.
        for name, row in baseline.variants.items()
    ]


def format_comparisons(
    comparisons: list[Comparison], new: list[str], baseline: BenchMetrics, current: BenchMetrics
) -> str:
    limit = comparisons[0].max_latency_increase if comparisons else 0.0
    machines = (
        f" (baseline measured on {baseline.cpu or 'an unrecorded CPU'!r}, "
        f"this run on {current.cpu or 'an unrecorded CPU'!r})"
        if baseline.cpu != current.cpu
        else ""
    )
    first = comparisons[0] if comparisons else None
    thresholds = (
        f"gate: WER may rise {first.max_wer_increase if first else 0:.2f} points; "
        f"time / fp32 time (same run) may rise {limit:.0%}{machines}; "
        f"QoI (clips no worse than fp32, same run) at least {first.min_qoi if first else 0:.1%}"
    )
    header = (
        f"{'variant':<12}{'WER base':>10}{'WER now':>9}{'delta':>8}"
        f"{'time/fp32 base':>16}{'now':>7}{'change':>9}{'QoI':>8}  verdict"
    )
    lines = [thresholds, header]
    for c in comparisons:
        verdict = "REGRESSED: " + "; ".join(c.failures) if c.failures else "ok"
        if current.variants[c.variant].budget_met == 0:
            verdict += " (quantized outside its held-back WER budget)"
        lines.append(
            f"{c.variant:<12}{100 * c.wer[0]:>9.2f}%{100 * c.wer[1]:>8.2f}%"
            f"{c.wer_increase:>+8.2f}{c.time_ratio[0]:>16.3f}{c.time_ratio[1]:>7.3f}"
            f"{c.latency_increase:>+9.1%}{c.qoi:>8.1%}  {verdict}"
        )
    lines += [f"{name:<12}(not in the baseline: not gated)" for name in new]
    return "\n".join(lines)


def check(baseline_file: Path, current_file: Path, gate: GateParams) -> int:
    """Print the comparison table; exit 0 when every variant holds, GateFailure (1) otherwise."""
    baseline, current = BenchMetrics.read(baseline_file), BenchMetrics.read(current_file)
    missing = [name for name in baseline.variants if name not in current.variants]
    if missing:
        raise UserError(
            f"{current_file}: variant {', '.join(missing)} of the baseline {baseline_file} missing"
        )
    comparisons = compare(baseline, current, gate, current_file)
    new = [name for name in current.variants if name not in baseline.variants]
    print(format_comparisons(comparisons, new, baseline, current))
    failed = [f"{c.variant}: {'; '.join(c.failures)}" for c in comparisons if c.failures]
    if failed:
        raise GateFailure(f"{len(failed)} variant(s) regressed: " + " | ".join(failed))
    return 0
