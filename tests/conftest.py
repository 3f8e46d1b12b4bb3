"""Shared fixtures: a tiny random Whisper for unit tests; the real tiny.en and the default
speech sets for integration.

The build stack (transformers, the pipeline) is imported inside the fixtures and helpers that
use it, so that the runtime's own tests (`-m runtime`) run where only the runtime is installed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from whisper_npu.decoding import DecodingSpec
from whisper_npu.whisper_io import WhisperDims

if TYPE_CHECKING:
    from transformers import WhisperForConditionalGeneration

    from pipeline.config import DataParams, Params

REPO = Path(__file__).resolve().parent.parent
# The tiny random Whisper's bundle shapes: 8 cache slots keep its graphs small.
TINY_SPEC = DecodingSpec((50257,), 50256, 50362, (), (), None, 8)
TINY_DIMS = WhisperDims(80, 1500, 64, 2, 4, 51864, 8, alignment_heads=4)  # layer 1's heads


# `whisper-npu` of this checkout (not whatever is installed), as a child process.
CLI = (sys.executable, "-m", "whisper_npu")


def _cli_env(env: dict[str, str] | None = None) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}


def run_cli(
    *args: str, cwd: Path = REPO, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The CLI run to its end: exit code, stdout and stderr as the user sees them. The timeout
    turns a hang (a FIFO opened, a lock never released) into a failure."""
    return subprocess.run(
        [*CLI, *args],
        cwd=cwd,
        env=_cli_env(env),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def start_cli(*args: str, text: bool = False) -> subprocess.Popen[Any]:
    """The CLI still running, its stdout and stderr piped: for signals and closed pipes."""
    return subprocess.Popen(
        [*CLI, *args],
        cwd=REPO,
        env=_cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=text,
    )


def tiny_whisper(
    num_mel_bins: int = 80, vocab_size: int = 51864, seed: int = 0
) -> WhisperForConditionalGeneration:
    """A random Whisper small enough for unit tests, with the real vocabulary layout."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=num_mel_bins,
        d_model=64,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50256,
        pad_token_id=50256,
    )
    return WhisperForConditionalGeneration(config).eval()


@pytest.fixture(scope="session")
def default_params():
    from pipeline.config import load_params

    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="session")
def tiny_en_dir(tmp_path_factory) -> Path:
    """The embedded tiny.en, converted from CTranslate2 exactly as the `model` stage does."""
    from pipeline.config import ModelParams
    from pipeline.sources.model import fetch_model

    out = tmp_path_factory.mktemp("model") / "model"
    fetch_model(ModelParams(source="builtin:tiny.en"), out)
    return out


# The tests calibrate on at most 49 clips; the default's 112 held-back clips are for the
# quantize budget of a real `dvc repro`, and would only add minutes of synthesis here.
TEST_CALIBRATION_CLIPS = 48


def default_data_params(params: Params) -> DataParams:
    """The default built-in sets with paths made absolute and the calibration set capped."""
    from pipeline.config import BuiltinSet

    data = params.data
    calibration, evaluation = data.calibration, data.eval
    assert isinstance(calibration, BuiltinSet) and isinstance(evaluation, BuiltinSet)
    return data.model_copy(
        update={
            "calibration": calibration.model_copy(
                update={"sentences": REPO / calibration.sentences, "limit": TEST_CALIBRATION_CLIPS}
            ),
            "eval": evaluation.model_copy(
                update={
                    "sentences": REPO / evaluation.sentences,
                    "longform": REPO / evaluation.longform if evaluation.longform else None,
                }
            ),
        }
    )


def up_to_date_output(stage: str, out: str) -> Path | None:
    """`out` as `dvc repro` left it, when DVC finds `stage` up to date (its code, params, inputs
    and outputs all match dvc.lock): CI runs the tests right after `dvc repro`, and rebuilding
    the same output here would repeat minutes of the same work. Read-only for the tests."""
    if not (REPO / out).is_dir():
        return None
    done = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json", stage],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    try:
        clean = done.returncode == 0 and json.loads(done.stdout) == {}
    except json.JSONDecodeError:
        clean = False
    return REPO / out if clean else None


@pytest.fixture(scope="session")
def default_data_dir(tmp_path_factory, default_params) -> Path:
    """The default built-in calibration and eval sets, as the `data` stage writes them."""
    from pipeline.sources.speech_sets import build_speech_sets

    if built := up_to_date_output("data", "artifacts/data"):
        return built
    out = tmp_path_factory.mktemp("data") / "data"
    build_speech_sets(default_data_params(default_params), out)
    return out


@dataclass(frozen=True)
class ReferenceOutputs:
    """What the `reference` stage writes: transcripts (a directory) and its WER metrics file."""

    directory: Path
    metrics: Path


@pytest.fixture(scope="session")
def reference_outputs(tmp_path_factory, tiny_en_dir, default_data_dir) -> ReferenceOutputs:
    """transformers' greedy transcripts of the default eval set, as `reference` writes them."""
    from pipeline.export.reference import run_reference

    if built := up_to_date_output("reference", "artifacts/reference"):
        return ReferenceOutputs(built, REPO / "artifacts" / "metrics" / "reference.json")
    root = tmp_path_factory.mktemp("reference")
    outputs = ReferenceOutputs(root / "reference", root / "metrics.json")
    run_reference(tiny_en_dir, default_data_dir, outputs.directory, outputs.metrics)
    return outputs


@pytest.fixture(scope="session")
def fp32_bundle(request, tmp_path_factory, default_params, tiny_en_dir, default_data_dir) -> Path:
    """The tiny.en fp32 bundle, exported and parity-gated as the `export` stage does."""
    from pipeline.export.onnx_bundle import export_bundle

    if built := up_to_date_output("export", "artifacts/bundles/fp32"):
        return built
    reference: ReferenceOutputs = request.getfixturevalue("reference_outputs")
    out = tmp_path_factory.mktemp("bundles") / "fp32"
    export_bundle(default_params.export, tiny_en_dir, default_data_dir, reference.directory, out)
    return out


def bundle_record(
    variant: str, dims: WhisperDims = TINY_DIMS, spec: DecodingSpec = TINY_SPEC, **extra: Any
) -> dict[str, Any]:
    """A bundle.json with every field a bundle record requires (placeholder provenance)."""
    return {
        "format": 1,
        "variant": variant,
        "model": {"source": "builtin:tiny.en"},
        "opset": 17,
        "dims": dims.to_json(),
        "io": {"encoder": dims.encoder_io(), "decoder": dims.decoder_io()},
        "decoding": spec.to_json(),
        "graphs": {name: {"opset": 17, "op_counts": {}} for name in ("encoder", "decoder")},
        "versions": {"onnx": "1.22.0"},
        **extra,
    }


def quantization_record(
    calibration: dict[str, Any], variant: str = "a8w8", **changes: Any
) -> dict[str, Any]:
    """A bundle.json `quantization` section (whisper_npu.bundle.Quantization) as bundles
    recorded it before held-back conditions were scored: quark, one rung the holdout rejected,
    `calibration` its calibration manifest; `changes` replace fields whole."""
    return {
        "backend": "quark",
        "backend_version": "0.13",
        "grid": variant,
        "decoder_grid": variant,
        "decoder_variant": variant,
        "op_types": ["MatMul"],
        "max_wer_delta": 10.0,
        "budget_met": True,
        "fp32_holdout_wer": 0.01,
        "holdout_wer": 0.015,
        "holdout_words": 1305,
        "holdout_wer_se": 0.0028,
        "holdout_clips": ["calibration-0002"],
        "excluded": {"encoder": ["/enc/MatMul"], "decoder": []},
        "sensitivity_db": {"encoder": {"/enc/MatMul": 31.5}, "decoder": {}},
        "attempts": [
            {
                "excluded_per_graph": 0,
                "holdout_wer": 0.05,
                "wer_delta": 4.0,
                "complete": False,
                "passed": False,
            }
        ],
        "calibration": calibration,
        **changes,
    }


def write_tiny_bundle(root: Path, variant: str = "a16w8") -> Path:
    """A tiny random Whisper exported into a bundle the runtime can open (a16w8 by name)."""
    import numpy as np
    from tokenizers import Tokenizer, models

    from pipeline.export.onnx_bundle import export_graphs

    model = tiny_whisper()
    model.config._attn_implementation = "eager"
    root.mkdir(parents=True)
    export_graphs(model, TINY_DIMS, root)
    (root / "bundle.json").write_text(json.dumps(bundle_record(variant)))
    Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]")).save(str(root / "tokenizer.json"))
    np.save(root / "mel_filters.npy", np.zeros((201, 80)))
    return root


def write_wordy_bundle(root: Path) -> Path:
    """The tiny bundle with a word for every id and its special tokens suppressed, so its
    (random) transcripts are not empty."""
    from tokenizers import Tokenizer, models

    write_tiny_bundle(root)
    spec = DecodingSpec((50257,), 50256, 50362, tuple(range(50257, 50363)), (), None, 8)
    (root / "bundle.json").write_text(json.dumps(bundle_record("a16w8", spec=spec)))
    vocab = {f"w{i}": i for i in range(TINY_DIMS.vocab_size)}
    Tokenizer(models.WordLevel(vocab, unk_token="w0")).save(str(root / "tokenizer.json"))
    return root


def write_noise_clip(path: Path) -> Path:
    """1 s of seeded white noise as 16-bit WAV: what the tiny bundles transcribe."""
    import numpy as np
    import soundfile as sf

    noise = np.random.default_rng(0).normal(0, 0.1, 16_000).astype(np.float32)
    sf.write(path, noise, 16_000, subtype="PCM_16")
    return path
