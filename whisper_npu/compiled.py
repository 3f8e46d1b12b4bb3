"""The compile stage's records: compile_report.json (what was compiled, from which bundle, and
the partition forecast) and provider_options.json (the EP's options per graph).

They live apart from the stage, which needs onnx, because the runtime opens them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from whisper_npu.layout import COMPILE_FILE, PROVIDER_OPTIONS_FILE
from whisper_npu.record import Record, Sha256
from whisper_npu.variants import Flow, Target, Variant

Count = Annotated[int, Field(ge=0)]


class CpuOps(Record):
    """Nodes of one op type the forecast leaves on the CPU, and on what grounds."""

    op_type: str
    reason: str
    count: Count
    nodes: list[str]


class GraphWork(Record):
    """One call of a graph: multiply-accumulates (MatMul, Gemm, Conv) and the bytes it reads and
    writes: every weight once, and each input and output tensor by name."""

    macs: Count
    weight_bytes: Count
    inputs: dict[str, Count]
    outputs: dict[str, Count]

    @property
    def io_bytes(self) -> int:
        return sum(self.inputs.values()) + sum(self.outputs.values())


class GraphPlacement(Record):
    """One graph's forecast placement under one flow (pipeline.npu.forecast)."""

    optimized: bool  # ONNX Runtime's basic optimizations applied: the graph the EP is handed
    opset: int
    nodes: Count
    op_counts: dict[str, Count]
    npu_nodes: Count
    coverage: float
    npu_subgraphs: Count
    cpu_islands: Count
    boundary_nodes: Count  # x2-int: Q/DQ at the graph's inputs and outputs, on the CPU
    cpu_ops: list[CpuOps]
    unverified: list[str]  # op types no public source shows on the NPU under this flow
    non_static: list[str]
    control_flow: list[str]
    work: GraphWork
    clean: bool


class WindowWork(Record):
    """One 30 s window: one encoder call and `tokens` decoder calls."""

    dispatches: Count
    macs: Count
    weight_bytes: Count
    io_bytes: Count


class TableFigure(Record):
    """The secondary figure: AMD's operator table for the column used as an allowlist."""

    column: str | None
    encoder_subgraphs: Count
    decoder_subgraphs: Count
    coverage: dict[str, float]
    dispatches_per_window: Count


class Forecast(Record):
    """Both graphs' placement under the variant's flow, the work and dispatches of one 30 s
    window, and the table figure beside it."""

    flow: Flow
    npu_dtype: str | None
    no_npu_reason: str | None
    sources: list[str]  # keys of data/npu_flows.json's sources the flow's rules rest on
    encoder: GraphPlacement
    decoder: GraphPlacement
    tokens_per_window: Count
    dispatches_per_window: Count
    window: WindowWork
    table: TableFigure
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
    # From the report's subgraphStat, which AMD's documented examples do not show: None there.
    npu_subgraphs: Count | None = None


class OpsTableSource(Record):
    ryzen_ai_version: str
    source: str


class PublishedPartition(Record):
    """What AMD's EP reported for its whisper-base form (RyzenAI-SW Demos/ASR/Whisper/README)."""

    model: str
    encoder_npu_ops: int
    encoder_cpu_ops: int
    encoder_subgraphs: int
    decoder_npu_ops: int
    decoder_cpu_ops: int
    decoder_subgraphs: int


AMD_WHISPER_BASE = PublishedPartition(
    model="openai/whisper-base",
    encoder_npu_ops=225,
    encoder_cpu_ops=0,
    encoder_subgraphs=1,
    decoder_npu_ops=341,
    decoder_cpu_ops=24,
    decoder_subgraphs=2,
)


class AmdFormForecast(Record):
    """amd_form.json: the configured model in AMD's demo form, forecast under VAIML
    (pipeline.npu.amd_form)."""

    model: str  # model.source it was built from
    static_dims: dict[str, int]
    decoder_positions: int  # positions each decoder call recomputes (no KV cache)
    forecast: Forecast
    published: PublishedPartition


