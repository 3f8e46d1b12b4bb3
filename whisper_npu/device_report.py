"""`whisper-npu device-report` and `compare`: what the NPU did, measured on the laptop that has
it, and its partition held against the compile forecast.

On a Ryzen AI laptop, `device-report --artifact RELEASE` opens the release on the NPU (or says
in one line why it cannot), times the sessions' creation (the first compile: AMD says ~15 min for
Whisper), keeps the EP's operator assignment reports, transcribes the release's eval clips (or
`--data`) on the NPU and, clip by clip, on the same laptop's CPU (same artifact, same run: the
ratio is the figure), and writes one typed record. Sent back and committed under
`device_reports/`, it shows in the bench's tables and plots as measured on device, apart from
every CPU figure. `compare` sets a report's partition against the release's forecast anywhere
(no EP needed): NPU subgraphs and op share per graph; exit 1 when they disagree.
"""

from __future__ import annotations

import csv
import io
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Field

from whisper_npu.audio import load_audio
from whisper_npu.bundle import Artifact
from whisper_npu.compiled import EpReport, Forecast, disagreements
from whisper_npu.errors import UserError
from whisper_npu.execution import Device, Execution, Host, npu_obstacle
from whisper_npu.figures import DeviceFigures, Figure
from whisper_npu.fsutil import read_text, sha256_file, write_json
from whisper_npu.layout import CARD_FILE, EVAL_DIR, EVAL_METADATA_FILE
from whisper_npu.record import Record, Sha256
from whisper_npu.timing import Sample, TimingRunner, elapsed_ms, latency_stats
from whisper_npu.transcriber import Transcriber
from whisper_npu.variants import Variant
from whisper_npu.wer import clip_edits, total_edits
from whisper_npu.whisper_io import GRAPHS, SAMPLE_RATE

REPORTS_DIR = "device_reports"  # where a report sent back is committed (the bench reads it)
MAX_CLIPS = 200  # an eval set for a laptop, not a corpus


class DeviceMachine(Record):
    chip: str | None
    pci: str | None
    ryzen_ai: str | None
    ryzen_ai_how: str
    onnxruntime: str
    system: str
    processor: str
    python: str


class ClipTexts(Record):
    id: str
    reference: str
    npu: str
    cpu: str


class DeviceReport(Record):
    """What `device-report` writes: one release measured on one laptop."""

    format: Literal[1]
    artifact: str  # the release's registry name (its card), else the directory's name
    variant: Variant
    bundle_sha256: Sha256  # the bundle.json it ran, which `compare` matches
    card_sha256: Sha256 | None  # the release's card.json (None: a compiled directory)
    created: str  # UTC, ISO 8601
    machine: DeviceMachine
    execution: Execution
    session_s: Figure  # creating both sessions: the compile, when `compiled` is true
    compiled: bool  # the sessions compiled (no EP cache from an earlier run or the release)
    ep_reports: dict[str, EpReport | None]
    clips: int
    audio_s: Figure
    npu: DeviceFigures
    cpu: DeviceFigures
    speedup_vs_cpu: Annotated[float, Field(gt=0)]  # median of per-clip CPU ms / NPU ms
    texts: list[ClipTexts]


@dataclass(frozen=True)
class EvalClip:
    id: str
    samples: np.ndarray
    reference: str


def eval_clips(directory: Path) -> list[EvalClip]:
    """An audiofolder (metadata.csv with file_name and text, audio files beside it): the eval
    set a release ships under eval/, or the user's own."""
    metadata = directory / EVAL_METADATA_FILE
    if not metadata.is_file():
        raise UserError(f"{directory}: no {EVAL_METADATA_FILE} (file_name,text) to evaluate on")
    rows = list(csv.DictReader(io.StringIO(read_text(metadata))))
    if not rows or not {"file_name", "text"} <= set(rows[0]):
        raise UserError(f"{metadata}: expected the columns file_name and text")
    if len(rows) > MAX_CLIPS:
        raise UserError(f"{metadata}: {len(rows)} clips, more than the {MAX_CLIPS} a report takes")
    clips = []
    for row in rows:
        name = Path(row["file_name"])
        if name.is_absolute() or ".." in name.parts:
            raise UserError(f"{metadata}: file_name {row['file_name']!r} is outside {directory}")
        clips.append(EvalClip(name.as_posix(), load_audio(directory / name), row["text"]))
    return clips


