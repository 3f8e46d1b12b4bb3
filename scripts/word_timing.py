"""Word-timestamp accuracy against known boundaries, ours beside faster-whisper on the same
weights, and our decode time with and without word timestamps, in one run.

    python -m scripts.word_timing --artifact artifacts/bundles/fp32 --data artifacts/data
    python -m scripts.word_timing --snr 20      # the same clips under white noise

The test clips are the eval set's separately synthesised utterances, each cut to its speech
(the 10 ms frames whose peak is above 2% of the utterance's) and joined by silences of seeded
random length (0.5-2.5 s), six to a clip (about 30 s: some clips are long-form): each
utterance's first-word onset and last-word offset in the clip are known. Hypothesis words are
matched to the reference words by a word-level alignment of normalised text (difflib); an
utterance whose first or last word is unmatched counts as a miss (outside 0.3 s).

Ours is reported twice from the same decode: the cross-attention times alone (openai-whisper's
and faster-whisper's method) and trimmed out of silence (`word_floor_db`, the default). The
synthesised pauses are digital zeros, where trimming is easiest: `--snr` adds seeded white
noise to the whole clip, so the pauses are as loud as the noise. A figure to read, not a timed
test.
"""

from __future__ import annotations

import argparse
import difflib
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from whisper_npu import Model, Result

SAMPLE_RATE = 16_000
TOLERANCE_S = 0.3
FRAME = SAMPLE_RATE // 100  # 10 ms


@dataclass(frozen=True)
class Utterance:
    words: tuple[str, ...]  # normalised reference words
    onset: float  # seconds in the joined clip
    offset: float


@dataclass(frozen=True)
class JoinedClip:
    samples: np.ndarray
    utterances: tuple[Utterance, ...]


@dataclass(frozen=True)
class TimedWord:
    text: str  # normalised
    start: float
    end: float


@dataclass(frozen=True)
class Boundaries:
    """One utterance's errors (seconds); inf where its first or last word is unmatched."""

    onset: float
    offset: float

    @property
    def within(self) -> bool:
        return self.onset <= TOLERANCE_S and self.offset <= TOLERANCE_S


def normalise(text: str) -> list[str]:
    return re.sub(r"[^\w']+", " ", text.lower()).split()


