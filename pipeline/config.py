"""The one schema for params.yaml, checked whenever a stage or command starts.

Every section is a frozen pydantic model that forbids unknown keys, so a typo fails at
start-up with the key's dotted path instead of deep inside a stage.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from whisper_npu.errors import UserError
from whisper_npu.fsutil import read_text
from whisper_npu.layout import model_slug
from whisper_npu.record import describe
from whisper_npu.variants import DEFAULT_VARIANTS, QUANTIZED, VARIANTS, Backend, Target, Variant
from whisper_npu.whisper_io import MAX_DECODE_POSITIONS

DEFAULT_PARAMS = Path("params.yaml")
MAX_PARAMS_BYTES = 1 << 20


class Section(BaseModel):
    # nan and inf are never a setting: nan compares False and would pass every threshold.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ModelParams(Section):
    source: str = Field(
        "builtin:tiny.en",
        description="builtin:tiny.en, builtin:base (extra .[base]), a hub id "
        "(openai/whisper-base.en), a local transformers directory, "
        "or a CTranslate2 (faster-whisper) directory",
        min_length=1,
    )
    revision: str = Field("main", description="hub revision (branch, tag or commit)")
    name: str | None = Field(
        None,
        description="the model part of the registry names in dvc.yaml (whisper-<name>-<variant>);"
        " must follow source (builtin:base → base)",
    )

    @model_validator(mode="after")
    def _name_follows_source(self) -> ModelParams:
        if self.name is not None and self.name != model_slug(self.source):
            raise ValueError(
                f"name {self.name!r} does not follow source; expected {model_slug(self.source)!r}"
            )
        return self


class BuiltinSet(Section):
    """Speech synthesised offline from sentence lists kept in calibration/."""

    kind: Literal["builtin"]
    sentences: Path
    longform: Path | None = Field(None, description="one paragraph per line, read as one clip")
    limit: Annotated[int, Field(gt=0)] | None = None


class AudioFolderSet(Section):
    """A local `datasets` audiofolder: audio files + metadata.csv with file_name and text."""

    kind: Literal["audiofolder"]
    path: Path
    text_column: str = "text"
    limit: Annotated[int, Field(gt=0)] | None = None


class HubSet(Section):
    kind: Literal["hub"]
    dataset: str
    config: str | None = None
    split: str
    revision: str = "main"
    audio_column: str = "audio"
    text_column: str = "text"
    limit: Annotated[int, Field(gt=0)] | None = None


SpeechSetParams = Annotated[BuiltinSet | AudioFolderSet | HubSet, Field(discriminator="kind")]


class PiperVoice(Section):
    engine: Literal["piper"]
    length_scale: Annotated[float, Field(gt=0.3, lt=3.0)] = 1.0


class EspeakVoice(Section):
    engine: Literal["espeak-ng"]
    # Passed to espeak-ng's -v: a voice name, never something that reads as an option.
    voice: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_+.-]*$", max_length=64)] = "en-us"
    words_per_minute: Annotated[int, Field(ge=80, le=450)] = 165


VoiceParams = Annotated[PiperVoice | EspeakVoice, Field(discriminator="engine")]


class DataParams(Section):
    calibration: SpeechSetParams
    eval: SpeechSetParams
    voices: list[VoiceParams] = Field(
        min_length=1, description="built-in sets: clip i is read by voices[i % len(voices)]"
    )


SPEED_OF_SOUND = 343.0  # m/s, pyroomacoustics' default
SABINE = 24 * math.log(10) / SPEED_OF_SOUND  # ≈ 0.161 s/m: RT60 = SABINE · V / (S · absorption)


class Reverb(Section):
    """A shoebox room simulated by the image method (pyroomacoustics), the talker `distance_m`
    from the microphone."""

    rt60_s: Annotated[float, Field(gt=0, le=2.0)]
    room_m: tuple[
        Annotated[float, Field(ge=1.5, le=30)],
        Annotated[float, Field(ge=1.5, le=30)],
        Annotated[float, Field(ge=2.0, le=10)],
    ]
    distance_m: Annotated[float, Field(gt=0, le=20)] = 1.0

    @model_validator(mode="after")
    def _physical(self) -> Reverb:
        """Sabine: a room's shortest RT60 is that of walls absorbing everything; and the talker
        stands in the room, 0.5 m from the walls at least, beside a microphone at its centre."""
        x, y, z = self.room_m
        shortest = SABINE * x * y * z / (2 * (x * y + y * z + x * z))
        if self.rt60_s < shortest:
            raise ValueError(
                f"rt60_s: {self.rt60_s:g} s is shorter than any {x:g} x {y:g} x {z:g} m room "
                f"rings (its shortest RT60, every wall absorbing all, is {shortest:.2f} s)"
            )
        if self.distance_m > x / 2 - 0.5:
            raise ValueError(
                f"distance_m: {self.distance_m:g} m from the centre of a {x:g} m room leaves "
                f"the talker less than 0.5 m from its wall (at most {x / 2 - 0.5:g} m)"
            )
        return self


class Condition(Section):
    """A named degradation of clean clips, its steps applied in the order of a real signal path:
    the room, then noise in it, then the telephone line, then the level. A `snr_db` list makes
    one condition per SNR, named `<name>-<snr>db`."""

    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]*$", max_length=40)]
    reverb: Reverb | None = None
    noise: Literal["white", "pink", "babble"] | None = None
    snr_db: Annotated[list[Annotated[float, Field(ge=0, le=60)]], Field(min_length=1)] | None = None
    telephone: bool = Field(False, description="8 kHz, 300-3400 Hz, μ-law, back to 16 kHz")
    peak_dbfs: Annotated[float, Field(ge=-60, lt=0)] | None = Field(
        None, description="the clip scaled to this peak level (quiet speech)"
    )
    gain_db: Annotated[float, Field(gt=0, le=40)] | None = Field(
        None, description="amplified by this much, then clipped at full scale"
    )

    @model_validator(mode="after")
    def _consistent(self) -> Condition:
        if (self.noise is None) != (self.snr_db is None):
            raise ValueError("noise and snr_db go together")
        if self.peak_dbfs is not None and self.gain_db is not None:
            raise ValueError("peak_dbfs and gain_db both set the level: give one")
        if not (self.reverb or self.noise or self.telephone or self.peak_dbfs or self.gain_db):
            raise ValueError(f"condition {self.name!r} degrades nothing")
        return self

    def expanded(self) -> dict[str, float | None]:
        """Each condition this entry makes, by name, with its SNR (None: no noise)."""
        if self.snr_db is None:
            return {self.name: None}
        return {f"{self.name}-{snr:g}db": snr for snr in self.snr_db}


class ConditionsParams(Section):
    """Seeded, deterministic degradations of the clean sets (pipeline/sources/conditions.py):
    `eval` ones are scored by the bench and gated, `holdback` ones join the clean held-back
    clips in each quantized variant's WER budget. The clean sets stay as they are."""

    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0
    eval_clips: Annotated[int, Field(ge=1)] = Field(
        12, description="short-form eval clips each eval condition degrades, spread by duration"
    )
    holdback_clips: Annotated[int, Field(ge=1)] = Field(
        56, description="held-back calibration clips each holdback condition degrades"
    )
    define: list[Condition] = Field([], description="the conditions, each named once")
    eval: list[str] = Field([], description="names (or `define` entries) the bench scores")
    holdback: list[str] = Field([], description="names the quantize budget also holds on")

    @model_validator(mode="after")
    def _names_known(self) -> ConditionsParams:
        named = self.names()
        duplicates = sorted({n for n in named if named.count(n) > 1})
        if duplicates:
            raise ValueError(f"define: condition {duplicates[0]!r} named twice")
        for key in ("eval", "holdback"):
            self.resolve(key)
        return self

    def names(self) -> list[str]:
        return [name for entry in self.define for name in entry.expanded()]

    def resolve(
        self, key: Literal["eval", "holdback"]
    ) -> dict[str, tuple[Condition, float | None]]:
        """`eval` or `holdback` as conditions by name: an entry's name stands for every SNR it
        makes. An unknown name is refused with the ones defined."""
        out: dict[str, tuple[Condition, float | None]] = {}
        for wanted in getattr(self, key):
            found = [
                (name, entry, snr)
                for entry in self.define
                for name, snr in entry.expanded().items()
                if wanted in (name, entry.name)
            ]
            if not found:
                known = ", ".join(self.names()) or "none defined"
                raise ValueError(f"{key}: unknown condition {wanted!r} (defined: {known})")
            out.update({name: (entry, snr) for name, entry, snr in found})
        return out


