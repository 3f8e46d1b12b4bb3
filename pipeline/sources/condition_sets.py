"""Reading the saved condition sets (pipeline.sources.conditions writes them): the manifest's
records and their loader, all that calibrate, quantize and bench need.

Apart from the degradations, so that changing one (or its scipy or pyroomacoustics code) reruns
only the `conditions` stage, not every stage that reads its output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal

import datasets
from pydantic import Field

from pipeline.config import Condition
from whisper_npu.errors import UserError
from whisper_npu.layout import MANIFEST_FILE
from whisper_npu.record import Record, Sha256

ConditionSetName = Literal["eval", "holdback"]


class ConditionEntry(Record):
    """One condition's saved set: the entry that defines it, its SNR when it adds noise, and
    which clean clips it degraded."""

    entry: Condition
    snr_db: float | None
    clips: Annotated[int, Field(ge=1)]
    total_s: float
    source_ids: list[str]
    arrow_sha256: dict[str, Sha256]

    @property
    def family(self) -> str:
        """The entry's name: every SNR of one noise shares it (the WER-against-SNR plot's line)."""
        return self.entry.name


class ConditionsManifest(Record):
    """manifest.json of a conditions directory."""

    WHAT: ClassVar[str] = "conditions manifest"

    set: ConditionSetName
    seed: int
    cpu: str  # the machine that made it (the clean set's samples are per CPU, see synthesis)
    conditions: dict[str, ConditionEntry]


@dataclass(frozen=True)
class ConditionSet:
    """A saved condition, loaded: its manifest entry and its clips (audio decoded on access)."""

    name: str
    entry: ConditionEntry
    speech: datasets.Dataset


def load_condition_sets(root: Path) -> list[ConditionSet]:
    """Every condition saved under `root` (the `conditions` stage's output), in manifest order."""
    root = Path(root)
    if not (root / MANIFEST_FILE).is_file():
        raise UserError(f"{root}: no conditions here (run the conditions stage first)")
    manifest = ConditionsManifest.read(root / MANIFEST_FILE)
    out = []
    for name, entry in manifest.conditions.items():
        path = root / name
        if not (path / "dataset_info.json").is_file():
            raise UserError(f"{path}: condition {name!r} is in the manifest but not on disk")
        out.append(ConditionSet(name, entry, datasets.load_from_disk(str(path))))
    return out
