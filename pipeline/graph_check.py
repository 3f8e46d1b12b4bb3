"""What an NPU compiler will see in an ONNX graph: opset, control flow, static shapes, ops.

AMD's operator table (Ryzen AI docs, ops_support) is kept as versioned data in
pipeline/data/; `npu_ops(dtype)` reads one column, `npu_ops()` the union.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import Any

import onnx

CONTROL_FLOW = frozenset({"If", "Loop", "Scan"})
OPS_TABLE = "npu_ops_ryzenai_1.5.json"


@cache
def ops_table() -> dict[str, Any]:
    return json.loads(files("pipeline").joinpath("data", OPS_TABLE).read_text(encoding="utf-8"))


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

    @property
    def clean(self) -> bool:
        return not (self.control_flow or self.non_static or self.outside_table)

    def problems(self) -> str:
        parts = [
            f"control flow {self.control_flow}" if self.control_flow else "",
            f"non-static tensors {self.non_static[:5]}" if self.non_static else "",
            f"ops outside AMD's NPU table {self.outside_table}" if self.outside_table else "",
        ]
        return "; ".join(part for part in parts if part)


def _static(value: onnx.ValueInfoProto) -> bool:
    dims = value.type.tensor_type.shape.dim
    return all(dim.HasField("dim_value") and dim.dim_value > 0 for dim in dims)


def check_graph(path: Path, dtype: str | None = None) -> GraphReport:
    """Shape-infer the graph (with external data left on disk) and report what would not fit."""
    model = onnx.load(str(path), load_external_data=False)
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    graph = inferred.graph
    counts = Counter(node.op_type for node in graph.node)
    values = [*graph.input, *graph.output, *graph.value_info]
    allowed = npu_ops(dtype)
    opset = next(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx"))
    return GraphReport(
        opset=opset,
        op_counts=dict(sorted(counts.items())),
        control_flow=sorted(op for op in counts if op in CONTROL_FLOW),
        non_static=sorted(value.name for value in values if not _static(value)),
        outside_table=sorted(op for op in counts if op not in allowed),
    )
