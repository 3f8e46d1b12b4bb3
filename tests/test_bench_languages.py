"""The bench's multilingual pass: language-ID accuracy and per-language WER (CER for languages
written without spaces) per engine, on a tiny random multilingual Whisper; English-only bundles
skip it; the data_languages stage builds nothing for an English-only model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import pytest
from tokenizers import Tokenizer, models

from pipeline.bench.languages import (
    CLIPS_FILE,
    LanguageClip,
    language_pass,
    score_language_clip,
    summarise_languages,
)
from pipeline.bench.metrics import BenchMetrics
from pipeline.bench.records import EngineSpec
from pipeline.bench.selection import bench_specs
from pipeline.config import BenchParams
from pipeline.export.onnx_bundle import export_graphs
from pipeline.sources.multilingual import (
    SET_NAME,
    build_language_set,
    language_half,
    multilingual_features,
)
from tests.conftest import bundle_record, run_cli, tiny_whisper, write_tiny_bundle
from tests.test_language import MULTILINGUAL
from whisper_npu.errors import UserError
from whisper_npu.features import log_mel
from whisper_npu.figures import BenchRow
from whisper_npu.fsutil import sha256_tree
from whisper_npu.language import detect_language
from whisper_npu.layout import MANIFEST_FILE
from whisper_npu.transcriber import Transcriber
from whisper_npu.whisper_io import SAMPLE_RATE, WhisperDims

# (language, reference) per clip: two space-separated languages and one without spaces.
CLIPS = [  # two per language: one for each half
    ("de", "Der Zug nach Berlin fährt heute später ab."),
    ("de", "Bitte schließen Sie das Fenster."),
    ("en", "The colour of the train is grey."),
    ("ja", "今日は雨が降っています。"),
    ("en", "Please close the window."),
    ("ja", "駅はどこですか。"),
]


def test_a_language_without_spaces_is_scored_on_characters():
    row = score_language_clip(
        "fp32", "c", "ja", ("ja", 0.9), ("今日は、雨です。", "今日は 雨でした")
    )
    assert row.metric == "cer"
    assert row.reference_norm == "今日は雨です" and row.hypothesis_norm == "今日は雨でした"
    assert (row.words, row.substitutions, row.insertions, row.deletions) == (
        6,
        1,
        1,
        0,
    )  # す→し, +た


def test_other_languages_use_openais_basic_normaliser_and_english_its_own():
    german = score_language_clip(
        "fp32", "c", "de", ("de", 0.9), ("Der Zug fährt!", "der zug, fährt")
    )
    assert german.metric == "wer" and german.reference_norm == "der zug fährt"
    assert german.edits.errors == 0 and german.words == 3
    # The English normaliser's spelling map makes colour/color the same word.
    english = score_language_clip("fp32", "c", "en", ("en", 1.0), ("The colour.", "the color"))
    assert english.edits.errors == 0


def _row(engine: str, clip: str, language: str, detected: str, errors: int) -> LanguageClip:
    metric = "cer" if language == "ja" else "wer"
    return LanguageClip(
        engine=engine,
        clip=clip,
        language=language,
        detected=detected,
        probability=0.5,
        metric=metric,
        reference="r",
        hypothesis="h",
        reference_norm="r",
        hypothesis_norm="h",
        substitutions=errors,
        deletions=0,
        insertions=0,
        words=10,
    )


def test_summary_per_language_pools_wer_and_cer_apart_and_compares_with_faster_whisper():
    rows = [
        _row("fp32", "a", "de", "de", 1),
        _row("fp32", "b", "de", "nl", 3),
        _row("fp32", "c", "ja", "ja", 2),
        _row("faster_whisper", "a", "de", "de", 0),
        _row("faster_whisper", "b", "de", "de", 1),
        _row("faster_whisper", "c", "ja", "zh", 5),
    ]
    report = summarise_languages(rows)
    ours = report["fp32"]
    assert list(ours) == ["all", "de", "ja"]
    assert ours["de"].lid_accuracy == 0.5 and ours["de"].wer == 0.2 and ours["de"].cer is None
    assert ours["ja"].cer == 0.2 and ours["ja"].wer is None
    assert (ours["all"].clips, ours["all"].wer, ours["all"].cer) == (3, 0.2, 0.2)
    assert ours["all"].lid_accuracy == round(2 / 3, 4)
    assert ours["all"].same_language_as_faster_whisper == round(1 / 3, 4)
    peer = report["faster_whisper"]
    assert peer["all"].same_language_as_faster_whisper is None
    assert peer["de"].lid_accuracy == 1.0 and peer["ja"].lid_accuracy == 0.0


def _language_set(folder: Path) -> Path:
    """A data_languages output of noise clips (no espeak-ng needed), one per CLIPS entry."""
    noise = np.random.default_rng(0)
    columns = {
        "id": [f"{SET_NAME}-{code}-{i:03d}" for i, (code, _) in enumerate(CLIPS)],
        "audio": [
            {
                "array": 0.1 * noise.standard_normal(SAMPLE_RATE).astype(np.float32),
                "sampling_rate": SAMPLE_RATE,
            }
            for _ in CLIPS
        ],
        "text": [text for _, text in CLIPS],
        "duration_s": [1.0 for _ in CLIPS],
        "language": [code for code, _ in CLIPS],
    }
    speech = datasets.Dataset.from_dict(columns, features=multilingual_features())
    speech.save_to_disk(str(folder / SET_NAME))
    files = sha256_tree(folder / SET_NAME)
    arrow = {name: digest for name, digest in files.items() if name.endswith(".arrow")}
    (folder / MANIFEST_FILE).write_text(json.dumps({"multilingual": True, "arrow_sha256": arrow}))
    return folder


@pytest.fixture(scope="module")
def multilingual_bundle(tmp_path_factory) -> Path:
    """A tiny random multilingual Whisper with a word for every id and the special tokens
    suppressed, so every transcript is (random) words; mel filters that are not zero, so its
    encoder sees each clip."""
    model = tiny_whisper(vocab_size=51865, seed=3)
    model.config._attn_implementation = "eager"
    dims = WhisperDims.from_config(model.config, max_decode_len=16)
    root = tmp_path_factory.mktemp("multilingual") / "bundle"
    root.mkdir()
    export_graphs(model, dims, root)
    spec = replace(MULTILINGUAL, suppress_tokens=tuple(range(50257, 50364)))
    (root / "bundle.json").write_text(json.dumps(bundle_record("fp32", dims, spec)))
    vocab = {f"w{i}": i for i in range(dims.vocab_size)}
    Tokenizer(models.WordLevel(vocab, unk_token="w0")).save(str(root / "tokenizer.json"))
    np.save(root / "mel_filters.npy", np.full((201, 80), 0.01))
    return root


def test_the_pass_records_every_language_of_a_multilingual_bundle(multilingual_bundle, tmp_path):
    languages = _language_set(tmp_path / "languages")
    spec = EngineSpec("fp32", "ours", multilingual_bundle, 1, cpu_only=True)
    found = language_pass([spec], languages, multilingual_bundle)
    assert found.report is not None and list(found.report) == ["fp32"]
    rows = found.report["fp32"]
    assert list(rows) == ["all", "de", "en", "ja"]
    assert [rows[code].clips for code in rows] == [3, 1, 1, 1]  # the eval half
    assert [row.clip for row in found.rows] == [
        f"{SET_NAME}-de-001",
        f"{SET_NAME}-en-004",
        f"{SET_NAME}-ja-005",
    ]
    assert rows["all"].loops == sum(row.loop for row in found.rows)
    assert rows["de"].wer is not None and rows["de"].cer is None
    assert rows["ja"].cer is not None and rows["ja"].wer is None  # characters, not words
    assert rows["all"].wer is not None and rows["all"].cer is not None
    assert rows["all"].same_language_as_faster_whisper is None  # no peer in this run

    # Each clip's language is the one the runtime detects on its first window.
    transcriber = Transcriber.from_bundle(multilingual_bundle, threads=1)
    speech = language_half(datasets.load_from_disk(str(languages / SET_NAME)), "eval")
    for row, clip in zip(found.rows, speech, strict=True):
        samples = clip["audio"].get_all_samples().data.numpy().reshape(-1)
        features = log_mel(samples, transcriber.mel_filters, pad_to_window=True)[None]
        expected = detect_language(transcriber.runner, transcriber.bundle.record.decoding, features)
        assert (row.clip, row.detected) == (clip["id"], expected.code)
        # ... and the transcript is made with the clip's language given, not the detected one.
        given = transcriber.transcribe(samples, language=clip["language"]).text
        assert row.hypothesis == given

    metrics = BenchMetrics(
        variants={"fp32": BenchRow(wer=0.1, speedup_vs_fp32=1.0)}, languages=found.report
    )
    metrics.write(tmp_path / "bench.json")
    written = json.loads((tmp_path / "bench.json").read_text())
    assert set(written) == {"fp32", "languages"}
    assert "cer" not in written["languages"]["fp32"]["de"]  # absent, not null
    assert BenchMetrics.read(tmp_path / "bench.json") == metrics  # not read as a variant
    (tmp_path / "plots").mkdir()
    found.write(tmp_path / "plots")
    lines = (tmp_path / "plots" / CLIPS_FILE).read_text().splitlines()
    assert [LanguageClip.model_validate(json.loads(line)) for line in lines] == found.rows


def test_english_only_bundles_skip_the_pass(tmp_path):
    bundle = write_tiny_bundle(tmp_path / "bundle")
    spec = EngineSpec("fp32", "ours", bundle, 1, cpu_only=True)
    found = language_pass([spec], tmp_path / "never-read", bundle)
    assert (found.rows, found.report) == ([], None)
    assert "English-only" in found.note
    found.write(tmp_path / "plots")
    assert not (tmp_path / "plots").exists()
    metrics = BenchMetrics(variants={"fp32": BenchRow(wer=0.1, speedup_vs_fp32=1.0)})
    assert "languages" not in metrics.to_json()


def test_a_set_built_for_an_english_only_model_is_refused_for_a_multilingual_bundle(
    multilingual_bundle, tmp_path
):
    (tmp_path / "languages").mkdir()
    (tmp_path / "languages" / MANIFEST_FILE).write_text(json.dumps({"multilingual": False}))
    spec = EngineSpec("fp32", "ours", multilingual_bundle, 1, cpu_only=True)
    with pytest.raises(UserError, match="built for an English-only model"):
        language_pass([spec], tmp_path / "languages", multilingual_bundle)


def _model_dir(folder: Path, multilingual: bool) -> Path:
    folder.mkdir()
    (folder / "generation_config.json").write_text(json.dumps({"is_multilingual": multilingual}))
    return folder


SENTENCES = Path(__file__).resolve().parent.parent / "calibration" / "multilingual_eval.tsv"


def test_data_languages_builds_nothing_for_an_english_only_model(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "")  # no espeak-ng: an English-only model never needs it
    model = _model_dir(tmp_path / "model", multilingual=False)
    manifest = build_language_set(SENTENCES, model, tmp_path / "out")
    assert manifest["multilingual"] is False
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [MANIFEST_FILE]


def test_data_languages_without_espeak_is_one_line_and_exit_2(tmp_path):
    import sys

    model = _model_dir(tmp_path / "model", multilingual=True)
    out = tmp_path / "out"
    done = run_cli(
        "data_languages",
        "--sentences",
        str(SENTENCES),
        "--model",
        str(model),
        "--out",
        str(out),
        env={"PATH": str(Path(sys.executable).parent)},  # python, and no espeak-ng
    )
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "espeak-ng is not installed" in done.stderr
    assert not out.exists()


def test_peers_decode_in_the_language_of_a_multilingual_bundle(multilingual_bundle, tmp_path):
    """Left to detect the language, a multilingual peer would add an encoder call and a
    decoder step to every timed clip that ours do not make."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.safetensors").touch()  # the peers are only listed, not opened
    compiled = tmp_path / "compiled"
    (compiled / "bf16").mkdir(parents=True)
    specs, _ = bench_specs(["bf16"], compiled, multilingual_bundle, model_dir, BenchParams())
    peers = [spec for spec in specs if spec.kind != "ours"]
    assert peers and {spec.language for spec in peers} == {"en"}

    without, skipped = bench_specs(
        ["bf16"], compiled, multilingual_bundle, model_dir, BenchParams(peers=False)
    )
    assert [spec.name for spec in without] == ["fp32", "bf16"] and skipped == {}


def test_the_halves_share_no_clip_and_both_cover_every_language(tmp_path):
    speech = datasets.load_from_disk(str(_language_set(tmp_path / "languages") / SET_NAME))
    held, scored = language_half(speech, "holdback"), language_half(speech, "eval")
    assert set(held["id"]).isdisjoint(scored["id"])
    assert sorted([*held["id"], *scored["id"]]) == sorted(speech["id"])
    assert set(held["language"]) == set(scored["language"]) == {"de", "en", "ja"}
    assert language_half(speech, "eval")["id"] == scored["id"]  # the same split every time
    lonely = speech.select([0, 1, 2])  # one English clip
    with pytest.raises(UserError, match=r"one clip of en: each language needs two"):
        language_half(lonely, "eval")
