"""WER of any bundle on the evaluation set (the bench stage's accuracy half, usable alone)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.bench.wer import corpus_wer
from pipeline.errors import UserError
from pipeline.fsutil import read_text
from pipeline.layout import TRANSCRIPTS_FILE
from pipeline.runtime.transcriber import Transcriber
from pipeline.runtime.whisper_io import CHUNK_SECONDS
from pipeline.sources.speech_sets import clip_samples, load_saved_set


def reference_texts(reference_dir: Path) -> dict[str, str]:
    """The reference stage's transcript of each eval clip, by clip id, checked at the door."""
    path = Path(reference_dir) / TRANSCRIPTS_FILE
    if not path.is_file():
        raise UserError(f"{path}: no reference transcripts (run `whisper-npu reference` first)")
    try:
        rows = json.loads(read_text(path))
        texts = {row["id"]: row["text"] for row in rows}
    except (json.JSONDecodeError, RecursionError, TypeError, KeyError):
        raise UserError(f"{path}: not the reference stage's transcripts") from None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in texts.items()):
        raise UserError(f"{path}: not the reference stage's transcripts")
    return texts


def score(
    references: Sequence[str], durations: Sequence[float], texts: Sequence[str]
) -> dict[str, float | None]:
    """Corpus WER of the whole set and of its long-form clips (None when it has none)."""
    long_form = [i for i, seconds in enumerate(durations) if seconds > CHUNK_SECONDS]
    return {
        "wer": corpus_wer(references, texts),
        "wer_long": corpus_wer([references[i] for i in long_form], [texts[i] for i in long_form])
        if long_form
        else None,
    }


def evaluate_bundle(artifact: Path, data_dir: Path) -> dict[str, Any]:
    """WER of a bundle, compiled or release directory, run the way `from_artifact` runs it."""
    transcriber = Transcriber.from_artifact(artifact)
    rows = list(load_saved_set(data_dir, "eval"))
    texts = [
        transcriber.transcribe(clip_samples(row)).text
        for row in tqdm(rows, desc="evaluate", unit="clip")
    ]
    return {
        "artifact": Path(artifact).as_posix(),
        "variant": transcriber.bundle.record.variant,
        "execution": transcriber.execution,
        "clips": len(rows),
        **score([row["text"] for row in rows], [row["duration_s"] for row in rows], texts),
    }
