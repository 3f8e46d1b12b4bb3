"""Every variant's facts in one table, so params, quantizers, compiler, bench and release agree.

A variant's string value is what params.yaml, the CLI, bundle.json, bench.json and the release
names spell; adding or changing a variant is a change to `VARIANTS` alone (dvc.yaml's
`artifacts:` and plot columns are plain YAML and are checked against it by a test).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from whisper_npu.compat import StrEnum


class Variant(StrEnum):
    FP32 = "fp32"
    A16W8 = "a16w8"
    BF16 = "bf16"
    XINT8 = "xint8"
    A8W8 = "a8w8"
    CPU_INT8 = "cpu-int8"

    def __repr__(self) -> str:
        # Messages quote variants with !r and print lists of them: they read as params.yaml does.
        return repr(self.value)


@dataclass(frozen=True)
class Precision:
    """A grid to round to: integers of `bits` (symmetric, per tensor) or bfloat16."""

    activation_bits: int | None  # None: bfloat16
    weight_bits: int | None

    def describe(self) -> str:
        act = f"a{self.activation_bits}" if self.activation_bits else "abf16"
        return act + (f"w{self.weight_bits}" if self.weight_bits else "wbf16")


@dataclass(frozen=True)
class Grid:
    """A rounding grid the sensitivity stage ranks layers on; `name` is its file's stem.
    Variants that round alike (xint8 and a8w8) share one grid, so it is measured once."""

    name: str
    precision: Precision


A8W8_GRID = Grid("a8w8", Precision(8, 8))
A16W8_GRID = Grid("a16w8", Precision(16, 8))
BF16_GRID = Grid("bf16", Precision(None, None))


@dataclass(frozen=True)
class NpuFamily:
    """A generation of Ryzen AI NPUs: its compile targets (params `compile.target`) and chips."""

    name: str
    targets: tuple[str, ...]
    chips: str


# A Ryzen AI chip, as params `compile.target` names it: Strix and Krackan (XDNA2), Phoenix and
# Hawk Point (XDNA1).
Target = Literal["stx", "krk", "phx", "hpt"]


XDNA1 = NpuFamily("XDNA1", ("phx", "hpt"), "Phoenix, Hawk Point")
XDNA2 = NpuFamily("XDNA2", ("stx", "krk"), "Strix, Krackan")


# The quantizers a QuantSpec may name (params `quantize.backend`).
Backend = Literal["quark", "vai_q_onnx", "ort"]


@dataclass(frozen=True)
class QuantSpec:
    """How a quantized variant is made and what it may cost."""

    grid: Grid  # layers are ranked on it, and the quantizer rounds to it
    quark_preset: str | None  # the quark.onnx QConfig the Quark backend starts from
    max_wer_delta: float  # default budget: held-back WER points it may lose against fp32
    power_of_two: bool = False  # XINT8: symmetric activations, power-of-two scales
    # The one backend that makes it, whatever `quantize.backend` says (None: that setting).
    backend: str | None = None
    # Activations quantized at run time from each tensor's own range (ONNX Runtime's
    # DynamicQuantizeLinear): nothing calibrated, no Q/DQ pairs, CPU kernels only.
    dynamic: bool = False

    @property
    def bfloat16(self) -> bool:
        """A bfloat16 grid has no ranges: nothing to calibrate, and only Quark writes it."""
        return self.grid.precision.activation_bits is None


BF16_COLUMN = "BF16"
# What a CPU-only variant's compile record, release card and registry entry say it is.
CPU_ONLY_NOTE = "CPU only, not for the NPU"


class Flow(StrEnum):
    """A VitisAI compile flow, as the partition forecast models it (pipeline/npu/flows.py)."""

    VAIML = "vaiml"  # AMD's transformer route: FP32/BF16 graphs compiled by VAIML, XDNA2 only
    X2_INT = "x2-int"  # Quark integer QDQ graphs through the integer backend
    TABLE = "table"  # AMD's operator table as an allowlist: a secondary figure


# Compile targets whose NPU takes each flow (Ryzen AI 1.6+: BF16/VAIML on STX/KRK only).
FLOW_TARGETS: Mapping[Flow, tuple[str, ...]] = {
    Flow.VAIML: XDNA2.targets,
    Flow.X2_INT: XDNA1.targets + XDNA2.targets,
    Flow.TABLE: XDNA1.targets + XDNA2.targets,
}


@dataclass(frozen=True)
class VariantSpec:
    """One variant: what it is, how it is quantized (None: not at all) and where it runs."""

    variant: Variant
    text: str  # what it is, for people
    # The column of AMD's operator table that places its ops on the NPU; None: CPU only.
    npu_column: str | None
    meant_for: NpuFamily | None  # the NPU generation it is built for (None: baseline, CPU only)
    quant: QuantSpec | None = None
    # An integer route AMD documents for CNNs, not transformers: built on request only.
    experimental: bool = False

    @property
    def cpu_only(self) -> bool:
        """Built for ONNX Runtime's CPU execution provider: compiled for no NPU, released as a
        bundle alone."""
        return self.npu_column is None

    @property
    def bf16_flow(self) -> bool:
        """Compiled through AMD's BF16 (VAIML) flow: a compiler config file, XDNA2 only."""
        return self.npu_column == BF16_COLUMN

    @property
    def flow(self) -> Flow:
        return Flow.VAIML if self.bf16_flow else Flow.X2_INT

    @property
    def runs_on(self) -> tuple[str, ...]:
        """Compile targets whose NPU runs it (Ryzen AI 1.6+: BF16 models on STX/KRK only)."""
        return () if self.cpu_only else FLOW_TARGETS[self.flow]

    @property
    def description(self) -> str:
        """The model card's and registry's one-line description."""
        family = self.meant_for
        text = f"{self.text} ({family.name}: {family.chips})" if family else self.text
        if self.cpu_only:
            text = f"{text}; {CPU_ONLY_NOTE}"
        return (
            f"{text}; experimental: AMD documents INT8 for CNNs, not transformers"
            if (self.experimental)
            else text
        )


