"""Read any audio file as 16 kHz mono float32; anything that is not audio is a one-line error.

Only regular files are opened (a FIFO would block), and a file's rate and length are checked
from its header before its samples are decoded, so a hostile header cannot exhaust memory; the
length is counted again while decoding, which stops past the caller's limit, so a small
compressed file that decodes to hours (a header without a length, or one that lies) cannot
either.
libsndfile reads the formats it knows (WAV, FLAC, OGG, MP3); the rest (m4a/aac from phones,
webm/opus from browsers, mp4) goes through PyAV, whose wheels carry FFmpeg on every platform,
and FFmpeg's resampler brings every rate to 16 kHz: the runtime needs no scipy (140 MB of a
Ryzen AI environment, and scipy 1.18 would replace AMD's numpy 1.26.4).
"""

from __future__ import annotations

import gc
import io
import itertools
import math
import os
from collections.abc import Iterable, Iterator
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
# The longest file a call decodes unless told otherwise (at 16 kHz: ~0.9 GB of samples); the
# server passes its own, shorter limit.
DEFAULT_MAX_SECONDS = 4 * 3600
BLOCK_SAMPLES = 1 << 20  # of all channels, decoded and mixed to mono a block at a time
MAX_CHANNELS = 64  # through FFmpeg; more is no recording, and each decoded frame holds them all
NO_NESTED_OPENS = {"protocol_whitelist": "none"}  # FFmpeg opens no file or URL a header names
AV_TIME_BASE = 1_000_000  # FFmpeg's unit of a container's duration
GROUP_SAMPLES = 1 << 16  # per channel, resampled at once: at most 32 MB at MAX_CHANNELS


def _span(seconds: float) -> str:
    """A length as people say it: 3 s, 13.7 min, 3.83 h."""
    if seconds < 120:
        return f"{round(seconds, 1):g} s"
    if seconds < 2 * 3600:
        return f"{round(seconds / 60, 1):g} min"
    return f"{round(seconds / 3600, 2):g} h"


