"""The `release` stage: one self-contained, self-describing deployable per variant.

Teams share releases through DVC (`dvc pull`, `dvc artifacts get`) and deploy them without
rebuilding, so a release must carry everything a deployment needs and say where every byte
came from. Layout:

    <release>/            the bundle's files (graphs, tokenizer, bundle.json, QUANTIZATION.md)
    <release>/npu/        the compile stage's files (its record, provider_options.json, ...)
    <release>/card.json   the model card for tools: provenance, settings, metrics, sha256 of
                          every other file (what `whisper-npu verify` re-hashes)
    <release>/MODEL_CARD.md  the same for people

A section whose source is missing (no bench metrics yet, no partition forecast) is left null
and the card says so in `notes`; nothing is filled in by guess.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pipeline.bench.metrics import BenchMetrics, BenchRow
from pipeline.errors import UserError
from pipeline.fsutil import (
    artifact_files,
    atomic_dir,
    check_output_dir,
    excerpt,
    read_json_object,
    sha256_file,
    sha256_tree,
    write_json,
)
from pipeline.layout import BUNDLE_FILE, CARD_FILE, COMPILE_FILE, MODEL_CARD_FILE, NPU_DIR
from pipeline.release.card import Card, Sources, render_model_card
from pipeline.release.verify import compare
from pipeline.runtime.bundle import Bundle
from pipeline.runtime.whisper_io import GRAPHS
from pipeline.variants import VARIANTS

FORECAST_KEYS = ("coverage", "npu_subgraphs", "cpu_islands", "outside_table")


def model_slug(source: str) -> str:
    """`builtin:tiny.en` → `tiny-en`, `openai/whisper-base.en` → `base-en`: the model part of
    an artifact name, which DVC's registry restricts to letters, digits and dashes."""
    tail = re.split(r"[:/\\]", source.rstrip("/\\"))[-1].lower()
    tail = re.sub(r"^(faster-)?(distil-)?whisper-", "", tail)
    return re.sub(r"[^a-z0-9]+", "-", tail).strip("-") or "model"


def artifact_name(bundle_meta: dict[str, Any]) -> str:
    """The name the release has in dvc.yaml's `artifacts:` and in its git tags."""
    source = str(bundle_meta.get("model", {}).get("source", "model"))
    return f"whisper-{model_slug(source)}-{bundle_meta['variant']}"


def _compiled(compiled_dir: Path, bundle: Bundle) -> dict[str, Any]:
    """The compile record, checked to belong to this very bundle (not a stale compile)."""
    path = Path(compiled_dir) / COMPILE_FILE
    if not path.is_file():
        raise UserError(f"{compiled_dir}: no {COMPILE_FILE} (run `whisper-npu compile` first)")
    compiled = read_json_object(path)
    variant = bundle.meta["variant"]
    if compiled.get("variant", variant) != variant:
        raise UserError(
            f"{path}: compiled variant {excerpt(compiled['variant'])}, bundle is {variant!r}"
        )
    expected = sha256_file(bundle.root / BUNDLE_FILE)
    if compiled.get("bundle_sha256", expected) != expected:
        raise UserError(
            f"{path}: compiled from another {variant} bundle (bundle_sha256 differs); "
            "compile this bundle again"
        )
    return compiled


def _bench(metrics_path: Path, variant: str) -> tuple[BenchRow | None, str | None]:
    """This variant's row of bench.json, or None and the reason for the card's notes."""
    path = Path(metrics_path)
    if not os.path.lexists(path):
        return None, f"no bench metrics yet ({path.name} does not exist; run the bench stage)"
    row = BenchMetrics.load(path).variants.get(variant)
    if row is None:
        return None, f"no bench metrics yet for {variant} ({path.name} has no entry for it)"
    return row, None


def _outside(entries: list[Any] | None) -> list[Any]:
    """Op types outside the NPU table with their counts; the node names stay in npu/."""
    return [
        {"op_type": e.get("op_type"), "count": e.get("count")} if isinstance(e, dict) else e
        for e in entries or []
    ]


def _forecast(compiled: dict[str, Any]) -> dict[str, Any] | None:
    forecast = compiled.get("forecast")
    if not forecast:
        return None
    summary: dict[str, Any] = {}
    for graph in GRAPHS:
        found = forecast.get(graph) or {}
        summary[graph] = {key: found.get(key) for key in FORECAST_KEYS}
        summary[graph]["outside_table"] = _outside(found.get("outside_table"))
    summary["dispatches_per_window"] = forecast.get("dispatches_per_window")
    summary["clean"] = forecast.get("clean")
    return summary


def _compile_section(compiled: dict[str, Any]) -> dict[str, Any]:
    return {
        "target": compiled.get("target"),
        "ryzen_ai_version": compiled.get("ryzen_ai_version"),
        "ops_table": compiled.get("ops_table"),
        "ep_available": compiled.get("ep_available"),
        "ep_partition_report": compiled.get("report") is not None,
        "forecast": _forecast(compiled),
    }