def _machine(machine: Host) -> DeviceMachine:
    return DeviceMachine(
        chip=machine.npu.chip,
        pci=machine.npu.pci,
        ryzen_ai=machine.ryzen_ai.release,
        ryzen_ai_how=machine.ryzen_ai.how,
        onnxruntime=machine.onnxruntime.describe(),
        system=platform.platform(),
        processor=platform.processor() or platform.machine(),
        python=sys.version.split()[0],
    )


def _timed(transcriber: Transcriber, clip: int, samples: np.ndarray) -> Sample:
    timer = transcriber.runner
    assert isinstance(timer, TimingRunner)
    start = time.perf_counter()
    result = transcriber.transcribe(samples)
    e2e = elapsed_ms(start)
    encoder, decoder = timer.take()
    eot = transcriber.bundle.record.decoding.eot
    return Sample(clip, result.text, sum(t < eot for t in result.tokens), e2e, encoder, decoder)


def _figures(provider: str, runs: list[Sample], clips: list[EvalClip]) -> DeviceFigures:
    durations = [clip.samples.size / SAMPLE_RATE for clip in clips]
    stats = latency_stats(runs, durations)
    edits = total_edits([clip_edits(clips[s.clip].reference, s.text) for s in runs])
    return DeviceFigures(
        provider=provider,
        wer=edits.wer,
        e2e_ms_p50=stats["e2e_ms_p50"],
        e2e_ms_p90=stats["e2e_ms_p90"],
        encoder_ms_p50=stats.get("encoder_ms_p50"),
        decoder_ms_per_token_p50=stats.get("decoder_ms_per_token_p50"),
        rtfx=stats["rtfx"],
        tokens_per_s=stats["tokens_per_s"],
    )


def _ep_reports(transcriber: Transcriber) -> dict[str, EpReport | None]:
    """The partition reports the EP wrote while the sessions were created."""
    from whisper_npu.fsutil import read_json_object
    from whisper_npu.vitisai import parse_ep_report

    assert transcriber.npu is not None
    files = transcriber.npu.report_files()
    return {
        name: EpReport.model_validate(parse_ep_report(read_json_object(files[name])))
        if name in files and files[name].is_file()
        else None
        for name in GRAPHS
    }


def measure(path: Path, data: Path | None = None, machine: Host | None = None) -> DeviceReport:
    """The report for the artifact at `path` on this laptop's NPU (a UserError saying why not
    where it cannot run there)."""
    machine = machine or Host()
    artifact = Artifact.open(path)
    if obstacle := npu_obstacle(artifact, machine):
        raise UserError(f"device-report measures the NPU: {obstacle}")
    clips = eval_clips(data or path / EVAL_DIR)
    start = time.perf_counter()
    npu = Transcriber.from_artifact(path, device=Device.NPU, machine=machine)
    session_s = elapsed_ms(start) / 1000
    cpu = Transcriber.from_artifact(path, device=Device.CPU)
    for transcriber in (npu, cpu):
        transcriber.runner = TimingRunner(transcriber.runner)
        transcriber.transcribe(clips[0].samples)  # warm-up, untimed
        transcriber.runner.take()
    runs: dict[str, list[Sample]] = {"npu": [], "cpu": []}
    for index, clip in enumerate(clips):  # interleaved: both see the same machine state
        runs["npu"].append(_timed(npu, index, clip.samples))
        runs["cpu"].append(_timed(cpu, index, clip.samples))
    card = artifact.compiled.parent / CARD_FILE if artifact.compiled else None
    return DeviceReport(
        format=1,
        artifact=_name(path, card),
        variant=artifact.bundle.record.variant,
        bundle_sha256=artifact.bundle.sha256(),
        card_sha256=sha256_file(card) if card and card.is_file() else None,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        machine=_machine(machine),
        execution=npu.execution,
        session_s=session_s,
        compiled=npu.npu is not None and not npu.npu.cached,
        ep_reports=_ep_reports(npu),
        clips=len(clips),
        audio_s=sum(clip.samples.size for clip in clips) / SAMPLE_RATE,
        npu=_figures(npu.execution.provider, runs["npu"], clips),
        cpu=_figures(cpu.execution.provider, runs["cpu"], clips),
        speedup_vs_cpu=statistics.median(
            c.e2e_ms / n.e2e_ms for n, c in zip(runs["npu"], runs["cpu"], strict=True)
        ),
        texts=[
            ClipTexts(id=clip.id, reference=clip.reference, npu=n.text, cpu=c.text)
            for clip, n, c in zip(clips, runs["npu"], runs["cpu"], strict=True)
        ],
    )


