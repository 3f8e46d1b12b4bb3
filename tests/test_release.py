"""The release stage and `whisper-npu verify`: layout, model card, sha256 record, failures."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pipeline.release.build import artifact_name, build_release
from tests.conftest import bundle_record, quantization_record, run_cli
from whisper_npu.bundle import BundleRecord
from whisper_npu.decoding import DecodingSpec
from whisper_npu.errors import GateFailure, UserError
from whisper_npu.fsutil import sha256_file, sha256_tree
from whisper_npu.layout import CARD_FILE, COMPILE_FILE, MODEL_CARD_FILE, NPU_DIR, model_slug
from whisper_npu.verify import verify_artifact
from whisper_npu.whisper_io import WhisperDims

CALIBRATION_MANIFEST = {
    "bundle_sha256": "f" * 64,
    "calibration_clips": ["calibration-0000", "calibration-0001"],
    "holdout_clips": ["calibration-0002"],
    "holdout_fp32_texts": ["hello"],
    "decoder_steps": 12,
    "bytes": {"encoder_inputs.npy": 1024, "decoder_steps.json": 64},
}


def fake_bundle(root: Path, variant: str = "a16w8") -> Path:
    """A bundle dir with the files and bundle.json fields the release reads (graphs are
    placeholder bytes: the release copies and hashes them, it never runs them)."""
    root.mkdir(parents=True)
    for name, payload in {
        "encoder.onnx": b"encoder graph",
        "decoder.onnx": b"decoder graph",
        "tokenizer.json": b"{}",
        "mel_filters.npy": b"filters",
    }.items():
        (root / name).write_bytes(payload)
    (root / "QUANTIZATION.md").write_text("# report\n")
    quantization = quantization_record(CALIBRATION_MANIFEST, variant, max_wer_delta=1.0)
    quantization["attempts"].append(
        {
            "excluded_per_graph": 1,
            "holdout_wer": 0.015,
            "wer_delta": 0.5,
            "complete": True,
            "passed": True,
        }
    )
    meta = bundle_record(
        variant,
        WhisperDims(80, 1500, 8, 1, 2, 16, 8),
        DecodingSpec((1,), 0, 2, (), (), None, 8),
        model={"source": "builtin:tiny.en", "kind": "ct2", "model_sha256": "a" * 64},
        custom_ops=None,
        quantization=quantization,
    )
    meta["files"] = {
        name: digest
        for name, digest in sha256_tree(root).items()
        if name not in ("bundle.json", "QUANTIZATION.md")
    }
    (root / "bundle.json").write_text(json.dumps(meta))
    return root


def placement(coverage: float, npu_subgraphs: int, cpu: list[dict[str, Any]]) -> dict[str, Any]:
    """One graph's forecast as the compile stage writes it."""
    return {
        "optimized": True,
        "opset": 17,
        "nodes": 20,
        "op_counts": {"MatMul": 20},
        "npu_nodes": round(20 * coverage),
        "coverage": coverage,
        "npu_subgraphs": npu_subgraphs,
        "cpu_islands": npu_subgraphs - 1,
        "boundary_nodes": 0,
        "cpu_ops": cpu,
        "unverified": [],
        "non_static": [],
        "control_flow": [],
        "work": {"macs": 1000, "weight_bytes": 400, "inputs": {"x": 16}, "outputs": {"y": 16}},
        "clean": npu_subgraphs == 1,
    }


