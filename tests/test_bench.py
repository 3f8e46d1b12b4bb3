"""The bench and its gate: exit codes of `check`, the statistics, the timing wrapper, the plots,
and (integration) one small real bench on the tiny.en fp32 bundle. No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import pipeline.bench.worker
from pipeline.bench.metrics import BenchMetrics, BenchResult, RunInfo
from pipeline.bench.plots import write_plots
from pipeline.bench.records import EngineSpec, EvalClips
from pipeline.bench.results import read_table, table_wer
from pipeline.bench.run import BenchPaths, known_transcripts, measure, run_bench
from pipeline.bench.schedule import interleave
from pipeline.bench.stats import paired_speedup, round_sig
from pipeline.bench.worker import Worker
from pipeline.sources.speech_sets import pick_latency_clips
from tests.conftest import bundle_record
from whisper_npu.cli import main
from whisper_npu.errors import UserError
from whisper_npu.figures import BenchRow
from whisper_npu.timing import Sample, TimingRunner, latency_stats, percentile
from whisper_npu.variants import BASELINE

REPO = Path(__file__).resolve().parent.parent
PARAMS = REPO / "params.yaml"  # gate: max_wer_increase 1.0 points, max_latency_increase 0.25


def metrics_file(path: Path, cpu: str = "AMD EPYC avx2 fma", **variants: tuple[float, ...]) -> Path:
    """A bench.json with (wer, speedup_vs_fp32[, qoi]) per variant (QoI 1.0 unless given),
    plus a peer the gate must ignore."""
    payload: dict = {
        name: {"wer": wer, "speedup_vs_fp32": speedup, "qoi": qoi, "e2e_ms_p50": 100.0}
        for name, (wer, speedup, qoi) in ((n, (*v, 1.0)[:3]) for n, v in variants.items())
    }
    payload["peers"] = {"transformers": {"wer": 0.5, "speedup_vs_fp32": 0.01}}
    payload["machine"] = {"cpu": cpu}
    path.write_text(json.dumps(payload))
    return path


def run_check(baseline: Path, current: Path, *extra: str) -> int:
    return main(["check", "--params", str(PARAMS), "--baseline", str(baseline),
                 "--current", str(current), *extra])  # fmt: skip


@pytest.fixture
def baseline(tmp_path: Path) -> Path:
    return metrics_file(tmp_path / "base.json", fp32=(0.026, 1.0), a16w8=(0.030, 2.0))


def test_check_passes_within_thresholds(tmp_path, baseline, capsys):
    # +0.9 points of WER and time ratio 1/1.7 vs 1/2.0 (+17.6%) are both inside the gate.
    current = metrics_file(tmp_path / "cur.json", fp32=(0.026, 1.0), a16w8=(0.039, 1.7))
    assert run_check(baseline, current) == 0
    out = capsys.readouterr().out
    assert "a16w8" in out and "REGRESSED" not in out


def test_check_fails_on_wer_regression(tmp_path, baseline, capsys):
    current = metrics_file(tmp_path / "cur.json", fp32=(0.026, 1.0), a16w8=(0.041, 2.0))
    assert run_check(baseline, current) == 1
    captured = capsys.readouterr()
    assert "REGRESSED: WER +1.10 points (max +1.00)" in captured.out
    assert "a16w8" in captured.err and "1 variant(s) regressed" in captured.err


def test_check_fails_on_latency_regression_of_the_same_run_ratio(tmp_path, baseline, capsys):
    # Time ratio against fp32 goes from 0.5 to 0.667 (+33%): a regression even if the
    # milliseconds are unchanged, because the gate only sees same-run ratios.
    current = metrics_file(tmp_path / "cur.json", fp32=(0.026, 1.0), a16w8=(0.030, 1.5))
    assert run_check(baseline, current) == 1
    assert "latency +33.3% vs fp32" in capsys.readouterr().out


def test_check_on_another_cpu_uses_the_wider_latency_limit(tmp_path, baseline, capsys):
    """+33% on another instruction set is within max_latency_increase_other_cpu (100%); a
    doubling is not; WER keeps its limit whatever the machine."""
    other = "Intel Xeon avx2 fma avx512f avx512_vnni"
    current = metrics_file(tmp_path / "cur.json", other, fp32=(0.026, 1.0), a16w8=(0.030, 1.5))
    assert run_check(baseline, current) == 0
    assert "this run on 'Intel Xeon" in capsys.readouterr().out
    slower = metrics_file(tmp_path / "slow.json", other, fp32=(0.026, 1.0), a16w8=(0.030, 0.9))
    assert run_check(baseline, slower) == 1
    worse = metrics_file(tmp_path / "worse.json", other, fp32=(0.026, 1.0), a16w8=(0.041, 2.0))
    assert run_check(baseline, worse) == 1


def test_check_thresholds_can_be_overridden(tmp_path, baseline):
    current = metrics_file(tmp_path / "cur.json", fp32=(0.026, 1.0), a16w8=(0.030, 1.5))
    assert run_check(baseline, current, "--max-latency-increase", "0.5") == 0
    worse = metrics_file(tmp_path / "worse.json", fp32=(0.026, 1.0), a16w8=(0.030, 2.0, 0.7))
    assert run_check(baseline, worse, "--min-qoi", "0.7") == 0
    with pytest.raises(SystemExit) as bad:
        run_check(baseline, worse, "--min-qoi", "1.5")  # not a share: argparse's exit 2
    assert bad.value.code == 2


def test_check_fails_on_qoi_even_when_the_average_holds(tmp_path, baseline, capsys):
    """Same WER and speed as the baseline, but no worse than fp32 on only 75% of the clips:
    min_qoi (0.8 in params.yaml) catches what the average hides; 80% exactly passes."""
    current = metrics_file(tmp_path / "cur.json", fp32=(0.026, 1.0), a16w8=(0.030, 2.0, 0.75))
    assert run_check(baseline, current) == 1
    captured = capsys.readouterr()
    assert "REGRESSED: QoI 75.0% (min 80.0%)" in captured.out
    assert "a16w8: QoI 75.0%" in captured.err
    edge = metrics_file(tmp_path / "edge.json", fp32=(0.026, 1.0), a16w8=(0.030, 2.0, 0.8))
    assert run_check(baseline, edge) == 0


def test_check_of_a_run_without_qoi_is_bad_input(tmp_path, baseline, capsys):
    """QoI is the current run's own figure: a current file without it cannot be judged (a
    baseline without it can, as a baseline's QoI is never read)."""
    current = tmp_path / "cur.json"
    raw = json.loads(metrics_file(current, fp32=(0.026, 1.0), a16w8=(0.030, 2.0)).read_text())
    del raw["a16w8"]["qoi"]
    current.write_text(json.dumps(raw))
    assert run_check(baseline, current) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a16w8.qoi: missing" in err[0]
    assert run_check(current, baseline) == 0


