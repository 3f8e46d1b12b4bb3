"""Word timestamps through the runtime: the decode loop's alignment rows, Segment.words, the
silence trim, VAD's time line, the CLI's flags and formats, and OpenAI's
`timestamp_granularities[]=word` through the official client; real tiny.en for the times."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openai
import pytest
import srt

from tests.conftest import bundle_record, tiny_whisper, write_noise_clip, write_wordy_bundle
from tests.test_runtime_api import client, serving
from whisper_npu import TranscribeOptions, load
from whisper_npu.alignment import Word, in_speech, speech_levels
from whisper_npu.cli import main
from whisper_npu.decoding import decode_encoded, decode_window
from whisper_npu.errors import UserError
from whisper_npu.formats import Format, Subtitles, render
from whisper_npu.result import Result, Segment
from whisper_npu.vad import Chunk, Region, on_original_time_line
from whisper_npu.whisper_io import WhisperDims


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wordy_bundle(tmp_path_factory.mktemp("words") / "bundle")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_noise_clip(tmp_path_factory.mktemp("clips") / "noise.wav")


def test_the_decode_keeps_one_alignment_row_per_pick(bundle):
    """Row k is the runner's alignment output at the step that predicted token k (the first
    from the prompt's last step); a decode that ends at end-of-text has one more row."""
    transcriber = load(bundle).transcriber
    runner, spec = transcriber.runner, transcriber.spec()
    features = np.random.default_rng(0).normal(size=(1, 80, 3000)).astype(np.float32)
    plain = decode_window(runner, spec, features, timestamps=True)
    assert plain.attention is None  # only when asked for
    seen, step = [], runner.decode_step

    def recording(token: int, position: int) -> np.ndarray:
        logits = step(token, position)
        seen.append(runner.alignment().copy())
        return logits

    runner.decode_step = recording
    runner.encode(features)
    worded = decode_encoded(runner, spec, timestamps=True, align=True)
    assert worded.tokens == plain.tokens and worded.attention.shape[1:] == (4, 1500)
    ended = len(spec.prefix) + len(worded.tokens) < spec.max_length
    assert len(worded.attention) == len(worded.tokens) + ended
    np.testing.assert_array_equal(worded.attention, np.stack(seen[len(spec.prefix) - 1 :]))


def test_api_words_spell_the_segments_in_time_order_and_verbose_json_lists_them(bundle, clip):
    """(This tokenizer's words have no spaces, so a word may run over a segment's end: it
    stays with the segment it starts in, as openai-whisper shares words out.)"""
    result = load(bundle).transcribe(clip, TranscribeOptions(word_timestamps=True))
    spoken = [word for segment in result.segments for word in segment.words]
    assert spoken and all(segment.words is not None for segment in result.segments)
    spelled = "".join(word.word for word in spoken)
    assert spelled.replace(" ", "") == "".join(s.text for s in result.segments).replace(" ", "")
    times = [t for word in spoken for t in (word.start, word.end)]
    assert times == sorted(times) and times[0] >= 0 and times[-1] <= result.duration
    assert all(0 <= word.probability <= 1 for word in spoken)
    payload = json.loads(render(result, Format.VERBOSE_JSON))
    assert [w["word"] for w in payload["words"]] == [
        w.word.strip() for s in result.segments for w in s.words
    ]
    assert set(payload["segments"][0]["words"][0]) == {"word", "start", "end", "probability"}
    assert "words" not in load(bundle).transcribe(clip).to_json()


@pytest.fixture(scope="module")
def bundle_without_alignment(tmp_path_factory) -> Path:
    """A bundle exported before word timestamps: no alignment output, dims without it."""
    from tokenizers import Tokenizer, models

    from pipeline.export.onnx_bundle import export_graphs

    root = tmp_path_factory.mktemp("old") / "bundle"
    root.mkdir()
    model = tiny_whisper()
    model.config._attn_implementation = "eager"
    dims = WhisperDims.from_config(model.config, max_decode_len=8)
    export_graphs(model, dims, root)
    record = bundle_record("a16w8", dims)
    del record["dims"]["alignment_heads"]  # as bundle.json was written before it existed
    (root / "bundle.json").write_text(json.dumps(record))
    Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(str(root / "tokenizer.json"))
    np.save(root / "mel_filters.npy", np.zeros((201, 80)))
    return root


