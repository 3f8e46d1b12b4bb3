"""Device reports in the bench: a report `device-report` made (here on a faked laptop, the tiny
random bundle and the fake EP: a test fixture, never a figure) shows in bench.json, the table
and wer_vs_latency as measured on device, apart from the run's rows; a report of another bundle
is left out in one line; without a report bench.json is what it was; the gate never reads them.
No bench is run: the run's records are tests/data's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from pipeline.bench.device import benched_bundles, read_device_reports
from pipeline.bench.metrics import DEVICE_KEY, BenchMetrics, BenchResult, RunInfo
from pipeline.bench.plots import write_plots
from pipeline.bench.records import EngineSpec
from pipeline.bench.report import format_table
from pipeline.config import CompileParams
from pipeline.npu.compile import compile_bundle
from tests.conftest import write_tiny_bundle
from tests.fake_ep import FakeVitisAi, machine, report_like
from tests.test_bench import metrics_file, run_check
from tests.test_device_report import write_eval_clips
from whisper_npu import device_report
from whisper_npu import transcriber as transcriber_module
from whisper_npu.bundle import Artifact
from whisper_npu.device_report import REPORTS_DIR, DeviceReport
from whisper_npu.errors import UserError

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
OTHER_BUNDLE = "0" * 64


@pytest.fixture(scope="module")
def measured(tmp_path_factory) -> tuple[Path, DeviceReport]:
    """The tiny fp32 bundle compiled, and the report a faked STX laptop makes of it: three
    clips of noise, so its WER says nothing (only the path through the bench is tested)."""
    root = tmp_path_factory.mktemp("device")
    bundle = write_tiny_bundle(root / "bundles" / "fp32", "fp32")
    compiled = root / "compiled" / "fp32"
    compile_bundle(CompileParams(), bundle, compiled, allow_split=True)
    clips = write_eval_clips(root / "eval")
    forecast = Artifact.open(compiled).record.report.forecast  # type: ignore[union-attr]
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("WHISPER_NPU_CACHE", str(root / "cache"))
        fake = FakeVitisAi(lambda graph: report_like(forecast, graph))
        patch.setattr(transcriber_module, "import_onnxruntime", lambda: fake)
        return compiled, device_report.measure(compiled, clips, machine("stx"))


@pytest.fixture
def reports(tmp_path, measured) -> Path:
    """A device_reports/ with the report of the benched bundle, one of another bundle, and
    the README a real one holds."""
    _, report = measured
    folder = tmp_path / REPORTS_DIR
    folder.mkdir()
    (folder / "README.md").write_text("not a report\n")
    device_report.write_report(report, folder / "fp32-stx.json")
    device_report.write_report(report.but(bundle_sha256=OTHER_BUNDLE), folder / "old.json")
    return folder


def benched(compiled: Path) -> dict[str, str]:
    return benched_bundles([EngineSpec("fp32", "ours", compiled, None, cpu_only=True)])


def result_with(metrics: BenchMetrics, note: str = "") -> BenchResult:
    """The committed bench run's records, with `metrics` (and positions and a split to plot)."""
    run = RunInfo.read(DATA / "run.json")
    split = {"fp32": {"encoder": 200.0, "decoder": 180.0, "other": 20.0}}
    return BenchResult(metrics, run, {"fp32": {0: 5.0, 1: 4.0}}, split, device_note=note)