def speech_bounds(samples: np.ndarray) -> tuple[int, int]:
    """First and last sample of the 10 ms frames whose peak is above 2% of the clip's."""
    frames = samples[: samples.size // FRAME * FRAME].reshape(-1, FRAME)
    loud = np.flatnonzero(np.abs(frames).max(axis=1) > 0.02 * np.abs(samples).max())
    return int(loud[0]) * FRAME, (int(loud[-1]) + 1) * FRAME


def _joined(group: Sequence[tuple[np.ndarray, str]], rng: np.random.Generator) -> JoinedClip:
    parts = [np.zeros(int(rng.uniform(0.5, 1.5) * SAMPLE_RATE), np.float32)]
    utterances, cursor = [], parts[0].size
    for samples, text in group:
        start, end = speech_bounds(samples)
        speech = samples[start:end]
        onset, offset = cursor / SAMPLE_RATE, (cursor + speech.size) / SAMPLE_RATE
        utterances.append(Utterance(tuple(normalise(text)), onset, offset))
        gap = np.zeros(int(rng.uniform(0.5, 2.5) * SAMPLE_RATE), np.float32)
        parts += [speech, gap]
        cursor += speech.size + gap.size
    return JoinedClip(np.concatenate(parts), tuple(utterances))


def join_clips(
    clips: Sequence[np.ndarray], texts: Sequence[str], per_clip: int, seed: int
) -> list[JoinedClip]:
    """Groups of `per_clip` utterances with silences between."""
    rng = np.random.default_rng(seed)
    pairs = list(zip(clips, texts, strict=True))
    starts = range(0, len(pairs) - per_clip + 1, per_clip)
    return [_joined(pairs[first : first + per_clip], rng) for first in starts]


def with_noise(clip: JoinedClip, snr_db: float, seed: int) -> JoinedClip:
    """White noise over the whole clip at `snr_db` below the speech's mean power."""
    speech = np.concatenate(
        [
            clip.samples[round(u.onset * SAMPLE_RATE) : round(u.offset * SAMPLE_RATE)]
            for u in clip.utterances
        ]
    )
    power = float(np.mean(speech.astype(np.float64) ** 2)) / 10 ** (snr_db / 10)
    noise = np.random.default_rng(seed).normal(0, power**0.5, clip.samples.size)
    return replace(clip, samples=(clip.samples + noise).astype(np.float32))


def boundary_errors(clip: JoinedClip, words: Sequence[TimedWord]) -> list[Boundaries]:
    reference = [w for u in clip.utterances for w in u.words]
    matcher = difflib.SequenceMatcher(None, reference, [w.text for w in words], autojunk=False)
    matched: dict[int, TimedWord] = {}
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or (tag == "replace" and i2 - i1 == j2 - j1):
            matched.update({i: words[j] for i, j in zip(range(i1, i2), range(j1, j2), strict=True)})
    errors, first = [], 0
    for utterance in clip.utterances:
        last = first + len(utterance.words) - 1
        onset = abs(matched[first].start - utterance.onset) if first in matched else np.inf
        offset = abs(matched[last].end - utterance.offset) if last in matched else np.inf
        errors.append(Boundaries(float(onset), float(offset)))
        first = last + 1
    return errors


def result_words(result: Result) -> list[TimedWord]:
    return [
        TimedWord(text, word.start, word.end)
        for segment in result.segments
        for word in segment.words or ()
        for text in normalise(word.word)
    ]


def faster_whisper_words(model: object, samples: np.ndarray) -> list[TimedWord]:
    segments, _ = model.transcribe(  # type: ignore[attr-defined]
        samples,
        beam_size=1,
        word_timestamps=True,
        condition_on_previous_text=False,
        vad_filter=False,
        language="en",
    )
    return [
        TimedWord(text, word.start, word.end)
        for segment in segments
        for word in segment.words
        for text in normalise(word.word)
    ]


def summary(name: str, errors: Sequence[Boundaries]) -> str:
    within = sum(e.within for e in errors) / len(errors)
    finite = [x for e in errors for x in (e.onset, e.offset) if np.isfinite(x)]
    missed = sum(not np.isfinite(e.onset + e.offset) for e in errors)
    median, p90 = statistics.median(finite), float(np.percentile(finite, 90))
    return f"{name:<32} {within:7.1%} {median * 1000:10.0f} {p90 * 1000:8.0f} {missed:7d}"


def accuracy(
    model: Model, clips: Sequence[JoinedClip], peer: object | None
) -> dict[str, list[Boundaries]]:
    """Per engine, every utterance's boundary errors."""
    from whisper_npu import TranscribeOptions
    from whisper_npu.result import words_in_speech

    raw = TranscribeOptions(word_timestamps=True, word_floor_db=None)
    floor = TranscribeOptions().word_floor_db
    assert floor is not None
    found: dict[str, list[Boundaries]] = {}
    for clip in clips:
        result = model.transcribe(clip.samples, raw)
        trimmed = words_in_speech(result, clip.samples, floor)
        for name, words in (
            ("whisper-npu, cross-attention", result_words(result)),
            (f"whisper-npu, trimmed ({floor:g} dB)", result_words(trimmed)),
        ):
            found.setdefault(name, []).extend(boundary_errors(clip, words))
        if peer is not None:
            words = faster_whisper_words(peer, clip.samples)
            found.setdefault("faster-whisper 1.2.1 fp32", []).extend(boundary_errors(clip, words))
    return found


def _ms(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1000


def decode_times(model: Model, clips: Sequence[JoinedClip], repeats: int) -> str:
    """Segment timestamps vs word timestamps, interleaved clip by clip, paired ratio."""
    from whisper_npu import TranscribeOptions

    plain, worded = TranscribeOptions(timestamps=True), TranscribeOptions(word_timestamps=True)
    pairs = [
        (
            _ms(lambda c=clip: model.transcribe(c.samples, plain)),
            _ms(lambda c=clip: model.transcribe(c.samples, worded)),
        )
        for _ in range(repeats)
        for clip in clips
    ]
    ratio = statistics.median(w / p for p, w in pairs)
    return (
        f"decode ms per clip, median of {len(pairs)}: segment timestamps "
        f"{statistics.median(p for p, _ in pairs):.0f}, word timestamps "
        f"{statistics.median(w for _, w in pairs):.0f}; paired ratio {ratio:.3f}"
    )


def _step_ms(runner: object, steps: int) -> float:
    start = time.perf_counter()
    for position in range(steps):
        runner.decode_step(50257, position)  # type: ignore[attr-defined]
    return (time.perf_counter() - start) * 1000 / steps


def graph_cost(artifact: Path, model_dir: Path, repeats: int) -> str:
    """The decoder graph's own cost of the alignment output: the bundle's decoder beside the
    same export without it (a copy of the bundle whose decoder.onnx is re-exported with no
    alignment heads), 100 steps each, interleaved."""
    import shutil
    import tempfile

    from pipeline.export.onnx_bundle import export_graphs, load_for_export
    from whisper_npu.bundle import Bundle
    from whisper_npu.transcriber import OrtRunner

    with tempfile.TemporaryDirectory() as scratch:
        plain_root = Path(scratch) / "bundle"
        shutil.copytree(artifact, plain_root)
        bundle = Bundle.load(artifact)
        dims = replace(bundle.record.dims, alignment_heads=0)
        export_graphs(load_for_export(model_dir)[0], dims, plain_root)
        plain_record = bundle.record.but(dims=dims)
        runners = {
            "with": OrtRunner(bundle, threads=1),
            "without": OrtRunner(Bundle(plain_root, plain_record), threads=1),
        }
        features = np.zeros((1, dims.n_mels, 3000), np.float32)
        times: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(repeats):
            for name, runner in runners.items():
                runner.encode(features)
                times[name].append(_step_ms(runner, 100))
    with_ms, without_ms = (statistics.median(times[n]) for n in ("with", "without"))
    return (
        f"decoder step ms (1 thread, median of {repeats} x 100 steps): with the alignment "
        f"output {with_ms:.3f}, without {without_ms:.3f}; ratio {with_ms / without_ms:.3f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/bundles/fp32"))
    parser.add_argument("--data", type=Path, default=Path("artifacts/data"))
    parser.add_argument("--per-clip", type=int, default=6, help="utterances per joined clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snr", type=float, help="add white noise at this SNR (dB)")
    parser.add_argument("--threads", type=int, default=1, help="ORT and CTranslate2 threads")
    parser.add_argument("--repeats", type=int, default=3, help="decode-time repeats per clip")
    parser.add_argument("--no-peer", action="store_true", help="skip faster-whisper")
    parser.add_argument(
        "--model",
        type=Path,
        help="the model stage's directory: also time the decoder graph "
        "without the alignment output (needs the build stack)",
    )
    args = parser.parse_args()

    from pipeline.bench.evaluate import load_eval_clips
    from pipeline.sources.builtin import builtin_dir
    from whisper_npu import load

    eval_clips = load_eval_clips(args.data)
    clips = join_clips(eval_clips.samples, eval_clips.references, args.per_clip, args.seed)
    if args.snr is not None:
        clips = [with_noise(clip, args.snr, args.seed + i) for i, clip in enumerate(clips)]
    seconds = sum(clip.samples.size for clip in clips) / SAMPLE_RATE
    utterances = sum(len(clip.utterances) for clip in clips)
    noise = f", white noise at {args.snr:g} dB SNR" if args.snr is not None else ""
    print(f"{len(clips)} clips, {utterances} utterances, {seconds:.0f} s{noise}")
    model = load(args.artifact, threads=args.threads, device="cpu")
    peer = None
    if not args.no_peer:
        from faster_whisper import WhisperModel

        location = str(builtin_dir("builtin:tiny.en"))
        peer = WhisperModel(
            location, device="cpu", compute_type="float32", cpu_threads=args.threads
        )
    print(f"{'engine':<32} {'≤0.3 s':>7} {'median ms':>10} {'p90 ms':>8} {'missed':>7}")
    for name, errors in accuracy(model, clips, peer).items():
        print(summary(name, errors))
    if args.repeats:
        print(decode_times(model, clips, args.repeats))
    if args.model:
        print(graph_cost(args.artifact, args.model, max(args.repeats, 5)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
