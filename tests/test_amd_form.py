"""The forecast's calibration: AMD's documented Whisper form (optimum opset-17 export, shapes
fixed as AMD's params.json fixes them), forecast with the rules our bundles are forecast by,
against what AMD's EP reported for it (amd/RyzenAI-SW Demos/ASR/Whisper/README.md)."""

from __future__ import annotations

import pytest
import torch
from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

from pipeline.npu.amd_form import AMD_WHISPER_BASE, export_amd_form, forecast_amd_form
from pipeline.npu.flows import Reason
from pipeline.npu.forecast import LoadedGraph
from tests.conftest import up_to_date_output
from whisper_npu.compiled import AmdFormForecast
from whisper_npu.layout import AMD_FORM_FILE

pytestmark = pytest.mark.integration
# The integer/bool index path of optimum's decoder: input_ids' Reshape and Gather, and the
# IsNaN → Where guard transformers' attention puts after each self-attention Softmax.
INDEX_PATH = {"Gather", "Reshape", "IsNaN", "Where"}


@pytest.fixture(scope="module")
def tiny_en_form(tiny_en_dir, tmp_path_factory) -> AmdFormForecast:
    if built := up_to_date_output("amd_form", "artifacts/amd_form"):
        return AmdFormForecast.read(built / AMD_FORM_FILE)
    scratch = tmp_path_factory.mktemp("amd_form")
    return forecast_amd_form(tiny_en_dir, "builtin:tiny.en", scratch, tokens_per_window=120)


def test_amd_form_of_tiny_en_has_amds_shape(tiny_en_form):
    """AMD: encoder 1 subgraph, all on VAIML; decoder split, its CPU nodes the index path."""
    forecast = tiny_en_form.forecast
    encoder, decoder = forecast.encoder, forecast.decoder
    assert (encoder.npu_subgraphs, encoder.cpu_islands, encoder.coverage) == (1, 0, 1.0)
    assert encoder.unverified == [] and decoder.unverified == []
    assert decoder.npu_subgraphs > 1
    assert {row.op_type for row in decoder.cpu_ops} <= INDEX_PATH
    assert {row.reason for row in decoder.cpu_ops} == {Reason.NOT_FLOAT.value}
    # No KV cache: every token re-runs 180 positions and re-projects the cross-attention K/V.
    assert forecast.window.macs > 20 * (encoder.work.macs + 120 * 4 * 384 * 384 * 180)


def test_amd_form_of_whisper_base_has_amds_operator_counts(tiny_en_dir, tmp_path):
    """Whisper-base's shape (random weights: counts do not depend on them) in AMD's form, after
    ONNX Runtime's basic optimizations, has exactly the operators AMD's EP counted: encoder 225,
    decoder 341 + 24."""
    config = WhisperConfig(
        vocab_size=51864,
        d_model=512,
        encoder_layers=6,
        decoder_layers=6,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        decoder_start_token_id=50257,
        eos_token_id=50256,
        pad_token_id=50256,
        bos_token_id=50256,
    )
    torch.manual_seed(0)
    model_dir = tmp_path / "base"
    WhisperForConditionalGeneration(config).save_pretrained(model_dir)
    WhisperProcessor.from_pretrained(tiny_en_dir).save_pretrained(model_dir)  # base.en's vocab
    graphs = export_amd_form(model_dir, tmp_path / "form")
    encoder = LoadedGraph.load(graphs["encoder"]).view
    decoder = LoadedGraph.load(graphs["decoder"]).view
    published = AMD_WHISPER_BASE
    assert len(encoder.nodes) == published.encoder_npu_ops + published.encoder_cpu_ops
    assert len(decoder.nodes) == published.decoder_npu_ops + published.decoder_cpu_ops
