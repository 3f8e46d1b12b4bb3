"""How the VitisAI EP would partition a bundle, forecast from its graphs without the EP.

The EP places every node either on the NPU (its op is in AMD's table for the variant's dtype)
or on the CPU, and each maximal run of NPU nodes becomes one NPU subgraph: one host→NPU
dispatch per graph call. Runs follow the data flow: every node gets a phase, NPU phases even and
CPU phases odd, one later than a producer on the other device and as late as its consumers
allow; the NPU subgraphs are the connected groups of NPU nodes sharing a phase. So no subgraph
has a path that leaves for the CPU and comes back, which the EP could not run as one call
either.

Constant nodes and initializers are data, not work: they are not placed and do not connect
nodes; neither is a node computing from constants alone, which ONNX Runtime's basic
optimizations fold before the graph is partitioned (except DequantizeLinear, which it keeps so
the EP sees whole Q/DQ units). A 30 s window costs one encoder call and one decoder call per
token, so its dispatches are encoder subgraphs + tokens * decoder subgraphs.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import onnx

from pipeline.errors import UserError
from pipeline.layout import graph_file
from pipeline.npu.graph_check import (
    CONTROL_FLOW,
    DEQUANTIZE,
    infer_shapes,
    load_graph,
    non_static,
    npu_ops,
    opset_of,
    table_op,
)
from pipeline.npu.vitisai import no_npu_reason, npu_column
from pipeline.runtime.whisper_io import GRAPHS
from pipeline.variants import Variant

NAMED_PER_OP = 5  # offending nodes named per op type in messages (all are in the JSON)


@dataclass(frozen=True)
class GraphForecast:
    opset: int
    nodes: int  # placed nodes
    folded: int  # Constant nodes and nodes computing from constants alone
    op_counts: dict[str, int]
    npu_nodes: int
    coverage: float
    npu_subgraphs: int
    cpu_islands: int
    outside_table: list[dict[str, Any]]  # per op type: {"op_type", "count", "nodes"}
    non_static: list[str]
    control_flow: list[str]

    @property
    def clean(self) -> bool:
        return (
            self.npu_subgraphs == 1
            and self.cpu_islands == 0
            and not self.non_static
            and not self.control_flow
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "clean": self.clean}


def placed_nodes(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The nodes the EP places: all but constants and what folds into constants."""
    constant = {init.name for init in graph.initializer}
    placed = []
    for node in graph.node:
        from_constants = all(not name or name in constant for name in node.input)
        if node.op_type == "Constant" or (from_constants and table_op(node) != DEQUANTIZE):
            constant.update(node.output)
        else:
            placed.append(node)
    return placed


def _op_key(node: onnx.NodeProto) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _name(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]


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


def _outside(nodes: Sequence[onnx.NodeProto], on_npu: Sequence[bool]) -> list[dict[str, Any]]:
    by_op: dict[str, list[str]] = defaultdict(list)
    for node, npu in zip(nodes, on_npu, strict=True):
        if not npu:
            by_op[_op_key(node)].append(_name(node))
    return [
        {"op_type": op, "count": len(names), "nodes": names} for op, names in sorted(by_op.items())
    ]


def forecast_graph(path: Path, column: str | None) -> GraphForecast:
    """Placement of one graph for one column of AMD's table (None: nothing goes to the NPU)."""
    model = load_graph(path)
    nodes = placed_nodes(model.graph)
    allowed = npu_ops(column) if column else frozenset()
    on_npu = [table_op(node) in allowed for node in nodes]
    groups = runs(nodes, on_npu)
    npu_groups = sum(on_npu[group[0]] for group in groups)
    counts: dict[str, int] = defaultdict(int)
    for node in nodes:
        counts[_op_key(node)] += 1
    return GraphForecast(
        opset=opset_of(model),
        nodes=len(nodes),
        folded=len(model.graph.node) - len(nodes),
        op_counts=dict(sorted(counts.items())),
        npu_nodes=sum(on_npu),
        coverage=sum(on_npu) / len(nodes) if nodes else 1.0,
        npu_subgraphs=npu_groups,
        cpu_islands=len(groups) - npu_groups,
        outside_table=_outside(nodes, on_npu),
        non_static=non_static(infer_shapes(model).graph),
        control_flow=sorted({node.op_type for node in nodes if node.op_type in CONTROL_FLOW}),
    )


def forecast_bundle(
    bundle_dir: Path, variant: Variant, target: str, tokens_per_window: int
) -> dict[str, Any]:
    """Both graphs' placement, the dispatches of one 30 s window, and whether it is clean."""
    column = npu_column(variant, target)
    graphs = {name: forecast_graph(Path(bundle_dir) / graph_file(name), column) for name in GRAPHS}
    encoder, decoder = graphs["encoder"], graphs["decoder"]
    reason = no_npu_reason(variant, target)
    return {
        "npu_dtype": column,
        "no_npu_reason": reason,
        **{name: graph.to_json() for name, graph in graphs.items()},
        "tokens_per_window": tokens_per_window,
        "dispatches_per_window": encoder.npu_subgraphs + tokens_per_window * decoder.npu_subgraphs,
        "clean": reason is None and all(graph.clean for graph in graphs.values()),
    }


def describe_split(forecast: dict[str, Any]) -> str:
    """One line naming why the bundle would split: nodes outside the table, per graph."""
    if forecast["no_npu_reason"]:
        return str(forecast["no_npu_reason"])
    parts = []
    for name in GRAPHS:
        graph = forecast[name]
        ops = [
            f"{row['op_type']} x{row['count']} ({', '.join(row['nodes'][:NAMED_PER_OP])}"
            + (", …)" if row["count"] > NAMED_PER_OP else ")")
            for row in graph["outside_table"]
        ]
        if graph["non_static"]:
            ops.append(f"non-static tensors {graph['non_static'][:NAMED_PER_OP]}")
        if graph["control_flow"]:
            ops.append(f"control flow {graph['control_flow']}")
        if ops:
            parts.append(f"{name}: " + "; ".join(ops))
    return " | ".join(parts)


def summary_lines(variant: str, forecast: dict[str, Any]) -> list[str]:
    """A readable line per graph and one for the window's dispatches."""
    no_npu = forecast["no_npu_reason"]
    lines = []
    for name in GRAPHS:
        graph = forecast[name]
        outside = ", ".join(f"{r['op_type']} x{r['count']}" for r in graph["outside_table"])
        lines.append(
            f"{variant} {name}: {graph['coverage']:.1%} of {graph['nodes']} nodes on the NPU "
            f"({forecast['npu_dtype'] or 'no NPU path'}), {graph['npu_subgraphs']} NPU "
            f"subgraph(s), {graph['cpu_islands']} CPU island(s)"
            + (f"; outside AMD's table: {outside}" if outside and not no_npu else "")
        )
    verdict = (
        f"no NPU path: {no_npu}" if no_npu else "clean" if forecast["clean"] else "would split"
    )
    lines.append(
        f"{variant} dispatches per 30 s window: {forecast['encoder']['npu_subgraphs']} + "
        f"{forecast['tokens_per_window']} tokens x {forecast['decoder']['npu_subgraphs']} = "
        f"{forecast['dispatches_per_window']} ({verdict})"
    )
    return lines
