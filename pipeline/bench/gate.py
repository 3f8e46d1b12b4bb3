"""`whisper-npu check`: does a bench run regress against a baseline run, variant by variant?

Latency is compared on the same-run ratio against fp32 (time / fp32 time = 1 / speedup_vs_fp32),
never on milliseconds, so a slower or busier machine cancels out. What a same-run ratio does not
cancel is another instruction set: int8 kernels with and without VNNI, say, move a quantized
variant's ratio on their own. When the two runs name different CPUs (bench.json's `machine`),
the latency limit is the wider `max_latency_increase_other_cpu`. WER is compared in absolute
points. QoI (the share of clips no worse than fp32's in the same run) must reach `min_qoi`: a
variant worse on many clips but equal on average fails it. Clips whose transcript loops
(`whisper_npu.wer.is_loop`) may exceed fp32's in the same run by `gate.conditions.
max_loop_increase` at most. Peers are context, not gated; nor are the device reports bench.json
quotes (another machine's figures: see `compare`).

Each degraded condition of the current run (bench.json's `conditions`) is gated the same way,
variant by variant, with `gate.conditions`' limits (`per_condition` overriding them by name):
WER against the baseline file where it has the condition (else not compared, and said so), QoI
and loops against fp32 on the condition's clips in the same run always. A condition the
baseline has and the current run lacks is bad input, as a missing variant is.

A multilingual model's variants may loop on no more clips of any language than fp32 in the
same run, plus `gate.max_language_loop_increase` (bench.json's `languages`, the multilingual
set's eval half: a few clips per language, so loops, not WER, are what is gated there).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.bench.metrics import ALL_LANGUAGES, BenchMetrics
from pipeline.config import ConditionGate, ConditionLimits, GateParams
from whisper_npu.errors import GateFailure, UserError
from whisper_npu.figures import PEERS
from whisper_npu.variants import BASELINE


@dataclass(frozen=True)
class Limits:
    max_wer_increase: float  # points, against the baseline file
    min_qoi: float  # same run, against fp32
    max_loop_increase: int  # looping clips beyond fp32's, same run


@dataclass(frozen=True)
class Quality:
    """A variant's accuracy on one set of clips: against the baseline file, and against fp32
    in the same run."""

    variant: str
    wer: tuple[float | None, float]  # baseline (None: it has no such row), current (fractions)
    qoi: float  # current run, against its own fp32
    loop_increase: int | None  # current run, beyond fp32's (None: a file from before loops)
    limits: Limits

    @property
    def wer_increase(self) -> float | None:
        """In WER points; None without a baseline figure."""
        return None if self.wer[0] is None else 100 * (self.wer[1] - self.wer[0])

    @property
    def failures(self) -> list[str]:
        found = []
        limits, increase = self.limits, self.wer_increase
        if increase is not None and increase > limits.max_wer_increase:
            found.append(f"WER {increase:+.2f} points (max +{limits.max_wer_increase:.2f})")
        if self.qoi < limits.min_qoi:
            found.append(f"QoI {self.qoi:.1%} (min {limits.min_qoi:.1%})")
        if self.loop_increase is not None and self.loop_increase > limits.max_loop_increase:
            found.append(
                f"{self.loop_increase:+d} looping clips vs fp32 (max +{limits.max_loop_increase})"
            )
        return found


@dataclass(frozen=True)
class Comparison(Quality):
    """A variant on the clean eval set, latency included."""

    time_ratio: tuple[float, float]  # time / fp32 time, baseline and current
    max_latency_increase: float  # relative

    @property
    def latency_increase(self) -> float:
        """Relative change of the time ratio against fp32."""
        return self.time_ratio[1] / self.time_ratio[0] - 1

    @property
    def failures(self) -> list[str]:
        found = super().failures
        if self.latency_increase > self.max_latency_increase:
            found.append(
                f"latency {self.latency_increase:+.1%} vs fp32 "
                f"(max +{self.max_latency_increase:.0%})"
            )
        return found


@dataclass(frozen=True)
class ConditionComparison(Quality):
    condition: str


def latency_limit(baseline: BenchMetrics, current: BenchMetrics, gate: GateParams) -> float:
    """The same-CPU limit, unless both runs name their CPUs and the names differ."""
    other = baseline.cpu is not None and current.cpu is not None and baseline.cpu != current.cpu
    return gate.max_latency_increase_other_cpu if other else gate.max_latency_increase


def current_qoi(current: BenchMetrics, name: str, where: Path) -> float:
    qoi = current.variants[name].qoi
    if qoi is None:
        raise UserError(f"{where}: {name}.qoi: missing (a bench.json from before QoI; rerun bench)")
    return qoi


def clean_loop_increase(current: BenchMetrics, name: str) -> int | None:
    """Looping clips beyond fp32's on the clean set; None when the run did not count them."""
    fp32 = current.variants.get(BASELINE)
    mine = current.variants[name].loops
    return None if fp32 is None or fp32.loops is None or mine is None else mine - fp32.loops