def fake_compiled(root: Path, bundle: Path, **overrides: object) -> Path:
    root.mkdir(parents=True)
    compiled = {
        "variant": "a16w8",
        "target": "stx",
        "ryzen_ai_version": "1.5.0",
        "ops_table": {"ryzen_ai_version": "1.5", "source": "AMD"},
        "ep_available": False,
        "providers": ["CPUExecutionProvider"],
        "bundle": Path(os.path.relpath(bundle, root)).as_posix(),
        "bundle_sha256": sha256_file(bundle / "bundle.json"),
        "budget_met": True,
        "forecast": {
            "flow": "x2-int",
            "npu_dtype": "A16W8",
            "no_npu_reason": None,
            "sources": ["amd-int8-cnn-partition"],
            "encoder": placement(1.0, 1, []),
            "decoder": placement(
                0.95,
                2,
                [
                    {
                        "op_type": "Gather",
                        "reason": "float between Q/DQ units",
                        "count": 2,
                        "nodes": ["/G", "/G_1"],
                    }
                ],
            ),
            "tokens_per_window": 120,
            "dispatches_per_window": 241,
            "window": {"dispatches": 241, "macs": 121000, "weight_bytes": 48400, "io_bytes": 3872},
            "table": {
                "column": "A16W8",
                "encoder_subgraphs": 1,
                "decoder_subgraphs": 2,
                "coverage": {"encoder": 1.0, "decoder": 0.95},
                "dispatches_per_window": 241,
            },
            "clean": False,
        },
        "report": None,
        "disagreements": [],
        "seed_dispatches": 2679,
        "amd_demo_form": None,
        **overrides,
    }
    (root / COMPILE_FILE).write_text(json.dumps(compiled))
    (root / "provider_options.json").write_text(
        json.dumps({"encoder": {"target": "X2"}, "decoder": {"target": "X2"}})
    )
    (root / "vaip_config_encoder.json").write_text('{"passes": []}')
    return root


@pytest.fixture
def inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    bundle = fake_bundle(tmp_path / "bundles" / "a16w8")
    compiled = fake_compiled(tmp_path / "compiled" / "a16w8", bundle)
    metrics = tmp_path / "metrics" / "bench.json"
    metrics.parent.mkdir()
    metrics.write_text(
        json.dumps({"a16w8": {"wer": 0.03, "e2e_ms_p50": 410.5, "speedup_vs_fp32": 1.5}})
    )
    return bundle, compiled, metrics


@pytest.mark.parametrize(
    ("source", "slug"),
    [
        ("builtin:tiny.en", "tiny-en"),
        ("openai/whisper-base.en", "base-en"),
        ("openai/whisper-large-v3", "large-v3"),
        ("Systran/faster-whisper-small", "small"),
        ("/models/My_Whisper/", "my-whisper"),
        ("C:\\models\\medium", "medium"),
    ],
)
def test_model_slug(source: str, slug: str) -> None:
    assert model_slug(source) == slug


def test_release_layout_card_and_verify(inputs, tmp_path: Path) -> None:
    bundle, compiled, metrics = inputs
    out = tmp_path / "release" / "a16w8"
    summary = build_release(bundle, compiled, metrics, out)

    assert summary["artifact"] == "whisper-tiny-en-a16w8"
    top = sorted(p.name for p in out.iterdir())
    assert top == sorted([*(p.name for p in bundle.iterdir()), NPU_DIR, CARD_FILE, MODEL_CARD_FILE])
    assert sorted(p.name for p in (out / NPU_DIR).iterdir()) == sorted(
        p.name for p in compiled.iterdir()
    )
    # npu/ points at the release's own bundle files, not the build tree's.
    assert json.loads((out / NPU_DIR / COMPILE_FILE).read_text())["bundle"] == ".."
    for name in ("encoder.onnx", "decoder.onnx", "bundle.json", "QUANTIZATION.md"):
        assert (out / name).read_bytes() == (bundle / name).read_bytes()

    card = json.loads((out / CARD_FILE).read_text())
    expected_files = {
        name: digest
        for name, digest in sha256_tree(out).items()
        if name not in (CARD_FILE, MODEL_CARD_FILE)
    }
    assert card["files"] == expected_files
    assert card["target"] == "stx"
    assert card["metrics"] == {"wer": 0.03, "e2e_ms_p50": 410.5, "speedup_vs_fp32": 1.5}
    assert card["quantization"]["excluded"]["encoder"] == [{"node": "/enc/MatMul", "snr_db": 31.5}]
    assert card["quantization"]["holdout_wer"] == 0.015
    assert card["quantization"]["budget_met"] is True
    assert "budget +1.0 points: met" in (out / MODEL_CARD_FILE).read_text()
    assert "| 0 | ≥ 5.00% | ≥ +4.00 |" in (out / MODEL_CARD_FILE).read_text()
    assert card["quantization"]["calibration"]["clips"] == 2
    assert card["compile"]["forecast"]["decoder"]["cpu_ops"] == [
        {"op_type": "Gather", "count": 2, "reason": "float between Q/DQ units"}
    ]
    assert card["versions"]["quark"] == "0.13"
    assert card["sources"]["bundle_sha256"] == sha256_file(bundle / "bundle.json")
    assert any("without the VitisAI" in note for note in card["notes"])

    text = (out / MODEL_CARD_FILE).read_text()
    assert "# whisper-tiny-en-a16w8" in text
    assert "| wer | 3.00% |" in text
    assert "`/enc/MatMul` (31.5 dB)" in text
    assert f"`{card['quantization']['calibration']['manifest_sha256']}`" in text
    assert f"| `encoder.onnx` | `{sha256_file(bundle / 'encoder.onnx')}` |" in text
    assert "| decoder | 95.00% | 2 | 1 | Gather (2, float between Q/DQ units) |" in text
    assert "whisper-npu transcribe --artifact" in text

    assert verify_artifact(out).startswith(f"OK: {len(expected_files)} files match card.json")


