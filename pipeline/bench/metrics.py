"""bench.json (the DVC metrics: a row of figures per variant, the peers' rows, the machine, the
device reports sent back from Ryzen AI laptops, every engine on each degraded condition) and
run.json (what the run ran on) as typed records: the gate, the report, the plots and the
release card read fields, and every figure declares its unit, so nothing is guessed from a
key's name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from pipeline.bench.records import EngineKind
from whisper_npu.execution import Execution
from whisper_npu.figures import BenchRow, DeviceFigures, Figure, Fraction, Peer, Sparse, Unit
from whisper_npu.record import Sha256, Strict
from whisper_npu.variants import BASELINE

PEERS_KEY = "peers"
MACHINE_KEY = "machine"
LANGUAGES_KEY = "languages"
DEVICE_KEY = "device"
CONDITIONS_KEY = "conditions"
ALL_LANGUAGES = "all"  # the row over every clip of the multilingual set


Share = Annotated[float, Field(ge=0, le=1), Unit.FRACTION]
OptionalShare = Annotated[float | None, Field(ge=0, le=1), Unit.FRACTION]


class LanguageRow(Sparse):
    """One engine on one language of the multilingual set's eval half (or on all of it,
    `all`): the share of clips it identified as that language, its error rate transcribing
    them with the language given, and the clips whose transcript looped. A language written
    with spaces between words has `wer`, one without (zh, ja, th …) `cer`; `all` has whichever
    its languages have, each pooled over them."""

    clips: Annotated[int, Field(ge=1), Unit.NUMBER]
    loops: Annotated[int, Field(ge=0), Unit.NUMBER]  # clips whose transcript looped
    lid_accuracy: Share
    wer: Annotated[float | None, Field(ge=0), Unit.FRACTION] = None
    cer: Annotated[float | None, Field(ge=0), Unit.FRACTION] = None
    # Share of clips on which it named the language faster-whisper's float32 peer named.
    same_language_as_faster_whisper: OptionalShare = None


# Per engine, per language code (and `all`).
LanguageReport = dict[str, dict[str, LanguageRow]]


class ConditionRow(Strict):
    """One engine on one degraded condition's clips: WER and its parts as rates over the
    reference words (a hallucination shows as insertions), the clips that looped, and against
    fp32 on the same clips in the same run, QoI and the WER difference."""

    clips: Annotated[int, Field(ge=1), Unit.NUMBER]
    words: Annotated[int, Field(ge=1), Unit.NUMBER]
    wer: Fraction
    substitution_rate: Fraction
    deletion_rate: Fraction
    insertion_rate: Fraction
    loops: Annotated[int, Field(ge=0), Unit.NUMBER]
    qoi: Share
    wer_delta_vs_fp32: Annotated[float, Unit.POINTS]


class ConditionReport(Sparse):
    """One degraded condition (pipeline.sources.conditions): its noise family and SNR, the
    WER-against-SNR plot's line and point (no SNR: the condition adds no noise), and every
    engine's row, fp32's among them since QoI and loops are counted against it."""

    family: str
    snr_db: float | None = None
    engines: dict[str, ConditionRow] = Field(min_length=1)

    @model_validator(mode="after")
    def _has_baseline(self) -> ConditionReport:
        if BASELINE not in self.engines:
            raise ValueError(f"no {BASELINE} row (QoI and loops are counted against it)")
        return self


class Machine(Strict):
    cpu: str  # model name and kernel-relevant CPU flags (whisper_npu.host.cpu_model)


class DeviceRow(Strict):
    """A device report (`whisper-npu device-report`) of a benched variant's bundle, as bench.json
    quotes it: that bundle on a Ryzen AI laptop's NPU and, on the same clips, on the laptop's
    CPU. Another machine's figures: shown apart from the run's rows, never gated."""

    report: str  # its file's name in the device reports' directory
    artifact: str
    bundle_sha256: Sha256
    chip: str | None
    ryzen_ai: str | None
    created: str  # UTC, ISO 8601: a later report of the same variant and chip replaces it
    clips: Annotated[int, Field(ge=1)]
    audio_s: Figure
    session_s: Figure  # creating the sessions: the NPU compile, when `compiled`
    compiled: bool
    npu: DeviceFigures
    cpu: DeviceFigures  # the laptop's CPU, not this run's
    speedup_vs_cpu: Annotated[float, Field(gt=0)]  # median of per-clip CPU ms / NPU ms


class BenchMetrics(Strict):
    """bench.json: the variants' rows at the top level, beside `peers` (context, never gated),
    `machine` (the gate widens its latency limit across CPUs), for a multilingual model
    `languages` (every engine on the multilingual set, never gated), with at least one
    report sent back `device` (per `<variant>@<chip>`, never gated) and, when the bench was
    given degraded conditions, `conditions` (per condition, then per engine; gated per
    variant); files from before any of these was recorded lack it."""

    WHAT: ClassVar[str] = "metrics file"
    EXPECTED: ClassVar[str] = "a mapping of variant to metrics"
    FLATTENED: ClassVar[str | None] = "variants"

    variants: dict[str, BenchRow] = Field(min_length=1)
    peers: dict[Peer, BenchRow] | None = None
    machine: Machine | None = None
    languages: LanguageReport | None = None
    device: dict[str, DeviceRow] | None = None
    conditions: dict[str, ConditionReport] | None = None

    @classmethod
    def from_file(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """The variants' rows gathered under `variants`."""
        layout = (PEERS_KEY, MACHINE_KEY, LANGUAGES_KEY, DEVICE_KEY, CONDITIONS_KEY)
        return {
            "variants": {key: value for key, value in raw.items() if key not in layout},
            **{key: raw[key] for key in layout if key in raw},
        }

    @model_serializer(mode="wrap")
    def _flat(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        nested = handler(self)
        return {
            **nested.pop("variants"),
            **{key: value for key, value in nested.items() if value is not None},
        }

    @property
    def cpu(self) -> str | None:
        return self.machine.cpu if self.machine else None

    def conditioned_engines(self) -> dict[str, BenchRow]:
        """The clean rows of the engines scored on every degraded condition."""
        reports = (self.conditions or {}).values()
        return {
            name: row
            for name, row in self.engines().items()
            if all(name in report.engines for report in reports)
        }

    def engines(self) -> dict[str, BenchRow]:
        """Every engine's row, variants first, then the peers."""
        peers: dict[str, BenchRow] = {name: row for name, row in (self.peers or {}).items()}
        return {**self.variants, **peers}


class Clips(Strict):
    eval: int
    long_form: int
    latency: list[str]  # ids of the timed clips
    warmup_runs_per_engine: int
    repeats: int


class Cpu(Strict):
    model: str
    logical_cores: int | None


class Engine(Strict):
    kind: EngineKind
    path: str
    threads: int | None
    transcripts: str  # where its eval transcripts came from
    execution: Execution  # what ran it, and why not the NPU where that was wanted


class ConditionsRun(Strict):
    """The pass over the degraded conditions: how many, their clips (each through every
    engine), and where it ran."""

    conditions: Annotated[int, Field(ge=1)]
    clips: Annotated[int, Field(ge=1)]
    where: str


class RunInfo(Strict):
    """run.json: what a bench ran on, so two runs are compared only when comparable."""

    WHAT: ClassVar[str] = "run file"

    engines: dict[str, Engine]
    peers_skipped: dict[str, str]
    threads: int | None
    threads_note: str
    cpu: Cpu
    versions: dict[str, str | None]
    clips: Clips
    wall_s: float
    conditions: ConditionsRun | None = None

    @model_serializer(mode="wrap")
    def _conditions_when_scored(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """Without conditions, run.json as before (its other nulls are figures: they stay)."""
        out: dict[str, Any] = handler(self)
        if self.conditions is None:
            del out["conditions"]
        return out


@dataclass(frozen=True)
class BenchResult:
    """What one bench run measured: the metrics and run records it writes, and the plots' data."""

    metrics: BenchMetrics
    run: RunInfo
    positions: dict[str, dict[int, float]]
    split: dict[str, dict[str, float]]
    languages_note: str = ""  # what the multilingual pass did, or why it did not run
    device_note: str = ""  # which device reports are not shown, and why