def _calibration_identity(manifest: dict[str, Any]) -> dict[str, Any]:
    """The calibration set as the quantize stage recorded it: which clips, recorded through
    which fp32 bundle; the sha256 of its canonical JSON names the set in one string."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"))
    return {
        "manifest_sha256": hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        "fp32_bundle_sha256": manifest.get("bundle_sha256"),
        "clips": len(manifest.get("calibration_clips", [])),
        "holdout_clips": len(manifest.get("holdout_clips", [])),
        "decoder_steps": manifest.get("decoder_steps"),
    }


def _quantization_section(meta: dict[str, Any]) -> dict[str, Any] | None:
    q = meta.get("quantization")
    if q is None:
        return None
    sensitivity = q.get("sensitivity_db", {})
    attempts = q.get("attempts", [])
    return {
        **{
            key: q.get(key)
            for key in (
                "backend",
                "backend_version",
                "grid",
                "decoder_variant",
                "op_types",
                "max_wer_delta",
                "fp32_holdout_wer",
                "holdout_wer",
                "holdout_words",
                "holdout_wer_se",
            )
        },
        # Bundles from before the budget could be missed always met it.
        "budget_met": q.get("budget_met", True),
        "excluded": {
            graph: [
                {"node": node, "snr_db": sensitivity.get(graph, {}).get(node)}
                for node in q.get("excluded", {}).get(graph, [])
            ]
            for graph in GRAPHS
        },
        "attempts": attempts,
        "calibration": _calibration_identity(q.get("calibration", {})),
    }


def _versions(meta: dict[str, Any], compiled: dict[str, Any]) -> dict[str, Any]:
    found: dict[str, Any] = dict(meta.get("versions", {}))
    if meta.get("quantization"):
        found[meta["quantization"]["backend"]] = meta["quantization"].get("backend_version")
    found["ryzen_ai"] = compiled.get("ryzen_ai_version")
    try:
        found["whisper-npu"] = version("whisper-npu")
    except PackageNotFoundError:
        found["whisper-npu"] = None
    return found


def _notes(meta: dict[str, Any], compiled: dict[str, Any], bench_note: str | None) -> list[str]:
    notes = [bench_note] if bench_note else []
    q = meta.get("quantization")
    if q and not q.get("budget_met", True):
        notes.append(
            f"WER budget not met: held-back WER {q['holdout_wer']:.2%} against fp32 "
            f"{q['fp32_holdout_wer']:.2%}, more than +{q['max_wer_delta']} points even with "
            f"{len(q['excluded']['encoder'])} layers per graph kept float"
        )
    if compiled.get("ep_available") is False:
        notes.append(
            "compiled without the VitisAI execution provider: npu/ holds the provider options "
            "and a partition forecast, not an NPU compile; the runtime uses the CPU until the "
            "EP is installed"
        )
    if not compiled.get("forecast"):
        notes.append(f"no partition forecast in {COMPILE_FILE}")
    return notes


def build_card(
    bundle: Bundle,
    compiled: dict[str, Any],
    metrics: BenchRow | None,
    notes: list[str],
    files: dict[str, str],
) -> Card:
    meta = bundle.meta
    return Card(
        format=1,
        artifact=artifact_name(meta),
        variant=meta["variant"],
        variant_description=VARIANTS[meta["variant"]].description,
        target=compiled.get("target"),
        model=meta.get("model"),
        export={
            "opset": meta.get("opset"),
            "dims": meta.get("dims"),
            "custom_ops": meta.get("custom_ops"),
            "parity": meta.get("parity"),
        },
        quantization=_quantization_section(meta),
        compile=_compile_section(compiled),
        metrics=metrics,
        versions=_versions(meta, compiled),
        sources=Sources(bundle_sha256=sha256_file(bundle.root / BUNDLE_FILE)),
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
    compile_json = npu_dir / COMPILE_FILE
    write_json(compile_json, {**read_json_object(compile_json), "bundle": ".."})


def build_release(
    bundle_dir: Path, compiled_dir: Path, metrics_path: Path, out_dir: Path
) -> dict[str, Any]:
    """Assemble the release in a scratch dir and swap it into `out_dir` only when complete."""
    check_output_dir(Path(out_dir), Path(bundle_dir), Path(compiled_dir))
    for source in (Path(bundle_dir), Path(compiled_dir)):
        if source.is_dir():  # a link or special file is refused before any record is read
            artifact_files(source)
    bundle = Bundle.load(Path(bundle_dir))
    variant = bundle.meta.get("variant")
    if not isinstance(variant, str) or variant not in VARIANTS:
        raise UserError(f"{bundle.root}: unknown bundle variant {excerpt(variant)}")
    compiled = _compiled(Path(compiled_dir), bundle)
    metrics, bench_note = _bench(Path(metrics_path), variant)
    with atomic_dir(Path(out_dir)) as scratch:
        top_level = [name for name in artifact_files(bundle.root) if "/" not in name]
        _copy_files(bundle.root, top_level, scratch)
        _copy_compiled(Path(compiled_dir), scratch / NPU_DIR)
        files = sha256_tree(scratch)
        stale = compare(bundle.meta.get("files", {}), files, extras=False)
        if stale:
            raise UserError(
                f"{bundle_dir}: files differ from its {BUNDLE_FILE}: {stale.describe()}"
            )
        try:
            notes = _notes(bundle.meta, compiled, bench_note)
            card = build_card(bundle, compiled, metrics, notes, files)
            model_card = render_model_card(card)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:  # ValidationError too
            raise UserError(
                f"{bundle.root / BUNDLE_FILE} or {Path(compiled_dir) / COMPILE_FILE}: "
                f"a field has an unexpected type or is missing ({type(exc).__name__}: {exc})"[:300]
            ) from None
        card.save(scratch / CARD_FILE)
        (scratch / MODEL_CARD_FILE).write_text(model_card, encoding="utf-8")
    return {"artifact": card.artifact, "files": len(files), "notes": card.notes}
