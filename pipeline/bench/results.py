"""Per-clip results, the unit every WER figure is built from.

One row per engine and clip (the hypothesis, both normalised texts, the edit counts, the clip's
duration and the times of its transcriptions), written as JSON Lines beside bench.json; a
degraded condition's rows (pipeline.sources.conditions) name it, the clean set's have None. Corpus
WER is the sum of the rows' edits over the sum of their reference words, so shards evaluated on
different machines merge into exactly the single-pass figure; QoI compares two engines clip by
clip, which an average cannot.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar

from pydantic import Field, ValidationError

from whisper_npu.errors import UserError
from whisper_npu.fsutil import read_text, write_text
from whisper_npu.record import Strict, describe
from whisper_npu.wer import (
    EditCounts,
    edits_of_normalised,
    is_loop_normalised,
    normalise,
    total_edits,
)
from whisper_npu.whisper_io import CHUNK_SECONDS

if TYPE_CHECKING:
    from pipeline.bench.records import ConditionClips, EvalClips, Measurement

# A LibriSpeech-sized table (2,620 clips x a dozen engines) is a few MB; 1 GiB is not a table.
MAX_TABLE_BYTES = 1 << 30

Count = Annotated[int, Field(ge=0)]


class ScoredText(Strict):
    """One engine's transcript of one clip against the clip's reference: both texts, both
    normalised, and the edits between them. What every per-clip table holds."""

    engine: str
    clip: str
    reference: str
    hypothesis: str
    reference_norm: str
    hypothesis_norm: str
    substitutions: Count
    deletions: Count
    insertions: Count
    # Reference words after normalising (characters, where a table scores characters);
    # 0: the clip is not scored.
    words: Count

    @property
    def edits(self) -> EditCounts:
        return EditCounts(self.substitutions, self.deletions, self.insertions, self.words)


class ClipResult(ScoredText):
    """A clip of the eval set, or of a degraded copy of it (`condition`), scored. `e2e_ms`
    holds every transcription of the clip in the run that made this row (the timed repeats, or
    the one accuracy or condition pass); it is empty when the run took the transcript from the
    reference stage instead (proven identical)."""

    WHAT: ClassVar[str] = "per-clip results"

    duration_s: Annotated[float, Field(ge=0)]
    e2e_ms: list[Annotated[float, Field(ge=0)]]
    condition: str | None = None  # None: the clean eval set (absent from older tables)

    @property
    def long_form(self) -> bool:
        return self.duration_s > CHUNK_SECONDS

    @property
    def looped(self) -> bool:
        return is_loop_normalised(self.reference_norm, self.hypothesis_norm)


def score_clip(
    engine: str, clip: str, duration_s: float, texts: tuple[str, str], e2e_ms: Sequence[float]
) -> ClipResult:
    """`texts` is (reference, hypothesis)."""
    reference, hypothesis = texts
    ref, hyp = normalise(reference), normalise(hypothesis)
    edits = edits_of_normalised(ref, hyp)
    return ClipResult(
        engine=engine,
        clip=clip,
        duration_s=duration_s,
        reference=reference,
        hypothesis=hypothesis,
        reference_norm=ref,
        hypothesis_norm=hyp,
        substitutions=edits.substitutions,
        deletions=edits.deletions,
        insertions=edits.insertions,
        words=edits.words,
        e2e_ms=list(e2e_ms),
    )


def score_eval_clip(
    engine: str, clips: EvalClips, index: int, text: str, e2e_ms: Sequence[float]
) -> ClipResult:
    """`text`, an engine's transcript of clip `index` of `clips`, scored."""
    return score_clip(
        engine, clips.ids[index], clips.durations[index], (clips.references[index], text), e2e_ms
    )


def table_wer(rows: Iterable[ClipResult]) -> float | None:
    """Sum of edits over sum of reference words; None when no row has a reference word."""
    total = total_edits([row.edits for row in rows])
    return total.wer if total.words else None


def wer_figures(rows: Sequence[ClipResult]) -> dict[str, float]:
    """bench.json's `wer` and, when the set has long-form clips, `wer_long`."""
    wer = table_wer(rows)
    if wer is None:
        raise UserError("no eval clip has a reference word to score")
    long = table_wer(row for row in rows if row.long_form)
    return {"wer": wer} if long is None else {"wer": wer, "wer_long": long}


def qoi(rows: Sequence[ClipResult], baseline: Sequence[ClipResult]) -> float:
    """WhisperKit's quality of inference: the share of scored clips on which `rows`' WER is no
    worse than `baseline`'s. Both score the same reference, so comparing errors compares WER."""
    errors = {row.clip: row.edits.errors for row in baseline if row.words}
    mine = {row.clip: row.edits.errors for row in rows if row.words}
    if mine.keys() != errors.keys() or not mine:
        raise ValueError("QoI needs both engines' results on the same scored clips")
    return sum(mine[clip] <= errors[clip] for clip in mine) / len(mine)


def write_table(path: Path, rows: Iterable[ClipResult]) -> None:
    """The rows, one JSON object per line, in the order given."""
    lines = [json.dumps(row.to_json(), ensure_ascii=False, sort_keys=True) for row in rows]
    write_text(path, "".join(f"{line}\n" for line in lines))


def read_table(path: Path, condition: str | None = None) -> dict[str, list[ClipResult]]:
    """The rows of a table by engine, the clean set's or one condition's, each validated; a
    bad line is one error naming it."""
    tables: dict[str, list[ClipResult]] = {}
    text = read_text(Path(path), MAX_TABLE_BYTES, ClipResult.WHAT)
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            row = ClipResult.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        except ValidationError as exc:
            raise UserError(describe(exc, Path(f"{path}:{number}"))) from None
        if row.condition == condition:
            tables.setdefault(row.engine, []).append(row)
    return tables


def bench_tables(measured: Measurement, clips: EvalClips) -> dict[str, list[ClipResult]]:
    """Every benched engine's rows over the eval set, with the times of its timed passes and
    of its accuracy pass (warm-up runs are not results)."""
    tables = {}
    for name, texts in measured.texts.items():
        times: dict[int, list[float]] = {}
        for sample in [*measured.latency[name], *measured.accuracy.get(name, [])]:
            times.setdefault(sample.clip, []).append(sample.e2e_ms)
        tables[name] = [
            score_eval_clip(name, clips, i, text, times.get(i, [])) for i, text in enumerate(texts)
        ]
    return tables


def condition_tables(
    measured: Measurement, conditions: Sequence[ConditionClips]
) -> dict[str, dict[str, list[ClipResult]]]:
    """Per condition, every engine's rows over its clips, each with its one untimed pass."""
    return {
        found.name: {
            name: [
                score_eval_clip(name, found.clips, s.clip, s.text, [s.e2e_ms]).model_copy(
                    update={"condition": found.name}
                )
                for s in samples
            ]
            for name, samples in measured.conditions[found.name].items()
        }
        for found in conditions
    }
