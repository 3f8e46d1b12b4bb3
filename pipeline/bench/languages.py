"""The bench's pass over the built-in multilingual set, for multilingual bundles: per language
and over all of it, each engine's language-ID accuracy and its error rate transcribing with the
language given.

Language ID: each engine names the language of each clip from its first 30 s window — ours
with `whisper_npu.language` (one decoder step after <|startoftranscript|>, as OpenAI and
transformers do), faster-whisper with its own `detect_language` on the same CTranslate2 weights
the model was converted from — scored against the set's `language` column. Transcripts: the
clip's language is given, not detected, so a wrong guess does not count twice and the error
rate measures recognition alone. Texts are normalised as OpenAI scores its multilingual sets:
the English normaliser for English (`whisper_npu.wer`, as the eval set), BasicTextNormalizer
for every other language; languages written without spaces between words (CER_LANGUAGES) are
scored on characters, spaces dropped, with jiwer's character alignment.

Engines: every variant the bench runs (the fp32 CPU baseline and each compiled variant) and the
faster-whisper peers; each is opened in this process after the timed passes, one at a time, so
the latency figures are not touched. An English-only bundle skips the pass, and bench.json has
no `languages` section.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from pipeline.bench.metrics import ALL_LANGUAGES, LanguageReport, LanguageRow
from pipeline.bench.records import EvalClips
from pipeline.bench.results import ScoredText
from pipeline.bench.stats import round_sig
from whisper_npu.errors import UserError
from whisper_npu.fsutil import write_text
from whisper_npu.wer import (
    CER_LANGUAGES,
    edits_of_normalised,
    is_loop_in,
    normalise_in,
    total_edits,
)

if TYPE_CHECKING:
    import numpy as np

    from pipeline.bench.records import EngineSpec
    from pipeline.sources.multilingual import Half

# The per-clip rows, beside run.json and the plot data (a fixed 44-clip set: small enough for
# git, unlike the eval set's table).
CLIPS_FILE = "languages.jsonl"
# The peer whose detect_language the others are compared with, clip by clip.
FASTER_WHISPER = "faster_whisper"

Metric = Literal["wer", "cer"]
# Names the language of one clip (code, probability); transcribes one clip in a given language.
Detect = Callable[["np.ndarray"], tuple[str, float]]
Transcribe = Callable[["np.ndarray", str], str]


def metric_of(language: str) -> Metric:
    return "cer" if language in CER_LANGUAGES else "wer"


class LanguageClip(ScoredText):
    """A clip of the multilingual set: the language the engine named, and its transcript with
    the clip's language given, scored in words or characters (`metric`; `words` then counts
    the reference's characters)."""

    language: str  # the truth
    detected: str
    probability: Annotated[float, Field(ge=0, le=1)]
    metric: Metric

    @property
    def loop(self) -> bool:
        return is_loop_in(self.language, self.reference, self.hypothesis)


def score_language_clip(
    engine: str, clip: str, language: str, detected: tuple[str, float], texts: tuple[str, str]
) -> LanguageClip:
    """`detected` is (code, probability); `texts` is (reference, hypothesis)."""
    reference, hypothesis = texts
    ref, hyp = normalise_in(language, reference), normalise_in(language, hypothesis)
    edits = edits_of_normalised(ref, hyp, characters=language in CER_LANGUAGES)
    return LanguageClip(
        engine=engine,
        clip=clip,
        language=language,
        detected=detected[0],
        probability=min(1.0, max(0.0, float(detected[1]))),
        metric=metric_of(language),
        reference=reference,
        hypothesis=hypothesis,
        reference_norm=ref,
        hypothesis_norm=hyp,
        substitutions=edits.substitutions,
        deletions=edits.deletions,
        insertions=edits.insertions,
        words=edits.words,
    )


def _row(rows: Sequence[LanguageClip], peer: dict[str, str] | None) -> LanguageRow:
    """The figures of one engine over `rows` (one language's, or all of them)."""
    rates: dict[str, float | None] = {}
    for metric in ("wer", "cer"):
        total = total_edits([row.edits for row in rows if row.metric == metric])
        rates[metric] = round_sig(total.wer) if total.words else None
    same = None
    if peer is not None:
        same = round_sig(sum(row.detected == peer[row.clip] for row in rows) / len(rows))
    return LanguageRow(
        clips=len(rows),
        loops=sum(row.loop for row in rows),
        lid_accuracy=round_sig(sum(row.detected == row.language for row in rows) / len(rows)),
        wer=rates["wer"],
        cer=rates["cer"],
        same_language_as_faster_whisper=same,
    )