def test_check_missing_variant_is_bad_input(tmp_path, baseline, capsys):
    current = metrics_file(tmp_path / "cur.json", fp32=(0.026, 1.0))
    assert run_check(baseline, current) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "a16w8" in err[0] and "missing" in err[0]


def test_check_malformed_json_is_bad_input(tmp_path, baseline, capsys):
    current = tmp_path / "cur.json"
    current.write_text('{"fp32": {"wer": 0.02,')
    assert run_check(baseline, current) == 2
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.parametrize(
    "payload",
    [[1, 2], {"fp32": {"wer": "low", "speedup_vs_fp32": 1.0}}, {"fp32": {"wer": 0.02}}],
    ids=["not-an-object", "non-numeric", "no-speedup"],
)
def test_check_wrong_shape_is_bad_input(tmp_path, baseline, payload):
    current = tmp_path / "cur.json"
    current.write_text(json.dumps(payload))
    assert run_check(baseline, current) == 2


def test_check_missing_file_is_bad_input(tmp_path, baseline, capsys):
    assert run_check(baseline, tmp_path / "absent.json") == 2
    assert "no such metrics file" in capsys.readouterr().err


def test_percentiles_interpolate_linearly():
    values = [10.0, 20.0, 30.0, 40.0, 50.0]
    assert percentile(values, 50) == 30.0
    assert percentile(values, 90) == pytest.approx(46.0)


