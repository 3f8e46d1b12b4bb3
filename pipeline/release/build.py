"""The `release` stage: one self-contained, self-describing deployable per variant.

Teams share releases through DVC (`dvc pull`, `dvc artifacts get`) and deploy them without
rebuilding, so a release must carry everything a deployment needs and say where every byte
came from. Layout:

    <release>/            the bundle's files (graphs, tokenizer, bundle.json, QUANTIZATION.md)
    <release>/npu/        the compile stage's files (its record, provider_options.json, ...);
                          absent for a CPU-only variant, whose card says "CPU only"
    <release>/card.json   the model card for tools: provenance, settings, metrics, sha256 of
                          every other file (what `whisper-npu verify` re-hashes)
    <release>/MODEL_CARD.md  the same for people

A section whose source is missing (no bench metrics yet, no partition forecast) is left null
and the card says so in `notes`; nothing is filled in by guess.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import soundfile as sf

from pipeline.bench.metrics import BenchMetrics
from pipeline.provenance import package_version
from pipeline.release.model_card import render_model_card
from whisper_npu.bundle import Artifact, BundleRecord, CalibrationManifest, Quantization
from whisper_npu.card import Card, Sources
from whisper_npu.compiled import CompileRecord, CompileReport, Forecast
from whisper_npu.errors import UserError
from whisper_npu.execution import FIRST_COMPILE
from whisper_npu.figures import BenchRow
from whisper_npu.fsutil import artifact_files, atomic_dir, sha256_tree
from whisper_npu.layout import (
    BUNDLE_FILE,
    CACHE_SUBDIR,
    CARD_FILE,
    COMPILE_FILE,
    EVAL_DIR,
    EVAL_METADATA_FILE,
    MODEL_CARD_FILE,
    NPU_DIR,
    model_slug,
)
from whisper_npu.variants import VARIANTS
from whisper_npu.verify import compare
from whisper_npu.vitisai import releases_of
from whisper_npu.whisper_io import CHUNK_SECONDS, GRAPHS, SAMPLE_RATE

FORECAST_KEYS = ("coverage", "npu_subgraphs", "cpu_islands", "unverified")


def artifact_name(record: BundleRecord) -> str:
    """The name the release has in dvc.yaml's `artifacts:` and in its git tags."""
    return f"whisper-{model_slug(str(record.model.get('source', 'model')))}-{record.variant}"


def _compiled(compiled_dir: Path, bundle_dir: Path) -> Artifact:
    """The compiled directory, opened as the runtime opens it (its bundle of its variant, with
    the very bundle.json it was compiled from), and checked to be `bundle_dir`'s."""
    if not (compiled_dir / COMPILE_FILE).is_file():
        raise UserError(f"{compiled_dir}: no {COMPILE_FILE} (run `whisper-npu compile` first)")
    artifact = Artifact.open(compiled_dir)
    if artifact.bundle.root != bundle_dir.resolve():
        raise UserError(
            f"{compiled_dir / COMPILE_FILE}: compiled from {artifact.bundle.root}, "
            f"not {bundle_dir}; compile this bundle again"
        )
    return artifact


def _bench(metrics_path: Path, variant: str) -> tuple[BenchRow | None, str | None]:
    """This variant's row of bench.json, or None and the reason for the card's notes."""
    path = Path(metrics_path)
    if not os.path.lexists(path):
        return None, f"no bench metrics yet ({path.name} does not exist; run the bench stage)"
    row = BenchMetrics.read(path).variants.get(variant)
    if row is None:
        return None, f"no bench metrics yet for {variant} ({path.name} has no entry for it)"
    return row, None


def _forecast(forecast: Forecast) -> dict[str, Any]:
    """Per graph the placement figures; op types the forecast leaves on the CPU with their
    counts and grounds (the node names stay in npu/)."""
    summary: dict[str, Any] = {"flow": forecast.flow.value}
    for graph in GRAPHS:
        found = forecast.graph(graph)
        summary[graph] = {key: getattr(found, key) for key in FORECAST_KEYS}
        summary[graph]["cpu_ops"] = [
            {"op_type": row.op_type, "count": row.count, "reason": row.reason}
            for row in found.cpu_ops
        ]
    summary["dispatches_per_window"] = forecast.dispatches_per_window
    summary["macs_per_window"] = forecast.window.macs
    summary["table_dispatches_per_window"] = forecast.table.dispatches_per_window
    summary["clean"] = forecast.clean
    return summary