def test_a_report_of_a_benched_bundle_is_shown_as_measured_on_device(measured, reports, tmp_path):
    compiled, report = measured
    found = read_device_reports(reports, benched(compiled))
    assert list(found.rows) == ["fp32@stx"]
    row = found.rows["fp32@stx"]
    assert row.report == "fp32-stx.json" and row.ryzen_ai == "1.7.1" and row.chip == "stx"
    for shown, sent in ((row.npu, report.npu), (row.cpu, report.cpu)):
        assert shown.provider == sent.provider
        assert shown.e2e_ms_p50 == pytest.approx(sent.e2e_ms_p50, rel=1e-3)  # 4 digits
    assert row.speedup_vs_cpu == pytest.approx(report.speedup_vs_cpu, rel=1e-3)
    note = found.note()
    assert "\n" not in note and note.startswith("device reports not shown: old.json (")
    assert f"bundle {OTHER_BUNDLE[:12]}…" in note

    committed = BenchMetrics.read(DATA / "bench.json")
    metrics = committed.but(device=found.rows)
    metrics.write(tmp_path / "bench.json")
    written = json.loads((tmp_path / "bench.json").read_text())
    assert list(written[DEVICE_KEY]) == ["fp32@stx"]
    assert written[DEVICE_KEY]["fp32@stx"]["npu"]["provider"] == "VitisAIExecutionProvider"
    again = BenchMetrics.read(tmp_path / "bench.json")
    assert again == metrics and again.variants == committed.variants  # never a variant's row

    result = result_with(metrics, note)
    table = format_table(result).splitlines()
    start = table.index(next(line for line in table if line.startswith("measured on device")))
    npu, cpu = table[start + 2], table[start + 3]
    assert npu.startswith("fp32@stx") and "VitisAI" in npu
    assert npu.endswith(f"{row.speedup_vs_cpu:.2f}x")
    assert cpu.startswith("fp32@stx") and "CPU" in cpu and cpu.endswith("-")
    assert table[start + 4].startswith("fp32@stx: fp32-stx.json") and table[-1] == note
    assert not any(line.startswith("fp32@stx") for line in table[:start])

    plots = tmp_path / "plots"
    plots.mkdir()
    write_plots(plots, result)
    assert (plots / "wer_vs_latency.png").read_bytes()[:4] == b"\x89PNG"
    rows = (plots / "wer_vs_latency.csv").read_text().splitlines()
    assert rows[0] == "engine,e2e_ms_p50,wer_pct,speedup_vs_fp32,measured"
    assert all(line.endswith(",bench") for line in rows[1:-1])
    assert rows[-1] == (
        f"fp32@stx,{round(row.npu.e2e_ms_p50, 1)},{round(100 * row.npu.wer, 3)},,device"
    )


def test_without_a_report_bench_json_is_the_bytes_it_was(measured, tmp_path):
    """A device_reports/ holding only its README: no `device` key, the committed bytes."""
    compiled, _ = measured
    (tmp_path / "README.md").write_text("no report yet\n")
    found = read_device_reports(tmp_path, benched(compiled))
    assert found.rows == {} and found.note() == ""
    committed = BenchMetrics.read(DATA / "bench.json")
    committed.but(device=found.rows or None).write(tmp_path / "bench.json")
    assert (tmp_path / "bench.json").read_bytes() == (DATA / "bench.json").read_bytes()
    assert "measured on device" not in format_table(result_with(committed))


def test_of_two_reports_of_one_variant_on_one_chip_the_later_is_shown(measured, tmp_path):
    compiled, report = measured
    device_report.write_report(report.but(created="2030-01-01T00:00:00+00:00"), tmp_path / "a.json")
    device_report.write_report(report.but(created="2020-01-01T00:00:00+00:00"), tmp_path / "b.json")
    found = read_device_reports(tmp_path, benched(compiled))
    assert found.rows["fp32@stx"].report == "a.json"
    assert found.skipped == {"b.json": "a.json is a later report of fp32@stx"}


@pytest.mark.parametrize(
    ("content", "reason"),
    [("{", "not valid JSON"), ('{"format": 1}', "artifact: Field required")],
    ids=["not-json", "not-a-report"],
)
def test_a_malformed_report_is_one_line_naming_it(measured, tmp_path, content, reason):
    compiled, _ = measured
    (tmp_path / "bad.json").write_text(content)
    with pytest.raises(UserError) as error:
        read_device_reports(tmp_path, benched(compiled))
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "bad.json") in message and reason in message


def test_the_gate_never_reads_device_figures(measured, reports, tmp_path):
    """A current run whose device figures are far worse than anything: only variants gate."""
    compiled, report = measured
    (row,) = read_device_reports(reports, benched(compiled)).rows.values()
    worse = row.but(npu=report.npu.but(wer=0.99, e2e_ms_p50=1e6, e2e_ms_p90=1e6))
    baseline = metrics_file(tmp_path / "base.json", fp32=(0.026, 1.0), a16w8=(0.030, 2.0))
    current = tmp_path / "cur.json"
    raw = json.loads(baseline.read_text())
    current.write_text(json.dumps({**raw, DEVICE_KEY: {"a16w8@stx": worse.to_json()}}))
    assert BenchMetrics.read(current).device == {"a16w8@stx": worse}
    assert run_check(baseline, current) == 0


def test_the_repo_commits_the_reports_directory_and_no_report():
    """The bench stage reads REPORTS_DIR; nothing measured here may pose as a device's figures."""
    folder = REPO / REPORTS_DIR
    assert (folder / "README.md").is_file()
    assert sorted(folder.glob("*.json")) == []
    bench = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["bench"]
    assert f"--device-reports {REPORTS_DIR}" in bench["cmd"] and REPORTS_DIR in bench["deps"]