def test_release_is_byte_reproducible(inputs, tmp_path: Path) -> None:
    bundle, compiled, metrics = inputs
    first = tmp_path / "first"
    second = tmp_path / "second"
    build_release(bundle, compiled, metrics, first)
    build_release(bundle, compiled, metrics, second)
    assert sha256_tree(first) == sha256_tree(second)


def test_calibration_identity_follows_the_manifest(inputs, tmp_path: Path) -> None:
    bundle, compiled, metrics = inputs
    build_release(bundle, compiled, metrics, tmp_path / "one")
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["quantization"]["calibration"]["calibration_clips"].append("calibration-0009")
    (bundle / "bundle.json").write_text(json.dumps(meta))
    (compiled / COMPILE_FILE).write_text(
        json.dumps(
            {
                **json.loads((compiled / COMPILE_FILE).read_text()),
                "bundle_sha256": sha256_file(bundle / "bundle.json"),
            }
        )
    )
    build_release(bundle, compiled, metrics, tmp_path / "two")
    one, two = (
        json.loads((tmp_path / name / CARD_FILE).read_text())["quantization"]["calibration"]
        for name in ("one", "two")
    )
    assert one["manifest_sha256"] != two["manifest_sha256"]
    assert (one["clips"], two["clips"]) == (2, 3)


@pytest.mark.parametrize("bench", [None, {"fp32": {"wer": 0.02, "speedup_vs_fp32": 1.0}}])
def test_missing_bench_metrics_are_a_note_not_a_guess(inputs, tmp_path: Path, bench) -> None:
    bundle, compiled, metrics = inputs
    if bench is None:
        metrics.unlink()
    else:
        metrics.write_text(json.dumps(bench))
    out = tmp_path / "release"
    build_release(bundle, compiled, metrics, out)
    card = json.loads((out / CARD_FILE).read_text())
    assert card["metrics"] is None
    assert any(note.startswith("no bench metrics yet") for note in card["notes"])
    assert "No bench metrics yet." in (out / MODEL_CARD_FILE).read_text()


def test_malformed_bench_is_a_user_error(inputs, tmp_path: Path) -> None:
    bundle, compiled, metrics = inputs
    metrics.write_text("[0.03]")
    with pytest.raises(UserError, match="expected a mapping of variant to metrics"):
        build_release(bundle, compiled, metrics, tmp_path / "release")


def test_a_compile_report_without_forecast_is_one_line(inputs, tmp_path: Path) -> None:
    bundle, compiled, metrics = inputs
    shutil.rmtree(compiled)
    fake_compiled(compiled, bundle, forecast=None, ep_available=True)
    with pytest.raises(UserError, match=r"compile_report\.json: forecast: Input should be"):
        build_release(bundle, compiled, metrics, tmp_path / "release")


def test_a_compile_of_another_bundle_is_refused(inputs, tmp_path: Path) -> None:
    bundle, _, metrics = inputs
    other = fake_bundle(tmp_path / "other")
    compiled = fake_compiled(tmp_path / "compiled-other", other)
    with pytest.raises(UserError, match=f"compiled from {other.resolve()}, not {bundle}"):
        build_release(bundle, compiled, metrics, tmp_path / "release")


