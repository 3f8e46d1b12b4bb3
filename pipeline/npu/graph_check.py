"""What an NPU compiler will see in an ONNX graph: opset, control flow, static shapes, ops,
integer tensors.

AMD's operator table (Ryzen AI docs, ops_support) is kept as versioned data in
pipeline/data/; `npu_ops(dtype)` reads one column, `npu_ops()` the union. Quantize/dequantize
nodes are looked up by name whatever their domain: ai.onnx (8-bit), com.microsoft (16-bit, which
opset 17 lacks) and Quark's com.amd.quark Extended*/Vitis* forms all mean the table's
QuantizeLinear/DequantizeLinear rows.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from math import prod
from pathlib import Path
from typing import Any

import onnx

from whisper_npu.errors import UserError
from whisper_npu.layout import graph_file
from whisper_npu.whisper_io import GRAPHS

CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})
OPS_TABLE = "npu_ops_ryzenai_1.5.json"
QUANTIZE, DEQUANTIZE = "QuantizeLinear", "DequantizeLinear"
# AMD's compiler (VAIML) places integer and bool tensors, and the nodes that make or use them,
# on the CPU: each such tensor splits the graph into more NPU subgraphs.
INTEGER_TYPES = frozenset(
    {
        onnx.TensorProto.BOOL,
        onnx.TensorProto.INT4,
        onnx.TensorProto.UINT4,
        onnx.TensorProto.INT8,
        onnx.TensorProto.UINT8,
        onnx.TensorProto.INT16,
        onnx.TensorProto.UINT16,
        onnx.TensorProto.INT32,
        onnx.TensorProto.UINT32,
        onnx.TensorProto.INT64,
        onnx.TensorProto.UINT64,
    }
)
# com.microsoft ops that keep their input's shape and type, for shape inference.
ELEMENTWISE_CONTRIB = frozenset({"Gelu"})
# Packed two to a byte in raw and external data.
FOUR_BIT = frozenset({onnx.TensorProto.INT4, onnx.TensorProto.UINT4, onnx.TensorProto.FLOAT4E2M1})
QDQ_NAMES = {
    QUANTIZE: QUANTIZE,
    DEQUANTIZE: DEQUANTIZE,
    "ExtendedQuantizeLinear": QUANTIZE,
    "ExtendedDequantizeLinear": DEQUANTIZE,
    "VitisQuantizeLinear": QUANTIZE,
    "VitisDequantizeLinear": DEQUANTIZE,
}


@cache
def ops_table() -> dict[str, Any]:
    table: dict[str, Any] = json.loads(
        files("pipeline.npu").joinpath("data", OPS_TABLE).read_text(encoding="utf-8")
    )
    return table


def npu_ops(dtype: str | None = None) -> frozenset[str]:
    """Ops AMD lists for one quantization type (BF16, A16W8, A8W8, XINT8), or for any."""
    supported = ops_table()["supported"]
    if dtype is None:
        return frozenset(op for column in supported.values() for op in column)
    return frozenset(supported[dtype])


@dataclass(frozen=True)
class GraphReport:
    opset: int
    op_counts: dict[str, int]
    control_flow: list[str]
    non_static: list[str]  # tensors with a symbolic, unknown or zero dimension
    outside_table: list[str]
    integer: list[str]  # integer or bool tensors taken, returned or computed (see integer_tensors)

    @property
    def clean(self) -> bool:
        return not (self.control_flow or self.non_static or self.outside_table or self.integer)

    def summary(self) -> dict[str, Any]:
        """What bundle.json records of a graph."""
        return {"opset": self.opset, "op_counts": self.op_counts}

    def problems(self) -> str:
        parts = [
            f"control flow {self.control_flow}" if self.control_flow else "",
            f"non-static tensors {self.non_static[:5]}" if self.non_static else "",
            f"ops outside AMD's NPU table {self.outside_table}" if self.outside_table else "",
            f"integer or bool tensors {self.integer[:5]}" if self.integer else "",
        ]
        return "; ".join(part for part in parts if part)


def table_op(node: onnx.NodeProto) -> str:
    """The row of AMD's table a node falls under."""
    return QDQ_NAMES.get(node.op_type, node.op_type)


