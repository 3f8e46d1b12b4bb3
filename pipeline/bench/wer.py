"""Word error rate as Whisper's paper measures it: English normaliser with its spelling map,
corpus-level."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer


@cache
def _normaliser() -> EnglishTextNormalizer:
    return EnglishTextNormalizer()


def normalise(text: str) -> str:
    normalised: str = _normaliser()(text)
    return normalised


@dataclass(frozen=True)
class EditCounts:
    """Word edits of one or more clips; they add up, so corpus WER = errors / words exactly."""

    errors: int = 0
    words: int = 0

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(self.errors + other.errors, self.words + other.words)

    @property
    def wer(self) -> float:
        return self.errors / self.words if self.words else 0.0


def clip_edits(reference: str, hypothesis: str) -> EditCounts:
    """Edits of one clip after normalising; an empty normalised reference counts nothing."""
    ref, hyp = normalise(reference), normalise(hypothesis)
    if not ref:
        return EditCounts()
    out = jiwer.process_words(ref, hyp)
    return EditCounts(
        out.substitutions + out.deletions + out.insertions,
        out.substitutions + out.deletions + out.hits,
    )


def corpus_wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus WER over pairs whose normalised reference is not empty (Whisper's convention):
    the clips' edits summed, so it is the same number however the clips are grouped."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    total = sum(
        (clip_edits(r, h) for r, h in zip(references, hypotheses, strict=True)), EditCounts()
    )
    if not total.words:
        raise ValueError("no non-empty reference to score")
    return total.wer
