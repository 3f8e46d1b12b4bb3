"""`/v1/realtime?intent=transcription` on a real uvicorn server, driven by OpenAI's own client
(`openai[realtime]`): the events it parses, bad input answered with error events while the
session goes on, the access guards on WebSocket handshakes, and sessions freed however clients
leave. The tiny random bundle stands in for the model; one integration test hears real speech
with tiny.en."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest
import uvicorn
import websockets
from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    ConversationItemInputAudioTranscriptionDeltaEvent,
    InputAudioBufferClearedEvent,
    InputAudioBufferCommittedEvent,
    InputAudioBufferSpeechStartedEvent,
    InputAudioBufferSpeechStoppedEvent,
    RealtimeErrorEvent,
    SessionCreatedEvent,
    SessionUpdatedEvent,
)

from tests.conftest import write_wordy_bundle
from whisper_npu.access import Access
from whisper_npu.model import load
from whisper_npu.realtime import Realtime, RealtimeLimits
from whisper_npu.server import ServeSettings, create_app
from whisper_npu.wer import normalise

KEY = "sk-realtime-test"
TRANSCRIPTION = {"intent": "transcription"}
MANUAL_16K = {
    "type": "transcription",
    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 16000}, "turn_detection": None}},
}
VAD_16K = {
    "type": "transcription",
    "audio": {
        "input": {
            "format": {"type": "audio/pcm", "rate": 16000},
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 500,
            },
        }
    },
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wordy_bundle(tmp_path_factory.mktemp("realtime") / "bundle")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def running(artifact: Path, **settings: Any) -> Iterator[tuple[str, Realtime]]:
    """`create_app` on a real uvicorn server in this process (so its sessions can be counted)
    until the block ends: the base URL and the realtime endpoint's state."""
    app = create_app(load(artifact), ServeSettings("whisper-1", **settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", app.state.realtime
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="module")
def served(bundle: Path) -> Iterator[tuple[str, Realtime]]:
    limits = RealtimeLimits(max_sessions=4, idle_seconds=30, max_append_chars=400_000)
    with running(bundle, realtime=limits) as found:
        yield found


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


def pcm(samples: np.ndarray) -> str:
    """OpenAI's audio field: base64 of little-endian int16."""
    ints = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    return base64.b64encode(ints.tobytes()).decode()


def loud(seconds: float, rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """Noise at about -20 dBFS: speech to the energy detector."""
    return np.random.default_rng(seed).normal(0, 0.1, int(seconds * rate)).astype(np.float32)


def silence(seconds: float, rate: int = 16_000) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.float32)


def stream(connection: Any, samples: np.ndarray, chunk: int = 1600, paced: bool = False) -> None:
    """`samples` appended `chunk` at a time; `paced`: at real time (24 kHz)."""
    began = time.monotonic()
    for start in range(0, samples.size, chunk):
        if paced:
            time.sleep(max(0.0, began + start / 24_000 - time.monotonic()))
        connection.input_audio_buffer.append(audio=pcm(samples[start : start + chunk]))


def until(connection: Any, kind: type, limit: float = 60) -> list[Any]:
    """Events up to and including the first of type `kind` (a timeout fails the test)."""
    seen: list[Any] = []
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        event = connection.recv()
        seen.append(event)
        if isinstance(event, kind):
            return seen
    raise AssertionError(f"no {kind.__name__} in {limit} s: {seen}")


def wait_for_no_sessions(realtime: Realtime, limit: float = 30) -> None:
    deadline = time.monotonic() + limit
    while realtime.sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert realtime.sessions == 0


def test_server_vad_session_speaks_openais_events(served):
    url, realtime = served
    with client(url).realtime.connect(extra_query=TRANSCRIPTION) as connection:
        created = connection.recv()
        assert isinstance(created, SessionCreatedEvent)
        detection = created.session.audio.input.turn_detection
        assert detection.type == "server_vad" and detection.model_extra["detector"] == "energy"
        assert created.session.audio.input.format.rate == 24_000
        connection.session.update(session=VAD_16K)
        updated = connection.recv()
        assert isinstance(updated, SessionUpdatedEvent)
        assert updated.session.audio.input.format.rate == 16_000
        stream(connection, np.concatenate([silence(1), loud(3.2), silence(1)]))
        seen = until(connection, ConversationItemInputAudioTranscriptionCompletedEvent)
    kinds = [type(event) for event in seen]
    started, stopped, committed, completed = (
        seen[kinds.index(kind)]
        for kind in (
            InputAudioBufferSpeechStartedEvent,
            InputAudioBufferSpeechStoppedEvent,
            InputAudioBufferCommittedEvent,
            ConversationItemInputAudioTranscriptionCompletedEvent,
        )
    )
    assert kinds.index(InputAudioBufferSpeechStartedEvent) < kinds.index(
        InputAudioBufferSpeechStoppedEvent
    )
    assert started.audio_start_ms == 700  # 1 s of silence, then 300 ms of prefix padding
    assert stopped.audio_end_ms == 4700  # the speech's end and 500 ms of silence
    assert started.item_id == stopped.item_id == committed.item_id == completed.item_id
    assert committed.previous_item_id is None
    assert completed.content_index == 0 and completed.usage.seconds == 4.0
    deltas = [e for e in seen if isinstance(e, ConversationItemInputAudioTranscriptionDeltaEvent)]
    assert completed.transcript.startswith("".join(delta.delta or "" for delta in deltas))
    wait_for_no_sessions(realtime)


def test_manual_commits_clear_and_24k_input(served):
    url, _ = served
    with client(url).realtime.connect(extra_query=TRANSCRIPTION) as connection:
        until(connection, SessionCreatedEvent)
        # OpenAI's 24 kHz (the default): 1.5 s, committed by hand with VAD off.
        off = {"type": "transcription", "audio": {"input": {"turn_detection": None}}}
        connection.session.update(session=off)
        assert until(connection, SessionUpdatedEvent)[-1].session.audio.input.turn_detection is None
        stream(connection, loud(1.5, rate=24_000), chunk=2400)
        connection.input_audio_buffer.commit()
        seen = until(connection, ConversationItemInputAudioTranscriptionCompletedEvent)
        committed = next(e for e in seen if isinstance(e, InputAudioBufferCommittedEvent))
        assert seen[-1].item_id == committed.item_id and seen[-1].usage.seconds >= 1.45
        assert not any(isinstance(e, InputAudioBufferSpeechStartedEvent) for e in seen)
        connection.input_audio_buffer.commit()  # nothing buffered
        refused = until(connection, RealtimeErrorEvent)[-1]
        assert refused.error.code == "input_audio_buffer_commit_empty"
        stream(connection, loud(0.5, rate=24_000), chunk=2400)
        connection.input_audio_buffer.clear()
        until(connection, InputAudioBufferClearedEvent)
        connection.input_audio_buffer.commit()  # cleared: nothing to commit
        assert until(connection, RealtimeErrorEvent)[-1].error.param == "input_audio_buffer"
        stream(connection, loud(0.5, rate=24_000), chunk=2400)
        connection.input_audio_buffer.commit()
        seen = until(connection, ConversationItemInputAudioTranscriptionCompletedEvent)
        again = next(e for e in seen if isinstance(e, InputAudioBufferCommittedEvent))
        assert again.previous_item_id == committed.item_id


BAD_EVENTS = [
    ("not json {", "invalid_json"),
    ("[1, 2]", "invalid_event"),
    (json.dumps({"type": "response.create"}), "unknown_event"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": "%%%"}), "invalid_value"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": "AAAA"}), "invalid_value"),
    (json.dumps({"type": "input_audio_buffer.append"}), "invalid_value"),
    (json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 400_004}), "audio_too_large"),
    (
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    **MANUAL_16K,
                    "audio": {"input": {"format": {"type": "audio/pcm", "rate": 44100}}},
                },
            }
        ),
        "invalid_value",
    ),
    (
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"turn_detection": {"type": "semantic_vad"}}},
                },
            }
        ),
        "invalid_value",
    ),
    (
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": 7}}},
                },
            }
        ),
        "invalid_value",
    ),
    (json.dumps({"type": "session.update", "session": {"type": "realtime"}}), "invalid_value"),
    (
        json.dumps(
            {
                "type": "session.update",
                "session": {
                    "type": "transcription",
                    "audio": {"input": {"transcription": {"language": "fr"}}},
                },
            }
        ),
        "invalid_value",
    ),
]


