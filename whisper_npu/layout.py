"""Every file name one stage writes and another reads: the artifacts' on-disk contract, in one
place. (The directories themselves are written once, in dvc.yaml.)"""

from __future__ import annotations

import re

# A bundle (export, quantize): the graphs, what the runtime needs beside them, its record.
BUNDLE_FILE = "bundle.json"
TOKENIZER_FILE = "tokenizer.json"
MEL_FILTERS_FILE = "mel_filters.npy"
# The decoder's embedding tables, looked up on the host (whisper_npu.whisper_io).
TOKEN_EMBEDDING_FILE = "token_embedding.npy"
POSITION_EMBEDDING_FILE = "position_embedding.npy"
QUANTIZATION_REPORT_FILE = "QUANTIZATION.md"  # a quantized bundle's human-readable report

# A compiled directory (compile): its record pointing at the bundle, and the EP's set-up.
COMPILE_FILE = "compile_report.json"
PROVIDER_OPTIONS_FILE = "provider_options.json"
VITISAI_REPORT_FILE = "vitisai_ep_report.json"  # the EP's own partition report
CACHE_SUBDIR = "cache"  # the EP's compile cache

# A release: the bundle's files, the compiled ones under NPU_DIR, and the card.
NPU_DIR = "npu"
CARD_FILE = "card.json"
MODEL_CARD_FILE = "MODEL_CARD.md"
# A release's small eval set for `device-report`: an audiofolder (audio files + metadata.csv).
EVAL_DIR = "eval"
EVAL_METADATA_FILE = "metadata.csv"

# The other stages' outputs.
SOURCE_FILE = "source.json"  # model: where the weights came from
TRANSCRIPTS_FILE = "transcripts.json"  # reference: the float model's eval transcripts
MELS_FILE = "encoder_inputs.npy"  # calibrate: encoder inputs
STEPS_FILE = "decoder_steps.json"  # calibrate: decoder steps to replay
AMD_FORM_FILE = "amd_form.json"  # amd_form: AMD's demo form of the model, forecast
MANIFEST_FILE = "manifest.json"  # data and calibrate: what the directory holds
RUN_FILE = "run.json"  # bench: how the run was made (beside the plot data)


def graph_file(graph: str) -> str:
    """A bundle's ONNX file for one of its graphs (`encoder`, `decoder`)."""
    return f"{graph}.onnx"


def sensitivity_file(grid: str) -> str:
    """The sensitivity stage's per-layer scores on one rounding grid."""
    return f"{grid}.json"


def vaip_config_file(graph: str) -> str:
    """One graph's VAIML compiler config, which its provider options point at."""
    return f"vaip_config_{graph}.json"


def model_slug(source: str) -> str:
    """`builtin:tiny.en` → `tiny-en`, `openai/whisper-base.en` → `base-en`: the model part of
    a release's registry name `whisper-<slug>-<variant>` (params.yaml's `model.name`), which
    DVC restricts to letters, digits and dashes."""
    tail = re.split(r"[:/\\]", source.rstrip("/\\"))[-1].lower()
    tail = re.sub(r"^(faster-)?(distil-)?whisper-", "", tail)
    return re.sub(r"[^a-z0-9]+", "-", tail).strip("-") or "model"
