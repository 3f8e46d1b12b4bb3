"""The bench on degraded conditions: loop detection, the per-condition figures from fabricated
transcripts, bench.json's `conditions` and the per-clip rows, every engine's pass over the
conditions' clips, the gate per condition and variant, the WER-vs-SNR plot and the report."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import datasets
import numpy as np
import pytest

import pipeline.bench.worker
from pipeline.bench.gate import check
from pipeline.bench.metrics import BenchMetrics, BenchResult, ConditionReport, RunInfo
from pipeline.bench.plots import write_plots
from pipeline.bench.records import ConditionClips, EngineSpec, EvalClips, Measurement
from pipeline.bench.report import format_busy, format_conditions
from pipeline.bench.results import condition_tables, read_table, score_clip, write_table
from pipeline.bench.run import load_condition_clips, measure
from pipeline.bench.stats import busy_figures, condition_metrics, round_sig
from pipeline.config import BenchParams, Condition, ConditionGate, ConditionLimits, GateParams
from pipeline.sources.condition_sets import ConditionEntry, ConditionsManifest
from pipeline.sources.speech_sets import FEATURES
from tests.test_bench import metrics_file, run_check
from whisper_npu.errors import GateFailure, UserError
from whisper_npu.execution import Device, Execution
from whisper_npu.figures import BenchRow
from whisper_npu.timing import Sample
from whisper_npu.variants import BASELINE
from whisper_npu.wer import is_loop, is_loop_normalised

DATA = Path(__file__).resolve().parent / "data"
CHORUS = "we will rock you we will rock you we will rock you we will rock you"


@pytest.mark.parametrize(
    ("reference", "hypothesis", "loops"),
    [
        ("the cat sat on the mat", "the cat sat on a mat", False),
        ("", "", False),
        ("hello there", "hello there how are you today", False),  # 6: not over max(2x2, 2+4)
        ("hello there", "hello there how are you today friend", True),
        ("", "thank you for watching thanks", True),  # a hallucination on no speech at all
        ("go on then", "go on then", False),
        # one word over and over, within twice the reference's length
        ("i think the the answer is yes maybe", "i think the the the the the the", True),
        ("i think the the answer is yes maybe", "i think the the the the the yes", False),
        # the reference's own chorus is no loop, nor one more time through it
        (CHORUS, CHORUS, False),
        (CHORUS, f"{CHORUS} we will rock you", False),
        # a phrase looping while the commonest phrase is the reference's chorus: still a loop
        (f"{CHORUS} now", f"{CHORUS} go go go go go go", True),
    ],
)
def test_is_loop_normalised(reference, hypothesis, loops):
    assert is_loop_normalised(reference, hypothesis) is loops


def test_is_loop_normalises_first():
    assert not is_loop("Hello, world!", "Hello world.")
    assert is_loop("Mr. Smith is here.", "Mister Smith, Smith, Smith, Smith, Smith, Smith.")


def eval_clips(references: list[str], ids: list[str] | None = None) -> EvalClips:
    """Clip k's audio is k at every sample: a scripted engine reads which clip it was given."""
    count = len(references)
    return EvalClips(
        [np.full(16, k, dtype=np.float32) for k in range(count)],
        references,
        [2.0] * count,
        ids or [f"c{k}" for k in range(count)],
    )


REFERENCES = ["the cat sat down", "a dog ran away", "birds sing at dawn"]
NOISY = {
    BASELINE: ["the cat sat down", "a dog ran", "birds sing at dawn"],
    # a substitution, an insertion, and a loop on the last clip
    "a16w8": ["the bat sat down", "a dog ran away fast", "sing sing sing sing sing sing"],
    "transformers": REFERENCES,
}


def babble() -> ConditionClips:
    return ConditionClips("babble-5db", "babble", 5.0, eval_clips(REFERENCES))


