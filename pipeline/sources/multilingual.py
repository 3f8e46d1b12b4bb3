"""The built-in multilingual evaluation set: short sentences in several languages read by
Debian's espeak-ng voices, loaded through `datasets` like the other sets, plus a `language`
column (Whisper's code) that language identification and per-language WER are scored against.

The sentence list is `language<TAB>espeak-ng voice<TAB>sentence` per line; the voice goes
through the same validation as `data.voices`, and the sentence reaches espeak-ng on stdin.

The `data_languages` stage builds it beside `data` (whose outputs it leaves alone), and only for
a multilingual model: an English-only model gets a manifest saying so and no audio, so the
default pipeline (tiny.en) neither needs espeak-ng nor pays for the synthesis.

Its clips split in two halves (`language_half`): the held-back half the quantize stage holds
each variant's budget and loops on, the eval half the bench scores. Both cover every language,
so a variant tuned on English clips alone cannot loop unseen on another language.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from pipeline.config import EspeakVoice
from whisper_npu.errors import UserError
from whisper_npu.fsutil import atomic_dir, sha256_file, sha256_tree, write_json
from whisper_npu.layout import MANIFEST_FILE
from whisper_npu.whisper_io import SAMPLE_RATE

if TYPE_CHECKING:
    import datasets

SET_NAME = "multilingual"
Half = Literal["holdback", "eval"]
GENERATION_CONFIG = "generation_config.json"
ESPEAK_MISSING = (
    "the multilingual set is read by espeak-ng voices, and espeak-ng is not installed "
    "(apt install espeak-ng; scripts/bootstrap.py installs it when run as root)"
)


def multilingual_features() -> datasets.Features:
    """The speech sets' columns and `language`. (`datasets` is imported where a set is built
    or read: an English-only model's data_languages stage never needs it.)"""
    import datasets

    from pipeline.sources.speech_sets import FEATURES

    return datasets.Features({**FEATURES, "language": datasets.Value("string")})


def read_sentences(path: Path) -> list[tuple[str, EspeakVoice, str]]:
    """(language, voice, sentence) per line, each line checked."""
    from pipeline.sources.speech_sets import read_lines

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


def model_is_multilingual(model_dir: Path) -> bool:
    """What a converted model (the `model` stage's output) says of itself, as the export reads
    it: `is_multilingual` in its generation config."""
    path = Path(model_dir) / GENERATION_CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise UserError(f"{path}: not readable; {model_dir} is not a converted model") from None
    if not isinstance(config, dict):
        raise UserError(f"{path}: not a generation config")
    return config.get("is_multilingual") is True


def _espeak_version() -> str:
    """espeak-ng's version line: the samples (and so the set's hashes) follow its voices."""
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise UserError(ESPEAK_MISSING)
    shown = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return shown.stdout.strip().split("  Data at:")[0]


def _write_audiofolder(rows: list[tuple[str, EspeakVoice, str]], folder: Path) -> Path:
    import soundfile as sf

    from pipeline.sources.synthesis import describe, synthesize_all

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


def _save_set(sentences: Path, scratch: Path) -> dict[str, Any]:
    """Synthesise every sentence into `scratch/multilingual` (save_to_disk); its manifest."""
    import datasets

    from pipeline.sources.speech_sets import decoded_rows, load_audiofolder, summarise
    from pipeline.sources.synthesis import describe

    rows = read_sentences(sentences)
    espeak = _espeak_version()
    loaded = load_audiofolder(_write_audiofolder(rows, scratch / ".source"), "text")
    columns = decoded_rows(loaded, SET_NAME)
    columns["language"] = [str(code) for code in loaded["language"]]
    speech = datasets.Dataset.from_dict(columns, features=multilingual_features())
    shutil.rmtree(scratch / ".source")
    speech.save_to_disk(str(scratch / SET_NAME))
    files = sha256_tree(scratch / SET_NAME)
    return {
        "multilingual": True,
        "sample_rate": SAMPLE_RATE,
        **summarise(speech),
        "languages": dict(sorted(Counter(columns["language"]).items())),
        "voices": sorted({describe(voice) for _, voice, _ in rows}),
        "espeak_ng": espeak,
        "arrow_sha256": {k: v for k, v in files.items() if k.endswith(".arrow")},
    }


