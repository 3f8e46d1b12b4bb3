"""Quantization building blocks on small graphs: no model, no quantizer run."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.config import QuantizeParams
from pipeline.quant.backends import OrtBackend, QuantJob, QuarkBackend, get_backend
from pipeline.quant.plan import QuantizePlan
from pipeline.quant.quantize import (
    exclusion_ladder,
    graph_rankings,
    kept_float,
    search_ladder,
    wer_standard_error,
)
from pipeline.quant.sensitivity import _round_to_grid, layer_sensitivity, sensitivity_grids, snr_db
from whisper_npu.errors import UserError
from whisper_npu.variants import Precision, Variant
from whisper_npu.wer import EditCounts, clip_edits, corpus_wer


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
                QuantJob(tmp_path / "a.onnx", tmp_path / "b.onnx", None, variant, [], ["MatMul"])
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
    narrow, wide = Precision(8, 8), Precision(16, 8)
    found = layer_sensitivity(tmp_path / "m.onnx", feeds, ["y"], [narrow, wide])
    scores = found[narrow]
    assert set(scores) == {"first", "second"}
    assert scores["second"] < scores["first"] - 10  # the outlier-fed layer is far more sensitive
    assert found[wide]["second"] > scores["second"] + 10  # 16-bit activations absorb most of it


def test_snr():
    reference = [np.ones(10, np.float32)]
    assert snr_db(reference, reference) == float("inf")
    assert snr_db(reference, [np.full(10, 1.1, np.float32)]) == pytest.approx(20.0)


@pytest.mark.parametrize("smallest_passing", [0, 1, 2, 4, 8, 16, None])
def test_search_stops_at_the_first_passing_rung(smallest_passing):
    ladder = exclusion_ladder(16)
    tried: list[int] = []

    def passes(k: int) -> bool:
        tried.append(k)
        return smallest_passing is not None and k >= smallest_passing

    assert search_ladder(ladder, passes) == smallest_passing
    expected = ladder if smallest_passing is None else ladder[: ladder.index(smallest_passing) + 1]
    assert tried == expected  # in order, and only one passing rung (the costly one) is tried


def test_the_decoder_is_ranked_computed_and_recorded_on_its_own_grid(tmp_path):
    """decoder_variant {a8w8: a16w8}: the sensitivity stage measures the a16w8 grid, the
    decoder's kept-float layers come from a16w8's sensitivities (not the encoder's a8w8 ones),
    and bundle.json's quantization section names a16w8 as the decoder's grid."""
    import json

    # The two grids rank the encoder alike and the decoder in opposite orders.
    for grid, decoder in (("a8w8", {"d1": 1.0, "d2": 2.0}), ("a16w8", {"d1": 9.0, "d2": 3.0})):
        snr = {"encoder": {"e1": 1.0, "e2": 2.0}, "decoder": decoder}
        record = {"grid": grid, "snr_db": snr, "feeds": {"encoder": 1, "decoder": 1}}
        (tmp_path / f"{grid}.json").write_text(json.dumps(record))
    params = QuantizeParams(variants=["a8w8"], decoder_variant={"a8w8": "a16w8"})
    assert [grid.name for grid in sensitivity_grids(params)] == ["a16w8", "a8w8"]
    plan = QuantizePlan.of(Variant.A8W8, params.decoder_variant)
    assert (plan.encoder.variant, plan.decoder.variant) == ("a8w8", "a16w8")
    assert plan.decoder.quant.quark_preset == "A16W8_QCONFIG"
    ranking = graph_rankings(tmp_path, plan)
    assert ranking["decoder"] == [("d2", 3.0), ("d1", 9.0)]
    assert ranking["encoder"] == [("e1", 1.0), ("e2", 2.0)]
    assert kept_float(ranking, 1) == {"encoder": ["e1"], "decoder": ["d2"]}
    assert json.loads(json.dumps(plan.record())) == {
        "grid": "a8w8",
        "decoder_grid": "a16w8",
        "decoder_variant": "a16w8",
    }
    # Without the mapping both graphs follow the variant itself.
    alone = QuantizePlan.of(Variant.A8W8, {})
    assert graph_rankings(tmp_path, alone)["decoder"] == [("d1", 1.0), ("d2", 2.0)]
    assert alone.record()["decoder_grid"] == "a8w8"


def test_edit_counts_add_up_to_corpus_wer():
    refs = ["the cat sat on the mat", "hello world", "Mr. Smith is here"]
    hyps = ["the cat sat on mat", "hello there world", "mister smith is here"]
    total = sum((clip_edits(r, h) for r, h in zip(refs, hyps, strict=True)), EditCounts())
    assert total.wer == pytest.approx(corpus_wer(refs, hyps))
    assert total.words == 6 + 2 + 4
    assert wer_standard_error(0.02, 1300) == pytest.approx(0.00388, abs=1e-5)


class CountingReader:
    """A calibration reader that counts the feeds a quantizer asks for."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds, self.served, self.position = feeds, 0, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.position >= len(self.feeds):
            return None
        self.position += 1
        self.served += 1
        return self.feeds[self.position - 1]

    def rewind(self) -> None:
        self.position = 0

    def reset(self) -> None:
        self.position = 0


def _scales(path) -> dict[str, float]:
    graph = onnx.load(str(path)).graph
    values = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    return {
        node.input[0]: float(values[node.input[1]])
        for node in graph.node
        if node.op_type == "QuantizeLinear" and node.input[1] in values
    }


def test_quark_bf16_needs_no_range_cache(tmp_path):
    """bf16 is not calibrated: a range cache offered for it is neither written nor asked for."""
    two_layer_graph(tmp_path / "m.onnx", outlier_scale=3.0)
    feeds = [{"x": np.ones((8, 64), np.float32)}]
    cache = tmp_path / "ranges.json"
    for out in ("a.onnx", "b.onnx"):
        job = QuantJob(
            tmp_path / "m.onnx",
            tmp_path / out,
            CountingReader(feeds),
            "bf16",
            [],
            ["MatMul"],
            cache,
        )
        QuarkBackend().quantize(job)
        assert (tmp_path / out).is_file() and not cache.exists()


def test_quark_bf16_is_cast_pairs_that_plain_onnxruntime_runs(tmp_path):
    """bf16 in AMD's VAIML form: Cast pairs and no custom op; it runs on a plain CPU session
    and rounds activations and weights to bfloat16 (close to float, not equal)."""
    import onnxruntime

    two_layer_graph(tmp_path / "m.onnx", outlier_scale=3.0)
    x = {"x": np.random.default_rng(0).normal(size=(8, 64)).astype(np.float32)}
    job = QuantJob(
        tmp_path / "m.onnx", tmp_path / "b.onnx", CountingReader([x]), "bf16", [], ["MatMul"]
    )
    QuarkBackend().quantize(job)
    ops = {node.op_type for node in onnx.load(str(tmp_path / "b.onnx")).graph.node}
    assert "Cast" in ops and not any("Quantize" in op for op in ops)
    assert QuarkBackend().custom_ops_for("bf16") is None
    run = onnxruntime.InferenceSession(str(tmp_path / "b.onnx"), providers=["CPUExecutionProvider"])
    ref = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got, want = run.run(None, x)[0], ref.run(None, x)[0]
    assert 0 < np.abs(got - want).max() < 0.05 * np.abs(want).max()


@pytest.mark.parametrize("variant", ["a8w8", "xint8", "a16w8"])
def test_quark_reuses_calibrated_ranges_across_attempts(tmp_path, variant):
    """The second attempt reads the first one's ranges: no feed is run again, and the scales of
    the activations still quantized are the ones a fresh calibration gives."""
    two_layer_graph(tmp_path / "m.onnx", outlier_scale=3.0)
    feeds = [
        {"x": np.random.default_rng(i).normal(size=(8, 64)).astype(np.float32)} for i in range(4)
    ]
    cache = tmp_path / "ranges.json"
    ops = ["MatMul"]
    first = CountingReader(feeds)
    QuarkBackend().quantize(
        QuantJob(tmp_path / "m.onnx", tmp_path / "a.onnx", first, variant, [], ops, cache)
    )
    assert first.served > 0 and cache.is_file()
    again = CountingReader(feeds)
    QuarkBackend().quantize(
        QuantJob(tmp_path / "m.onnx", tmp_path / "b.onnx", again, variant, ["second"], ops, cache)
    )
    assert again.served == 1  # one feed only: Quark copies every feed it is given first
    fresh = CountingReader(feeds)
    QuarkBackend().quantize(
        QuantJob(tmp_path / "m.onnx", tmp_path / "c.onnx", fresh, variant, ["second"], ops)
    )
    assert _scales(tmp_path / "b.onnx") == _scales(tmp_path / "c.onnx")
    assert "hs" in _scales(tmp_path / "a.onnx") and "hs" not in _scales(tmp_path / "b.onnx")
