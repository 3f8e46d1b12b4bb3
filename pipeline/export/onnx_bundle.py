"""The `export` stage: a transformers Whisper → a deployable fp32 bundle of static ONNX graphs.

The bundle (encoder.onnx, decoder.onnx, the decoder's host-side embedding tables,
tokenizer/processor files, mel_filters.npy, bundle.json) runs with numpy + onnxruntime alone.
Before it is swapped into place it must pass the graph checks (opset 17, no control flow, every
dimension static, every op in AMD's NPU table, no integer or bool tensor) and the parity gate
against PyTorch.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import GenerationConfig, WhisperForConditionalGeneration, WhisperProcessor

from pipeline.config import ExportParams
from pipeline.export.parity import run_parity
from pipeline.export.torch_modules import (
    DecoderStep,
    EncoderWithCrossKV,
    alignment_heads,
    embedding_tables,
)
from pipeline.npu.graph_check import check_bundle_graphs
from pipeline.provenance import package_versions
from whisper_npu.bundle import Bundle, BundleRecord
from whisper_npu.decoding import DecodingSpec
from whisper_npu.errors import GateFailure, UserError
from whisper_npu.fsutil import atomic_dir, sha256_tree
from whisper_npu.layout import (
    BUNDLE_FILE,
    MEL_FILTERS_FILE,
    POSITION_EMBEDDING_FILE,
    SOURCE_FILE,
    TOKEN_EMBEDDING_FILE,
    TOKENIZER_FILE,
    graph_file,
)
from whisper_npu.variants import Variant
from whisper_npu.whisper_io import (
    CROSS_K,
    CROSS_V,
    DECODER_INPUTS,
    ENCODER_INPUT,
    MASK_OFF,
    N_FRAMES,
    OPSET,
    WhisperDims,
)

PROCESSOR_FILES = (
    TOKENIZER_FILE,
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "normalizer.json",
    "preprocessor_config.json",
    "generation_config.json",
    "config.json",
)


def load_for_export(model_dir: Path) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    """Eager attention traces into plain MatMul/Softmax, which is what the NPU table covers."""
    if not (Path(model_dir) / "model.safetensors").is_file():
        raise UserError(f"{model_dir}: no model here (run `whisper-npu model` first)")
    model = WhisperForConditionalGeneration.from_pretrained(
        model_dir, use_safetensors=True, attn_implementation="eager"
    )
    return model.eval(), WhisperProcessor.from_pretrained(model_dir)


def decoding_spec(generation: GenerationConfig, max_length: int, language: str) -> DecodingSpec:
    """The checkpoint's tokens and rules; a multilingual model's language and task tokens go in
    as tables (the runtime builds the prompt), `language` as the default when none is asked."""
    languages: dict[str, int] = {}
    if getattr(generation, "is_multilingual", False):
        languages = {token.strip("<|>"): int(i) for token, i in generation.lang_to_id.items()}
        if language not in languages:
            raise UserError(f"export.language: {language!r} is not a language this model knows")
    return DecodingSpec(
        prefix=(int(generation.decoder_start_token_id),),
        eot=int(generation.eos_token_id),
        no_timestamps=int(generation.no_timestamps_token_id),
        suppress_tokens=tuple(generation.suppress_tokens or ()),
        begin_suppress_tokens=tuple(generation.begin_suppress_tokens or ()),
        max_initial_timestamp_index=getattr(generation, "max_initial_timestamp_index", None),
        max_length=min(max_length, generation.max_length or max_length),
        languages=languages,
        tasks={task: int(i) for task, i in generation.task_to_id.items()} if languages else {},
        language=language if languages else None,
    )


def _example_decoder_inputs(dims: WhisperDims) -> tuple[torch.Tensor, ...]:
    return (
        torch.zeros(dims.embedded_shape()),
        torch.zeros(dims.cache_shape()),
        torch.zeros(dims.cache_shape()),
        torch.full((1, dims.max_decode_len), MASK_OFF),
        torch.zeros(dims.cross_shape()),
        torch.zeros(dims.cross_shape()),
    )


@torch.inference_mode()
def export_graphs(model: WhisperForConditionalGeneration, dims: WhisperDims, out_dir: Path) -> None:
    """Trace both graphs at opset 17 with every dimension fixed (no dynamic axes at all), and
    write the decoder's embedding tables beside them: its input is a sum of their rows."""
    common: dict[str, Any] = {"opset_version": OPSET, "dynamo": False, "do_constant_folding": True}
    with warnings.catch_warnings():
        # The encoder checks its input length in Python; with static shapes that check is
        # exactly what should be frozen, so the tracer's warning about it is noise. torch.jit
        # re-exports TracerWarning (its documented name) without listing it in __all__.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]
        torch.onnx.export(
            EncoderWithCrossKV(model, dims).eval(),
            (torch.zeros(1, dims.n_mels, N_FRAMES),),
            str(out_dir / graph_file("encoder")),
            input_names=[ENCODER_INPUT],
            output_names=[CROSS_K, CROSS_V],
            **common,
        )
        heads = alignment_heads(model) if dims.alignment_heads else ()
        torch.onnx.export(
            DecoderStep(model, dims, heads).eval(),
            _example_decoder_inputs(dims),
            str(out_dir / graph_file("decoder")),
            input_names=list(DECODER_INPUTS),
            output_names=list(dims.decoder_outputs()),
            **common,
        )
    files = (TOKEN_EMBEDDING_FILE, POSITION_EMBEDDING_FILE)
    for name, table in zip(files, embedding_tables(model, dims), strict=True):
        np.save(out_dir / name, table.numpy().astype(np.float32), allow_pickle=False)


