"""Per-clip results: edit counts, shards that merge into exactly the single-pass WER, QoI on
hand-made tables, the JSON Lines table, and (when Ray is installed) sharded evaluation on a
local 2-CPU Ray cluster giving the single-process transcripts."""

from __future__ import annotations

import importlib.util
import itertools
import json

import jiwer
import numpy as np
import pytest

from pipeline.bench.records import EvalClips
from pipeline.bench.results import (
    ClipResult,
    qoi,
    read_table,
    score_clip,
    table_wer,
    wer_figures,
    write_table,
)
from whisper_npu.errors import UserError
from whisper_npu.wer import normalise

REFERENCES = [
    "The cat sat on the mat.",
    "Hello world",
    "Mr. Smith is here",
    "",  # normalises to nothing: not scored
    "It costs twenty dollars",
    "The quick brown fox jumps over",
    "A long paragraph read aloud for well over thirty seconds",
]
HYPOTHESES = [
    "the cat sat on mat",
    "hello there world",
    "mister smith is here",
    "uh",
    "it costs $20",
    "a quick brown fox jumped over it",
    "a long paragraph red aloud for well over thirty seconds",
]
DURATIONS = [2.0, 1.0, 1.5, 0.5, 2.0, 3.0, 41.0]


def table(engine: str = "a16w8", hypotheses: list[str] = HYPOTHESES) -> list[ClipResult]:
    return [
        score_clip(engine, f"c{i}", seconds, (ref, hyp), [100.0])
        for i, (ref, hyp, seconds) in enumerate(zip(REFERENCES, hypotheses, DURATIONS, strict=True))
    ]


def test_a_clip_carries_jiwers_edit_counts_of_the_normalised_texts():
    row = table()[5]
    assert (row.reference_norm, row.hypothesis_norm) == (
        "the quick brown fox jumps over",
        "a quick brown fox jumped over it",
    )
    assert (row.substitutions, row.deletions, row.insertions, row.words) == (2, 0, 1, 6)
    assert row.edits.errors == 3 and row.edits.wer == 0.5
    assert table()[3].words == 0 and table()[3].edits.errors == 0  # an empty reference


@pytest.mark.parametrize("cuts", [[3], [1, 2, 5], [6], list(range(1, 7))])
def test_shards_merge_into_exactly_the_single_pass_wer(tmp_path, cuts):
    """Each shard written to its own table (as on its own machine), read back and merged: the
    same WER as one pass, to the last bit, and the same as jiwer over the whole corpus."""
    rows = table()
    bounds = [0, *cuts, len(rows)]
    merged: list[ClipResult] = []
    for k, (start, end) in enumerate(itertools.pairwise(bounds)):
        path = tmp_path / f"shard{k}.jsonl"
        write_table(path, rows[start:end])
        merged += read_table(path)["a16w8"]
    assert merged == rows
    assert table_wer(merged) == table_wer(rows)
    scored = [(normalise(r), normalise(h)) for r, h in zip(REFERENCES, HYPOTHESES, strict=True)]
    refs, hyps = zip(*((r, h) for r, h in scored if r), strict=True)
    assert table_wer(merged) == jiwer.wer(list(refs), list(hyps))


def test_wer_figures_split_out_the_long_form_clips():
    figures = wer_figures(table())
    long = table()[6]
    assert figures["wer_long"] == long.edits.errors / long.words == 1 / 10
    assert "wer_long" not in wer_figures(table()[:6])


def test_qoi_is_the_share_of_scored_clips_no_worse_than_the_baseline():
    """Six scored clips (the empty reference is not one). The variant is better on c0, equal on
    c1, c2, c4 and c6, worse on c5: QoI 5/6, though its corpus WER is lower."""
    baseline = table("fp32", ["the cat sat on", *HYPOTHESES[1:]])
    variant = table(
        "a16w8", [*HYPOTHESES[:5], "a quick brown fox jumped over it all", HYPOTHESES[6]]
    )
    assert qoi(variant, baseline) == 5 / 6
    assert qoi(baseline, baseline) == 1.0
    assert qoi(baseline, variant) == 5 / 6  # worse on c0, equal elsewhere but c5 (better)
    perfect = table("a16w8", REFERENCES)
    assert qoi(perfect, baseline) == 1.0
    # Against a perfect engine only the clips fp32 already gets right count: c2 and c4 (the
    # normaliser spells "Mr." and "$20" out).
    assert qoi(baseline, perfect) == 2 / 6
    with pytest.raises(ValueError, match="same scored clips"):
        qoi(variant[:5], baseline)