def test_a_missed_budget_is_a_note_and_said_in_the_card(tmp_path: Path) -> None:
    bundle = fake_bundle(tmp_path / "bundles" / "a16w8")
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["quantization"].update(budget_met=False, holdout_wer=0.035)
    (bundle / "bundle.json").write_text(json.dumps(meta))
    compiled = fake_compiled(tmp_path / "compiled" / "a16w8", bundle)
    out = tmp_path / "release"
    build_release(bundle, compiled, tmp_path / "no-bench.json", out)
    card = json.loads((out / CARD_FILE).read_text())
    assert card["quantization"]["budget_met"] is False
    assert any(note.startswith("WER budget not met: held-back WER 3.50%") for note in card["notes"])
    assert "budget +1.0 points: NOT MET" in (out / MODEL_CARD_FILE).read_text()


def previous_release(tmp_path: Path) -> Path:
    out = tmp_path / "release" / "a16w8"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("last good release")
    return out


def assert_untouched(out: Path) -> None:
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert [p.name for p in out.parent.iterdir()] == [out.name]


def test_stale_compile_is_refused(inputs, tmp_path: Path) -> None:
    bundle, compiled, metrics = inputs
    shutil.rmtree(compiled)
    fake_compiled(compiled, bundle, bundle_sha256="0" * 64)
    out = previous_release(tmp_path)
    with pytest.raises(UserError, match=r"compiled from another bundle\.json"):
        build_release(bundle, compiled, metrics, out)
    assert_untouched(out)


def test_corrupt_bundle_is_refused(inputs, tmp_path: Path) -> None:
    bundle, compiled, metrics = inputs
    (bundle / "decoder.onnx").write_bytes(b"truncated")
    out = previous_release(tmp_path)
    with pytest.raises(UserError, match=r"changed: decoder\.onnx"):
        build_release(bundle, compiled, metrics, out)
    assert_untouched(out)


def test_missing_compile_is_a_user_error(inputs, tmp_path: Path) -> None:
    bundle, _, metrics = inputs
    with pytest.raises(UserError, match=f"no {COMPILE_FILE}"):
        build_release(bundle, tmp_path / "nowhere", metrics, tmp_path / "release")


def test_verify_names_every_difference(inputs, tmp_path: Path) -> None:
    bundle, compiled, metrics = inputs
    out = tmp_path / "release"
    build_release(bundle, compiled, metrics, out)
    (out / NPU_DIR / "vaip_config_encoder.json").write_text("{}")
    (out / "tokenizer.json").unlink()
    (out / "notes.txt").write_text("not part of the release")
    with pytest.raises(GateFailure) as failure:
        verify_artifact(out)
    assert str(failure.value).endswith(
        "does not match card.json: changed: npu/vaip_config_encoder.json; missing: tokenizer.json; "
        "extra: notes.txt"
    )


def test_verify_catches_a_card_rewritten_to_match(inputs, tmp_path: Path) -> None:
    """A swapped graph with a card re-hashed to match still disagrees with bundle.json."""
    bundle, compiled, metrics = inputs
    out = tmp_path / "release"
    build_release(bundle, compiled, metrics, out)
    (out / "encoder.onnx").write_bytes(b"another graph")
    card = json.loads((out / CARD_FILE).read_text())
    card["files"]["encoder.onnx"] = sha256_file(out / "encoder.onnx")
    (out / CARD_FILE).write_text(json.dumps(card))
    with pytest.raises(GateFailure, match=r"does not match bundle\.json: changed: encoder\.onnx"):
        verify_artifact(out)


def test_verify_plain_bundle(inputs) -> None:
    bundle, _, _ = inputs
    assert verify_artifact(bundle) == f"OK: 4 files match bundle.json in {bundle}"
    (bundle / "mel_filters.npy").write_bytes(b"other")
    with pytest.raises(GateFailure, match=r"changed: mel_filters\.npy"):
        verify_artifact(bundle)


