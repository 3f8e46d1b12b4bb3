"""One interface over the quantizers an NPU flow can use: AMD Quark, vai_q_onnx, ONNX Runtime.

Each backend turns an fp32 graph into a QDQ graph for one variant, keeping the named nodes in
float. Heavy imports stay inside the backend that needs them, behind a one-line error.
"""

from __future__ import annotations

import contextlib
import copy
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from pipeline.calibration import FeedReader
from pipeline.errors import UserError

QUARK_PRESETS = {
    "xint8": "XINT8_QCONFIG",
    "a8w8": "A8W8_QCONFIG",
    "a16w8": "A16W8_QCONFIG",
    "bf16": "BF16_QCONFIG",
}


class QuantBackend(Protocol):
    name: str

    def custom_ops_for(self, variant: str) -> str | None:
        """A custom-op library the quantized graph needs at run time, if any."""

    def quantize(
        self,
        fp32: Path,
        out: Path,
        reader: FeedReader,
        variant: str,
        exclude: list[str],
        op_types: list[str],
    ) -> None: ...


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
        return "quark" if variant == "bf16" else None  # BFloat16 Q/DQ are Quark custom ops on CPU

    def config(self, variant: str, exclude: list[str], op_types: list[str], tmp_dir: str) -> Any:
        import quark.onnx as quark
        from quark.onnx import QConfig, QLayerConfig

        preset = copy.deepcopy(
            getattr(quark, QUARK_PRESETS[variant])
        )  # presets are shared singletons
        # Presets keep their options one level down, as {"extra_options": {...}}; Quark unwraps one
        # level only, so they are flattened here or they would be silently dropped.
        options = dict(preset.extra_options.get("extra_options") or {})
        options.update({k: v for k, v in preset.extra_options.items() if k != "extra_options"})
        options.update(
            {
                "OpTypesToQuantize": op_types,
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
        if variant == "a16w8":
            options["AlignConcat"] = False  # Quark 0.13 crashes in align_concat on this graph
        layer = preset.global_config
        return QConfig(
            global_config=QLayerConfig(
                input_tensors=layer.input_tensors or layer.activation, weight=layer.weight
            ),
            exclude=list(exclude),
            algo_config=preset.algo_config,
            extra_options=options,
        )

    def quantize(
        self,
        fp32: Path,
        out: Path,
        reader: FeedReader,
        variant: str,
        exclude: list[str],
        op_types: list[str],
    ) -> None:
        from quark.onnx import ModelQuantizer

        fp32, out = Path(fp32).resolve(), Path(out).resolve()
        with tempfile.TemporaryDirectory(prefix="quark-") as tmp_dir, contextlib.chdir(tmp_dir):
            # chdir: Quark writes quantized_info.csv into the working directory.
            quantizer = ModelQuantizer(self.config(variant, exclude, op_types, tmp_dir))
            quantizer.quantize_model(str(fp32), str(out), reader)


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

    def quantize(
        self,
        fp32: Path,
        out: Path,
        reader: FeedReader,
        variant: str,
        exclude: list[str],
        op_types: list[str],
    ) -> None:
        import vai_q_onnx

        if variant == "bf16":
            raise UserError("quantize.backend vai_q_onnx: no bf16; use quark")
        quant = vai_q_onnx.QuantType
        vai_q_onnx.quantize_static(
            str(fp32),
            str(out),
            reader,
            quant_format=vai_q_onnx.QuantFormat.QDQ,
            calibrate_method=vai_q_onnx.PowerOfTwoMethod.MinMSE
            if variant == "xint8"
            else vai_q_onnx.CalibrationMethod.MinMax,
            activation_type=quant.QInt16 if variant == "a16w8" else quant.QUInt8,
            weight_type=quant.QInt8,
            op_types_to_quantize=op_types,
            nodes_to_exclude=exclude,
            enable_ipu_transformer=True,
            extra_options={"ActivationSymmetric": variant == "xint8", "WeightSymmetric": True},
        )


class OrtBackend:
    """ONNX Runtime's quantize_static: always available, float scales only (no XINT8, no bf16)."""

    name = "ort"

    def custom_ops_for(self, variant: str) -> str | None:
        return None

    def quantize(
        self,
        fp32: Path,
        out: Path,
        reader: FeedReader,
        variant: str,
        exclude: list[str],
        op_types: list[str],
    ) -> None:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        if variant in ("xint8", "bf16"):
            raise UserError(
                f"quantize.backend ort: no {variant} (power-of-two / bfloat16 need quark)"
            )
        quantize_static(
            str(fp32),
            str(out),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=op_types,
            activation_type=QuantType.QUInt16 if variant == "a16w8" else QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            extra_options={"WeightSymmetric": True},
        )


BACKENDS: dict[str, Callable[[], QuantBackend]] = {
    "quark": QuarkBackend,
    "vai_q_onnx": VaiQOnnxBackend,
    "ort": OrtBackend,
}


def get_backend(name: str) -> QuantBackend:
    """The backend instance; fails in one line before any work when it is not installed."""
    return BACKENDS[name]()
