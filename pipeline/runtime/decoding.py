"""The one greedy decode loop, shared by every backend through the `Runner` protocol.

It follows transformers' Whisper generation exactly (so transcripts can be compared token for
token): suppressed tokens every step, begin-suppressed tokens at the first step, and in
timestamp mode the rules of WhisperTimeStampLogitsProcessor. Audio longer than one window is
decoded sequentially with timestamps: each window's last complete segment tells where the
next window starts (transformers' and OpenAI's long-form strategy).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from pipeline.errors import UserError
from pipeline.runtime.whisper_io import FRAMES_PER_TIMESTAMP, N_FRAMES

TRANSCRIBE, TRANSLATE = "transcribe", "translate"

NEG_INF = np.float32(-np.inf)


class Runner(Protocol):
    """A Whisper backend: one encoder call per window, one decoder call per token."""

    def encode(self, features: np.ndarray) -> None:
        """Run the encoder on [1, n_mels, 3000] and clear the self-attention cache."""

    def decode_step(self, token: int, position: int) -> np.ndarray:
        """Feed one token at `position`; return the next-token logits [vocab]."""


@dataclass(frozen=True)
class DecodingSpec:
    """Token ids and rules of one Whisper checkpoint (stored in bundle.json).

    The language and task tokens are tables, not part of `prefix`: the prompt is built at run
    time (`prompt_tokens`), so one multilingual bundle transcribes or translates any language.
    """

    prefix: tuple[int, ...]  # <|startoftranscript|>; with_prompt adds language and task
    eot: int
    no_timestamps: int
    suppress_tokens: tuple[int, ...]
    begin_suppress_tokens: tuple[int, ...]
    max_initial_timestamp_index: int | None
    max_length: int  # prompt + generated tokens; never more than the cache holds
    languages: dict[str, int] = field(default_factory=dict)  # "fr" → <|fr|>; {}: English-only
    tasks: dict[str, int] = field(default_factory=dict)  # "transcribe"/"translate" → token
    language: str | None = None  # multilingual: the language when none is asked for

    @property
    def timestamp_begin(self) -> int:
        return self.no_timestamps + 1

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DecodingSpec:
        return cls(
            prefix=tuple(data["prefix"]),
            eot=data["eot"],
            no_timestamps=data["no_timestamps"],
            suppress_tokens=tuple(data["suppress_tokens"]),
            begin_suppress_tokens=tuple(data["begin_suppress_tokens"]),
            max_initial_timestamp_index=data["max_initial_timestamp_index"],
            max_length=data["max_length"],
            languages=dict(data.get("languages", {})),
            tasks=dict(data.get("tasks", {})),
            language=data.get("language"),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in self.__dict__.items()
        }


def prompt_tokens(spec: DecodingSpec, language: str | None, task: str) -> tuple[int, ...]:
    """The decoder prompt before <|notimestamps|>: <|startoftranscript|>, then for a
    multilingual model the language (`None`: the bundle's default) and the task."""
    if not spec.languages:
        if task != TRANSCRIBE:
            raise UserError(f"this bundle is English-only: it cannot --task {task}")
        if language not in (None, "en"):
            raise UserError(f"this bundle is English-only: it cannot --language {language}")
        return spec.prefix
    language = language or spec.language
    if language not in spec.languages:
        raise UserError(f"--language {language}: not a language this model knows")
    if task not in spec.tasks:
        raise UserError(f"--task {task}: not a task this model knows ({', '.join(spec.tasks)})")
    return (*spec.prefix, spec.languages[language], spec.tasks[task])


def with_prompt(spec: DecodingSpec, language: str | None, task: str = TRANSCRIBE) -> DecodingSpec:
    """The spec the decode loop runs: `prefix` is the whole prompt for this language and task."""
    return replace(spec, prefix=prompt_tokens(spec, language, task))


def _apply_timestamp_rules(scores: np.ndarray, generated: list[int], spec: DecodingSpec) -> None:
    """transformers' WhisperTimeStampLogitsProcessor, for one sequence, in place."""
    begin = spec.timestamp_begin
    scores[spec.no_timestamps] = NEG_INF
    last_was_ts = len(generated) >= 1 and generated[-1] >= begin
    penultimate_was_ts = len(generated) < 2 or generated[-2] >= begin
    if last_was_ts:
        if penultimate_was_ts:
            scores[begin:] = NEG_INF
        else:
            scores[: spec.eot] = NEG_INF
    stamps = [token for token in generated if token >= begin]
    if stamps:
        floor = stamps[-1] if last_was_ts and not penultimate_was_ts else stamps[-1] + 1
        scores[begin:floor] = NEG_INF
    if not generated:
        scores[:begin] = NEG_INF
        if spec.max_initial_timestamp_index is not None:
            scores[begin + spec.max_initial_timestamp_index + 1 :] = NEG_INF
    shifted = scores - scores.max()
    log_probs = shifted - np.log(np.exp(shifted).sum())
    timestamp_mass = np.logaddexp.reduce(log_probs[begin:])
    if timestamp_mass > log_probs[:begin].max():
        scores[:begin] = NEG_INF


def greedy_decode(
    runner: Runner, spec: DecodingSpec, features: np.ndarray, timestamps: bool
) -> list[int]:
    """Greedy tokens for one window (prompt and end-of-text excluded)."""
    prompt = list(spec.prefix) if timestamps else [*spec.prefix, spec.no_timestamps]
    suppress = np.array(spec.suppress_tokens, dtype=np.int64)
    begin_suppress = np.array(spec.begin_suppress_tokens, dtype=np.int64)
    runner.encode(features)
    for position, token in enumerate(prompt[:-1]):
        runner.decode_step(token, position)
    logits = runner.decode_step(prompt[-1], len(prompt) - 1)
    generated: list[int] = []
    while True:
        scores = np.array(logits, dtype=np.float32)
        scores[suppress] = NEG_INF
        if not generated:
            scores[begin_suppress] = NEG_INF
        if timestamps:
            _apply_timestamp_rules(scores, generated, spec)
        token = int(np.argmax(scores))
        if token == spec.eot:
            return generated
        generated.append(token)
        if len(prompt) + len(generated) >= spec.max_length:
            return generated
        logits = runner.decode_step(token, len(prompt) + len(generated) - 1)


def _complete_segments(tokens: list[int], begin: int, window_frames: int) -> tuple[list[int], int]:
    """The tokens of a window's complete segments and how many mel frames they cover."""
    is_stamp = [token >= begin for token in tokens]
    single_ending = is_stamp[-2:] == [False, True]
    pair_ends = [i + 1 for i in range(len(tokens) - 1) if is_stamp[i] and is_stamp[i + 1]]
    if not pair_ends or single_ending:
        return tokens, window_frames
    end = pair_ends[-1] + 1
    covered = (tokens[end - 2] - begin) * FRAMES_PER_TIMESTAMP
    # A window that covers nothing would repeat forever; move on as transformers would at its end.
    return tokens[:end], covered if covered > 0 else window_frames


def decode_long_form(runner: Runner, spec: DecodingSpec, mel: np.ndarray) -> list[int]:
    """Sequential 30 s windows over a whole-recording log-mel [n_mels, frames]."""
    seek, tokens = 0, []
    total = mel.shape[-1]
    while seek < total:
        frames = min(N_FRAMES, total - seek)
        window = np.zeros((1, mel.shape[0], N_FRAMES), dtype=np.float32)
        window[0, :, :frames] = mel[:, seek : seek + frames]
        kept, covered = _complete_segments(
            greedy_decode(runner, spec, window, timestamps=True), spec.timestamp_begin, frames
        )
        tokens += kept
        seek += covered
    return tokens