def _compile_section(report: CompileReport, ep_cache: bool) -> dict[str, Any]:
    if report.cpu_only or report.forecast is None:
        return {"cpu_only": report.cpu_only or "no partition forecast"}
    return {
        "target": report.target,
        "ryzen_ai_version": report.ryzen_ai_version,
        # What the runtime holds the installed release against (whisper_npu.execution).
        "ryzen_ai_releases": list(releases_of(report)),
        "ep_cache": ep_cache,
        "ops_table": report.ops_table.model_dump(),
        "ep_available": report.ep_available,
        "ep_partition_report": report.report is not None,
        "forecast": _forecast(report.forecast),
    }


def _calibration_identity(manifest: CalibrationManifest) -> dict[str, Any]:
    """The calibration set as the quantize stage recorded it: which clips, recorded through
    which fp32 bundle; the sha256 of its canonical JSON names the set in one string."""
    canonical = json.dumps(
        manifest.model_dump(exclude_unset=True), sort_keys=True, separators=(",", ":")
    )
    return {
        "manifest_sha256": hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        "fp32_bundle_sha256": manifest.bundle_sha256,
        "clips": len(manifest.calibration_clips),
        "holdout_clips": len(manifest.holdout_clips),
        "decoder_steps": manifest.decoder_steps,
    }


CARD_QUANTIZATION_KEYS = {
    "backend",
    "backend_version",
    "grid",
    "dynamic",
    "decoder_variant",
    "op_types",
    "form",
    "max_wer_delta",
    "fp32_holdout_wer",
    "holdout_wer",
    "holdout_words",
    "holdout_wer_se",
    "budget_met",
    "conditions",
}


def _quantization_section(q: Quantization | None) -> dict[str, Any] | None:
    if q is None:
        return None
    return {
        **q.model_dump(include=CARD_QUANTIZATION_KEYS),
        "excluded": {
            graph: [
                {"node": node, "snr_db": q.sensitivity_db.get(graph, {}).get(node)}
                for node in q.excluded.get(graph, [])
            ]
            for graph in GRAPHS
        },
        "attempts": [attempt.model_dump() for attempt in q.attempts],
        "calibration": _calibration_identity(q.calibration),
    }


def _versions(record: BundleRecord, report: CompileReport) -> dict[str, Any]:
    found: dict[str, Any] = dict(record.versions)
    if record.quantization:
        found[record.quantization.backend] = record.quantization.backend_version
    if not report.cpu_only:
        found["ryzen_ai"] = report.ryzen_ai_version
    found["whisper-npu"] = package_version("whisper-npu")
    return found


def _notes(record: BundleRecord, report: CompileReport, bench_note: str | None) -> list[str]:
    notes = [bench_note] if bench_note else []
    q = record.quantization
    if q and not q.budget_met:
        notes.append(
            f"WER budget not met: held-back WER {q.holdout_wer:.2%} against fp32 "
            f"{q.fp32_holdout_wer:.2%}, more than +{q.max_wer_delta} points even with "
            f"{len(q.excluded['encoder'])} layers per graph kept float"
        )
    if report.cpu_only:
        notes.append(report.cpu_only)
    elif not report.ep_available:
        full = ", with the full Ryzen AI install (the deployment EP compiles no BF16)"
        notes.append(
            "compiled without the VitisAI execution provider: npu/ holds the provider options "
            f"and a partition forecast, no EP cache; on a Ryzen AI laptop {FIRST_COMPILE}"
            + (full if VARIANTS[record.variant].bf16_flow else "")
            + "; elsewhere the runtime uses the CPU"
        )
    return notes


