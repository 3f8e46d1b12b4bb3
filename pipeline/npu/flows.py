"""Where each VitisAI compile flow puts a node, by the public evidence in data/npu_flows.json.

AMD's operator table is not VAIML's partitioner: AMD's own Whisper-base encoder runs
LayerNormalization and Softmax on the NPU in one subgraph although the table's BF16 column lists
neither. So each flow places nodes by what AMD has shown for it, and says on what grounds:

- `vaiml` (fp32, bf16 in Cast form; STX/KRK): a node with an integer or bool tensor is CPU; a
  float node whose op AMD's Whisper partition shows on VAIML is NPU ("shown"), one the BF16
  column lists is NPU ("documented"), any other is CPU and **unverified**.
- `x2-int` (Quark A16W8 / A8W8 / XINT8 QDQ graphs): Q/DQ node units. A compute node in the
  variant's column whose activations come through DequantizeLinear and whose output leaves
  through QuantizeLinear is NPU with its Q/DQ; a float node between units is CPU; quantize and
  dequantize nodes at the graph's own inputs and outputs are "boundary": on the CPU, as in AMD's
  clean INT8 partitions, without splitting the graph.
- `table`: AMD's table as an allowlist for the column, the secondary figure.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from importlib.resources import files
from typing import Any

import onnx

from pipeline.npu.graph_check import DEQUANTIZE, QUANTIZE, npu_ops, table_op
from whisper_npu.variants import BF16_COLUMN, Flow

FLOWS_FILE = "npu_flows.json"
FLOAT_TYPES = frozenset(
    {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
)


class Reason(StrEnum):
    """Why a node is where it is: the grounds the forecast states for each placement."""

    SHOWN = "shown on the NPU in AMD's Whisper partition"
    DOCUMENTED = "listed in AMD's operator table"
    NOT_FLOAT = "integer or bool tensor"
    UNVERIFIED = "unverified: no public source shows this op on VAIML"
    UNIT = "in a Q/DQ unit"
    FLOAT_ISLAND = "float between Q/DQ units"
    BOUNDARY = "graph-boundary quantize/dequantize"
    OUTSIDE = "outside AMD's operator table column"


ON_NPU = frozenset({Reason.SHOWN, Reason.DOCUMENTED, Reason.UNIT})


@cache
def evidence() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(
        files("pipeline.npu").joinpath("data", FLOWS_FILE).read_text(encoding="utf-8")
    )
    return data


@dataclass(frozen=True)
class GraphView:
    """The nodes a flow places, with each tensor's element type and who makes and uses it."""

    nodes: list[onnx.NodeProto]
    types: dict[str, int]
    constants: frozenset[str]  # initializers and tensors folded from them: data, not work
    graph_inputs: frozenset[str]
    graph_outputs: frozenset[str]

    def producers(self) -> dict[str, onnx.NodeProto]:
        return {out: node for node in self.nodes for out in node.output if out}

    def consumers(self) -> dict[str, list[onnx.NodeProto]]:
        found: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in self.nodes:
            for name in node.input:
                found[name].append(node)
        return found

    def activations(self, node: onnx.NodeProto) -> list[str]:
        """A node's tensor inputs that are computed, not constant data."""
        return [name for name in node.input if name and name not in self.constants]

    def float_only(self, node: onnx.NodeProto) -> bool:
        tensors = [*self.activations(node), *(name for name in node.output if name)]
        return all(self.types.get(name, onnx.TensorProto.FLOAT) in FLOAT_TYPES for name in tensors)


def _vaiml(view: GraphView) -> list[Reason]:
    rules = evidence()["flows"]["vaiml"]
    shown = frozenset(rules["npu_when_float"]["ops"])
    documented = npu_ops(rules["npu_when_float_documented"]["column"])
    reasons = []
    for node in view.nodes:
        if not view.float_only(node):
            reasons.append(Reason.NOT_FLOAT)
        elif node.op_type in shown and node.domain in ("", "ai.onnx"):
            reasons.append(Reason.SHOWN)
        elif table_op(node) in documented:
            reasons.append(Reason.DOCUMENTED)
        else:
            reasons.append(Reason.UNVERIFIED)
    return reasons


def _x2_int(view: GraphView, column: str) -> list[Reason]:
    allowed = npu_ops(column)
    producers, consumers = view.producers(), view.consumers()

    def role(node: onnx.NodeProto | None) -> str | None:
        op = table_op(node) if node is not None else None
        return op if op in (QUANTIZE, DEQUANTIZE) else None

    def users(node: onnx.NodeProto) -> list[onnx.NodeProto]:
        return [user for out in node.output if out for user in consumers[out]]

    unit = {
        id(node): table_op(node) in allowed
        and all(role(producers.get(name)) == DEQUANTIZE for name in view.activations(node))
        and bool(users(node))
        and all(role(user) == QUANTIZE for user in users(node))
        for node in view.nodes
        if role(node) is None
    }
    fused_dq = {
        id(node): bool(users(node)) and all(unit.get(id(user), False) for user in users(node))
        for node in view.nodes
        if role(node) == DEQUANTIZE
    }

    def inner_q(node: onnx.NodeProto) -> bool:
        """A QuantizeLinear inside the NPU: of a unit's output, or feeding only fused DQs."""
        if node.input[0] in view.graph_inputs:
            return False
        source = producers.get(node.input[0])
        return (source is not None and unit.get(id(source), False)) or (
            bool(users(node)) and all(fused_dq.get(id(u), False) for u in users(node))
        )

    # A DQ → Q requantization whose Q is inside (e.g. a constant dequantized and quantized
    # again to another scale, as Quark writes for shared zero biases) is inside too.
    for node in view.nodes:
        if role(node) == DEQUANTIZE and not fused_dq[id(node)] and users(node):
            fused_dq[id(node)] = all(
                unit.get(id(u), False) or (role(u) == QUANTIZE and inner_q(u)) for u in users(node)
            )
    reasons = []
    for node in view.nodes:
        kind = role(node)
        if kind is None:
            inner, at_edge = unit[id(node)], False
        elif kind == DEQUANTIZE:
            inner = fused_dq[id(node)]
            at_edge = any(out in view.graph_outputs for out in node.output)
        else:
            at_edge = node.input[0] in view.graph_inputs
            inner = inner_q(node)
        reasons.append(
            Reason.UNIT if inner else Reason.BOUNDARY if at_edge else Reason.FLOAT_ISLAND
        )
    return reasons


def _table(view: GraphView, column: str | None) -> list[Reason]:
    allowed = npu_ops(column) if column else frozenset()
    return [
        Reason.DOCUMENTED if table_op(node) in allowed else Reason.OUTSIDE for node in view.nodes
    ]


def place(view: GraphView, flow: Flow, column: str | None) -> list[Reason]:
    """Each node's placement and its grounds, in node order."""
    if flow is Flow.VAIML:
        return _vaiml(view)
    if flow is Flow.X2_INT:
        if column is None or column == BF16_COLUMN:
            raise ValueError(f"the x2-int flow needs an integer column, not {column}")
        return _x2_int(view, column)
    return _table(view, column)


def sources_of(flow: Flow) -> list[str]:
    """The keys of the sources a flow's rules rest on, for the report."""
    rules = evidence()["flows"][flow.value]
    found = set(rules.get("sources", []))
    for rule in rules.values():
        if isinstance(rule, dict):
            found.update(rule.get("sources", []))
    return sorted(found)


def placed_on_npu(reasons: Sequence[Reason]) -> list[bool]:
    return [reason in ON_NPU for reason in reasons]
