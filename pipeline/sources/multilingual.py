"""The built-in multilingual evaluation set: short sentences in several languages read by
Debian's espeak-ng voices, loaded through `datasets` like the other sets, plus a `language`
column (Whisper's code) that language identification is scored against.

The sentence list is `language<TAB>espeak-ng voice<TAB>sentence` per line; the voice goes
through the same validation as `data.voices`, and the sentence reaches espeak-ng on stdin.
"""

from __future__ import annotations

import csv
import shutil
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import datasets
from pydantic import ValidationError

from pipeline.config import EspeakVoice
from pipeline.errors import UserError
from pipeline.fsutil import atomic_dir
from pipeline.sources.speech_sets import FEATURES, decoded_rows, load_audiofolder, read_lines
from pipeline.sources.synthesis import describe, synthesize_all

SET_NAME = "multilingual"
MULTILINGUAL_FEATURES = datasets.Features({**FEATURES, "language": datasets.Value("string")})


def read_sentences(path: Path) -> list[tuple[str, EspeakVoice, str]]:
    """(language, voice, sentence) per line, each line checked."""
    rows = []
    for number, line in enumerate(read_lines(path), start=1):
        fields = line.split("\t")
        if len(fields) != 3 or not all(fields):
            raise UserError(f"{path}:{number}: expected language<TAB>voice<TAB>sentence")
        try:
            voice = EspeakVoice(engine="espeak-ng", voice=fields[1])
        except ValidationError:
            raise UserError(f"{path}:{number}: {fields[1][:40]!r} is not a voice name") from None
        rows.append((fields[0], voice, fields[2]))
    return rows


def _write_audiofolder(rows: list[tuple[str, EspeakVoice, str]], folder: Path) -> Path:
    import soundfile as sf

    folder.mkdir(parents=True)
    audio = synthesize_all([(text, voice) for _, voice, text in rows])
    with (folder / "metadata.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "id", "text", "language", "voice"])
        for index, ((language, voice, text), (samples, rate)) in enumerate(
            zip(rows, audio, strict=True)
        ):
            clip_id = f"{SET_NAME}-{language}-{index:03d}"
            sf.write(folder / f"{clip_id}.wav", samples, rate, subtype="PCM_16")
            writer.writerow([f"{clip_id}.wav", clip_id, text, language, describe(voice)])
    return folder


def build_multilingual_set(sentences: Path, out_dir: Path) -> datasets.Dataset:
    """Synthesise every sentence into `out_dir` (datasets save_to_disk), 16 kHz mono."""
    rows = read_sentences(sentences)
    with atomic_dir(Path(out_dir)) as scratch:
        loaded = load_audiofolder(_write_audiofolder(rows, scratch / ".source"), "text")
        columns = decoded_rows(loaded, SET_NAME)
        columns["language"] = [str(code) for code in loaded["language"]]
        speech = datasets.Dataset.from_dict(columns, features=MULTILINGUAL_FEATURES)
        shutil.rmtree(scratch / ".source")
        speech.save_to_disk(str(scratch / SET_NAME))
    return datasets.load_from_disk(str(Path(out_dir) / SET_NAME))


def accuracy_by_language(expected: Sequence[str], found: Sequence[str]) -> dict[str, float]:
    """The share of clips of each language identified as that language, and `all`."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for truth, guess in zip(expected, found, strict=True):
        hits[truth].append(truth == guess)
        hits["all"].append(truth == guess)
    return {code: round(sum(marks) / len(marks), 4) for code, marks in sorted(hits.items())}