def sample(clip: int, e2e: float, tokens: int = 10, **calls) -> Sample:
    return Sample(clip, "text", tokens, e2e, **calls)


def test_speedup_is_the_median_of_back_to_back_ratios():
    # A drift that slows the second half of the run hits both engines and cancels out.
    fp32 = [sample(0, 100.0), sample(1, 100.0), sample(2, 300.0)]
    variant = [sample(0, 50.0), sample(1, 25.0), sample(2, 150.0)]
    assert paired_speedup(fp32, variant) == 2.0
    assert paired_speedup(variant, fp32) == 0.5


def test_latency_stats_sum_time_over_audio_and_tokens():
    runs = [
        sample(0, 1000.0, tokens=20, encoder_ms=(400.0,), decoder_ms=((0, 10.0), (1, 30.0))),
        sample(1, 3000.0, tokens=40, encoder_ms=(600.0,), decoder_ms=((0, 20.0),)),
    ]
    stats = latency_stats(runs, durations=[2.0, 6.0])
    assert stats["rtf"] == pytest.approx(4.0 / 8.0)
    assert stats["tokens_per_s"] == pytest.approx(60 / 4.0)
    assert stats["e2e_ms_p50"] == 2000.0
    assert stats["encoder_ms_p50"] == 500.0
    assert stats["decoder_ms_per_token_p50"] == 20.0


def test_peers_without_calls_get_no_encoder_or_decoder_figures():
    stats = latency_stats([sample(0, 100.0)], durations=[1.0])
    assert "encoder_ms_p50" not in stats and "decoder_ms_per_token_p50" not in stats


def test_round_sig_keeps_four_significant_digits():
    assert round_sig(0.0261066969) == 0.02611
    assert round_sig(1234.5678) == 1235.0


def test_latency_clips_span_the_durations_and_skip_long_form():
    durations = [5.0, 1.0, 40.0, 3.0, 2.0, 4.0]
    assert pick_latency_clips(durations, 3, limit_s=30.0) == [0, 1, 3]  # shortest, middle, longest
    assert pick_latency_clips(durations, 10, limit_s=30.0) == [0, 1, 3, 4, 5]


class FakeRunner:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def encode(self, features: np.ndarray) -> None:
        self.calls.append(("encode", features.shape))

    def decode_step(self, token: int, position: int) -> np.ndarray:
        self.calls.append(("decode", token, position))
        return np.full(4, float(token))

    def reset(self) -> None:
        self.calls.append(("reset",))


def test_timing_runner_forwards_reset_so_a_fallback_does_not_encode_again():
    inner = FakeRunner()
    timer = TimingRunner(inner)
    timer.encode(np.zeros((1, 80, 3000), np.float32))
    timer.decode_step(7, 0)
    timer.reset()
    timer.decode_step(7, 0)
    assert [call[0] for call in inner.calls] == ["encode", "decode", "reset", "decode"]
    encoder, decoder = timer.take()
    assert len(encoder) == 1 and len(decoder) == 2


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc only")
def test_a_worker_reports_its_own_peak_rss_not_its_parents():
    # getrusage's ru_maxrss survives fork and exec: a small child of a big parent would read
    # the parent's footprint, and every engine would seem to need the coordinator's memory.
    ballast = np.ones(400 * 2**20, np.uint8)  # 400 MiB resident in this process
    code = "from pipeline.bench.engines import peak_rss_mb; print(peak_rss_mb())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert ballast.sum() == ballast.size
    assert 5 < float(out.stdout) < 200


def test_timing_runner_passes_calls_through_and_records_each():
    inner = FakeRunner()
    timer = TimingRunner(inner)
    timer.encode(np.zeros((1, 80, 3000), np.float32))
    logits = timer.decode_step(7, 0)
    timer.decode_step(9, 1)
    assert inner.calls == [("encode", (1, 80, 3000)), ("decode", 7, 0), ("decode", 9, 1)]
    assert logits.tolist() == [7.0] * 4
    encoder, decoder = timer.take()
    assert len(encoder) == 1 and encoder[0] >= 0
    assert [position for position, _ in decoder] == [0, 1]
    assert timer.take() == ((), ())  # the next clip starts clean