def _name(path: Path, card: Path | None) -> str:
    if card and card.is_file():
        from whisper_npu.card import Card

        return Card.read(card).artifact
    return Path(path).resolve().name


def write_report(report: DeviceReport, out: Path) -> None:
    write_json(out, report.to_json())


@dataclass(frozen=True)
class PartitionRow:
    graph: str
    forecast_subgraphs: int
    forecast_coverage: float
    device_subgraphs: int | None  # None: the EP's report does not say
    device_coverage: float | None  # None: no report for the graph


def partition_rows(forecast: Forecast, reports: dict[str, EpReport | None]) -> list[PartitionRow]:
    rows = []
    for graph in GRAPHS:
        placed, found = forecast.graph(graph), reports.get(graph)
        rows.append(
            PartitionRow(
                graph,
                placed.npu_subgraphs,
                placed.coverage,
                found.npu_subgraphs if found else None,
                found.coverage if found else None,
            )
        )
    return rows


def compare(report: DeviceReport, path: Path) -> tuple[list[PartitionRow], list[str]]:
    """The device's partition beside the forecast of the artifact it measured, and where they
    disagree (one line each)."""
    artifact = Artifact.open(path)
    if artifact.bundle.sha256() != report.bundle_sha256:
        raise UserError(
            f"the report measured another bundle ({report.bundle_sha256[:12]}…) than "
            f"{path}'s ({artifact.bundle.sha256()[:12]}…)"
        )
    forecast = artifact.record.report.forecast if artifact.record else None
    if forecast is None:
        raise UserError(f"{path}: no partition forecast to compare with (a CPU-only variant?)")
    rows = partition_rows(forecast, report.ep_reports)
    return rows, disagreements(forecast, {g: report.ep_reports.get(g) for g in GRAPHS})


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render_comparison(rows: list[PartitionRow], found: list[str]) -> str:
    lines = ["graph    forecast: subgraphs, NPU ops   device: subgraphs, NPU ops"]
    for row in rows:
        device_subgraphs = "-" if row.device_subgraphs is None else str(row.device_subgraphs)
        lines.append(
            f"{row.graph:<8} {row.forecast_subgraphs:>19}, {_share(row.forecast_coverage):>7}"
            f"   {device_subgraphs:>17}, {_share(row.device_coverage):>7}"
        )
    lines += [f"disagrees: {line}" for line in found] or ["the device agrees with the forecast"]
    return "\n".join(lines)


def summary(report: DeviceReport) -> str:
    """What a person reads after a run."""
    npu, cpu = report.npu, report.cpu
    return "\n".join(
        [
            f"{report.artifact} on {report.machine.chip} (Ryzen AI {report.machine.ryzen_ai}, "
            f"{report.machine.onnxruntime}); sessions {report.session_s:.1f} s"
            + (" (compiled)" if report.compiled else " (from the EP cache)"),
            f"{report.clips} clips, {report.audio_s:.0f} s of audio",
            f"NPU: WER {npu.wer:.2%}, e2e {npu.e2e_ms_p50:.0f} ms p50, RTFx {npu.rtfx:.1f}",
            f"CPU: WER {cpu.wer:.2%}, e2e {cpu.e2e_ms_p50:.0f} ms p50, RTFx {cpu.rtfx:.1f}",
            f"NPU vs this laptop's CPU: {report.speedup_vs_cpu:.2f}x (median per clip)",
        ]
    )
