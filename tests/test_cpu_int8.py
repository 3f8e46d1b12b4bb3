"""cpu-int8, the CPU artifact, on a tiny random Whisper: ONNX Runtime's dynamic int8 graphs run
on the CPU provider alone, the bundle says what it is, and compile and release treat it as CPU
only (no NPU options, no forecast, no npu/ in the release) without calling it a fallback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import yaml

from pipeline.config import CompileParams, load_params
from pipeline.npu.compile import compile_bundle
from pipeline.quant.backends import OrtBackend, QuantJob
from pipeline.release.build import build_release
from tests.conftest import REPO, bundle_record, write_tiny_bundle
from whisper_npu.bundle import Artifact, BundleRecord
from whisper_npu.errors import UserError
from whisper_npu.execution import Device, Execution
from whisper_npu.fsutil import sha256_tree
from whisper_npu.layout import COMPILE_FILE, MODEL_CARD_FILE, NPU_DIR, PROVIDER_OPTIONS_FILE
from whisper_npu.providers import CPU_PROVIDER
from whisper_npu.transcriber import Transcriber
from whisper_npu.variants import CPU_ONLY_NOTE, DEFAULT_VARIANTS, VARIANTS, Variant
from whisper_npu.verify import verify_artifact

CPU_INT8 = Variant.CPU_INT8


class NoFeeds:
    """Dynamic quantization calibrates nothing: any read of the feeds is a bug."""

    def get_next(self) -> None:
        raise AssertionError("a dynamic quantizer read calibration feeds")

    def rewind(self) -> None:
        raise AssertionError("a dynamic quantizer read calibration feeds")


@pytest.fixture(scope="module")
def cpu_int8_bundle(tmp_path_factory) -> Path:
    """The tiny random bundle with both graphs through the ORT backend as cpu-int8."""
    fp32 = write_tiny_bundle(tmp_path_factory.mktemp("fp32") / "fp32")
    out = tmp_path_factory.mktemp("bundles") / "cpu-int8"
    shutil.copytree(fp32, out)
    for graph in ("encoder", "decoder"):
        OrtBackend().quantize(
            QuantJob(
                fp32=fp32 / f"{graph}.onnx",
                out=out / f"{graph}.onnx",
                reader=NoFeeds(),  # type: ignore[arg-type]
                variant=CPU_INT8,
                exclude=[],
                op_types=["MatMul", "Gemm", "Conv"],
            )
        )
    files = {name: digest for name, digest in sha256_tree(out).items() if name != "bundle.json"}
    (out / "bundle.json").write_text(json.dumps(bundle_record(CPU_INT8.value, files=files)))
    return out


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_the_registry_says_cpu_only_and_builds_it_with_ort_alone():
    spec = VARIANTS[CPU_INT8]
    assert spec.cpu_only and spec.runs_on == () and spec.meant_for is None
    assert spec.quant is not None and spec.quant.backend == "ort" and spec.quant.dynamic
    assert CPU_ONLY_NOTE in spec.description
    assert CPU_INT8 in DEFAULT_VARIANTS  # the bench table always has its row
    assert [v for v, s in VARIANTS.items() if s.cpu_only] == [CPU_INT8]


def test_dynamic_graphs_are_integer_kernels_of_the_cpu_provider(cpu_int8_bundle):
    for graph in ("encoder", "decoder"):
        ops = op_types(cpu_int8_bundle / f"{graph}.onnx")
        assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
        assert "QuantizeLinear" not in ops  # no calibrated Q/DQ: nothing the NPU flows take


def test_it_transcribes_on_the_cpu_provider_alone(cpu_int8_bundle):
    transcriber = Transcriber.from_bundle(cpu_int8_bundle, providers=[CPU_PROVIDER], threads=1)
    assert transcriber.runner.decoder.get_providers() == [CPU_PROVIDER]
    audio = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    assert isinstance(transcriber.transcribe(audio).text, str)
    assert BundleRecord.load(cpu_int8_bundle).variant == CPU_INT8


def test_compile_records_cpu_only_and_nothing_for_the_npu(cpu_int8_bundle, tmp_path, capsys):
    out = tmp_path / "compiled" / "cpu-int8"
    record = compile_bundle(CompileParams(target="phx"), cpu_int8_bundle, out)
    assert record.cpu_only is not None and record.cpu_only.startswith(CPU_ONLY_NOTE)
    assert record.forecast is None and record.target is None and record.report is None
    assert sorted(p.name for p in out.iterdir()) == [COMPILE_FILE, PROVIDER_OPTIONS_FILE]
    assert json.loads((out / PROVIDER_OPTIONS_FILE).read_text()) == {"encoder": {}, "decoder": {}}
    assert CPU_ONLY_NOTE in capsys.readouterr().err
    # The runtime runs it on the CPU as it is meant to: not a fallback, not "compiled".
    transcriber = Transcriber.from_artifact(out)
    assert transcriber.execution == Execution.cpu(Device.AUTO, compiled=False)
    assert Artifact.open(out).cpu_only


def test_only_a_cpu_only_report_goes_without_a_forecast(cpu_int8_bundle, tmp_path):
    out = tmp_path / "compiled"
    compile_bundle(CompileParams(), cpu_int8_bundle, out)
    record = json.loads((out / COMPILE_FILE).read_text())
    del record["cpu_only"]
    (out / COMPILE_FILE).write_text(json.dumps(record))
    with pytest.raises(UserError, match=r"compile_report\.json: forecast: Input should be"):
        Artifact.open(out)


def test_the_release_is_the_bundle_and_a_card_that_says_cpu_only(cpu_int8_bundle, tmp_path):
    compiled = tmp_path / "compiled" / "cpu-int8"
    compile_bundle(CompileParams(), cpu_int8_bundle, compiled)
    release = tmp_path / "release" / "cpu-int8"
    build_release(cpu_int8_bundle, compiled, tmp_path / "no-bench.json", release)
    assert not (release / NPU_DIR).exists()
    card = json.loads((release / "card.json").read_text())
    assert card["variant"] == "cpu-int8" and card["target"] is None
    assert card["compile"]["cpu_only"].startswith(CPU_ONLY_NOTE)
    assert any(note.startswith(CPU_ONLY_NOTE) for note in card["notes"])
    assert "ryzen_ai" not in card["versions"]
    text = (release / MODEL_CARD_FILE).read_text()
    assert "for ONNX Runtime's CPU execution provider" in text and "## NPU compile" not in text
    assert "## Runs on" in text and "Ryzen AI NPU, target" not in text
    assert verify_artifact(release).startswith("OK: ")
    opened = Transcriber.from_artifact(release)
    assert opened.execution == Execution.cpu(Device.AUTO, compiled=False)


def test_cpu_only_pairs_with_no_decoder_variant(tmp_path):
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for pair in ({"cpu-int8": "bf16"}, {"a8w8": "cpu-int8"}):
        raw["quantize"]["decoder_variant"] = pair
        path = tmp_path / "params.yaml"
        path.write_text(yaml.safe_dump(raw), encoding="utf-8")
        with pytest.raises(UserError) as error:
            load_params(path)
        message = str(error.value)
        assert "\n" not in message
        assert "decoder_variant: 'cpu-int8' is CPU only and pairs with no other variant" in message
