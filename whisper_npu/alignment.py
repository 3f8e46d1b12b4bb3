"""Word timestamps from the alignment heads' cross-attention, as openai-whisper's `timing.py`
and faster-whisper's `add_word_timestamps` make them, in numpy alone: the runtime has no torch
for the median filter and no numba for the DTW.

The decoder graph gives, at each decode step, the raw (pre-softmax, already scaled) scores of
the alignment heads over the encoder positions of the window. One row per step that predicted a
text token, plus the step that predicted what followed the last one, is what openai-whisper's
`find_alignment` reads (`matrix[len(sot_sequence):-1]`); from there the steps are the same:
softmax over the real audio's positions, per-head normalization over the tokens, a median filter
along time, the mean over heads, DTW, word boundaries from the DTW's jumps, and the duration
heuristics that trim words at sentence ends, after pauses and at segment bounds.

Floating-point choices follow the originals so results compare one to one: the attention
processing in float32 (openai-whisper on CPU), the DTW's costs as `dtw_cpu(x.double())` keeps
them (float64 inputs, sums stored in a float32 table), and times rounded with numpy's rounding
(`round()` of a numpy float64, as both originals do).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from whisper_npu.whisper_io import SAMPLE_RATE

if TYPE_CHECKING:
    from tokenizers import Tokenizer

TOKENS_PER_SECOND = 50  # encoder positions per second: one per two 10 ms mel frames
# The fullwidth marks are meant: faster-whisper's sets, for Chinese and Japanese text.
SENTENCE_END_MARKS = ".。!！?？"  # noqa: RUF001
# Languages written without spaces: words are cut wherever the tokens decode to whole characters
# (faster-whisper's and openai-whisper's choice, short of a morphological analyser).
UNICODE_SPLIT_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
REPLACEMENT_CHAR = "\ufffd"  # what a byte-level decoder gives for an incomplete UTF-8 sequence


@dataclass(frozen=True)
class AlignmentOptions:
    """The knobs of word alignment, with faster-whisper's (and openai-whisper's) defaults."""

    median_filter_width: int = 7  # odd; smooths each head's attention along time
    # Punctuation glued to the word after it (prepended) or before it (appended).
    prepend_punctuations: str = "\"'“¿([{-"
    append_punctuations: str = "\"'.。,，!！?？:：”)]}、"  # noqa: RUF001


DEFAULT_OPTIONS = AlignmentOptions()


@dataclass(frozen=True)
class Word:
    """One word of a transcript, with its leading space as the tokenizer gives it."""

    word: str
    start: float  # absolute seconds
    end: float
    probability: float  # mean of its tokens' probabilities


@dataclass(frozen=True)
class TimedSegment:
    """One segment of a window, as the decoder produced it."""

    text_tokens: tuple[int, ...]  # its text tokens, timestamp tokens removed
    start: float  # absolute seconds
    end: float


@dataclass(frozen=True)
class AlignedSegment:
    """A segment with its words; its times as the word heuristics left them."""

    words: tuple[Word, ...]
    start: float
    end: float


@dataclass(frozen=True, eq=False)
class WindowAttention:
    """What one window's decode collected for alignment.

    `scores` is float [n_text + 1, heads, n_audio_ctx]: the alignment heads' raw scores of the
    decode steps; row k predicted text token k, the last row predicted what followed the last
    text token (a timestamp or end-of-text).
    """

    scores: NDArray[np.floating]
    token_probs: Sequence[float]  # each text token's probability
    num_frames: int  # mel frames of real audio in the window (at most 3000)
    time_offset: float  # the window's start, absolute seconds


@dataclass(frozen=True)
class WordTiming:
    """One word as DTW placed it in its window (seconds from the window's start), before the
    words are shared out among segments."""

    word: str
    tokens: tuple[int, ...]
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class _Durations:
    """The window's median word duration (at most 0.7 s) and twice it: the yardsticks of the
    heuristics that trim words which DTW stretched over silence."""

    median: float
    max: float


@dataclass(frozen=True, eq=False)
class WordSplitter:
    """Token ids to words exactly as faster-whisper's `Tokenizer.split_to_word_tokens`, on the
    `tokenizers.Tokenizer` the runtime already holds."""

    tokenizer: Tokenizer
    eot: int  # <|endoftext|>: it and every id above are special
    language: str = "en"

    def split(self, tokens: Sequence[int]) -> tuple[list[str], list[list[int]]]:
        """The words and each word's tokens."""
        if self.language in UNICODE_SPLIT_LANGUAGES:
            return self.split_on_unicode(tokens)
        return self.split_on_spaces(tokens)

    def split_on_unicode(self, tokens: Sequence[int]) -> tuple[list[str], list[list[int]]]:
        """Cut after each token that completes a character; tokens left over at the end that
        never complete one are dropped, as in the original."""
        decoded_full = self._decode(tokens)
        words: list[str] = []
        word_tokens: list[list[int]] = []
        current: list[int] = []
        offset = 0
        for token in tokens:
            current.append(token)
            decoded = self._decode(current)
            index = decoded.find(REPLACEMENT_CHAR)
            # A replacement character that the full text has too is real text, not a cut byte.
            if index < 0 or (
                index + offset < len(decoded_full)
                and decoded_full[index + offset] == REPLACEMENT_CHAR
            ):
                words.append(decoded)
                word_tokens.append(current)
                current = []
                offset += len(decoded)
        return words, word_tokens

    def split_on_spaces(self, tokens: Sequence[int]) -> tuple[list[str], list[list[int]]]:
        """Characters joined into words that start at a space, a punctuation mark or a special
        token."""
        words: list[str] = []
        word_tokens: list[list[int]] = []
        for subword, subword_tokens in zip(*self.split_on_unicode(tokens), strict=True):
            special = subword_tokens[0] >= self.eot
            with_space = subword.startswith(" ")
            # `in` on a string is a substring test, as in the original ("" counts too).
            punctuation = subword.strip() in string.punctuation
            if special or with_space or punctuation or not words:
                words.append(subword)
                word_tokens.append(list(subword_tokens))
            else:
                words[-1] += subword
                word_tokens[-1].extend(subword_tokens)
        return words, word_tokens

    def _decode(self, tokens: Sequence[int]) -> str:
        # Special tokens decode to "" (skip_special_tokens), as faster-whisper decodes them.
        return str(self.tokenizer.decode(list(tokens)))


def median_filter(x: NDArray[np.floating], width: int) -> NDArray[np.floating]:
    """Median over a window of `width` along the last axis, reflect-padded like torch's
    `F.pad(mode="reflect")`; an axis no longer than the padding is returned as it is, as
    openai-whisper's `median_filter` does.

    A sorting network on the `width` shifted copies of the axis: some thirty elementwise
    min/max over whole arrays cost half of what np.partition over millions of 7-value windows
    does, and pick the very same element.
    """
    if width < 1 or width % 2 == 0:
        raise ValueError(f"median filter width must be a positive odd number, not {width}")
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad, pad)], mode="reflect")
    lanes = [padded[..., k : k + x.shape[-1]] for k in range(width)]
    for a, b, low, high in _median_network(width):
        first, second = lanes[a], lanes[b]
        if low:
            lanes[a] = np.minimum(first, second)
        if high:
            lanes[b] = np.maximum(first, second)
    return lanes[pad]


