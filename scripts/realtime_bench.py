"""Live transcription measured as a client sees it: OpenAI's own client streams a synthesized
clip (utterances with pauses between them, one longer than 6 s) at real time into
`/v1/realtime?intent=transcription` of an in-process server, alone and in concurrent sessions.

Per utterance: the completed transcript, the latency from the utterance's true end (the last
20 ms frame of the synthesized speech above -50 dBFS) to its `completed` event, and the deltas
sent before it; over the clip: p50/p90 of those latencies and the WER of the completed
transcripts joined, against the script and against `transcribe` of the same clip offline.

    python -m scripts.realtime_bench --artifact artifacts/bundles/fp32 --sessions 4
"""

from __future__ import annotations

import argparse
import base64
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import openai
import uvicorn
from scipy.signal import resample_poly

from pipeline.config import PiperVoice
from pipeline.sources.synthesis import synthesize
from whisper_npu.model import Model, load
from whisper_npu.server import ServeSettings, create_app
from whisper_npu.wer import corpus_wer

RATE = 24_000  # OpenAI's input rate: the server resamples to 16 kHz as a client's audio
SERVED: list[Any] = []  # the app being served, for its session count
SENTENCES = (
    "Good morning everyone, thanks for joining the weekly planning call.",
    "Before we start, please make sure your microphones are muted when you are not speaking, "
    "because the recording picks up a lot of background noise from the office.",
    "The first item on the agenda is the budget for the next quarter.",
    "Maria will walk us through the numbers and then we can discuss the hiring plan.",
    "If anything is unclear, write your questions in the chat.",
    "We will try to finish before eleven o'clock so that everyone has time for lunch.",
    "Let's begin with a quick round of updates from each team.",
)
PAUSES = (1.2, 2.0, 1.5, 2.5, 1.8, 2.0, 2.0)  # silence after each sentence, seconds


@dataclass(frozen=True)
class Clip:
    samples: np.ndarray  # 24 kHz mono float32
    spans: tuple[tuple[float, float], ...]  # each sentence's true speech (seconds)


@dataclass
class Heard:
    """What one session received: per item, its start, deltas and completion."""

    started: dict[str, float] = field(default_factory=dict)  # item → audio_start_ms / 1000
    deltas: dict[str, int] = field(default_factory=dict)
    completed: dict[str, tuple[float, str]] = field(default_factory=dict)  # wall time, text
    t0: float = 0.0  # wall time of the clip's first sample


def speech_span(samples: np.ndarray, offset: float) -> tuple[float, float]:
    """The first and last 20 ms frame above -50 dBFS, in seconds from the clip's start."""
    frame = RATE // 50
    frames = samples[: samples.size - samples.size % frame].reshape(-1, frame)
    loud = np.flatnonzero(np.sqrt(np.mean(frames**2, axis=1)) > 10 ** (-50 / 20))
    return offset + loud[0] * frame / RATE, offset + (loud[-1] + 1) * frame / RATE


