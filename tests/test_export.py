"""Export on tiny random Whispers of every family: static, integer-free, NPU-table graphs that
match PyTorch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from pipeline.export.onnx_bundle import _check_graphs, export_graphs
from pipeline.export.torch_modules import alignment_heads
from pipeline.npu.graph_check import check_graph, npu_ops
from tests.conftest import bundle_record, tiny_whisper
from whisper_npu.bundle import Bundle, BundleRecord
from whisper_npu.decoding import DecodingSpec
from whisper_npu.errors import UserError
from whisper_npu.transcriber import OrtRunner
from whisper_npu.whisper_io import WhisperDims

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
    dims = WhisperDims.from_config(model.config, 16, len(alignment_heads(model)))
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
            got = {
                v.name: (
                    [d.dim_value for d in v.type.tensor_type.shape.dim],
                    helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name,
                )
                for v in values
            }
            assert got == {key: (shape, dtype) for key, (shape, dtype) in expected.items()}
    assert all(dtype == "float32" for _, dtype in dims.decoder_io()["inputs"].values())


def test_graphs_take_return_and_compute_no_integer_tensor(exported):
    _, _, out = exported
    assert check_graph(out / "encoder.onnx").integer == []
    assert check_graph(out / "decoder.onnx").integer == []


def test_embedding_tables_are_the_models_rows(exported):
    model, dims, out = exported
    decoder = model.model.decoder
    tokens = np.load(out / "token_embedding.npy", allow_pickle=False)
    positions = np.load(out / "position_embedding.npy", allow_pickle=False)
    assert tokens.dtype == positions.dtype == np.float32
    assert list(tokens.shape) == dims.token_embedding_shape()
    assert list(positions.shape) == dims.position_embedding_shape()
    np.testing.assert_array_equal(tokens, decoder.embed_tokens.weight.detach().numpy())
    np.testing.assert_array_equal(
        positions, decoder.embed_positions.weight.detach().numpy()[: dims.max_decode_len]
    )


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


def test_alignment_output_is_the_alignment_heads_cross_attention(exported):
    """Its softmax is transformers' cross-attention of each (layer, head) the checkpoint
    aligns words with, step by step (here the default: every head of the second half)."""
    model, dims, out = exported
    heads = alignment_heads(model)
    assert dims.alignment_heads == len(heads) == 4 and {layer for layer, _ in heads} == {1}
    runner = OrtRunner(Bundle(out, BundleRecord.model_validate(bundle_record("fp32", dims, SPEC))))
    features = torch.randn(1, dims.n_mels, 3000)
    tokens = [50257, 50362, 400, 9000, 123]
    runner.encode(features.numpy())
    rows = []
    for position, token in enumerate(tokens):
        runner.decode_step(token, position)
        rows.append(runner.alignment().copy())
    scores = np.stack(rows)  # [steps, heads, 1500]
    got = np.exp(scores - scores.max(-1, keepdims=True))
    got /= got.sum(-1, keepdims=True)
    with torch.no_grad():
        attentions = model(
            input_features=features,
            decoder_input_ids=torch.tensor([tokens]),
            output_attentions=True,
        ).cross_attentions
    want = np.stack([attentions[layer][0, head].numpy() for layer, head in heads], axis=1)
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)  # weights: each row sums to 1


def test_a_bundle_without_the_alignment_output_still_runs(tmp_path):
    model = tiny_whisper()
    model.config._attn_implementation = "eager"
    dims = WhisperDims.from_config(model.config, max_decode_len=16)  # no alignment heads
    export_graphs(model, dims, tmp_path)
    outputs = [o.name for o in onnx.load(str(tmp_path / "decoder.onnx")).graph.output]
    assert outputs == ["logits", "new_k", "new_v"]
    record = BundleRecord.model_validate(bundle_record("fp32", dims, SPEC))
    runner = OrtRunner(Bundle(tmp_path, record))
    runner.encode(np.zeros((1, 80, 3000), np.float32))
    assert runner.decode_step(50257, 0).shape == (dims.vocab_size,)
    assert runner.alignment() is None


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


def where_graph(path):
    """x → Where(x > 0, x, 0): a bool tensor computed inside the graph."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [
        helper.make_node("Greater", ["x", "zero"], ["positive"]),
        helper.make_node("Where", ["positive", "x", "zero"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [x], [y], initializer=[zero])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_export_refuses_a_graph_with_a_bool_tensor(exported, tmp_path):
    _, _, out = exported
    report = check_graph(where_graph(tmp_path / "decoder.onnx"))
    assert report.integer == ["positive"] and not report.clean
    (tmp_path / "encoder.onnx").write_bytes((out / "encoder.onnx").read_bytes())
    with pytest.raises(UserError, match=r"decoder\.onnx .*integer or bool tensors \['positive'\]"):
        _check_graphs(tmp_path)
    (tmp_path / "decoder.onnx").write_bytes((out / "decoder.onnx").read_bytes())
    assert set(_check_graphs(tmp_path)) == {"encoder", "decoder"}


def test_ops_table_is_amds_ryzen_ai_1_5():
    assert {"MatMul", "Softmax", "LayerNormalization", "Erf", "Gather"} <= npu_ops()
    assert "LayerNormalization" in npu_ops("XINT8") and "LayerNormalization" not in npu_ops("A16W8")
