"""`pip install <repo>` into Python environments shaped like the one AMD's Ryzen AI installer
makes (Python 3.10 and 3.12, numpy 1.26.4, the `onnxruntime` module from `onnxruntime-vitisai`;
tests/amd_env.py): the runtime installs beside them without replacing any, transcribes the
release exactly as the full install does, says in one line that it runs on the CPU, and its own
unit tests pass there."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import soundfile as sf

from tests.amd_env import (
    BUILD_STACK,
    NUMPY_VERSION,
    ORT_VERSION,
    PYTHONS,
    VITISAI,
    RuntimeInstall,
    find_python,
    install_runtime,
    interpreter_missing,
    run,
)
from tests.conftest import REPO, run_cli, up_to_date_output
from whisper_npu.providers import CPU_PROVIDER, VITISAI_PROVIDER
from whisper_npu.wer import corpus_wer
from whisper_npu.whisper_io import SAMPLE_RATE

pytestmark = pytest.mark.integration

RELEASE = "artifacts/release/bf16"
CLIPS = 8
# PyPI's CPU build lists it too: it sends requests to a remote endpoint and runs nothing here.
AZURE_PROVIDER = "AzureExecutionProvider"
# Between two onnxruntime builds' transcripts of the same clips (below): 0.23% on all 123 eval
# clips (2 differ), 1.6% on these eight (5 words of the long clip); a runtime broken by numpy
# 1.26 or Python 3.10 would give garbage, far above it.
MAX_WER_BETWEEN_INSTALLS = 0.03


@pytest.fixture(scope="module", autouse=True)
def builds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future[RuntimeInstall]]]:
    """Every AMD-shaped install, started at once and first (autouse), so that they overlap each
    other, the release check and the full install's transcription."""
    root = tmp_path_factory.mktemp("amd_env")
    found = {version: find_python(version) for version in PYTHONS}
    with ThreadPoolExecutor(max_workers=len(PYTHONS)) as pool:
        yield {
            version: pool.submit(install_runtime, python, root / version, REPO)
            for version, python in found.items()
            if python is not None
        }


@pytest.fixture
def amd(
    request: pytest.FixtureRequest, builds: dict[str, Future[RuntimeInstall]]
) -> RuntimeInstall:
    version = request.param
    if version not in builds:
        pytest.skip(interpreter_missing(version))
    return builds[version].result()


ON_EACH_PYTHON = pytest.mark.parametrize("amd", PYTHONS, indirect=True)


@ON_EACH_PYTHON
def test_the_runtime_replaces_nothing_amd_installed(amd: RuntimeInstall) -> None:
    installed = {dist.name for dist in amd.installed}
    assert "whisper-npu" in installed
    assert sorted(name for name in installed if name.startswith("onnxruntime")) == []
    assert amd.present["numpy"] == NUMPY_VERSION
    assert amd.present[VITISAI] == ORT_VERSION
    assert "onnxruntime" not in amd.present
    assert sorted(set(BUILD_STACK) & amd.present.keys()) == []
    done = amd.venv.run("-m", "pip", "check")  # every requirement met by what is there
    assert done.returncode == 0, done.stdout


@ON_EACH_PYTHON
def test_onnxruntime_is_vitisais_and_offers_the_cpu_only(amd: RuntimeInstall) -> None:
    probe = (
        "import importlib.metadata as m, json, onnxruntime as ort; "
        "print(json.dumps([m.packages_distributions()['onnxruntime'], "
        "ort.get_available_providers()]))"
    )
    done = amd.venv.run("-c", probe)
    assert done.returncode == 0, done.stderr
    owners, providers = json.loads(done.stdout)
    assert owners == [VITISAI]
    assert [name for name in providers if name != AZURE_PROVIDER] == [CPU_PROVIDER]


@pytest.fixture(scope="module")
def release() -> Path:
    built = up_to_date_output(f"release@{Path(RELEASE).name}", RELEASE)
    if built is None:
        pytest.skip(f"{RELEASE} is not built and up to date (`dvc repro` makes it)")
    return built


@pytest.fixture(scope="module")
def clips(
    tmp_path_factory: pytest.TempPathFactory, release: Path, default_data_dir: Path
) -> list[Path]:
    """The first eval clips and the longest (several windows: the long-form path) as 16 kHz
    WAV files, which both installs read."""
    from pipeline.sources.speech_sets import clip_samples, load_saved_set

    evaluation = load_saved_set(default_data_dir, "eval")
    durations = evaluation["duration_s"]
    longest = max(range(len(durations)), key=durations.__getitem__)
    picked = [*range(CLIPS - 1), longest]
    out = tmp_path_factory.mktemp("clips")
    paths = [out / f"eval_{index}.wav" for index in picked]
    for path, row in zip(paths, evaluation.select(picked), strict=True):
        sf.write(path, clip_samples(row), SAMPLE_RATE)
    return paths


def transcribe_args(release: Path, *more: str | Path) -> list[str]:
    return ["transcribe", "--artifact", str(release), *map(str, more)]


@pytest.fixture(scope="module")
def full_install(release: Path, clips: list[Path]) -> subprocess.CompletedProcess[str]:
    """The same command with the full install: this checkout and the dev venv's PyPI
    onnxruntime."""
    done = run_cli(*transcribe_args(release, *clips), timeout=600)
    assert done.returncode == 0, done.stderr
    return done