def test_bad_events_get_error_events_and_the_session_goes_on(served):
    url, _ = served
    with client(url).realtime.connect(extra_query=TRANSCRIPTION) as connection:
        until(connection, SessionCreatedEvent)
        connection.session.update(session=MANUAL_16K)
        until(connection, SessionUpdatedEvent)
        for text, code in BAD_EVENTS:
            connection.send_raw(text)
            refused = until(connection, RealtimeErrorEvent)[-1]
            assert refused.error.code == code, text[:200]
            assert refused.error.type == "invalid_request_error" and refused.error.message
        connection._connection.send(b"\x00binary")  # a binary frame
        assert until(connection, RealtimeErrorEvent)[-1].error.code == "invalid_event"
        # Still 16 kHz and manual: the refused updates changed nothing.
        stream(connection, loud(1.0))
        connection.input_audio_buffer.commit()
        done = until(connection, ConversationItemInputAudioTranscriptionCompletedEvent)[-1]
        assert done.usage.seconds == 1.0


def test_an_event_id_is_echoed_in_its_error(served):
    url, _ = served
    with client(url).realtime.connect(extra_query=TRANSCRIPTION) as connection:
        until(connection, SessionCreatedEvent)
        connection.send_raw(json.dumps({"type": "nope", "event_id": "evt_7"}))
        refused = until(connection, RealtimeErrorEvent)[-1]
        assert refused.error.event_id == "evt_7" and refused.error.param == "type"