def compare(
    baseline: BenchMetrics, current: BenchMetrics, gate: GateParams, current_file: Path
) -> list[Comparison]:
    """One comparison per baseline variant (the current run has them all). Both files were
    validated on load: every WER and speedup is a finite number, every speedup positive. QoI
    and loops are the current run's own (against its fp32), so only the current file must
    have them."""
    limits = Limits(gate.max_wer_increase, gate.min_qoi, gate.conditions.max_loop_increase)
    latency = latency_limit(baseline, current, gate)
    return [
        Comparison(
            variant=name,
            wer=(row.wer, current.variants[name].wer),
            qoi=current_qoi(current, name, current_file),
            loop_increase=clean_loop_increase(current, name),
            limits=limits,
            time_ratio=(1 / row.speedup_vs_fp32, 1 / current.variants[name].speedup_vs_fp32),
            max_latency_increase=latency,
        )
        # `variants` alone: bench.json's `device` section is never gated. Its figures come from
        # another machine (a laptop's NPU, in a report sent back), not from the run being
        # checked, so a change there says nothing about this code on this machine.
        for name, row in baseline.variants.items()
    ]


def condition_limits(gate: ConditionGate, condition: str) -> Limits:
    """`gate.conditions`' limits, each overridden where `per_condition` sets it."""
    over = gate.per_condition.get(condition, ConditionLimits())
    return Limits(
        gate.max_wer_increase if over.max_wer_increase is None else over.max_wer_increase,
        gate.min_qoi if over.min_qoi is None else over.min_qoi,
        gate.max_loop_increase if over.max_loop_increase is None else over.max_loop_increase,
    )


def compare_conditions(
    baseline: BenchMetrics, current: BenchMetrics, gate: ConditionGate
) -> list[ConditionComparison]:
    """One comparison per condition of the current run and variant scored on it (the peers
    are context): WER against the baseline file where it has that row."""
    before = baseline.conditions or {}
    out = []
    for condition, report in (current.conditions or {}).items():
        fp32_loops = report.engines[BASELINE].loops
        old = before[condition].engines if condition in before else {}
        for variant, row in report.engines.items():
            if variant in PEERS:
                continue
            out.append(
                ConditionComparison(
                    variant=variant,
                    wer=(old[variant].wer if variant in old else None, row.wer),
                    qoi=row.qoi,
                    loop_increase=row.loops - fp32_loops,
                    limits=condition_limits(gate, condition),
                    condition=condition,
                )
            )
    return out


@dataclass(frozen=True)
class LanguageLoops:
    """A variant's looping clips in one language against fp32's, in the same run."""

    variant: str
    language: str
    loops: int
    fp32_loops: int
    limit: int  # loops beyond fp32's allowed

    @property
    def failures(self) -> list[str]:
        extra = self.loops - self.fp32_loops
        if extra <= self.limit:
            return []
        return [f"+{extra} looping clips in {self.language} vs fp32 (max +{self.limit})"]


def compare_language_loops(current: BenchMetrics, limit: int) -> list[LanguageLoops]:
    """One row per variant and language of the current run's multilingual pass."""
    report = current.languages or {}
    if BASELINE not in report:
        return []
    return [
        LanguageLoops(variant, code, row.loops, report[BASELINE][code].loops, limit)
        for variant, rows in report.items()
        if variant not in PEERS
        for code, row in rows.items()
        if code != ALL_LANGUAGES
    ]


def format_language_loops(rows: list[LanguageLoops], limit: int) -> str:
    return "\n".join(
        [
            f"languages' gate: looping clips per language at most {limit} more than fp32's "
            "(same run)",
            f"{'language':<10}{'variant':<12}{'loops':>7}{'fp32':>6}  verdict",
            *(
                f"{r.language:<10}{r.variant:<12}{r.loops:>7}{r.fp32_loops:>6}  "
                f"{_verdict(r.failures)}"
                for r in rows
            ),
        ]
    )


def _verdict(failures: list[str]) -> str:
    return "REGRESSED: " + "; ".join(failures) if failures else "ok"


def _cells(c: Quality) -> str:
    """WER base, now and delta, QoI and loops vs fp32: the columns both tables share."""
    base = "-" if c.wer[0] is None else f"{100 * c.wer[0]:.2f}%"
    delta = "-" if c.wer_increase is None else f"{c.wer_increase:+.2f}"
    loops = "-" if c.loop_increase is None else f"{c.loop_increase:+d}"
    return f"{base:>10}{100 * c.wer[1]:>8.2f}%{delta:>8}{c.qoi:>8.1%}{loops:>7}"


