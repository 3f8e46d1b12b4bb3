"""Quantization building blocks on small graphs: no model, no quantizer run."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import datasets
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pipeline.config import Condition, QuantizeParams
from pipeline.quant.backends import OrtBackend, QuantJob, QuarkBackend, get_backend
from pipeline.quant.calibration import LANGUAGES
from pipeline.quant.plan import QuantizePlan
from pipeline.quant.quantize import (
    Budget,
    HeldBack,
    Holdout,
    _report,
    condition_scores,
    exclusion_ladder,
    graph_rankings,
    kept_float,
    search_ladder,
    standard_error_points,
    wer_standard_error,
)
from pipeline.quant.sensitivity import _round_to_grid, layer_sensitivity, sensitivity_grids, snr_db
from pipeline.sources.condition_sets import ConditionEntry, ConditionsManifest
from pipeline.sources.speech_sets import FEATURES
from tests.conftest import quantization_record
from whisper_npu.bundle import CalibrationManifest, HeldBackTexts, Quantization
from whisper_npu.errors import UserError
from whisper_npu.fsutil import sha256_file
from whisper_npu.variants import Precision, Variant
from whisper_npu.wer import EditCounts, clip_edits, corpus_wer
from whisper_npu.whisper_io import SAMPLE_RATE


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


# The WER budget on every held-back condition, with a fake transcriber: no model, no quantizer.
REFERENCE = "the quick brown fox jumps over the lazy dog"  # 9 words
SLIP = "the quick brown fox jumps over a lazy dog"  # 1 error
WRONG = "a slow red cat sat under one busy log"  # 9 errors: every word
LOOP = "the quick brown " * 5 + "fox jumps over the lazy dog"  # 12 errors, and loops


def held_back(name: str, fp32: list[str], language: str | None = None) -> HeldBack:
    silence = np.zeros(160, np.float32)
    clips = [(REFERENCE, silence, language)] * len(fp32)
    return HeldBack.of(name, clips, fp32, Budget(10.0))


# babble: fp32 already makes 1 error over 36 words; clean: none. Budget 10 points: 3 words more.
BABBLE = held_back("babble-5db", [SLIP, REFERENCE, REFERENCE, REFERENCE])
CLEAN_SET = held_back("clean", [REFERENCE] * 4)

# Each rung's transcripts, babble's four clips then clean's four.
TRANSCRIPTS = {
    0: [WRONG, REFERENCE, REFERENCE, REFERENCE] + [REFERENCE] * 4,  # clean alone: passes
    1: [SLIP, SLIP, SLIP, SLIP, REFERENCE, REFERENCE, SLIP, REFERENCE],  # within both
    2: [REFERENCE] * 8,
}


class FakeRungs:
    """Stands in for the quantizer and the workers: each rung's 'bundle' is a file naming its
    rung, and its transcripts are TRANSCRIPTS' (counted as they are read)."""

    def __init__(self, transcripts: dict[int, list[str]]) -> None:
        self.transcripts, self.read = transcripts, {}

    def write(self, exclude: dict[str, list[str]], out) -> None:  # type: ignore[no-untyped-def]
        (out / "rung").write_text(str(len(exclude["encoder"])))

    def save(self, out) -> None:  # type: ignore[no-untyped-def]
        (out / "bundle.json").write_text("{}")

    def transcribe_all(self, root, clips, languages):  # type: ignore[no-untyped-def]
        k = int((root / "rung").read_text())
        self.languages = list(languages)
        self.read[k] = 0
        for text in self.transcripts[k][: len(clips)]:
            self.read[k] += 1
            yield SimpleNamespace(text=text)


def budgeted(conditions: list[HeldBack], budget: float) -> list[HeldBack]:
    """The same `budget` points on every condition (Holdout.load scales the degraded ones')."""
    return [replace(c, budget=budget) for c in conditions]


