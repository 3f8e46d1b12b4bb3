"""Quantizing the real tiny.en bundle: sensitivity, the WER budget loop, determinism, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml

from pipeline.config import CalibrateParams, QuantizeParams, SensitivityParams
from pipeline.npu.graph_check import check_graph
from pipeline.quant.calibration import HeldBackSets, run_calibration
from pipeline.quant.quantize import QuantizeInputs, quantize_variant
from pipeline.quant.sensitivity import run_sensitivity
from pipeline.sources.condition_sets import load_condition_sets
from pipeline.sources.speech_sets import clip_samples, load_saved_set
from tests.conftest import REPO, run_cli
from tests.test_calibration import noisy_copies
from tests.test_quantization_units import save_condition_sets
from whisper_npu.errors import UserError
from whisper_npu.fsutil import sha256_file
from whisper_npu.transcriber import Transcriber

pytestmark = pytest.mark.integration
# The mechanism is under test here, not accuracy (6 held-back clips are too few to hold a
# +1-point budget steadily); the default run's budgets are met in `dvc repro`, see bundle.json.
PARAMS = QuantizeParams(
    variants=["a16w8"],
    max_excluded=2,
    max_wer_delta={"a16w8": 50.0},
    encoder_calibration_feeds=4,
    decoder_calibration_feeds=16,
    sensitivity=SensitivityParams(encoder_feeds=1, decoder_feeds=4),
)


@pytest.fixture(scope="module")
def holdback(default_data_dir, tmp_path_factory) -> Path:
    """Half the held-back clips (4 to 9) under noise: a degraded condition the budget holds on."""
    noisy = {"white-10db": noisy_copies(default_data_dir, range(4, 7))}
    return save_condition_sets(tmp_path_factory.mktemp("q") / "holdback", noisy)


@pytest.fixture(scope="module")
def calibrated(fp32_bundle, default_data_dir, holdback, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("q") / "calibration"
    run_calibration(
        CalibrateParams(clips=4, holdout=6, decoder_steps_per_clip=4),
        fp32_bundle,
        default_data_dir,
        out,
        HeldBackSets(load_condition_sets(holdback)),
    )
    return out


@pytest.fixture(scope="module")
def inputs(fp32_bundle, calibrated, sensitivity_dir, default_data_dir, holdback) -> QuantizeInputs:
    return QuantizeInputs(fp32_bundle, calibrated, sensitivity_dir, default_data_dir, holdback)


@pytest.fixture(scope="module")
def sensitivity_dir(fp32_bundle, calibrated, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("q") / "sensitivity"
    run_sensitivity(PARAMS, fp32_bundle, calibrated, out)
    return out


@pytest.fixture(scope="module")
def a16w8(inputs, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("q") / "a16w8"
    quantize_variant(PARAMS, "a16w8", inputs, out)
    return out


def test_sensitivity_ranks_every_compute_layer(sensitivity_dir):
    result = json.loads((sensitivity_dir / "a16w8.json").read_text())
    assert result["grid"] == "a16w8"
    assert len(result["snr_db"]["encoder"]) >= 40 and len(result["snr_db"]["decoder"]) >= 40
    assert all(np.isfinite(v) or v == float("inf") for v in result["snr_db"]["decoder"].values())


def test_quantized_bundle_meets_its_budget_and_says_how(a16w8):
    meta = json.loads((a16w8 / "bundle.json").read_text())
    q = meta["quantization"]
    assert meta["variant"] == "a16w8" and q["backend"] == "quark" and q["grid"] == "a16w8"
    assert q["budget_met"] is True
    assert [a["passed"] for a in q["attempts"]] == [False] * (len(q["attempts"]) - 1) + [True]
    assert q["attempts"][-1]["excluded_per_graph"] == len(q["excluded"]["encoder"])
    assert q["holdout_wer"] - q["fp32_holdout_wer"] <= q["max_wer_delta"] / 100
    # Within budget on the noisy copies too, scored first, each from its own fp32 baseline.
    assert set(q["conditions"]) == set(q["attempts"][-1]["conditions"]) == {"white-10db", "clean"}
    for name, clips in (("white-10db", 3), ("clean", 6)):
        c = q["conditions"][name]
        assert c["clips"] == clips and c["margin"] >= 0 and c["loops"] <= c["fp32_loops"]
    assert q["conditions"]["clean"]["wer"] == q["holdout_wer"]
    report = (a16w8 / "QUANTIZATION.md").read_text()
    assert "## Layers kept float" in report and "| white-10db | 3 |" in report
    for name, digest in meta["files"].items():
        assert sha256_file(a16w8 / name) == digest
    for graph in ("encoder", "decoder"):
        report = check_graph(a16w8 / f"{graph}.onnx")
        assert report.opset == 17 and report.non_static == [] and report.control_flow == []
        assert report.op_counts.get("DequantizeLinear", 0) > 0


def test_quantized_bundle_transcribes(a16w8, default_data_dir):
    """Runs through the same runtime; the loose test budget may keep nothing float, so the
    transcript is held to a WER bound rather than to the exact fp32 words."""
    from whisper_npu.wer import corpus_wer

    rows = load_saved_set(default_data_dir, "eval").select(range(4))
    transcriber = Transcriber.from_bundle(a16w8)
    texts = [transcriber.transcribe(clip_samples(row)).text for row in rows]
    assert corpus_wer(rows["text"], texts) < 0.25


def test_quantization_is_deterministic(a16w8, inputs, tmp_path):
    again = tmp_path / "a16w8"
    quantize_variant(PARAMS, "a16w8", inputs, again)
    for graph in ("encoder.onnx", "decoder.onnx"):
        assert sha256_file(again / graph) == sha256_file(a16w8 / graph)


class CopyBackend:
    """A 'quantizer' that copies the float graph: the budget loop without Quark's minutes. It
    goes by the ORT backend's name, since bundle.json records only real backends."""

    name = "ort"

    def custom_ops_for(self, variant: str) -> None:
        return None

    def quantize(self, job) -> None:  # type: ignore[no-untyped-def]
        shutil.copyfile(job.fp32, job.out)


