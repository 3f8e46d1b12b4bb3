"""What the bench's modules pass each other; imports only the standard library at run time,
because the worker process unpickles these records too (bench.json and run.json are in
pipeline.bench.metrics)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from whisper_npu.timing import Sample

if TYPE_CHECKING:
    import numpy as np


EngineKind = Literal["ours", "transformers", "faster_whisper"]
# CTranslate2's compute types the faster-whisper peers run: float32, and int8 (weights quantized
# when the model loads), which is what CPU users of faster-whisper pick.
ComputeType = Literal["float32", "int8"]


@dataclass(frozen=True)
class EngineSpec:
    """What one worker opens: `name` is its key in bench.json."""

    name: str
    kind: EngineKind
    path: Path
    threads: int | None
    cpu_only: bool = False  # the fp32 baseline runs on CPU whatever the machine has
    compute_type: ComputeType = "float32"  # faster-whisper peers only
    # Peers of a multilingual bundle: the language its prompt decodes in when none is asked for
    # (ours and the peers then decode the same prompt); None for an English-only model.
    language: str | None = None
    # Where ours runs (whisper_npu.execution.Device's value: auto, npu or cpu).
    device: str = "auto"


Samples = dict[str, list[Sample]]


@dataclass(frozen=True)
class EvalClips:
    samples: list[np.ndarray]
    references: list[str]
    durations: list[float]
    ids: list[str]


@dataclass(frozen=True)
class ConditionClips:
    """A degraded copy of eval clips (pipeline.sources.conditions), loaded: its name, the noise
    family and SNR it was made with (None: no noise), and its clips."""

    name: str
    family: str
    snr_db: float | None
    clips: EvalClips


@dataclass(frozen=True)
class Measurement:
    """What the workers measured, and every engine's transcript of every eval clip."""

    latency: Samples  # the timed passes over the latency clips
    accuracy: Samples  # the pass over the other clips, for engines without known transcripts
    texts: dict[str, list[str]]  # per engine, its transcript of each eval clip in order
    text_source: dict[str, str]  # per engine, where those transcripts came from
    info: dict[str, dict[str, Any]]  # per engine, what its worker reported (with peak RSS)
    # Per condition, every engine's untimed pass over its clips, in clip order.
    conditions: dict[str, Samples] = field(default_factory=dict)
    # The timed pass over the latency clips again, with `bench.busy_cores` kept busy.
    busy: Samples = field(default_factory=dict)