def make_clip() -> Clip:
    parts, spans, offset = [np.zeros(RATE // 2, np.float32)], [], 0.5
    for sentence, pause in zip(SENTENCES, PAUSES, strict=True):
        speech, source = synthesize(sentence, PiperVoice(engine="piper"))
        divisor = np.gcd(RATE, source)
        speech = resample_poly(speech, RATE // divisor, source // divisor).astype(np.float32)
        spans.append(speech_span(speech, offset))
        parts += [speech, np.zeros(int(pause * RATE), np.float32)]
        offset += speech.size / RATE + pause
    return Clip(np.concatenate(parts), tuple(spans))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def serving(model: Model) -> Iterator[str]:
    port = free_port()
    app = create_app(model, ServeSettings("whisper-1"))
    SERVED.append(app)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _send(connection: Any, clip: Clip, chunk_ms: int, heard: Heard) -> None:
    """The clip in chunks, each sent when its audio would have been recorded."""
    step = RATE * chunk_ms // 1000
    ints = np.clip(np.round(clip.samples * 32767), -32768, 32767).astype("<i2")
    heard.t0 = time.monotonic()
    for index, start in enumerate(range(0, ints.size, step)):
        time.sleep(max(0.0, heard.t0 + (index + 1) * chunk_ms / 1000 - time.monotonic()))
        audio = base64.b64encode(ints[start : start + step].tobytes()).decode()
        connection.input_audio_buffer.append(audio=audio)


def _receive(connection: Any, heard: Heard, expected: int, limit: float) -> None:
    deadline = time.monotonic() + limit
    while len(heard.completed) < expected and time.monotonic() < deadline:
        event = connection.recv()
        if event.type == "input_audio_buffer.speech_started":
            heard.started[event.item_id] = event.audio_start_ms / 1000
        elif event.type == "conversation.item.input_audio_transcription.delta":
            heard.deltas[event.item_id] = heard.deltas.get(event.item_id, 0) + 1
        elif event.type == "conversation.item.input_audio_transcription.completed":
            heard.completed[event.item_id] = (time.monotonic(), event.transcript)
        elif event.type == "error":
            print(f"  error event: {event.error.message}")


def session(url: str, clip: Clip, chunk_ms: int) -> Heard:
    """One realtime session streaming the clip at real time."""
    heard = Heard()
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        connection.recv()  # session.created; OpenAI's defaults: 24 kHz, server_vad
        sender = threading.Thread(target=_send, args=(connection, clip, chunk_ms, heard))
        sender.start()
        limit = clip.samples.size / RATE + 60
        _receive(connection, heard, len(clip.spans), limit)
        sender.join()
    return heard


@dataclass(frozen=True)
class Row:
    sentence: int
    latency: float | None  # seconds from the true end to `completed`
    deltas: int
    transcript: str


def rows(clip: Clip, heard: Heard) -> list[Row]:
    """Each completed item matched to the sentence whose speech its start precedes most
    closely (its start includes 300 ms of prefix padding)."""
    found = []
    for item, (when, text) in sorted(heard.completed.items(), key=lambda kv: kv[1][0]):
        start = heard.started.get(item, 0.0) + 0.3
        index = min(range(len(clip.spans)), key=lambda i: abs(clip.spans[i][0] - start))
        latency = when - heard.t0 - clip.spans[index][1]
        found.append(Row(index, latency, heard.deltas.get(item, 0), text))
    return found


def percentile(values: list[float], share: float) -> float:
    return float(np.percentile(values, share * 100)) if values else float("nan")


def report(title: str, clip: Clip, heard: list[Heard], offline: str) -> None:
    """The figures of one run (one or several concurrent sessions)."""
    print(f"\n== {title}")
    latencies, wers, live_vs_offline = [], [], []
    for number, one in enumerate(heard):
        found = rows(clip, one)
        for row in found:
            seconds = clip.spans[row.sentence][1] - clip.spans[row.sentence][0]
            if number == 0:
                print(
                    f"  [{row.sentence}] {seconds:4.1f} s  latency {row.latency:5.2f} s  "
                    f"deltas {row.deltas:2d}  {row.transcript}"
                )
            latencies.append(row.latency or 0.0)
        text = " ".join(row.transcript for row in found)
        wers.append(corpus_wer([" ".join(SENTENCES)], [text]))
        live_vs_offline.append(corpus_wer([offline], [text]))
        long = [
            r.deltas for r in found if clip.spans[r.sentence][1] - clip.spans[r.sentence][0] > 6
        ]
        print(
            f"  session {number}: {len(found)}/{len(clip.spans)} utterances completed, "
            f"deltas per >6 s utterance {long}, WER vs script {wers[-1]:.2%}, "
            f"vs offline {live_vs_offline[-1]:.2%}"
        )
    print(
        f"  latency end→completed: p50 {percentile(latencies, 0.5):.2f} s, "
        f"p90 {percentile(latencies, 0.9):.2f} s, max {max(latencies):.2f} s "
        f"(n={len(latencies)}); WER vs script mean {statistics.mean(wers):.2%}"
    )


def rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def bad_client(url: str, clip: Clip, number: int) -> None:
    """One of the bad clients: malformed JSON, an unknown event, a wrong rate, an append over
    the 15 MiB cap, then half an utterance and gone without a word (every 4th: no audio). A
    frame over uvicorn's 16 MiB `ws_max_size` is not answered: the server drops the connection."""
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        connection.recv()
        connection.send_raw("{not json")  # frames a broken client would send
        connection.send_raw('{"type": "input_audio_buffer.unknown"}')
        connection.send_raw(
            '{"type": "session.update", "session": {"type": "transcription", "audio": '
            '{"input": {"format": {"type": "audio/pcm", "rate": 44100}}}}}'
        )
        connection.input_audio_buffer.append(audio="A" * (15 * 2**20 + 4))  # OpenAI's cap + 4
        if number % 4:
            half = np.round(clip.samples[: RATE * 3] * 32767).astype("<i2")
            connection.input_audio_buffer.append(audio=base64.b64encode(half.tobytes()).decode())


def leaks(url: str, clip: Clip, clients: int) -> None:
    """Memory and sessions after `clients` bad clients, and over one long session."""
    app = SERVED[-1]
    before = rss_mb()
    for number in range(clients):
        bad_client(url, clip, number)
    deadline = time.monotonic() + 30
    while app.state.realtime.sessions and time.monotonic() < deadline:
        time.sleep(0.1)
    print(
        f"\n== {clients} bad clients: sessions open after {app.state.realtime.sessions}, "
        f"RSS {before:.0f} → {rss_mb():.0f} MB"
    )
    looped = Clip(np.tile(clip.samples, 4), ())
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0)
    samples = []
    with client.realtime.connect(extra_query={"intent": "transcription"}) as connection:
        connection.recv()
        heard = Heard()
        sender = threading.Thread(target=_send, args=(connection, looped, 40, heard))
        expected = 4 * len(clip.spans)
        limit = looped.samples.size / RATE + 60
        receiver = threading.Thread(target=_receive, args=(connection, heard, expected, limit))
        sender.start()
        receiver.start()
        while receiver.is_alive():
            samples.append(rss_mb())
            receiver.join(timeout=15)
        sender.join()
    shown = ", ".join(f"{mb:.0f}" for mb in samples)
    print(
        f"== one {looped.samples.size / RATE:.0f} s session, {len(heard.completed)} utterances "
        f"completed: RSS every 15 s {shown} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", type=Path, default=Path("artifacts/bundles/fp32"))
    parser.add_argument("--sessions", type=int, default=4, help="concurrent sessions")
    parser.add_argument("--chunk-ms", type=int, default=40, help="audio per append (20-100)")
    parser.add_argument("--threads", type=int, default=None, help="the model's intra-op threads")
    parser.add_argument(
        "--bad-clients",
        type=int,
        default=100,
        help="then: this many bad clients and one long "
        "session, memory and sessions measured (0: skip)",
    )
    args = parser.parse_args()
    clip = make_clip()
    longest = max(end - start for start, end in clip.spans)
    print(
        f"clip: {clip.samples.size / RATE:.1f} s, {len(clip.spans)} utterances, "
        f"longest {longest:.1f} s; appends of {args.chunk_ms} ms at real time"
    )
    model = load(args.artifact, threads=args.threads)
    at_16k = resample_poly(clip.samples, 2, 3).astype(np.float32)
    started = time.monotonic()
    offline = model.transcribe(at_16k).text
    print(f"offline transcribe: {time.monotonic() - started:.2f} s for the clip")
    offline_wer = corpus_wer([" ".join(SENTENCES)], [offline])
    print(f"offline WER vs script: {offline_wer:.2%}\n  {offline}")
    with serving(model) as url:
        report("1 session", clip, [session(url, clip, args.chunk_ms)], offline)
        results: list[Heard] = [Heard()] * args.sessions

        def run(index: int) -> None:
            time.sleep(index * 0.37)  # sessions do not start in lockstep
            results[index] = session(url, clip, args.chunk_ms)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(args.sessions)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        report(f"{args.sessions} concurrent sessions", clip, results, offline)
        if args.bad_clients:
            leaks(url, clip, args.bad_clients)


if __name__ == "__main__":
    main()