VARIANTS: Mapping[Variant, VariantSpec] = {
    spec.variant: spec
    for spec in (
        VariantSpec(
            Variant.FP32, "float32, not quantized (the accuracy baseline)", BF16_COLUMN, None
        ),
        VariantSpec(
            Variant.A16W8,
            "16-bit activations, 8-bit weights",
            "A16W8",
            XDNA2,
            QuantSpec(A16W8_GRID, "A16W8_QCONFIG", max_wer_delta=1.0),
            experimental=True,
        ),
        VariantSpec(
            Variant.BF16,
            "bfloat16",
            BF16_COLUMN,
            XDNA2,
            QuantSpec(BF16_GRID, "BF16_QCONFIG", max_wer_delta=1.0),
        ),
        VariantSpec(
            Variant.XINT8,
            "8-bit activations and weights, power-of-two scales",
            "XINT8",
            XDNA1,
            QuantSpec(A8W8_GRID, "XINT8_QCONFIG", max_wer_delta=2.0, power_of_two=True),
            experimental=True,
        ),
        VariantSpec(
            Variant.A8W8,
            "8-bit activations and weights",
            "A8W8",
            XDNA1,
            QuantSpec(A8W8_GRID, "A8W8_QCONFIG", max_wer_delta=2.0),
            experimental=True,
        ),
        VariantSpec(
            Variant.CPU_INT8,
            "8-bit weights (per channel) and 8-bit activations quantized at run time, for ONNX "
            "Runtime's CPU provider: for machines whose NPU cannot take a float model "
            "(XDNA1: Phoenix, Hawk Point) or that have none",
            None,
            None,
            QuantSpec(A8W8_GRID, None, max_wer_delta=1.0, backend="ort", dynamic=True),
        ),
    )
}
QUANTIZED: Mapping[Variant, QuantSpec] = {
    variant: spec.quant for variant, spec in VARIANTS.items() if spec.quant is not None
}
# Built by default: AMD's transformer route (fp32 through VAIML, bf16 in Cast form) and the
# CPU artifact.
DEFAULT_VARIANTS = tuple(variant for variant, spec in VARIANTS.items() if not spec.experimental)
BASELINE = Variant.FP32  # every variant's WER and speed are measured against it, on CPU
