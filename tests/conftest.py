"""Shared fixtures: a tiny random Whisper for unit tests; the real tiny.en and the default
speech sets for integration."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import WhisperConfig, WhisperForConditionalGeneration

from pipeline.config import BuiltinSet, DataParams, ModelParams, Params, load_params
from pipeline.export import export_bundle
from pipeline.model_source import fetch_model
from pipeline.reference import run_reference
from pipeline.speech_sets import build_speech_sets

REPO = Path(__file__).resolve().parent.parent


def tiny_whisper(
    num_mel_bins: int = 80, vocab_size: int = 51864, seed: int = 0
) -> WhisperForConditionalGeneration:
    """A random Whisper small enough for unit tests, with the real vocabulary layout."""
    import torch

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
    return load_params(REPO / "params.yaml")


@pytest.fixture(scope="session")
def tiny_en_dir(tmp_path_factory) -> Path:
    """The embedded tiny.en, converted from CTranslate2 exactly as the `model` stage does."""
    out = tmp_path_factory.mktemp("model") / "model"
    fetch_model(ModelParams(source="builtin:tiny.en"), out)
    return out


# The tests calibrate on at most 49 clips; the default's 112 held-back clips are for the
# quantize budget of a real `dvc repro`, and would only add minutes of synthesis here.
TEST_CALIBRATION_CLIPS = 48


def default_data_params(params: Params) -> DataParams:
    """The default built-in sets with paths made absolute and the calibration set capped."""
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


@pytest.fixture(scope="session")
def default_data_dir(tmp_path_factory, default_params) -> Path:
    """The default built-in calibration and eval sets, as the `data` stage writes them."""
    out = tmp_path_factory.mktemp("data") / "data"
    build_speech_sets(default_data_params(default_params), out)
    return out


@pytest.fixture(scope="session")
def reference_dir(tmp_path_factory, tiny_en_dir, default_data_dir) -> Path:
    """transformers' greedy transcripts of the default eval set, as `reference` writes them."""
    root = tmp_path_factory.mktemp("reference")
    run_reference(tiny_en_dir, default_data_dir, root / "reference", root / "metrics.json")
    return root


@pytest.fixture(scope="session")
def fp32_bundle(
    tmp_path_factory, default_params, tiny_en_dir, default_data_dir, reference_dir
) -> Path:
    """The tiny.en fp32 bundle, exported and parity-gated as the `export` stage does."""
    out = tmp_path_factory.mktemp("bundles") / "fp32"
    export_bundle(
        default_params.export, tiny_en_dir, default_data_dir, reference_dir / "reference", out
    )
    return out