def summarise_languages(rows: Sequence[LanguageClip]) -> LanguageReport:
    """bench.json's `languages`: per engine, a row per language and one over all clips."""
    engines: dict[str, list[LanguageClip]] = {}
    for row in rows:
        engines.setdefault(row.engine, []).append(row)
    named = {row.clip: row.detected for row in engines.get(FASTER_WHISPER, [])}
    report: LanguageReport = {}
    for engine, mine in engines.items():
        peer = named if named and engine != FASTER_WHISPER else None
        codes = sorted({row.language for row in mine})
        report[engine] = {
            ALL_LANGUAGES: _row(mine, peer),
            **{code: _row([r for r in mine if r.language == code], peer) for code in codes},
        }
    return report


@dataclass(frozen=True)
class LanguageClips(EvalClips):
    """The multilingual set's clips, each with the language it is spoken in."""

    languages: list[str]


def load_language_clips(
    folder: Path, known: dict[str, int], half: Half | None
) -> LanguageClips | None:
    """The `data_languages` output's clips, or its `half` (None: it was built for an
    English-only model), refused when a language is not one the bundle knows."""
    from pipeline.sources.multilingual import load_language_set
    from pipeline.sources.speech_sets import clip_samples
    from whisper_npu.whisper_io import SAMPLE_RATE

    speech = load_language_set(folder, half)
    if speech is None:
        return None
    rows = list(speech)
    unknown = sorted({str(row["language"]) for row in rows} - known.keys())
    if unknown:
        raise UserError(f"{folder}: languages the bundle does not know: {', '.join(unknown)}")
    samples = [clip_samples(row) for row in rows]
    return LanguageClips(
        samples=samples,
        references=[str(row["text"]) for row in rows],
        durations=[clip.size / SAMPLE_RATE for clip in samples],
        ids=[str(row["id"]) for row in rows],
        languages=[str(row["language"]) for row in rows],
    )


def _open_ours(spec: EngineSpec) -> tuple[Detect, Transcribe]:
    """A variant run as the bench's timed pass runs it."""
    from pipeline.bench.engines import open_transcriber
    from whisper_npu.features import WINDOW_SAMPLES, log_mel
    from whisper_npu.language import detect_language, first_window

    transcriber = open_transcriber(spec)
    decoding = transcriber.bundle.record.decoding

    def detect(samples: np.ndarray) -> tuple[str, float]:
        # The window `transcribe(language="auto")` detects from.
        padded = samples.size <= WINDOW_SAMPLES
        mel = log_mel(samples, transcriber.mel_filters, pad_to_window=padded)
        found = detect_language(transcriber.runner, decoding, first_window(mel))
        return found.code, found.probability

    def transcribe(samples: np.ndarray, language: str) -> str:
        return transcriber.transcribe(samples, language=language).text

    return detect, transcribe


def _open_faster_whisper(spec: EngineSpec) -> tuple[Detect, Transcribe]:
    """faster-whisper on the CTranslate2 weights, decoding as the bench's peer does."""
    from faster_whisper import WhisperModel

    from whisper_npu.features import WINDOW_SAMPLES

    model = WhisperModel(
        str(spec.path), device="cpu", compute_type=spec.compute_type, cpu_threads=spec.threads or 0
    )

    def detect(samples: np.ndarray) -> tuple[str, float]:
        code, probability, _ = model.detect_language(audio=samples)
        return str(code), float(probability)

    def transcribe(samples: np.ndarray, language: str) -> str:
        segments, _ = model.transcribe(
            samples,
            language=language,
            task="transcribe",
            beam_size=1,
            temperature=0.0,
            without_timestamps=samples.size <= WINDOW_SAMPLES,
            condition_on_previous_text=False,
            vad_filter=False,
        )
        return "".join(segment.text for segment in segments).strip()

    return detect, transcribe