QUALITY_HEADER = f"{'WER base':>10}{'WER now':>9}{'delta':>8}{'QoI':>8}{'loops':>7}"


def format_comparisons(
    comparisons: list[Comparison], new: list[str], baseline: BenchMetrics, current: BenchMetrics
) -> str:
    machines = (
        f" (baseline measured on {baseline.cpu or 'an unrecorded CPU'!r}, "
        f"this run on {current.cpu or 'an unrecorded CPU'!r})"
        if baseline.cpu != current.cpu
        else ""
    )
    first = comparisons[0]  # every comparison has the same limits; a baseline has a variant
    limits = first.limits
    thresholds = (
        f"gate: WER may rise {limits.max_wer_increase:.2f} points; "
        f"time / fp32 time (same run) may rise {first.max_latency_increase:.0%}{machines}; "
        f"QoI (clips no worse than fp32, same run) at least {limits.min_qoi:.1%}; "
        f"looping clips at most {limits.max_loop_increase} more than fp32's (same run)"
    )
    header = (
        f"{'variant':<12}{QUALITY_HEADER}{'time/fp32 base':>16}{'now':>7}{'change':>9}  verdict"
    )
    lines = [thresholds, header]
    for c in comparisons:
        verdict = _verdict(c.failures)
        if current.variants[c.variant].budget_met == 0:
            verdict += " (quantized outside its held-back WER budget)"
        lines.append(
            f"{c.variant:<12}{_cells(c)}{c.time_ratio[0]:>16.3f}{c.time_ratio[1]:>7.3f}"
            f"{c.latency_increase:>+9.1%}  {verdict}"
        )
    lines += [f"{name:<12}(not in the baseline: not gated)" for name in new]
    return "\n".join(lines)


def format_condition_comparisons(
    comparisons: list[ConditionComparison], baseline: BenchMetrics, gate: ConditionGate
) -> str:
    """The conditions' table; the conditions the baseline file lacks named once."""
    unscored = sorted({c.condition for c in comparisons} - (baseline.conditions or {}).keys())
    width = max(len(c.condition) for c in comparisons) + 2
    lines = [
        f"degraded conditions' gate: WER may rise {gate.max_wer_increase:.2f} points; QoI "
        f"at least {gate.min_qoi:.1%}; looping clips at most {gate.max_loop_increase} more than "
        "fp32's (same run)" + "".join(f"; {name}: its own limits" for name in gate.per_condition),
        f"{'condition':<{width}}{'variant':<12}{QUALITY_HEADER}  verdict",
        *(
            f"{c.condition:<{width}}{c.variant:<12}{_cells(c)}  {_verdict(c.failures)}"
            for c in comparisons
        ),
    ]
    if unscored:
        lines.append(f"not in the baseline, WER not compared: {', '.join(unscored)}")
    return "\n".join(lines)


def check(baseline_file: Path, current_file: Path, gate: GateParams) -> int:
    """Print the comparison tables; exit 0 when every variant holds, on the clean set and on
    every degraded condition, GateFailure (1) otherwise."""
    baseline, current = BenchMetrics.read(baseline_file), BenchMetrics.read(current_file)
    for what, wanted, have in (
        ("variant", baseline.variants, current.variants),
        ("condition", baseline.conditions or {}, current.conditions or {}),
    ):
        missing = [name for name in wanted if name not in have]
        if missing:
            raise UserError(
                f"{current_file}: {what} {', '.join(missing)} of the baseline {baseline_file} "
                "missing"
            )
    comparisons = compare(baseline, current, gate, current_file)
    new = [name for name in current.variants if name not in baseline.variants]
    print(format_comparisons(comparisons, new, baseline, current))
    degraded = compare_conditions(baseline, current, gate.conditions)
    if degraded:
        print(format_condition_comparisons(degraded, baseline, gate.conditions))
    looping = compare_language_loops(current, gate.max_language_loop_increase)
    if looping:
        print(format_language_loops(looping, gate.max_language_loop_increase))
    failed = [f"{c.variant}: {'; '.join(c.failures)}" for c in comparisons if c.failures]
    failed += [
        f"{c.variant} on {c.condition}: {'; '.join(c.failures)}" for c in degraded if c.failures
    ]
    failed += [f"{r.variant}: {'; '.join(r.failures)}" for r in looping if r.failures]
    if failed:
        raise GateFailure(f"{len(failed)} variant(s) regressed: " + " | ".join(failed))
    return 0