def _check_graphs(out_dir: Path) -> dict[str, Any]:
    reports = check_bundle_graphs(out_dir)
    for name, report in reports.items():
        if report.opset != OPSET or not report.clean:
            raise GateFailure(
                f"{name}.onnx is not NPU-ready: opset {report.opset}; {report.problems()}"
            )
    return {name: report.summary() for name, report in reports.items()}


def _write_runtime_files(model_dir: Path, processor: WhisperProcessor, out_dir: Path) -> None:
    for name in PROCESSOR_FILES:
        if (Path(model_dir) / name).is_file():
            shutil.copy2(Path(model_dir) / name, out_dir / name)
    np.save(out_dir / MEL_FILTERS_FILE, processor.feature_extractor.mel_filters.astype(np.float64))


def _provenance(model_dir: Path) -> dict[str, Any]:
    """What the `model` stage recorded about the weights (source, hashes), when present."""
    record = Path(model_dir) / SOURCE_FILE
    return (
        json.loads(record.read_text(encoding="utf-8"))
        if record.is_file()
        else {"dir": Path(model_dir).as_posix()}
    )


def export_bundle(
    params: ExportParams, model_dir: Path, data_dir: Path, reference_dir: Path, out_dir: Path
) -> dict[str, Any]:
    """Export, check and parity-gate the fp32 bundle; it replaces `out_dir` only if all pass."""
    model, processor = load_for_export(model_dir)
    try:
        heads = len(alignment_heads(model))
        dims = WhisperDims.from_config(model.config, params.max_decode_len, heads)
    except ValueError as exc:
        raise UserError(f"export.max_decode_len: {exc}") from None
    spec = decoding_spec(model.generation_config, params.max_decode_len, params.language)
    with atomic_dir(Path(out_dir)) as scratch:
        export_graphs(model, dims, scratch)
        graphs = _check_graphs(scratch)
        _write_runtime_files(model_dir, processor, scratch)
        record = BundleRecord.model_validate(
            {
                "format": 1,
                "variant": Variant.FP32,
                "model": _provenance(model_dir),
                "opset": OPSET,
                "dims": dims,
                "io": {"encoder": dims.encoder_io(), "decoder": dims.decoder_io()},
                "decoding": spec,
                "graphs": graphs,
                "versions": package_versions(("torch", "transformers", "onnx", "onnxruntime")),
            }
        )
        record.save(scratch)
        parity = run_parity(model, Bundle.load(scratch), data_dir, reference_dir, params.parity)
        files = {
            name: digest for name, digest in sha256_tree(scratch).items() if name != BUNDLE_FILE
        }
        record.but(parity=parity, files=files).save(scratch)
    return {"parity": parity, "files": len(files), "graphs": graphs}