def climb(monkeypatch, tmp_path, conditions: list[HeldBack], transcripts=TRANSCRIPTS, budget=10.0):  # type: ignore[no-untyped-def]
    """The ladder 0, 1, 2 over `conditions`, as quantize_variant runs it."""
    from pipeline.quant import quantize

    tmp_path.mkdir(exist_ok=True)

    fake = FakeRungs(
        {
            k: texts[-sum(len(c.references) for c in conditions) :]
            for k, texts in transcripts.items()
        }
    )
    monkeypatch.setattr(quantize, "transcribe_all", fake.transcribe_all)
    ranking = {
        graph: [(f"{graph}{i}", float(i)) for i in range(2)] for graph in ("encoder", "decoder")
    }
    ladder = quantize._Ladder(
        quantizer=fake,  # type: ignore[arg-type]
        bundle_record=fake,  # type: ignore[arg-type]
        ranking=ranking,
        holdout=Holdout(budgeted(conditions, budget)),
        rungs=[0, 1, 2],
        scratch=tmp_path,
    )
    return ladder, ladder.search("test"), fake


def test_a_rung_within_budget_on_clean_but_over_on_babble_is_rejected(monkeypatch, tmp_path):
    """Rung 0 keeps clean perfect but makes babble 9 words worse: clean alone takes rung 0,
    with babble the next rung, within budget on both, is chosen."""
    assert [c.allowed_errors() for c in budgeted([BABBLE, CLEAN_SET], 10.0)] == [1 + 3, 3]
    _, alone, _ = climb(monkeypatch, tmp_path / "alone", [CLEAN_SET])
    assert alone == 0
    ladder, chosen, _ = climb(monkeypatch, tmp_path / "both", [BABBLE, CLEAN_SET])
    assert chosen == 1
    first, second = ladder.attempts
    assert (first.passed, first.rejected_by, list(first.conditions)) == (
        False,
        "babble-5db",
        ["babble-5db"],  # clean never scored: the rung was over after babble's first clip
    )
    assert first.conditions["babble-5db"].wer == pytest.approx(9 / 36) and not first.complete
    assert (second.passed, second.rejected_by, second.complete) == (True, None, True)
    assert second.conditions["babble-5db"].wer_delta == pytest.approx(100 * 3 / 36)
    assert second.holdout_wer == pytest.approx(1 / 36)  # the top-level figures are clean's
    assert (tmp_path / "both" / "rung").read_text() == "1"  # the chosen attempt is kept
    assert not list((tmp_path / "both").glob(".attempt-*"))
    scores = condition_scores(ladder.holdout, second)
    assert list(scores) == ["babble-5db", "clean"]
    assert scores["babble-5db"].margin == pytest.approx(10 - 100 * 3 / 36)
    assert (scores["clean"].words, scores["clean"].clips, scores["clean"].fp32_wer) == (36, 4, 0)


def test_scoring_stops_at_the_first_condition_over_budget(monkeypatch, tmp_path):
    """A rejected rung reads only the transcripts until it is over: 1 of 8 clips here. The
    last rung, the fallback when none passes, is always read whole."""
    every_rung_bad = {k: [WRONG] * 8 for k in (0, 1, 2)}
    ladder, chosen, fake = climb(monkeypatch, tmp_path, [BABBLE, CLEAN_SET], every_rung_bad)
    assert chosen is None
    assert fake.read == {0: 1, 1: 1, 2: 8}
    last = ladder.attempts[-1]
    assert last.rejected_by == "babble-5db" and last.complete
    assert all(c.complete for c in last.conditions.values()) and last.holdout_wer == 1.0


