"""The Python API, `transcribe --format` and `serve` on a tiny random bundle: what users and
clients nobody here wrote (the `openai` package, curl, `srt`, `webvtt-py`) get back."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import openai
import pytest
import soundfile as sf
import srt
import webvtt
from tokenizers import Tokenizer, models

from pipeline.export.onnx_bundle import export_graphs
from tests.conftest import (
    _cli_env,
    bundle_record,
    tiny_whisper,
    write_noise_clip,
    write_wordy_bundle,
)
from tests.test_language import MULTILINGUAL
from whisper_npu import TranscribeOptions, VadOptions, load
from whisper_npu.cli import main
from whisper_npu.errors import UserError
from whisper_npu.whisper_io import WhisperDims

UPLOAD_LIMIT_MB = 0.05  # a 1 s 16-bit clip passes, 3 s do not


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wordy_bundle(tmp_path_factory.mktemp("api") / "bundle")


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_noise_clip(tmp_path_factory.mktemp("clips") / "noise.wav")


def test_api_plain_text_is_the_pipeline_transcript_and_guards_pass_it_or_say_why(bundle, clip):
    model = load(bundle)
    samples, _ = sf.read(clip, dtype="float32")
    plain = model.transcribe(samples, TranscribeOptions.plain())
    assert plain.text == model.transcriber.transcribe(samples).text != ""
    assert plain.language == "en" and plain.duration == 1.0
    assert [(s.start, s.end) for s in plain.segments] == [(0.0, 1.0)]
    # A random model fails every guard and its last (sampled) try stays; seeded, so it is
    # the same every time.
    guarded = TranscribeOptions(temperatures=(0.0, 0.5), seed=7)
    assert model.transcribe(clip, guarded) == model.transcribe(clip, guarded)
    assert model.transcribe(clip, guarded).segments[0].temperature == 0.5
    timed = model.transcribe(clip, TranscribeOptions.plain(timestamps=True))
    assert all(0 <= s.start <= s.end <= timed.duration for s in timed.segments)


def test_api_refuses_nan_samples_in_one_line(bundle):
    samples = np.zeros(16_000, np.float32)
    samples[100:200] = np.nan
    with pytest.raises(UserError, match="NaN or infinite"):
        load(bundle).transcribe(samples)


def test_transcribe_writes_one_file_per_input_in_each_format(bundle, clip, tmp_path, capsys):
    other = shutil.copy(clip, tmp_path / "other.wav")
    out = tmp_path / "out"
    for fmt in ("txt", "json", "srt", "vtt", "tsv"):
        code = main(
            [
                "transcribe",
                "--artifact",
                str(bundle),
                "--format",
                fmt,
                "--no-guards",
                "--output-dir",
                str(out),
                str(clip),
                str(other),
            ]
        )
        assert code == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}.{ext}"
        for stem in ("noise", "other")
        for ext in ("txt", "json", "srt", "vtt", "tsv")
    )
    cues = list(srt.parse((out / "noise.srt").read_text()))
    assert cues and all(c.start <= c.end <= srt.timedelta(seconds=1) for c in cues)
    assert [c.text for c in webvtt.read(str(out / "noise.vtt"))] == [c.content for c in cues]
    assert json.loads((out / "noise.json").read_text())["text"]
    capsys.readouterr()
    assert (
        main(
            [
                "transcribe",
                "--artifact",
                str(bundle),
                "--no-guards",
                "--format",
                "verbose_json",
                str(clip),
            ]
        )
        == 0
    )
    verbose = json.loads(capsys.readouterr().out)
    assert verbose["duration"] == 1.0 and verbose["segments"][0]["tokens"]


def test_transcribe_refuses_several_files_to_stdout_in_a_timed_format(bundle, clip, capsys):
    code = main(["transcribe", "--artifact", str(bundle), "--format", "srt", str(clip), str(clip)])
    assert code == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("--format srt for several files needs --output-dir")
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(bundle: Path, *flags: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """`whisper-npu serve` on `bundle` (with `flags`, `env` added to its environment) in a
    child process, until the block ends."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "pipeline",
        "serve",
        "--artifact",
        str(bundle),
        "--port",
        str(port),
        "--max-upload-mb",
        str(UPLOAD_LIMIT_MB),
        *flags,
    ]
    process = subprocess.Popen(
        command, env=_cli_env() | (env or {}), stderr=subprocess.PIPE, text=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def server(bundle) -> Iterator[str]:
    with serving(bundle) as url:
        yield url


def client(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_openai_client_gets_every_response_format(server, clip):
    api = client(server)
    results = {}
    for fmt in ("json", "text", "srt", "vtt", "verbose_json"):
        with clip.open("rb") as audio:
            results[fmt] = api.audio.transcriptions.create(
                model="whisper-1",
                file=audio,
                response_format=fmt,  # type: ignore[call-overload]
            )
    text = results["json"].text
    assert text and results["text"].strip() == text
    assert [c.content for c in srt.parse(results["srt"])] != []
    assert len(webvtt.from_string(results["vtt"]).captions) >= 1
    verbose = results["verbose_json"]
    assert verbose.language == "en" and verbose.duration == 1.0
    assert verbose.segments and verbose.segments[-1].end <= verbose.duration
    assert [m.id for m in api.models.list()] == ["bundle"]


def test_curl_posts_multipart_like_the_docs_show(server, clip):
    done = subprocess.run(
        [
            "curl",
            "-sS",
            "-F",
            f"file=@{clip}",
            "-F",
            "model=whisper-1",
            "-F",
            "response_format=verbose_json",
            "-F",
            "temperature=0.5",
            "-F",
            "timestamp_granularities[]=segment",
            f"{server}/v1/audio/transcriptions",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert json.loads(done.stdout)["segments"]


def test_bad_uploads_get_openai_errors_and_the_server_keeps_serving(server, clip, tmp_path):
    api = client(server)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    text = tmp_path / "notes.wav"
    text.write_text("not audio")
    long = tmp_path / "long.wav"
    sf.write(long, np.zeros(48_000, np.float32), 16_000, subtype="PCM_16")
    for path, status, words in (
        (empty, 400, "empty"),
        (text, 400, "not readable audio"),
        (long, 413, "larger than"),
    ):
        with pytest.raises(openai.APIStatusError) as refused, path.open("rb") as audio:
            api.audio.transcriptions.create(model="whisper-1", file=audio)
        assert refused.value.status_code == status
        error = refused.value.body
        assert isinstance(error, dict) and words in error["message"], error
        assert error["type"] == "invalid_request_error" and error["param"] == "file"
    with pytest.raises(openai.BadRequestError), clip.open("rb") as audio:
        api.audio.transcriptions.create(model="whisper-1", file=audio, temperature=3)
    with clip.open("rb") as audio:
        assert api.audio.transcriptions.create(model="w", file=audio, temperature=0.5).text


def test_concurrent_requests_are_queued_on_the_one_model(server, clip):
    texts: list[str] = []

    def ask() -> None:
        with clip.open("rb") as audio:
            answer = client(server).audio.transcriptions.create(
                model="m", file=audio, temperature=0.5
            )
            texts.append(answer.text)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(texts) == 4 and len(set(texts)) == 1


@pytest.fixture(scope="module")
def multilingual_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random multilingual Whisper with a word for every id and its special tokens
    suppressed, so it detects some language and translates it into (random) words."""
    model = tiny_whisper(vocab_size=51865, seed=3)
    model.config._attn_implementation = "eager"
    dims = WhisperDims.from_config(model.config, max_decode_len=16)
    root = tmp_path_factory.mktemp("multilingual") / "bundle"
    root.mkdir()
    export_graphs(model, dims, root)
    spec = replace(MULTILINGUAL, suppress_tokens=tuple(range(50257, 50364)))  # not timestamps
    (root / "bundle.json").write_text(json.dumps(bundle_record("fp32", dims, spec)))
    vocab = {f"w{i}": i for i in range(dims.vocab_size)}
    Tokenizer(models.WordLevel(vocab, unk_token="w0")).save(str(root / "tokenizer.json"))
    np.save(root / "mel_filters.npy", np.zeros((201, 80)))
    return root


def test_translations_of_a_multilingual_bundle_are_the_api_translate(multilingual_bundle, clip):
    options = TranscribeOptions(
        timestamps=True, temperatures=(0.5,), language="auto", task="translate"
    )  # what verbose_json at temperature 0.5 asks for
    expected = load(multilingual_bundle).transcribe(clip, options)
    assert expected.text and expected.language in MULTILINGUAL.languages
    with serving(multilingual_bundle) as url, clip.open("rb") as audio:
        verbose = client(url).audio.translations.create(
            model="whisper-1", file=audio, response_format="verbose_json", temperature=0.5
        )
    assert verbose.text == expected.text
    assert verbose.language == expected.language  # the detected source language


def test_english_only_bundle_refuses_translations_in_openai_error_shape(server, clip):
    with pytest.raises(openai.BadRequestError) as refused, clip.open("rb") as audio:
        client(server).audio.translations.create(model="whisper-1", file=audio)
    assert refused.value.body == {
        "message": "bundle is English-only: it cannot translate",
        "type": "invalid_request_error",
        "param": "model",
        "code": None,
    }
    with clip.open("rb") as audio:  # and it keeps serving
        assert client(server).audio.transcriptions.create(model="w", file=audio).text


def test_vad_form_field_decodes_only_speech(server, clip):
    """Silero finds no speech in the noise clip, so nothing is decoded."""
    form = ("file=@" + str(clip), "vad=true", "response_format=verbose_json")
    done = subprocess.run(
        ["curl", "-sS", *(f"-F{field}" for field in form), f"{server}/v1/audio/transcriptions"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    answer = json.loads(done.stdout)
    assert (answer["text"], answer["segments"], answer["duration"]) == ("", [], 1.0)


def test_openai_client_prompt_is_the_api_initial_prompt(server, bundle, clip):
    """OpenAI's `prompt` field is `initial_prompt`: the same Result as the Python API."""
    api = client(server)
    answers = {}
    for prompt in ("w5 w6", None):
        with clip.open("rb") as audio:
            extra = {"prompt": prompt} if prompt else {}
            answers[prompt] = api.audio.transcriptions.create(
                model="whisper-1", file=audio, response_format="verbose_json", **extra
            )
    options = TranscribeOptions(timestamps=True, initial_prompt="w5 w6")
    expected = load(bundle).transcribe(clip, options)
    assert answers["w5 w6"].text == expected.text
    assert [s.tokens for s in answers["w5 w6"].segments] == [s.tokens for s in expected.segments]
    assert answers["w5 w6"].segments != answers[None].segments  # the prompt was read
    with pytest.raises(openai.BadRequestError) as refused, clip.open("rb") as audio:
        api.audio.transcriptions.create(model="whisper-1", file=audio, prompt="x" * 9000)
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "prompt"
    assert "9000 characters long" in error["message"]
    with clip.open("rb") as audio:  # and it keeps serving
        assert api.audio.transcriptions.create(model="w", file=audio, prompt="w7").text


def test_transcribe_initial_prompt_flag_is_the_api_option(bundle, clip, capsys):
    base = ["transcribe", "--artifact", str(bundle), "--no-guards", "--format", "json"]
    assert main([*base, "--initial-prompt", "w5 w6", str(clip)]) == 0
    printed = json.loads(capsys.readouterr().out)
    options = replace(TranscribeOptions.plain(), initial_prompt="w5 w6")
    assert printed["text"] == load(bundle).transcribe(clip, options).text
    assert main([*base, "--initial-prompt", "x" * 9000, str(clip)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("whisper-npu transcribe: error: initial prompt is 9000 characters")
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--vad", "--vad-threshold", "1.5"], "--vad-threshold: VAD threshold must be between"),
        (["--vad", "--vad-threshold", "high"], "--vad-threshold: expected a number, got 'high'"),
        (["--vad", "--vad-speech-pad-ms", "-1"], "--vad-speech-pad-ms: VAD durations must be"),
        (["--vad", "--vad-min-silence-ms", "0.5"], "--vad-min-silence-ms: expected a whole"),
        (["--vad-min-speech-ms", "250"], "--vad-min-speech-ms needs --vad"),
    ],
)
def test_bad_vad_settings_are_one_line_exit_2(bundle, clip, capsys, flags, message):
    assert main(["transcribe", "--artifact", str(bundle), *flags, str(clip)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"whisper-npu transcribe: error: {message}") and err.count("\n") == 1


def test_vad_settings_reach_silero(bundle, clip, monkeypatch, capsys):
    seen: list[VadOptions] = []

    def regions(samples: np.ndarray, options: VadOptions) -> list:
        seen.append(options)
        return []

    monkeypatch.setattr("whisper_npu.model.speech_regions", regions)
    flags = ["--vad-threshold", "0.3", "--vad-min-silence-ms", "500", "--vad-speech-pad-ms", "0"]
    assert main(["transcribe", "--artifact", str(bundle), "--vad", *flags, str(clip)]) == 0
    assert seen == [VadOptions(threshold=0.3, min_silence_duration_ms=500, speech_pad_ms=0)]
    assert capsys.readouterr().out == "\n"  # no speech: an empty transcript


KEY = "sk-local-test"
APP_ORIGIN = "http://localhost:3000"


@pytest.fixture(scope="module")
def guarded(bundle) -> Iterator[str]:
    """A server with a key (from the environment, as the README advises), a second host name,
    CORS opened to one origin, and 6 s of audio per request."""
    flags = ("--allow-host", "whisper.lan", "--cors-origin", APP_ORIGIN)
    flags += ("--max-audio-minutes", "0.1", "--max-upload-mb", "1")
    with serving(bundle, *flags, env={"WHISPER_NPU_API_KEY": KEY}) as url:
        yield url


def ask(url: str, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """GET `path` with `headers`: status, headers and body, an error status included."""
    request = urllib.request.Request(f"{url}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as refused:
        return refused.code, dict(refused.headers), refused.read()


def test_a_foreign_host_or_page_is_refused_and_the_server_keeps_serving(guarded):
    """DNS rebinding names a foreign host; a foreign page sends its Origin: both refused
    before anything runs, as OpenAI's error JSON."""
    bearer = {"Authorization": f"Bearer {KEY}"}
    status, _, body = ask(guarded, "/v1/models", Host="evil.example", **bearer)
    assert status == 400 and b"Host header" in body
    status, _, body = ask(guarded, "/v1/models", Origin="https://evil.example", **bearer)
    assert status == 403 and json.loads(body)["error"]["type"] == "invalid_request_error"
    for host in ("whisper.lan:8000", "localhost"):
        assert ask(guarded, "/v1/models", Host=host, **bearer)[0] == 200
    status, headers, _ = ask(guarded, "/v1/models", Origin=APP_ORIGIN, **bearer)
    assert status == 200 and headers["access-control-allow-origin"] == APP_ORIGIN


def test_the_key_is_openais_bearer_and_health_says_only_up(guarded, clip):
    with pytest.raises(openai.AuthenticationError), clip.open("rb") as audio:
        client(guarded).audio.transcriptions.create(model="whisper-1", file=audio)
    keyed = openai.OpenAI(base_url=f"{guarded}/v1", api_key=KEY, max_retries=0)
    with clip.open("rb") as audio:
        assert keyed.audio.transcriptions.create(model="whisper-1", file=audio).text
    assert ask(guarded, "/v1/models")[0] == 401
    status, _, body = ask(guarded, "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}


def test_an_upload_that_decodes_past_the_limit_is_refused_in_time(guarded, clip, tmp_path):
    """20 s of Opus without a duration in its header (a browser's recording): decoding stops
    past the server's 6 s, and the server goes on."""
    from tests.test_audio_formats import encode

    upload = tmp_path / "live.webm"
    encode(upload, "libopus", 48_000, "mono", seconds=20, live="1")
    keyed = openai.OpenAI(base_url=f"{guarded}/v1", api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as refused, upload.open("rb") as audio:
        keyed.audio.transcriptions.create(model="whisper-1", file=audio)
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "file"
    assert (
        error["message"]
        == "live.webm: more than 6 s of audio once decoded, the most one call transcribes"
    )
    with clip.open("rb") as audio:
        assert keyed.audio.transcriptions.create(model="whisper-1", file=audio).text