def test_a_missed_budget_is_written_and_said_not_raised(monkeypatch, inputs, tmp_path):
    """Every rung transcribes nothing: the stage still writes a bundle (the most float rung),
    marks it budget_met: false, and says so, instead of failing the whole pipeline."""
    from pipeline.quant import quantize

    monkeypatch.setattr(quantize, "get_backend", lambda name: CopyBackend())

    def silent(root, clips, languages):  # type: ignore[no-untyped-def]
        return (SimpleNamespace(text="") for _ in clips)

    monkeypatch.setattr(quantize, "transcribe_all", silent)
    out = tmp_path / "missed"
    result = quantize_variant(PARAMS, "a16w8", inputs, out)
    q = json.loads((out / "bundle.json").read_text())["quantization"]
    assert result["budget_met"] is False and q["budget_met"] is False
    assert [a["excluded_per_graph"] for a in q["attempts"]] == [0, 1, 2]
    assert len(q["excluded"]["encoder"]) == 2  # the most float rung is the one written
    # Rejected on the noisy clips, scored first; the last rung, the fallback, is scored whole.
    assert [a["rejected_by"] for a in q["attempts"]] == ["white-10db"] * 3
    assert list(q["attempts"][0]["conditions"]) == ["white-10db"]
    # The noisy clips' budget is in their own standard errors: never fewer points than clean's.
    assert q["conditions"]["white-10db"]["budget"] >= q["max_wer_delta"]
    assert q["attempts"][-1]["complete"] and q["holdout_wer"] == 1.0
    assert all(c["wer"] == 1.0 and c["margin"] < 0 for c in q["conditions"].values())
    assert "**not met**" in (out / "QUANTIZATION.md").read_text()
    assert not list(out.glob(".attempt-*")) and not (out / ".ranges").exists()


def test_bad_inputs_fail_in_one_line_and_keep_the_previous_bundle(
    a16w8, fp32_bundle, calibrated, sensitivity_dir, default_data_dir, holdback, tmp_path
):
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["quantize"]["variants"] = ["bf16", "a16w8"]  # a16w8 is opt-in (experimental)
    opted_in = tmp_path / "opted-in.yaml"
    opted_in.write_text(yaml.safe_dump(raw))
    common = [
        "--params",
        str(opted_in),
        "--bundle",
        str(fp32_bundle),
        "--sensitivity",
        str(sensitivity_dir),
        "--data",
        str(default_data_dir),
        "--conditions",
        str(holdback),
        "--out",
        str(a16w8),
    ]
    before = {p.name: sha256_file(p) for p in a16w8.iterdir()}

    raw["quantize"]["backend"] = "vai_q_onnx"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    vai_q = [*common[2:], "--params", str(tmp_path / "params.yaml")]
    missing = run_cli(
        "quantize", "--variant", "a16w8", "--calibration", str(calibrated), *vai_q, cwd=tmp_path
    )
    assert missing.returncode == 2 and "vai_q_onnx is not installed" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1

    unknown = run_cli("quantize", "--variant", "int3", *common, cwd=REPO)
    assert unknown.returncode == 2 and "invalid choice: 'int3'" in unknown.stderr

    empty = tmp_path / "empty_calibration"
    empty.mkdir()
    no_set = run_cli(
        "quantize", "--variant", "a16w8", "--calibration", str(empty), *common, cwd=REPO
    )
    assert no_set.returncode == 2 and "no calibration set here" in no_set.stderr

    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    for name in ("manifest.json", "decoder_steps.json"):
        (mismatched / name).write_bytes((calibrated / name).read_bytes())
    np.save(mismatched / "encoder_inputs.npy", np.zeros((4, 128, 3000), np.float32))
    wrong = run_cli(
        "quantize", "--variant", "a16w8", "--calibration", str(mismatched), *common, cwd=REPO
    )
    assert wrong.returncode == 2 and "the bundle needs (80, 3000)" in wrong.stderr

    assert {p.name: sha256_file(p) for p in a16w8.iterdir()} == before
    assert [p.name for p in a16w8.parent.iterdir() if p.name.startswith(".")] == []


def test_calibration_set_too_small_is_refused(fp32_bundle, default_data_dir, tmp_path):
    with pytest.raises(UserError, match=r"calibration set has \d+ clips; .* = 159"):
        run_calibration(
            CalibrateParams(clips=150, holdout=9), fp32_bundle, default_data_dir, tmp_path / "c"
        )


def test_quark_keeps_excluded_nodes_float(fp32_bundle, calibrated, tmp_path):
    import onnx

    from pipeline.quant.backends import QuantJob, QuarkBackend
    from pipeline.quant.calibration import CalibrationSet, FeedReader

    calibration = CalibrationSet(calibrated)
    kept = "/encoder/layers.3/fc2/MatMul"
    out = tmp_path / "encoder.onnx"
    reader = FeedReader(lambda: calibration.encoder_feeds(2))
    QuarkBackend().quantize(
        QuantJob(fp32_bundle / "encoder.onnx", out, reader, "a8w8", [kept], ["MatMul", "Gemm"])
    )
    graph = onnx.load(str(out)).graph
    producers = {output: node.op_type for node in graph.node for output in node.output}
    float_fed = [
        node.name
        for node in graph.node
        if node.op_type in ("MatMul", "Gemm")
        and not any(producers.get(name) == "DequantizeLinear" for name in node.input)
    ]
    assert float_fed == [kept]
