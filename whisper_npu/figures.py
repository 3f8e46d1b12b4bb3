"""One engine's figures, each with its unit, as a bench row states them: what bench.json holds
per variant and peer, what a release card quotes, and what a device report measures on the
laptop. Apart from the bench because the runtime reads and writes them too."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Literal, get_args

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from whisper_npu.record import Strict

# The peers the bench runs on the same weights, by their key in bench.json.
Peer = Literal["transformers", "faster_whisper", "faster_whisper_int8"]
PEERS: tuple[Peer, ...] = get_args(Peer)


class Unit(Enum):
    """What a figure measures, and so how a person reads it."""

    FRACTION = "fraction"  # WER as a fraction of words: shown as a percentage
    POINTS = "points"  # a WER difference, already in percentage points
    MS = "ms"
    RATIO = "ratio"  # a speedup: >1 is faster
    NUMBER = "number"  # seconds, MB, counts, 1/0 flags: shown as recorded, 4 significant digits

    def show(self, value: float) -> str:
        if self is Unit.FRACTION:
            return f"{value:.2%}"
        if self is Unit.POINTS:
            return f"{value:+.2f} points"
        if self is Unit.MS:
            return f"{value:.1f} ms"
        if self is Unit.RATIO:
            return f"{value:.2f}x"
        return f"{value:.4g}"


Figure = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0), Unit.FRACTION]
Speedup = Annotated[float, Field(gt=0), Unit.RATIO]  # inverted by the gate: never 0


class Sparse(Strict):
    """A record some of whose fields an engine or a run may not have: a field it does not have
    is absent from the file, not null, so files from before the field stay byte for byte."""

    @model_serializer(mode="wrap")
    def _present(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class BenchRow(Sparse):
    """One engine's figures (4 significant digits). WER and the same-run speedup against fp32
    are what the gate compares and every engine has them; the rest depends on what the engine
    exposes (the peers have no encoder or decoder calls to time)."""

    wer: Fraction
    speedup_vs_fp32: Speedup
    wer_long: Annotated[float | None, Field(ge=0), Unit.FRACTION] = None
    wer_delta_vs_fp32: Annotated[float | None, Unit.POINTS] = None
    e2e_ms_p50: Annotated[float | None, Unit.MS] = None
    e2e_ms_p90: Annotated[float | None, Unit.MS] = None
    encoder_ms_p50: Annotated[float | None, Unit.MS] = None
    encoder_ms_p90: Annotated[float | None, Unit.MS] = None
    decoder_ms_per_token_p50: Annotated[float | None, Unit.MS] = None
    decoder_ms_per_token_p90: Annotated[float | None, Unit.MS] = None
    # Share of clips whose WER is no worse than fp32's in the same run (WhisperKit's QoI).
    qoi: Annotated[float | None, Field(ge=0, le=1), Unit.FRACTION] = None
    rtf: Annotated[float | None, Unit.NUMBER] = None  # compute seconds per audio second
    rtfx: Annotated[float | None, Unit.NUMBER] = None  # audio seconds per compute second (1/rtf)
    tokens_per_s: Annotated[float | None, Unit.NUMBER] = None
    speedup_vs_transformers: Annotated[float | None, Field(gt=0), Unit.RATIO] = None
    speedup_vs_faster_whisper: Annotated[float | None, Field(gt=0), Unit.RATIO] = None
    speedup_vs_faster_whisper_int8: Annotated[float | None, Field(gt=0), Unit.RATIO] = None
    peak_rss_mb: Annotated[float | None, Unit.NUMBER] = None
    size_mb: Annotated[float | None, Unit.NUMBER] = None
    load_s: Annotated[float | None, Unit.NUMBER] = None
    budget_met: Annotated[float | None, Unit.NUMBER] = None  # 1 or 0, quantized variants
    # Clips whose transcript looped (whisper_npu.wer.is_loop): their insertions can hide in WER.
    loops: Annotated[int | None, Field(ge=0), Unit.NUMBER] = None
    # One timed pass with a background load on `bench.busy_cores` (pipeline.bench.load).
    busy_e2e_ms_p50: Annotated[float | None, Unit.MS] = None
    busy_slowdown: Annotated[float | None, Field(gt=0), Unit.RATIO] = None  # busy / idle p50
    busy_speedup_vs_fp32: Annotated[float | None, Field(gt=0), Unit.RATIO] = None
    busy_speedup_vs_faster_whisper_int8: Annotated[float | None, Field(gt=0), Unit.RATIO] = None

    def speedup_vs(self, peer: Peer) -> float | None:
        return {
            "transformers": self.speedup_vs_transformers,
            "faster_whisper": self.speedup_vs_faster_whisper,
            "faster_whisper_int8": self.speedup_vs_faster_whisper_int8,
        }[peer]

    def figures(self) -> list[tuple[str, float, Unit]]:
        """The figures present, by name, each with its unit."""
        found = []
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if value is not None:
                (unit,) = (item for item in field.metadata if isinstance(item, Unit))
                found.append((name, value, unit))
        return found


class DeviceFigures(Strict):
    """One provider's pass over a device report's clips, in the bench's definitions
    (whisper_npu.timing): here because bench.json quotes them too."""

    provider: str
    wer: Figure
    e2e_ms_p50: Figure
    e2e_ms_p90: Figure
    encoder_ms_p50: Figure | None
    decoder_ms_per_token_p50: Figure | None
    rtfx: Figure
    tokens_per_s: Figure
