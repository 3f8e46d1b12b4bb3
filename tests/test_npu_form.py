"""a16w8's x2-int form on a tiny random Whisper: the LayerNormalization and GELU rewrites are exact,
ONNX Runtime does not fuse the LayerNormalization form back, and the graph Quark quantizes from
it has no float node between Q/DQ units."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.npu.flows import Reason
from pipeline.npu.forecast import LoadedGraph, optimized
from pipeline.quant.npu_form import (
    MS_DOMAIN,
    count_float_ops,
    npu_form,
    quantized_op_types,
    write_npu_form,
)
from tests.conftest import tiny_whisper
from whisper_npu.variants import Flow, Variant


def _run(model: onnx.ModelProto, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _layer_norm_graph(t: int, c: int) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    gamma = numpy_helper.from_array(rng.normal(size=c).astype(np.float32), "gamma")
    beta = numpy_helper.from_array(rng.normal(size=c).astype(np.float32), "beta")
    node = helper.make_node(
        "LayerNormalization", ["x", "gamma", "beta"], ["y"], name="ln", axis=-1, epsilon=1e-5
    )
    graph = helper.make_graph(
        [node],
        "ln",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, t, c])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, t, c])],
        [gamma, beta],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("t", [1, 7])
def test_layer_norm_becomes_instance_norm_times_gamma_plus_beta_exactly(t):
    model = _layer_norm_graph(t, 48)
    rewritten, done = npu_form(model)
    assert (done.layer_norms, done.gelus) == (1, 0)
    ops = [node.op_type for node in rewritten.graph.node]
    assert ops == ["InstanceNormalization", "Mul", "Add"]
    x = {"x": (np.random.default_rng(1).normal(size=(1, t, 48)) * 5 + 2).astype(np.float32)}
    np.testing.assert_allclose(_run(rewritten, x)[0], _run(model, x)[0], rtol=0, atol=2e-6)


def _erf_gelu_graph() -> onnx.ModelProto:
    """GELU as torch exports it: Div √2 → Erf → Add 1 → Mul x → Mul 0.5, constants as nodes."""

    def const(name: str, value: float) -> onnx.NodeProto:
        tensor = numpy_helper.from_array(np.array(value, np.float32), name)
        return helper.make_node("Constant", [], [name], value=tensor)

    nodes = [
        const("sqrt2", float(np.sqrt(2.0))),
        const("one", 1.0),
        const("half", 0.5),
        helper.make_node("Div", ["x", "sqrt2"], ["d"], name="div"),
        helper.make_node("Erf", ["d"], ["e"], name="erf"),
        helper.make_node("Add", ["e", "one"], ["a"], name="add"),
        helper.make_node("Mul", ["x", "a"], ["m"], name="mul"),
        helper.make_node("Mul", ["m", "half"], ["y"], name="gelu_out"),
    ]
    graph = helper.make_graph(
        nodes,
        "gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 1000])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 1000])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_erf_gelu_becomes_one_microsoft_gelu_node_exactly():
    model = _erf_gelu_graph()
    rewritten, done = npu_form(model)
    assert (done.layer_norms, done.gelus) == (0, 1)
    assert [(n.op_type, n.domain) for n in rewritten.graph.node] == [("Gelu", MS_DOMAIN)]
    x = {"x": np.linspace(-8, 8, 5000, dtype=np.float32).reshape(1, 5, 1000)}
    np.testing.assert_allclose(_run(rewritten, x)[0], _run(model, x)[0], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def tiny_graphs(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny random Whisper's exported graphs, and the same graphs in the x2-int form."""
    from pipeline.export.onnx_bundle import export_graphs
    from whisper_npu.whisper_io import WhisperDims

    model = tiny_whisper()
    model.config._attn_implementation = "eager"
    dims = WhisperDims.from_config(model.config, max_decode_len=16)
    fp32, form = tmp_path_factory.mktemp("fp32"), tmp_path_factory.mktemp("form")
    export_graphs(model, dims, fp32)
    for graph in ("encoder", "decoder"):
        write_npu_form(fp32 / f"{graph}.onnx", form / f"{graph}.onnx")
    return fp32, form


