"""The real embedded tiny.en on the default built-in speech sets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.export.reference import greedy_tokens, load_model, log_mel
from pipeline.sources.speech_sets import (
    build_speech_sets,
    clip_samples,
    load_saved_set,
)
from tests.conftest import default_data_params
from whisper_npu.wer import normalise
from whisper_npu.whisper_io import CHUNK_SECONDS

pytestmark = pytest.mark.integration
EOT = 50256


def test_default_sets_meet_the_brief(default_data_dir):
    calibration = load_saved_set(default_data_dir, "calibration")
    evaluation = load_saved_set(default_data_dir, "eval")
    assert len(calibration) >= 32
    assert len(evaluation) >= 100
    assert sum(d > CHUNK_SECONDS for d in evaluation["duration_s"]) >= 2
    assert not {normalise(t) for t in calibration["text"]} & {
        normalise(t) for t in evaluation["text"]
    }
    first = evaluation[0]["audio"].get_all_samples()
    assert first.sample_rate == 16_000 and first.data.shape[0] == 1


def test_default_sets_rebuild_byte_identically(default_params, tmp_path):
    """The built-in sets' code path (Piper, resampling, Arrow) twice on the default voices: the
    same bytes. A few clips of each set make the point; `dvc repro` builds the whole set."""
    data = default_data_params(default_params)
    small = data.model_copy(
        update={
            "calibration": data.calibration.model_copy(update={"limit": 4}),
            "eval": data.eval.model_copy(update={"limit": 4, "longform": None}),
        }
    )
    first = build_speech_sets(small, tmp_path / "first")
    again = build_speech_sets(small, tmp_path / "again")
    assert {k: v["arrow_sha256"] for k, v in again["sets"].items()} == {
        k: v["arrow_sha256"] for k, v in first["sets"].items()
    }


def test_converted_model_matches_faster_whisper_token_for_token(
    tiny_en_dir, default_data_dir, reference_outputs
):
    """Same log-mel (first 30 s window) into both; greedy, no timestamps, same suppression.
    transformers' tokens of the short clips are the reference stage's (the same greedy call)."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    from faster_whisper import WhisperModel

    from pipeline.sources.builtin import builtin_dir

    model, processor = load_model(tiny_en_dir)
    peer = WhisperModel(str(builtin_dir("builtin:tiny.en")), device="cpu", compute_type="float32")
    reference = {
        t["id"]: t["tokens"]
        for t in json.loads((reference_outputs.directory / "transcripts.json").read_text())
        if t["duration_s"] <= CHUNK_SECONDS
    }
    mismatches = []
    evaluation = load_saved_set(default_data_dir, "eval")
    for row in evaluation:
        mel = log_mel(processor, clip_samples(row))
        tokens = reference.get(row["id"]) or greedy_tokens(model, mel)
        ours = [t for t in tokens if t != EOT]
        result = peer.model.generate(
            ctranslate2.StorageView.from_array(np.ascontiguousarray(mel.numpy())),
            [[50257, 50362]],
            beam_size=1,
            max_length=448,
            suppress_blank=True,
            suppress_tokens=[-1],
        )
        theirs = [t for t in result[0].sequences_ids[0] if t != EOT]
        if ours != theirs:
            mismatches.append(row["id"])
    assert len(evaluation) >= 100
    assert mismatches == []


def test_reference_wer_and_exact_transcripts(reference_outputs):
    metrics = json.loads(reference_outputs.metrics.read_text())
    transcripts = {
        t["id"]: t["text"]
        for t in json.loads((reference_outputs.directory / "transcripts.json").read_text())
    }
    assert (
        transcripts["eval-0001"]
        == "If the sky clears up tonight, we might see a few shooting stars."
    )
    assert (
        transcripts["eval-0004"] == "Do you think it will be warm enough to eat outside tomorrow?"
    )
    assert transcripts["eval-long-0"].startswith("If your laptop battery dies faster every month")
    # Measured 2.6% (long-form 0.9%) on this machine; synthetic speech is easy for Whisper.
    assert metrics["wer"] < 0.05
    assert metrics["long_clips"] >= 2 and metrics["wer_long"] < 0.05
