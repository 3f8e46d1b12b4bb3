"""The Python API: `load(artifact)` → `Model.transcribe(audio or path, options) -> Result`.

It needs only the runtime's dependencies (numpy, whichever onnxruntime the environment has,
tokenizers, soundfile, av): no torch, Quark or datasets, so it runs on a release
directory on a laptop, in AMD's Ryzen AI environment. VAD
(`vad=VadOptions()`) also needs faster-whisper, imported only then.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from whisper_npu.audio import finite, load_audio
from whisper_npu.decoding import TranscribeOptions
from whisper_npu.errors import UserError
from whisper_npu.execution import Device, Execution
from whisper_npu.language import AUTO
from whisper_npu.result import Result, build_result, words_in_speech
from whisper_npu.transcriber import Transcriber
from whisper_npu.vad import VadOptions, pack, speech_regions, transcribe_speech
from whisper_npu.whisper_io import SAMPLE_RATE


def _samples(audio: np.ndarray | str | Path, max_seconds: float | None) -> np.ndarray:
    """16 kHz mono float32 from a path (at most `max_seconds` of it decoded) or an array;
    NaN/Inf is refused (Whisper would decode it as a line of "!!!!")."""
    if isinstance(audio, str | Path):
        return load_audio(Path(audio), max_seconds)
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1 or samples.size == 0:
        raise UserError(f"audio must be 1-D 16 kHz mono samples, got shape {samples.shape}")
    if not finite(samples):
        raise UserError("audio holds NaN or infinite samples")
    return samples


@dataclass
class Model:
    """One loaded artifact. Not safe for concurrent calls: the sessions' bound buffers (the
    self-attention cache) belong to the one decode in progress."""

    transcriber: Transcriber

    def transcribe(
        self,
        audio: np.ndarray | str | Path,
        options: TranscribeOptions | None = None,
        vad: VadOptions | None = None,
        *,
        max_seconds: float | None = None,
    ) -> Result:
        """Text and segments of a file or of 16 kHz mono float32 samples; with `vad`, only its
        speech is decoded (needs faster-whisper) and times stay the audio's. A file that
        decodes to more than `max_seconds` is refused, its decoding stopped there (a server
        passes its own limit: a small upload can decode to hours). The result says what ran
        the model (`execution`)."""
        samples = _samples(audio, max_seconds)
        result = self._transcribe(samples, options or TranscribeOptions(), vad)
        return replace(result, execution=self.execution)

    @property
    def execution(self) -> Execution:
        """What runs the model: the provider, and why not the NPU where it was wanted."""
        return self.transcriber.execution

    def _transcribe(
        self, samples: np.ndarray, options: TranscribeOptions, vad: VadOptions | None
    ) -> Result:
        if vad is None:
            return self._decode(samples, options)
        self.transcriber.check_prompt(options)  # before the VAD runs over the whole file
        silent = Result("", [], self._language(options), None, _seconds(samples))

        def decode(chunk: np.ndarray, first: Result | None) -> Result:
            if first is None:
                return self._decode(chunk, options)
            # A language detected on the first chunk holds for the others, as without VAD;
            # the initial prompt conditions the first chunk only, as it does the first window.
            later = replace(options, initial_prompt=None)
            if options.language == AUTO:
                later = replace(later, language=first.language)
            return self._decode(chunk, later)

        chunks = pack(speech_regions(samples, vad), vad.speech_pad_ms / 1000)
        return transcribe_speech(samples, chunks, decode, silent)

    def _decode(self, samples: np.ndarray, options: TranscribeOptions) -> Result:
        transcriber = self.transcriber
        decoded = transcriber.decode(samples, options)
        words = transcriber.word_splitter(decoded.language) if options.word_timestamps else None
        result = build_result(
            decoded, transcriber.text, _seconds(samples), options.drop_textless, words
        )
        floor = options.word_floor_db
        return result if words is None or floor is None else words_in_speech(result, samples, floor)

    def _language(self, options: TranscribeOptions) -> str:
        """The language a Result reports when nothing was decoded to detect one."""
        if options.language not in (None, AUTO):
            return str(options.language)
        return self.transcriber.spec().language or "en"


def _seconds(samples: np.ndarray) -> float:
    return round(samples.size / SAMPLE_RATE, 3)


def load(
    artifact: str | Path, threads: int | None = None, device: Device | str = Device.AUTO
) -> Model:
    """A bundle, compiled or release directory, where `device` says: `auto` the NPU where it
    can run (else the CPU, and `Model.execution` says why), `npu` the NPU or a UserError
    naming what is missing, `cpu` the CPU."""
    try:
        chosen = Device(device)
    except ValueError:
        raise UserError(f"device must be one of {', '.join(Device)}, got {device!r}") from None
    return Model(Transcriber.from_artifact(Path(artifact), threads=threads, device=chosen))
