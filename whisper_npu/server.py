"""`whisper-npu serve`: OpenAI-compatible transcription (and, for multilingual bundles,
translation) endpoints on one loaded artifact, so apps written for OpenAI's audio API run on
the laptop's NPU.

One model serves every request, one request at a time (a lock; the others wait in line): an
NPU context and the ORT sessions' bound buffers (the self-attention cache the decoder reads and
writes) belong to the one decode in progress, and a second copy of the model would compete for
the same NPU and cores rather than add throughput. Bad input is answered with OpenAI's error
JSON and a 4xx, and the server keeps serving: an upload is bounded in bytes and in the audio it
decodes to, and who may call is checked first (`whisper_npu.access`). OpenAI's Realtime API in
transcription mode (`/v1/realtime`, a WebSocket) shares the model and the lock
(`whisper_npu.realtime`).
"""

from __future__ import annotations

import tempfile
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import BaseModel
from pydantic import Field as PydanticField
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from whisper_npu.access import MAX_AUDIO_SECONDS, MAX_UPLOAD_BYTES, Access
from whisper_npu.decoding import TRANSLATE, TranscribeOptions
from whisper_npu.errors import UserError
from whisper_npu.formats import TIMED, Format, render
from whisper_npu.language import AUTO
from whisper_npu.model import Model
from whisper_npu.realtime import POLICY_VIOLATION, RealtimeLimits, install_realtime
from whisper_npu.vad import VadOptions, require_vad

MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json"}
# OpenAI's response_format names; "text" is our txt without the final newline.
FORMATS = {"json": Format.JSON, "text": Format.TXT, "srt": Format.SRT, "vtt": Format.VTT}
FORMATS["verbose_json"] = Format.VERBOSE_JSON
MULTIPART_OVERHEAD = 64 * 1024  # form fields and boundaries around the file
GRANULARITIES = "timestamp_granularities[]"
OPEN_PATHS = frozenset({"/health"})  # answered without the key (it then says nothing else)
# Browsers open WebSockets to any host and send no CORS preflight: the Host, Origin and key
# checks guard /v1/realtime's handshakes as they guard requests.
GUARDED = frozenset({"http", "websocket"})


@dataclass(frozen=True)
class ServeSettings:
    model_name: str  # the id /v1/models lists; any `model` a request names is served by it
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_audio_seconds: float = MAX_AUDIO_SECONDS  # decoding an upload stops past it (400)
    access: Access = field(default_factory=Access)  # localhost only, no key, no CORS
    realtime: RealtimeLimits = field(default_factory=RealtimeLimits)  # /v1/realtime sessions


