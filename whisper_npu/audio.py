"""Read any audio file as 16 kHz mono float32; anything that is not audio is a one-line error.

Only regular files are opened (a FIFO would block), and a file's rate and length are checked
from its header before its samples are decoded, so a hostile header cannot exhaust memory.
"""

from __future__ import annotations

import os
from math import gcd
from pathlib import Path
from typing import IO

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from whisper_npu.errors import UserError
from whisper_npu.fsutil import open_regular
from whisper_npu.whisper_io import SAMPLE_RATE

MIN_RATE, MAX_RATE = 1_000, 384_000  # Hz: below is not speech audio, above no real device
MAX_SECONDS = 4 * 3600  # longer audio is refused before decoding (at 16 kHz: ~0.9 GB of samples)
BLOCK_FRAMES = 1 << 20  # decoded and mixed to mono a block at a time: channels never multiply


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


def _decode_with_ffmpeg(path: Path, handle: IO[bytes]) -> tuple[np.ndarray, int]:
    """Formats libsndfile cannot read (m4a, aac, …) through FFmpeg, as `datasets` decodes them."""
    handle.seek(0)
    try:
        from torchcodec.decoders import AudioDecoder

        decoder = AudioDecoder(handle, sample_rate=SAMPLE_RATE, num_channels=1)
        _check_header(path, decoder.metadata.sample_rate, decoder.metadata.duration_seconds)
        # Decoding stops past the limit, so a header without a duration cannot exhaust memory.
        samples = decoder.get_samples_played_in_range(0.0, MAX_SECONDS + 1.0)
    except UserError:
        raise
    except Exception as exc:
        # FFmpeg's reason, without the decoder's source location in front of it
        reason = (str(exc).strip() or type(exc).__name__).splitlines()[-1].rsplit(", ", 1)[-1]
        raise UserError(f"{path}: not readable audio ({reason[:200]})") from None
    mono = samples.data.numpy()[0].astype(np.float32)
    _check_header(path, SAMPLE_RATE, mono.size / SAMPLE_RATE)  # the header had no duration
    return mono, SAMPLE_RATE


def load_audio(path: Path) -> np.ndarray:
    path = Path(path)
    with open_regular(path) as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            raise UserError(f"{path}: empty file")
        decoded = _read_with_libsndfile(path, handle) or _decode_with_ffmpeg(path, handle)
    mono, rate = decoded
    if mono.size == 0:
        raise UserError(f"{path}: audio has no samples")
    if not np.isfinite(mono).all():
        raise UserError(f"{path}: audio holds NaN or infinite samples")
    if rate != SAMPLE_RATE:
        divisor = gcd(SAMPLE_RATE, rate)
        mono = resample_poly(mono, SAMPLE_RATE // divisor, rate // divisor)
    return np.ascontiguousarray(mono, dtype=np.float32)
