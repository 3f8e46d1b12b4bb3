"""How the VitisAI EP would partition a graph, forecast without the EP.

The graph forecast is the one the EP is handed: ONNX Runtime applies its basic optimizations
(constant folding, MatMul+Add → Gemm, …) before any provider partitions, and after them AMD's
documented Whisper-base form has exactly the 225 encoder and 365 decoder operators AMD's EP
reports. Each node is then placed by the variant's flow (pipeline/npu/flows.py) and each maximal
run of NPU nodes becomes one NPU subgraph: one host→NPU dispatch per graph call.

Runs follow the data flow: every node gets a phase, NPU phases even and CPU phases odd, one
later than a producer on the other device and as late as its consumers allow; the NPU subgraphs
are the connected groups of NPU nodes sharing a phase. So no subgraph has a path that leaves for
the CPU and comes back, which the EP could not run as one call either. A 30 s window costs one
encoder call and one decoder call per token.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from pipeline.npu.flows import GraphView, Reason, place, placed_on_npu, sources_of
from pipeline.npu.graph_check import (
    CONTROL_FLOW,
    DEQUANTIZE,
    QUANTIZE,
    infer_shapes,
    load_graph,
    loadable_graph,
    non_static,
    opset_of,
    table_op,
)
from whisper_npu.compiled import (
    CpuOps,
    Forecast,
    GraphPlacement,
    GraphWork,
    TableFigure,
    WindowWork,
)
from whisper_npu.errors import UserError
from whisper_npu.layout import graph_file
from whisper_npu.record import Record
from whisper_npu.variants import BF16_COLUMN, FLOW_TARGETS, VARIANTS, Flow, Variant
from whisper_npu.whisper_io import GRAPHS

NAMED_PER_OP = 5  # nodes named per op type in messages (all are in the JSON)
OPTIMIZED_WEIGHTS = "weights.bin"


def optimized(path: Path, custom_ops: str | None = None) -> tuple[onnx.ModelProto, bool]:
    """The graph after ONNX Runtime's basic optimizations, as providers receive it; the graph as
    stored (and False) when ONNX Runtime cannot load it for an operator of a domain its library
    was not given for. Any other load failure is a UserError: the EP could not load it either,
    and a forecast of it would read as clean."""
    import onnxruntime as ort

    stored = loadable_graph(path)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    if custom_ops:
        options.register_custom_ops_library(custom_ops)
    with tempfile.TemporaryDirectory() as scratch:
        target = Path(scratch) / "optimized.onnx"
        options.optimized_model_filepath = str(target)
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", OPTIMIZED_WEIGHTS
        )
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_min_size_in_bytes", "1024"
        )
        try:
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            if foreign_domains(stored):
                return stored, False
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            raise UserError(f"{path}: not loadable by ONNX Runtime ({lines[0][:200]})") from None
        return load_graph(target), True


def foreign_domains(model: onnx.ModelProto) -> list[str]:
    """Operator domains ONNX Runtime knows only from a custom-op library (Quark's, say)."""
    known = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
    return sorted({node.domain for node in model.graph.node} - known)


def _types(inferred: onnx.ModelProto) -> dict[str, int]:
    graph = inferred.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        types[value.name] = value.type.tensor_type.elem_type
    return types


def _shapes(inferred: onnx.ModelProto) -> dict[str, list[int]]:
    graph = inferred.graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    for value in [*graph.input, *graph.output, *graph.value_info]:
        shapes[value.name] = [dim.dim_value for dim in value.type.tensor_type.shape.dim]
    return shapes


def graph_view(model: onnx.ModelProto, inferred: onnx.ModelProto) -> GraphView:
    """The nodes a provider places: constants and what computes from constants alone are data
    (DequantizeLinear of a weight excepted: ONNX Runtime keeps it so the EP sees Q/DQ units)."""
    graph = model.graph
    constant = {init.name for init in graph.initializer}
    nodes = []
    for node in graph.node:
        from_constants = all(not name or name in constant for name in node.input)
        if node.op_type == "Constant" or (from_constants and table_op(node) != DEQUANTIZE):
            constant.update(node.output)
        else:
            nodes.append(node)
    return GraphView(
        nodes=nodes,
        types=_types(inferred),
        constants=frozenset(constant),
        graph_inputs=frozenset(value.name for value in graph.input),
        graph_outputs=frozenset(value.name for value in graph.output),
    )


def _bytes(shape: Sequence[int], elem_type: int) -> int:
    return prod(shape) * onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize


def _macs(node: onnx.NodeProto, shapes: dict[str, list[int]]) -> int:
    """Multiply-accumulates of one MatMul, Gemm or Conv from its static shapes (0 otherwise)."""
    out = shapes.get(node.output[0], [])
    if node.op_type == "MatMul":
        return prod(out) * (shapes.get(node.input[0]) or [0])[-1]
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        first = shapes.get(node.input[0]) or [0, 0]
        return prod(out) * first[0 if trans_a else -1]
    if node.op_type == "Conv":
        weight = shapes.get(node.input[1]) or [0]
        return prod(out) * prod(weight[1:])
    return 0


def graph_work(model: onnx.ModelProto, inferred: onnx.ModelProto) -> GraphWork:
    """What one call computes and moves; shapes are static, so these are exact counts."""
    graph, shapes, types = model.graph, _shapes(inferred), _types(inferred)
    return GraphWork(
        macs=sum(_macs(node, shapes) for node in inferred.graph.node),
        weight_bytes=sum(_bytes(init.dims, init.data_type) for init in graph.initializer),
        inputs={v.name: _bytes(shapes[v.name], types[v.name]) for v in graph.input},
        outputs={v.name: _bytes(shapes[v.name], types[v.name]) for v in graph.output},
    )


def _name(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _edges(nodes: Sequence[onnx.NodeProto]) -> list[list[int]]:
    """Producer indices of each node (inputs made by other nodes)."""
    producer = {out: i for i, node in enumerate(nodes) for out in node.output if out}
    return [[producer[name] for name in node.input if name in producer] for node in nodes]


def phases(nodes: Sequence[onnx.NodeProto], on_npu: Sequence[bool]) -> list[int]:
    """Each node's phase: NPU phases even, CPU phases odd, one phase later across a device
    change, so parity follows.

    First as early as producers allow (ONNX stores nodes in topological order, so one pass
    suffices), then as late as consumers allow: a weight's DequantizeLinear or a Slice of a graph
    input has no producer, and belongs to the run that consumes it, not to phase 0.
    """
    preds = _edges(nodes)
    result: list[int] = []
    for i, producers in enumerate(preds):
        if any(p >= i for p in producers):
            raise UserError(f"node {_name(nodes[i])!r} comes before its inputs' producers")
        start = 0 if on_npu[i] else -1
        result.append(max((result[p] + (on_npu[p] != on_npu[i]) for p in producers), default=start))
    consumers: list[list[int]] = [[] for _ in nodes]
    for i, producers in enumerate(preds):
        for p in producers:
            consumers[p].append(i)
    for i in reversed(range(len(nodes))):
        if consumers[i]:
            result[i] = min(result[c] - (on_npu[c] != on_npu[i]) for c in consumers[i])
    return result


def runs(nodes: Sequence[onnx.NodeProto], on_npu: Sequence[bool]) -> list[list[int]]:
    """Maximal runs of same-device nodes in the same phase, connected by a tensor."""
    phase = phases(nodes, on_npu)
    parent = list(range(len(nodes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, producers in enumerate(_edges(nodes)):
        for p in producers:
            if on_npu[p] == on_npu[i] and phase[p] == phase[i]:
                parent[root(p)] = root(i)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(nodes)):
        groups[root(i)].append(i)
    return list(groups.values())


def _cpu_ops(nodes: Sequence[onnx.NodeProto], reasons: Sequence[Reason]) -> list[CpuOps]:
    by_op: dict[tuple[str, Reason], list[str]] = defaultdict(list)
    for node, reason in zip(nodes, reasons, strict=True):
        if not placed_on_npu([reason])[0]:
            by_op[(_op_key(node), reason)].append(_name(node))
    return [
        CpuOps(op_type=op, reason=reason.value, count=len(names), nodes=names)
        for (op, reason), names in sorted(by_op.items())
    ]


@dataclass(frozen=True)
class LoadedGraph:
    """A graph as the EP would receive it, with its shapes inferred, and what does not depend
    on the flow (its work per call, its non-static tensors) computed once."""

    model: onnx.ModelProto
    inferred: onnx.ModelProto
    view: GraphView
    optimized: bool
    work: GraphWork
    non_static: list[str]

    @classmethod
    def load(cls, path: Path, custom_ops: str | None = None) -> LoadedGraph:
        model, was_optimized = optimized(path, custom_ops)
        inferred = infer_shapes(model)
        return cls(
            model,
            inferred,
            graph_view(model, inferred),
            was_optimized,
            graph_work(model, inferred),
            non_static(inferred.graph),
        )

    def place(self, flow: Flow, column: str | None) -> GraphPlacement:
        """Placement under one flow; boundary Q/DQ sit on the CPU outside any run."""
        nodes = self.view.nodes
        reasons = place(self.view, flow, column)
        inner = [i for i, reason in enumerate(reasons) if reason is not Reason.BOUNDARY]
        on_npu = placed_on_npu([reasons[i] for i in inner])
        groups = runs([nodes[i] for i in inner], on_npu)
        npu_groups = sum(on_npu[group[0]] for group in groups)
        counts: dict[str, int] = defaultdict(int)
        for node in nodes:
            counts[_op_key(node)] += 1
        unverified = sorted(
            {_op_key(n) for n, r in zip(nodes, reasons, strict=True) if r is Reason.UNVERIFIED}
        )
        statics, control = (
            self.non_static,
            sorted({node.op_type for node in nodes if node.op_type in CONTROL_FLOW}),
        )
        islands = len(groups) - npu_groups
        return GraphPlacement(
            optimized=self.optimized,
            opset=opset_of(self.model),
            nodes=len(nodes),
            op_counts=dict(sorted(counts.items())),
            npu_nodes=sum(on_npu),
            coverage=sum(on_npu) / len(nodes) if nodes else 1.0,
            npu_subgraphs=npu_groups,
            cpu_islands=islands,
            boundary_nodes=len(nodes) - len(inner),
            cpu_ops=_cpu_ops(nodes, reasons),
            unverified=unverified,
            non_static=statics,
            control_flow=control,
            work=self.work,
            clean=npu_groups == 1 and islands == 0 and not (unverified or statics or control),
        )


def has_qdq(view: GraphView) -> bool:
    return any(table_op(node) in (QUANTIZE, DEQUANTIZE) for node in view.nodes)


def window(
    encoder: GraphPlacement, decoder: GraphPlacement, tokens: int, dispatches: int
) -> WindowWork:
    return WindowWork(
        dispatches=dispatches,
        macs=encoder.work.macs + tokens * decoder.work.macs,
        weight_bytes=encoder.work.weight_bytes + tokens * decoder.work.weight_bytes,
        io_bytes=encoder.work.io_bytes + tokens * decoder.work.io_bytes,
    )


def no_npu_reason(flow: Flow, target: str) -> str | None:
    if target in FLOW_TARGETS[flow]:
        return None
    chips = "/".join(chip.upper() for chip in FLOW_TARGETS[flow])
    return f"the {flow} flow runs on {chips} only, not on {target}"


def forecast_pair(
    graphs: dict[str, LoadedGraph], flow: Flow, column: str | None, target: str, tokens: int
) -> Forecast:
    """An encoder and a decoder under one flow, with the table figure beside it."""
    reason = no_npu_reason(flow, target)
    placed = {name: graph.place(flow, column) for name, graph in graphs.items()}
    table = {name: graph.place(Flow.TABLE, column) for name, graph in graphs.items()}
    encoder, decoder = placed["encoder"], placed["decoder"]
    dispatches = 0 if reason else encoder.npu_subgraphs + tokens * decoder.npu_subgraphs
    return Forecast(
        flow=flow,
        npu_dtype=None if reason else column,
        no_npu_reason=reason,
        sources=sources_of(flow),
        encoder=encoder,
        decoder=decoder,
        tokens_per_window=tokens,
        dispatches_per_window=dispatches,
        window=window(encoder, decoder, tokens, dispatches),
        table=TableFigure(
            column=column,
            encoder_subgraphs=table["encoder"].npu_subgraphs,
            decoder_subgraphs=table["decoder"].npu_subgraphs,
            coverage={name: figure.coverage for name, figure in table.items()},
            dispatches_per_window=table["encoder"].npu_subgraphs
            + tokens * table["decoder"].npu_subgraphs,
        ),
        clean=reason is None and encoder.clean and decoder.clean,
    )


def forecast_bundle(
    bundle_dir: Path,
    variant: Variant,
    target: str,
    tokens_per_window: int,
    custom_ops: str | None = None,
) -> Forecast:
    """Both graphs of a bundle under the flow AMD documents for its variant."""
    spec = VARIANTS[variant]
    graphs = {
        name: LoadedGraph.load(Path(bundle_dir) / graph_file(name), custom_ops) for name in GRAPHS
    }
    return forecast_pair(graphs, spec.flow, spec.npu_column, target, tokens_per_window)


def default_column(flow: Flow, view: GraphView) -> str:
    """The table column a graph of unknown origin is read against: BF16 for VAIML, A16W8 when
    its quantizers write 16-bit integers, else A8W8."""
    if flow is Flow.VAIML or not has_qdq(view):
        return BF16_COLUMN
    wide = {onnx.TensorProto.INT16, onnx.TensorProto.UINT16}
    quantized = (
        view.types.get(node.output[0]) for node in view.nodes if table_op(node) == QUANTIZE
    )
    return "A16W8" if any(kind in wide for kind in quantized) else "A8W8"


class FileForecast(Record):
    """`whisper-npu forecast` of one ONNX file of any origin."""

    path: str
    flow: Flow
    column: str
    no_npu_reason: str | None
    placement: GraphPlacement
    clean: bool


def forecast_file(path: Path, flow: Flow | None, column: str | None, target: str) -> FileForecast:
    """One graph under `flow` (default: x2-int if it holds Q/DQ nodes, else vaiml) and
    `column` (default: read from the graph, see `default_column`)."""
    if not Path(path).is_file():
        raise UserError(f"{path}: no such ONNX file")
    try:
        graph = LoadedGraph.load(Path(path))
    except (DecodeError, onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise UserError(f"{path}: not a readable ONNX graph ({exc})") from None
    flow = flow or (Flow.X2_INT if has_qdq(graph.view) else Flow.VAIML)
    column = column or default_column(flow, graph.view)
    if flow is Flow.X2_INT and column == BF16_COLUMN:
        raise UserError(f"{path}: the x2-int flow takes an integer column, not {column}")
    placement = graph.place(flow, column)
    reason = no_npu_reason(flow, target)
    return FileForecast(
        path=str(path),
        flow=flow,
        column=column,
        no_npu_reason=reason,
        placement=placement,
        clean=reason is None and placement.clean,
    )


def describe_split(forecast: Forecast) -> str:
    """One line naming why the graphs would split: CPU nodes and their grounds, per graph."""
    if forecast.no_npu_reason:
        return forecast.no_npu_reason
    parts = [f"{name}: {problems(forecast.graph(name))}" for name in GRAPHS]
    return " | ".join(part for part in parts if not part.endswith(": "))


def problems(graph: GraphPlacement) -> str:
    ops = [
        f"{row.op_type} x{row.count} [{row.reason}] ({', '.join(row.nodes[:NAMED_PER_OP])}"
        + (", …)" if row.count > NAMED_PER_OP else ")")
        for row in graph.cpu_ops
        if row.reason != Reason.BOUNDARY.value
    ]
    if graph.non_static:
        ops.append(f"non-static tensors {graph.non_static[:NAMED_PER_OP]}")
    if graph.control_flow:
        ops.append(f"control flow {graph.control_flow}")
    return "; ".join(ops)


def graph_line(label: str, graph: GraphPlacement, flow: Flow, column: str | None) -> str:
    cpu = ", ".join(
        f"{row.op_type} x{row.count} ({row.reason})"
        for row in graph.cpu_ops
        if row.reason != Reason.BOUNDARY.value
    )
    return (
        f"{label}: {graph.coverage:.1%} of {graph.nodes} nodes on the NPU ({flow}, {column}), "
        f"{graph.npu_subgraphs} NPU subgraph(s), {graph.cpu_islands} CPU island(s), "
        f"{graph.work.macs / 1e6:,.1f} M MACs per call"
        + (f"; CPU: {cpu}" if cpu else "")
        + ("" if graph.optimized else "; forecast on the stored graph (ORT could not load it)")
    )


def summary_lines(variant: str, forecast: Forecast) -> list[str]:
    """A readable line per graph, one for the window, one for the table figure."""
    lines = [
        graph_line(f"{variant} {name}", forecast.graph(name), forecast.flow, forecast.npu_dtype)
        for name in GRAPHS
    ]
    no_npu = forecast.no_npu_reason
    verdict = f"no NPU path: {no_npu}" if no_npu else "clean" if forecast.clean else "would split"
    win, table = forecast.window, forecast.table
    lines.append(
        f"{variant} per 30 s window: {forecast.encoder.npu_subgraphs} + "
        f"{forecast.tokens_per_window} tokens x {forecast.decoder.npu_subgraphs} = "
        f"{forecast.dispatches_per_window} dispatches ({verdict}); {win.macs / 1e9:,.2f} G MACs, "
        f"{win.weight_bytes / 1e6:,.0f} MB weights + {win.io_bytes / 1e6:,.0f} MB in/out read"
    )
    lines.append(
        f"{variant} table figure ({table.column}): {table.encoder_subgraphs} + "
        f"{forecast.tokens_per_window} x {table.decoder_subgraphs} = "
        f"{table.dispatches_per_window} dispatches"
    )
    return lines
