"""The calibrate stage on the real tiny.en bundle: small output, exact replay of decoder feeds."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from pipeline.config import CalibrateParams
from pipeline.quant.calibration import (
    CLEAN,
    LANGUAGES,
    CalibrationSet,
    FeedReader,
    HeldBackSets,
    _sampled_positions,
    run_calibration,
)
from pipeline.sources.condition_sets import load_condition_sets
from pipeline.sources.speech_sets import clip_samples, load_saved_set
from tests.test_bench_languages import _language_set, multilingual_bundle  # noqa: F401 (fixture)
from tests.test_quantization_units import save_condition_sets
from whisper_npu.bundle import Bundle
from whisper_npu.errors import UserError
from whisper_npu.transcriber import Transcriber


def test_sampled_positions_cover_the_path():
    assert _sampled_positions(14, 6) == [0, 3, 5, 8, 10, 13]
    assert _sampled_positions(2, 6) == [0, 1]


def noisy_copies(data_dir: Path, clips: range, snr_db: float = 10.0) -> list[dict[str, Any]]:
    """Calibration-set clips under seeded white noise at `snr_db`: a holdback condition."""
    rng = np.random.default_rng(0)
    rows = []
    for row in load_saved_set(data_dir, "calibration").select(clips):
        clean = clip_samples(row)
        noise = rng.standard_normal(len(clean)).astype(np.float32)
        noise *= np.sqrt(np.mean(clean**2) / np.mean(noise**2) / 10 ** (snr_db / 10))
        rows.append({"id": row["id"], "text": row["text"], "samples": clean + noise})
    return rows


@pytest.fixture(scope="module")
def calibration_dir(fp32_bundle, default_data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration")
    # Both held-back clips (4 and 5), under noise too.
    noisy = {"white-10db": noisy_copies(default_data_dir, range(4, 6))}
    conditions = load_condition_sets(save_condition_sets(root / "holdback", noisy))
    run_calibration(
        CalibrateParams(clips=4, holdout=2, decoder_steps_per_clip=3),
        fp32_bundle,
        default_data_dir,
        root / "calibration",
        HeldBackSets(conditions),
    )
    return root / "calibration"


@pytest.mark.integration
def test_calibration_output_is_small_and_disjoint(calibration_dir):
    manifest = json.loads((calibration_dir / "manifest.json").read_text())
    assert len(manifest["calibration_clips"]) == 4 and len(manifest["holdout_clips"]) == 2
    assert not set(manifest["calibration_clips"]) & set(manifest["holdout_clips"])
    # The fp32 bundle's transcripts of the held-back clips: every quantize budget starts there.
    calibration = CalibrationSet(calibration_dir)
    assert calibration.holdout_ids == manifest["holdout_clips"]
    assert len(calibration.holdout_fp32_texts) == 2 and all(calibration.holdout_fp32_texts)
    # And of their noisy copies, by condition, with the digests of the set transcribed.
    noisy = manifest["conditions"]["white-10db"]
    assert noisy["clips"] == manifest["holdout_clips"] and len(noisy["fp32_texts"]) == 2
    assert all(noisy["fp32_texts"]) and list(noisy["arrow_sha256"]) == ["data-00000-of-00001.arrow"]
    assert manifest["bytes"]["encoder_inputs.npy"] == 4 * 80 * 3000 * 4 + 128
    assert manifest["bytes"]["decoder_steps.json"] < 10_000


@pytest.mark.integration
def test_replayed_decoder_feeds_reproduce_the_greedy_path(calibration_dir, fp32_bundle):
    calibration = CalibrationSet(calibration_dir)
    bundle = Bundle.load(fp32_bundle)
    session = ort.InferenceSession(
        str(fp32_bundle / "decoder.onnx"), providers=["CPUExecutionProvider"]
    )
    feeds = list(calibration.decoder_feeds(bundle))
    assert len(feeds) == sum(len(path["positions"]) for path in calibration.paths)
    steps = [
        (p, path["tokens"][p + 1] if p + 1 < len(path["tokens"]) else bundle.record.decoding.eot)
        for path in calibration.paths
        for p in path["positions"]
    ]
    assert all(feed["embedded_token"].dtype == np.float32 for feed in feeds)
    last_prompt_position = len(bundle.record.decoding.prefix)  # prefix + <|notimestamps|>
    for feed, (position, next_token) in zip(feeds, steps, strict=True):
        logits = session.run(["logits"], feed)[0][0]
        if position < last_prompt_position:
            continue  # the next token is the prompt's, not a choice
        logits[np.array(bundle.record.decoding.suppress_tokens)] = -np.inf
        if position == last_prompt_position:
            logits[np.array(bundle.record.decoding.begin_suppress_tokens)] = -np.inf
        assert int(np.argmax(logits)) == next_token


@pytest.mark.integration
def test_reader_rewinds_and_bad_sizes_fail(
    calibration_dir, fp32_bundle, default_data_dir, tmp_path
):
    calibration = CalibrationSet(calibration_dir)
    reader = FeedReader(lambda: calibration.encoder_feeds())
    first = [reader.get_next() for _ in range(5)]
    assert first[-1] is None and first[0]["input_features"].shape == (1, 80, 3000)
    reader.rewind()
    np.testing.assert_array_equal(reader.get_next()["input_features"], first[0]["input_features"])
    with pytest.raises(UserError, match=r"calibrate\.clips \+ calibrate\.holdout = 160"):
        run_calibration(
            CalibrateParams(clips=150, holdout=10), fp32_bundle, default_data_dir, tmp_path / "c"
        )
    # A degraded clip that calibrates (clip 0) would judge the quantizer on what it fitted.
    calibrating = {"white-10db": noisy_copies(default_data_dir, range(1))}
    conditions = load_condition_sets(save_condition_sets(tmp_path / "holdback", calibrating))
    with pytest.raises(UserError, match=r"degrades calibration-\d+, which is not a held-back"):
        run_calibration(
            CalibrateParams(clips=4, holdout=2),
            fp32_bundle,
            default_data_dir,
            tmp_path / "c",
            HeldBackSets(conditions),
        )
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize(
    ("mels", "steps", "expected"),
    [
        (b"", "[]", "encoder_inputs.npy: not a numpy array file"),
        (None, "[", "decoder_steps.json: not valid JSON"),
        (None, "{}", "malformed calibration set"),
    ],
)
def test_damaged_calibration_inputs_are_one_line(tmp_path, mels, steps, expected):
    """A 0-byte array (a disk that filled up), steps that are not JSON or not a list."""
    from whisper_npu.bundle import CalibrationManifest

    CalibrationManifest(
        bundle_sha256="0" * 64,
        calibration_clips=["a"],
        holdout_clips=[],
        holdout_fp32_texts=[],
        decoder_steps=1,
        bytes={},
    ).save(tmp_path)
    if mels is None:
        np.save(tmp_path / "encoder_inputs.npy", np.zeros((1, 80, 3000), np.float32))
    else:
        (tmp_path / "encoder_inputs.npy").write_bytes(mels)
    (tmp_path / "decoder_steps.json").write_text(steps)
    with pytest.raises(UserError) as refused:
        CalibrationSet(tmp_path)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.integration
def test_a_multilingual_model_holds_back_half_the_language_set_in_each_clip_s_language(
    multilingual_bundle,  # noqa: F811 (the fixture imported above)
    default_data_dir,
    tmp_path,
):
    """The calibrate stage transcribes the held-back half, each clip in its language; the
    quantize stage scores it as one more held-back set, and refuses a run that drops it."""
    from pipeline.quant.quantize import Holdout, QuantizeInputs
    from pipeline.sources.multilingual import load_language_half

    languages = _language_set(tmp_path / "languages")
    half = load_language_half(languages, "holdback")
    assert half is not None
    out = tmp_path / "calibration"
    manifest = run_calibration(
        CalibrateParams(clips=2, holdout=2, decoder_steps_per_clip=2),
        multilingual_bundle,
        default_data_dir,
        out,
        HeldBackSets(languages=half),
    )
    assert manifest.languages is not None
    assert manifest.languages.clips == list(half.speech["id"])
    transcriber = Transcriber.from_bundle(multilingual_bundle, threads=1)
    assert manifest.languages.fp32_texts == [
        transcriber.transcribe(clip_samples(row), language=row["language"]).text
        for row in half.speech
    ]

    inputs = QuantizeInputs(multilingual_bundle, out, tmp_path, default_data_dir)
    with pytest.raises(UserError, match="calibrated with the multilingual held-back half"):
        Holdout.load(inputs, CalibrationSet(out), 1.0)
    holdout = Holdout.load(replace(inputs, languages=languages), CalibrationSet(out), 1.0)
    assert [held.name for held in holdout.conditions] == [LANGUAGES, CLEAN]
    assert holdout.languages == [*half.speech["language"], None, None]