class FakeWorker:
    def __init__(self, name: str, log: list[str]) -> None:
        self.spec = EngineSpec(name, "ours", Path(name), None)
        self.log = log

    def transcribe(self, clip: int, samples: np.ndarray) -> Sample:
        self.log.append(f"{self.spec.name}:{clip}")
        return sample(clip, 1.0)


def test_interleave_gives_each_clip_to_every_engine_with_a_rotating_first():
    order: list[str] = []
    workers = [FakeWorker(name, order) for name in ("a", "b", "c")]
    ticks = []
    out = interleave(workers, [5, 6, 7], [np.zeros(1)] * 8, lambda: ticks.append(1))
    assert order == ["a:5", "b:5", "c:5", "b:6", "c:6", "a:6", "c:7", "a:7", "b:7"]
    assert {name: [s.clip for s in runs] for name, runs in out.items()} == {
        name: [5, 6, 7] for name in "abc"
    }
    assert len(ticks) == 9


def test_a_worker_that_cannot_open_its_engine_is_one_line_of_bad_input(tmp_path):
    with (tmp_path / "log").open("wb") as log, pytest.raises(UserError) as error:
        Worker(EngineSpec("a16w8", "ours", tmp_path / "absent", None, cpu_only=True), log)
    assert str(error.value).startswith("a16w8 (")
    assert "\n" not in str(error.value) and "bundle" in str(error.value)


def test_plots_write_data_and_pngs(tmp_path):
    variants = {
        BASELINE: BenchRow(wer=0.026, e2e_ms_p50=400.0, speedup_vs_fp32=1.0, qoi=1.0),
        "a16w8": BenchRow(wer=0.031, e2e_ms_p50=120.0, speedup_vs_fp32=3.3, qoi=0.9512),
    }
    peers = {"transformers": BenchRow(wer=0.026, e2e_ms_p50=900.0, speedup_vs_fp32=0.44)}
    positions = {BASELINE: {0: 5.0, 1: 4.0, 2: 4.5}, "a16w8": {0: 2.0, 1: 2.1}}
    split = {
        BASELINE: {"encoder": 200.0, "decoder": 180.0, "other": 20.0},
        "a16w8": {"encoder": 60.0, "decoder": 50.0, "other": 10.0},
    }
    run = RunInfo.read(Path(__file__).parent / "data" / "run.json")
    metrics = BenchMetrics(variants=variants, peers=peers)
    write_plots(tmp_path, BenchResult(metrics, run, positions, split))
    for name in ("wer_vs_latency", "qoi", "decoder_by_position", "time_split"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "qoi.csv").read_text().splitlines() == [
        "engine,qoi_pct",
        "fp32,100.0",
        "a16w8,95.12",
    ]
    assert (tmp_path / "decoder_by_position.csv").read_text().splitlines() == [
        "position,fp32,a16w8",
        "0,5.0,2.0",
        "1,4.0,2.1",
    ]
    assert "a16w8,120.0,3.1,3.3" in (tmp_path / "wer_vs_latency.csv").read_text()
    assert "fp32 encoder,fp32,encoder,200.0" in (tmp_path / "time_split.csv").read_text()


PEER = "transformers"


class ScriptedWorker:
    """A worker that answers from a script of texts, recording which clips it was given."""

    def __init__(self, name: str, texts: list[str]) -> None:
        self.spec = EngineSpec(name, "ours", Path(name), 1)
        self.info = {"execution": {"provider": "scripted"}}
        self.texts, self.clips = texts, []

    def transcribe(self, clip: int, samples: np.ndarray) -> Sample:
        self.clips.append(clip)
        return Sample(clip, self.texts[clip], 1, 1.0)

    def finish(self) -> float:
        return 1.0