def test_a_bundle_without_the_output_transcribes_and_refuses_words_in_one_line(
    bundle_without_alignment, clip, capsys
):
    model = load(bundle_without_alignment)
    assert model.transcribe(clip).segments is not None
    with pytest.raises(UserError, match="no alignment output"):
        model.transcribe(clip, TranscribeOptions(word_timestamps=True))
    code = main(
        ["transcribe", "--artifact", str(bundle_without_alignment), "--word-timestamps", str(clip)]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "export it again" in err


@pytest.mark.parametrize("flag", [["--max-line-width", "20"], ["--highlight-words"]])
def test_subtitle_flags_without_words_are_one_line_exit_2(bundle, clip, capsys, flag):
    assert main(["transcribe", "--artifact", str(bundle), *flag, str(clip)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"{flag[0]} needs --word-timestamps") and len(err.splitlines()) == 1


def test_cli_verbose_json_has_openais_top_level_words(bundle, clip, capsys):
    code = main(
        [
            "transcribe",
            "--artifact",
            str(bundle),
            "--word-timestamps",
            "--format",
            "verbose_json",
            str(clip),
        ]
    )
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["words"]
    assert all(set(word) == {"word", "start", "end"} for word in payload["words"])
    assert all(segment["words"] is not None for segment in payload["segments"])


def words(*spec: tuple[str, float, float]) -> list[Word]:
    return [Word(text, start, end, 0.9) for text, start, end in spec]


def result_of(*segments: list[Word]) -> Result:
    made = [
        Segment(i, 0, ws[0].start, ws[-1].end, "".join(w.word for w in ws), [], 0, 0, 0, 0, ws)
        for i, ws in enumerate(segments)
    ]
    return Result("", made, "en", None, 20.0)


SPOKEN = result_of(
    words((" The", 0.0, 0.3), (" cat", 0.3, 0.6), (" sat", 0.6, 1.0)),
    words((" on", 5.0, 5.2), (" the", 5.2, 5.4), (" warm", 5.4, 5.8), (" mat.", 5.8, 6.2)),
)


def test_srt_from_words_follows_openai_whispers_subtitle_writer():
    """Width and count together regroup words across segments (a pause over 3 s starts a
    cue); width alone breaks lines inside a segment's cue; highlight underlines each word."""
    regrouped = list(srt.parse(render(SPOKEN, Format.SRT, Subtitles(8, 2))))
    assert [c.content for c in regrouped] == ["The cat\nsat", "on the\nwarm", "mat."]
    assert [c.start.total_seconds() for c in regrouped] == [0.0, 5.0, 5.8]
    lines = list(srt.parse(render(SPOKEN, Format.SRT, Subtitles(max_line_width=8))))
    assert [c.content for c in lines] == ["The cat\nsat", "on the\nwarm\nmat."]
    marked = list(srt.parse(render(SPOKEN, Format.SRT, Subtitles(highlight_words=True))))
    assert marked[0].content == "<u>The</u> cat sat"
    assert marked[2].content == "The cat <u>sat</u>"
    assert [c.content for c in marked[3:5]] == [
        "<u>on</u> the warm mat.",
        "on <u>the</u> warm mat.",
    ]
    plain = list(srt.parse(render(SPOKEN, Format.SRT)))
    assert [(c.content, c.end.total_seconds()) for c in plain] == [
        ("The cat sat", 1.0),
        ("on the warm mat.", 6.2),
    ]


def test_silence_trim_moves_boundaries_out_of_silence_only():
    rate = 16_000
    samples = np.zeros(3 * rate, np.float32)
    samples[rate : 2 * rate] = 0.5 * np.sin(np.arange(rate) / 5)  # speech from 1.0 s to 2.0 s
    stretched = words((" hello", 0.4, 1.5), (" there", 1.5, 2.6))
    trimmed = in_speech(stretched, speech_levels(samples), -40.0)
    assert [(w.start, w.end) for w in trimmed] == [(1.0, 1.5), (1.5, 2.0)]
    noise = np.random.default_rng(0).normal(0, 0.05, samples.size).astype(np.float32)
    noisy = in_speech(stretched, speech_levels(samples + noise), -40.0)
    assert [(w.start, w.end) for w in noisy] == [(1.0, 1.5), (1.5, 2.0)]  # above the noise
    assert in_speech(stretched, speech_levels(noise), -40.0) == stretched  # no pause to find
    silent = words((" um", 0.1, 0.3))
    assert in_speech(silent, speech_levels(samples), -40.0) == silent


def test_vad_chunks_put_words_on_the_original_time_line():
    chunk = Chunk((Region(16_000, 32_000), Region(80_000, 96_000)), 0.0)  # 1-2 s and 5-6 s
    inner = result_of(words((" a", 0.2, 0.5), (" b", 1.2, 1.6)))
    moved = on_original_time_line([chunk], [inner])[0].words
    assert [(w.start, w.end) for w in moved] == [(1.2, 1.5), (5.2, 5.6)]


def test_openai_client_asks_for_words_with_timestamp_granularities(bundle, clip):
    with serving(bundle) as url:
        api = client(url)
        with clip.open("rb") as audio:
            verbose = api.audio.transcriptions.create(
                model="whisper-1",
                file=audio,
                response_format="verbose_json",
                timestamp_granularities=["word", "segment"],
            )
        assert verbose.words and verbose.segments
        assert all(w.start <= w.end <= verbose.duration for w in verbose.words)
        with pytest.raises(openai.BadRequestError) as refused, clip.open("rb") as audio:
            api.audio.transcriptions.create(
                model="whisper-1", file=audio, timestamp_granularities=["word"]
            )
        assert refused.value.body["param"] == "timestamp_granularities[]"  # type: ignore[index]
        with clip.open("rb") as audio:  # still serving
            assert api.audio.transcriptions.create(model="whisper-1", file=audio).text


@pytest.mark.integration
def test_tiny_en_words_start_and_end_with_the_speech(fp32_bundle, default_data_dir):
    """Two eval utterances joined by 1.5 s of silence: the first and last word of each within
    0.3 s of where its speech starts and ends, the words spelling the transcript."""
    from pipeline.bench.evaluate import load_eval_clips
    from scripts.word_timing import boundary_errors, join_clips, result_words

    clips = load_eval_clips(default_data_dir)
    joined = join_clips(clips.samples[:4], clips.references[:4], per_clip=4, seed=0)[0]
    result = load(fp32_bundle).transcribe(joined.samples, TranscribeOptions(word_timestamps=True))
    spelled = "".join(w.word for s in result.segments for w in s.words).strip()
    assert spelled == result.text
    errors = boundary_errors(joined, result_words(result))
    assert all(e.within for e in errors), errors