@lru_cache
def _median_network(width: int) -> tuple[tuple[int, int, bool, bool], ...]:
    """The comparators of an odd-even transposition sort of `width` values that the middle
    output depends on: (a, b, whether a takes the minimum, whether b takes the maximum), each
    output kept only where a later comparator or the median reads it."""
    comparators = [(i, i + 1) for rnd in range(width) for i in range(rnd % 2, width - 1, 2)]
    needed = {width // 2}
    kept = []
    for a, b in reversed(comparators):
        low, high = a in needed, b in needed
        if low or high:
            kept.append((a, b, low, high))
            needed |= {a, b}
    return tuple(reversed(kept))


def dtw(x: NDArray[np.floating]) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """The cheapest monotonic path through the cost matrix x [tokens, frames]: (text indices,
    time indices) of each step, as openai-whisper's `dtw_cpu` and `backtrace` give them, ties
    broken the same way."""
    trace = _dtw_trace(np.asarray(x, dtype=np.float64))
    return _backtrace(trace, *x.shape)


def _dtw_trace(x: NDArray[np.float64]) -> NDArray[np.int8]:
    """The DTW's choice at every cell, computed one anti-diagonal at a time: the cells of a
    diagonal depend only on the two before it, so each diagonal is one vectorized step.

    Both arrays are skewed: cell (i, j) of openai-whisper's [N+1, M+1] `cost` and `trace` lives
    at [i + j, i]. Every cell is computed as in `dtw_cpu` (a float64 sum stored as float32, the
    same comparisons), so the trace is identical, ties included.
    """
    n, m = x.shape
    # skewed_x[d - 2, i - 1] = x[i - 1, d - i - 1]: the costs entered by diagonal d.
    skewed = np.full((n, n + m), np.inf)
    rows = np.arange(n)[:, None]
    skewed[rows, rows + np.arange(m)] = x
    skewed_x = skewed.T
    cost = np.full((n + m + 1, n + 1), np.inf, dtype=np.float32)
    cost[0, 0] = 0.0
    trace = np.full((n + m + 1, n + 1), 2, dtype=np.int8)
    for d in range(2, n + m + 1):
        lo, hi = max(1, d - m), min(n, d - 1)
        c0 = cost[d - 2, lo - 1 : hi]  # (i-1, j-1)
        c1 = cost[d - 1, lo - 1 : hi]  # (i-1, j)
        c2 = cost[d - 1, lo : hi + 1]  # (i, j-1)
        t0 = (c0 < c1) & (c0 < c2)
        t1 = (c1 < c0) & (c1 < c2)
        # Not the plain minimum: with c0 == c1 < c2 the original takes c2, and so must we.
        chosen = np.where(t0, c0, np.where(t1, c1, c2))
        cost[d, lo : hi + 1] = skewed_x[d - 2, lo - 1 : hi] + chosen
        trace[d, lo : hi + 1] = 2 - 2 * t0 - t1
    return trace


def _backtrace(
    trace: NDArray[np.int8], n: int, m: int
) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """openai-whisper's `backtrace` on the skewed trace; the first row and column step left and
    up, as its `trace[0, :] = 2` and `trace[:, 0] = 1` make them."""
    i, j = n, m
    text: list[int] = []
    time: list[int] = []
    while i > 0 or j > 0:
        text.append(i - 1)
        time.append(j - 1)
        step = 2 if i == 0 else 1 if j == 0 else int(trace[i + j, i])
        if step == 0:
            i, j = i - 1, j - 1
        elif step == 1:
            i -= 1
        else:
            j -= 1
    return np.array(text[::-1], dtype=np.intp), np.array(time[::-1], dtype=np.intp)


def attention_matrix(
    scores: NDArray[np.floating], num_frames: int, median_filter_width: int
) -> NDArray[np.float32]:
    """openai-whisper's `find_alignment` up to the DTW: scores [tokens, heads, positions] to
    [tokens, num_frames // 2], higher where a token attends to a frame."""
    weights = np.asarray(scores, dtype=np.float32)[:, :, : num_frames // 2].transpose(1, 0, 2)
    weights = np.exp(weights - weights.max(axis=-1, keepdims=True))
    weights /= weights.sum(axis=-1, keepdims=True)
    mean = weights.mean(axis=1, keepdims=True)
    std = weights.std(axis=1, keepdims=True)
    # Where every token attends a frame alike the original divides 0 by 0; 0 is what it means.
    weights = (weights - mean) / np.where(std > 0, std, np.float32(1))
    return np.asarray(median_filter(weights, median_filter_width).mean(axis=0), np.float32)


def word_timings(
    path: tuple[NDArray[np.intp], NDArray[np.intp]],
    text_tokens: Sequence[int],
    token_probs: Sequence[float],
    splitter: WordSplitter,
) -> list[WordTiming]:
    """faster-whisper's `find_alignment` after the DTW: each word starts where the path first
    reaches its first token's row and ends where it reaches the next word's."""
    text_indices, time_indices = path
    words, word_tokens = splitter.split([*text_tokens, splitter.eot])
    if len(word_tokens) <= 1:  # only end-of-text: the text never completed a character
        return []
    boundaries = np.pad(np.cumsum([len(tokens) for tokens in word_tokens[:-1]]), (1, 0))
    jumps = np.pad(np.diff(text_indices), (1, 0), constant_values=1).astype(bool)
    jump_times = (time_indices[jumps] / TOKENS_PER_SECOND).tolist()
    probs = np.asarray(token_probs, dtype=np.float64)
    return [
        WordTiming(
            word,
            tuple(tokens),
            jump_times[begin],
            jump_times[end],
            float(np.mean(probs[begin:end])),
        )
        for word, tokens, begin, end in zip(
            words, word_tokens, boundaries[:-1].tolist(), boundaries[1:].tolist(), strict=False
        )
    ]


def merge_punctuations(
    timings: Sequence[WordTiming], prepended: str, appended: str
) -> list[WordTiming]:
    """faster-whisper's `merge_punctuations`: an opening mark joins the word after it, a closing
    mark the word before it; the mark's own entry stays, emptied, so token counts still add up
    when the words are shared out among segments."""
    words = [timing.word for timing in timings]
    tokens = [list(timing.tokens) for timing in timings]
    i, j = len(words) - 2, len(words) - 1
    while i >= 0:
        if words[i].startswith(" ") and words[i].strip() in prepended:
            words[j], tokens[j] = words[i] + words[j], tokens[i] + tokens[j]
            words[i], tokens[i] = "", []
        else:
            j = i
        i -= 1
    i, j = 0, 1
    while j < len(words):
        if not words[i].endswith(" ") and words[j] in appended:
            words[i], tokens[i] = words[i] + words[j], tokens[i] + tokens[j]
            words[j], tokens[j] = "", []
        else:
            i = j
        j += 1
    return [
        replace(timing, word=word, tokens=tuple(ids))
        for timing, word, ids in zip(timings, words, tokens, strict=True)
    ]


def _durations(timings: Sequence[WordTiming]) -> _Durations:
    lengths = np.array([timing.end - timing.start for timing in timings])
    lengths = lengths[lengths.nonzero()]
    median = min(0.7, float(np.median(lengths))) if len(lengths) else 0.0
    return _Durations(median, median * 2)


def _truncate_at_sentence_ends(
    timings: Sequence[WordTiming], durations: _Durations
) -> list[WordTiming]:
    """A word longer than twice the median at a sentence end (the mark itself, or the word after
    it) most likely spans a pause: cut it to twice the median. With no word of non-zero length
    the limit is 0 and nothing is longer, as the original's guard has it."""
    out = list(timings)
    for i in range(1, len(out)):
        timing = out[i]
        if timing.end - timing.start <= durations.max:
            continue
        if timing.word in SENTENCE_END_MARKS:
            out[i] = replace(timing, end=timing.start + durations.max)
        elif out[i - 1].word in SENTENCE_END_MARKS:
            out[i] = replace(timing, start=timing.end - durations.max)
    return out


def _round2(seconds: float) -> float:
    # numpy's rounding, not Python's: the originals round numpy float64s (a few values differ).
    return float(np.round(seconds, 2))


def _share_out(
    timings: Sequence[WordTiming], segments: Sequence[TimedSegment], time_offset: float
) -> list[list[Word]]:
    """Each segment's words: as many timings as cover its tokens, the emptied punctuation
    entries skipped; times made absolute and rounded to 0.01 s."""
    index = 0
    shared: list[list[Word]] = []
    for segment in segments:
        saved = 0
        words: list[Word] = []
        while index < len(timings) and saved < len(segment.text_tokens):
            timing = timings[index]
            if timing.word:
                start = _round2(time_offset + timing.start)
                end = _round2(time_offset + timing.end)
                words.append(Word(timing.word, start, end, timing.probability))
            saved += len(timing.tokens)
            index += 1
        shared.append(words)
    return shared


def _trim_after_pause(words: list[Word], last_speech: float, durations: _Durations) -> list[Word]:
    """The first word after a pause often absorbs it: keep it (and the second word) within
    twice the median duration."""
    first = words[0]
    long_pair = len(words) > 1 and words[1].end - first.start > durations.max * 2
    paused = first.end - last_speech > durations.median * 4
    if not (paused and (first.end - first.start > durations.max or long_pair)):
        return words
    out = list(words)
    if len(out) > 1 and out[1].end - out[1].start > durations.max:
        boundary = max(out[1].end / 2, out[1].end - durations.max)
        out[0] = replace(out[0], end=boundary)
        out[1] = replace(out[1], start=boundary)
    out[0] = replace(out[0], start=max(0.0, out[0].end - durations.max))
    return out


def _fit_segment(
    words: list[Word], segment: TimedSegment, last_speech: float, durations: _Durations
) -> AlignedSegment:
    """The segment's bounds and its first and last words, reconciled: a word reaching more
    than 0.5 s past the decoder's timestamp is cut back to it, else the segment takes the
    word's time."""
    if not words:
        return AlignedSegment((), segment.start, segment.end)
    out = _trim_after_pause(words, last_speech, durations)
    start, end = segment.start, segment.end
    if start < out[0].end and start - 0.5 > out[0].start:
        out[0] = replace(out[0], start=max(0.0, min(out[0].end - durations.median, start)))
    else:
        start = out[0].start
    if end > out[-1].start and end + 0.5 < out[-1].end:
        out[-1] = replace(out[-1], end=max(out[-1].start + durations.median, end))
    else:
        end = out[-1].end
    return AlignedSegment(tuple(out), start, end)


def _check(window: WindowAttention, n_text: int) -> None:
    shape = window.scores.shape
    if len(shape) != 3 or shape[0] != n_text + 1:
        raise ValueError(
            f"alignment scores {shape}: need [{n_text + 1}, heads, positions] "
            f"for {n_text} text tokens"
        )
    if len(window.token_probs) != n_text:
        raise ValueError(f"{len(window.token_probs)} token probabilities for {n_text} text tokens")


def align_window(
    window: WindowAttention,
    segments: Sequence[TimedSegment],
    splitter: WordSplitter,
    last_speech_timestamp: float,
    options: AlignmentOptions = DEFAULT_OPTIONS,
) -> tuple[list[AlignedSegment], float]:
    """The window's segments with their words, and the end of the last speech for the next
    window: faster-whisper's `add_word_timestamps` for one window. A window without text tokens
    or without audio gives segments without words."""
    text_tokens = [token for segment in segments for token in segment.text_tokens]
    if not text_tokens or window.num_frames < 2:
        return [AlignedSegment((), s.start, s.end) for s in segments], last_speech_timestamp
    _check(window, len(text_tokens))
    matrix = attention_matrix(window.scores, window.num_frames, options.median_filter_width)
    timings = word_timings(dtw(-matrix), text_tokens, window.token_probs, splitter)
    durations = _durations(timings)
    timings = _truncate_at_sentence_ends(timings, durations)
    timings = merge_punctuations(timings, options.prepend_punctuations, options.append_punctuations)
    aligned: list[AlignedSegment] = []
    words_per_segment = _share_out(timings, segments, window.time_offset)
    for segment, words in zip(segments, words_per_segment, strict=True):
        aligned.append(_fit_segment(words, segment, last_speech_timestamp, durations))
        if words:
            last_speech_timestamp = aligned[-1].end
    return aligned, last_speech_timestamp


def speech_levels(samples: NDArray[np.floating]) -> NDArray[np.float32]:
    """Peak |sample| per encoder position (20 ms): what `in_speech` reads silence from."""
    size = SAMPLE_RATE // TOKENS_PER_SECOND
    frames = -(-samples.size // size)
    padded = np.zeros(frames * size, np.float32)
    padded[: samples.size] = samples
    levels: NDArray[np.float32] = np.abs(padded.reshape(frames, size)).max(axis=1)
    return levels


# The noise floor near a segment: the 10th percentile of the 20 ms peaks within 15 s of it.
NOISE_PERCENTILE = 10
NOISE_CONTEXT_S = 15.0
NOISE_MARGIN_DB = 6.0  # a frame this far above that floor is speech


def in_speech(words: Sequence[Word], levels: NDArray[np.float32], floor_db: float) -> list[Word]:
    """Words trimmed out of the silence around them: each word's start moves to its first
    20 ms frame of speech, its end back to its last; a word with no such frame stays.

    DTW gives every frame to some token, so a word next to a pause takes the pause: the first
    word after silence starts early, the last one before it ends late (by 0.3 s and more on
    this project's test clips; stable-ts trims with loudness for the same reason). A frame is
    speech above both `floor_db` below the loudest frame of the words' span and NOISE_MARGIN_DB
    above the noise floor around them, so steady noise does not hide a pause, and audio with
    no quieter pause changes nothing. Times only shrink: no two words come to overlap.
    """
    if not words:
        return []
    first, last = _frame(words[0].start), _frame(words[-1].end, up=True)
    span = levels[first:last]
    if span.size == 0 or span.max() <= 0:
        return list(words)
    context = round(NOISE_CONTEXT_S * TOKENS_PER_SECOND)
    noise = np.percentile(levels[max(0, first - context) : last + context], NOISE_PERCENTILE)
    floor = max(span.max() * 10 ** (floor_db / 20), noise * 10 ** (NOISE_MARGIN_DB / 20))
    loud = levels > floor
    return [_trimmed(word, loud) for word in words]


def _trimmed(word: Word, loud: NDArray[np.bool_]) -> Word:
    first, last = _frame(word.start), _frame(word.end, up=True)
    inside = np.flatnonzero(loud[first:last])
    if inside.size == 0:
        return word
    start = max(word.start, (first + int(inside[0])) / TOKENS_PER_SECOND)
    end = min(word.end, (first + int(inside[-1]) + 1) / TOKENS_PER_SECOND)
    return replace(word, start=round(start, 3), end=round(max(start, end), 3))


def _frame(seconds: float, up: bool = False) -> int:
    position = seconds * TOKENS_PER_SECOND
    return max(0, int(np.ceil(position - 1e-9) if up else np.floor(position + 1e-9)))