OPENERS: dict[str, Callable[[EngineSpec], tuple[Detect, Transcribe]]] = {
    "ours": _open_ours,
    "faster_whisper": _open_faster_whisper,
}


def evaluate_engines(specs: Sequence[EngineSpec], clips: LanguageClips) -> list[LanguageClip]:
    """Every engine that can name a language on every clip, one engine at a time; the others
    (the transformers peer) are left out."""
    from tqdm import tqdm

    rows = []
    for spec in specs:
        if spec.kind not in OPENERS:
            continue
        detect, transcribe = OPENERS[spec.kind](spec)
        for index in tqdm(
            range(len(clips.ids)), desc=f"languages {spec.name}", unit="clip", file=sys.stderr
        ):
            samples, language = clips.samples[index], clips.languages[index]
            rows.append(
                score_language_clip(
                    spec.name,
                    clips.ids[index],
                    language,
                    detect(samples),
                    (clips.references[index], transcribe(samples, language)),
                )
            )
    return rows


@dataclass(frozen=True)
class LanguagePass:
    """What the pass found: the per-clip rows and bench.json's section (None when it did not
    run), and a line saying what it did or why not."""

    rows: list[LanguageClip]
    report: LanguageReport | None
    note: str

    def write(self, folder: Path) -> None:
        """The per-clip rows into `folder/languages.jsonl`, when there are any."""
        if self.rows:
            write_language_clips(Path(folder) / CLIPS_FILE, self.rows)


def write_language_clips(path: Path, rows: Sequence[LanguageClip]) -> None:
    """One JSON object per line, engine by engine in clip order."""
    lines = [json.dumps(row.to_json(), ensure_ascii=False, sort_keys=True) for row in rows]
    write_text(path, "".join(f"{line}\n" for line in lines))


def language_pass(
    specs: Sequence[EngineSpec], languages_dir: Path | None, baseline_bundle: Path
) -> LanguagePass:
    """The bench's multilingual pass, when the baseline bundle is multilingual."""
    from whisper_npu.bundle import BundleRecord

    known = BundleRecord.load(Path(baseline_bundle)).decoding.languages
    if not known:
        return LanguagePass([], None, "languages: not evaluated (English-only model)")
    if languages_dir is None:
        return LanguagePass(
            [], None, "languages: not evaluated (multilingual model, but no --languages set)"
        )
    clips = load_language_clips(languages_dir, known, "eval")
    if clips is None:
        raise UserError(
            f"{languages_dir}: built for an English-only model, but {baseline_bundle} is "
            "multilingual (rerun data_languages on this model)"
        )
    rows = evaluate_engines(specs, clips)
    engines = sorted({row.engine for row in rows})
    count = len(set(clips.languages))
    note = (
        f"languages: {len(clips.ids)} clips (the eval half) in {count} languages (espeak-ng "
        "voices), "
        f"engines {', '.join(engines)}; LID = first-window language ID, error rate with "
        "the language given"
    )
    return LanguagePass(rows, summarise_languages(rows), note)


def format_languages(report: LanguageReport | None, note: str) -> str:
    """The per-language scoreboard a person reads: LID accuracy, then WER/CER, per engine."""
    if not report:
        return note
    engines = list(report)
    codes = [ALL_LANGUAGES, *sorted(code for code in report[engines[0]] if code != ALL_LANGUAGES)]
    header = [
        "language",
        "clips",
        *(f"LID {e}" for e in engines),
        *(f"err {e}" for e in engines),
        *(f"loops {e}" for e in engines),
    ]
    lines = []
    for code in codes:
        first = report[engines[0]][code]
        cells = [code, str(first.clips)]
        cells += [f"{100 * report[e][code].lid_accuracy:.1f}" for e in engines]
        for engine in engines:
            row = report[engine][code]
            parts = [
                f"{name} {100 * v:.1f}"
                for name, v in (("WER", row.wer), ("CER", row.cer))
                if v is not None
            ]
            cells.append(" / ".join(parts) or "-")
        cells += [str(report[e][code].loops) for e in engines]
        lines.append(cells)
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]
    table = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *lines]
    ]
    return "\n".join(
        [*table, "", f"{note}. LID and err in %; loops: clips whose transcript looped."]
    )
