"""`whisper-npu check`: does a bench run regress against a baseline run, variant by variant?

Latency is compared on the same-run ratio against fp32 (time / fp32 time = 1 / speedup_vs_fp32),
never on milliseconds, so a slower or busier machine cancels out. WER is compared in absolute
points. Peers are context, not gated.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import GateParams
from pipeline.errors import GateFailure, UserError

GATED = ("wer", "speedup_vs_fp32")
NOT_VARIANTS = ("peers",)


def load_metrics(path: Path) -> dict[str, dict[str, float]]:
    """bench.json's variants, each with a numeric WER and speedup; anything else is bad input."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such metrics file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected an object of variants")
    variants = {name: value for name, value in raw.items() if name not in NOT_VARIANTS}
    for name, figures in variants.items():
        for key in GATED:
            value = figures.get(key) if isinstance(figures, dict) else None
            if not _is_valid(key, value):
                raise UserError(f"{path}: {name}.{key} is missing or not a valid number")
    if not variants:
        raise UserError(f"{path}: no variants")
    return variants


def _is_valid(key: str, value: Any) -> bool:
    """A finite number (not a bool); a speedup must also be positive to be inverted."""
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return value > 0 if key == "speedup_vs_fp32" else True


@dataclass(frozen=True)
class Comparison:
    variant: str
    wer: tuple[float, float]  # baseline, current (fractions)
    time_ratio: tuple[float, float]  # time / fp32 time, baseline and current
    gate: GateParams

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
        if self.wer_increase > self.gate.max_wer_increase:
            found.append(
                f"WER {self.wer_increase:+.2f} points (max +{self.gate.max_wer_increase:.2f})"
            )
        if self.latency_increase > self.gate.max_latency_increase:
            found.append(
                f"latency {self.latency_increase:+.1%} vs fp32 "
                f"(max +{self.gate.max_latency_increase:.0%})"
            )
        return found


def compare(
    baseline: dict[str, dict[str, float]], current: dict[str, dict[str, float]], gate: GateParams
) -> list[Comparison]:
    """One comparison per baseline variant (the current run has them all)."""
    return [
        Comparison(
            name,
            (baseline[name]["wer"], current[name]["wer"]),
            (1 / baseline[name]["speedup_vs_fp32"], 1 / current[name]["speedup_vs_fp32"]),
            gate,
        )
        for name in baseline
    ]


def format_comparisons(comparisons: list[Comparison], new: list[str], gate: GateParams) -> str:
    thresholds = (
        f"gate: WER may rise {gate.max_wer_increase:.2f} points; time / fp32 time (same run) "
        f"may rise {gate.max_latency_increase:.0%}"
    )
    header = (
        f"{'variant':<12}{'WER base':>10}{'WER now':>9}{'delta':>8}"
        f"{'time/fp32 base':>16}{'now':>7}{'change':>9}  verdict"
    )
    lines = [thresholds, header]
    for c in comparisons:
        verdict = "REGRESSED: " + "; ".join(c.failures) if c.failures else "ok"
        lines.append(
            f"{c.variant:<12}{100 * c.wer[0]:>9.2f}%{100 * c.wer[1]:>8.2f}%"
            f"{c.wer_increase:>+8.2f}{c.time_ratio[0]:>16.3f}{c.time_ratio[1]:>7.3f}"
            f"{c.latency_increase:>+9.1%}  {verdict}"
        )
    lines += [f"{name:<12}(not in the baseline: not gated)" for name in new]
    return "\n".join(lines)


def check(baseline_file: Path, current_file: Path, gate: GateParams) -> int:
    """Print the comparison table; exit 0 when every variant holds, GateFailure (1) otherwise."""
    baseline, current = load_metrics(baseline_file), load_metrics(current_file)
    missing = [name for name in baseline if name not in current]
    if missing:
        raise UserError(
            f"{current_file}: variant {', '.join(missing)} of the baseline {baseline_file} missing"
        )
    comparisons = compare(baseline, current, gate)
    new = [name for name in current if name not in baseline]
    print(format_comparisons(comparisons, new, gate))
    failed = [f"{c.variant}: {'; '.join(c.failures)}" for c in comparisons if c.failures]
    if failed:
        raise GateFailure(f"{len(failed)} variant(s) regressed: " + " | ".join(failed))
    return 0
