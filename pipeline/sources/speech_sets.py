"""Calibration and evaluation speech sets, all loaded through `datasets`.

Whatever the source (hub dataset, local audiofolder, or the built-in synthesised set), the saved
set has one shape: `id`, `audio` (16 kHz mono, resampled by `datasets`' Audio feature and stored
as WAV bytes inside the Arrow files, so the set is self-contained), `text`, `duration_s`.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import soundfile as sf
from tqdm import tqdm

from pipeline.config import (
    AudioFolderSet,
    BuiltinSet,
    DataParams,
    HubSet,
    SpeechSetParams,
    VoiceParams,
)
from pipeline.sources.hub import hub_offline, repo_info
from pipeline.sources.synthesis import describe, synthesize_all
from whisper_npu.errors import UserError
from whisper_npu.fsutil import atomic_dir, read_text, sha256_tree, write_json
from whisper_npu.host import cpu_model
from whisper_npu.layout import MANIFEST_FILE
from whisper_npu.whisper_io import CHUNK_SECONDS, SAMPLE_RATE

SET_NAMES = ("calibration", "eval")
FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "audio": datasets.Audio(sampling_rate=SAMPLE_RATE, num_channels=1),
        "text": datasets.Value("string"),
        "duration_s": datasets.Value("float64"),
    }
)


METADATA_LIMIT = 256 << 20  # an audiofolder's metadata.csv: ~1M rows of text


def read_lines(path: Path) -> list[str]:
    """A sentence list's non-blank lines (a missing, empty or non-UTF-8 file is one line)."""
    lines = read_text(Path(path), what="sentence list").splitlines()
    return [line.strip() for line in lines if line.strip()]


def _synthesise_audiofolder(
    spec: BuiltinSet, voices: list[VoiceParams], folder: Path, name: str
) -> Path:
    """Read every sentence (then every long-form paragraph) aloud into an audiofolder."""
    sentences = read_lines(spec.sentences)[: spec.limit]
    paragraphs = read_lines(spec.longform) if spec.longform else []
    items = [(f"{name}-{i:04d}", text) for i, text in enumerate(sentences)]
    items += [(f"{name}-long-{i}", text) for i, text in enumerate(paragraphs)]
    folder.mkdir(parents=True)
    with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "id", "text", "voice"])
        jobs = [(text, voices[index % len(voices)]) for index, (_, text) in enumerate(items)]
        audio = synthesize_all(jobs)
        for (clip_id, text), (_, voice), (samples, rate) in zip(
            items,
            jobs,
            tqdm(audio, total=len(jobs), desc=f"synthesise {name}", unit="clip"),
            strict=True,
        ):
            sf.write(folder / f"{clip_id}.wav", samples, rate, subtype="PCM_16")
            writer.writerow([f"{clip_id}.wav", clip_id, text, describe(voice)])
    return folder


def _check_audiofolder(folder: Path, text_column: str) -> None:
    metadata = folder / "metadata.csv"
    if not folder.is_dir():
        raise UserError(f"{folder}: audiofolder not found")
    if not metadata.is_file():
        raise UserError(f"{folder}: audiofolder has no metadata.csv (needs file_name and text)")
    rows = list(
        csv.DictReader(io.StringIO(read_text(metadata, METADATA_LIMIT, "metadata"), newline=""))
    )
    if not rows:
        raise UserError(f"{metadata}: empty dataset (no rows)")
    for column in ("file_name", text_column):
        if column not in rows[0]:
            raise UserError(f"{metadata}: no '{column}' column (has {', '.join(rows[0])})")
    inside = folder.resolve()
    for row in rows:
        name = row["file_name"] or ""
        if inside not in (folder / name).resolve().parents:  # "../x", "/etc/x", a link out
            raise UserError(f"{metadata}: file_name {name[:80]!r} is not a file in {folder}")
        if not (folder / name).is_file():
            raise UserError(f"{metadata}: listed audio file missing: {name}")


def load_audiofolder(folder: Path, text_column: str) -> datasets.Dataset:
    _check_audiofolder(folder, text_column)
    # Explicit data_files: with data_dir, datasets guesses splits from the path ("eval" → test)
    # and then loses the metadata.
    files = [path.as_posix() for path in sorted(folder.rglob("*")) if path.is_file()]
    loaded = datasets.load_dataset("audiofolder", data_files={"train": files}, split="train")
    if "id" not in loaded.column_names:
        loaded = loaded.add_column("id", [f"{folder.name}-{i:04d}" for i in range(len(loaded))])
    return loaded.rename_columns({text_column: "text"}) if text_column != "text" else loaded


def _load_hub(spec: HubSet) -> datasets.Dataset:
    if not hub_offline():  # offline by the user's word, datasets reads its cache alone
        repo_info(spec.dataset, spec.revision, "dataset")
    try:
        loaded = datasets.load_dataset(
            spec.dataset, spec.config, split=spec.split, revision=spec.revision
        )
    except Exception as exc:  # the hub client raises many types; the user needs one line
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"cannot load hub dataset {spec.dataset!r} (offline or not found?): {reason}"
        ) from None
    for column in (spec.audio_column, spec.text_column):
        if column not in loaded.column_names:
            raise UserError(
                f"hub dataset {spec.dataset!r}: no column {column!r} ({loaded.column_names})"
            )
    loaded = loaded.rename_columns({spec.audio_column: "audio", spec.text_column: "text"})
    return loaded.add_column("id", [f"{spec.split}-{i:05d}" for i in range(len(loaded))])


