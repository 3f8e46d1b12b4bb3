"""WER of any bundle on the evaluation set (the bench stage's accuracy half, usable alone)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.runtime import Transcriber
from pipeline.speech_sets import LONG_FORM_S, clip_samples, load_saved_set
from pipeline.wer import corpus_wer


def evaluate_bundle(
    bundle_dir: Path, data_dir: Path, providers: list[str] | None = None
) -> dict[str, Any]:
    transcriber = Transcriber.from_bundle(bundle_dir, providers=providers)
    rows = list(load_saved_set(data_dir, "eval"))
    texts = [
        transcriber.transcribe(clip_samples(row)).text
        for row in tqdm(rows, desc="evaluate", unit="clip")
    ]
    long_form = [i for i, row in enumerate(rows) if row["duration_s"] > LONG_FORM_S]
    return {
        "bundle": Path(bundle_dir).as_posix(),
        "variant": transcriber.bundle.meta.get("variant"),
        "clips": len(rows),
        "wer": corpus_wer([row["text"] for row in rows], texts),
        "wer_long": corpus_wer([rows[i]["text"] for i in long_form], [texts[i] for i in long_form])
        if long_form
        else None,
    }