def transcripts(stdout: str) -> dict[str, str]:
    """`transcribe`'s lines (path, tab, text) by path."""
    return dict(line.split("\t", 1) for line in stdout.splitlines())


def amd_cli(amd: RuntimeInstall, *args: str) -> subprocess.CompletedProcess[str]:
    """The venv's own `whisper-npu`, run where the full install's runs (the same paths shown)."""
    return run([amd.venv.script("whisper-npu"), *args], cwd=REPO, timeout=600)


@ON_EACH_PYTHON
def test_transcripts_equal_the_full_installs_and_the_cpu_is_said_once(
    amd: RuntimeInstall,
    release: Path,
    clips: list[Path],
    full_install: subprocess.CompletedProcess[str],
) -> None:
    """Not word for word: AMD's onnxruntime is an older build (1.23 here, 1.32 in the full
    install) whose kernels round differently, and the bf16 variant's casts amplify that (the
    encoder's outputs differ by up to 2.0 on the long clip's first window, 0.004 on average).
    Measured on all 123 eval clips: 0.23% WER between the two installs' transcripts, and
    against the references 2.55% here, 2.78% with the full install."""
    done = amd_cli(amd, *transcribe_args(release, *clips))
    assert done.returncode == 0, done.stderr
    ours, theirs = (transcripts(out.stdout) for out in (done, full_install))
    assert list(ours) == list(theirs)  # every clip, in order, named as the full install names it
    assert corpus_wer(list(theirs.values()), list(ours.values())) <= MAX_WER_BETWEEN_INSTALLS
    (line,) = done.stderr.splitlines()
    assert VITISAI_PROVIDER in line and re.search(r"\b(not|no|missing|unavailable)\b", line)
    assert "CPU" in line and VITISAI in line  # and whose onnxruntime it looked at


@pytest.mark.parametrize("amd", ["3.12"], indirect=True)
def test_phone_and_browser_audio_transcribe_without_torch_or_a_system_ffmpeg(
    amd: RuntimeInstall, release: Path, clips: list[Path], tmp_path: Path
) -> None:
    """m4a, webm, mp3, ogg and flac of a real clip (PyAV's encoders at each format's usual
    rate), transcribed with nothing but the venv on PATH: PyAV's own FFmpeg decodes them."""
    from scipy.signal import resample_poly

    from tests.test_audio_formats import FORMATS, encode

    speech, rate = sf.read(clips[0], dtype="float32")
    assert rate == SAMPLE_RATE
    files = [tmp_path / name for name, *_ in FORMATS]
    for path, (_, codec, out_rate, layout) in zip(files, FORMATS, strict=True):
        encode(path, codec, out_rate, layout, mono=resample_poly(speech, out_rate, SAMPLE_RATE))
    done = run(
        [amd.venv.script("whisper-npu"), *transcribe_args(release, clips[0], *files)],
        cwd=REPO,
        path=str(amd.venv.bin),
    )
    assert done.returncode == 0, done.stderr
    (_, expected), *decoded = transcripts(done.stdout).items()
    assert [Path(path).name for path, _ in decoded] == [path.name for path in files]
    for path, text in decoded:
        assert corpus_wer([expected], [text]) <= 0.1, (path, text, expected)


@ON_EACH_PYTHON
def test_device_npu_is_refused_in_one_line_naming_the_provider(
    amd: RuntimeInstall, release: Path, clips: list[Path]
) -> None:
    done = amd_cli(amd, *transcribe_args(release, "--device", "npu", clips[0]))
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    (line,) = done.stderr.splitlines()
    assert VITISAI_PROVIDER in line


@ON_EACH_PYTHON
def test_doctor_reads_amds_environment_and_says_cpu(amd: RuntimeInstall) -> None:
    done = amd_cli(amd, "doctor")
    assert done.returncode == 1, done.stdout + done.stderr  # 1: the CPU is what will run
    assert VITISAI in done.stdout and NUMPY_VERSION in done.stdout


def runtime_test_files() -> list[Path]:
    """The test modules holding runtime-marked tests; only those are handed to the venv's
    pytest, since collecting any other imports the build stack."""
    return sorted(
        path
        for path in (REPO / "tests").glob("test_*.py")
        if path.name != Path(__file__).name
        and "pytest.mark.runtime" in path.read_text(encoding="utf-8")
    )


# Ryzen AI 1.3-1.5's Python, the oldest the runtime supports, with AMD's numpy.
@pytest.mark.parametrize("amd", ["3.10"], indirect=True)
def test_the_runtime_unit_tests_pass_in_amds_environment(
    amd: RuntimeInstall, tmp_path: Path
) -> None:
    """After the checks above, which read what was present before: pytest and the formats'
    own parsers are the test's tools, not the runtime's. `--import-mode=append` puts the
    checkout after site-packages, so the tests exercise the installed whisper_npu."""
    amd.venv.pip("pytest", "srt", "webvtt-py", report=tmp_path / "tools.json")
    done = run(
        [
            amd.venv.script("pytest"),
            *("-m", "runtime", "-q", "-p", "no:cacheprovider", "--import-mode=append"),
            f"--basetemp={tmp_path / 'pytest'}",
            *runtime_test_files(),
        ],
        cwd=REPO,
        timeout=600,
    )
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary, summary
