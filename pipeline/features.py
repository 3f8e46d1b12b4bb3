"""Whisper's log-mel spectrogram in numpy, so the runtime needs no torch.

The mel filter bank is the one transformers' WhisperFeatureExtractor builds (saved into each
bundle as mel_filters.npy); the steps mirror its numpy path, and a test holds them equal.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from pipeline.whisper_io import CHUNK_SECONDS, HOP_LENGTH, N_FFT, SAMPLE_RATE

WINDOW = np.hanning(N_FFT + 1)[:-1].astype(np.float64)  # periodic Hann
WINDOW_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE


def log_mel(samples: np.ndarray, mel_filters: np.ndarray, pad_to_window: bool) -> np.ndarray:
    """[n_mels, frames] float32; with pad_to_window, exactly one 30 s window (3000 frames)."""
    audio = np.asarray(samples, dtype=np.float32)
    if pad_to_window:
        audio = np.pad(audio[:WINDOW_SAMPLES], (0, max(0, WINDOW_SAMPLES - audio.size)))
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    frames = sliding_window_view(padded, N_FFT)[::HOP_LENGTH]
    power = np.abs(np.fft.rfft(frames * WINDOW, axis=-1)) ** 2
    mel = np.maximum(power @ mel_filters, 1e-10)
    log_spec = np.log10(mel).T[:, :-1]
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)
