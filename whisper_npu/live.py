"""Live transcription: a stream of 16 kHz samples in, utterances and their words out as they are
heard. The engine behind `serve`'s Realtime endpoint (`whisper_npu.realtime`) and
`transcribe --live`; it knows nothing of WebSockets, threads or the model: it says which audio to
decode (`next_job`) and turns the text it is given back (`finish`) into events.

Turn detection is an energy detector, the same on every install (AMD's environment has no
faster-whisper, hence no Silero): each 20 ms frame's RMS level in dBFS is mapped linearly onto a
score in [0, 1], 0 at -70 dBFS and 1 at -10 dBFS, so OpenAI's `threshold` 0.5 means -40 dBFS and a
higher threshold needs louder audio, as OpenAI documents. Speech starts after 60 ms of frames at or
above the threshold, and the utterance then begins `prefix_padding_ms` before them; it ends once
`silence_duration_ms` of frames stay below it, and that silence is committed with it.

Partial text follows LocalAgreement-2 (Macháček et al. 2023, "Turning Whisper into Real-Time
Transcription System"): every second of new speech the utterance so far is decoded again, and only
the words on which the last two hypotheses agree, beyond those already sent, are sent. Text once
sent is never taken back: the final transcript is the sent words followed by the final decode's
words after them. An utterance reaching one Whisper window (30 s) is committed at its quietest
20 ms of the last 2 s (most likely a pause between words) and the speech goes on as a new one, so
every decode is one window.
"""

from __future__ import annotations

import difflib
import math
import queue
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from whisper_npu.decoding import TranscribeOptions
from whisper_npu.errors import UserError
from whisper_npu.features import WINDOW_SAMPLES
from whisper_npu.whisper_io import SAMPLE_RATE

if TYPE_CHECKING:
    from av.audio.resampler import AudioResampler

DETECTOR = "energy"  # what decides speech and silence; sessions name it
FRAME_SAMPLES = SAMPLE_RATE // 50  # 20 ms
FLOOR_DB, CEIL_DB = -70.0, -10.0  # the levels that score 0 and 1
ONSET_FRAMES = 3  # 60 ms of loud frames start speech: a click does not
PARTIAL_STEP = SAMPLE_RATE  # new audio between two partial decodes of an utterance
MIN_COMMIT = SAMPLE_RATE // 10  # OpenAI refuses to commit less than 100 ms
CUT_SEARCH = 2 * SAMPLE_RATE  # where a 30 s utterance is cut: its quietest frame in the last 2 s
# No partial decode once this much silence ends the audio: the utterance is likely ending, and
# its final decode should not wait for a partial one.
PARTIAL_PAUSE = SAMPLE_RATE // 5
LIVE_EXTRA = "pip install 'whisper-npu[live]'"


