"""The device loop: `device-report` on a (faked) Ryzen AI laptop writes one typed record with the
EP's recorded partition reports, NPU and CPU figures of the same clips; `compare` holds it
against the forecast anywhere: agreement exits 0, a planted disagreement 1. Here, without an
NPU, device-report refuses in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.config import CompileParams
from pipeline.npu.compile import compile_bundle
from tests.conftest import write_tiny_bundle
from tests.fake_ep import FakeVitisAi, machine, report_like
from whisper_npu import device_report
from whisper_npu import transcriber as transcriber_module
from whisper_npu.bundle import Artifact
from whisper_npu.cli import main
from whisper_npu.device_report import DeviceReport, eval_clips
from whisper_npu.errors import UserError
from whisper_npu.providers import CPU_PROVIDER, VITISAI_PROVIDER


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("device")
    bundle = write_tiny_bundle(root / "bundles" / "fp32", "fp32")
    compile_bundle(CompileParams(), bundle, root / "compiled" / "fp32", allow_split=True)
    return root / "compiled" / "fp32"


def write_eval_clips(folder: Path) -> Path:
    """Three clips of noise as an audiofolder, the layout a release's eval/ has."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    rows = ["file_name,text"]
    for n in range(3):
        sf.write(folder / f"c{n}.wav", rng.standard_normal(8000 + 4000 * n) * 0.1, 16000)
        rows.append(f"c{n}.wav,hello world {n}")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture
def clips(tmp_path) -> Path:
    return write_eval_clips(tmp_path / "eval")


@pytest.fixture
def laptop(compiled, tmp_path, monkeypatch):
    """An STX laptop whose EP places the graphs as the forecast does."""
    monkeypatch.setenv("WHISPER_NPU_CACHE", str(tmp_path / "cache"))
    forecast = Artifact.open(compiled).record.report.forecast  # type: ignore[union-attr]
    fake = FakeVitisAi(lambda graph: report_like(forecast, graph))
    monkeypatch.setattr(transcriber_module, "import_onnxruntime", lambda: fake)
    stx = machine("stx")
    monkeypatch.setattr(device_report, "Host", lambda: stx)
    return stx


def test_a_report_round_trip(compiled, clips, laptop, tmp_path, capsys):
    out = tmp_path / "report.json"
    args = ["device-report", "--artifact", str(compiled), "--data", str(clips), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert (
        "the device agrees with the forecast" in printed and "NPU vs this laptop's CPU" in printed
    )
    report = DeviceReport.read(out)
    assert report.execution.provider == VITISAI_PROVIDER and report.npu.provider == VITISAI_PROVIDER
    assert report.cpu.provider == CPU_PROVIDER and report.compiled is True
    assert report.clips == 3 and report.audio_s == pytest.approx(0.5 + 0.75 + 1.0)
    assert report.machine.chip == "stx" and report.machine.ryzen_ai == "1.7.1"
    assert [t.npu for t in report.texts] == [t.cpu for t in report.texts]  # the CPU ran both
    encoder = report.ep_reports["encoder"]
    assert encoder is not None and encoder.npu_nodes > 0

    assert main(["compare", "--artifact", str(compiled), "--report", str(out)]) == 0
    assert capsys.readouterr().out.endswith("the device agrees with the forecast\n")

    planted = json.loads(out.read_text())
    planted["ep_reports"]["decoder"]["cpu_op_types"].append("MatMul")
    planted["ep_reports"]["decoder"]["cpu_nodes"] += 1
    out.write_text(json.dumps(planted))
    assert main(["compare", "--artifact", str(compiled), "--report", str(out)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("disagrees: decoder: EP placed")
    assert (
        lines[-1]
        == "disagrees: decoder: EP put ['MatMul'] on the CPU, forecast had them on the NPU"
    )


def test_a_second_run_loads_the_cache_the_first_compiled(compiled, clips, laptop):
    first = device_report.measure(compiled, clips, laptop)
    # The fake EP writes only its report; a real one writes the compiled model beside it.
    second = device_report.measure(compiled, clips, laptop)
    assert first.compiled is True and second.compiled is False


def test_here_there_is_no_npu_to_measure(compiled, clips, tmp_path, capsys):
    out = tmp_path / "report.json"
    args = ["device-report", "--artifact", str(compiled), "--data", str(clips), "--out", str(out)]
    assert main(args) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(
        "whisper-npu device-report: error: device-report measures the NPU: "
        "VitisAIExecutionProvider not available"
    )
    assert not out.exists()


def test_a_report_of_another_bundle_or_a_bad_eval_set_is_refused(compiled, clips, laptop, tmp_path):
    report = device_report.measure(compiled, clips, laptop)
    other = report.but(bundle_sha256="0" * 64)
    with pytest.raises(UserError, match="the report measured another bundle"):
        device_report.compare(other, compiled)
    (clips / "metadata.csv").write_text("file_name,text\n../outside.wav,x\n")
    with pytest.raises(UserError, match="is outside"):
        eval_clips(clips)
