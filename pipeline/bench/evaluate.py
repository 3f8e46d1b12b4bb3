"""WER of any bundle on the evaluation set (the bench stage's accuracy half, usable alone), in
this process or sharded over Ray actors (`pipeline.bench.sharded`)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.bench.records import EvalClips
from pipeline.bench.results import ClipResult, score_eval_clip, wer_figures, write_table
from pipeline.config import DEFAULT_RAY_TIMEOUT_S
from whisper_npu.errors import UserError
from whisper_npu.execution import Device, Execution
from whisper_npu.fsutil import read_text
from whisper_npu.layout import TRANSCRIPTS_FILE

# One clip's transcript and the milliseconds it took where it ran.
Transcript = tuple[str, float]


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


def eval_clips(speech: Iterable[dict[str, Any]]) -> EvalClips:
    """A saved speech set's rows (the clean eval set's features) decoded."""
    from pipeline.sources.speech_sets import clip_samples

    rows = list(speech)
    return EvalClips(
        [clip_samples(row) for row in rows],
        [row["text"] for row in rows],
        [row["duration_s"] for row in rows],
        [row["id"] for row in rows],
    )


def load_eval_clips(data_dir: Path) -> EvalClips:
    from pipeline.sources.speech_sets import load_saved_set

    return eval_clips(load_saved_set(data_dir, "eval"))


def transcribe_here(
    artifact: Path, clips: EvalClips, device: Device
) -> tuple[list[Transcript], str, Execution]:
    """Every clip through one transcriber in this process; its variant and execution."""
    from tqdm import tqdm

    from whisper_npu.transcriber import Transcriber

    transcriber = Transcriber.from_artifact(artifact, device=device)
    out = []
    for samples in tqdm(clips.samples, desc="evaluate", unit="clip"):
        start = time.perf_counter()
        text = transcriber.transcribe(samples).text
        out.append((text, (time.perf_counter() - start) * 1000.0))
    return out, str(transcriber.bundle.record.variant), transcriber.execution


def scored(engine: str, clips: EvalClips, transcripts: list[Transcript]) -> list[ClipResult]:
    return [
        score_eval_clip(engine, clips, i, text, [ms]) for i, (text, ms) in enumerate(transcripts)
    ]


@dataclass(frozen=True)
class EvaluateOptions:
    """Where the clips run (None: this process; else a Ray address, "" for ray.init()'s own
    choice), on how many Ray actors (None: one per CPU of the cluster), and where the per-clip
    results go (None: nowhere); how long Ray may take to answer."""

    ray_address: str | None = None
    workers: int | None = None
    table: Path | None = None
    device: Device = Device.AUTO
    ray_timeout_s: float = DEFAULT_RAY_TIMEOUT_S


def evaluate_bundle(
    artifact: Path, data_dir: Path, options: EvaluateOptions = EvaluateOptions()
) -> dict[str, Any]:
    """WER of a bundle, compiled or release directory, run the way `from_artifact` runs it."""
    from pipeline.bench.sharded import ray_missing, transcribe_on_ray

    if options.ray_address is not None and (missing := ray_missing()):
        raise UserError(missing)
    clips = load_eval_clips(data_dir)
    start = time.perf_counter()
    if options.ray_address is None:
        transcripts, variant, execution = transcribe_here(artifact, clips, options.device)
        sharding = None
    else:
        transcripts, variant, execution, sharding = transcribe_on_ray(artifact, clips, options)
    wall_s = time.perf_counter() - start
    rows = scored(variant, clips, transcripts)
    if options.table is not None:
        write_table(options.table, rows)
    audio_s = sum(clips.durations)
    return {
        "artifact": Path(artifact).as_posix(),
        "variant": variant,
        "execution": execution.to_json(),
        "clips": len(rows),
        "words": sum(row.words for row in rows),
        "errors": sum(row.edits.errors for row in rows),
        **wer_figures(rows),
        "audio_s": round(audio_s, 1),
        "wall_s": round(wall_s, 1),
        "clips_per_s": round(len(rows) / wall_s, 3),
        # audio seconds per second of compute, summed over clips wherever each ran
        "rtfx": round(audio_s / (sum(ms for _, ms in transcripts) / 1000.0), 2),
        "ray": sharding,
    }
