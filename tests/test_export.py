"""Export on tiny random Whispers of every family: static, NPU-table graphs that match PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from pipeline.export.onnx_bundle import export_graphs
from pipeline.npu.graph_check import check_graph, npu_ops
from pipeline.runtime.bundle import Bundle, BundleRecord
from pipeline.runtime.decoding import DecodingSpec
from pipeline.runtime.transcriber import OrtRunner
from pipeline.runtime.whisper_io import WhisperDims
from tests.conftest import bundle_record, tiny_whisper

FAMILIES = {  # (mel bins, vocabulary): .en, multilingual, large-v3 / turbo
    "tiny.en-like": (80, 51864),
    "multilingual-like": (80, 51865),
    "large-v3-like": (128, 51866),
}
SPEC = DecodingSpec((50257,), 50256, 50362, (), (), None, 16)


@pytest.fixture(scope="module", params=list(FAMILIES))
def exported(request, tmp_path_factory):
    n_mels, vocab = FAMILIES[request.param]
    model = tiny_whisper(num_mel_bins=n_mels, vocab_size=vocab)
    model.config._attn_implementation = "eager"
    dims = WhisperDims.from_config(model.config, max_decode_len=16)
    out = tmp_path_factory.mktemp(request.param)
    export_graphs(model, dims, out)
    return model, dims, out


def test_graphs_are_static_opset17_and_inside_the_npu_table(exported):
    _, _, out = exported
    for name in ("encoder", "decoder"):
        report = check_graph(out / f"{name}.onnx")
        assert report.opset == 17
        assert report.clean, report.problems()


def test_io_matches_the_contract(exported):
    _, dims, out = exported
    for name, io in (("encoder", dims.encoder_io()), ("decoder", dims.decoder_io())):
        graph = onnx.load(str(out / f"{name}.onnx")).graph
        for values, expected in ((graph.input, io["inputs"]), (graph.output, io["outputs"])):
            got = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in values}
            assert got == {key: shape for key, (shape, _) in expected.items()}


def test_decoder_steps_match_the_pytorch_model(exported):
    model, dims, out = exported
    runner = OrtRunner(Bundle(out, BundleRecord.model_validate(bundle_record("fp32", dims, SPEC))))
    features = torch.randn(1, dims.n_mels, 3000)
    tokens = [50257, 50362, 400, 9000, 123, 50256, 77]
    runner.encode(features.numpy())
    steps = np.stack(
        [runner.decode_step(token, position).copy() for position, token in enumerate(tokens)]
    )
    with torch.no_grad():
        want = (
            model(input_features=features, decoder_input_ids=torch.tensor([tokens]))
            .logits[0]
            .numpy()
        )
    np.testing.assert_allclose(steps, want, atol=1e-4, rtol=0)  # random weights: logits ~1


def test_decoder_file_holds_the_vocabulary_matrix_once(exported):
    _, dims, out = exported
    initializers = onnx.load(str(out / "decoder.onnx")).graph.initializer
    vocabulary_sized = [i.name for i in initializers if dims.vocab_size in i.dims]
    assert len(vocabulary_sized) == 1


def save_graph(path, nodes, inputs, outputs, opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def test_graph_check_flags_what_the_npu_cannot_take(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    symbolic = check_graph(
        save_graph(tmp_path / "a.onnx", [helper.make_node("Relu", ["x"], ["y"])], [x], [y])
    )
    assert symbolic.non_static == ["x", "y"] and not symbolic.clean

    fixed = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    odd = check_graph(
        save_graph(tmp_path / "b.onnx", [helper.make_node("Hardmax", ["x"], ["y"])], [fixed], [out])
    )
    assert odd.outside_table == ["Hardmax"] and odd.non_static == []

    relu = check_graph(
        save_graph(tmp_path / "c.onnx", [helper.make_node("Relu", ["x"], ["y"])], [fixed], [out])
    )
    assert relu.clean
    assert check_graph(tmp_path / "c.onnx", dtype="BF16").outside_table == [
        "Relu"
    ]  # not in AMD's BF16 column


def test_ops_table_is_amds_ryzen_ai_1_5():
    assert {"MatMul", "Softmax", "LayerNormalization", "Erf", "Gather"} <= npu_ops()
    assert "LayerNormalization" in npu_ops("XINT8") and "LayerNormalization" not in npu_ops("A16W8")
