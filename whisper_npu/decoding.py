"""The one decode loop, shared by every backend through the `Runner` protocol.

Greedy decoding follows transformers' Whisper generation exactly (so transcripts can be compared
token for token): suppressed tokens every step, begin-suppressed tokens at the first step, and in
timestamp mode the rules of WhisperTimeStampLogitsProcessor. Audio longer than one window (or
any audio when timestamps are asked for) is decoded sequentially with timestamps: each window's
last complete segment tells where the next window starts (transformers' and OpenAI's long-form
strategy).

The hallucination guards are OpenAI's `transcribe()`: a window whose text compresses too well
(a loop) or whose tokens are too unlikely is decoded again by sampling at the next temperature,
and a window the model calls silence (`<|nospeech|>` at the first step) with unlikely tokens
gives no text. A window that passes them keeps its greedy tokens. A fallback decodes again on
the same encoder output (`Runner.reset`): it costs decoder steps only.

An initial prompt (OpenAI's `initial_prompt`) is decoded before the window's own prompt, after
`<|startofprev|>`; it conditions the windows up to the first one that is not judged silent, as
OpenAI's `transcribe()` does with `condition_on_previous_text=False`.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from whisper_npu.errors import UserError
from whisper_npu.whisper_io import FRAMES_PER_TIMESTAMP, HOP_LENGTH, N_FRAMES

TRANSCRIBE, TRANSLATE = "transcribe", "translate"

NEG_INF = np.float32(-np.inf)
# An initial prompt longer than this is refused, not read: the model reads its last 223 tokens
# (about 1000 characters), and the cap bounds what one request makes the tokenizer do.
MAX_PROMPT_CHARS = 8192


class Runner(Protocol):
    """A Whisper backend: one encoder call per window, one decoder call per token.

    A runner may also have `reset()`: clear the self-attention cache and keep the encoder
    output, so the next decode_step starts a new decode of the same window (a guard fallback
    then costs decoder steps only; without it the window is encoded again), and
    `alignment()`: the alignment heads' cross-attention scores [heads, n_audio_ctx] of the last
    decode_step, None where its graph has no such output (word timestamps need them)."""

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

    @property
    def no_speech(self) -> int:
        """<|nospeech|> (<|nocaptions|> in English-only vocabularies): every Whisper vocabulary
        puts it right before <|notimestamps|>."""
        return self.no_timestamps - 1

    @property
    def start_of_prev(self) -> int:
        """<|startofprev|>, which opens an initial prompt: right before <|nospeech|>."""
        return self.no_timestamps - 2

    @property
    def max_previous(self) -> int:
        """How many initial-prompt tokens a window takes (the last ones): OpenAI's and
        transformers' n_text_ctx // 2 - 1, 223 for Whisper's 448 positions. With
        <|startofprev|> and at most 4 tokens of the window's own prompt that leaves 220
        positions to decode, about OpenAI's own sample_len (224)."""
        return self.max_length // 2 - 1

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