def _error(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> JSONResponse:
    """A refusal as OpenAI's API shapes it, which its clients parse into their exceptions."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": code}}
    return JSONResponse(body, status_code=status)


class ApiError(Exception):
    """A request the API refuses: its status and OpenAI's error fields."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


class AudioForm(BaseModel):
    """The form fields OpenAI's transcriptions and translations share (besides `file`)."""

    model: str | None = None  # any name is served by the one loaded model
    prompt: str | None = None  # OpenAI's: the initial prompt (its last 223 tokens are read)
    response_format: Literal["json", "text", "srt", "vtt", "verbose_json"] = "json"
    temperature: float = PydanticField(default=0.0, ge=0, le=1)
    vad: bool = False  # ours: decode only the speech Silero VAD finds (the `vad` extra)

    def options(self) -> TranscribeOptions:
        """OpenAI's API: temperature 0 raises the temperature while the guards fail; any other
        value is the one temperature used."""
        timed = FORMATS[self.response_format] in TIMED
        temperatures = (self.temperature,) if self.temperature else TranscribeOptions.temperatures
        return TranscribeOptions(
            timestamps=timed, temperatures=temperatures, initial_prompt=self.prompt
        )


class TranscriptionForm(AudioForm):
    """`POST /v1/audio/transcriptions`."""

    language: str | None = None
    timestamp_granularities: list[Literal["segment", "word"]] = PydanticField(
        default_factory=list, alias=GRANULARITIES
    )

    def options(self) -> TranscribeOptions:
        """OpenAI's: word times are asked for with `timestamp_granularities[]=word`, in
        verbose_json only (segments are always in it)."""
        words = "word" in self.timestamp_granularities
        if words and self.response_format != "verbose_json":
            message = "timestamp_granularities[]=word needs response_format verbose_json"
            raise ApiError(400, message, GRANULARITIES)
        return replace(super().options(), language=self.language, word_timestamps=words)


class TranslationForm(AudioForm):
    """`POST /v1/audio/translations`: any language the model knows, detected, into English."""

    def options(self) -> TranscribeOptions:
        return replace(super().options(), language=AUTO, task=TRANSLATE)


def _saved_upload(upload: UploadFile, folder: Path, limit: int) -> Path:
    """The upload as a file (the audio reader checks it like any file), refused when empty or
    over the limit."""
    path = folder / "upload"
    size = 0
    with path.open("wb") as out:
        while chunk := upload.file.read(1 << 20):
            size += len(chunk)
            if size > limit:
                raise ApiError(413, f"file is larger than {limit} bytes", "file")
            out.write(chunk)
    if size == 0:
        raise ApiError(400, "file is empty", "file")
    return path


def _vad(form: AudioForm) -> VadOptions | None:
    """VAD when the request asks for it, refused when the server lacks faster-whisper."""
    if not form.vad:
        return None
    try:
        require_vad()
    except UserError as exc:
        raise ApiError(400, str(exc), "vad") from None
    return VadOptions()


def _install_error_handlers(app: FastAPI, settings: ServeSettings) -> None:
    """Every refusal in OpenAI's error shape, and oversized bodies refused from their header."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        names = [part for part in first.get("loc", ()) if isinstance(part, str) and part != "body"]
        param = names[-1] if names else None
        return _error(400, f"{param}: {first['msg']}", param)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__})")

    @app.middleware("http")
    async def bounded(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_upload_bytes + MULTIPART_OVERHEAD:
            return _error(413, f"file is larger than {settings.max_upload_bytes} bytes", "file")
        response: Response = await call_next(request)
        return response


def _refused(scope: Scope, refusal: JSONResponse) -> ASGIApp:
    """A refusal for this connection: a WebSocket handshake is answered with the same status
    and JSON where the server can send an HTTP response to it (ASGI's websocket.http.response,
    which uvicorn has), else closed before it is accepted (the client sees 403)."""
    if scope["type"] != "websocket" or "websocket.http.response" in scope.get("extensions", {}):
        return refusal
    return WebSocketClose(POLICY_VIOLATION)


class HostGuard:
    """Refuses, before the body is read, a request naming a foreign host (400: DNS
    rebinding) or sent by a foreign page (403). Starlette's TrustedHostMiddleware answers
    plain text and reads no Origin."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = None
        if scope["type"] in GUARDED:
            headers = Headers(scope=scope)
            origin = headers.get("origin")
            if not self.access.host_allowed(headers.get("host", "")):
                message = "the Host header names no host this server answers (serve --allow-host)"
                refusal = _error(400, message)
            elif origin is not None and not self.access.origin_allowed(origin):
                refusal = _error(403, "requests from this origin are refused (serve --cors-origin)")
        await (_refused(scope, refusal) if refusal else self.app)(scope, receive, send)


class KeyGuard:
    """Refuses (401, as OpenAI) a request without the key, before its body is read."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app, self.access = app, access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = None
        if scope["type"] in GUARDED and scope["path"] not in OPEN_PATHS:
            header = Headers(scope=scope).get("authorization")
            scheme, given = get_authorization_scheme_param(header)
            if scheme.lower() != "bearer" or not given:
                message = "You didn't provide an API key: send Authorization: Bearer KEY"
                refusal = _error(401, message)
            elif not self.access.key_matches(given):
                refusal = _error(401, "Incorrect API key provided", code="invalid_api_key")
            if refusal is not None:
                refusal.headers["WWW-Authenticate"] = "Bearer"
        await (_refused(scope, refusal) if refusal else self.app)(scope, receive, send)


def _install_guards(app: FastAPI, access: Access) -> None:
    """The guards around the app, outermost first: host and origin, CORS (a preflight carries
    no key, and a browser reads a 401 only with CORS headers), the key. Starlette runs the
    middleware added last first."""
    if access.api_key is not None:
        app.add_middleware(KeyGuard, access=access)
    if access.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=access.cors_origins,
            allow_methods=("GET", "POST"),
            allow_headers=("*",),  # OpenAI's JS client adds its own x-stainless-* headers
        )
    app.add_middleware(HostGuard, access=access)


def _install_listings(app: FastAPI, model: Model, settings: ServeSettings) -> None:
    """/health and /v1/models."""

    @app.get("/health")
    def health() -> dict[str, Any]:
        """Open even with a key, so then it says nothing but that the server is up."""
        if settings.access.api_key is not None:
            return {"status": "ok"}
        return {"status": "ok", "model": settings.model_name, **model.execution.to_json()}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        entry = {
            "id": settings.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "whisper-npu",
        }
        return {"object": "list", "data": [entry]}


def create_app(model: Model, settings: ServeSettings) -> FastAPI:
    app = FastAPI(title="whisper-npu", docs_url=None, redoc_url=None)
    lock = threading.Lock()
    _install_error_handlers(app, settings)
    _install_guards(app, settings.access)
    _install_listings(app, model, settings)
    install_realtime(app, model, lock, settings.model_name, settings.realtime)

    def checked(form: AudioForm) -> TranscribeOptions:
        """The request's options, its prompt refused (400) when too long or not text the
        tokenizer can encode."""
        try:
            options = form.options()
            model.transcriber.previous_tokens(options.initial_prompt)
        except UserError as exc:
            raise ApiError(400, str(exc), "prompt") from None
        try:
            model.transcriber.check_words(options)
        except UserError as exc:  # without the bundle's path, which is the server's business
            raise ApiError(400, str(exc).split(": ", 1)[-1], GRANULARITIES) from None
        return options

    def answer(file: UploadFile, form: AudioForm, options: TranscribeOptions) -> Response:
        """Decode the upload under the lock, in the asked format."""
        vad = _vad(form)
        with tempfile.TemporaryDirectory(prefix="whisper-npu-") as folder:
            path = _saved_upload(file, Path(folder), settings.max_upload_bytes)
            try:
                with lock:  # decoding too: one upload's samples in memory at a time
                    result = model.transcribe(
                        path, options, vad, max_seconds=settings.max_audio_seconds
                    )
            except UserError as exc:
                message = str(exc).replace(str(path), file.filename or "file")
                raise ApiError(400, message, "file") from None
        if form.response_format == "text":
            return PlainTextResponse(result.text)
        text = render(result, FORMATS[form.response_format])
        return Response(text, media_type=MEDIA_TYPES.get(form.response_format, "text/plain"))

    @app.post("/v1/audio/transcriptions")
    def transcriptions(
        file: Annotated[UploadFile, File()], form: Annotated[TranscriptionForm, Form()]
    ) -> Response:
        options = checked(form)
        try:
            model.transcriber.check_prompt(options)
        except UserError as exc:
            raise ApiError(400, str(exc), "language") from None
        return answer(file, form, options)

    @app.post("/v1/audio/translations")
    def translations(
        file: Annotated[UploadFile, File()], form: Annotated[TranslationForm, Form()]
    ) -> Response:
        """Any language the model knows into English; `language` in verbose_json is the
        detected source language (OpenAI's says "english")."""
        options = checked(form)
        try:
            model.transcriber.check_prompt(options)
        except UserError:
            message = f"{settings.model_name} is English-only: it cannot translate"
            raise ApiError(400, message, "model") from None
        return answer(file, form, options)

    return app


def serve(model: Model, settings: ServeSettings, host: str, port: int) -> None:
    import uvicorn

    uvicorn.run(create_app(model, settings), host=host, port=port, log_level="info")