class ParityParams(Section):
    """ONNX (fp32, ORT CPU) vs PyTorch on the same log-mel.

    fp32 kernels differ only in summation order: cross K/V agree to ~1e-5 and logits (magnitude
    ~10-40) to ~1e-4 on tiny.en; the bounds leave a margin for larger models.
    """

    tensor_clips: Annotated[int, Field(ge=1)] = 8
    cross_kv_atol: Annotated[float, Field(gt=0)] = 1e-3
    logits_atol: Annotated[float, Field(gt=0)] = 1e-2


class ExportParams(Section):
    max_decode_len: Annotated[int, Field(ge=4, le=MAX_DECODE_POSITIONS)] = Field(
        MAX_DECODE_POSITIONS, description="static self-attention cache length (the model's limit)"
    )
    language: str = Field("en", description="multilingual models: the language token in the prompt")
    parity: ParityParams = ParityParams()


class CalibrateParams(Section):
    """Which calibration clips feed the quantizer and which are held back to measure WER."""

    clips: Annotated[int, Field(ge=1)] = 32
    holdout: Annotated[int, Field(ge=1)] = 112
    decoder_steps_per_clip: Annotated[int, Field(ge=1, le=64)] = 6


def _quantized(value: object) -> object:
    """Only a quantized variant is a quantize setting: `quantize.variants: [fp32]` is refused
    in the words pydantic uses for any value outside a set."""
    if not isinstance(value, str) or value not in QUANTIZED:
        *names, last = (repr(variant.value) for variant in QUANTIZED)
        expected = f"{', '.join(names)} or {last}"
        raise PydanticCustomError("enum", "Input should be {expected}", {"expected": expected})
    return value