def test_known_transcripts_stand_in_only_where_the_timed_clips_match(monkeypatch):
    """A known engine whose timed transcripts match skips the WER pass; one that differs on a
    timed clip is run over every clip, and its own transcripts are scored."""
    from pipeline.config import BenchParams

    known = {"c0": "one", "c1": "two", "c2": "three", "c3": "four"}
    matching = ScriptedWorker(BASELINE, ["one", "two", "three", "four"])
    drifting = ScriptedWorker("transformers", ["one", "too", "three", "for"])
    variant = ScriptedWorker("a16w8", ["one", "two", "tree", "four"])
    workers = [matching, drifting, variant]
    monkeypatch.setattr(pipeline.bench.worker, "open_workers", lambda specs, stack: workers)
    clips = EvalClips([np.zeros(16)] * 4, list(known.values()), [1.0] * 4, list(known))
    params = BenchParams(warmup=0, repeats=2, latency_clips=2, busy_cores=0)

    measured = measure(
        [w.spec for w in workers], clips, params, {BASELINE: known, "transformers": known}
    )

    timed = [0, 3, 0, 3]  # equal durations: the shortest and the longest by index
    assert matching.clips == timed and measured.texts[BASELINE] == list(known.values())
    assert measured.text_source[BASELINE].startswith("the reference stage's transcripts")
    assert sorted(drifting.clips) == sorted([*timed, 1, 2])
    assert measured.texts["transformers"] == drifting.texts
    assert measured.text_source["transformers"] == "transcribed in this run"
    assert measured.texts["a16w8"] == variant.texts and sorted(variant.clips) == [0, 0, 1, 2, 3, 3]
    assert BASELINE not in measured.accuracy and len(measured.latency[BASELINE]) == 4


@pytest.mark.parametrize(
    ("parity", "ids", "known"),
    [
        (
            {"transcript_clips": 3, "transcripts_differing": []},
            ["a", "c"],
            {"fp32", "transformers"},
        ),
        ({"transcript_clips": 3, "transcripts_differing": ["b"]}, ["a"], {PEER}),
        ({"transcript_clips": 2, "transcripts_differing": []}, ["a"], {PEER}),
        (None, ["a"], {PEER}),
        ({"transcript_clips": 3, "transcripts_differing": []}, ["a", "z"], set()),
    ],
)
def test_fp32_takes_reference_transcripts_only_after_a_clean_parity_gate(
    tmp_path, parity, ids, known
):
    (tmp_path / "reference").mkdir()
    rows = [{"id": i, "text": i.upper()} for i in ("a", "b", "c")]
    (tmp_path / "reference" / "transcripts.json").write_text(json.dumps(rows))
    (tmp_path / "bundle").mkdir()
    full = {
        "cross_kv_max_abs_error": 0.0,
        "logits_max_abs_error": 0.0,
        "tensor_clips": 1,
        "tolerance": {"cross_kv_atol": 0.001, "logits_atol": 0.01},
    }
    meta = bundle_record("fp32", parity={**full, **parity}) if parity else bundle_record("fp32")
    (tmp_path / "bundle" / "bundle.json").write_text(json.dumps(meta))
    found = known_transcripts(tmp_path / "reference", tmp_path / "bundle", ids)
    assert set(found) == known
    assert all(texts["a"] == "A" for texts in found.values())
    assert known_transcripts(None, tmp_path / "bundle", ids) == {}


