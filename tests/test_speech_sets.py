from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.config import AudioFolderSet, BuiltinSet, DataParams, EspeakVoice, PiperVoice
from pipeline.sources.speech_sets import build_speech_sets, load_saved_set
from pipeline.sources.synthesis import synthesize, synthesize_all
from whisper_npu.errors import UserError
from whisper_npu.host import cpu_model
from whisper_npu.whisper_io import SAMPLE_RATE

PIPER = PiperVoice(engine="piper")


def tone(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * 440 * t).astype(np.float32)
    return np.stack([mono, -mono], axis=1) if channels == 2 else mono


def audiofolder(
    root: Path, files: dict[str, tuple[np.ndarray, int]], rows: list[dict[str, str]] | None = None
) -> Path:
    root.mkdir(parents=True)
    for name, (samples, rate) in files.items():
        sf.write(root / name, samples, rate)
    rows = rows if rows is not None else [{"file_name": n, "sentence": f"clip {n}"} for n in files]
    with (root / "metadata.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file_name", "sentence"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def folder_params(calibration: Path, evaluation: Path) -> DataParams:
    return DataParams(
        calibration=AudioFolderSet(kind="audiofolder", path=calibration, text_column="sentence"),
        eval=AudioFolderSet(kind="audiofolder", path=evaluation, text_column="sentence"),
        voices=[PIPER],
    )


def test_audiofolder_is_resampled_to_16k_mono(tmp_path):
    calibration = audiofolder(tmp_path / "cal", {"a.wav": (tone(1.0, 44_100, channels=2), 44_100)})
    evaluation = audiofolder(
        tmp_path / "ev", {"b.flac": (tone(0.5, 8_000), 8_000), "c.wav": (tone(2.0, 22_050), 22_050)}
    )
    manifest = build_speech_sets(folder_params(calibration, evaluation), tmp_path / "out")

    assert manifest["sets"]["eval"]["clips"] == 2
    saved = load_saved_set(tmp_path / "out", "eval")
    assert saved["text"] == ["clip b.flac", "clip c.wav"]
    for row, seconds in zip(saved, (0.5, 2.0), strict=True):
        samples = row["audio"].get_all_samples()
        assert samples.sample_rate == SAMPLE_RATE
        assert samples.data.shape[0] == 1
        assert abs(samples.data.shape[1] - seconds * SAMPLE_RATE) < 80
    stereo = load_saved_set(tmp_path / "out", "calibration")[0]["audio"].get_all_samples()
    assert stereo.data.shape == (1, SAMPLE_RATE)


@pytest.mark.parametrize(
    ("break_it", "message"),
    [
        (lambda root: (root / "b.wav").unlink(), "listed audio file missing: b.wav"),
        (lambda root: (root / "metadata.csv").write_text("file_name,sentence\n"), "empty dataset"),
        (lambda root: (root / "metadata.csv").unlink(), "no metadata.csv"),
        (lambda root: (root / "b.wav").write_bytes(b"not audio at all"), "cannot decode audio"),
        (lambda root: shutil.rmtree(root), "audiofolder not found"),
        (
            lambda root: (root / "metadata.csv").write_bytes(
                b"file_name,sentence\nb.wav,caf\xe9\n"
            ),
            "metadata.csv: not UTF-8 text",
        ),
        (
            lambda root: (root / "metadata.csv").write_text("file_name,sentence\n../a/a.wav,x\n"),
            "file_name '../a/a.wav' is not a file in",
        ),
    ],
)
def test_broken_audiofolder_fails_in_one_line_and_keeps_previous_output(
    tmp_path, break_it, message
):
    good = audiofolder(tmp_path / "good", {"a.wav": (tone(1.0, 16_000), 16_000)})
    out = tmp_path / "out"
    build_speech_sets(folder_params(good, good), out)
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    broken = audiofolder(
        tmp_path / "broken",
        {"a.wav": (tone(1.0, 16_000), 16_000), "b.wav": (tone(1.0, 16_000), 16_000)},
    )
    break_it(broken)
    with pytest.raises(UserError, match=message) as caught:
        build_speech_sets(folder_params(good, broken), out)
    assert "\n" not in str(caught.value)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_piper_is_repeatable_with_noise_off():
    first, rate = synthesize("Repeatable speech makes repeatable hashes.", PIPER)
    second, _ = synthesize("Repeatable speech makes repeatable hashes.", PIPER)
    assert rate == 22_050
    assert first.size > rate  # more than a second of speech
    np.testing.assert_array_equal(first, second)


def test_worker_processes_make_the_same_samples_in_order():
    """The data stage reads clips aloud in one worker per core: same bytes, same order."""
    texts = ["One short line.", "A second, longer line of speech.", "Three.", "Four at last."]
    jobs = [(text, PIPER) for text in texts]
    together = list(synthesize_all(jobs))
    assert [rate for _, rate in together] == [22_050] * 4
    for (samples, _), text in zip(together, texts, strict=True):
        np.testing.assert_array_equal(samples, synthesize(text, PIPER)[0])


def test_length_scale_changes_speed():
    normal, _ = synthesize("The meeting moved to Thursday afternoon.", PIPER)
    slow, _ = synthesize(
        "The meeting moved to Thursday afternoon.", PiperVoice(engine="piper", length_scale=1.3)
    )
    assert slow.size > 1.15 * normal.size


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="Debian espeak-ng not installed")
def test_espeak_voice_reads_text():
    samples, rate = synthesize("Hello from espeak.", EspeakVoice(engine="espeak-ng"))
    assert rate > 0 and samples.size > rate // 2


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="Debian espeak-ng not installed")
def test_sentence_text_never_becomes_an_espeak_option(tmp_path):
    """A sentence line `-w<path>` is read aloud, not taken as espeak-ng's write-to-file option;
    `--version` is speech too, and the call never waits on an open stdin."""
    target = tmp_path / "written-by-espeak.wav"
    for text in (f"-w{target}", "--version", "--stdin"):
        samples, rate = synthesize(text, EspeakVoice(engine="espeak-ng"))
        assert samples.size > rate // 10
    assert not target.exists()


