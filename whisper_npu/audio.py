"""Read any audio file as 16 kHz mono float32; anything that is not audio is a one-line error.

Only regular files are opened (a FIFO would block), and a file's rate and length are checked
from its header before its samples are decoded, so a hostile header cannot exhaust memory.
libsndfile reads the formats it knows (WAV, FLAC, OGG, MP3); the rest (m4a/aac from phones,
webm/opus from browsers, mp4) goes through PyAV, whose wheels carry FFmpeg on every platform,
and FFmpeg's resampler brings every rate to 16 kHz: the runtime needs no scipy (140 MB of a
Ryzen AI environment, and scipy 1.18 would replace AMD's numpy 1.26.4).
"""

from __future__ import annotations

import gc
import io
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import soundfile as sf

from whisper_npu.errors import UserError
from whisper_npu.fsutil import open_regular
from whisper_npu.whisper_io import SAMPLE_RATE

if TYPE_CHECKING:  # PyAV is imported when a file needs it: WAV alone never loads FFmpeg
    from av.audio.frame import AudioFrame
    from av.audio.stream import AudioStream
    from av.container import InputContainer

MIN_RATE, MAX_RATE = 1_000, 384_000  # Hz: below is not speech audio, above no real device
MAX_SECONDS = 4 * 3600  # longer audio is refused before decoding (at 16 kHz: ~0.9 GB of samples)
BLOCK_FRAMES = 1 << 20  # decoded and mixed to mono a block at a time: channels never multiply
MAX_CHANNELS = 64  # through FFmpeg; more is no recording, and each decoded frame holds them all
NO_NESTED_OPENS = {"protocol_whitelist": "none"}  # FFmpeg opens no file or URL a header names
AV_TIME_BASE = 1_000_000  # FFmpeg's unit of a container's duration
GROUP_SAMPLES = 1 << 16  # per channel, resampled at once: at most 32 MB at MAX_CHANNELS