def test_a_bad_table_line_is_one_error_naming_the_line(tmp_path):
    path = tmp_path / "clips.jsonl"
    write_table(path, table("fp32"))
    lines = path.read_text().splitlines()
    row = json.loads(lines[2])
    row["insertions"] = -1
    path.write_text("\n".join([*lines[:2], json.dumps(row)]) + "\n")
    with pytest.raises(UserError) as error:
        read_table(path)
    assert str(error.value).startswith(f"{path}:3: insertions:")
    path.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(UserError, match=r":2: not valid JSON"):
        read_table(path)


def clips(count: int, seconds: float = 1.0) -> EvalClips:
    rng = np.random.default_rng(0)
    samples = [
        (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32) for _ in range(count)
    ]
    return EvalClips(samples, ["x"] * count, [seconds] * count, [f"c{i}" for i in range(count)])


needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="no ray")


@pytest.fixture
def local_ray():
    """A local Ray cluster of 2 CPUs for one test (started here, so `--ray` joins it)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_shards_are_fixed_runs_of_consecutive_clips():
    from pipeline.bench.sharded import make_shards

    assert make_shards(5, 2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert make_shards(4, 8) == [range(0, 4)] and make_shards(0, 8) == []


@needs_ray
def test_ray_actors_open_the_engine_and_return_clips_in_order(tmp_path, monkeypatch, local_ray):
    """Two actors on the tiny random bundle, 5 clips in shards of 2 (the last one short): every
    clip comes back once, in order, with the execution record of the engine the actors opened.
    (The random model says the same thing of every clip: identity is the next test's job.)"""
    from pipeline.bench import sharded
    from pipeline.bench.evaluate import EvaluateOptions, transcribe_here
    from tests.conftest import write_tiny_bundle
    from whisper_npu.execution import Device

    monkeypatch.setattr(sharded, "SHARD_CLIPS", 2)
    bundle = write_tiny_bundle(tmp_path / "bundle")
    here, variant, execution = transcribe_here(bundle, clips(5), Device.AUTO)
    there, on_ray_variant, on_ray, sharding = sharded.transcribe_on_ray(
        bundle, clips(5), EvaluateOptions("", 2)
    )
    assert [text for text, _ in there] == [text for text, _ in here]
    assert (on_ray_variant, on_ray) == (variant, execution) and all(ms > 0 for _, ms in there)
    assert sharding["workers"] == 2 and sharding["shards"] == 3


@needs_ray
@pytest.mark.integration
def test_ray_evaluation_gives_the_single_process_results(
    tmp_path, monkeypatch, fp32_bundle, default_data_dir, local_ray
):
    """Real tiny.en on 5 eval clips (one long-form) in shards of 2 over 2 actors: the per-clip
    table (hypotheses, normalised texts, edit counts) and the WER equal the single-process run's."""
    from pipeline.bench import sharded
    from pipeline.bench.evaluate import EvaluateOptions, evaluate_bundle
    from pipeline.sources.speech_sets import load_saved_set

    monkeypatch.setattr(sharded, "SHARD_CLIPS", 2)
    full = load_saved_set(default_data_dir, "eval")
    long_form = [i for i, seconds in enumerate(full["duration_s"]) if seconds > 30]
    full.select([0, 1, 2, 3, long_form[0]]).save_to_disk(str(tmp_path / "data" / "eval"))
    single = evaluate_bundle(
        fp32_bundle, tmp_path / "data", EvaluateOptions(table=tmp_path / "single.jsonl")
    )
    ray = evaluate_bundle(
        fp32_bundle, tmp_path / "data", EvaluateOptions("", 2, tmp_path / "ray.jsonl")
    )
    rows = [read_table(tmp_path / f"{run}.jsonl")["fp32"] for run in ("single", "ray")]
    assert [r.model_dump(exclude={"e2e_ms"}) for r in rows[0]] == [
        r.model_dump(exclude={"e2e_ms"}) for r in rows[1]
    ]
    assert (ray["wer"], ray["wer_long"], ray["errors"]) == (
        single["wer"], single["wer_long"], single["errors"],
    )  # fmt: skip
    assert ray["ray"]["shards"] == 3 and single["ray"] is None


def test_ray_missing_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    from pipeline.bench import sharded
    from whisper_npu.cli import main

    monkeypatch.setattr(sharded.importlib.util, "find_spec", lambda name: None)
    code = main(["evaluate", "--artifact", str(tmp_path), "--data", str(tmp_path), "--ray"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["whisper-npu evaluate: error: --ray needs Ray, which is not installed "
                   "(pip install '.[ray]')"]  # fmt: skip