def build_card(
    artifact: Artifact,
    metrics: BenchRow | None,
    notes: list[str],
    files: dict[str, str],
) -> Card:
    record = artifact.bundle.record
    assert artifact.record is not None and artifact.compiled is not None
    report = artifact.record.report
    return Card(
        format=1,
        artifact=artifact_name(record),
        variant=record.variant,
        variant_description=VARIANTS[record.variant].description,
        target=report.target,
        model=record.model,
        export=record.model_dump(include={"opset", "dims", "custom_ops", "parity"}),
        quantization=_quantization_section(record.quantization),
        compile=_compile_section(report, (artifact.compiled / CACHE_SUBDIR).is_dir()),
        metrics=metrics,
        versions=_versions(record, report),
        sources=Sources(bundle_sha256=artifact.bundle.sha256()),
        notes=notes,
        files=files,
    )


def _copy_files(source: Path, names: list[str], target: Path) -> None:
    """Copy `names` (from artifact_files: regular files only, never a link out of `source`)."""
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, target / name)


def _copy_compiled(compiled_dir: Path, npu_dir: Path) -> None:
    """The compiled files under npu/, with the compile record's bundle path pointing at the
    release's own bundle files (`..`), so npu/ alone also opens as a compiled artifact."""
    _copy_files(compiled_dir, artifact_files(compiled_dir), npu_dir)
    record = CompileRecord.load(npu_dir)
    replace(record, report=record.report.but(bundle="..")).save(npu_dir)


@dataclass(frozen=True)
class EvalSet:
    """The first `clips` eval clips of the data stage's output, shipped for device-report."""

    data_dir: Path
    clips: int


def _write_eval_set(eval_set: EvalSet, target: Path) -> None:
    """eval/: 16-bit WAV clips of up to one window and metadata.csv (file_name,text), the
    audiofolder layout `whisper-npu device-report` reads."""
    from pipeline.sources.speech_sets import clip_samples, load_saved_set

    rows = [
        row
        for row in load_saved_set(eval_set.data_dir, "eval")
        if row["duration_s"] <= CHUNK_SECONDS
    ][: eval_set.clips]
    target.mkdir()
    lines = io.StringIO()
    table = csv.writer(lines, lineterminator="\n")
    table.writerow(["file_name", "text"])
    for n, row in enumerate(rows):
        name = f"clip{n:03d}.wav"
        sf.write(target / name, clip_samples(row), SAMPLE_RATE, subtype="PCM_16")
        table.writerow([name, row["text"]])
    (target / EVAL_METADATA_FILE).write_text(lines.getvalue(), encoding="utf-8")


def build_release(
    bundle_dir: Path,
    compiled_dir: Path,
    metrics_path: Path,
    out_dir: Path,
    eval_set: EvalSet | None = None,
) -> dict[str, Any]:
    """Assemble the release in a scratch dir and swap it into `out_dir` only when complete."""
    for source in (Path(bundle_dir), Path(compiled_dir)):
        if source.is_dir():  # a link or special file is refused before any record is read
            artifact_files(source)
    artifact = _compiled(Path(compiled_dir), Path(bundle_dir))
    bundle = artifact.bundle
    assert artifact.record is not None
    metrics, bench_note = _bench(Path(metrics_path), bundle.record.variant)
    with atomic_dir(Path(out_dir)) as scratch:
        top_level = [name for name in artifact_files(bundle.root) if "/" not in name]
        _copy_files(bundle.root, top_level, scratch)
        if not artifact.cpu_only:  # a CPU-only variant has nothing compiled: the bundle alone
            _copy_compiled(Path(compiled_dir), scratch / NPU_DIR)
        if eval_set:
            _write_eval_set(eval_set, scratch / EVAL_DIR)
        files = sha256_tree(scratch)
        stale = compare(bundle.record.files or {}, files, extras=False)
        if stale:
            raise UserError(
                f"{bundle_dir}: files differ from its {BUNDLE_FILE}: {stale.describe()}"
            )
        try:
            notes = _notes(bundle.record, artifact.record.report, bench_note)
            card = build_card(artifact, metrics, notes, files)
            model_card = render_model_card(card)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # ValidationError too
            raise UserError(
                f"{bundle.root / BUNDLE_FILE} or {Path(compiled_dir) / COMPILE_FILE}: "
                f"a field has an unexpected type or is missing ({type(exc).__name__}: {exc})"[:300]
            ) from None
        card.write(scratch / CARD_FILE)
        (scratch / MODEL_CARD_FILE).write_text(model_card, encoding="utf-8")
    return {"artifact": card.artifact, "files": len(files), "notes": card.notes}