def test_a_loop_rejects_a_rung_within_its_error_budget(monkeypatch, tmp_path):
    """Rung 0 loops on one clean clip: its 12 errors are within a 40-point budget (14 of 36
    words), but fp32 looped on none, so the rung is rejected."""
    loops = {
        0: [REFERENCE] * 4 + [LOOP, REFERENCE, REFERENCE, REFERENCE],
        1: [REFERENCE] * 8,
        2: [REFERENCE] * 8,
    }
    from pipeline.quant import quantize

    assert quantize.is_loop_in(None, REFERENCE, LOOP)
    assert not quantize.is_loop_in(None, REFERENCE, WRONG)
    holdout = Holdout(budgeted([BABBLE, CLEAN_SET], 40.0))
    verdict = holdout.judge(iter(loops[0]), give_up=True)
    assert verdict.rejected_by == "clean"
    assert verdict.scored["clean"].loops == 1 and verdict.scored["clean"].wer == 12 / 36
    assert holdout.clean.allowed_errors() == 14
    ladder, chosen, _ = climb(monkeypatch, tmp_path, [BABBLE, CLEAN_SET], loops, 40.0)
    assert chosen == 1 and ladder.attempts[0].rejected_by == "clean"
    # fp32 looping on a clip already is its baseline: one loop more is what rejects.
    looping_fp32 = held_back("clean", [LOOP, REFERENCE, REFERENCE, REFERENCE])
    assert (
        Holdout(budgeted([looping_fp32], 40.0)).judge(iter(loops[0][4:]), True).rejected_by is None
    )


def test_the_report_says_which_condition_decided(monkeypatch, tmp_path):
    ladder, _, _ = climb(monkeypatch, tmp_path, [BABBLE, CLEAN_SET])
    q = Quantization.model_validate(
        {
            **OLD_QUANTIZATION,
            "attempts": ladder.attempts,
            "conditions": condition_scores(ladder.holdout, ladder.attempts[-1]),
        }
    )
    report = _report(Variant.A8W8, q, {g: [("/enc/MatMul", 31.5)] for g in ("encoder", "decoder")})
    assert (
        "Decision: babble-5db rejected rung 0, so rung 1 is kept (clean was not scored on "
        "rung 0: a rung's scoring stops at the first condition over budget)." in report
    )
    row = "| babble-5db | 4 | 36 | 2.78% ±2.74% | 11.11% | +8.33 | +10.00 | +1.67 | 0 (0) |"
    assert row in report
    assert "| 0 | ≥ 25.00% (≥ +22.22, 0 loops) | not scored | babble-5db |" in report


CALIBRATION_MANIFEST = {
    "bundle_sha256": "f" * 64,
    "calibration_clips": ["calibration-0000"],
    "holdout_clips": ["calibration-0002"],
    "holdout_fp32_texts": ["hello"],
    "decoder_steps": 12,
    "bytes": {"encoder_inputs.npy": 1024},
}
# A quantization section as bundles recorded it before held-back conditions were scored.
OLD_QUANTIZATION = quantization_record(CALIBRATION_MANIFEST)


def test_records_from_before_conditions_still_load_and_write_the_same(tmp_path):
    manifest = CalibrationManifest.model_validate(CALIBRATION_MANIFEST)
    assert manifest.conditions is None and manifest.to_json() == CALIBRATION_MANIFEST
    q = Quantization.model_validate(OLD_QUANTIZATION)
    assert q.conditions is None and q.attempts[0].conditions is None
    assert q.attempts[0].rejected_by is None and q.to_json() == OLD_QUANTIZATION
    with pytest.raises(ValueError, match="2 clips but 1 fp32 texts"):
        HeldBackTexts(clips=["a", "b"], fp32_texts=["x"], arrow_sha256={})


def save_condition_sets(root: Path, sets: dict[str, list[dict[str, Any]]]) -> Path:
    """A holdback conditions directory as the conditions stage writes it: each set saved with
    the clean sets' features (rows: id, samples, text), beside its manifest."""
    entries = {}
    for name, rows in sets.items():
        columns = {
            "id": [row["id"] for row in rows],
            "audio": [{"array": row["samples"], "sampling_rate": SAMPLE_RATE} for row in rows],
            "text": [row["text"] for row in rows],
            "duration_s": [len(row["samples"]) / SAMPLE_RATE for row in rows],
        }
        datasets.Dataset.from_dict(columns, features=FEATURES).save_to_disk(str(root / name))
        entries[name] = ConditionEntry(
            entry=Condition(name="white", noise="white", snr_db=[10]),
            snr_db=10.0,
            clips=len(rows),
            total_s=sum(columns["duration_s"]),
            source_ids=columns["id"],
            arrow_sha256={f.name: sha256_file(f) for f in (root / name).glob("*.arrow")},
        )
    ConditionsManifest(set="holdback", seed=0, cpu="test", conditions=entries).write(
        root / "manifest.json"
    )
    return root


