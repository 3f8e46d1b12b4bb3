"""Word error rate as Whisper's paper measures it: English normaliser with its spelling map,
corpus-level. In the runtime for the device report; jiwer and whisper-normalizer are the `wer`
extra, imported when a WER is asked for."""

from __future__ import annotations

import importlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

from whisper_npu.errors import UserError

WER_EXTRA = "pip install 'whisper-npu[wer]'"


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise UserError(f"a WER needs {name}: {WER_EXTRA} ({exc})") from None


@cache
def _normaliser() -> Any:
    return _import("whisper_normalizer.english").EnglishTextNormalizer()


def normalise(text: str) -> str:
    normalised: str = _normaliser()(text)
    return normalised


# Whisper's codes of the languages written without spaces between words: scored on characters.
CER_LANGUAGES = frozenset({"zh", "yue", "ja", "th", "lo", "my", "km", "bo"})


@cache
def _basic_normaliser() -> Any:
    return _import("whisper_normalizer.basic").BasicTextNormalizer()


def normalise_in(language: str | None, text: str) -> str:
    """`text` as OpenAI normalises it for `language` before scoring: the English normaliser for
    English (None: an English-only model's clips), BasicTextNormalizer for every other
    language, spaces dropped for the CER_LANGUAGES."""
    if language in (None, "en"):
        return normalise(text)
    basic = str(_basic_normaliser()(text)).strip()
    return "".join(basic.split()) if language in CER_LANGUAGES else basic


@dataclass(frozen=True)
class EditCounts:
    """Word edits of one or more clips. Integers that add up, so corpus WER = errors / words
    is exact however the clips are split into shards and merged again."""

    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0
    words: int = 0  # reference words (hits + substitutions + deletions)

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.words + other.words,
        )

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return self.errors / self.words if self.words else 0.0


def edits_of_normalised(reference: str, hypothesis: str, characters: bool = False) -> EditCounts:
    """Edits between two already normalised texts, in words, or in characters for languages
    written without spaces between words (then `words` counts the reference's characters). An
    empty reference counts nothing (Whisper's convention: such a clip is not scored)."""
    if not reference:
        return EditCounts()
    jiwer = _import("jiwer")
    align = jiwer.process_characters if characters else jiwer.process_words
    out = align(reference, hypothesis)
    return EditCounts(
        out.substitutions,
        out.deletions,
        out.insertions,
        out.substitutions + out.deletions + out.hits,
    )


def clip_edits(reference: str, hypothesis: str) -> EditCounts:
    """Edits of one clip after normalising both texts."""
    return edits_of_normalised(normalise(reference), normalise(hypothesis))


def clip_edits_in(language: str | None, reference: str, hypothesis: str) -> EditCounts:
    """`clip_edits` for a clip spoken in `language`: in characters for the CER_LANGUAGES."""
    ref, hyp = normalise_in(language, reference), normalise_in(language, hypothesis)
    return edits_of_normalised(ref, hyp, characters=language in CER_LANGUAGES)


def total_edits(edits: Sequence[EditCounts]) -> EditCounts:
    return sum(edits, EditCounts())


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER over pairs whose normalised reference is not empty (Whisper's convention):
    the clips' edits summed, so it is the same number however the clips are grouped."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = total_edits([clip_edits(r, h) for r, h in zip(references, hypotheses, strict=True)])
    if not total.words:
        raise ValueError("no non-empty reference to score")
    return total.wer


# A hypothesis loops (Whisper's repetition failure) when it is more than LOOP_LENGTH times its
# reference's length (and LOOP_MIN_EXTRA words longer, so a two-word clip heard as five is not
# a loop), or when some LOOP_NGRAM-word phrase comes LOOP_REPEATS times or more beyond its
# count in the reference (a reference that repeats a phrase, a chorus, does not make its
# faithful transcript a loop).
LOOP_LENGTH = 2.0
LOOP_MIN_EXTRA = 4
LOOP_NGRAM = 3
LOOP_REPEATS = 4


def _phrases(words: Sequence[str]) -> Counter[tuple[str, ...]]:
    """Every LOOP_NGRAM-word phrase of `words`, overlapping, counted."""
    return Counter(zip(*(words[k:] for k in range(LOOP_NGRAM)), strict=False))


def is_loop_normalised(reference: str, hypothesis: str) -> bool:
    """`is_loop` on texts already normalised (the bench scores those)."""
    ref, hyp = reference.split(), hypothesis.split()
    if len(hyp) > max(LOOP_LENGTH * len(ref), len(ref) + LOOP_MIN_EXTRA):
        return True
    in_reference = _phrases(ref)
    # Every phrase, not only the commonest: that one may be the reference's own repetition.
    return any(n - in_reference[phrase] >= LOOP_REPEATS for phrase, n in _phrases(hyp).items())


def is_loop(reference: str, hypothesis: str) -> bool:
    """Whether a transcript looped: far longer than its reference, or one phrase over and over.
    Counted apart from WER, since a loop's insertions can hide in a corpus figure."""
    return is_loop_normalised(normalise(reference), normalise(hypothesis))


def is_loop_in(language: str | None, reference: str, hypothesis: str) -> bool:
    """`is_loop` for a clip spoken in `language`; in the CER_LANGUAGES characters stand for
    words."""
    ref, hyp = normalise_in(language, reference), normalise_in(language, hypothesis)
    if language in CER_LANGUAGES:
        ref, hyp = " ".join(ref), " ".join(hyp)
    return is_loop_normalised(ref, hyp)
