"""`whisper-npu doctor`: here (no NPU: said, exit 1), and on faked laptops (tests/fake_ep.py):
which of a directory of releases runs on the NPU there, and which one to use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import CompileParams
from pipeline.npu.compile import compile_bundle
from tests.conftest import write_tiny_bundle
from tests.fake_ep import NO_EP, machine
from whisper_npu import execution
from whisper_npu.cli import main
from whisper_npu.doctor import diagnose, render
from whisper_npu.host import OnnxRuntime


@pytest.fixture(scope="module")
def releases(tmp_path_factory) -> Path:
    """A directory of compiled artifacts named as releases are: fp32 and cpu-int8-like."""
    root = tmp_path_factory.mktemp("doctor")
    for variant in ("fp32", "cpu-int8"):
        bundle = write_tiny_bundle(root / "bundles" / variant, variant)
        compile_bundle(CompileParams(), bundle, root / "release" / variant, allow_split=True)
    return root / "release"


def test_here_there_is_no_npu_and_doctor_says_so(capsys):
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert "onnxruntime  1." in out and "from onnxruntime\n" in out
    assert out.splitlines()[-1].startswith(
        "verdict      CPU: VitisAIExecutionProvider not available (onnxruntime 1."
    )
    assert main(["doctor", "--json"]) == 1
    diagnosis = json.loads(capsys.readouterr().out)
    assert diagnosis["npu"] is None and diagnosis["onnxruntime_from"] == ["onnxruntime"]
    assert main(["doctor", "--artifact", "no/such/dir"]) == 2


def test_on_strix_the_bf16_route_runs_on_the_npu(releases, tmp_path, monkeypatch):
    monkeypatch.setenv("WHISPER_NPU_CACHE", str(tmp_path))
    found = diagnose(releases, machine("stx"))
    runs = {v.variant: (v.runs_on, v.why) for v in found.variants}
    assert runs == {"fp32": ("NPU", None), "cpu-int8": ("CPU", None)}
    assert found.use == str(releases / "fp32") and found.on_npu
    text = render(found)
    assert "npu          STX: STX (XDNA2), PCI 1022:17f0 rev 10; faked for a test" in text
    assert "  note       no compiled EP cache shipped: the first run compiles" in text
    assert not list(tmp_path.iterdir())  # doctor only looks


def test_on_phoenix_the_cpu_artifact_is_the_pick(releases):
    found = diagnose(releases, machine("phx"))
    assert found.use == str(releases / "cpu-int8") and not found.on_npu
    assert found.verdict == "CPU: fp32 has no NPU path on PHX/HPT (BF16 runs on STX/KRK)"


def test_the_cli_on_a_faked_laptop_exits_0_and_names_the_problems(releases, monkeypatch, capsys):
    broken = OnnxRuntime(("onnxruntime", "onnxruntime-vitisai"), "1.23.3", NO_EP.providers)
    fake = machine("stx", ort=broken)
    monkeypatch.setattr(execution, "Host", lambda: fake)
    monkeypatch.setattr("whisper_npu.doctor.Host", lambda: fake)
    assert main(["doctor", "--artifact", str(releases / "fp32"), "--json"]) == 1
    problems = json.loads(capsys.readouterr().out)["problems"]
    assert problems[0].startswith(
        "onnxruntime, onnxruntime-vitisai all provide onnxruntime: a PyPI onnxruntime installed "
        "over onnxruntime-vitisai removes the VitisAI provider"
    )
    assert problems[1] == (
        "onnxruntime-vitisai is installed but offers no VitisAIExecutionProvider"
    )
    good = machine("krk")
    monkeypatch.setattr("whisper_npu.doctor.Host", lambda: good)
    assert main(["doctor", "--artifact", str(releases / "fp32")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "verdict      NPU"