def build_multilingual_set(sentences: Path, out_dir: Path) -> datasets.Dataset:
    """Synthesise every sentence into `out_dir` (datasets save_to_disk, 16 kHz mono, and
    manifest.json)."""
    import datasets

    with atomic_dir(Path(out_dir)) as scratch:
        manifest = _save_set(sentences, scratch)
        manifest["sentences_sha256"] = sha256_file(Path(sentences))
        write_json(scratch / MANIFEST_FILE, manifest)
    return datasets.load_from_disk(str(Path(out_dir) / SET_NAME))


def build_language_set(sentences: Path, model_dir: Path, out_dir: Path) -> dict[str, Any]:
    """The `data_languages` stage: the set and its manifest for a multilingual model; for an
    English-only one, a manifest saying so and nothing else."""
    with atomic_dir(Path(out_dir)) as scratch:
        if model_is_multilingual(model_dir):
            manifest = _save_set(sentences, scratch)
        else:
            manifest = {
                "multilingual": False,
                "note": f"{model_dir} is English-only: no language set to build",
            }
        manifest["sentences_sha256"] = sha256_file(Path(sentences))
        write_json(scratch / MANIFEST_FILE, manifest)
    return manifest


def language_half(speech: datasets.Dataset, half: Half) -> datasets.Dataset:
    """One half of a multilingual set, split within each language: a language's clips, in the
    set's order, go in turn to the held-back half and the eval half, so both halves cover every
    language and share no clip. A language needs two clips, one for each half."""
    languages = [str(code) for code in speech["language"]]
    counts = Counter(languages)
    if alone := sorted(code for code, count in counts.items() if count < 2):
        raise UserError(
            f"the multilingual set has one clip of {', '.join(alone)}: each language needs two, "
            "one for the held-back half and one for the eval half"
        )
    seen: Counter[str] = Counter()
    picked = []
    for index, code in enumerate(languages):
        if (seen[code] % 2 == 0) == (half == "holdback"):
            picked.append(index)
        seen[code] += 1
    return speech.select(picked)


@dataclass(frozen=True)
class LanguageHalf:
    """A half of the multilingual set, and the digests of the set it was cut from (so
    transcripts of one set are never judged against another's clips)."""

    speech: datasets.Dataset
    arrow_sha256: dict[str, str]


def load_language_half(folder: Path, half: Half) -> LanguageHalf | None:
    """`half` of the set in `folder` with its digests; None for an English-only model's."""
    speech = load_language_set(folder, half)
    if speech is None:
        return None
    manifest = json.loads((Path(folder) / MANIFEST_FILE).read_text(encoding="utf-8"))
    digests = manifest.get("arrow_sha256") if isinstance(manifest, dict) else None
    if not isinstance(digests, dict) or not digests:
        raise UserError(f"{Path(folder) / MANIFEST_FILE}: no arrow_sha256 for the set's files")
    return LanguageHalf(speech, {str(k): str(v) for k, v in digests.items()})


def load_language_set(folder: Path, half: Half | None = None) -> datasets.Dataset | None:
    """A set written by `build_language_set` or `build_multilingual_set`, or its `half`; None
    when it was built for an English-only model."""
    import datasets

    manifest = Path(folder) / MANIFEST_FILE
    if not manifest.is_file():
        raise UserError(f"{manifest}: missing (run `whisper-npu data-languages` first)")
    try:
        multilingual = json.loads(manifest.read_text(encoding="utf-8"))["multilingual"]
    except (OSError, ValueError, TypeError, KeyError):
        raise UserError(f"{manifest}: not a language set's manifest") from None
    if multilingual is not True:
        return None
    if not (Path(folder) / SET_NAME / "dataset_info.json").is_file():
        raise UserError(f"{Path(folder) / SET_NAME}: no speech set here")
    speech = datasets.load_from_disk(str(Path(folder) / SET_NAME))
    return speech if half is None else language_half(speech, half)