def test_without_transcription_intent_the_session_is_refused_and_closed(served):
    url, realtime = served
    with client(url).realtime.connect() as connection:
        refused = connection.recv()
        assert isinstance(refused, RealtimeErrorEvent)
        assert refused.error.code == "unsupported_intent"
        with pytest.raises(websockets.ConnectionClosed) as closed:
            connection.recv()  # then closed as a policy violation
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    wait_for_no_sessions(realtime)


def test_decoding_waits_for_the_servers_lock_while_audio_keeps_coming(served):
    """The lock the HTTP endpoints hold: while it is taken, VAD events still flow, and the
    transcript arrives once it is free."""
    url, realtime = served
    with client(url).realtime.connect(extra_query=TRANSCRIPTION) as connection:
        until(connection, SessionCreatedEvent)
        connection.session.update(session=VAD_16K)
        until(connection, SessionUpdatedEvent)
        with realtime.lock:
            stream(connection, np.concatenate([loud(1.2), silence(0.7)]))
            seen = until(connection, InputAudioBufferCommittedEvent)
            assert not any(
                isinstance(e, ConversationItemInputAudioTranscriptionCompletedEvent) for e in seen
            )
            stream(connection, np.concatenate([loud(1.2, seed=1), silence(0.7)]))
            until(connection, InputAudioBufferCommittedEvent)
        seen = until(connection, ConversationItemInputAudioTranscriptionCompletedEvent)
        seen += until(connection, ConversationItemInputAudioTranscriptionCompletedEvent)
        assert len({e.item_id for e in seen if hasattr(e, "transcript")}) == 2


def test_idle_sessions_time_out_and_extra_sessions_are_refused(bundle):
    limits = RealtimeLimits(max_sessions=2, idle_seconds=1.0)
    with running(bundle, realtime=limits) as (url, realtime):
        first = client(url).realtime.connect(extra_query=TRANSCRIPTION).enter()
        second = client(url).realtime.connect(extra_query=TRANSCRIPTION).enter()
        until(first, SessionCreatedEvent)
        until(second, SessionCreatedEvent)
        with client(url).realtime.connect(extra_query=TRANSCRIPTION) as third:
            refused = third.recv()
            assert isinstance(refused, RealtimeErrorEvent)
            assert refused.error.code == "session_limit"
        idle = until(first, RealtimeErrorEvent, limit=10)[-1]
        assert idle.error.code == "session_idle"
        assert list(first) == []
        second.close()
        wait_for_no_sessions(realtime)


