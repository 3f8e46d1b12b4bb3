"""OpenAI's Realtime API in transcription mode on `whisper-npu serve`: a WebSocket at
`/v1/realtime?intent=transcription` that OpenAI's own clients (`client.realtime.connect(...)`)
talk to unchanged. This module is the protocol (JSON events in and out, base64 PCM, session
settings); `whisper_npu.live` is the engine.

Client events: `session.update` (type "transcription"; audio.input.format audio/pcm at 24000 Hz,
OpenAI's rate, or 16000 Hz; transcription model/language/prompt; turn_detection server_vad or
null), `input_audio_buffer.append` / `commit` / `clear`. Server events: `session.created` /
`updated` (its turn_detection names the `detector` that runs), `input_audio_buffer.speech_started`
/ `speech_stopped` / `committed` / `cleared`,
`conversation.item.input_audio_transcription.delta` / `completed`, and `error` for anything
refused, after which the session goes on.

One model serves the HTTP endpoints and every session: a decode takes the server's lock in a
worker thread, so each session keeps receiving audio while another decodes. What a session holds
is bounded: its utterance (one window), its appends (15 MiB of base64, OpenAI's cap), its queue of
committed utterances (reading pauses while it is full), its idle time, and the number of sessions.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import threading
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Annotated, Any, Literal

from fastapi import FastAPI, WebSocket
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from starlette.websockets import WebSocketDisconnect

from whisper_npu import live
from whisper_npu.decoding import TranscribeOptions
from whisper_npu.errors import UserError
from whisper_npu.model import Model
from whisper_npu.whisper_io import SAMPLE_RATE

OPENAI_RATE = 24_000
RATES = (SAMPLE_RATE, OPENAI_RATE)
POLICY_VIOLATION, TRY_AGAIN_LATER = 1008, 1013  # WebSocket close codes
log = logging.getLogger("uvicorn.error")


@dataclass(frozen=True)
class RealtimeLimits:
    """What the realtime endpoint lets sessions hold."""

    max_sessions: int = 8  # more are refused (an error event, then close 1013)
    idle_seconds: float = 300.0  # a session that sends nothing this long is closed
    max_append_chars: int = 15 * 1024 * 1024  # base64 of one append (OpenAI's 15 MiB)
    max_backlog: int = 4  # committed utterances queued before reading pauses


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AudioFormat(_Strict):
    type: Literal["audio/pcm"] = "audio/pcm"
    rate: Literal[16000, 24000] = 24000  # OpenAI's


class Transcription(_Strict):
    model: str | None = None  # any name is served by the one loaded model
    language: str | None = None
    prompt: str | None = None  # Whisper's initial prompt for every utterance


class ServerVad(_Strict):
    type: Literal["server_vad"]
    threshold: float | None = None
    prefix_padding_ms: int | None = None
    silence_duration_ms: int | None = None
    # Conversation sessions' settings; a transcription session creates no responses.
    create_response: bool | None = None
    interrupt_response: bool | None = None

    def settings(self) -> live.TurnDetection:
        given = {
            name: value
            for name in ("threshold", "prefix_padding_ms", "silence_duration_ms")
            if (value := getattr(self, name)) is not None
        }
        return live.TurnDetection(**given)


class AudioInput(_Strict):
    format: AudioFormat | None = None
    transcription: Transcription | None = None
    turn_detection: ServerVad | None = None
    noise_reduction: None = None  # not done: only null is accepted


class AudioConfig(_Strict):
    input: AudioInput | None = None


class SessionConfig(_Strict):
    type: Literal["transcription"]
    audio: AudioConfig | None = None


class SessionUpdate(_Strict):
    type: Literal["session.update"]
    session: SessionConfig
    event_id: str | None = None


class Append(_Strict):
    type: Literal["input_audio_buffer.append"]
    audio: str
    event_id: str | None = None


class Commit(_Strict):
    type: Literal["input_audio_buffer.commit"]
    event_id: str | None = None


class Clear(_Strict):
    type: Literal["input_audio_buffer.clear"]
    event_id: str | None = None


ClientEvent = Annotated[SessionUpdate | Append | Commit | Clear, Field(discriminator="type")]
CLIENT_EVENTS: TypeAdapter[SessionUpdate | Append | Commit | Clear] = TypeAdapter(ClientEvent)
HANDLED = frozenset(
    {
        "session.update",
        "input_audio_buffer.append",
        "input_audio_buffer.commit",
        "input_audio_buffer.clear",
    }
)


def _event_id() -> str:
    return f"event_{uuid.uuid4().hex[:20]}"


class ServerEvent(BaseModel):
    """What the server sends: field names as the openai package's models read them."""

    event_id: str = Field(default_factory=_event_id)