@dataclass(frozen=True)
class TranscribeOptions:
    """Everything that decides how audio becomes text, in one place. The guard defaults are
    OpenAI's `transcribe()`; `None` switches a guard off. `plain()` is the pipeline's decoding
    (greedy, no guards), whose transcripts the parity and WER figures are measured on."""

    timestamps: bool = False  # segment times from timestamp tokens, also for clips under 30 s
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # fallback order
    compression_ratio_threshold: float | None = 2.4  # text that zlib-compresses more is a loop
    logprob_threshold: float | None = -1.0  # mean token log-prob below this: decode again
    no_speech_threshold: float | None = 0.6  # with logprob_threshold: silence gives no text
    # Not OpenAI's: a window stops once its last text tokens are one n-gram (up to 16 tokens)
    # repeated this many times, so a loop costs a few steps instead of the whole cache.
    repetition_limit: int | None = 8
    # Not OpenAI's: a window whose samples all stay below this level (dBFS) is silence and is
    # not decoded. On digital silence Whisper is sure of both <|nospeech|> and "you", so
    # OpenAI's rule keeps the "you".
    silence_db: float | None = -60.0
    # Not OpenAI's: a segment of punctuation and spaces alone (". . . . ." on quiet noise) is
    # no text: it is dropped, with its tokens, from the segments and the text.
    drop_textless: bool = True
    seed: int = 0  # the sampler's generator: fallback decodes are reproducible
    # Multilingual bundles: "auto" (detected from the first window), a code such as "fr", or
    # None for the bundle's default; English-only bundles take None or "en" only.
    language: str | None = None
    task: str = TRANSCRIBE  # or TRANSLATE (multilingual bundles)
    # OpenAI's initial_prompt: text decoded before the first window's prompt (spelling, names,
    # style). Only its last DecodingSpec.max_previous tokens count; None or blank: no prompt.
    initial_prompt: str | None = None
    # Word times from the alignment heads' cross-attention (whisper_npu.alignment); implies
    # timestamps. Needs a bundle exported with the decoder's alignment output.
    word_timestamps: bool = False
    # Not openai-whisper's: with word timestamps, 20 ms frames this far (dB) below the loudest of
    # a segment are silence, and its words are trimmed out of it (alignment.in_speech); None
    # keeps the times the cross-attention gives.
    word_floor_db: float | None = -40.0

    def __post_init__(self) -> None:
        prompt = self.initial_prompt
        if prompt is not None and not isinstance(prompt, str):
            raise UserError(f"initial prompt must be text, got {type(prompt).__name__}")
        if prompt is not None and len(prompt) > MAX_PROMPT_CHARS:
            raise UserError(
                f"initial prompt is {len(prompt)} characters long, more than {MAX_PROMPT_CHARS}"
                " (Whisper reads only its last 223 tokens, about 1000 characters)"
            )
        if self.task not in (TRANSCRIBE, TRANSLATE):
            raise UserError(f"task must be {TRANSCRIBE} or {TRANSLATE}, got {self.task!r}")
        if not self.temperatures or not all(
            math.isfinite(t) and 0 <= t <= 2 for t in self.temperatures
        ):
            raise UserError(
                f"temperatures must be 1 or more numbers in 0..2, got {self.temperatures}"
            )
        for name in (
            "compression_ratio_threshold",
            "logprob_threshold",
            "no_speech_threshold",
            "silence_db",
            "word_floor_db",
        ):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                raise UserError(f"{name} must be a finite number or None, got {value}")
        if self.repetition_limit is not None and self.repetition_limit < 2:
            raise UserError(f"repetition_limit must be >= 2 or None, got {self.repetition_limit}")

    @classmethod
    def plain(cls, timestamps: bool = False) -> TranscribeOptions:
        return cls(
            timestamps=timestamps,
            temperatures=(0.0,),
            compression_ratio_threshold=None,
            logprob_threshold=None,
            no_speech_threshold=None,
            repetition_limit=None,
            silence_db=None,
            drop_textless=False,
        )


@dataclass(frozen=True)
class Sampling:
    """How one decode picks tokens: greedy at temperature 0, else sampled from `rng`."""

    temperature: float = 0.0
    rng: np.random.Generator | None = None
    repetition_limit: int | None = None


@dataclass(frozen=True)
class WindowTokens:
    """One window's decode: its tokens (prompt and end-of-text excluded) and the figures the
    guards judge it by."""

    tokens: list[int]
    sum_logprob: float
    no_speech_prob: float
    temperature: float
    looped: bool = False  # stopped by the repetition guard
    compression_ratio: float = 0.0  # of its text; set where the text is known
    logprobs: tuple[float, ...] = ()  # each token's, as sum_logprob adds them
    # With word timestamps: the runner's alignment scores at each pick [picks, heads,
    # n_audio_ctx]: row k predicted tokens[k]; a last row predicted end-of-text when reached.
    attention: np.ndarray | None = None

    @property
    def avg_logprob(self) -> float:
        """OpenAI's: the end-of-text step counts in the length but not in the sum."""
        return self.sum_logprob / (len(self.tokens) + 1)


GREEDY = Sampling()
SILENCE = WindowTokens([], 0.0, no_speech_prob=1.0, temperature=0.0)  # not decoded
MAX_REPEATED_NGRAM = 16


def _log_softmax_at(scores: np.ndarray, index: int) -> float:
    top = scores.max()
    return float(scores[index] - top - np.log(np.exp(scores - top).sum()))