def _check_header(path: Path, rate: float | None, seconds: float | None, limit: float) -> None:
    """Refuse a rate or length out of bounds; either may be None where a format omits it."""
    if rate is not None and not MIN_RATE <= rate <= MAX_RATE:
        raise UserError(f"{path}: sample rate {rate:g} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
    if seconds is not None and seconds > limit:
        raise UserError(
            f"{path}: {_span(seconds)} of audio, more than the {_span(limit)} one call transcribes"
        )


def _check_decoded(path: Path, frames: int, rate: int, limit: float) -> None:
    """Refuse audio whose decoding stopped past the limit: its whole length is not known."""
    if frames > limit * rate:
        raise UserError(
            f"{path}: more than {_span(limit)} of audio once decoded, the most one call transcribes"
        )


def _read_with_libsndfile(
    path: Path, handle: IO[bytes], limit: float
) -> tuple[np.ndarray, int] | None:
    """Mono samples and rate, or None when libsndfile does not know the format. Reading stops
    one block past the limit whatever the header said."""
    try:
        audio = sf.SoundFile(handle)
    except sf.LibsndfileError:
        return None
    with audio:
        rate = int(audio.samplerate)
        _check_header(path, rate, audio.frames / max(rate, 1), limit)
        step = max(BLOCK_SAMPLES // audio.channels, 1)  # an Ogg may hold 255 channels
        # Filled in place where the header says the length (blocks and their concatenation
        # would hold the recording twice); what a header leaves out goes on in blocks.
        mono = np.empty(min(max(audio.frames, 0), int(limit * rate) + step), np.float32)
        more: list[np.ndarray] = []
        frames = 0
        try:
            while frames <= limit * rate:
                block = audio.read(step, dtype="float32", always_2d=True)
                if not len(block):
                    break
                if frames + len(block) <= mono.size:
                    mono[frames : frames + len(block)] = block.mean(axis=1)
                else:
                    more.append(block.mean(axis=1))
                frames += len(block)
        except sf.LibsndfileError as exc:
            raise UserError(f"{path}: not readable audio ({exc})") from None
    _check_decoded(path, frames, rate, limit)
    filled = frames - sum(len(block) for block in more)
    return (np.concatenate([mono[:filled], *more]) if more else mono[:filled]), rate


def _reason(exc: Exception) -> str:
    """FFmpeg's reason alone: PyAV's message adds the errno and the file object's repr."""
    reason = getattr(exc, "strerror", None) or str(exc).strip() or type(exc).__name__
    return str(reason).splitlines()[-1][:200]


def _check_stream(path: Path, container: InputContainer, stream: AudioStream, limit: float) -> None:
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
    _check_header(path, stream.codec_context.sample_rate or None, seconds, limit)


def _groups(
    path: Path, container: InputContainer, stream: AudioStream, limit: float
) -> Iterator[AudioFrame]:
    """Decoded frames joined GROUP_SAMPLES at a time (the resampler costs per call, and 20 ms
    Opus frames are many), each checked first: a stream may change its rate after its header."""
    from av.audio.fifo import AudioFifo

    fifo = AudioFifo()
    for frame in container.decode(stream):
        _check_header(path, frame.sample_rate, None, limit)
        frame.pts = None  # the FIFO refuses a gap in timestamps; only the samples matter here
        fifo.write(frame)
        if fifo.samples >= GROUP_SAMPLES and (group := fifo.read()) is not None:
            yield group
    if (rest := fifo.read()) is not None:
        yield rest


def _at_16k(frames: Iterable[AudioFrame]) -> Iterator[np.ndarray]:
    """`frames` through one FFmpeg resampler to 16 kHz mono float32, flushed at the end."""
    from av.audio.resampler import AudioResampler

    resampler = AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    for frame in itertools.chain(frames, [None]):  # None flushes
        yield from (resampled.to_ndarray()[0] for resampled in resampler.resample(frame))


def _decode_stream(path: Path, container: InputContainer, limit: float) -> np.ndarray:
    if not container.streams.audio:
        raise UserError(f"{path}: not readable audio (no audio stream)")
    stream = container.streams.audio[0]
    _check_stream(path, container, stream, limit)
    # One growing buffer of 16 kHz samples, and decoding stops past the limit: a header
    # without a duration (a browser's webm), or one that lies, cannot make it hold more.
    most = limit * SAMPLE_RATE * np.dtype(np.float32).itemsize
    buffer = io.BytesIO()
    for samples in _at_16k(_groups(path, container, stream, limit)):
        buffer.write(samples.tobytes())
        if buffer.tell() > most:
            break
    mono = np.frombuffer(buffer.getbuffer(), np.float32)
    _check_decoded(path, mono.size, SAMPLE_RATE, limit)
    return mono


def _decode_with_pyav(path: Path, handle: IO[bytes], limit: float) -> tuple[np.ndarray, int]:
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
            return _decode_stream(path, container, limit), SAMPLE_RATE
    except (av.FFmpegError, ValueError) as exc:  # ValueError: a frame the resampler refuses
        raise UserError(f"{path}: not readable audio ({_reason(exc)})") from None
    finally:
        # PyAV 12 and 19 (not 17, 18) leave a decode's objects in reference cycles that hold
        # FFmpeg's buffers, ~3 MB a minute of audio: Python's object counts never trigger a
        # collection for them, so a server's memory would grow (faster-whisper #390).
        gc.collect()


def finite(samples: np.ndarray) -> bool:
    """No NaN or infinity (Whisper would decode them as a line of "!!!!"), checked a block at
    a time: a whole-recording mask would be a quarter of the samples again."""
    return all(
        np.isfinite(samples[start : start + BLOCK_SAMPLES]).all()
        for start in range(0, samples.size, BLOCK_SAMPLES)
    )


def load_audio(path: Path, max_seconds: float | None = None) -> np.ndarray:
    """16 kHz mono float32 samples of a file; a file longer than `max_seconds` (default
    DEFAULT_MAX_SECONDS) is refused, from its header or, where the header does not say, once
    decoding passes the limit (so memory stays bounded by the limit, not by what the file
    decodes to)."""
    limit = DEFAULT_MAX_SECONDS if max_seconds is None else max_seconds
    if not (math.isfinite(limit) and limit > 0):
        raise UserError(f"max_seconds must be a finite number > 0, got {limit}")
    path = Path(path)
    with open_regular(path) as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise UserError(f"{path}: empty file")
        decoded = _read_with_libsndfile(path, handle, limit) or _decode_with_pyav(
            path, handle, limit
        )
    mono, rate = decoded
    if mono.size == 0:
        raise UserError(f"{path}: audio has no samples")
    if not finite(mono):
        raise UserError(f"{path}: audio holds NaN or infinite samples")
    if rate != SAMPLE_RATE:
        mono = _resample(mono, rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _resample(mono: np.ndarray, rate: int) -> np.ndarray:
    """`mono` at `rate` brought to 16 kHz by FFmpeg's resampler, as PyAV's decodes are."""
    from av.audio.frame import AudioFrame

    def frames() -> Iterator[AudioFrame]:
        samples = np.ascontiguousarray(mono, dtype=np.float32)
        for start in range(0, samples.size, GROUP_SAMPLES):
            chunk = samples[None, start : start + GROUP_SAMPLES]
            frame = AudioFrame.from_ndarray(chunk, format="flt", layout="mono")
            frame.sample_rate = rate
            yield frame

    out = list(_at_16k(frames()))
    return np.concatenate(out) if out else np.zeros(0, np.float32)
