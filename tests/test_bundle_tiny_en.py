"""The exported tiny.en fp32 bundle: parity gate, bundle.json, and `transcribe` as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from pipeline.npu.graph_check import check_graph
from pipeline.sources.speech_sets import clip_samples, load_saved_set
from tests.conftest import REPO, run_cli
from whisper_npu.fsutil import sha256_file

pytestmark = pytest.mark.integration
SKY = "If the sky clears up tonight, we might see a few shooting stars."


def test_parity_gate_passed_on_every_eval_clip(fp32_bundle):
    meta = json.loads((fp32_bundle / "bundle.json").read_text())
    parity = meta["parity"]
    assert parity["transcript_clips"] >= 100 and parity["transcripts_differing"] == []
    assert parity["cross_kv_max_abs_error"] <= parity["tolerance"]["cross_kv_atol"]
    assert parity["logits_max_abs_error"] <= parity["tolerance"]["logits_atol"]


def test_bundle_json_describes_static_npu_ready_graphs(fp32_bundle):
    meta = json.loads((fp32_bundle / "bundle.json").read_text())
    assert meta["opset"] == 17 and meta["variant"] == "fp32"
    assert meta["dims"]["max_decode_len"] == 448
    assert meta["io"]["decoder"]["inputs"]["self_k_cache"] == [[4, 1, 6, 448, 64], "float32"]
    assert meta["model"]["source"] == "builtin:tiny.en"
    for name, digest in meta["files"].items():
        assert sha256_file(fp32_bundle / name) == digest
    for graph in ("encoder", "decoder"):
        report = check_graph(fp32_bundle / f"{graph}.onnx")
        assert report.clean and report.opset == 17


def write_clip(path: Path, samples: np.ndarray, rate: int, stereo: bool) -> Path:
    audio = resample_poly(samples, rate // 100, 160) if rate != 16_000 else samples
    sf.write(path, np.stack([audio, audio], axis=1) if stereo else audio, rate)
    return path


@pytest.fixture(scope="module")
def sky_clip(default_data_dir) -> np.ndarray:
    evaluation = load_saved_set(default_data_dir, "eval")
    return clip_samples(next(row for row in evaluation if row["text"] == SKY))


def run_transcribe(bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("transcribe", "--artifact", str(bundle), *args, timeout=600)


def test_transcribe_any_rate_and_channels_and_reports_bad_files(fp32_bundle, sky_clip, tmp_path):
    stereo = write_clip(tmp_path / "sky_44k_stereo.wav", sky_clip, 44_100, stereo=True)
    flac = write_clip(tmp_path / "sky.flac", sky_clip, 16_000, stereo=False)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    missing = tmp_path / "missing.wav"

    result = run_transcribe(
        fp32_bundle,
        "--json",
        str(stereo),
        str(missing),
        str(empty),
        str(text),
        str(tmp_path),
        str(flac),
    )
    assert result.returncode == 2
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 4
    for path, reason in (
        (missing, "no such file"),
        (empty, "empty file"),
        (text, "not readable audio"),
        (tmp_path, "is a directory"),
    ):
        assert any(str(path) in line and reason in line for line in errors), (path, errors)
    transcripts = json.loads(result.stdout)
    assert [t["path"] for t in transcripts] == [str(stereo), str(flac)]
    assert [t["text"] for t in transcripts] == [SKY, SKY]


def test_transcribe_plain_output_is_one_line_per_file(fp32_bundle, sky_clip, tmp_path):
    clip = write_clip(tmp_path / "sky.wav", sky_clip, 16_000, stereo=False)
    single = run_transcribe(fp32_bundle, str(clip))
    assert single.returncode == 0 and single.stdout == SKY + "\n"
    double = run_transcribe(fp32_bundle, str(clip), str(clip))
    assert double.stdout.splitlines() == [f"{clip}\t{SKY}"] * 2


def test_runtime_does_not_import_torch(fp32_bundle, sky_clip, tmp_path):
    clip = write_clip(tmp_path / "sky.wav", sky_clip, 16_000, stereo=False)
    code = (
        "import sys; from whisper_npu.audio import load_audio; "
        "from whisper_npu.transcriber import Transcriber; "
        f"t = Transcriber.from_bundle({str(fp32_bundle)!r}); "
        f"print(t.transcribe(load_audio({str(clip)!r})).text); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == SKY


def test_transcribe_all_matches_one_session_in_order_and_stops_early(fp32_bundle, default_data_dir):
    """The worker processes give each clip the text a one-thread session gives it, in order;
    leaving the loop early drops the clips not yet started instead of finishing them."""
    from contextlib import closing

    from pipeline.throughput import transcribe_all
    from whisper_npu.transcriber import Transcriber

    rows = load_saved_set(default_data_dir, "calibration").select(range(6))
    clips = [clip_samples(row) for row in rows]
    one = Transcriber.from_bundle(fp32_bundle, threads=1)
    assert [t.text for t in transcribe_all(fp32_bundle, clips)] == [
        one.transcribe(clip).text for clip in clips
    ]
    with closing(transcribe_all(fp32_bundle, clips * 50)) as transcripts:
        first = next(transcripts).text
    assert first == one.transcribe(clips[0]).text  # and closing did not wait for 299 more


def test_api_keeps_the_pipeline_transcript_and_guards_silence_and_noise(
    fp32_bundle, sky_clip, default_data_dir
):
    """Guards on (OpenAI's defaults) leave clean speech token-identical to the pipeline's
    transcript, short and long-form; silence and noise, which plain greedy decoding turns into
    "you you you you" and a made-up sentence, give no text."""
    from whisper_npu import TranscribeOptions, load

    model = load(fp32_bundle, threads=2)
    evaluation = load_saved_set(default_data_dir, "eval")
    longest = clip_samples(max(evaluation, key=lambda row: row["duration_s"]))
    for samples in (sky_clip, longest):
        pipeline = model.transcriber.transcribe(samples)
        guarded = model.transcribe(samples)
        assert guarded.text == pipeline.text
        eot = model.transcriber.bundle.record.decoding.eot
        words = [t for segment in guarded.segments for t in segment.tokens if t < eot]
        assert words == [t for t in pipeline.tokens if t < eot]
    timed = model.transcribe(longest, TranscribeOptions(timestamps=True))
    assert timed.text == model.transcriber.transcribe(longest).text
    starts = [s.start for s in timed.segments]
    assert starts == sorted(starts) and timed.segments[-1].end <= timed.duration
    assert timed.segments[-1].start > 30  # absolute times past the first window
    silence = np.zeros(120 * 16_000, np.float32)
    noise = np.random.default_rng(0).normal(0, 0.1, 60 * 16_000).astype(np.float32)
    assert model.transcriber.transcribe(silence).text != ""  # what plain greedy does
    assert model.transcribe(silence).text == ""
    assert model.transcribe(noise).text == ""
