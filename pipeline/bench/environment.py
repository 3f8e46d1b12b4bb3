"""What a bench ran on (CPU, versions, engines, clips): run.json, so two runs can be compared
only when they are comparable."""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipeline.bench.metrics import ConditionsRun
from pipeline.bench.records import ConditionClips, EngineSpec, EvalClips, Measurement
from pipeline.provenance import package_versions
from whisper_npu.host import cpu_model
from whisper_npu.variants import BASELINE

if TYPE_CHECKING:
    from pipeline.config import BenchParams

VERSIONED = (
    "onnxruntime",
    "amd-quark",
    "transformers",
    "numpy",
    "torch",
    "faster-whisper",
    "ctranslate2",
)


def _versions() -> dict[str, str | None]:
    return {"python": platform.python_version(), **package_versions(VERSIONED)}


def run_info(
    specs: Sequence[EngineSpec],
    measured: Measurement,
    skipped: dict[str, str],
    clips: EvalClips,
    params: BenchParams,
) -> dict[str, Any]:
    """run.json's fields (pipeline.bench.metrics.RunInfo) but the wall time, which only the
    end of the bench knows, and the conditions' pass (`conditions_run`)."""
    from whisper_npu.whisper_io import CHUNK_SECONDS

    latency_ids = sorted({clips.ids[s.clip] for s in measured.latency[BASELINE]})
    return {
        "engines": {
            spec.name: {
                "kind": spec.kind,
                "path": spec.path.as_posix(),
                "threads": spec.threads,
                "transcripts": measured.text_source[spec.name],
                "execution": measured.info[spec.name]["execution"],
            }
            for spec in specs
        },
        "peers_skipped": skipped,
        "threads": params.threads,
        "threads_note": "null: ONNX Runtime's default (one per physical core)",
        "cpu": {"model": cpu_model(), "logical_cores": os.cpu_count()},
        "versions": _versions(),
        "clips": {
            "eval": len(clips.ids),
            "long_form": sum(d > CHUNK_SECONDS for d in clips.durations),
            "latency": latency_ids,
            "warmup_runs_per_engine": params.warmup,
            "repeats": params.repeats,
        },
    }


def conditions_run(
    conditions: Sequence[ConditionClips], params: BenchParams
) -> ConditionsRun | None:
    """run.json's `conditions`: None when the bench scored none."""
    if not conditions:
        return None
    ray = " (bench.ray shards only the clean eval set's WER pass)" if params.ray is not None else ""
    return ConditionsRun(
        conditions=len(conditions),
        clips=sum(len(found.clips.ids) for found in conditions),
        where=f"this machine's bench workers, untimed, after the timed passes{ray}",
    )
