import numpy as np
import pytest

from whisper_npu.features import log_mel

RNG = np.random.default_rng(0)
# transformers frames and transforms in float32, we in float64: up to 3e-5 apart on a log-mel
# whose range is about 2. Identical transcripts on the eval set are checked by export's gate.
ATOL = 1e-4


def speechlike(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 16_000)) / 16_000
    tone = 0.2 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return (tone + 0.01 * RNG.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("seconds", [0.3, 7.5, 30.0])
def test_one_window_matches_transformers(n_mels, seconds):
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor(feature_size=n_mels)
    audio = speechlike(seconds)
    want = extractor(audio, sampling_rate=16_000, return_tensors="np").input_features[0]
    got = log_mel(audio, extractor.mel_filters, pad_to_window=True)
    assert got.shape == want.shape == (n_mels, 3000)
    np.testing.assert_allclose(got, want, atol=ATOL)


def test_whole_recording_matches_transformers_long_form_features():
    from transformers import WhisperFeatureExtractor

    extractor = WhisperFeatureExtractor()
    audio = speechlike(47.3)
    want = extractor(
        audio, sampling_rate=16_000, return_tensors="np", truncation=False, padding="longest"
    )
    got = log_mel(audio, extractor.mel_filters, pad_to_window=False)
    assert got.shape == want.input_features[0].shape
    np.testing.assert_allclose(got, want.input_features[0], atol=ATOL)


@pytest.mark.runtime
@pytest.mark.parametrize("stream", [64, 77, 699, 700])  # 700 frames = 7 s: one block
@pytest.mark.parametrize("samples", [16000 * 7, 16000 * 7 - 1, 16000 * 7 + 159])
def test_long_audio_in_blocks_equals_one_piece(monkeypatch, stream, samples):
    """Blocks, each padded on its own and normalised against the loudest frame of all, bound
    the memory of hour-long inputs without changing a single value."""
    from whisper_npu import features

    rng = np.random.default_rng(1)
    audio = (rng.standard_normal(samples) * 0.1).astype(np.float32)
    audio[-3:] = 0.9  # the reflection at the end is in the last block
    filters = rng.random((201, 80)).astype(np.float32)
    whole = features.log_mel(audio, filters, pad_to_window=False)
    monkeypatch.setattr(features, "BLOCK_FRAMES", 64)
    monkeypatch.setattr(features, "STREAM_FRAMES", stream)
    blocked = features.log_mel(audio, filters, pad_to_window=False)
    assert blocked.dtype == np.float32 and blocked.shape == (80, samples // 160)
    np.testing.assert_array_equal(blocked, whole)
