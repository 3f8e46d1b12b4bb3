"""The typed records of bench.json, run.json and card.json: real files (copied from a run into
tests/data/) load and save to the same bytes, MODEL_CARD.md re-renders from card.json to the same
text, and a malformed record is one line naming the file and the field."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipeline.bench.metrics import MACHINE_KEY, PEERS_KEY, BenchMetrics, Machine, RunInfo
from pipeline.release.model_card import render_model_card
from tests.test_bench import PARAMS, run_check
from whisper_npu.card import Card
from whisper_npu.errors import UserError
from whisper_npu.figures import PEERS, BenchRow
from whisper_npu.record import Strict

DATA = Path(__file__).resolve().parent / "data"
LAYOUT_KEYS = (PEERS_KEY, MACHINE_KEY)  # bench.json's keys that are not variants
CARDS = sorted(DATA.glob("release-*/card.json"))
ROUND_TRIPS = [
    (BenchMetrics, DATA / "bench.json"),
    (RunInfo, DATA / "run.json"),
    *((Card, card) for card in CARDS),
]


@pytest.mark.parametrize(("record", "path"), ROUND_TRIPS, ids=lambda x: getattr(x, "name", ""))
def test_real_files_round_trip_to_the_same_bytes(record: type[Strict], path: Path, tmp_path):
    out = tmp_path / path.name
    record.read(path).write(out)
    assert out.read_bytes() == path.read_bytes()


def test_the_bench_writes_what_it_wrote_before(tmp_path):
    """The bench builds bench.json from its rows, not from a file: the same bytes come out."""
    raw = json.loads((DATA / "bench.json").read_text())
    metrics = BenchMetrics(
        variants={
            name: BenchRow.model_validate(row)
            for name, row in raw.items()
            if name not in ("peers", "machine")
        },
        peers={name: BenchRow.model_validate(row) for name, row in raw["peers"].items()},
        machine=Machine(cpu=raw["machine"]["cpu"]),
    )
    metrics.write(tmp_path / "bench.json")
    assert (tmp_path / "bench.json").read_bytes() == (DATA / "bench.json").read_bytes()
    assert list(metrics.engines())[-len(raw["peers"]) :] == list(raw["peers"])
    assert set(raw["peers"]) <= set(PEERS)


@pytest.mark.parametrize("card", CARDS, ids=lambda p: p.parent.name)
def test_model_card_renders_from_card_json_to_the_same_text(card: Path):
    expected = (card.parent / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert render_model_card(Card.read(card)) == expected


def _bench(edit):
    raw = json.loads((DATA / "bench.json").read_text())
    edit(raw)
    return raw


@pytest.mark.parametrize(
    ("edit", "field", "reason"),
    [
        (lambda r: r["a16w8"].update(wer="low"), "a16w8.wer", "valid number"),
        (lambda r: r["a16w8"].update(wer=True), "a16w8.wer", "valid number"),
        (lambda r: r["a16w8"].update(wer=math.nan), "a16w8.wer", "finite number"),
        (lambda r: r["a16w8"].update(rtf=math.inf), "a16w8.rtf", "finite number"),
        (lambda r: r["a16w8"].pop("speedup_vs_fp32"), "a16w8.speedup_vs_fp32", "Field required"),
        (lambda r: r["a16w8"].update(speedup_vs_fp32=0), "a16w8.speedup_vs_fp32", "greater than"),
        (lambda r: r["a16w8"].update(wer_typo=0.1), "a16w8.wer_typo", "unknown key"),
        (lambda r: r.update(a16w8=[0.03]), "a16w8", "valid dictionary"),
        (lambda r: r["peers"].update(whisper_cpp={}), "peers.whisper_cpp", "transformers"),
        (lambda r: r["machine"].pop("cpu"), "machine.cpu", "Field required"),
    ],
    ids=[
        "string",
        "bool",
        "nan",
        "inf",
        "missing",
        "zero-speedup",
        "unknown",
        "not-a-row",
        "unknown-peer",
        "no-cpu",
    ],
)
def test_malformed_bench_json_is_one_line_naming_file_and_field(tmp_path, edit, field, reason):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(_bench(edit)))  # json.dumps writes nan as NaN, as Python reads it
    with pytest.raises(UserError) as error:
        BenchMetrics.read(path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    assert field in message and reason in message


@pytest.mark.parametrize(
    ("record", "path", "edit", "field"),
    [
        (RunInfo, "run.json", lambda r: r["clips"].update(repeats="3"), "clips.repeats"),
        (RunInfo, "run.json", lambda r: r.pop("wall_s"), "wall_s"),
        (RunInfo, "run.json", lambda r: r["engines"]["fp32"].update(kind="x"), "engines.fp32.kind"),
        (Card, "release-a16w8/card.json", lambda r: r.pop("sources"), "sources"),
        (Card, "release-a16w8/card.json", lambda r: r["metrics"].update(wer=-1), "metrics.wer"),
        (Card, "release-a16w8/card.json", lambda r: r.update(files=["a"]), "files"),
        (Card, "release-a16w8/card.json", lambda r: r.update(format=2), "format"),
    ],
)
def test_malformed_run_and_card_are_one_line_naming_file_and_field(
    tmp_path, record: type[Strict], path: str, edit, field: str
):
    raw = json.loads((DATA / path).read_text())
    edit(raw)
    out = tmp_path / Path(path).name
    out.write_text(json.dumps(raw))
    with pytest.raises(UserError) as error:
        record.read(out)
    assert "\n" not in str(error.value) and str(error.value).startswith(f"{out}: {field}")


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_figure_cannot_switch_the_gate_off(tmp_path, capsys, value):
    """nan compares False with every threshold: a NaN WER would pass any gate; it is bad input."""
    baseline = DATA / "bench.json"
    current = tmp_path / "bench.json"
    current.write_text(json.dumps(_bench(lambda r: r["a16w8"].update(wer=value))))
    assert run_check(baseline, current) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{current}: a16w8.wer: Input should be a finite number" in err[0]


def test_check_of_the_real_bench_against_itself_passes(tmp_path, capsys):
    """The fixture predates QoI (a run's own figure, against its fp32): 1.0 stands in for it."""
    assert PARAMS.is_file()
    current = tmp_path / "bench.json"
    current.write_text(
        json.dumps(_bench(lambda r: [r[k].update(qoi=1.0) for k in r if k not in LAYOUT_KEYS]))
    )
    assert run_check(DATA / "bench.json", current) == 0
    out = capsys.readouterr().out
    assert "REGRESSED" not in out and "a16w8" in out