# The project's origin: the first NPU path for Whisper made 2679 host→NPU calls per inference.
SEED_DISPATCHES = 2679


class EpIdentity(Record):
    """The VitisAI EP that compiled a directory (and made its cache): AMD does not reuse a
    cache across EP or driver versions, so the runtime compares it with the installed one."""

    ryzen_ai: str | None  # the Ryzen AI release, as whisper_npu.host read it
    how: str  # what the release was read from
    onnxruntime: str  # "onnxruntime 1.23.3 from onnxruntime-vitisai"


class CompileReport(Record):
    """compile_report.json: `bundle` is the bundle's path relative to the compiled directory,
    `bundle_sha256` the bundle.json it was compiled from. A CPU-only variant's report says so
    in `cpu_only` and has no target, forecast or EP report: nothing of it is compiled."""

    variant: Variant
    target: Target | None
    ryzen_ai_version: str
    ops_table: OpsTableSource
    ep_available: bool
    providers: list[str]
    bundle: str
    bundle_sha256: Sha256
    budget_met: bool
    # Why the runtime runs it on the CPU by design (a CPU-only variant); None: an NPU variant.
    cpu_only: str | None = None
    forecast: Forecast | None  # null in a CPU-only variant's report alone
    report: dict[str, EpReport | None] | None
    disagreements: list[str]  # the EP's report against the forecast (empty without the EP)
    # Side by side with this forecast: the seed's NPU path and AMD's demo form of the model.
    seed_dispatches: int
    amd_demo_form: AmdFormForecast | None
    # The EP that compiled it and made npu/cache; absent where the EP was not installed.
    ep: EpIdentity | None = None

    @field_validator("forecast")
    @classmethod
    def _forecast_unless_cpu_only(
        cls, forecast: Forecast | None, info: ValidationInfo
    ) -> Forecast | None:
        if forecast is None and not info.data.get("cpu_only"):
            raise PydanticCustomError(
                "forecast", "Input should be a partition forecast (null for a CPU-only variant)"
            )
        return forecast


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


def _cpu_forecast(graph: GraphPlacement) -> set[str]:
    return {row.op_type.rpartition(".")[2] for row in graph.cpu_ops}


def moved_to_cpu(forecast: Forecast, reports: Mapping[str, EpReport | None]) -> list[str]:
    """What the EP put on the CPU that the forecast placed on the NPU, one line per graph: what
    `--device npu` refuses to run."""
    found = []
    for name, report in reports.items():
        if report is None:
            continue
        graph = forecast.graph(name)
        surprise = sorted(set(report.cpu_op_types) - _cpu_forecast(graph))
        extra = report.cpu_nodes - (graph.nodes - graph.npu_nodes)
        if surprise or extra > 0:
            what = f"{surprise}" if surprise else f"{extra} more nodes than forecast"
            found.append(f"{name}: the EP put {what} on the CPU, the forecast had them on the NPU")
    return found


def disagreements(forecast: Forecast, reports: Mapping[str, EpReport | None] | None) -> list[str]:
    """Where the EP's own partition reports and the forecast differ, one line each: what turns
    the forecast into a measured one on the first machine with the EP."""
    found = []
    for name, report in (reports or {}).items():
        if report is None:
            found.append(f"{name}: the EP wrote no partition report")
            continue
        graph = forecast.graph(name)
        if report.npu_nodes != graph.npu_nodes or report.cpu_nodes != graph.nodes - graph.npu_nodes:
            found.append(
                f"{name}: EP placed {report.npu_nodes} NPU / {report.cpu_nodes} CPU nodes, "
                f"forecast {graph.npu_nodes} / {graph.nodes - graph.npu_nodes}"
            )
        if report.npu_subgraphs is not None and report.npu_subgraphs != graph.npu_subgraphs:
            found.append(
                f"{name}: EP made {report.npu_subgraphs} NPU subgraphs, "
                f"forecast {graph.npu_subgraphs}"
            )
        if surprise := sorted(set(report.cpu_op_types) - _cpu_forecast(graph)):
            found.append(f"{name}: EP put {surprise} on the CPU, forecast had them on the NPU")
    return found
