"""Whisper's log-mel spectrogram in numpy, so the runtime needs no torch.

The mel filter bank is the one transformers' WhisperFeatureExtractor builds (saved into each
bundle as mel_filters.npy); the steps mirror its numpy path, and a test holds them equal.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from whisper_npu.whisper_io import CHUNK_SECONDS, HOP_LENGTH, N_FFT, SAMPLE_RATE

WINDOW = np.hanning(N_FFT + 1)[:-1].astype(np.float64)  # periodic Hann
WINDOW_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE
# Frames transformed at once (5 minutes of audio): every clip up to 5 minutes is one block.
# Whole-recording spectra of a 2-hour file would take ~5 GB (float64 frames, their complex FFT
# and power); in blocks, each block's samples padded on their own, the peak is the float32
# log-mel itself (115 MB per audio hour, half the samples).
BLOCK_FRAMES = 30_000
# Longer recordings go a window's frames at a time (the same figures, measured: each frame's
# are its own), so a block's float64 frames and spectra stay ~25 MB, not ~250.
STREAM_FRAMES = 3_000
PAD = N_FFT // 2  # the reflection around the recording, as np.pad(mode="reflect") makes it


def _log10_mel(frames: np.ndarray, mel_filters: np.ndarray) -> np.ndarray:
    """log10 mel power of a block of frames, [n_mels, frames] float64."""
    power = np.abs(np.fft.rfft(frames * WINDOW, axis=-1)) ** 2
    mel: np.ndarray = np.log10(np.maximum(power @ mel_filters, 1e-10)).T
    return mel


def _padded(audio: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Samples lo:hi of the reflect-padded recording, without padding the whole of it (the
    recording is longer than PAD: a block boundary lies inside it)."""
    start, stop = lo - PAD, hi - PAD
    piece = audio[max(start, 0) : min(stop, audio.size)]
    left, right = max(0, -start), max(0, stop - audio.size)
    if not (left or right):
        return piece
    head = audio[1 : left + 1][::-1]
    tail = audio[audio.size - 1 - right : audio.size - 1][::-1]
    return np.concatenate([head, piece, tail])


def _block_mels(audio: np.ndarray, mel_filters: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """(first frame, float64 log10 mel) of each block, the recording's last frame dropped
    (as WhisperFeatureExtractor drops it)."""
    kept = audio.size // HOP_LENGTH  # of the n // HOP + 1 frames a centred STFT has
    for start in range(0, kept, STREAM_FRAMES):
        stop = min(start + STREAM_FRAMES, kept + 1)
        piece = _padded(audio, start * HOP_LENGTH, (stop - 1) * HOP_LENGTH + N_FFT)
        frames = sliding_window_view(piece, N_FFT)[::HOP_LENGTH]  # a view: nothing copied
        mel = _log10_mel(frames, mel_filters)
        yield start, mel[:, : min(stop, kept) - start]


def _normalised(log_spec: np.ndarray, top: float) -> np.ndarray:
    """Whisper's dynamic range (8 decades under the recording's loudest frame), scaled."""
    np.maximum(log_spec, top - 8.0, out=log_spec)
    log_spec += 4.0
    log_spec /= 4.0
    return log_spec.astype(np.float32)


def log_mel(samples: np.ndarray, mel_filters: np.ndarray, pad_to_window: bool) -> np.ndarray:
    """[n_mels, frames] float32; with pad_to_window, exactly one 30 s window (3000 frames).
    A recording of several blocks is transformed twice, block by block (the loudest frame
    first, then the output): a few seconds per audio hour for never holding it in float64."""
    audio = np.asarray(samples, dtype=np.float32)
    if pad_to_window:
        audio = np.pad(audio[:WINDOW_SAMPLES], (0, max(0, WINDOW_SAMPLES - audio.size)))
    if audio.size // HOP_LENGTH < BLOCK_FRAMES:  # one block: a short recording's own padding
        padded = np.pad(audio, PAD, mode="reflect")
        frames = sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
        log_spec = _log10_mel(frames, mel_filters)[:, :-1]
        return _normalised(log_spec, float(log_spec.max()))
    top = max(float(mel.max()) for _, mel in _block_mels(audio, mel_filters))
    out = np.empty((mel_filters.shape[1], audio.size // HOP_LENGTH), np.float32)
    for start, mel in _block_mels(audio, mel_filters):
        out[:, start : start + mel.shape[1]] = _normalised(mel, top)
    return out
