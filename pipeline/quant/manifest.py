"""The calibrate stage's record, manifest.json: which clips calibrate, which are held back
(with the fp32 bundle's transcripts of them) and the fp32 bundle they were recorded through.

It lives here, apart from the stage, because every quantized bundle.json embeds it and the
runtime reads that without the calibrate stage's imports.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from pipeline.layout import MANIFEST_FILE
from pipeline.record import Record, Sha256


class CalibrationManifest(Record):
    bundle_sha256: Sha256  # the fp32 bundle.json the inputs were recorded through
    calibration_clips: list[str]
    holdout_clips: list[str]
    holdout_fp32_texts: list[str]
    decoder_steps: Annotated[int, Field(ge=0)]
    bytes: dict[str, Annotated[int, Field(ge=0)]]

    @classmethod
    def load(cls, root: Path) -> CalibrationManifest:
        return cls.read(Path(root) / MANIFEST_FILE)

    def save(self, root: Path) -> None:
        self.write(Path(root) / MANIFEST_FILE)
