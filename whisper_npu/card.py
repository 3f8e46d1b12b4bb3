"""card.json, a release's record: what it is, what made it and the sha256 of its files. The
runtime reads it (verify, doctor); the release stage writes it and renders MODEL_CARD.md from it
(pipeline/release/model_card.py)."""

from __future__ import annotations

from typing import Any, Literal

from whisper_npu.figures import BenchRow
from whisper_npu.record import Strict


class Sources(Strict):
    bundle_sha256: str


class Card(Strict):
    """card.json. The model, export, quantization and compile sections are copied from the
    bundle and compile records as they are (those records carry their own schemas); `metrics`
    is the variant's bench row, null before a bench, with the reason in `notes`."""

    format: Literal[1]
    artifact: str  # its name in dvc.yaml's `artifacts:` and in git tags
    variant: str
    variant_description: str
    target: str | None
    model: dict[str, Any] | None
    export: dict[str, Any]
    quantization: dict[str, Any] | None
    compile: dict[str, Any]
    metrics: BenchRow | None
    versions: dict[str, str | None]
    sources: Sources
    notes: list[str]
    files: dict[str, str]  # relative path to sha256 of every other file (`whisper-npu verify`)