class ErrorDetail(BaseModel):
    type: str
    code: str | None = None
    message: str
    param: str | None = None
    event_id: str | None = None  # the client event refused


class ErrorEvent(ServerEvent):
    type: Literal["error"] = "error"
    error: ErrorDetail


class TurnDetectionState(BaseModel):
    type: Literal["server_vad"] = "server_vad"
    threshold: float
    prefix_padding_ms: int
    silence_duration_ms: int
    detector: str = live.DETECTOR  # ours: what decides speech and silence


class InputState(BaseModel):
    format: AudioFormat
    transcription: Transcription
    turn_detection: TurnDetectionState | None
    noise_reduction: None = None


class AudioState(BaseModel):
    input: InputState


class SessionState(BaseModel):
    id: str
    object: Literal["realtime.transcription_session"] = "realtime.transcription_session"
    type: Literal["transcription"] = "transcription"
    audio: AudioState


class SessionEvent(ServerEvent):
    type: Literal["session.created", "session.updated"]
    session: SessionState


class BufferEvent(ServerEvent):
    type: Literal["input_audio_buffer.cleared"] = "input_audio_buffer.cleared"


class SpeechStarted(ServerEvent):
    type: Literal["input_audio_buffer.speech_started"] = "input_audio_buffer.speech_started"
    item_id: str
    audio_start_ms: int


class SpeechStopped(ServerEvent):
    type: Literal["input_audio_buffer.speech_stopped"] = "input_audio_buffer.speech_stopped"
    item_id: str
    audio_end_ms: int


class Committed(ServerEvent):
    type: Literal["input_audio_buffer.committed"] = "input_audio_buffer.committed"
    item_id: str
    previous_item_id: str | None


class Delta(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.delta"] = (
        "conversation.item.input_audio_transcription.delta"
    )
    item_id: str
    content_index: int = 0
    delta: str