def _static(value: onnx.ValueInfoProto) -> bool:
    dims = value.type.tensor_type.shape.dim
    has_shape = value.type.tensor_type.HasField("shape")
    return has_shape and all(dim.HasField("dim_value") and dim.dim_value > 0 for dim in dims)


def _tensor_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {init.name: init.data_type for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            types[node.output[0]] = node.attribute[0].t.data_type
    types.update({value.name: value.type.tensor_type.elem_type for value in graph.input})
    return types


def _qdq_as_cast(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every Q/DQ node turned into a Cast to its output type, and every
    element-wise com.microsoft node (a16w8's Gelu) into an Identity.

    ONNX's shape inference knows neither the 16-bit com.microsoft nor Quark's Q/DQ, nor any
    com.microsoft op, and stops at them; all keep their input's shape, which is all a Cast or an
    Identity says. A quantize node's output type is its zero point's (uint8 without one), a
    dequantize node's is its scale's.
    """
    proxy = onnx.ModelProto()
    proxy.CopyFrom(model)
    graph = proxy.graph
    types = _tensor_types(graph)
    del graph.value_info[:]  # re-inferred; stale entries would conflict with the Casts
    for node in graph.node:
        kind = QDQ_NAMES.get(node.op_type)
        if node.domain == "com.microsoft" and node.op_type in ELEMENTWISE_CONTRIB:
            same = onnx.helper.make_node("Identity", node.input[:1], node.output, name=node.name)
            node.Clear()
            node.CopyFrom(same)
            continue
        if kind is None:
            continue
        if kind == QUANTIZE:
            zero_point = node.input[2] if len(node.input) > 2 else ""
            to = types.get(zero_point, onnx.TensorProto.UINT8)
        else:
            to = types.get(node.input[1], onnx.TensorProto.FLOAT)
        inputs, outputs, name = node.input[0], list(node.output), node.name
        node.Clear()
        node.CopyFrom(onnx.helper.make_node("Cast", [inputs], outputs, name=name, to=to))
    return proxy


def load_graph(path: Path) -> onnx.ModelProto:
    """The graph with external data left on disk: only structure and shapes are read."""
    return onnx.load(str(path), load_external_data=False)


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph stores, in its subgraphs too: initializers and attribute values."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            yield from [attribute.t] if attribute.HasField("t") else attribute.tensors
            for subgraph in [attribute.g] if attribute.HasField("g") else attribute.graphs:
                yield from _tensors(subgraph)


def _data_bytes(data_type: int, count: int) -> int | None:
    """Bytes of `count` elements in raw or external data (None: strings, of any length)."""
    if data_type == onnx.TensorProto.STRING:
        return None
    if data_type in FOUR_BIT:
        return (count + 1) // 2
    return count * int(onnx.helper.tensor_dtype_to_np_dtype(data_type).itemsize)


def _external_data_problem(tensor: onnx.TensorProto, folder: Path, size: int | None) -> str | None:
    """Why ONNX Runtime could not read the tensor's external data, or None; only the file's
    size is looked at, and only inside the model's folder."""
    entries = {entry.key: entry.value for entry in tensor.external_data}
    location = entries.get("location", "")
    file = (folder / location).resolve()
    if not location or Path(location).is_absolute() or not file.is_relative_to(folder):
        return f"its external data {location!r} is outside the graph's folder"
    if not file.is_file():
        return f"its external data {location!r} is missing"
    if not all(entries.get(key, "0").isdigit() for key in ("offset", "length")):
        return f"its external data {location!r} has a malformed offset or length"
    offset = int(entries.get("offset") or 0)
    length = int(entries.get("length") or file.stat().st_size - offset)
    if length != (size or length) or offset + length > file.stat().st_size:
        return f"its external data {location!r} holds no {size or length} bytes at offset {offset}"
    return None


def _tensor_problem(tensor: onnx.TensorProto, folder: Path) -> str | None:
    if any(dim < 0 for dim in tensor.dims):
        return f"a negative dimension {list(tensor.dims)}"
    count = prod(tensor.dims)
    try:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            return _external_data_problem(tensor, folder, _data_bytes(tensor.data_type, count))
        onnx.numpy_helper.to_array(tensor)  # ONNX's own reader checks the data against the shape
    except KeyError:
        return f"an unknown element type {tensor.data_type}"
    except (ValueError, TypeError) as exc:
        return f"{count} elements declared, and its data does not match ({exc})"
    return None


def loadable_graph(path: Path) -> onnx.ModelProto:
    """The stored graph (as `load_graph`), refused in one line where ONNX Runtime could not
    load it: no model, or a tensor whose data is absent, short, or outside the graph's folder
    (never read from there; external data is only measured)."""
    if Path(path).stat().st_size == 0:
        raise UserError(f"{path}: empty file, not an ONNX model")
    model = load_graph(path)
    if not model.HasField("graph") or not model.opset_import or not model.ir_version:
        raise UserError(f"{path}: not an ONNX model (no graph, opset or IR version)")
    folder = Path(path).resolve().parent
    for tensor in _tensors(model.graph):
        if (problem := _tensor_problem(tensor, folder)) is not None:
            raise UserError(f"{path}: not loadable: tensor {tensor.name!r}: {problem}")
    return model


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every tensor's shape inferred, through Q/DQ nodes of any domain."""
    return onnx.shape_inference.infer_shapes(_qdq_as_cast(model), strict_mode=True)


def non_static(graph: onnx.GraphProto) -> list[str]:
    """Tensors with a symbolic, unknown or zero dimension, or with no inferred shape at all."""
    values = {v.name: v for v in [*graph.input, *graph.output, *graph.value_info]}
    produced = [name for node in graph.node for name in node.output if name]
    missing = [name for name in produced if name not in values]
    return sorted({*missing, *(name for name, v in values.items() if not _static(v))})


def integer_tensors(model: onnx.ModelProto, inferred: onnx.GraphProto) -> list[str]:
    """Integer or bool tensors that are a graph input or output or a node's output, typed from
    the shape-inferred `inferred` graph of `model`.

    Constant nodes and initializers are data the compiler reads (a Reshape's shape, a Slice's
    bounds), not tensors the graph computes; a quantize node's output is the quantized data the
    NPU is meant to take.
    """
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.value_info}
    types.update({v.name: v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]})
    weights = {init.name for init in graph.initializer}
    names = {
        *(v.name for v in graph.input if v.name not in weights),
        *(v.name for v in graph.output),
        *(
            name
            for node in graph.node
            if node.op_type != "Constant" and table_op(node) != QUANTIZE
            for name in node.output
            if name
        ),
    }
    return sorted(name for name in names if types.get(name) in INTEGER_TYPES)


def opset_of(model: onnx.ModelProto) -> int:
    version: int = next(
        entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")
    )
    return version


def check_graph(path: Path, dtype: str | None = None) -> GraphReport:
    """Shape-infer the graph and report what would not fit AMD's table for `dtype`."""
    model = load_graph(path)
    inferred = infer_shapes(model)
    original = model.graph.node
    counts = Counter(node.op_type for node in original)
    allowed = npu_ops(dtype)
    return GraphReport(
        opset=opset_of(model),
        op_counts=dict(sorted(counts.items())),
        control_flow=sorted(op for op in counts if op in CONTROL_FLOW),
        non_static=non_static(inferred.graph),
        outside_table=sorted({node.op_type for node in original if table_op(node) not in allowed}),
        integer=integer_tensors(model, inferred.graph),
    )


def check_bundle_graphs(root: Path) -> dict[str, GraphReport]:
    """`check_graph` on each of a bundle directory's graphs."""
    return {name: check_graph(Path(root) / graph_file(name)) for name in GRAPHS}