@pytest.mark.integration
def test_bench_on_the_real_fp32_bundle(
    tmp_path, fp32_bundle, default_data_dir, tiny_en_dir, reference_outputs
):
    """A few clips, one repeat: the figures exist and make sense; no timing threshold. The
    fp32 baseline and transformers take the reference transcripts; a variant slot holding the
    same fp32 weights is transcribed in full and must score exactly the same."""
    from pipeline.config import BenchParams
    from pipeline.sources.speech_sets import load_saved_set

    full = load_saved_set(default_data_dir, "eval")
    long_form = [i for i, seconds in enumerate(full["duration_s"]) if seconds > 30]
    full.select([0, 1, 2, long_form[0]]).save_to_disk(str(tmp_path / "data" / "eval"))
    compiled = tmp_path / "compiled"
    compiled.mkdir()
    # The same fp32 weights in a variant's slot: the WER must come out identical to fp32's.
    (compiled / "a16w8").symlink_to(fp32_bundle, target_is_directory=True)
    params = BenchParams(warmup=1, repeats=1, latency_clips=2, threads=1, peers=True)
    out = tmp_path / "metrics" / "bench.json"
    paths = BenchPaths(
        compiled, tmp_path / "data", out, tmp_path / "clips.jsonl", tmp_path / "plots",
        baseline_bundle=fp32_bundle, model_dir=tiny_en_dir,
        reference_dir=reference_outputs.directory,
        device_reports_dir=REPO / "device_reports",  # no report: no `device` key
    )  # fmt: skip
    result = run_bench(["fp32", "a16w8"], params, paths)

    metrics = json.loads(out.read_text())
    assert metrics == result.metrics.to_json()
    assert "device" not in metrics
    fp32, copy = metrics["fp32"], metrics["a16w8"]
    assert copy["wer"] == fp32["wer"] and copy["wer_long"] == fp32["wer_long"]
    assert copy["qoi"] == fp32["qoi"] == 1.0 and copy["rtfx"] == pytest.approx(
        1 / copy["rtf"], rel=1e-3
    )
    # The per-clip table: every engine's row of every clip; the WER is summed from it.
    tables = read_table(tmp_path / "clips.jsonl")
    assert set(tables) == {"fp32", "a16w8", *metrics["peers"]}
    assert all(len(rows) == 4 for rows in tables.values())
    assert table_wer(tables["a16w8"]) == pytest.approx(copy["wer"], rel=1e-3)
    assert all(row.e2e_ms for row in tables["a16w8"])  # transcribed here: timed
    assert fp32["wer"] < 0.1 and fp32["speedup_vs_fp32"] == 1.0
    for key in ("e2e_ms", "encoder_ms", "decoder_ms_per_token"):
        assert 0 < fp32[f"{key}_p50"] <= fp32[f"{key}_p90"]
    assert fp32["rtf"] > 0 and fp32["tokens_per_s"] > 0 and fp32["load_s"] > 0
    # tiny.en: ~220 MB, the graphs (~140) and the decoder's host-side embedding tables (~80).
    assert 50 < fp32["peak_rss_mb"] < 8000 and 150 < fp32["size_mb"] < 300
    assert 0 < copy["speedup_vs_fp32"] < 10
    # The exported bundle and transformers give identical transcripts: identical WER.
    assert metrics["peers"]["transformers"]["wer"] == fp32["wer"]
    run = json.loads((tmp_path / "plots" / "run.json").read_text())
    assert run["engines"]["fp32"]["execution"]["provider"] == "CPUExecutionProvider"
    for reused in ("fp32", "transformers"):
        assert run["engines"][reused]["transcripts"].startswith("the reference stage's")
    assert run["engines"]["a16w8"]["transcripts"] == "transcribed in this run"
    assert run["clips"]["eval"] == 4 and run["clips"]["long_form"] == 1
    assert run["versions"]["onnxruntime"]
    for name in ("wer_vs_latency", "decoder_by_position", "time_split"):
        assert (tmp_path / "plots" / f"{name}.png").stat().st_size > 10_000


def _with_languages(path: Path, loops: dict[str, dict[str, int]]) -> Path:
    """`path`'s bench.json with a `languages` section: looping clips per engine and language."""
    payload = json.loads(path.read_text())
    payload["languages"] = {
        engine: {
            code: {"clips": 2, "loops": n, "lid_accuracy": 1.0, "wer": 0.1}
            for code, n in {"all": sum(counts.values()), **counts}.items()
        }
        for engine, counts in loops.items()
    }
    path.write_text(json.dumps(payload))
    return path


def test_check_fails_a_variant_that_loops_more_than_fp32_in_a_language(tmp_path, baseline, capsys):
    current = metrics_file(tmp_path / "cur.json", fp32=(0.026, 1.0), a16w8=(0.030, 2.0))
    fp32_loops_too = {"fp32": {"de": 1, "fr": 0}, "a16w8": {"de": 1, "fr": 0}}
    assert run_check(baseline, _with_languages(current, fp32_loops_too)) == 0
    assert "languages' gate" in capsys.readouterr().out
    worse = {"fp32": {"de": 1, "fr": 0}, "a16w8": {"de": 1, "fr": 1}}
    assert run_check(baseline, _with_languages(current, worse)) == 1
    err = capsys.readouterr().err
    assert "a16w8: +1 looping clips in fr vs fp32 (max +0)" in err