QuantizedVariant = Annotated[Variant, BeforeValidator(_quantized)]


def _integer(value: Variant) -> Variant:
    """The x2-int form is for the integer flow: a bfloat16 variant goes through VAIML."""
    if QUANTIZED[value].bfloat16:
        raise ValueError(f"{value} is not an integer variant; the x2-int form is for integer ones")
    return value


IntegerVariant = Annotated[QuantizedVariant, AfterValidator(_integer)]


class SensitivityParams(Section):
    encoder_feeds: Annotated[int, Field(ge=1)] = 4
    decoder_feeds: Annotated[int, Field(ge=1)] = 24


class QuantizeParams(Section):
    backend: Backend = "quark"
    variants: list[QuantizedVariant] = Field(
        [v for v in DEFAULT_VARIANTS if v in QUANTIZED], min_length=1
    )
    # Absolute WER points a variant may lose against fp32 on the held-back calibration clips.
    max_wer_delta: dict[QuantizedVariant, Annotated[float, Field(ge=0)]] = {
        variant: quant.max_wer_delta for variant, quant in QUANTIZED.items()
    }
    max_excluded: Annotated[int, Field(ge=0)] = 16
    op_types: list[Literal["MatMul", "Gemm", "Conv"]] = Field(
        ["MatMul", "Gemm", "Conv"], min_length=1
    )
    decoder_variant: dict[QuantizedVariant, QuantizedVariant] = Field(
        {}, description="quantize the decoder with another variant's config, e.g. {a8w8: a16w8}"
    )
    npu_form: list[IntegerVariant] = Field(
        [Variant.A16W8],
        description="variants quantized in the x2-int form (pipeline/quant/npu_form.py): "
        "LayerNorm and GELU rewritten, every op quantized",
    )
    encoder_calibration_feeds: Annotated[int, Field(ge=1)] = 16
    decoder_calibration_feeds: Annotated[int, Field(ge=1)] = 96
    sensitivity: SensitivityParams = SensitivityParams()

    @model_validator(mode="after")
    def _cpu_only_graphs_alone(self) -> QuantizeParams:
        """A CPU-only variant's decoder is its own, and no NPU variant's decoder is CPU-only."""
        mixed = sorted(
            {v for pair in self.decoder_variant.items() for v in pair if VARIANTS[v].cpu_only}
        )
        if mixed:
            raise ValueError(
                f"decoder_variant: {', '.join(map(repr, mixed))} is CPU only and pairs with no "
                "other variant"
            )
        return self


