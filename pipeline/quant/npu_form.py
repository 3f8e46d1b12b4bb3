"""The fp32 graph rewritten into ops the x2-int (integer) flow takes, before quantizing a
variant listed in `quantize.npu_form`.

AMD's A16W8 operator column lists InstanceNormalization, Gelu, Mul and Add, but neither
LayerNormalization nor Erf. Whisper's graphs have both in every layer, so a quantized a16w8
graph would keep them in float between Q/DQ units, and each such float island splits it into
more NPU subgraphs. Two rewrites remove them:

- **LayerNormalization** over the last axis of a `[1, T, C]` tensor is InstanceNormalization
  of the same tensor read as N=1, T channels, C spatial values (per channel, mean and biased
  variance over C: the same statistics), with unit scale, zero bias and the same epsilon, then
  `Mul gamma`, `Add beta`. Exact in real arithmetic; in float32 the two kernels differ by rounding.
- **GELU** in Erf form, `0.5·x·(1 + erf(x/√2))` (Div → Erf → Add 1 → Mul x → Mul 0.5, in either
  Mul order), becomes one `com.microsoft` Gelu node: the same Erf GELU as one kernel (ONNX
  Runtime's CPU EP runs it; the table's Gelu row is in the A16W8 column, and Quark quantizes it
  as one unit). The opset stays 17: ONNX's own Gelu needs 20.

ONNX Runtime's basic optimizations (what the forecast and the EP see) do not fuse the
LayerNormalization form back: that fusion is an extended-level transform. Matched nodes keep their
names with a suffix, so MatMul/Gemm/Conv names (the sensitivity ranking's keys) are untouched.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class Rewritten:
    """What `npu_form` changed: how many of each pattern it rewrote."""

    layer_norms: int
    gelus: int


class _Graph:
    """Producers, consumers and constant values of one graph, for pattern matching."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.model = model
        self.constants: dict[str, np.ndarray] = {
            init.name: numpy_helper.to_array(init) for init in graph.initializer
        }
        for node in graph.node:
            if node.op_type == "Constant":
                value = next((a for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = numpy_helper.to_array(value.t)
        self.producer = {out: node for node in graph.node for out in node.output if out}
        self.consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in node.input:
                self.consumers[name].append(node)
        self.outputs = {value.name for value in graph.output}

    def scalar(self, name: str) -> float | None:
        value = self.constants.get(name)
        return float(value) if value is not None and value.size == 1 else None

    def only_user(self, name: str, op_type: str) -> onnx.NodeProto | None:
        """The single consumer of `name` if it is an `op_type` and `name` is no graph output."""
        users = self.consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != op_type or name in self.outputs:
            return None
        return users[0]

    def other_input(self, node: onnx.NodeProto, name: str) -> str | None:
        """The other input of a binary node one of whose inputs is `name`."""
        if len(node.input) != 2 or name not in node.input:
            return None
        other: str = node.input[1] if node.input[0] == name else node.input[0]
        return other


def _close(value: float | None, target: float) -> bool:
    return value is not None and abs(value - target) <= 1e-4 * abs(target)


def _match_gelu(g: _Graph, erf: onnx.NodeProto) -> tuple[str, list[onnx.NodeProto], str] | None:
    """(x, matched nodes, output) of an Erf-form GELU around `erf`, or None."""
    scaled = g.producer.get(erf.input[0])
    if scaled is None or scaled.op_type not in ("Div", "Mul"):
        return None
    x, factor = scaled.input[0], g.scalar(scaled.input[1])
    wanted = math.sqrt(2.0) if scaled.op_type == "Div" else 1.0 / math.sqrt(2.0)
    if not _close(factor, wanted) or g.only_user(scaled.output[0], "Erf") is not erf:
        return None
    add = g.only_user(erf.output[0], "Add")
    if add is None or not _close(g.scalar(g.other_input(add, erf.output[0]) or ""), 1.0):
        return None
    first = g.only_user(add.output[0], "Mul")
    if first is None:
        return None
    second = g.only_user(first.output[0], "Mul")
    if second is None:
        return None
    others = {g.other_input(first, add.output[0]), g.other_input(second, first.output[0])}
    halves = [name for name in others if name is not None and _close(g.scalar(name), 0.5)]
    if len(halves) != 1 or others - {halves[0]} != {x}:
        return None
    return x, [scaled, erf, add, first, second], second.output[0]


def _gelu_node(x: str, out: str, name: str) -> onnx.NodeProto:
    return helper.make_node("Gelu", [x], [out], name=name, domain=MS_DOMAIN)


def _declare(model: onnx.ModelProto, names: list[str], shapes: dict[str, list[int]]) -> None:
    """Float value infos for `names`: ONNX shape inference stops at a com.microsoft node, and
    the quantizer refuses tensors it has no type for (everything after the first Gelu)."""
    declared = {value.name for value in [*model.graph.value_info, *model.graph.output]}
    model.graph.value_info.extend(
        helper.make_tensor_value_info(name, TensorProto.FLOAT, shapes.get(name))
        for name in names
        if name not in declared
    )


def _layer_norm_nodes(
    node: onnx.NodeProto, shape: list[int]
) -> tuple[list[onnx.NodeProto], list[TensorProto]] | None:
    """InstanceNormalization x gamma + beta for a LayerNormalization on [1, T, C]'s last axis."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axis = attrs.get("axis", -1)
    if len(shape) != 3 or shape[0] != 1 or axis not in (-1, 2) or min(shape) <= 0:
        return None
    if len(node.output) > 1 and any(node.output[1:]):
        return None  # mean / inv-std-dev outputs are used: no InstanceNormalization equivalent
    prefix = node.name or node.output[0]
    channels = shape[1]
    ones = numpy_helper.from_array(np.ones(channels, np.float32), f"{prefix}/in_scale")
    zeros = numpy_helper.from_array(np.zeros(channels, np.float32), f"{prefix}/in_bias")
    normalized, scaled = f"{prefix}/normalized", f"{prefix}/scaled"
    gamma = node.input[1]
    beta = node.input[2] if len(node.input) > 2 and node.input[2] else None
    out = node.output[0]  # gamma and beta stay as they are: [C], broadcast over the last axis
    nodes = [
        helper.make_node(
            "InstanceNormalization",
            [node.input[0], ones.name, zeros.name],
            [normalized],
            name=f"{prefix}/InstanceNormalization",
            epsilon=float(attrs.get("epsilon", 1e-5)),
        ),
        helper.make_node(
            "Mul", [normalized, gamma], [scaled if beta else out], name=f"{prefix}/Mul_gamma"
        ),
    ]
    if beta:
        nodes.append(helper.make_node("Add", [scaled, beta], [out], name=f"{prefix}/Add_beta"))
    return nodes, [ones, zeros]


def _shapes(model: onnx.ModelProto) -> dict[str, list[int]]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    return {
        value.name: [dim.dim_value for dim in value.type.tensor_type.shape.dim]
        for value in [*graph.input, *graph.output, *graph.value_info]
    }


def npu_form(model: onnx.ModelProto) -> tuple[onnx.ModelProto, Rewritten]:
    """A copy of `model` with every matching LayerNormalization and Erf-GELU rewritten."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = _Graph(model)
    shapes = _shapes(model)
    replaced: dict[int, tuple[list[onnx.NodeProto], list[TensorProto]]] = {}
    dropped: set[int] = set()
    layer_norms = 0
    gelu_outputs: list[str] = []
    for node in model.graph.node:
        if node.op_type == "LayerNormalization" and node.domain in ("", "ai.onnx"):
            found = _layer_norm_nodes(node, shapes.get(node.input[0], []))
            if found is not None:
                replaced[id(node)] = found
                layer_norms += 1
        elif node.op_type == "Erf":
            match = _match_gelu(g, node)
            if match is not None:
                x, matched, out = match
                name = f"{matched[-1].name or out}/Gelu"
                # The new node goes where the last matched node was: after x and every input.
                replaced[id(matched[-1])] = [_gelu_node(x, out, name)], []
                dropped.update(id(n) for n in matched[:-1])
                gelu_outputs.append(out)
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        if id(node) in replaced:
            new_nodes, constants = replaced[id(node)]
            nodes += new_nodes
            model.graph.initializer.extend(constants)
        elif id(node) not in dropped:
            nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    if gelu_outputs and all(op.domain != MS_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
    _declare(model, gelu_outputs, shapes)
    _drop_unused_constants(model)
    onnx.checker.check_model(model)
    return model, Rewritten(layer_norms, len(gelu_outputs))


def _drop_unused_constants(model: onnx.ModelProto) -> None:
    """Constant nodes and initializers no node reads any more (the Erf form's √2, 1 and 0.5)."""
    graph = model.graph
    used = {name for node in graph.node for name in node.input} | {v.name for v in graph.output}
    kept = [n for n in graph.node if n.op_type != "Constant" or n.output[0] in used]
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)
    inits = [init for init in graph.initializer if init.name in used]
    if len(inits) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(inits)


def count_float_ops(model: onnx.ModelProto) -> dict[str, int]:
    """How many LayerNormalization and Erf nodes a graph still has (0 and 0 after npu_form)."""
    ops = [node.op_type for node in model.graph.node]
    return {op: ops.count(op) for op in ("LayerNormalization", "Erf")}


# What bundle.json and the card say about a graph quantized in this form.
FORM = (
    "x2-int form: LayerNormalization as InstanceNormalization x gamma + beta, Erf-GELU as "
    "one com.microsoft Gelu node, every op quantized"
)
# Never quantized: data (Constant) and the quantizer's own nodes.
NOT_COMPUTE = frozenset({"Constant", "QuantizeLinear", "DequantizeLinear"})


def quantized_op_types(model: onnx.ModelProto) -> list[str]:
    """Every op type a graph computes with: all of them are handed to the quantizer, so none
    stays float between Q/DQ units. Quark 0.13 quantizes each one in Whisper's rewritten graphs
    (Add, Mul, MatMul, Conv, InstanceNormalization, Gelu, Softmax, Reshape, Transpose,
    Unsqueeze, Concat, Slice); one it could not would be left float and the x2-int forecast
    would name it."""
    return sorted({node.op_type for node in model.graph.node} - NOT_COMPUTE)


def write_npu_form(fp32: Path, out: Path) -> list[str]:
    """`fp32` rewritten into `out` (once: kept when it exists); its op types to quantize."""
    if not out.is_file():
        model, _ = npu_form(onnx.load(str(fp32)))
        scratch = out.with_suffix(".partial")
        onnx.save(model, str(scratch))
        scratch.replace(out)
    return quantized_op_types(onnx.load(str(out), load_external_data=False))
