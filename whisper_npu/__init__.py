"""whisper-npu's Python API: run an exported Whisper bundle, compiled directory or release.

from whisper_npu import TranscribeOptions, VadOptions, load

model = load("artifacts/release/a16w8")
result = model.transcribe("meeting.wav", TranscribeOptions(timestamps=True))
for segment in result.segments:
    print(f"{segment.start:.2f} {segment.end:.2f} {segment.text}")
quiet = model.transcribe("meeting.wav", vad=VadOptions())  # speech only (faster-whisper)
"""

from pipeline.errors import UserError
from pipeline.runtime.decoding import TranscribeOptions
from pipeline.runtime.model import Model, load
from pipeline.runtime.result import Result, Segment
from pipeline.runtime.vad import VadOptions

__all__ = ["Model", "Result", "Segment", "TranscribeOptions", "UserError", "VadOptions", "load"]