def test_verify_cli_exit_codes_without_params_file(inputs, tmp_path: Path) -> None:
    """Deployments verify where no params.yaml exists: 0 OK, 1 mismatch, 2 not an artifact."""
    bundle, compiled, metrics = inputs
    out = tmp_path / "release"
    build_release(bundle, compiled, metrics, out)
    cwd = tmp_path / "deploy"
    cwd.mkdir()

    def verify(target: Path) -> subprocess.CompletedProcess[str]:
        return run_cli("verify", str(target), cwd=cwd, timeout=120)

    ok = verify(out)
    assert (ok.returncode, ok.stdout.strip()) == (0, f"OK: 9 files match card.json in {out}")
    (out / "encoder.onnx").write_bytes(b"bit rot")
    bad = verify(out)
    assert bad.returncode == 1
    assert bad.stderr.strip() == (
        f"whisper-npu verify: error: {out}: does not match card.json: changed: encoder.onnx"
    )
    neither = verify(cwd)
    assert neither.returncode == 2
    assert "not a release or bundle directory" in neither.stderr


def test_artifact_name_matches_registry_names() -> None:
    record = BundleRecord.model_validate(bundle_record("bf16"))
    assert artifact_name(record) == "whisper-tiny-en-bf16"


def test_card_shows_wer_delta_in_points_not_percent():
    from whisper_npu.figures import BenchRow

    row = BenchRow(wer=0.0306, wer_delta_vs_fp32=0.454, speedup_vs_fp32=1.0)
    shown = {name: unit.show(value) for name, value, unit in row.figures()}
    assert shown["wer"] == "3.06%"
    assert shown["wer_delta_vs_fp32"] == "+0.45 points"


@pytest.mark.integration
def test_a_release_ships_an_eval_set_device_report_reads(inputs, tmp_path, default_data_dir):
    """eval/: the first eval clips up to one window, as 16-bit WAV with their references, the
    audiofolder `whisper-npu device-report` measures with; `verify` covers it."""
    from pipeline.release.build import EvalSet
    from whisper_npu.device_report import eval_clips

    bundle, compiled, metrics = inputs
    out = tmp_path / "release"
    build_release(bundle, compiled, metrics, out, EvalSet(default_data_dir, 3))
    clips = eval_clips(out / "eval")
    assert [clip.id for clip in clips] == ["clip000.wav", "clip001.wav", "clip002.wav"]
    assert all(clip.reference and 0 < clip.samples.size <= 30 * 16000 for clip in clips)
    card = json.loads((out / CARD_FILE).read_text())
    assert {"eval/metadata.csv", "eval/clip000.wav"} <= set(card["files"])
    assert verify_artifact(out).startswith("OK: ")
    (out / "eval" / "clip001.wav").write_bytes(b"RIFF")
    with pytest.raises(GateFailure, match=r"changed: eval/clip001\.wav"):
        verify_artifact(out)


def test_the_card_shows_each_held_back_condition_and_what_rejected_each_rung():
    """A rung a degraded condition rejected before the clean clips were reached has no clean
    WER to show: the card says so instead of a lower bound of zero."""
    from pipeline.release.model_card import _clean_cells, _held_back_conditions

    rejected = {
        "excluded_per_graph": 0,
        "holdout_wer": 0.0,
        "wer_delta": -3.0,
        "complete": False,
        "passed": False,
        "conditions": {"babble-5db": {"wer": 0.2, "wer_delta": 4.0, "loops": 0}},
        "rejected_by": "babble-5db",
    }
    kept = {**rejected, "holdout_wer": 0.03, "wer_delta": 0.1, "complete": True, "passed": True}
    kept["conditions"] = {"clean": {}, "babble-5db": {}}
    score = {"clips": 56, "fp32_wer": 0.1, "wer": 0.11, "budget": 1.5, "margin": 0.5, "loops": 1}

    assert _clean_cells(rejected) == ("not scored", "-")
    assert _clean_cells(kept) == ("3.00%", "+0.10")
    table = _held_back_conditions({"conditions": {"babble-5db": {**score, "fp32_loops": 0}}})
    assert table[-1] == "| babble-5db | 56 | 10.00% | 11.00% | +1.50 | +0.50 | 1 (0) |"
    assert _held_back_conditions({"conditions": None}) == []
