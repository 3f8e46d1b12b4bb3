"""`--device auto|npu|cpu`: where a compiled artifact runs, chosen from the machine's facts and
said once; the provider options of the installed Ryzen AI release and chip; the working
directory outside the release; the EP's own reports held against the forecast. The machine is
faked (tests/fake_ep.py): no NPU here, and nothing pretends there is one outside these tests."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.config import CompileParams
from pipeline.npu.compile import compile_bundle
from tests.conftest import write_tiny_bundle
from tests.fake_ep import NO_EP, FakeVitisAi, machine, report_like
from whisper_npu import transcriber as transcriber_module
from whisper_npu import vitisai
from whisper_npu.bundle import Artifact
from whisper_npu.cli import main
from whisper_npu.errors import UserError
from whisper_npu.execution import Device, Execution, NpuSetup, choose
from whisper_npu.layout import COMPILE_FILE
from whisper_npu.model import load
from whisper_npu.providers import CPU_PROVIDER, VITISAI_PROVIDER
from whisper_npu.transcriber import Transcriber

VITISAI = "onnxruntime-vitisai"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict[str, Path]:
    """fp32 (the VAIML flow) and a16w8 (the integer flow) of a tiny random Whisper, compiled
    for STX here: provider options and a forecast, no EP."""
    root = tmp_path_factory.mktemp("execution")
    found = {}
    for variant in ("fp32", "a16w8"):
        bundle = write_tiny_bundle(root / "bundles" / variant, variant)
        found[variant] = root / "compiled" / variant
        compile_bundle(CompileParams(), bundle, found[variant], allow_split=True)
    return found


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("WHISPER_NPU_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("RYZEN_AI_INSTALLATION_PATH", "C:/Program Files/RyzenAI/1.7.1")
    return tmp_path / "cache"


def open_(path: Path) -> Artifact:
    return Artifact.open(path)


def test_a_bundle_runs_on_the_cpu_by_design_and_npu_refuses_it(compiled):
    bundle = open_(compiled["fp32"]).bundle.root
    chosen = choose(open_(bundle), Device.AUTO, machine())
    assert chosen == Execution.cpu(Device.AUTO, compiled=False)
    with pytest.raises(UserError, match=r"--device npu: .* is a bundle, compiled for no NPU"):
        choose(open_(bundle), Device.NPU, machine())


def test_without_the_ep_auto_says_why_npu_refuses_and_cpu_says_so(compiled):
    artifact = open_(compiled["fp32"])
    auto = choose(artifact, Device.AUTO, machine(ort=NO_EP))
    assert isinstance(auto, Execution) and auto.provider == CPU_PROVIDER and auto.compiled
    (line,) = auto.lines()
    assert line == (
        "VitisAIExecutionProvider not available (onnxruntime 1.23.3 from onnxruntime-vitisai; "
        "providers: CPUExecutionProvider); running on CPUExecutionProvider"
    )
    with pytest.raises(UserError, match=r"^--device npu: VitisAIExecutionProvider not available"):
        choose(artifact, Device.NPU, machine(ort=NO_EP))
    cpu = choose(artifact, Device.CPU, machine())
    assert isinstance(cpu, Execution)
    assert cpu.lines() == ["running on CPUExecutionProvider (--device cpu)"]


@pytest.mark.parametrize(
    ("variant", "host", "expected"),
    [
        ("fp32", machine(chip="phx"), "fp32 has no NPU path on PHX/HPT"),
        ("fp32", machine(chip=None), "no NPU found (faked for a test)"),
        ("fp32", machine(ready=False), "the STX NPU is not usable: faked for a test"),
        ("a16w8", machine(release="1.4"), "Ryzen AI 1.4 (voe 1.4) predates 1.5"),
    ],
)
def test_what_keeps_a_compiled_artifact_off_the_npu(compiled, variant, host, expected):
    artifact = open_(compiled[variant])
    auto = choose(artifact, Device.AUTO, host)
    assert isinstance(auto, Execution) and auto.fallback is not None
    assert auto.fallback.startswith(expected)
    with pytest.raises(UserError, match="^" + re.escape(f"--device npu: {expected}")):
        choose(artifact, Device.NPU, host)


def setup_of(path: Path, host) -> NpuSetup:
    chosen = choose(open_(path), Device.NPU, host)
    assert isinstance(chosen, NpuSetup)
    return chosen


def test_vaiml_options_follow_the_installed_release(compiled, cache):
    setup = setup_of(compiled["fp32"], machine())
    encoder = setup.options["encoder"]
    assert setup.workdir.parent == cache / "vitisai"
    assert encoder[vitisai.CACHE_DIR] == str(setup.workdir / "cache")
    assert encoder[vitisai.CACHE_KEY] == "whisper-fp32-encoder"
    assert encoder[vitisai.CACHE_IN_MEMORY] == "0"
    config = json.loads(Path(encoder[vitisai.CONFIG_FILE]).read_text())
    assert (
        config["target"] == "VAIML" and Path(encoder[vitisai.CONFIG_FILE]).parent == setup.workdir
    )
    assert setup.execution.notes == [
        "no compiled EP cache shipped: the first run compiles for the NPU (AMD: ~15 min for "
        "Whisper); it needs the full Ryzen AI install (the deployment EP compiles no BF16)"
    ]
    older = setup_of(compiled["fp32"], machine(release="1.5.0"))
    config = json.loads(Path(older.options["encoder"][vitisai.CONFIG_FILE]).read_text())
    assert "target" not in config and config["passes"][1]["name"] == "vaiml_partition"
    assert older.execution.notes[-1].startswith(
        "made for Ryzen AI 1.6, 1.7, 1.8; this is 1.5.0 (voe 1.5.0): its provider options "
        "follow 1.5's documentation"
    )


@pytest.mark.parametrize(
    ("chip", "release", "expected"),
    [
        ("stx", "1.7.1", {"target": "X2"}),
        ("krk", "1.6.1", {"target": "X2"}),
        ("phx", "1.7.1", {"target": "X1", "xclbin": "phoenix/4x4.xclbin"}),
        ("stx", "1.5.1", {"xclbin": "strix/AMD_AIE2P_4x4_Overlay.xclbin"}),
        ("phx", "1.5", {"xclbin": "phoenix/4x4.xclbin"}),
    ],
)
def test_integer_options_follow_the_release_and_the_chip(compiled, chip, release, expected):
    options = setup_of(compiled["a16w8"], machine(chip=chip, release=release)).options["decoder"]
    found = {key: options[key] for key in ("target", "xclbin") if key in options}
    if "xclbin" in expected:
        prefix = "C:/Program Files/RyzenAI/1.7.1/voe-4.0-win_amd64/xclbins/"
        assert found["xclbin"] == prefix + expected["xclbin"]
        found["xclbin"] = expected["xclbin"]
    assert found == expected and vitisai.CONFIG_FILE not in options


def ship_cache(compiled: Path, tmp_path: Path, onnxruntime: str) -> Path:
    """A copy of the compiled directory with an EP cache that `onnxruntime` made."""
    copy = tmp_path / "shipped"
    shutil.copytree(compiled, copy)
    blob = copy / "cache" / "whisper-fp32-encoder" / "compiled.bin"
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"made by the EP")
    record = json.loads((copy / COMPILE_FILE).read_text())
    ep = {"ryzen_ai": "1.7.1", "how": "voe 1.7.1", "onnxruntime": onnxruntime}
    bundle = Path(record["bundle"])
    moved = Path(os.path.relpath((compiled / bundle).resolve(), copy))
    (copy / COMPILE_FILE).write_text(json.dumps({**record, "ep": ep, "bundle": moved.as_posix()}))
    return copy


def test_a_shipped_cache_is_used_only_with_the_ep_that_made_it(compiled, tmp_path):
    same = ship_cache(
        compiled["fp32"], tmp_path / "a", "onnxruntime 1.23.3 from onnxruntime-vitisai"
    )
    setup = setup_of(same, machine())
    assert (setup.workdir / "cache" / "whisper-fp32-encoder" / "compiled.bin").read_bytes() == (
        b"made by the EP"
    )
    assert setup.execution.notes == []
    other = ship_cache(
        compiled["fp32"], tmp_path / "b", "onnxruntime 1.23.2 from onnxruntime-vitisai"
    )
    setup = setup_of(other, machine())
    assert not (setup.workdir / "cache").exists()
    assert setup.execution.notes[0].startswith(
        "its EP cache was made by Ryzen AI 1.7.1 (onnxruntime 1.23.2 from onnxruntime-vitisai), "
        "this is onnxruntime 1.23.3 from onnxruntime-vitisai: AMD reuses no cache"
    )


def fake_ep(monkeypatch, path: Path, extra_cpu: tuple[str, ...] = ()) -> FakeVitisAi:
    forecast = open_(path).record.report.forecast  # type: ignore[union-attr]
    fake = FakeVitisAi(lambda graph: report_like(forecast, graph, extra_cpu))
    monkeypatch.setattr(transcriber_module, "import_onnxruntime", lambda: fake)
    return fake


def test_on_the_ep_the_sessions_get_the_options_and_transcribe_as_on_the_cpu(compiled, monkeypatch):
    samples = np.random.default_rng(0).standard_normal(16000).astype(np.float32) * 0.1
    on_cpu = Transcriber.from_artifact(compiled["fp32"], device=Device.CPU).transcribe(samples)
    fake = fake_ep(monkeypatch, compiled["fp32"])
    on_npu = Transcriber.from_artifact(compiled["fp32"], device=Device.NPU, machine=machine())
    assert on_npu.execution.provider == VITISAI_PROVIDER and on_npu.execution.chip == "stx"
    assert [opts[vitisai.CACHE_KEY] for opts in fake.options] == [
        "whisper-fp32-encoder",
        "whisper-fp32-decoder",
    ]
    assert on_npu.transcribe(samples).tokens == on_cpu.tokens


def test_an_ep_report_that_moves_work_to_the_cpu_is_refused_or_said(compiled, monkeypatch):
    fake_ep(monkeypatch, compiled["fp32"], extra_cpu=("Softmax",))
    with pytest.raises(UserError, match=r"^--device npu: encoder: the EP put \['Softmax'\]"):
        Transcriber.from_artifact(compiled["fp32"], device=Device.NPU, machine=machine())
    auto = Transcriber.from_artifact(compiled["fp32"], device=Device.AUTO, machine=machine())
    assert auto.execution.provider == VITISAI_PROVIDER
    assert "decoder: the EP put ['Softmax'] on the CPU" in auto.execution.notes[-1]


def test_an_onnxruntime_that_drops_the_ep_is_refused_or_said(compiled, monkeypatch):
    fake = fake_ep(monkeypatch, compiled["fp32"])
    real = fake.InferenceSession

    def without_ep(path, sess_options=None, providers=None, provider_options=None):
        return real(path, sess_options, [CPU_PROVIDER], None)

    monkeypatch.setattr(fake, "InferenceSession", without_ep)
    with pytest.raises(UserError, match="ONNX Runtime created the sessions on CPUExecutionProv"):
        Transcriber.from_artifact(compiled["fp32"], device=Device.NPU, machine=machine())
    auto = Transcriber.from_artifact(compiled["fp32"], machine=machine())
    assert auto.execution.provider == CPU_PROVIDER and auto.execution.fallback


def test_the_cli_says_it_once_and_npu_exits_2(compiled, tmp_path, capsys):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    artifact = str(compiled["fp32"])
    assert main(["transcribe", "--artifact", artifact, "--device", "npu", str(wav)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("whisper-npu transcribe: error: --device npu: VitisAIExecutionProvider")
    assert main(["transcribe", "--artifact", artifact, "--device", "cpu", "--json", str(wav)]) == 0
    streams = capsys.readouterr()
    assert streams.err.splitlines() == [
        "whisper-npu transcribe: running on CPUExecutionProvider (--device cpu)"
    ]
    (listed,) = json.loads(streams.out)
    assert listed["execution"]["device"] == "cpu" and listed["execution"]["compiled"] is True
    assert main(["transcribe", "--artifact", artifact, "--format", "verbose_json", str(wav)]) == 0
    verbose = json.loads(capsys.readouterr().out)
    assert verbose["execution"]["fallback"].startswith("VitisAIExecutionProvider not available")


def test_the_api_takes_a_device_by_name(compiled):
    assert load(compiled["fp32"], device="cpu").execution.device is Device.CPU
    with pytest.raises(UserError, match="device must be one of auto, npu, cpu, got 'gpu'"):
        load(compiled["fp32"], device="gpu")