def handshake(url: str, **headers: str) -> tuple[int, bytes]:
    """A raw WebSocket handshake to /v1/realtime with `headers` (Host included): the status
    and the body the server answered."""
    host, port = url.removeprefix("http://").split(":")
    fields = {
        "Host": f"{host}:{port}",
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": base64.b64encode(b"0123456789abcdef").decode(),
        "Sec-WebSocket-Version": "13",
        **{name.replace("_", "-"): value for name, value in headers.items()},
    }
    request = "GET /v1/realtime?intent=transcription HTTP/1.1\r\n"
    request += "".join(f"{name}: {value}\r\n" for name, value in fields.items()) + "\r\n"
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(request.encode())
        answer = b""
        while chunk := raw.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer and answer.startswith(b"HTTP/1.1 101"):
                break
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_websocket_handshakes_pass_the_key_host_and_origin_guards(bundle):
    access = Access(api_key=KEY)
    with running(bundle, access=access) as (url, realtime):
        bearer = f"Bearer {KEY}"
        status, body = handshake(url)
        assert status == 401 and b"API key" in body
        assert handshake(url, Authorization="Bearer wrong")[0] == 401
        assert handshake(url, Authorization=bearer)[0] == 101
        status, body = handshake(url, Authorization=bearer, Host="evil.example")
        assert status == 400 and b"Host header" in body
        status, body = handshake(url, Authorization=bearer, Origin="https://evil.example")
        assert status == 403 and json.loads(body)["error"]["type"] == "invalid_request_error"
        assert handshake(url, Authorization=bearer, Origin="http://localhost:3000")[0] == 101
        with pytest.raises(Exception, match="401"):
            client(url).realtime.connect(extra_query=TRANSCRIPTION).enter()
        with client(url, KEY).realtime.connect(extra_query=TRANSCRIPTION) as connection:
            assert isinstance(connection.recv(), SessionCreatedEvent)
        wait_for_no_sessions(realtime)


def _bad_client(url: str, index: int) -> None:
    """One of five ways to leave badly: vanish mid-utterance (socket closed, no close frame),
    garbage then leave, no intent, connect and never speak, or a handshake dropped."""
    kind = index % 5
    if kind == 4:
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as raw:
            raw.sendall(b"GET /v1/realtime?intent=transcription HTTP/1.1\r\nHost: x")
        return
    query = {} if kind == 2 else TRANSCRIPTION
    connection = client(url).realtime.connect(extra_query=query).enter()
    if kind == 0:
        connection.session.update(session=VAD_16K)
        stream(connection, loud(1.5, seed=index))
        connection._connection.socket.shutdown(socket.SHUT_RDWR)
        connection._connection.socket.close()
        return
    if kind == 1:
        connection.send_raw("{oops")
    connection.close()


def test_a_hundred_bad_clients_leave_no_session_and_the_server_answers(bundle):
    with running(bundle) as (url, realtime):
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda index: _bad_client(url, index), range(100)))
        wait_for_no_sessions(realtime, limit=120)
        with urllib.request.urlopen(f"{url}/health", timeout=10) as answer:
            assert json.loads(answer.read())["status"] == "ok"
        with client(url).realtime.connect(extra_query=TRANSCRIPTION) as connection:
            until(connection, SessionCreatedEvent)
            connection.session.update(session=MANUAL_16K)
            stream(connection, loud(1.0))
            connection.input_audio_buffer.commit()
            until(connection, ConversationItemInputAudioTranscriptionCompletedEvent)
        wait_for_no_sessions(realtime)


@pytest.mark.integration
def test_real_speech_gives_deltas_then_the_transcript(fp32_bundle):
    """tiny.en hears two synthesized sentences streamed at 24 kHz in 40 ms chunks: a delta
    before each long one ends, and transcripts that start with their deltas."""
    from tests.test_live import spoken

    first = "The quick brown fox jumps over the lazy dog near the quiet river bank today."
    second = "Please send the quarterly report to the finance team before Friday afternoon."
    samples = np.concatenate([spoken(first, 24_000), silence(1.5, 24_000)])
    samples = np.concatenate([samples, spoken(second, 24_000), silence(1.5, 24_000)])
    with (
        running(fp32_bundle) as (url, _),
        client(url).realtime.connect(extra_query=TRANSCRIPTION) as connection,
    ):
        until(connection, SessionCreatedEvent)
        stream(connection, samples, chunk=960, paced=True)
        seen = until(connection, ConversationItemInputAudioTranscriptionCompletedEvent)
        seen += until(connection, ConversationItemInputAudioTranscriptionCompletedEvent)
    done = [e for e in seen if isinstance(e, ConversationItemInputAudioTranscriptionCompletedEvent)]
    # Case and punctuation aside: a word's first form sent as a delta stays (never taken back).
    assert [normalise(e.transcript) for e in done] == [normalise(first), normalise(second)]
    for completed in done:
        deltas = [
            e.delta
            for e in seen
            if isinstance(e, ConversationItemInputAudioTranscriptionDeltaEvent)
            and e.item_id == completed.item_id
        ]
        assert deltas and completed.transcript.startswith("".join(deltas))
