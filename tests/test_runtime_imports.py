"""The deployable runtime stays light: what a laptop needs to transcribe with a pulled release
or verify it imports neither torch, torchcodec, Quark, datasets, jiwer nor (without --vad)
faster-whisper (seconds of start-up and GBs of install a deployment does not need). PyAV,
which decodes what libsndfile cannot (m4a, webm), is the runtime's own dependency."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import write_tiny_bundle
from tests.test_audio_formats import encode

# faster-whisper (and the ctranslate2 it pulls in) only when VAD is asked for.
HEAVY = ("torch", "torchcodec", "quark", "datasets", "jiwer", "transformers", "onnx")
HEAVY += ("faster_whisper", "ctranslate2")
PROBE = f"""
import json, sys
from whisper_npu.cli import main
code = main(sys.argv[1:])
heavy = sorted(name for name in sys.modules if name.split(".")[0] in {HEAVY!r})
print(json.dumps({{"code": code, "heavy": heavy}}))
"""


@pytest.mark.runtime
@pytest.mark.parametrize(
    "command",
    [
        ["verify", "{missing}"],
        ["transcribe", "--artifact", "{missing}", "{missing}/a.wav"],
    ],
)
def test_deployed_commands_import_no_heavy_package(command: list[str], tmp_path: Path) -> None:
    argv = [part.format(missing=tmp_path / "missing") for part in command]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=False
    )
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome["code"] == 2  # the artifact is missing: refused, after the imports it needs
    assert outcome["heavy"] == []


def test_runtime_modules_import_no_heavy_package() -> None:
    probe = (
        "import sys, whisper_npu.transcriber, whisper_npu.audio, "
        "whisper_npu.verify, whisper_npu.server, whisper_npu; "
        f"print(sorted(n for n in sys.modules if n.split('.')[0] in {HEAVY!r}))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_transcribing_with_a_bundle_imports_no_heavy_package(tmp_path: Path) -> None:
    bundle = write_tiny_bundle(tmp_path / "bundle")
    wav = tmp_path / "speech.wav"
    sf.write(wav, np.zeros(16_000, np.float32), 16_000)
    m4a = tmp_path / "phone.m4a"  # libsndfile does not read it: PyAV decodes it
    encode(m4a, "aac", 44_100, "mono", seconds=1)
    argv = ["transcribe", "--artifact", str(bundle), str(wav), str(m4a)]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=False
    )
    outcome = json.loads(done.stdout.splitlines()[-1])
    assert outcome == {"code": 0, "heavy": []}, done.stderr