class CompileParams(Section):
    """VitisAI EP set-up per variant, and the partition forecast when the EP is absent."""

    target: Target = Field("stx", description="Ryzen AI chip: stx/krk (XDNA2), phx/hpt (XDNA1)")
    variants: list[Variant] = Field([*DEFAULT_VARIANTS], min_length=1)
    tokens_per_window: Annotated[int, Field(ge=1, le=MAX_DECODE_POSITIONS)] = Field(
        120, description="decoder calls in a typical 30 s window, for the dispatch forecast"
    )


# Where the bench's WER pass may run: Ray on this machine, a running cluster, or host:port.
RAY_ADDRESS = re.compile(r"(local|auto|(ray://)?[A-Za-z0-9][A-Za-z0-9.-]*:(?P<port>[0-9]{1,5}))")
DEFAULT_RAY_TIMEOUT_S = 60.0  # to join a cluster; Ray itself retries an unreachable one ~12 min


def checked_ray_address(text: str) -> str:
    """`text` if it is a Ray address (`--ray`, `bench.ray`): refused here, in one line, rather
    than after the run's set-up, or by a Ray that retries a mistyped host for minutes."""
    match = RAY_ADDRESS.fullmatch(text)
    if match is None or not 0 < int(match["port"] or 1) < 65536:
        raise ValueError(
            "not a Ray address (expected local, auto, host:port or ray://host:port, port 1-65535)"
        )
    return text


def init_address(setting: str) -> str:
    """A checked address as pipeline.bench.sharded takes it: "" (ray.init()'s own choice) for
    local."""
    return "" if setting == "local" else setting


class BenchParams(Section):
    """Latency and WER of every compiled variant against the fp32 CPU baseline, in one run."""

    warmup: Annotated[int, Field(ge=0)] = 1
    repeats: Annotated[int, Field(ge=1)] = 3
    latency_clips: Annotated[int, Field(ge=1)] = 12
    threads: Annotated[int, Field(ge=1)] | None = None
    device: Literal["auto", "npu", "cpu"] = Field(
        "auto",
        description="where the variants run (whisper-npu --device); fp32 is timed on "
        "the CPU as the baseline whatever this says",
    )
    peers: bool = Field(True, description="also time transformers and faster-whisper if installed")
    busy_cores: Annotated[int, Field(ge=0, le=64)] = Field(
        1,
        description="cores a background load keeps busy during one more timed pass over the "
        "latency clips (a laptop is never idle); 0: no such pass",
    )
    ray: Annotated[str, AfterValidator(checked_ray_address)] | None = Field(
        None,
        description="the WER pass on Ray actors (extra .[ray]): local (ray.init() here), auto "
        "or ray://host:10001 (a running cluster); null: in this process. Latency is local.",
    )
    ray_timeout_s: Annotated[float, Field(gt=0, le=3600)] = Field(
        DEFAULT_RAY_TIMEOUT_S, description="seconds to wait for `ray` to answer before giving up"
    )

    @property
    def ray_address(self) -> str | None:
        """`ray` as pipeline.bench.sharded takes it: "" for ray.init()'s own choice."""
        return None if self.ray is None else init_address(self.ray)


class ConditionLimits(Section):
    max_wer_increase: Annotated[float, Field(ge=0)] | None = None
    min_qoi: Annotated[float, Field(ge=0, le=1)] | None = None
    max_loop_increase: Annotated[int, Field(ge=0)] | None = None


