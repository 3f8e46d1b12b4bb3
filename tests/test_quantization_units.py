"""Quantization building blocks on small graphs: no model, no quantizer run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.errors import UserError
from pipeline.quant_backends import OrtBackend, get_backend
from pipeline.quantize import exclusion_ladder
from pipeline.sensitivity import Precision, _round_to_grid, layer_sensitivity, snr_db


def test_exclusion_ladder():
    assert exclusion_ladder(16) == [0, 1, 2, 4, 8, 16]
    assert exclusion_ladder(0) == [0]
    assert exclusion_ladder(5) == [0, 1, 2, 4]


def test_backends_that_are_missing_or_cannot_do_a_variant_say_so(tmp_path):
    with pytest.raises(UserError, match="vai_q_onnx is not installed"):
        get_backend("vai_q_onnx")
    for variant in ("xint8", "bf16"):
        with pytest.raises(UserError, match=f"no {variant}"):
            OrtBackend().quantize(
                tmp_path / "a.onnx", tmp_path / "b.onnx", None, variant, [], ["MatMul"]
            )


def test_grids_round_as_their_formats():
    values = np.array([0.1, -1.0, 3.3], np.float32)
    assert np.unique(_round_to_grid(np.linspace(-1, 1, 1000).astype(np.float32), 8)).size <= 255
    np.testing.assert_allclose(_round_to_grid(values, 16), values, atol=3.3 / 32767)
    assert _round_to_grid(values, None)[2] == np.float32(3.296875)  # bfloat16 keeps 8 mantissa bits


def two_layer_graph(path, outlier_scale: float) -> None:
    """x → MatMul(w1) → Mul(outliers) → MatMul(w2) → y: the second MatMul sees the outliers.

    As in transformers, the weights after the outlier channels scale them back down, so the
    output depends on every channel and a coarse grid sized for the outliers erases the rest.
    """
    rng = np.random.default_rng(0)
    spikes = np.ones((1, 64), np.float32)
    spikes[0, :2] = outlier_scale
    w2 = rng.normal(size=(64, 64)).astype(np.float32) / 8
    w2[:2] /= outlier_scale
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="first"),
        helper.make_node("Mul", ["h", "spikes"], ["hs"], name="spike"),
        helper.make_node("MatMul", ["hs", "w2"], ["y"], name="second"),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(size=(64, 64)).astype(np.float32) / 8, "w1"),
        numpy_helper.from_array(spikes, "spikes"),
        numpy_helper.from_array(w2, "w2"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 64])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_sensitivity_finds_the_layer_behind_activation_outliers(tmp_path):
    two_layer_graph(tmp_path / "m.onnx", outlier_scale=300.0)
    feeds = [
        {"x": np.random.default_rng(i).normal(size=(8, 64)).astype(np.float32)} for i in range(3)
    ]
    scores = layer_sensitivity(tmp_path / "m.onnx", feeds, ["y"], Precision(8, 8))
    assert set(scores) == {"first", "second"}
    assert scores["second"] < scores["first"] - 10  # the outlier-fed layer is far more sensitive
    wide = layer_sensitivity(tmp_path / "m.onnx", feeds, ["y"], Precision(16, 8))
    assert wide["second"] > scores["second"] + 10  # 16-bit activations absorb most of it


def test_snr():
    reference = [np.ones(10, np.float32)]
    assert snr_db(reference, reference) == float("inf")
    assert snr_db(reference, [np.full(10, 1.1, np.float32)]) == pytest.approx(20.0)