def test_espeak_voice_names_cannot_be_options():
    with pytest.raises(ValueError, match="pattern"):
        EspeakVoice(engine="espeak-ng", voice="-w/tmp/x")


def test_piper_samples_do_not_depend_on_the_thread_count():
    """Piper's session is pinned to one thread and basic graph optimisations, whatever ORT
    would pick: the same text gives the same bytes under any process thread setting."""
    import onnxruntime

    from pipeline.sources.synthesis import _piper_voice

    options = _piper_voice().session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.graph_optimization_level == onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC


def test_builtin_sets_must_not_share_sentences(tmp_path):
    shared = tmp_path / "shared.txt"
    shared.write_text("The same sentence twice.\n")
    spec = BuiltinSet(kind="builtin", sentences=shared)
    params = DataParams(calibration=spec, eval=spec, voices=[PIPER])
    with pytest.raises(UserError, match="share 1 line"):
        build_speech_sets(params, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_builtin_limit_and_voice_cycle(tmp_path):
    cal, ev = tmp_path / "cal.txt", tmp_path / "ev.txt"
    cal.write_text("One short calibration line.\nA second calibration line.\nA third one.\n")
    ev.write_text("An evaluation sentence.\n")
    params = DataParams(
        calibration=BuiltinSet(kind="builtin", sentences=cal, limit=2),
        eval=BuiltinSet(kind="builtin", sentences=ev),
        voices=[PIPER, PiperVoice(engine="piper", length_scale=0.8)],
    )
    manifest = build_speech_sets(params, tmp_path / "out")
    assert manifest["sets"]["calibration"]["clips"] == 2
    assert manifest["cpu"] == cpu_model()  # its samples depend on the instruction set
    assert load_saved_set(tmp_path / "out", "calibration")["text"] == [
        "One short calibration line.",
        "A second calibration line.",
    ]


def test_a_sentence_list_that_is_not_utf8_is_one_line(tmp_path):
    sentences = tmp_path / "sentences.txt"
    sentences.write_bytes(b"The storm is coming.\nCaf\xe9 au lait.\n")
    spec = BuiltinSet(kind="builtin", sentences=sentences)
    params = DataParams(calibration=spec, eval=spec, voices=[PIPER])
    with pytest.raises(UserError, match=r"sentences.txt: not UTF-8 text \(byte 24\)"):
        build_speech_sets(params, tmp_path / "out")
    assert not (tmp_path / "out").exists()