class ConditionGate(Section):
    """The gate on each degraded condition. Its clips are few (conditions.eval_clips), so one
    word moves WER by ~0.7 points and QoI by a clip: the limits are wider than the clean set's."""

    max_wer_increase: Annotated[float, Field(ge=0)] = Field(
        5.0, description="absolute WER points against the baseline file, per condition"
    )
    min_qoi: Annotated[float, Field(ge=0, le=1)] = Field(
        0.5, description="share of the condition's clips no worse than fp32's on them"
    )
    max_loop_increase: Annotated[int, Field(ge=0)] = Field(
        1, description="clips looping (whisper_npu.wer.is_loop) beyond fp32's in the same run"
    )
    per_condition: dict[str, ConditionLimits] = Field(
        {}, description="overrides by condition name, e.g. {babble-0db: {max_wer_increase: 8}}"
    )


class GateParams(Section):
    """Regression thresholds for `whisper-npu check`, per variant against a baseline run."""

    max_wer_increase: Annotated[float, Field(ge=0)] = Field(1.0, description="absolute WER points")
    max_latency_increase: Annotated[float, Field(ge=0)] = Field(
        0.25, description="relative, on the e2e time ratio against fp32 measured in the same run"
    )
    max_latency_increase_other_cpu: Annotated[float, Field(ge=0)] = Field(
        1.0,
        description="the same, when the baseline was measured on another CPU (other kernels)",
    )
    min_qoi: Annotated[float, Field(ge=0, le=1)] = Field(
        0.8,
        description="share of clips whose WER is no worse than fp32's in the same run",
    )
    conditions: ConditionGate = Field(
        ConditionGate(),
        description="the same per degraded condition (conditions.eval), on its few clips",
    )
    max_language_loop_increase: Annotated[int, Field(ge=0)] = Field(
        0,
        description="a multilingual model's looping clips per language beyond fp32's (same run)",
    )


class ReleaseParams(Section):
    eval_clips: Annotated[int, Field(ge=0, le=200)] = Field(
        12,
        description="eval clips (up to 30 s each) a release ships under eval/ for "
        "`whisper-npu device-report` on the laptop",
    )


class Params(Section):
    model: ModelParams = ModelParams()
    data: DataParams
    export: ExportParams = ExportParams()
    calibrate: CalibrateParams = CalibrateParams()
    quantize: QuantizeParams = QuantizeParams()
    compile: CompileParams = CompileParams()
    bench: BenchParams = BenchParams()
    release: ReleaseParams = ReleaseParams()
    gate: GateParams = GateParams()
    conditions: ConditionsParams = ConditionsParams()

    @model_validator(mode="after")
    def _gated_conditions_known(self) -> Params:
        """A per-condition gate names a condition the bench scores."""
        scored = self.conditions.resolve("eval")
        for name in self.gate.conditions.per_condition:
            if name not in scored:
                known = ", ".join(scored) or "none"
                raise ValueError(
                    f"gate.conditions.per_condition: unknown condition {name!r} "
                    f"(conditions.eval scores: {known})"
                )
        return self


# PyYAML ships no type hints (and types-PyYAML is no dependency), so its classes are Any.
class _PlainLoader(yaml.SafeLoader):  # type: ignore[misc]
    """SafeLoader without anchors and aliases: params need neither, and an alias bomb
    (billion laughs) expands into gigabytes from a few lines."""

    def compose_node(self, parent: yaml.Node | None, index: object) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise yaml.composer.ComposerError(
                None,
                None,
                f"anchors and aliases are not allowed (line {event.start_mark.line + 1})",
                event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[object, object]:
        """A key given twice is refused: YAML keeps the last silently, so an edit to the first
        copy would do nothing."""
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool):
                continue  # an unhashable key: SafeLoader's own error names it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (line {key_node.start_mark.line + 1})",
                    key_node.start_mark,
                )
            seen.add(key)
        mapping: dict[object, object] = super().construct_mapping(node, deep)
        return mapping


def load_params(path: Path = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml; any problem becomes a one-line UserError."""
    path = Path(path)
    text = read_text(path, MAX_PARAMS_BYTES, "params file")
    try:
        raw = yaml.load(text, Loader=_PlainLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except (ValueError, RecursionError) as exc:  # a 5000-digit integer, nesting too deep
        raise UserError(f"{path}: not valid params YAML ({str(exc)[:120]})") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path}: expected a mapping of sections at the top level")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        raise UserError(describe(exc, path)) from None