def measured_on(conditions: dict[str, dict[str, list[str]]]) -> Measurement:
    """A measurement whose condition passes gave these transcripts, in clip order."""
    samples = {
        name: {
            engine: [Sample(k, text, 1, 10.0 + k) for k, text in enumerate(texts)]
            for engine, texts in engines.items()
        }
        for name, engines in conditions.items()
    }
    return Measurement({}, {}, {}, {}, {}, samples)


def test_condition_figures_from_fabricated_transcripts():
    tables = condition_tables(measured_on({"babble-5db": NOISY}), [babble()])
    report = condition_metrics([babble()], tables)["babble-5db"]
    assert (report.family, report.snr_db) == ("babble", 5.0)
    assert list(report.engines) == [BASELINE, "a16w8", "transformers"]
    fp32, variant, peer = (report.engines[n] for n in (BASELINE, "a16w8", "transformers"))
    assert (fp32.clips, fp32.words, fp32.loops, fp32.qoi) == (3, 12, 0, 1.0)
    assert fp32.wer == fp32.deletion_rate == round_sig(1 / 12) and fp32.wer_delta_vs_fp32 == 0
    # a16w8: 1 substitution; 1 insertion; "sing" x6 for "birds sing at dawn": 3 substitutions,
    # 2 insertions, and the clip loops. Worse than fp32 on clips 0 and 2, not on 1.
    assert variant.substitution_rate == round_sig(4 / 12)
    assert variant.insertion_rate == 0.25 and variant.deletion_rate == 0
    assert variant.wer == round_sig(7 / 12) and variant.loops == 1
    assert variant.qoi == round_sig(1 / 3)
    assert variant.wer_delta_vs_fp32 == round_sig(100 * (7 / 12 - 1 / 12))
    assert peer.wer == 0 and peer.qoi == 1.0 and peer.wer_delta_vs_fp32 == round_sig(-100 / 12)
    scored = tables["babble-5db"]["a16w8"]
    assert [row.condition for row in scored] == ["babble-5db"] * 3 and scored[2].e2e_ms == [12.0]


def test_a_condition_without_a_reference_word_is_refused():
    silent = ConditionClips("quiet", "quiet", None, eval_clips(["", ""]))
    tables = condition_tables(measured_on({"quiet": {BASELINE: ["", "uh"]}}), [silent])
    with pytest.raises(UserError, match="condition quiet: no clip has a reference word"):
        condition_metrics([silent], tables)


def test_condition_rows_share_the_table_and_stay_out_of_the_clean_figures(tmp_path):
    """Condition rows keep their clean clip's id but name their condition; clean rows have
    none (a table from before conditions reads as clean), and each set reads back on its own."""
    clean = [score_clip(BASELINE, f"c{k}", 2.0, (r, r), [1.0]) for k, r in enumerate(REFERENCES)]
    noisy = condition_tables(measured_on({"babble-5db": NOISY}), [babble()])["babble-5db"]
    path = tmp_path / "clips.jsonl"
    write_table(path, [*clean, *(row for rows in noisy.values() for row in rows)])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0]["condition"] is None and lines[3]["condition"] == "babble-5db"
    del lines[0]["condition"]
    path.write_text("".join(f"{json.dumps(line)}\n" for line in lines))
    assert read_table(path) == {BASELINE: clean}
    assert read_table(path, "babble-5db") == noisy
    assert read_table(path, "white-0db") == {}


def rows(**engines: tuple[float, int, float]) -> dict[str, dict[str, float]]:
    """A condition's rows in bench.json with (wer, loops, qoi) per engine."""
    return {
        name: {
            "clips": 16, "words": 190, "wer": wer, "substitution_rate": wer, "deletion_rate": 0.0,
            "insertion_rate": 0.0, "loops": loops, "qoi": qoi, "wer_delta_vs_fp32": 0.0,
        }
        for name, (wer, loops, qoi) in engines.items()
    }  # fmt: skip


