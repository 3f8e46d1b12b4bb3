"""Read any audio file as 16 kHz mono float32; anything that is not audio is a one-line error."""

from __future__ import annotations

from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from pipeline.errors import UserError
from pipeline.whisper_io import SAMPLE_RATE


def _decode_with_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    """Formats libsndfile cannot read (m4a, aac, …) through FFmpeg, as `datasets` decodes them."""
    try:
        from torchcodec.decoders import AudioDecoder

        samples = AudioDecoder(str(path), sample_rate=SAMPLE_RATE, num_channels=1).get_all_samples()
    except Exception as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UserError(f"{path}: not readable audio ({reason})") from None
    return samples.data.numpy().T.astype(np.float32), SAMPLE_RATE


def load_audio(path: Path) -> np.ndarray:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise UserError(f"{path}: empty file")
    try:
        data, rate = sf.read(path, dtype="float32", always_2d=True)
    except sf.LibsndfileError:
        data, rate = _decode_with_ffmpeg(path)
    if data.size == 0:
        raise UserError(f"{path}: audio has no samples")
    mono = data.mean(axis=1)
    if rate != SAMPLE_RATE:
        divisor = gcd(SAMPLE_RATE, int(rate))
        mono = resample_poly(mono, SAMPLE_RATE // divisor, int(rate) // divisor)
    return np.ascontiguousarray(mono, dtype=np.float32)