def test_quantize_refuses_degraded_sets_other_than_the_calibrated_ones(tmp_path):
    """The fp32 transcripts a budget starts from must be of the very clips scored."""
    from pipeline.quant.quantize import _calibrated_sets

    silence = np.zeros(1600, np.float32)
    rows = [{"id": "calibration-0002", "samples": silence, "text": "hello"}]
    conditions = save_condition_sets(tmp_path / "holdback", {"white-10db": rows})
    recorded = HeldBackTexts(
        clips=["calibration-0002"],
        fp32_texts=["hello"],
        arrow_sha256=ConditionsManifest.read(conditions / "manifest.json")
        .conditions["white-10db"]
        .arrow_sha256,
    )

    def calibrated(**changes: Any) -> SimpleNamespace:
        manifest = CalibrationManifest.model_validate(
            {**CALIBRATION_MANIFEST, "conditions": {"white-10db": recorded.but(**changes)}}
        )
        return SimpleNamespace(root=tmp_path / "calibration", manifest=manifest)

    [(found, texts)] = _calibrated_sets(calibrated(), conditions)  # type: ignore[arg-type]
    assert found.name == "white-10db" and texts.fp32_texts == ["hello"]
    with pytest.raises(UserError, match=r"holdback conditions \['white-10db'\], not \[\]"):
        _calibrated_sets(calibrated(), None)  # type: ignore[arg-type]
    with pytest.raises(UserError, match="'white-10db' is not the set"):
        _calibrated_sets(calibrated(arrow_sha256={"x.arrow": "0" * 64}), conditions)  # type: ignore[arg-type]
    old = SimpleNamespace(root=tmp_path, manifest=CalibrationManifest(**CALIBRATION_MANIFEST))
    assert _calibrated_sets(old, None) == []  # type: ignore[arg-type]


def test_a_degraded_condition_s_budget_is_as_many_of_its_standard_errors_as_clean_s():
    """Clean: 1% WER over 10,000 words (SE 0.0995 points), budget 1 point. Babble: 10% over
    900 words (SE 1.0 point), so ~10 points; a condition quieter than clean keeps 1 point."""
    clean = EditCounts(substitutions=100, words=10_000)
    assert Budget(1.0).on(clean) == 1.0  # the clean clips' own: the points
    scaled = Budget(1.0, standard_error_points(clean))
    assert scaled.on(EditCounts(words=900)) == 1.0
    babble = EditCounts(substitutions=90, words=900)
    assert scaled.on(babble) == pytest.approx(1.0 / 0.0995 * 1.0, rel=1e-3)
    held = HeldBack("babble", [], [], [], babble, 0, scaled.on(babble))
    assert held.allowed_errors() == 90 + int(held.budget / 100 * 900)


def test_the_multilingual_half_is_transcribed_and_scored_in_each_clip_s_language(
    monkeypatch, tmp_path
):
    """German clips, scored with the basic normaliser (the English one would spell-map), are
    given their language; a rung that loops on them is rejected there though English passes."""
    german = held_back(LANGUAGES, [REFERENCE] * 4, language="de")
    assert german.languages == ["de"] * 4 and german.baseline.errors == 0
    looping = {
        0: [REFERENCE] * 4 + [LOOP, REFERENCE, REFERENCE, REFERENCE] + [REFERENCE] * 4,
        1: [REFERENCE] * 12,
        2: [REFERENCE] * 12,
    }
    ladder, chosen, fake = climb(monkeypatch, tmp_path, [BABBLE, german, CLEAN_SET], looping, 40.0)
    assert chosen == 1 and ladder.attempts[0].rejected_by == LANGUAGES
    assert fake.languages == [None] * 4 + ["de"] * 4 + [None] * 4