def decoded_rows(loaded: datasets.Dataset, name: str) -> dict[str, list[Any]]:
    """Decode every clip once at 16 kHz mono: corrupt audio fails here, with the clip named."""
    loaded = loaded.cast_column("audio", datasets.Audio(sampling_rate=SAMPLE_RATE, num_channels=1))
    rows: dict[str, list[Any]] = {"id": [], "audio": [], "text": [], "duration_s": []}
    ids = loaded["id"] if "id" in loaded.column_names else [str(i) for i in range(len(loaded))]
    for index in tqdm(range(len(loaded)), desc=f"resample {name}", unit="clip"):
        clip_id = str(ids[index])
        try:
            row = loaded[index]  # reading the row opens the decoder
            samples = row["audio"].get_all_samples().data.numpy().reshape(-1)
        except Exception as exc:
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{name} clip {clip_id}: cannot decode audio ({reason})") from None
        if samples.size == 0:
            raise UserError(f"{name} clip {clip_id}: audio is empty")
        rows["id"].append(clip_id)
        rows["audio"].append({"array": samples.astype(np.float32), "sampling_rate": SAMPLE_RATE})
        rows["text"].append(str(row["text"]))
        rows["duration_s"].append(round(samples.size / SAMPLE_RATE, 4))
    return rows


def load_speech_set(
    spec: SpeechSetParams, voices: list[VoiceParams], name: str, workdir: Path
) -> datasets.Dataset:
    """Load one set from its source and normalise it to FEATURES."""
    if isinstance(spec, BuiltinSet):
        loaded = load_audiofolder(_synthesise_audiofolder(spec, voices, workdir, name), "text")
    elif isinstance(spec, AudioFolderSet):
        loaded = load_audiofolder(Path(spec.path), spec.text_column)
    else:
        loaded = _load_hub(spec)
    if spec.limit is not None and not isinstance(spec, BuiltinSet):
        loaded = loaded.select(range(min(spec.limit, len(loaded))))
    if len(loaded) == 0:
        raise UserError(f"{name} set is empty")
    return datasets.Dataset.from_dict(decoded_rows(loaded, name), features=FEATURES)


def _check_disjoint(params: DataParams) -> None:
    """Built-in calibration sentences must never leak into the evaluation set."""
    sets = [params.calibration, params.eval]
    if not all(isinstance(spec, BuiltinSet) for spec in sets):
        return
    texts = []
    for spec in sets:
        assert isinstance(spec, BuiltinSet)
        texts.append(
            {
                line.lower()
                for path in (spec.sentences, spec.longform)
                if path
                for line in read_lines(path)
            }
        )
    shared = texts[0] & texts[1]
    if shared:
        raise UserError(
            f"calibration and eval sentence lists share {len(shared)} line(s), e.g. {min(shared)!r}"
        )


def summarise(speech: datasets.Dataset) -> dict[str, float | int]:
    durations = speech["duration_s"]
    return {
        "clips": len(durations),
        "total_s": round(sum(durations), 2),
        "longform_clips": sum(d > CHUNK_SECONDS for d in durations),
        "max_s": max(durations),
    }


def build_speech_sets(params: DataParams, out_dir: Path) -> dict[str, Any]:
    """Write `out_dir/{calibration,eval}` (datasets save_to_disk) and `out_dir/manifest.json`."""
    _check_disjoint(params)
    # Synthesised samples differ between instruction sets (piper's VITS runs in ONNX Runtime,
    # whose kernels are chosen per CPU): the manifest names the one that made them.
    manifest: dict[str, Any] = {"sample_rate": SAMPLE_RATE, "cpu": cpu_model(), "sets": {}}
    with atomic_dir(Path(out_dir)) as scratch:
        for name, spec in zip(SET_NAMES, (params.calibration, params.eval), strict=True):
            workdir = scratch / f".{name}-source"
            speech = load_speech_set(spec, params.voices, name, workdir)
            shutil.rmtree(workdir, ignore_errors=True)
            speech.save_to_disk(str(scratch / name))
            files = sha256_tree(scratch / name)
            manifest["sets"][name] = {
                "source": spec.model_dump(mode="json"),
                **summarise(speech),
                "arrow_sha256": {k: v for k, v in files.items() if k.endswith(".arrow")},
            }
        write_json(scratch / MANIFEST_FILE, manifest)
    return manifest


def clip_samples(row: dict[str, Any]) -> np.ndarray:
    """The 16 kHz mono float32 samples of one row of a saved set."""
    samples: np.ndarray = row["audio"].get_all_samples().data.numpy()
    return samples.reshape(-1).astype(np.float32)


def pick_latency_clips(durations: Sequence[float], count: int, limit_s: float) -> list[int]:
    """`count` clips of at most `limit_s`, evenly spaced by duration from shortest to longest."""
    ranked = [i for _, i in sorted((d, i) for i, d in enumerate(durations) if d <= limit_s)]
    if len(ranked) <= count:
        return sorted(ranked)
    step = (len(ranked) - 1) / max(count - 1, 1)
    return sorted(ranked[round(k * step)] for k in range(count))


def load_saved_set(data_dir: Path, name: str) -> datasets.Dataset:
    """A set written by `build_speech_sets`, audio decoded on access at 16 kHz."""
    path = Path(data_dir) / name
    if not (path / "dataset_info.json").is_file():
        raise UserError(f"{path}: no speech set here (run `whisper-npu data` first)")
    return datasets.load_from_disk(str(path))
