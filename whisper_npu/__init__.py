"""whisper-npu's Python API: run an exported Whisper bundle, compiled directory or release.

from whisper_npu import TranscribeOptions, VadOptions, load

model = load("artifacts/release/bf16")            # the NPU where it can run, else the CPU
result = model.transcribe("meeting.wav", TranscribeOptions(timestamps=True))
for segment in result.segments:
    print(f"{segment.start:.2f} {segment.end:.2f} {segment.text}")
worded = model.transcribe("meeting.wav", TranscribeOptions(word_timestamps=True))
for word in worded.segments[0].words:                 # Word(word, start, end, probability)
    print(f"{word.start:.2f} {word.end:.2f} {word.word}")
quiet = model.transcribe("meeting.wav", vad=VadOptions())  # speech only (faster-whisper)
model = load("artifacts/release/bf16", device="npu")  # the NPU or a UserError saying why not

The names are imported when first used, so the pipeline, which imports this package's modules
(records, file layout, variants), does not load ONNX Runtime for them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from whisper_npu.alignment import Word
    from whisper_npu.decoding import TranscribeOptions
    from whisper_npu.errors import UserError
    from whisper_npu.execution import Device, Execution
    from whisper_npu.model import Model, load
    from whisper_npu.result import Result, Segment
    from whisper_npu.vad import VadOptions

_HOMES = {
    "Device": "whisper_npu.execution",
    "Execution": "whisper_npu.execution",
    "Model": "whisper_npu.model",
    "Result": "whisper_npu.result",
    "Segment": "whisper_npu.result",
    "TranscribeOptions": "whisper_npu.decoding",
    "UserError": "whisper_npu.errors",
    "VadOptions": "whisper_npu.vad",
    "Word": "whisper_npu.alignment",
    "load": "whisper_npu.model",
}
__all__ = [
    "Device",
    "Execution",
    "Model",
    "Result",
    "Segment",
    "TranscribeOptions",
    "UserError",
    "VadOptions",
    "Word",
    "load",
]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'whisper_npu' has no attribute {name!r}")
    return getattr(import_module(_HOMES[name]), name)