def _feeds(model: onnx.ModelProto, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        value.name: rng.normal(size=[d.dim_value for d in value.type.tensor_type.shape.dim]).astype(
            np.float32
        )
        for value in model.graph.input
    }


def test_whisper_graphs_lose_every_layer_norm_and_erf_and_keep_their_outputs(tiny_graphs):
    fp32, form = tiny_graphs
    for graph in ("encoder", "decoder"):
        before, after = (
            onnx.load(str(fp32 / f"{graph}.onnx")),
            onnx.load(str(form / f"{graph}.onnx")),
        )
        counts = count_float_ops(before)
        assert counts["LayerNormalization"] > 0 and counts["Erf"] > 0
        assert count_float_ops(after) == {"LayerNormalization": 0, "Erf": 0}
        kinds = Counter(node.op_type for node in after.graph.node)
        assert kinds["InstanceNormalization"] == counts["LayerNormalization"]
        assert kinds["Gelu"] == counts["Erf"]
        # The compute layers the sensitivity ranking names are untouched.
        names = {n.name for n in before.graph.node if n.op_type in ("MatMul", "Conv")}
        assert names <= {n.name for n in after.graph.node}
        feed = _feeds(before, 2)
        for got, want in zip(_run(after, feed), _run(before, feed), strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * max(1.0, np.abs(want).max()))
        # What the forecast and the EP are handed: ONNX Runtime fuses no LayerNormalization back
        # and keeps each Gelu as it is.
        seen, loaded = optimized(form / f"{graph}.onnx")
        assert loaded and count_float_ops(seen) == {"LayerNormalization": 0, "Erf": 0}
        seen_kinds = Counter(node.op_type for node in seen.graph.node)
        assert seen_kinds["Gelu"] == counts["Erf"] and seen_kinds["FastGelu"] == 0


class _Feeds:
    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds, self.index = feeds, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        self.index += 1
        return self.feeds[self.index - 1] if self.index <= len(self.feeds) else None

    def rewind(self) -> None:
        self.index = 0


def _quantized_placement(source: Path, out: Path, op_types: list[str]) -> list[Reason]:
    from pipeline.npu.flows import place
    from pipeline.quant.backends import QuantJob, QuarkBackend

    model = onnx.load(str(source), load_external_data=False)
    reader = _Feeds([_feeds(model, seed) for seed in range(2)])
    QuarkBackend().quantize(QuantJob(source, out, reader, Variant.A16W8, [], op_types))  # type: ignore[arg-type]
    return place(LoadedGraph.load(out).view, Flow.X2_INT, "A16W8")


@pytest.mark.parametrize("graph", ["encoder", "decoder"])
def test_a16w8_in_the_x2_int_form_has_no_float_node_between_units(tiny_graphs, graph, tmp_path):
    """The form quantized with every op type is one NPU subgraph: only graph-boundary Q/DQ on
    the CPU. The export quantized as before (MatMul/Gemm/Conv only) keeps float islands."""
    fp32, form = tiny_graphs
    source = form / f"{graph}.onnx"
    reasons = _quantized_placement(
        source, tmp_path / "form.onnx", quantized_op_types(onnx.load(str(source)))
    )
    assert Reason.FLOAT_ISLAND not in reasons
    assert set(reasons) == {Reason.UNIT, Reason.BOUNDARY}
    placed = LoadedGraph.load(tmp_path / "form.onnx").place(Flow.X2_INT, "A16W8")
    assert placed.npu_subgraphs == 1 and placed.cpu_islands == 0 and placed.clean
    old = _quantized_placement(
        fp32 / f"{graph}.onnx", tmp_path / "old.onnx", ["MatMul", "Gemm", "Conv"]
    )
    assert Reason.FLOAT_ISLAND in old
