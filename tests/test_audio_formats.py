"""Compressed audio (phones' m4a, browsers' webm/opus, mp3, ogg, flac) reads as the signal it was
made from, through libsndfile or PyAV; a damaged or hostile file is one line, refused before it
can take memory or reach other files. PyAV's own encoders make the files: no ffmpeg command."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from whisper_npu import audio
from whisper_npu.audio import load_audio
from whisper_npu.errors import UserError

SECONDS = 2.0
# name, encoder, rate, layout. m4a and webm go through PyAV; libsndfile reads mp3, ogg and
# flac. FFmpeg's own Vorbis encoder writes stereo only.
FORMATS = [
    ("phone.m4a", "aac", 44_100, "stereo"),
    ("browser.webm", "libopus", 48_000, "mono"),
    ("speech.mp3", "libmp3lame", 44_100, "mono"),
    ("speech.ogg", "vorbis", 22_050, "stereo"),
    ("speech.flac", "flac", 32_000, "mono"),
]


def speechlike(rate: int, seconds: float) -> np.ndarray:
    """Two tones under a syllable-rate envelope: codecs keep it, and a lag would show."""
    t = np.arange(round(rate * seconds)) / rate
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    tones = 0.3 * np.sin(2 * np.pi * 330 * t) + 0.15 * np.sin(2 * np.pi * 1210 * t)
    return (envelope * tones).astype(np.float32)


def encode(
    path: Path,
    codec: str,
    rate: int,
    layout: str,
    seconds: float = SECONDS,
    title: str = "",
    mono: np.ndarray | None = None,
    **muxer: str,
) -> np.ndarray:
    """Write `mono` (at `rate`; by default `speechlike`), the same in every channel, with
    PyAV's encoder; return it."""
    mono = speechlike(rate, seconds) if mono is None else mono.astype(np.float32)
    planes = np.tile(mono, (2 if layout == "stereo" else 1, 1))
    with av.open(str(path), "w", options=muxer) as out:
        if title:
            out.metadata["title"] = title
        stream = out.add_stream(codec, rate=rate, options={"strict": "experimental"})
        stream.codec_context.layout = layout
        for start in range(0, mono.size, 1024):
            chunk = np.ascontiguousarray(planes[:, start : start + 1024])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
            frame.sample_rate, frame.pts = rate, start
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return mono


@pytest.mark.parametrize(("name", "codec", "rate", "layout"), FORMATS)
def test_compressed_audio_reads_as_its_source(
    tmp_path: Path, name: str, codec: str, rate: int, layout: str
) -> None:
    encode(tmp_path / name, codec, rate, layout)
    want = speechlike(16_000, SECONDS)  # two tones well below 8 kHz: the same at any rate
    got = load_audio(tmp_path / name)
    assert got.dtype == np.float32 and got.ndim == 1
    # an AAC or MP3 stream ends on a whole frame (1024 or 1152 samples): at most 26 ms more
    assert 0 <= got.size - want.size <= 0.03 * 16_000
    # the decoders drop the encoders' delay: the signal starts where the source did
    lags = range(-160, 161)
    middle = want[4000:28000]
    lag = max(lags, key=lambda k: float(np.dot(got[4000 + k : 28000 + k], middle)))
    assert abs(lag) <= 2, lag
    correlation = np.corrcoef(got[: want.size], want)[0, 1]
    assert correlation > 0.999, correlation  # lossy codecs at their default bitrates


