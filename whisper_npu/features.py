"""Whisper's log-mel spectrogram in numpy, so the runtime needs no torch.

The mel filter bank is the one transformers' WhisperFeatureExtractor builds (saved into each
bundle as mel_filters.npy); the steps mirror its numpy path, and a test holds them equal.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from whisper_npu.whisper_io import CHUNK_SECONDS, HOP_LENGTH, N_FFT, SAMPLE_RATE

WINDOW = np.hanning(N_FFT + 1)[:-1].astype(np.float64)  # periodic Hann
WINDOW_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE
# Frames transformed at once (5 minutes of audio). Whole-recording spectra of a 2-hour file
# would take ~5 GB (float64 frames, their complex FFT and power); in blocks the peak is the
# log-mel itself. Every clip up to 5 minutes is one block, computed exactly as in one piece.
BLOCK_FRAMES = 30_000


def _log10_mel(frames: np.ndarray, mel_filters: np.ndarray) -> np.ndarray:
    """log10 mel power of a block of frames, [n_mels, frames] float64."""
    power = np.abs(np.fft.rfft(frames * WINDOW, axis=-1)) ** 2
    mel: np.ndarray = np.log10(np.maximum(power @ mel_filters, 1e-10)).T
    return mel


def log_mel(samples: np.ndarray, mel_filters: np.ndarray, pad_to_window: bool) -> np.ndarray:
    """[n_mels, frames] float32; with pad_to_window, exactly one 30 s window (3000 frames)."""
    audio = np.asarray(samples, dtype=np.float32)
    if pad_to_window:
        audio = np.pad(audio[:WINDOW_SAMPLES], (0, max(0, WINDOW_SAMPLES - audio.size)))
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    frames = sliding_window_view(padded, N_FFT)[::HOP_LENGTH]  # a view: nothing copied yet
    blocks = [
        _log10_mel(frames[start : start + BLOCK_FRAMES], mel_filters)
        for start in range(0, len(frames), BLOCK_FRAMES)
    ]
    log_spec = (blocks[0] if len(blocks) == 1 else np.concatenate(blocks, axis=1))[:, :-1]
    del blocks
    # In place: the same arithmetic without two more whole-recording float64 copies.
    np.maximum(log_spec, log_spec.max() - 8.0, out=log_spec)
    log_spec += 4.0
    log_spec /= 4.0
    return log_spec.astype(np.float32)