def report(snr_db: float = 5.0, **engines: tuple[float, int, float]) -> ConditionReport:
    return ConditionReport.model_validate(
        {"family": "babble", "snr_db": snr_db, "engines": rows(**engines)}
    )


def test_bench_json_with_conditions_round_trips_and_old_files_stay_valid(tmp_path):
    metrics = BenchMetrics.read(DATA / "bench.json")
    assert metrics.conditions is None and "conditions" not in metrics.to_json()
    added = metrics.model_copy(
        update={"conditions": {"babble-5db": report(fp32=(0.1, 0, 1.0), a16w8=(0.12, 1, 0.8))}}
    )
    added.write(tmp_path / "bench.json")
    raw = json.loads((tmp_path / "bench.json").read_text())
    # flat for `dvc metrics show`: conditions.babble-5db.engines.a16w8.wer
    assert raw["conditions"]["babble-5db"]["engines"]["a16w8"]["wer"] == 0.12
    assert raw["conditions"]["babble-5db"]["family"] == "babble"
    assert BenchMetrics.read(tmp_path / "bench.json") == added
    assert "conditions" not in BenchMetrics.read(tmp_path / "bench.json").variants
    telephone = report(fp32=(0.1, 0, 1.0)).model_copy(update={"snr_db": None})
    assert "snr_db" not in telephone.to_json()