class Usage(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: float


class Completed(ServerEvent):
    type: Literal["conversation.item.input_audio_transcription.completed"] = (
        "conversation.item.input_audio_transcription.completed"
    )
    item_id: str
    content_index: int = 0
    transcript: str
    usage: Usage


def _server_event(event: live.Event) -> ServerEvent:
    """An engine event in OpenAI's shape."""
    if isinstance(event, live.SpeechStarted):
        return SpeechStarted(item_id=event.item_id, audio_start_ms=event.audio_start_ms)
    if isinstance(event, live.SpeechStopped):
        return SpeechStopped(item_id=event.item_id, audio_end_ms=event.audio_end_ms)
    if isinstance(event, live.Committed):
        return Committed(item_id=event.item_id, previous_item_id=event.previous_item_id)
    if isinstance(event, live.Delta):
        return Delta(item_id=event.item_id, delta=event.delta)
    usage = Usage(seconds=event.seconds)
    return Completed(item_id=event.item_id, transcript=event.transcript, usage=usage)


class Refusal(Exception):
    """A client event refused: an error event, and the session goes on."""

    def __init__(
        self, message: str, code: str, param: str | None = None, event_id: str | None = None
    ) -> None:
        super().__init__(message)
        self.detail = ErrorDetail(
            type="invalid_request_error", code=code, message=message, param=param, event_id=event_id
        )


def parse_event(text: str, limits: RealtimeLimits) -> SessionUpdate | Append | Commit | Clear:
    """A client event, or a Refusal saying what is wrong with it."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        raise Refusal("the message is not JSON", "invalid_json") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise Refusal("an event is a JSON object with a string `type`", "invalid_event")
    event_id = data.get("event_id") if isinstance(data.get("event_id"), str) else None
    kind = data["type"][:100]
    if kind not in HANDLED:
        message = f"unknown event type {kind!r} (a transcription session takes {sorted(HANDLED)})"
        raise Refusal(message, "unknown_event", "type", event_id)
    audio = data.get("audio")
    if isinstance(audio, str) and len(audio) > limits.max_append_chars:
        message = f"audio is larger than {limits.max_append_chars} base64 characters"
        raise Refusal(message, "audio_too_large", "audio", event_id)
    try:
        return CLIENT_EVENTS.validate_python(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"][1:])
        raise Refusal(f"{where}: {first['msg']}", "invalid_value", where, event_id) from None


@dataclass(frozen=True)
class Settings:
    """A session's settings: what session.update changed, over the defaults."""

    format: AudioFormat
    transcription: Transcription
    turn_detection: live.TurnDetection | None

    def state(self, session_id: str) -> SessionState:
        detection = self.turn_detection
        shown = None if detection is None else TurnDetectionState(**asdict(detection))
        given = InputState(
            format=self.format, transcription=self.transcription, turn_detection=shown
        )
        return SessionState(id=session_id, audio=AudioState(input=given))

    def updated(self, config: SessionConfig) -> Settings:
        """These settings with what `config` names (a field it omits stays as it was; a null
        turn_detection switches to manual commits)."""
        given = config.audio.input if config.audio and config.audio.input else AudioInput()
        changed = replace(
            self,
            format=given.format or self.format,
            transcription=given.transcription or self.transcription,
        )
        if "turn_detection" in given.model_fields_set:
            vad = given.turn_detection
            changed = replace(changed, turn_detection=None if vad is None else vad.settings())
        return changed

    def options(self) -> TranscribeOptions:
        return TranscribeOptions(
            language=self.transcription.language, initial_prompt=self.transcription.prompt
        )


class Realtime:
    """The endpoint's shared state: the one model, the server's lock, the live sessions."""

    def __init__(
        self, model: Model, lock: threading.Lock, model_name: str, limits: RealtimeLimits
    ) -> None:
        self.model, self.lock, self.limits = model, lock, limits
        self.defaults = Settings(AudioFormat(), Transcription(model=model_name), live.SERVER_VAD)
        self.sessions = 0  # open now
        self.finals = 0  # final decodes waiting for the lock or running

    def checked(self, settings: Settings) -> TranscribeOptions:
        """The decode options of `settings`, refused when the model cannot take them."""
        options = settings.options()
        try:
            self.model.transcriber.previous_tokens(options.initial_prompt)
            self.model.transcriber.check_prompt(options)
        except UserError as exc:
            raise Refusal(str(exc), "invalid_value", "session.audio.input.transcription") from None
        return options

    def idle(self) -> bool:
        """Whether a partial decode may start now: it never makes a final one (nor an HTTP
        request) wait, so a busy model sends fewer deltas rather than later transcripts."""
        return not self.finals and not self.lock.locked()

    def decode(self, job: live.Job, options: TranscribeOptions) -> str | None:
        """In a worker thread: the job's text, decoded under the server's lock; None for a
        partial job when the lock is taken (the lock is never taken outside this thread: a
        cancelled session's queued call would never release it)."""
        if job.final:
            self.lock.acquire()
        elif not self.lock.acquire(blocking=False):
            return None
        try:
            return self.model.transcribe(job.samples, live.decode_options(options, job)).text
        finally:
            self.lock.release()


class Session:
    """One WebSocket connection: events in, the engine, events out."""

    def __init__(self, realtime: Realtime, websocket: WebSocket) -> None:
        self.realtime, self.websocket = realtime, websocket
        self.id = f"sess_{uuid.uuid4().hex[:20]}"
        self.settings = realtime.defaults
        self.options = realtime.checked(self.settings)
        self.engine = live.LiveTranscriber(self.settings.turn_detection)
        self.resampler = live.Resampler(self.settings.format.rate)
        self.sending = asyncio.Lock()
        self.wake, self.progress = asyncio.Event(), asyncio.Event()
        self.stopped = False  # the decoder ended: the session cannot go on

    async def send(self, event: ServerEvent) -> None:
        async with self.sending:
            await self.websocket.send_text(event.model_dump_json())

    async def run(self) -> None:
        """Until the client leaves or idles out; the decoder task ends with it."""
        await self.send(SessionEvent(type="session.created", session=self.settings.state(self.id)))
        detection = self.settings.turn_detection
        vad = f"server_vad by the {live.DETECTOR} detector" if detection else "manual commits"
        log.info("realtime %s: %s, audio/pcm %d Hz", self.id, vad, self.settings.format.rate)
        decoder = asyncio.create_task(self._decoding())
        try:
            await self._receiving()
        finally:
            decoder.cancel()

    async def _receiving(self) -> None:
        limits = self.realtime.limits
        while True:
            try:
                message = await asyncio.wait_for(self.websocket.receive(), limits.idle_seconds)
            except asyncio.TimeoutError:
                await self._refuse(
                    Refusal(f"no event in {limits.idle_seconds:g} s: closed", "session_idle")
                )
                await self.websocket.close()
                return
            if message["type"] == "websocket.disconnect":
                return
            try:
                await self._handle(message)
            except Refusal as refusal:
                await self._refuse(refusal)
            while self.engine.backlog > limits.max_backlog and not self.stopped:
                self.progress.clear()
                await self.progress.wait()
            if self.stopped:
                return

    async def _refuse(self, refusal: Refusal) -> None:
        await self.send(ErrorEvent(error=refusal.detail))

    async def _handle(self, message: Mapping[str, Any]) -> None:
        text = message.get("text")
        if text is None:
            raise Refusal("events are JSON text messages, not binary", "invalid_event")
        event = parse_event(text, self.realtime.limits)
        if isinstance(event, Append):
            await self._emit(self.engine.append(self._samples(event)))
        elif isinstance(event, Commit):
            try:
                await self._emit(self.engine.commit())
            except UserError as exc:
                param = "input_audio_buffer"
                code = "input_audio_buffer_commit_empty"
                raise Refusal(str(exc), code, param, event.event_id) from None
        elif isinstance(event, Clear):
            self.engine.clear()
            await self.send(BufferEvent())
        else:
            await self._update(event)
        self.wake.set()

    def _samples(self, event: Append) -> Any:
        try:
            data = base64.b64decode(event.audio, validate=True)
            return self.resampler(live.pcm16(data))
        except (binascii.Error, UserError) as exc:
            message = f"audio is not base64 16-bit PCM ({exc})"
            raise Refusal(message, "invalid_value", "audio", event.event_id) from None

    async def _update(self, event: SessionUpdate) -> None:
        try:
            settings = self.settings.updated(event.session)
        except UserError as exc:
            where = "session.audio.input.turn_detection"
            raise Refusal(str(exc), "invalid_value", where, event.event_id) from None
        self.options = self.realtime.checked(settings)
        if settings.format.rate != self.settings.format.rate:
            self.resampler = live.Resampler(settings.format.rate)
        self.engine.configure(settings.turn_detection)
        self.settings = settings
        await self.send(SessionEvent(type="session.updated", session=settings.state(self.id)))

    async def _emit(self, events: list[live.Event]) -> None:
        for event in events:
            await self.send(_server_event(event))

    async def _decoding(self) -> None:
        """Decode what the engine asks for, one job at a time, off the event loop. When this
        ends (the client left while an event was sent), the receiver stops too."""
        try:
            while True:
                await self.wake.wait()
                self.wake.clear()
                while (job := self.engine.next_job(self.realtime.idle())) is not None:
                    text = await (self._final(job) if job.final else self._partial(job))
                    if text is not None:
                        await self._emit(self.engine.finish(job, text))
                    self.progress.set()
        finally:
            self.stopped = True
            self.progress.set()

    async def _final(self, job: live.Job) -> str:
        self.realtime.finals += 1
        try:
            return await self._decoded(job) or ""
        finally:
            self.realtime.finals -= 1

    async def _partial(self, job: live.Job) -> str | None:
        """The partial's text, or None when the lock was taken meanwhile (it is postponed)."""
        text = await self._decoded(job)
        if text is None:
            self.engine.postpone(job)
        return text

    async def _decoded(self, job: live.Job) -> str | None:
        """The job's text; a decode that fails is an error event and no text, and the session
        goes on."""
        try:
            return await asyncio.to_thread(self.realtime.decode, job, self.options)
        except UserError as exc:
            await self._refuse(Refusal(str(exc), "transcription_failed"))
        except Exception as exc:  # the runtime's (ORT's) own errors derive from Exception only
            detail = ErrorDetail(type="server_error", message=f"decoding failed ({exc})"[:300])
            await self.send(ErrorEvent(error=detail))
        return ""


def install_realtime(
    app: FastAPI,
    model: Model,
    lock: threading.Lock,
    model_name: str,
    limits: RealtimeLimits,
) -> Realtime:
    """The `/v1/realtime` WebSocket on `app`; its state is `app.state.realtime`."""
    realtime = Realtime(model, lock, model_name, limits)
    app.state.realtime = realtime

    @app.websocket("/v1/realtime")
    async def realtime_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        intent = websocket.query_params.get("intent")
        if intent != "transcription":
            message = "only transcription sessions are served: connect with ?intent=transcription"
            await _close_refused(websocket, Refusal(message, "unsupported_intent", "intent"))
            return
        if realtime.sessions >= limits.max_sessions:
            message = f"{limits.max_sessions} realtime sessions are open, the most this serves"
            await _close_refused(websocket, Refusal(message, "session_limit"), TRY_AGAIN_LATER)
            return
        realtime.sessions += 1
        try:
            await Session(realtime, websocket).run()
        except (WebSocketDisconnect, OSError):
            pass  # the client left (mid-send): its session is freed all the same
        finally:
            realtime.sessions -= 1

    return realtime


async def _close_refused(
    websocket: WebSocket, refusal: Refusal, code: int = POLICY_VIOLATION
) -> None:
    await websocket.send_text(ErrorEvent(error=refusal.detail).model_dump_json())
    await websocket.close(code, refusal.detail.message[:120])