@dataclass(frozen=True)
class TurnDetection:
    """OpenAI's `server_vad` settings, with its defaults."""

    threshold: float = 0.5  # frame score (see the module) at or above which a frame is speech
    prefix_padding_ms: int = 300  # audio kept before the speech that started an utterance
    silence_duration_ms: int = 500  # silence that ends an utterance

    def __post_init__(self) -> None:
        if not (math.isfinite(self.threshold) and 0 <= self.threshold <= 1):
            raise UserError(f"threshold must be between 0 and 1, got {self.threshold}")
        for name in ("prefix_padding_ms", "silence_duration_ms"):
            if not 0 <= getattr(self, name) <= 10_000:
                raise UserError(f"{name} must be 0 to 10000 ms, got {getattr(self, name)}")

    @property
    def prefix_samples(self) -> int:
        return self.prefix_padding_ms * SAMPLE_RATE // 1000

    @property
    def silence_samples(self) -> int:
        return max(FRAME_SAMPLES, self.silence_duration_ms * SAMPLE_RATE // 1000)


SERVER_VAD = TurnDetection()


def energy_scores(frames: np.ndarray) -> np.ndarray:
    """Each row's speech score: its RMS level in dBFS mapped from [FLOOR_DB, CEIL_DB] to [0, 1]."""
    rms = np.sqrt(np.mean(np.square(frames, dtype=np.float64), axis=1))
    level = 20 * np.log10(np.maximum(rms, 1e-10))
    scores: np.ndarray = np.clip((level - FLOOR_DB) / (CEIL_DB - FLOOR_DB), 0.0, 1.0)
    return scores


def pcm16(data: bytes) -> np.ndarray:
    """Little-endian int16 mono PCM as float32 samples in [-1, 1)."""
    if len(data) % 2:
        raise UserError(f"16-bit PCM has an even number of bytes, got {len(data)}")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


class Resampler:
    """A stream of mono float32 samples at `rate` to 16 kHz through one FFmpeg resampler, which
    keeps its filter's state between chunks (PyAV, as audio files are read)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._resampler: AudioResampler | None = None
        if rate != SAMPLE_RATE:
            from av.audio.resampler import AudioResampler

            self._resampler = AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        if self._resampler is None or not samples.size:
            return samples
        from av.audio.frame import AudioFrame

        frame = AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = self.rate
        out = [resampled.to_ndarray()[0] for resampled in self._resampler.resample(frame)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)


def _key(word: str) -> str:
    """A word as two hypotheses are compared: case and punctuation do not count."""
    return re.sub(r"[^\w']", "", word.lower()) or word


def _common_prefix(first: list[str], second: list[str]) -> int:
    count = 0
    for a, b in zip(first, second, strict=False):
        if _key(a) != _key(b):
            break
        count += 1
    return count


def continuation(sent: list[str], words: list[str]) -> int:
    """Where `words` (a newer hypothesis) goes on past the words already sent: the sent words
    aligned to it (case and punctuation aside), a word the model changed its mind about taking
    the place of the one sent, so that nothing is sent twice or skipped."""
    matcher = difflib.SequenceMatcher(
        None, [_key(w) for w in sent], [_key(w) for w in words], autojunk=False
    )
    cut = 0
    for tag, start, end, found_start, found_end in matcher.get_opcodes():
        if tag == "replace":
            cut = found_start + min(end - start, found_end - found_start)
        elif tag != "insert":  # words after the sent ones are not theirs
            cut = found_end
    return cut


@dataclass
class LocalAgreement:
    """LocalAgreement-2 over one utterance's hypotheses (see the module)."""

    sent: list[str] = field(default_factory=list)
    previous: list[str] = field(default_factory=list)
    done: bool = False  # completed or dropped: later hypotheses send nothing

    def update(self, hypothesis: str) -> str:
        """The delta to send for a new hypothesis: the newly agreed words, "" when none."""
        words = hypothesis.split()
        agreed = _common_prefix(self.previous, words)
        self.previous = words
        start = continuation(self.sent, words[:agreed])
        new = words[start:agreed]
        if self.done or not new:
            return ""
        delta = (" " if self.sent else "") + " ".join(new)
        self.sent += new
        return delta

    def complete(self, transcript: str) -> str:
        """The final transcript: everything sent, then the final decode's words after it."""
        words = transcript.split()
        self.done = True
        return " ".join(self.sent + words[continuation(self.sent, words) :])


@dataclass(frozen=True)
class SpeechStarted:
    item_id: str
    audio_start_ms: int  # on the session's time line, prefix padding included


@dataclass(frozen=True)
class SpeechStopped:
    item_id: str
    audio_end_ms: int  # the silence that ended it included


@dataclass(frozen=True)
class Committed:
    item_id: str
    previous_item_id: str | None


@dataclass(frozen=True)
class Delta:
    item_id: str
    delta: str  # words agreed on, with a leading space after the first delta


@dataclass(frozen=True)
class Completed:
    item_id: str
    transcript: str  # starts with every delta sent for the item, joined
    seconds: float  # audio decoded


Event = SpeechStarted | SpeechStopped | Committed | Delta | Completed


@dataclass(frozen=True)
class Job:
    """Audio to decode: a committed utterance (`final`) or the one still going (partial)."""

    item_id: str
    samples: np.ndarray
    final: bool
    agreement: LocalAgreement


@dataclass
class _Utterance:
    item_id: str
    start: int  # first sample on the session's time line
    partial_at: int  # buffer end when it was last decoded
    agreement: LocalAgreement = field(default_factory=LocalAgreement)


def new_item_id() -> str:
    return f"item_{uuid.uuid4().hex[:20]}"


def _ms(sample: int) -> int:
    return sample * 1000 // SAMPLE_RATE


class _Audio:
    """The session's samples [start, end) on its time line; older ones are dropped."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []
        self.start = self.end = 0

    def append(self, samples: np.ndarray) -> None:
        if samples.size:
            self.chunks.append(samples)
            self.end += samples.size

    def _joined(self) -> np.ndarray:
        joined = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        self.chunks = [joined] if joined.size else []
        return joined

    def take(self, start: int, end: int) -> np.ndarray:
        return self._joined()[start - self.start : end - self.start].copy()

    def drop_before(self, index: int) -> None:
        index = min(max(index, self.start), self.end)
        if index > self.start:
            rest = self._joined()[index - self.start :]
            self.chunks = [rest] if rest.size else []
            self.start = index


class LiveTranscriber:
    """One live stream's state: turn detection, the utterance being heard, committed utterances
    waiting to be decoded. `turn_detection` None: the caller commits (OpenAI's manual mode)."""

    def __init__(
        self,
        turn_detection: TurnDetection | None = SERVER_VAD,
        new_id: Callable[[], str] = new_item_id,
    ) -> None:
        self.turn_detection = turn_detection
        self._new_id = new_id
        self._audio = _Audio()
        self._carry = np.zeros(0, np.float32)  # samples short of a whole frame
        self._scanned = 0  # the first sample not yet scored
        self._scores: deque[tuple[int, float]] = deque(maxlen=CUT_SEARCH // FRAME_SAMPLES)
        self._onset, self._onset_frames, self._last_voiced = 0, 0, 0
        self._utterance: _Utterance | None = None
        self._finals: deque[Job] = deque()
        self._previous_item: str | None = None

    @property
    def backlog(self) -> int:
        """Committed utterances not yet handed out for decoding."""
        return len(self._finals)

    @property
    def buffered(self) -> int:
        """Samples held for the utterance being heard (or its prefix padding)."""
        return self._audio.end - self._audio.start

    def configure(self, turn_detection: TurnDetection | None) -> None:
        """New turn detection; an utterance being heard goes on under it."""
        self.turn_detection = turn_detection
        self._onset_frames, self._last_voiced = 0, self._audio.end

    def append(self, samples: np.ndarray) -> list[Event]:
        """16 kHz mono float32 samples: the events they cause (speech started, stopped, an
        utterance committed)."""
        self._audio.append(samples)
        events: list[Event] = []
        if self.turn_detection is None and self._utterance is None and self.buffered:
            self._open(self._audio.start)
        frames = np.concatenate([self._carry, samples])
        whole = frames.size - frames.size % FRAME_SAMPLES
        scores = energy_scores(frames[:whole].reshape(-1, FRAME_SAMPLES))
        self._carry = frames[whole:]
        for index, score in enumerate(scores.tolist()):
            events += self._frame(self._scanned + index * FRAME_SAMPLES, score)
        self._scanned += whole
        if self._utterance is None and self.turn_detection is not None:
            keep = self.turn_detection.prefix_samples + (ONSET_FRAMES + 1) * FRAME_SAMPLES
            self._audio.drop_before(self._scanned - keep)
        return events

    def commit(self) -> list[Event]:
        """The buffer committed as an utterance now (OpenAI's input_audio_buffer.commit)."""
        start = self._utterance.start if self._utterance else self._audio.start
        if self._audio.end - start < MIN_COMMIT:
            held = _ms(self._audio.end - start)
            raise UserError(f"buffer too small: {held} ms of audio, a commit needs at least 100 ms")
        if self._utterance is None:
            self._open(start)
        self._onset_frames = 0
        return self._commit(self._audio.end)

    def clear(self) -> None:
        """Drop the buffer and the utterance being heard (never completed)."""
        if self._utterance is not None:
            self._utterance.agreement.done = True
            self._utterance = None
        self._audio.drop_before(self._audio.end)
        self._onset_frames = 0

    def end_of_input(self) -> list[Event]:
        """The stream ended: the utterance being heard is committed (if long enough)."""
        if self._utterance is None or self._audio.end - self._utterance.start < MIN_COMMIT:
            return []
        return self._commit(self._audio.end)

    def next_job(self, partials: bool = True) -> Job | None:
        """What to decode next: committed utterances first, in order, then (with `partials`)
        the utterance being heard once it has a second of audio more than when it was last
        decoded, unless it is pausing (turn detection)."""
        if self._finals:
            return self._finals.popleft()
        current, end = self._utterance, self._audio.end
        if not partials or current is None or end - current.partial_at < PARTIAL_STEP:
            return None
        if self.turn_detection is not None and end - self._last_voiced >= PARTIAL_PAUSE:
            return None
        current.partial_at = end
        samples = self._audio.take(current.start, end)
        return Job(current.item_id, samples, False, current.agreement)

    def postpone(self, job: Job) -> None:
        """A partial job that was not decoded after all: due again at the next call."""
        if self._utterance is not None and self._utterance.item_id == job.item_id:
            self._utterance.partial_at = self._audio.end - PARTIAL_STEP

    def finish(self, job: Job, text: str) -> list[Event]:
        """The events of a job's decoded text: a delta of newly agreed words, or the
        completed transcript."""
        if job.final:
            transcript = job.agreement.complete(text)
            return [Completed(job.item_id, transcript, round(job.samples.size / SAMPLE_RATE, 3))]
        delta = job.agreement.update(text)
        return [Delta(job.item_id, delta)] if delta else []

    def _open(self, start: int) -> _Utterance:
        self._utterance = _Utterance(self._new_id(), start, start)
        return self._utterance

    def _frame(self, start: int, score: float) -> list[Event]:
        """One 20 ms frame's part in turn detection, and the 30 s bound."""
        end = start + FRAME_SAMPLES
        self._scores.append((start, score))
        current, detection = self._utterance, self.turn_detection
        if current is not None and end - current.start >= WINDOW_SAMPLES:
            return self._cut(end)
        if detection is None:
            return []
        voiced = score >= detection.threshold
        if current is None:
            return self._onset_frame(start, voiced, detection)
        if voiced:
            self._last_voiced = end
        elif end - self._last_voiced >= detection.silence_samples:
            return [SpeechStopped(current.item_id, _ms(end)), *self._commit(end)]
        return []

    def _onset_frame(self, start: int, voiced: bool, detection: TurnDetection) -> list[Event]:
        if not voiced:
            self._onset_frames = 0
            return []
        if not self._onset_frames:
            self._onset = start
        self._onset_frames += 1
        if self._onset_frames < ONSET_FRAMES:
            return []
        self._onset_frames, self._last_voiced = 0, start + FRAME_SAMPLES
        begin = max(self._audio.start, self._onset - detection.prefix_samples)
        return [SpeechStarted(self._open(begin).item_id, _ms(begin))]

    def _commit(self, end: int) -> list[Event]:
        """The utterance being heard, up to `end`, queued for its final decode."""
        current = self._utterance
        assert current is not None
        samples = self._audio.take(current.start, end)
        self._finals.append(Job(current.item_id, samples, True, current.agreement))
        events: list[Event] = [Committed(current.item_id, self._previous_item)]
        self._previous_item, self._utterance = current.item_id, None
        self._audio.drop_before(end)
        return events

    def _cut(self, end: int) -> list[Event]:
        """An utterance as long as one window: committed at its quietest recent frame, and the
        speech after it goes on as a new utterance."""
        current = self._utterance
        assert current is not None
        recent = [(score, start) for start, score in self._scores if start > current.start]
        quietest = min(recent)[1] if recent else end - FRAME_SAMPLES
        cut = quietest + FRAME_SAMPLES // 2
        speaking = self.turn_detection is not None
        events: list[Event] = [SpeechStopped(current.item_id, _ms(cut))] if speaking else []
        events += self._commit(cut)
        following = self._open(cut)
        if speaking:
            events.append(SpeechStarted(following.item_id, _ms(cut)))
        return events


def decode_options(options: TranscribeOptions, job: Job) -> TranscribeOptions:
    """A partial decode is greedy only (no fallback temperatures): it is decoded again a second
    later anyway, and a final one is decoded as `transcribe` decodes a file."""
    return options if job.final else replace(options, temperatures=options.temperatures[:1])


def transcribe_stream(
    chunks: Iterable[np.ndarray], transcriber: LiveTranscriber, decode: Callable[[Job], str]
) -> Iterator[Event]:
    """The events of a stream of 16 kHz chunks, decoding in this thread as jobs come due (the
    source buffers meanwhile); at its end, the utterance being heard is committed."""
    for chunk in chunks:
        yield from transcriber.append(chunk)
        yield from _run_jobs(transcriber, decode)
    yield from transcriber.end_of_input()
    yield from _run_jobs(transcriber, decode)


def _run_jobs(transcriber: LiveTranscriber, decode: Callable[[Job], str]) -> Iterator[Event]:
    while (job := transcriber.next_job()) is not None:
        yield from transcriber.finish(job, decode(job))


def pcm_chunks(stream: IO[bytes], samples: int = SAMPLE_RATE // 10) -> Iterator[np.ndarray]:
    """Raw s16le mono 16 kHz PCM (`transcribe --live -`) in chunks of 100 ms."""
    while data := stream.read(2 * samples):
        yield pcm16(data)


def microphone(samples: int = SAMPLE_RATE // 10) -> Iterator[np.ndarray]:
    """The default input device at 16 kHz mono in chunks of 100 ms, until Ctrl-C (which ends the
    stream, so the last utterance is still transcribed). sounddevice (the `live` extra) is
    imported here, and a missing one or no input device is refused now, before any model
    loads."""
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the PortAudio library is missing
        message = f"--live from a microphone needs the live extra: {LIVE_EXTRA} ({exc})"
        raise UserError(message) from None
    try:
        sounddevice.check_input_settings(channels=1, samplerate=SAMPLE_RATE, dtype="float32")
    except (sounddevice.PortAudioError, ValueError) as exc:
        raise UserError(f"--live: no usable input device at 16 kHz mono ({exc})") from None
    return _recording(sounddevice, samples)


def _recording(sounddevice: Any, samples: int) -> Iterator[np.ndarray]:
    heard: queue.Queue[np.ndarray] = queue.Queue()

    def callback(data: np.ndarray, frames: int, time: Any, status: Any) -> None:
        heard.put(data[:, 0].copy())

    settings = {"samplerate": SAMPLE_RATE, "channels": 1, "dtype": "float32"}
    with sounddevice.InputStream(blocksize=samples, callback=callback, **settings):
        try:
            while True:
                yield heard.get()
        except KeyboardInterrupt:
            return