def test_a_condition_without_fp32_is_refused(tmp_path):
    raw = json.loads((DATA / "bench.json").read_text())
    raw["conditions"] = {"babble-5db": {"family": "babble", "engines": rows(a16w8=(0.1, 1, 0.8))}}
    (tmp_path / "bench.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match=r"conditions\.babble-5db: no fp32 row"):
        BenchMetrics.read(tmp_path / "bench.json")


def test_run_json_says_where_the_conditions_ran(tmp_path):
    run = RunInfo.read(DATA / "run.json")
    assert "conditions" not in run.to_json()
    where = {"conditions": 2, "clips": 32, "where": "this machine's bench workers"}
    ran = RunInfo.model_validate({**run.to_json(), "conditions": where})
    ran.write(tmp_path / "run.json")
    assert RunInfo.read(tmp_path / "run.json") == ran


class AudioWorker:
    """A scripted worker whose transcript depends on the audio it gets: by its length in
    samples, which survives a round trip through a saved set's WAV."""

    def __init__(self, name: str, texts: dict[int, str]) -> None:
        self.spec = EngineSpec(name, "ours", Path(name), 1)
        self.info = {"execution": Execution.cpu(Device.CPU, compiled=False), "size_mb": 1.0}
        self.texts, self.heard = texts, []

    def transcribe(self, clip: int, samples: np.ndarray) -> Sample:
        self.heard.append(samples.size)
        return Sample(clip, self.texts[samples.size], 1, 1.0)

    def finish(self) -> float:
        return 1.0


def test_every_engine_transcribes_every_condition_even_with_known_clean_transcripts(
    monkeypatch,
):
    """fp32's clean transcripts come from the reference stage, but the conditions' clips are
    new audio: it transcribes them like every other engine."""
    clean = EvalClips([np.zeros(n) for n in (1, 2)], ["a", "b"], [1.0] * 2, ["c0", "c1"])
    texts = {1: "a", 2: "b", 10: "x", 11: "y", 12: "z"}
    workers = [AudioWorker(BASELINE, texts), AudioWorker("a16w8", texts)]
    monkeypatch.setattr(pipeline.bench.worker, "open_workers", lambda specs, stack: workers)
    noisy = EvalClips([np.zeros(n) for n in (10, 11, 12)], ["x"] * 3, [1.0] * 3, ["c0", "c1", "c0"])
    conditions = [ConditionClips("white-0db", "white", 0.0, noisy)]
    params = BenchParams(warmup=0, repeats=1, latency_clips=2, busy_cores=0)
    known = {BASELINE: {"c0": "a", "c1": "b"}}

    measured = measure([w.spec for w in workers], clean, params, known, conditions)

    assert workers[0].heard == [1, 2, 10, 11, 12]  # no clean WER pass: settled
    assert sorted(workers[1].heard) == [1, 2, 10, 11, 12]
    passes = measured.conditions["white-0db"]
    assert {name: [s.text for s in runs] for name, runs in passes.items()} == {
        BASELINE: ["x", "y", "z"],
        "a16w8": ["x", "y", "z"],
    }
    assert [s.clip for s in passes["a16w8"]] == [0, 1, 2]


def save_set(path: Path, texts: list[str], sizes: list[int]) -> None:
    """A speech set saved as the data and conditions stages save theirs: silent clips of
    `sizes` samples, ids eval-0001 on."""
    rows = {
        "id": [f"eval-{k:04d}" for k in range(1, len(texts) + 1)],
        "audio": [{"array": np.zeros(n), "sampling_rate": 16000} for n in sizes],
        "text": texts,
        "duration_s": [n / 16000 for n in sizes],
    }
    datasets.Dataset.from_dict(rows, features=FEATURES).save_to_disk(str(path))


def write_conditions(root: Path, names: dict[str, tuple[Condition, list[int]]]) -> Path:
    """A conditions directory as the `conditions` stage writes one: per condition, its entry
    and the sizes of its clips, whose texts are REFERENCES'."""
    entries = {}
    for name, (entry, sizes) in names.items():
        save_set(root / name, REFERENCES[: len(sizes)], sizes)
        entries[name] = ConditionEntry(
            entry=entry, snr_db=entry.expanded().get(name), clips=len(sizes),
            total_s=sum(sizes) / 16000, source_ids=[f"eval-{k:04d}" for k in range(1, 3)],
            arrow_sha256={"data-00000-of-00001.arrow": "0" * 64},
        )  # fmt: skip
    ConditionsManifest(set="eval", seed=0, cpu="test", conditions=entries).write(
        root / "manifest.json"
    )
    return root


BABBLE_5 = Condition(name="babble", noise="babble", snr_db=[5])
TELEPHONE = Condition(name="telephone", telephone=True)


def test_condition_clips_load_from_the_conditions_stage_output(tmp_path):
    sets = {"babble-5db": (BABBLE_5, [1600, 3200]), "telephone": (TELEPHONE, [800, 400])}
    loaded = load_condition_clips(write_conditions(tmp_path, sets))
    assert [(c.name, c.family, c.snr_db) for c in loaded] == [
        ("babble-5db", "babble", 5.0),
        ("telephone", "telephone", None),
    ]
    clips = loaded[0].clips
    assert clips.ids == ["eval-0001", "eval-0002"] and clips.references == REFERENCES[:2]
    assert [s.size for s in clips.samples] == [1600, 3200] and clips.durations == [0.1, 0.2]
    with pytest.raises(UserError, match="no conditions here"):
        load_condition_clips(tmp_path / "absent")


# Scripted engines make no decoder calls: the decoder-by-position figure has no line to label.
@pytest.mark.filterwarnings("ignore:No artists with labels")
def test_the_bench_scores_every_condition_end_to_end(tmp_path, monkeypatch):
    """run_bench with scripted engines: bench.json's `conditions`, the condition rows in the
    per-clip table, run.json's note, the plots and the report all come out of one run."""
    import pipeline.bench.languages
    import pipeline.bench.run
    from pipeline.bench.languages import LanguagePass
    from pipeline.bench.run import BenchPaths, run_bench

    save_set(tmp_path / "data" / "eval", REFERENCES[:2], [1600, 3200])
    sets = {"babble-5db": (BABBLE_5, [4800, 6400]), "telephone": (TELEPHONE, [8000, 9600])}
    conditions = write_conditions(tmp_path / "conditions", sets)
    right = {1600: REFERENCES[0], 3200: REFERENCES[1], 4800: REFERENCES[0],
             6400: REFERENCES[1], 8000: REFERENCES[0], 9600: REFERENCES[1]}  # fmt: skip
    workers = [
        AudioWorker(BASELINE, right),
        AudioWorker("a16w8", {**right, 6400: "a dog dog dog dog dog dog"}),
    ]
    specs = [w.spec for w in workers]
    monkeypatch.setattr(pipeline.bench.worker, "open_workers", lambda specs, stack: workers)
    monkeypatch.setattr(pipeline.bench.run, "bench_specs", lambda *args: (specs, {}))
    monkeypatch.setattr(
        pipeline.bench.languages, "language_pass", lambda *args: LanguagePass([], None, "")
    )
    out = tmp_path / "metrics"
    paths = BenchPaths(
        tmp_path / "compiled", tmp_path / "data", out / "bench.json", out / "clips.jsonl",
        out / "bench", tmp_path / "fp32", tmp_path / "model", conditions_dir=conditions,
    )  # fmt: skip
    result = run_bench([BASELINE, "a16w8"], BenchParams(warmup=0, repeats=1), paths)

    raw = json.loads((out / "bench.json").read_text())
    assert list(raw["conditions"]) == ["babble-5db", "telephone"]
    babble_5 = raw["conditions"]["babble-5db"]
    assert (babble_5["family"], babble_5["snr_db"]) == ("babble", 5.0)
    assert babble_5["engines"]["a16w8"]["loops"] == 1 and babble_5["engines"]["fp32"]["wer"] == 0
    assert "snr_db" not in raw["conditions"]["telephone"]
    assert raw["fp32"]["loops"] == raw["a16w8"]["loops"] == 0
    assert len(read_table(out / "clips.jsonl", "telephone")["a16w8"]) == 2
    assert [r.hypothesis for r in read_table(out / "clips.jsonl")["a16w8"]] == REFERENCES[:2]
    run = json.loads((out / "bench" / "run.json").read_text())
    assert run["conditions"]["conditions"] == 2 and run["conditions"]["clips"] == 4
    assert (out / "bench" / "wer_vs_snr_babble.csv").is_file()
    assert "babble-5db" in format_conditions(result.metrics)


# The gate. Baseline: fp32 and a16w8 on the clean set and on babble-10db.
GATE = GateParams(
    conditions=ConditionGate(per_condition={"babble-0db": ConditionLimits(max_wer_increase=8.0)})
)


def with_conditions(path: Path, conditions: dict[str, ConditionReport], **loops: int) -> Path:
    """A fabricated bench.json (tests.test_bench.metrics_file) given conditions and clean
    loop counts per variant."""
    raw = json.loads(path.read_text())
    for name, count in loops.items():
        raw[name]["loops"] = count
    if conditions:
        raw["conditions"] = {name: r.to_json() for name, r in conditions.items()}
    path.write_text(json.dumps(raw))
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    plain = metrics_file(tmp_path / "base.json", fp32=(0.026, 1.0), a16w8=(0.030, 2.0))
    babble_5 = report(fp32=(0.10, 0, 1.0), a16w8=(0.11, 0, 0.9), transformers=(0.1, 0, 1.0))
    return with_conditions(plain, {"babble-10db": babble_5}, fp32=0, a16w8=0)


def current(tmp_path: Path, babble_5: ConditionReport, **extra: ConditionReport) -> Path:
    plain = metrics_file(tmp_path / "cur.json", fp32=(0.026, 1.0), a16w8=(0.030, 2.0))
    return with_conditions(plain, {"babble-10db": babble_5, **extra}, fp32=0, a16w8=0)


def test_a_variant_that_breaks_under_noise_fails_naming_the_condition(tmp_path, base, capsys):
    """Clean figures unchanged; on babble at 10 dB a16w8's WER rises 6 points, its QoI falls
    to 40% and it loops on 3 clips more than fp32: exit 1, every failure named (the limits:
    params.yaml's). The peer's collapse is context, never gated."""
    broken = report(fp32=(0.10, 1, 1.0), a16w8=(0.17, 4, 0.4), transformers=(0.9, 9, 0.0))
    assert run_check(base, current(tmp_path, broken)) == 1
    out, err = capsys.readouterr()
    line = next(row for row in out.splitlines() if row.startswith("babble-10db  a16w8"))
    assert "REGRESSED: WER +6.00 points (max +5.00); QoI 40.0% (min 50.0%); " in line
    assert "+3 looping clips vs fp32 (max +1)" in line
    assert "a16w8 on babble-10db: WER +6.00 points" in err
    assert "transformers" not in err and not any(
        row.startswith("babble-10db  transformers") for row in out.splitlines()
    )


def test_a_healthy_run_passes_and_conditions_the_baseline_lacks_are_said(tmp_path, base, capsys):
    healthy = report(fp32=(0.10, 0, 1.0), a16w8=(0.12, 1, 0.9))
    white = report(fp32=(0.3, 0, 1.0), a16w8=(0.5, 0, 0.8))  # +20 points, but no baseline
    assert run_check(base, current(tmp_path, healthy, **{"white-0db": white})) == 0
    out = capsys.readouterr().out
    assert "not in the baseline, WER not compared: white-0db" in out
    assert "REGRESSED" not in out


def test_a_baseline_without_conditions_passes(tmp_path, capsys):
    plain = metrics_file(tmp_path / "base.json", fp32=(0.026, 1.0), a16w8=(0.030, 2.0))
    healthy = report(fp32=(0.10, 0, 1.0), a16w8=(0.2, 0, 0.9))
    assert run_check(plain, current(tmp_path, healthy)) == 0
    assert "not in the baseline, WER not compared: babble-10db" in capsys.readouterr().out


def test_noise_breaks_qoi_or_loops_even_without_a_baseline_figure(tmp_path):
    """QoI and loops are the run's own, against its own fp32: gated on any condition."""
    plain = metrics_file(tmp_path / "base.json", fp32=(0.026, 1.0), a16w8=(0.030, 2.0))
    looping = report(fp32=(0.10, 2, 1.0), a16w8=(0.1, 4, 0.9))
    assert run_check(plain, current(tmp_path, looping)) == 1
    worse = report(fp32=(0.10, 2, 1.0), a16w8=(0.1, 3, 0.45))
    assert run_check(plain, current(tmp_path, worse)) == 1


def test_per_condition_limits_override_the_conditions_gate(tmp_path, base, capsys):
    """babble-0db may rise 8 points (GATE's override); babble-10db keeps the 4-point limit."""
    ok_5 = report(fp32=(0.10, 0, 1.0), a16w8=(0.11, 0, 0.9))
    before = with_conditions(
        base, {"babble-10db": ok_5, "babble-0db": report(fp32=(0.3, 0, 1.0), a16w8=(0.3, 0, 1.0))}
    )
    at_0 = report(fp32=(0.3, 0, 1.0), a16w8=(0.37, 0, 1.0))  # +7 points
    assert check(before, current(tmp_path, ok_5, **{"babble-0db": at_0}), GATE) == 0
    assert "babble-0db: its own limits" in capsys.readouterr().out
    at_5 = report(fp32=(0.10, 0, 1.0), a16w8=(0.17, 0, 0.9))  # +6 points
    with pytest.raises(GateFailure, match="a16w8 on babble-10db: WER"):
        check(before, current(tmp_path, at_5, **{"babble-0db": at_0}), GATE)


def test_a_condition_the_current_run_lacks_is_bad_input(tmp_path, base, capsys):
    plain = metrics_file(tmp_path / "cur.json", fp32=(0.026, 1.0), a16w8=(0.030, 2.0))
    assert run_check(base, plain) == 2
    assert "condition babble-10db of the baseline" in capsys.readouterr().err


def test_the_clean_set_gates_loops_against_fp32_in_the_same_run(tmp_path, base, capsys):
    """One more looping clip than fp32 is allowed (gate.conditions.max_loop_increase), two are
    not; a run from before loops were counted is not gated on them."""
    healthy = report(fp32=(0.10, 0, 1.0), a16w8=(0.11, 0, 0.9))
    one_more = with_conditions(current(tmp_path, healthy), {}, fp32=1, a16w8=2)
    assert run_check(base, one_more) == 0
    two_more = with_conditions(current(tmp_path, healthy), {}, fp32=1, a16w8=3)
    assert run_check(base, two_more) == 1
    assert "a16w8: +2 looping clips vs fp32 (max +1)" in capsys.readouterr().err
    raw = json.loads(two_more.read_text())
    del raw["a16w8"]["loops"]
    two_more.write_text(json.dumps(raw))
    assert run_check(base, two_more) == 0


def result_with_conditions() -> BenchResult:
    variants = {
        BASELINE: BenchRow(wer=0.026, e2e_ms_p50=400.0, speedup_vs_fp32=1.0, qoi=1.0, loops=0),
        "a16w8": BenchRow(wer=0.031, e2e_ms_p50=120.0, speedup_vs_fp32=3.3, qoi=0.95, loops=1),
    }
    conditions = {
        "babble-10db": report(10, fp32=(0.05, 0, 1.0), a16w8=(0.06, 0, 0.9)),
        "babble-0db": report(0, fp32=(0.4, 1, 1.0), a16w8=(0.55, 3, 0.6)),
        "telephone": report(fp32=(0.08, 0, 1.0), a16w8=(0.09, 0, 0.9)).model_copy(
            update={"family": "telephone", "snr_db": None}
        ),
        "babble-5db": report(fp32=(0.1, 0, 1.0), a16w8=(0.12, 0, 0.9)),
    }
    metrics = BenchMetrics(variants=variants, conditions=conditions)
    positions = {name: {0: 5.0} for name in variants}
    split = {name: {"encoder": 2.0, "decoder": 1.0, "other": 1.0} for name in variants}
    return BenchResult(metrics, RunInfo.read(DATA / "run.json"), positions, split)


def test_plots_draw_wer_against_snr_per_noise_family(tmp_path):
    write_plots(tmp_path, result_with_conditions())
    assert (tmp_path / "wer_vs_snr.png").read_bytes()[:4] == b"\x89PNG"
    # lowest SNR first, a column per engine: a line each in `dvc plots`' linear template
    assert (tmp_path / "wer_vs_snr_babble.csv").read_text().splitlines() == [
        "snr_db,fp32,a16w8",
        "0.0,40.0,55.0",
        "5.0,10.0,12.0",
        "10.0,5.0,6.0",
    ]
    assert not (tmp_path / "wer_vs_snr_telephone.csv").exists()  # no noise, no SNR
    rows = (tmp_path / "conditions.csv").read_text().splitlines()
    assert rows[0] == "label,condition,engine,wer_pct,loops"
    assert "babble-0db a16w8,babble-0db,a16w8,55.0,3" in rows and len(rows) == 9


def test_plots_without_conditions_write_none_of_theirs(tmp_path):
    result = result_with_conditions()
    plain = BenchResult(
        result.metrics.model_copy(update={"conditions": None}),
        result.run,
        result.positions,
        result.split,
    )
    write_plots(tmp_path, plain)
    assert not list(tmp_path.glob("wer_vs_snr*")) and not (tmp_path / "conditions.csv").exists()


def test_the_report_lists_conditions_by_engine_with_loops_in_brackets():
    lines = format_conditions(result_with_conditions().metrics).splitlines()
    assert lines[0].split() == ["condition", "SNR", "dB", "fp32", "a16w8"]
    assert lines[1].split() == ["clean", "-", "2.60", "3.10", "(1)"]
    assert lines[3].split() == ["babble-0db", "0", "40.00", "(1)", "55.00", "(3)"]
    assert lines[4].split() == ["telephone", "-", "8.00", "9.00"]
    assert lines[-1].startswith("WER % per condition; (n): n clips looped")


def test_the_busy_pass_times_the_latency_clips_again_under_the_load(monkeypatch):
    """With `bench.busy_cores`, the latency clips run once more inside the background load;
    each engine's busy figures are against its own idle median and the others' busy runs."""
    import pipeline.bench.load

    loads: list[int] = []

    @contextlib.contextmanager
    def fake_load(cores: int, seed: int = 0):
        loads.append(cores)
        yield

    monkeypatch.setattr(pipeline.bench.load, "background_load", fake_load)
    clean = EvalClips([np.zeros(n) for n in (1, 2)], ["a", "b"], [1.0] * 2, ["c0", "c1"])
    workers = [AudioWorker(BASELINE, {1: "a", 2: "b"}), AudioWorker("a16w8", {1: "a", 2: "b"})]
    monkeypatch.setattr(pipeline.bench.worker, "open_workers", lambda specs, stack: workers)
    params = BenchParams(warmup=0, repeats=1, latency_clips=2, busy_cores=1)

    measured = measure([w.spec for w in workers], clean, params, {})

    assert loads == [1]
    assert sorted(workers[0].heard) == [1, 1, 2, 2]  # timed, busy (no WER pass: none left)
    assert [s.clip for s in measured.busy["a16w8"]] == [0, 1]
    figures = busy_figures(measured.busy, "a16w8", measured.latency["a16w8"])
    assert figures == {
        "busy_e2e_ms_p50": 1.0,
        "busy_slowdown": 1.0,
        "busy_speedup_vs_fp32": 1.0,
    }
    assert busy_figures({}, "a16w8", measured.latency["a16w8"]) == {}


def test_the_busy_table_sets_each_engine_idle_and_busy_side_by_side():
    rows = {
        BASELINE: BenchRow(wer=0.03, speedup_vs_fp32=1.0, e2e_ms_p50=400.0),
        "cpu-int8": BenchRow(
            wer=0.03,
            speedup_vs_fp32=1.4,
            e2e_ms_p50=300.0,
            busy_e2e_ms_p50=390.0,
            busy_slowdown=1.3,
            busy_speedup_vs_fp32=1.5,
            busy_speedup_vs_faster_whisper_int8=1.2,
        ),
    }
    table = format_busy(BenchMetrics(variants=rows)).splitlines()

    assert table[0].startswith("engine") and table[0].endswith("busy vs fw int8")
    assert table[1].split() == ["cpu-int8", "300", "390", "1.30x", "1.50x", "1.20x"]
    assert len(table) == 3  # fp32 had no busy pass: no row
    assert format_busy(BenchMetrics(variants={BASELINE: rows[BASELINE]})) == ""


def test_the_transformers_peer_sits_out_the_conditions(monkeypatch):
    """The slowest engine, held to fp32's transcripts by the parity gate, transcribes the
    clean clips only; the tables and plots then leave it out of the conditions."""
    clean = EvalClips([np.zeros(n) for n in (1, 2)], ["a", "b"], [1.0] * 2, ["c0", "c1"])
    texts = {1: "a", 2: "b", 10: "x"}
    peer = AudioWorker("transformers", texts)
    peer.spec = EngineSpec("transformers", "transformers", Path("m"), 1)
    workers = [AudioWorker(BASELINE, texts), peer]
    monkeypatch.setattr(pipeline.bench.worker, "open_workers", lambda specs, stack: workers)
    noisy = EvalClips([np.zeros(10)], ["x"], [1.0], ["c0"])
    conditions = [ConditionClips("white-0db", "white", 0.0, noisy)]
    params = BenchParams(warmup=0, repeats=1, latency_clips=2, busy_cores=0)

    measured = measure([w.spec for w in workers], clean, params, {}, conditions)

    assert list(measured.conditions["white-0db"]) == [BASELINE]
    assert 10 not in peer.heard