def _pick(scores: np.ndarray, sampling: Sampling) -> tuple[int, float]:
    """The next token and its log-prob under the filtered logits (OpenAI scores sampled tokens
    at temperature 1, not at the sampling temperature)."""
    if sampling.temperature == 0 or sampling.rng is None:
        token = int(np.argmax(scores))
    else:  # Gumbel-max: a draw from softmax(scores / T); -inf scores are never drawn
        noise = sampling.rng.gumbel(size=scores.shape).astype(np.float32)
        token = int(np.argmax(scores / np.float32(sampling.temperature) + noise))
    return token, _log_softmax_at(scores, token)


def _looping(generated: list[int], text_end: int, limit: int) -> bool:
    """True when the text tokens end in one n-gram repeated `limit` times (timestamps between
    the repeats do not hide a loop)."""
    text = [token for token in generated if token < text_end]
    for n in range(1, MAX_REPEATED_NGRAM + 1):
        if n * limit > len(text):
            return False
        if text[-n * limit :] == text[-n:] * limit:
            return True
    return False


def decode_window(
    runner: Runner,
    spec: DecodingSpec,
    features: np.ndarray,
    timestamps: bool,
    sampling: Sampling = GREEDY,
) -> WindowTokens:
    """One window, from the encoder to end-of-text or the cache limit."""
    runner.encode(features)
    return decode_encoded(runner, spec, timestamps, sampling)


def _attention_row(runner: Runner) -> np.ndarray:
    alignment = getattr(runner, "alignment", None)
    row: np.ndarray | None = alignment() if alignment is not None else None
    if row is None:
        raise UserError("this bundle's decoder has no alignment output: word timestamps need one")
    return row.copy()


def decode_encoded(  # noqa: PLR0913 -- the window's decode settings, each its own
    runner: Runner,
    spec: DecodingSpec,
    timestamps: bool,
    sampling: Sampling = GREEDY,
    previous: tuple[int, ...] = (),
    align: bool = False,
) -> WindowTokens:
    """One window on the encoder output the runner holds, its self-attention cache empty (just
    encoded or reset). `previous`: initial-prompt tokens, fed after <|startofprev|>; `align`:
    keep the alignment scores of every pick (word timestamps)."""
    context = [spec.start_of_prev, *previous] if previous else []
    window_prompt = list(spec.prefix) if timestamps else [*spec.prefix, spec.no_timestamps]
    prompt = [*context, *window_prompt]
    suppress = np.array(spec.suppress_tokens, dtype=np.int64)
    begin_suppress = np.array(spec.begin_suppress_tokens, dtype=np.int64)
    no_speech_prob = 0.0
    for position, token in enumerate(prompt):
        logits = runner.decode_step(token, position)
        if position == len(context):
            # OpenAI reads <|nospeech|> from the raw logits after <|startoftranscript|>.
            scores = np.asarray(logits, np.float32)
            no_speech_prob = math.exp(_log_softmax_at(scores, spec.no_speech))
    generated: list[int] = []
    logprobs: list[float] = []
    rows: list[np.ndarray] = []
    sum_logprob, looped = 0.0, False
    limit = sampling.repetition_limit
    while True:
        if align:
            rows.append(_attention_row(runner))
        scores = np.array(logits, dtype=np.float32)
        scores[suppress] = NEG_INF
        if not generated:
            scores[begin_suppress] = NEG_INF
        if timestamps:
            _apply_timestamp_rules(scores, generated, spec)
        token, logprob = _pick(scores, sampling)
        if token == spec.eot:
            break
        generated.append(token)
        logprobs.append(logprob)
        sum_logprob += logprob
        if limit and token < spec.eot and _looping(generated, spec.eot, limit):
            looped = True
            break
        if len(prompt) + len(generated) >= spec.max_length:
            break
        logits = runner.decode_step(token, len(prompt) + len(generated) - 1)
    attention = np.stack(rows) if rows else None
    return WindowTokens(
        generated,
        sum_logprob,
        no_speech_prob,
        sampling.temperature,
        looped,
        logprobs=tuple(logprobs),
        attention=attention,
    )


def greedy_decode(
    runner: Runner, spec: DecodingSpec, features: np.ndarray, timestamps: bool
) -> list[int]:
    """Greedy tokens for one window (prompt and end-of-text excluded)."""
    return decode_window(runner, spec, features, timestamps).tokens


def compression_ratio(text: str) -> float:
    """OpenAI's loop detector: how much better than 1:1 zlib compresses the text."""
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


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


