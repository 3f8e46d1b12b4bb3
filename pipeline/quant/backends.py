"""One interface over the quantizers an NPU flow can use: AMD Quark, vai_q_onnx, ONNX Runtime.

Each backend turns an fp32 graph into a QDQ graph for one variant, keeping the named nodes in
float. Heavy imports stay inside the backend that needs them, behind a one-line error.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from pipeline.quant.calibration import FeedReader
from whisper_npu.errors import UserError
from whisper_npu.variants import QUANTIZED, Variant


@dataclass(frozen=True)
class QuantJob:
    """One graph to quantize: what every backend is given.

    `ranges_cache` is a file the backend may fill with the calibrated activation ranges on its
    first run and read back on later runs of the same graph and grid: the ranges come from the
    float model and do not depend on which layers are kept float, so the exclusion ladder
    calibrates once instead of once per attempt.
    """

    fp32: Path
    out: Path
    reader: FeedReader
    variant: Variant
    exclude: list[str]
    op_types: list[str]
    ranges_cache: Path | None = None


class QuantBackend(Protocol):
    name: str

    def custom_ops_for(self, variant: str) -> str | None:
        """A custom-op library the quantized graph needs at run time, if any."""

    def quantize(self, job: QuantJob) -> None: ...


class _FirstFeedOnly:
    """The first feed of a reader, once: Quark refuses an empty reader even when it has
    restored its ranges and runs none."""

    def __init__(self, reader: FeedReader) -> None:
        self.reader, self.given = reader, False

    def get_next(self) -> dict[str, Any] | None:
        if self.given:
            return None
        self.given = True
        return self.reader.get_next()

    def rewind(self) -> None:
        self.given = False
        self.reader.rewind()


class QuarkBackend:
    name = "quark"

    def __init__(self) -> None:
        try:
            import quark.onnx  # noqa: F401
        except ImportError:
            raise UserError(
                "quantize.backend quark: amd-quark is not installed (pip install amd-quark)"
            ) from None

    def custom_ops_for(self, variant: str) -> str | None:
        return None  # bf16 is written as Cast pairs (below), which ONNX Runtime runs itself

    def config(self, job: QuantJob, tmp_dir: str) -> Any:
        import quark.onnx as quark
        from quark.onnx import QConfig, QLayerConfig

        quant = QUANTIZED[job.variant]
        if quant.quark_preset is None:
            raise UserError(f"quantize.backend quark: no Quark config for {job.variant}")
        preset = copy.deepcopy(getattr(quark, quant.quark_preset))  # presets are shared singletons
        # Presets keep their options one level down, as {"extra_options": {...}}; Quark unwraps one
        # level only, so they are flattened here or they would be silently dropped.
        options = dict(preset.extra_options.get("extra_options") or {})
        options.update({k: v for k, v in preset.extra_options.items() if k != "extra_options"})
        options.update(
            {
                "OpTypesToQuantize": job.op_types,
                "TmpDir": tmp_dir,
                # The presets force-quantize every tensor, so Softmax, Add and LayerNorm outputs
                # all land on one 8-bit grid and no exclusion can save 8-bit Whisper (held-back
                # WER +89 points with 16 layers per graph float). Off, only `op_types` inputs are.
                "ForceQuantizeNoInputCheck": False,
                # Both rewrite MatMul+Add into renamed Reshape-Gemm-Reshape chains, after which
                # exclusions by node name silently match nothing; SimplifyModel (onnxslim) also
                # leaves dangling inputs in the decoder graph.
                "OptimizeModel": False,
                "SimplifyModel": False,
            }
        )
        if job.ranges_cache is not None and not quant.bfloat16:
            # Quark's own range cache: saved by the first run, read (calibration skipped) after.
            # Not for bf16: Quark rounds it without calibrating, then asks for ranges never saved.
            options["SaveAndRestore"] = str(job.ranges_cache)
        if quant.bfloat16:
            # AMD's form for VAIML: BF16 Q/DQ become Cast(float→bfloat16)→Cast(→float) pairs,
            # which ONNX Runtime's CPU provider runs natively instead of through Quark's
            # custom-op library (5x slower than fp32 on CPU, and a torch import).
            options["BF16QDQToCast"] = True
        if job.variant == Variant.A16W8:
            options["AlignConcat"] = False  # Quark 0.13 crashes in align_concat on this graph
        layer = preset.global_config
        return QConfig(
            global_config=QLayerConfig(
                input_tensors=layer.input_tensors or layer.activation, weight=layer.weight
            ),
            exclude=list(job.exclude),
            algo_config=preset.algo_config,
            extra_options=options,
        )

    def quantize(self, job: QuantJob) -> None:
        from quark.onnx import ModelQuantizer

        job = replace(
            job,
            fp32=job.fp32.resolve(),
            out=job.out.resolve(),
            ranges_cache=job.ranges_cache.resolve() if job.ranges_cache else None,
        )
        # With the ranges restored Quark runs no feed, but it still copies every feed the reader
        # gives into memory first (96 decoder feeds, each replayed through the fp32 graphs).
        restored = (
            job.ranges_cache is not None
            and not QUANTIZED[job.variant].bfloat16
            and job.ranges_cache.is_file()
        )
        reader = _FirstFeedOnly(job.reader) if restored else job.reader
        with tempfile.TemporaryDirectory(prefix="quark-") as tmp_dir, contextlib.chdir(tmp_dir):
            # chdir: Quark writes quantized_info.csv into the working directory.
            quantizer = ModelQuantizer(self.config(job, tmp_dir))
            quantizer.quantize_model(str(job.fp32), str(job.out), reader)


class VaiQOnnxBackend:
    """AMD's earlier Vitis AI quantizer, same options mapped; used when it is installed."""

    name = "vai_q_onnx"

    def __init__(self) -> None:
        try:
            import vai_q_onnx  # noqa: F401
        except ImportError:
            raise UserError(
                "quantize.backend vai_q_onnx: vai_q_onnx is not installed (Ryzen AI SDK)"
            ) from None

    def custom_ops_for(self, variant: str) -> str | None:
        return None

    def quantize(self, job: QuantJob) -> None:
        import vai_q_onnx

        spec = QUANTIZED[job.variant]
        if spec.bfloat16:
            raise UserError(f"quantize.backend vai_q_onnx: no {job.variant}; use quark")
        quant = vai_q_onnx.QuantType
        vai_q_onnx.quantize_static(
            str(job.fp32),
            str(job.out),
            job.reader,
            quant_format=vai_q_onnx.QuantFormat.QDQ,
            calibrate_method=vai_q_onnx.PowerOfTwoMethod.MinMSE
            if spec.power_of_two
            else vai_q_onnx.CalibrationMethod.MinMax,
            activation_type=quant.QInt16
            if spec.grid.precision.activation_bits == 16
            else quant.QUInt8,
            weight_type=quant.QInt8,
            op_types_to_quantize=job.op_types,
            nodes_to_exclude=job.exclude,
            enable_ipu_transformer=True,
            extra_options={"ActivationSymmetric": spec.power_of_two, "WeightSymmetric": True},
        )