def refusal(path: Path, max_seconds: float = audio.DEFAULT_MAX_SECONDS) -> str:
    with pytest.raises(UserError) as refused:
        load_audio(path, max_seconds)
    message = str(refused.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def test_damaged_or_foreign_files_are_one_line(tmp_path: Path) -> None:
    encode(tmp_path / "whole.m4a", "aac", 44_100, "mono")
    whole = (tmp_path / "whole.m4a").read_bytes()
    (tmp_path / "truncated.m4a").write_bytes(whole[: len(whole) // 2])  # the index is at the end
    noise = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8)
    (tmp_path / "noise.mp3").write_bytes(noise.tobytes())
    (tmp_path / "empty.m4a").write_bytes(b"")
    assert "not readable audio" in refusal(tmp_path / "truncated.m4a")
    assert "not readable audio" in refusal(tmp_path / "noise.mp3")
    assert refusal(tmp_path / "empty.m4a").endswith(": empty file")


def test_a_concat_list_opens_no_other_file(tmp_path: Path) -> None:
    """FFmpeg's concat format names files to read; an upload must not reach the server's."""
    encode(tmp_path / "secret.webm", "libopus", 48_000, "mono")
    (tmp_path / "upload.m4a").write_text(f"ffconcat version 1.0\nfile {tmp_path}/secret.webm\n")
    assert "not readable audio" in refusal(tmp_path / "upload.m4a")


def patch_header(path: Path, before: bytes, after: bytes) -> None:
    """Rewrite one element of a Matroska header: what a hostile upload would claim."""
    data = path.read_bytes()
    assert data.count(before) == 1
    path.write_bytes(data.replace(before, after))


def write_pcm_mka(path: Path, rate: int, layout: str = "stereo") -> None:
    """PCM in Matroska: a container libsndfile does not read, so PyAV checks its header."""
    channels = 2 if layout == "stereo" else 1
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("pcm_s16le", rate=rate)
        stream.codec_context.layout = layout
        samples = np.zeros((1, channels * rate // 10), np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout=layout)
        frame.sample_rate, frame.pts = rate, 0
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_hostile_headers_are_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(*args: object) -> Iterator[av.AudioFrame]:
        raise AssertionError("decoded a refused file")

    monkeypatch.setattr(audio, "_groups", no_decoding)
    write_pcm_mka(tmp_path / "channels.mka", 16_000)
    patch_header(tmp_path / "channels.mka", b"\x9f\x81\x02", b"\x9f\x81\xc8")  # 200
    write_pcm_mka(tmp_path / "fast.mka", 1_000_000, "mono")
    encode(tmp_path / "long.m4a", "aac", 16_000, "mono", seconds=3)
    assert "200 channels, more than the 64" in refusal(tmp_path / "channels.mka")
    assert "sample rate 1e+06 Hz is outside 1000..384000 Hz" in refusal(tmp_path / "fast.mka")
    assert refusal(tmp_path / "long.m4a", 1).endswith(
        "3 s of audio, more than the 1 s one call transcribes"
    )


def test_a_stream_without_duration_stops_decoding_past_the_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A browser's webm has no duration in its header: decoding itself must stop at the limit,
    so an upload of a few MB that decodes to hours cannot fill memory."""
    encode(tmp_path / "live.webm", "libopus", 48_000, "mono", seconds=12, live="1")
    with av.open(str(tmp_path / "live.webm")) as container:
        assert container.duration is None
    decoded: list[float] = []
    groups = audio._groups

    def counted(*args: av.container.InputContainer) -> Iterator[av.AudioFrame]:
        for group in groups(*args):  # type: ignore[arg-type]
            decoded.append(group.samples / group.sample_rate)
            yield group

    monkeypatch.setattr(audio, "_groups", counted)
    assert "more than 1 s of audio once decoded" in refusal(tmp_path / "live.webm", 1)
    assert sum(decoded) < 4  # of 12 s: stopped one group (~4 s at 16 kHz) past the limit
    assert load_audio(tmp_path / "live.webm", 20).size == pytest.approx(12 * 16_000, abs=400)


def test_the_callers_limit_holds_for_libsndfiles_formats(tmp_path: Path) -> None:
    """Refused from the header past the limit, read whole within it; no number is no limit."""
    sf.write(tmp_path / "long.flac", speechlike(16_000, 12.0), 16_000)
    assert "12 s of audio, more than the 5 s" in refusal(tmp_path / "long.flac", 5)
    assert load_audio(tmp_path / "long.flac", 12.5).size == 12 * 16_000
    with pytest.raises(UserError, match="finite number > 0"):
        load_audio(tmp_path / "long.flac", float("nan"))


def test_a_tag_that_is_not_utf8_does_not_refuse_the_audio(tmp_path: Path) -> None:
    encode(tmp_path / "tagged.webm", "libopus", 48_000, "mono", title="ABCDEFGH")
    patch_header(tmp_path / "tagged.webm", b"ABCDEFGH", b"ABC\xff\xfeFGH")
    assert load_audio(tmp_path / "tagged.webm").size == SECONDS * 16_000