@dataclass(frozen=True)
class Window:
    """One decoded window of a recording: where it starts, what it decoded, what it keeps."""

    seek: int  # first mel frame
    frames: int  # mel frames of audio in it (the rest is padding)
    decoded: WindowTokens
    kept: list[int]  # the tokens that count (none for a window judged silent)
    timestamps: bool


@dataclass
class WindowDecoder:
    """Windows of a log-mel through one runner, with OpenAI's guards and fallback."""

    runner: Runner
    spec: DecodingSpec
    text: Callable[[list[int]], str]  # tokens -> text, for the compression-ratio check
    options: TranscribeOptions = field(default_factory=TranscribeOptions.plain)
    previous: tuple[int, ...] = ()  # the initial prompt's tokens (after <|startofprev|>)

    def guarded(
        self,
        features: np.ndarray,
        timestamps: bool,
        rng: np.random.Generator,
        previous: tuple[int, ...] = (),
    ) -> WindowTokens:
        """OpenAI's decode_with_fallback: the first temperature whose decode passes the
        compression and log-prob checks (or that looks like silence), else the last one. The
        encoder runs once; each fallback decodes again on its output."""
        options = self.options
        self.runner.encode(features)
        for attempt, temperature in enumerate(options.temperatures):
            if attempt:
                self._restart(features)
            sampling = Sampling(temperature, rng, options.repetition_limit)
            found = decode_encoded(
                self.runner, self.spec, timestamps, sampling, previous, options.word_timestamps
            )
            ratio = compression_ratio(self.text(found.tokens))
            found = replace(found, compression_ratio=ratio)
            if not self._needs_fallback(found):
                return found
        return found

    def _restart(self, features: np.ndarray) -> None:
        """A new decode of the window just encoded: the runner's `reset` where it has one
        (OrtRunner), else the encoder again (same cross K/V, same tokens)."""
        reset = getattr(self.runner, "reset", None)
        if reset is None:
            self.runner.encode(features)
        else:
            reset()

    def _needs_fallback(self, found: WindowTokens) -> bool:
        options = self.options
        too_low = (
            options.logprob_threshold is not None and found.avg_logprob < options.logprob_threshold
        )
        if self._silent(found):
            return False  # silence: no fallback, the window gives no text
        too_compressible = (
            options.compression_ratio_threshold is not None
            and found.compression_ratio > options.compression_ratio_threshold
        )
        return found.looped or too_low or too_compressible

    def _silent(self, found: WindowTokens) -> bool:
        """OpenAI's no-speech rule: <|nospeech|> likely and the tokens unlikely."""
        options = self.options
        if (
            options.no_speech_threshold is None
            or found.no_speech_prob <= options.no_speech_threshold
        ):
            return False
        return options.logprob_threshold is None or found.avg_logprob < options.logprob_threshold

    def _quiet(self, samples: np.ndarray) -> bool:
        floor = self.options.silence_db
        return floor is not None and float(np.abs(samples).max(initial=0.0)) < 10 ** (floor / 20)

    def windows(self, mel: np.ndarray, samples: np.ndarray, timestamps: bool) -> Iterator[Window]:
        """Sequential windows over a whole-recording log-mel [n_mels, frames] of `samples`.
        Without timestamps the mel is one window padded to 30 s (a clip of at most 30 s)."""
        rng = np.random.default_rng(self.options.seed)
        previous = self.previous  # until a window is not judged silent (OpenAI's reset)
        seek, total = 0, mel.shape[-1]
        while seek < total:
            frames = min(N_FRAMES, total - seek)
            if self._quiet(samples[seek * HOP_LENGTH : (seek + frames) * HOP_LENGTH]):
                yield Window(seek, frames, SILENCE, [], timestamps)
                seek += frames
                continue
            window = np.zeros((1, mel.shape[0], N_FRAMES), dtype=np.float32)
            window[0, :, :frames] = mel[:, seek : seek + frames]
            found = self.guarded(window, timestamps, rng, previous)
            kept: list[int]
            if self._silent(found):
                kept, covered = [], frames
            elif timestamps:
                kept, covered = _complete_segments(found.tokens, self.spec.timestamp_begin, frames)
            else:
                kept, covered = found.tokens, total
            if not self._silent(found):
                previous = ()
            yield Window(seek, frames, found, kept, timestamps)
            seek += covered
