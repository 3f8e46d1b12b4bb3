"""The compile stage's records: compile_report.json (what was compiled, from which bundle, and
the partition forecast) and provider_options.json (the EP's options per graph).

They live apart from the stage, which needs onnx, because the runtime opens them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field

from pipeline.config import Target
from pipeline.layout import COMPILE_FILE, PROVIDER_OPTIONS_FILE
from pipeline.record import Record, Sha256
from pipeline.variants import Variant

Count = Annotated[int, Field(ge=0)]


class OutsideOps(Record):
    """Nodes of one op type outside AMD's NPU table."""

    op_type: str
    count: Count
    nodes: list[str]


class GraphPlacement(Record):
    """One graph's forecast placement (forecast.GraphForecast as written)."""

    opset: int
    nodes: Count
    folded: Count
    op_counts: dict[str, Count]
    npu_nodes: Count
    coverage: float
    npu_subgraphs: Count
    cpu_islands: Count
    outside_table: list[OutsideOps]
    non_static: list[str]
    control_flow: list[str]
    clean: bool


class Forecast(Record):
    """Both graphs' placement and the dispatches of one 30 s window."""

    npu_dtype: str | None
    no_npu_reason: str | None
    encoder: GraphPlacement
    decoder: GraphPlacement
    tokens_per_window: Count
    dispatches_per_window: Count
    clean: bool

    def graph(self, name: str) -> GraphPlacement:
        return self.encoder if name == "encoder" else self.decoder


class Device(Record):
    nodes: Count
    op_types: list[str]


class EpReport(Record):
    """The VitisAI EP's own partition report of one graph (vitisai.parse_ep_report)."""

    devices: dict[str, Device]
    npu_nodes: Count
    cpu_nodes: Count
    coverage: float
    cpu_op_types: list[str]


class OpsTableSource(Record):
    ryzen_ai_version: str
    source: str


class CompileReport(Record):
    """compile_report.json: `bundle` is the bundle's path relative to the compiled directory,
    `bundle_sha256` the bundle.json it was compiled from."""

    variant: Variant
    target: Target
    ryzen_ai_version: str
    ops_table: OpsTableSource
    ep_available: bool
    providers: list[str]
    bundle: str
    bundle_sha256: Sha256
    budget_met: bool
    forecast: Forecast
    report: dict[str, EpReport | None] | None


class ProviderOptions(Record):
    """provider_options.json: paths relative to the compiled directory (vitisai.resolve_options
    makes them concrete); empty where the chip has no NPU path."""

    encoder: dict[str, str]
    decoder: dict[str, str]

    def graphs(self) -> dict[str, dict[str, str]]:
        return {"encoder": self.encoder, "decoder": self.decoder}


@dataclass(frozen=True)
class CompileRecord:
    """A compiled directory's two records, read and written together."""

    report: CompileReport
    options: ProviderOptions

    @classmethod
    def load(cls, root: Path) -> CompileRecord:
        root = Path(root)
        return cls(
            CompileReport.read(root / COMPILE_FILE),
            ProviderOptions.read(root / PROVIDER_OPTIONS_FILE),
        )

    def save(self, root: Path) -> None:
        self.report.write(Path(root) / COMPILE_FILE)
        self.options.write(Path(root) / PROVIDER_OPTIONS_FILE)
