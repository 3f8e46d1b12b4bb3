"""Spoken-language identification for multilingual bundles, as OpenAI and transformers do it:
one decoder step after <|startoftranscript|> on the file's first 30 s window, then the
distribution over the language tokens alone (every other token is ignored)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from whisper_npu.decoding import DecodingSpec, Runner
from whisper_npu.whisper_io import N_FRAMES

AUTO = "auto"


@dataclass(frozen=True)
class DetectedLanguage:
    code: str  # "fr"
    probability: float  # softmax over the language tokens only


def first_window(mel: np.ndarray) -> np.ndarray:
    """[1, n_mels, 3000]: a whole-file log-mel's first window, zero-padded like the decoder's."""
    window = np.zeros((1, mel.shape[0], N_FRAMES), dtype=np.float32)
    frames = min(N_FRAMES, mel.shape[-1])
    window[0, :, :frames] = mel[:, :frames]
    return window


def language_probabilities(
    runner: Runner, spec: DecodingSpec, features: np.ndarray
) -> dict[str, float]:
    """Each language's probability for one window [1, n_mels, 3000]."""
    codes = list(spec.languages)
    runner.encode(features)
    logits = runner.decode_step(spec.prefix[0], 0)
    scores = logits[[spec.languages[code] for code in codes]].astype(np.float64)
    weights = np.exp(scores - scores.max())
    return dict(zip(codes, (weights / weights.sum()).tolist(), strict=True))


def detect_language(runner: Runner, spec: DecodingSpec, features: np.ndarray) -> DetectedLanguage:
    """The most likely language of one window (an English-only bundle knows only English)."""
    if not spec.languages:
        return DetectedLanguage("en", 1.0)
    probabilities = language_probabilities(runner, spec, features)
    code = max(probabilities, key=probabilities.__getitem__)
    return DetectedLanguage(code, probabilities[code])
