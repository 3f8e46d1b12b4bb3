"""What a bundle, a compiled directory and a release are on disk, opened and checked once.

A bundle is the exported (or quantized) graphs with their tokenizer, mel filters and
`bundle.json`; a compiled directory is the compile stage's record pointing at its bundle; a
release holds a bundle's files with the compiled ones under `npu/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import Field, JsonValue, field_validator, model_validator

from whisper_npu.compiled import CompileRecord
from whisper_npu.decoding import DecodingSpec
from whisper_npu.errors import UserError
from whisper_npu.fsutil import sha256_file
from whisper_npu.layout import (
    BUNDLE_FILE,
    COMPILE_FILE,
    MANIFEST_FILE,
    MEL_FILTERS_FILE,
    NPU_DIR,
    TOKENIZER_FILE,
    graph_file,
)
from whisper_npu.record import MemberName, Record, Sha256
from whisper_npu.variants import Backend, Variant
from whisper_npu.whisper_io import GRAPHS, WhisperDims

Count = Annotated[int, Field(ge=0)]
TensorSpec = tuple[list[int], str]  # shape, dtype


class GraphSummary(Record):
    """What bundle.json records of a graph (graph_check's summary)."""

    opset: int
    op_counts: dict[str, Count]


class Tolerance(Record):
    cross_kv_atol: float
    logits_atol: float


class Parity(Record):
    """The fp32 export's parity gate against PyTorch."""

    cross_kv_max_abs_error: float
    logits_max_abs_error: float
    tensor_clips: Count
    tolerance: Tolerance
    transcript_clips: Count
    transcripts_differing: list[JsonValue]


class ConditionAttempt(Record):
    """One rung on one held-back condition. Not `complete`: scoring stopped once this condition
    went over its allowance, and the WER counts the errors so far over all its words (a lower
    bound, since errors and loops only accumulate)."""

    wer: float
    wer_delta: float  # points against the fp32 bundle on the same clips
    loops: Count
    complete: bool


class Attempt(Record):
    """One rung of the quantize ladder as measured. The top-level figures are the clean
    held-back clips'; a rung rejected on a condition scored before them counts 0 errors there
    (`complete` false). `rejected_by` names what decided against the rung."""

    excluded_per_graph: Count
    holdout_wer: float
    wer_delta: float
    complete: bool
    passed: bool
    # Each condition scored ("clean" included; degraded ones are scored first, and a rung's
    # scoring stops at the first over its allowance); absent in older bundles.
    conditions: dict[str, ConditionAttempt] | None = None
    rejected_by: str | None = None  # the first condition over its allowance (WER or loops)


class HeldBackTexts(Record):
    """One held-back set's clips (a degraded condition's, the multilingual set's held-back
    half), the fp32 bundle's transcripts of them, and the digests of the set they were read
    from (so a regenerated set is not judged against transcripts of another one)."""

    clips: list[str]
    fp32_texts: list[str]
    arrow_sha256: dict[str, Sha256]

    @model_validator(mode="after")
    def _one_text_per_clip(self) -> HeldBackTexts:
        if len(self.clips) != len(self.fp32_texts):
            raise ValueError(f"{len(self.clips)} clips but {len(self.fp32_texts)} fp32 texts")
        return self


class CalibrationManifest(Record):
    """The calibrate stage's manifest.json: which clips calibrate, which are held back (with
    the fp32 bundle's transcripts of them) and the fp32 bundle they were recorded through. Here
    because every quantized bundle.json embeds it."""

    bundle_sha256: Sha256  # the fp32 bundle.json the inputs were recorded through
    calibration_clips: list[str]
    holdout_clips: list[str]
    holdout_fp32_texts: list[str]
    decoder_steps: Count
    bytes: dict[str, Count]
    # Degraded copies of held-back clips (the conditions stage's holdback sets), by name;
    # absent in a manifest made without them.
    conditions: dict[str, HeldBackTexts] | None = None
    # A multilingual model's held-back half of the multilingual set, each clip transcribed in
    # its own language; absent for an English-only model.
    languages: HeldBackTexts | None = None

    @classmethod
    def load(cls, root: Path) -> CalibrationManifest:
        return cls.read(Path(root) / MANIFEST_FILE)

    def save(self, root: Path) -> None:
        self.write(Path(root) / MANIFEST_FILE)


class ConditionScore(Record):
    """The kept rung on one held-back condition against the fp32 bundle on the same clips."""

    clips: Count
    words: Count
    fp32_wer: float
    wer: float
    budget: float  # WER points the rung may lose here (pipeline.quant.quantize.Holdout)
    margin: float  # WER points left in the budget (budget - delta); negative: over it
    loops: Count  # clips that looped (whisper_npu.wer.is_loop)
    fp32_loops: Count


class Quantization(Record):
    """How a quantized bundle was made and what it kept float to stay within its budget. The
    `holdout_*` figures are the clean held-back clips' (what the card, bench and release read);
    `conditions` has every held-back condition's, clean included."""

    backend: Backend
    backend_version: str | None
    grid: str
    # Activations quantized at run time from each tensor's own range (cpu-int8): the
    # calibration clips set no ranges, only the held-back ones are used.
    dynamic: bool = False
    decoder_grid: str
    decoder_variant: Variant
    op_types: list[str]
    # Graphs quantized from a rewrite of the fp32 graph (pipeline/quant/npu_form.py), and which.
    form: dict[str, str] = Field(default_factory=dict)
    max_wer_delta: float
    budget_met: bool
    fp32_holdout_wer: float
    holdout_wer: float
    holdout_words: Count
    holdout_wer_se: float
    holdout_clips: list[str]
    excluded: dict[str, list[str]]
    sensitivity_db: dict[str, dict[str, float]]
    attempts: list[Attempt]
    calibration: CalibrationManifest
    # The kept rung on each held-back condition, "clean" included; absent in older bundles.
    conditions: dict[str, ConditionScore] | None = None


def _count(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


class BundleRecord(Record):
    """bundle.json. `parity` is the fp32 export's alone, `quantization` and `custom_ops` a
    quantized bundle's alone; `files` is set once every other file is written."""

    format: int
    variant: Variant
    model: dict[str, JsonValue]  # the model stage's source.json, as it was
    opset: int
    dims: WhisperDims
    io: dict[str, dict[str, dict[str, TensorSpec]]]
    decoding: DecodingSpec
    graphs: dict[str, GraphSummary]
    versions: dict[str, str]
    custom_ops: str | None = None
    parity: Parity | None = None
    quantization: Quantization | None = None
    files: dict[MemberName, Sha256] | None = None

    # Before pydantic's own checks, which would take "80" or true for an integer.
    @field_validator("dims", mode="before")
    @classmethod
    def _positive_dims(cls, dims: object) -> object:
        if isinstance(dims, dict) and not all(
            _count(value, 0 if name == "alignment_heads" else 1) for name, value in dims.items()
        ):
            raise ValueError("dims must be positive integers (alignment_heads: 0 or more)")
        return dims

    @field_validator("decoding", mode="before")
    @classmethod
    def _token_ids(cls, decoding: object) -> object:
        if isinstance(decoding, dict):
            values = [v for k, v in decoding.items() if v is not None and k != "language"]
            values = [list(v.values()) if isinstance(v, dict) else v for v in values]
            numbers = [n for v in values for n in (v if isinstance(v, list) else [v])]
            if not all(_count(value, 0) for value in numbers):
                raise ValueError("token ids and lengths must be non-negative integers")
        return decoding

    @model_validator(mode="after")
    def _ids_in_vocabulary(self) -> BundleRecord:
        """Every token id the decoder is given or has masked must be a logit it returns: an
        id past the vocabulary would fail mid-decode, as an index error."""
        spec, vocab = self.decoding, self.dims.vocab_size
        ids = [*spec.prefix, spec.eot, spec.no_timestamps, *spec.suppress_tokens]
        ids += [*spec.begin_suppress_tokens, *spec.languages.values(), *spec.tasks.values()]
        if outside := sorted({token for token in ids if token >= vocab}):
            shown = ", ".join(map(str, outside[:5]))
            raise ValueError(f"decoding token ids outside the {vocab}-token vocabulary: {shown}")
        return self

    @property
    def budget_met(self) -> bool:
        """Whether quantizing kept the held-back WER budget (fp32: nothing to meet)."""
        return self.quantization is None or self.quantization.budget_met

    @classmethod
    def load(cls, root: Path) -> BundleRecord:
        return cls.read(Path(root) / BUNDLE_FILE)

    def save(self, root: Path) -> None:
        self.write(Path(root) / BUNDLE_FILE)


@dataclass(frozen=True)
class Bundle:
    root: Path
    record: BundleRecord

    @classmethod
    def load(cls, root: Path) -> Bundle:
        root = Path(root)
        if not (root / BUNDLE_FILE).is_file():
            raise UserError(f"{root}: not a whisper-npu bundle (no {BUNDLE_FILE})")
        record = BundleRecord.load(root)
        for name in (*map(graph_file, GRAPHS), TOKENIZER_FILE, MEL_FILTERS_FILE):
            if not (root / name).is_file():
                raise UserError(f"{root}: bundle is missing {name}")
        return cls(root, record)

    def sha256(self) -> str:
        """The fingerprint a compile record and a calibration manifest name this bundle by."""
        return sha256_file(self.root / BUNDLE_FILE)


@dataclass(frozen=True)
class Artifact:
    """A bundle and, when the path is a compiled or release directory, its compiled files."""

    bundle: Bundle
    compiled: Path | None = None
    record: CompileRecord | None = None

    @classmethod
    def open(cls, path: Path) -> Artifact:
        """The one way a compiled directory or release is opened: its record must point at a
        bundle of its variant whose bundle.json is the very one it was compiled from."""
        path = Path(path)
        if (path / NPU_DIR / COMPILE_FILE).is_file():
            path = path / NPU_DIR
        if not (path / COMPILE_FILE).is_file():
            return cls(Bundle.load(path))
        record = CompileRecord.load(path)
        source = path / COMPILE_FILE
        try:
            bundle_root = (path / record.report.bundle).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            raise UserError(f"{source}: bundle {record.report.bundle!r}: {exc}") from None
        bundle = Bundle.load(bundle_root)
        if record.report.variant != bundle.record.variant:
            raise UserError(
                f"{source}: compiled variant {record.report.variant}, "
                f"{bundle.root} is {bundle.record.variant}"
            )
        if bundle.sha256() != record.report.bundle_sha256:
            raise UserError(
                f"{path}: compiled from another {BUNDLE_FILE} than {bundle.root}'s; "
                "compile that bundle again"
            )
        return cls(bundle, path, record)

    @property
    def cpu_only(self) -> bool:
        """A CPU-only variant's compiled record (`cpu-int8`): for the CPU by design."""
        return self.record is not None and self.record.report.cpu_only is not None

    def context_models(self) -> dict[str, Path]:
        """EPContext models the compile stage dumped, which load without recompiling."""
        assert self.compiled is not None
        found = {name: self.compiled / f"{name}_ctx.onnx" for name in GRAPHS}
        return {name: file for name, file in found.items() if file.is_file()}