def _check_header(path: Path, rate: float | None, seconds: float | None) -> None:
    """Refuse a rate or length out of bounds; either may be None where a format omits it."""
    if rate is not None and not MIN_RATE <= rate <= MAX_RATE:
        raise UserError(f"{path}: sample rate {rate:g} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
    if seconds is not None and seconds > MAX_SECONDS:
        raise UserError(
            f"{path}: {seconds / 3600:.2f} h of audio, more than the {MAX_SECONDS // 3600} h "
            "one call transcribes"
        )


def _read_with_libsndfile(path: Path, handle: IO[bytes]) -> tuple[np.ndarray, int] | None:
    """Mono samples and rate, or None when libsndfile does not know the format."""
    try:
        audio = sf.SoundFile(handle)
    except sf.LibsndfileError:
        return None
    with audio:
        _check_header(path, audio.samplerate, audio.frames / max(audio.samplerate, 1))
        try:
            blocks = [
                block.mean(axis=1)
                for block in audio.blocks(BLOCK_FRAMES, dtype="float32", always_2d=True)
            ]
        except sf.LibsndfileError as exc:
            raise UserError(f"{path}: not readable audio ({exc})") from None
    mono = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    return mono, int(audio.samplerate)


def _reason(exc: Exception) -> str:
    """FFmpeg's reason alone: PyAV's message adds the errno and the file object's repr."""
    reason = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return str(reason).splitlines()[-1][:200]


def _check_stream(path: Path, container: InputContainer, stream: AudioStream) -> None:
    """Refuse, before decoding, a header whose channels, rate or length is out of bounds."""
    channels = stream.codec_context.channels
    if channels > MAX_CHANNELS:
        raise UserError(f"{path}: {channels} channels, more than the {MAX_CHANNELS} read")
    if stream.duration is not None and stream.time_base is not None:
        seconds: float | None = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        seconds = container.duration / AV_TIME_BASE
    else:
        seconds = None
    _check_header(path, stream.codec_context.sample_rate or None, seconds)


def _groups(path: Path, container: InputContainer, stream: AudioStream) -> Iterator[AudioFrame]:
    """Decoded frames joined GROUP_SAMPLES at a time (the resampler costs per call, and 20 ms
    Opus frames are many), each checked first: a stream may change its rate after its header."""
    from av.audio.fifo import AudioFifo

    fifo = AudioFifo()
    for frame in container.decode(stream):
        _check_header(path, frame.sample_rate, None)
        frame.pts = None  # the FIFO refuses a gap in timestamps; only the samples matter here
        fifo.write(frame)
        if fifo.samples >= GROUP_SAMPLES and (group := fifo.read()) is not None:
            yield group
    if (rest := fifo.read()) is not None:
        yield rest


def _decode_stream(path: Path, container: InputContainer) -> np.ndarray:
    if not container.streams.audio:
        raise UserError(f"{path}: not readable audio (no audio stream)")
    stream = container.streams.audio[0]
    _check_stream(path, container, stream)
    from av.audio.resampler import AudioResampler

    resampler = AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    # One growing buffer of 16 kHz samples, and decoding stops past the limit: a header
    # without a duration (a browser's webm), or one that lies, cannot make it hold more.
    limit = (MAX_SECONDS + 1) * SAMPLE_RATE * np.dtype(np.float32).itemsize
    buffer = io.BytesIO()
    for group in itertools.chain(_groups(path, container, stream), [None]):  # None flushes
        for resampled in resampler.resample(group):
            buffer.write(resampled.to_ndarray().tobytes())
        if buffer.tell() > limit:
            break
    mono = np.frombuffer(buffer.getbuffer(), np.float32)
    _check_header(path, SAMPLE_RATE, mono.size / SAMPLE_RATE)  # the header had no duration
    return mono


def _decode_with_pyav(path: Path, handle: IO[bytes]) -> tuple[np.ndarray, int]:
    """Formats libsndfile cannot read (m4a, aac, webm, mp4, …) through the FFmpeg inside PyAV's
    wheel, resampled to 16 kHz mono by FFmpeg as faster-whisper's decode_audio does."""
    import av

    # A tag that is not UTF-8 is no reason to refuse the audio: PyAV 19 escapes it, earlier
    # versions raise unless told to ignore it (an argument 19 no longer takes).
    lenient: dict[str, Any] = (
        {"metadata_errors": "ignore"} if int(av.__version__.split(".")[0]) < 19 else {}
    )
    handle.seek(0)
    try:
        # The options stop a concat list (or a playlist) from making FFmpeg open other files.
        with av.open(handle, "r", options=NO_NESTED_OPENS, **lenient) as container:
            return _decode_stream(path, container), SAMPLE_RATE
    except (av.FFmpegError, ValueError) as exc:  # ValueError: a frame the resampler refuses
        raise UserError(f"{path}: not readable audio ({_reason(exc)})") from None
    finally:
        # PyAV 12 and 19 (not 17, 18) leave a decode's objects in reference cycles that hold
        # FFmpeg's buffers, ~3 MB a minute of audio: Python's object counts never trigger a
        # collection for them, so a server's memory would grow (faster-whisper #390).
        gc.collect()


def load_audio(path: Path) -> np.ndarray:
    path = Path(path)
    with open_regular(path) as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise UserError(f"{path}: empty file")
        decoded = _read_with_libsndfile(path, handle) or _decode_with_pyav(path, handle)
    mono, rate = decoded
    if mono.size == 0:
        raise UserError(f"{path}: audio has no samples")
    if not np.isfinite(mono).all():
        raise UserError(f"{path}: audio holds NaN or infinite samples")
    if rate != SAMPLE_RATE:
        mono = _resample(mono, rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _resample(mono: np.ndarray, rate: int) -> np.ndarray:
    """`mono` at `rate` brought to 16 kHz by FFmpeg's resampler, as PyAV's decodes are."""
    from av.audio.frame import AudioFrame
    from av.audio.resampler import AudioResampler

    resampler = AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    out: list[np.ndarray] = []
    for start in [*range(0, mono.size, GROUP_SAMPLES), None]:  # None flushes
        frame = None
        if start is not None:
            chunk = mono[None, start : start + GROUP_SAMPLES]
            frame = AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate = rate
        out.extend(resampled.to_ndarray()[0] for resampled in resampler.resample(frame))
    return np.concatenate(out) if out else np.zeros(0, np.float32)