class OrtBackend:
    """ONNX Runtime's quantize_static: always available, float scales only (no XINT8, no bf16)."""

    name = "ort"

    def custom_ops_for(self, variant: str) -> str | None:
        return None

    def quantize(self, job: QuantJob) -> None:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        spec = QUANTIZED[job.variant]
        if spec.power_of_two or spec.bfloat16:
            raise UserError(
                f"quantize.backend ort: no {job.variant} (power-of-two / bfloat16 need quark)"
            )
        if spec.dynamic:
            self.quantize_dynamic(job)
            return
        quantize_static(
            str(job.fp32),
            str(job.out),
            job.reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=job.op_types,
            activation_type=QuantType.QUInt16
            if spec.grid.precision.activation_bits == 16
            else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=job.exclude,
            extra_options={"WeightSymmetric": True},
        )

    @staticmethod
    def quantize_dynamic(job: QuantJob) -> None:
        """Weights to int8 per output channel, activations to uint8 from each tensor's own
        range at run time (MatMulInteger / DynamicQuantizeLinear, ONNX Runtime's CPU kernels):
        no calibration, so `job.reader` is never read."""
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(
            job.fp32,
            job.out,
            op_types_to_quantize=job.op_types,
            per_channel=True,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=job.exclude,
        )


BACKENDS: dict[str, Callable[[], QuantBackend]] = {
    "quark": QuarkBackend,
    "vai_q_onnx": VaiQOnnxBackend,
    "ort": OrtBackend,
}


def get_backend(name: str) -> QuantBackend:
    """The backend instance; fails in one line before any work when it is not installed."""
    return BACKENDS[name]()
