"""A Result as the files Whisper users expect: txt, json, verbose_json (OpenAI's API shapes),
srt, vtt and tsv (openai-whisper's writers: milliseconds in tsv, cues from segments)."""

from __future__ import annotations

import json
from collections.abc import Callable

from whisper_npu.compat import StrEnum
from whisper_npu.result import Result


class Format(StrEnum):
    TXT = "txt"
    JSON = "json"
    VERBOSE_JSON = "verbose_json"
    SRT = "srt"
    VTT = "vtt"
    TSV = "tsv"


def _clock(seconds: float, decimal: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _cues(result: Result) -> list[tuple[float, float, str]]:
    """Segments with text; `-->` in a text would end a cue early, so it is broken."""
    return [
        (s.start, s.end, s.text.strip().replace("-->", "->"))
        for s in result.segments
        if s.text.strip()
    ]


def _txt(result: Result) -> str:
    return result.text + "\n"


def _json(result: Result) -> str:
    return json.dumps({"text": result.text}, ensure_ascii=False) + "\n"


def _verbose_json(result: Result) -> str:
    payload = {"task": "transcribe", **result.to_json()}
    return json.dumps(payload, ensure_ascii=False, indent=2) + "\n"


def _srt(result: Result) -> str:
    return "".join(
        f"{n}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n\n"
        for n, (start, end, text) in enumerate(_cues(result), start=1)
    )


def _vtt(result: Result) -> str:
    cues = "".join(
        f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n\n"
        for start, end, text in _cues(result)
    )
    return f"WEBVTT\n\n{cues}"


def _tsv(result: Result) -> str:
    rows = "".join(
        f"{round(start * 1000)}\t{round(end * 1000)}\t{text.replace(chr(9), ' ')}\n"
        for start, end, text in _cues(result)
    )
    return f"start\tend\ttext\n{rows}"


RENDER: dict[Format, Callable[[Result], str]] = {
    Format.TXT: _txt,
    Format.JSON: _json,
    Format.VERBOSE_JSON: _verbose_json,
    Format.SRT: _srt,
    Format.VTT: _vtt,
    Format.TSV: _tsv,
}
TIMED = frozenset({Format.VERBOSE_JSON, Format.SRT, Format.VTT, Format.TSV})  # need timestamps
EXTENSION = {fmt: "json" if fmt == Format.VERBOSE_JSON else fmt.value for fmt in Format}


def render(result: Result, fmt: Format) -> str:
    return RENDER[fmt](result)
