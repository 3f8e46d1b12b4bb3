"""A Result as the files Whisper users expect: txt, json, verbose_json (OpenAI's API shapes),
srt, vtt and tsv (openai-whisper's writers: milliseconds in tsv, cues from segments, or with
word timestamps from words: lines up to a width, cues up to a line count, the spoken word
underlined, as openai-whisper's SubtitlesWriter makes them)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from whisper_npu.alignment import Word
from whisper_npu.compat import StrEnum
from whisper_npu.errors import UserError
from whisper_npu.result import Result

LONG_PAUSE = 3.0  # seconds between words that start a new cue when segments are not kept


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


@dataclass(frozen=True)
class Subtitles:
    """openai-whisper's subtitle options (srt, vtt); each needs word timestamps. Width and
    count together regroup the words into cues regardless of segments."""

    max_line_width: int | None = None  # characters per line
    max_line_count: int | None = None  # lines per cue
    highlight_words: bool = False  # one cue per word, the word underlined

    def check(self, words: bool) -> None:
        """Refuse a subtitle option without word timestamps (openai-whisper only warns); the
        CLI's `positive_int` has already refused widths and counts under 1."""
        for name in ("max_line_width", "max_line_count", "highlight_words"):
            if getattr(self, name) and not words:
                flag = name.replace("_", "-")
                raise UserError(f"--{flag} needs --word-timestamps")


Cue = tuple[float, float, str]


def _lines(result: Result, options: Subtitles) -> Iterator[list[Word]]:
    """openai-whisper's iterate_subtitles: words with their spacing, a line break written
    into the first word of a new line, one list per cue."""
    keep_segments = options.max_line_count is None or options.max_line_width is None
    width = options.max_line_width or 1000
    line_len, line_count = 0, 1
    cue: list[Word] = []
    last = result.segments[0].start if result.segments else 0.0
    for segment in result.segments:
        for index, word in enumerate(segment.words or ()):
            long_pause = not keep_segments and word.start - last > LONG_PAUSE
            has_room = line_len + len(word.word) <= width
            segment_break = index == 0 and bool(cue) and keep_segments
            if line_len > 0 and has_room and not long_pause and not segment_break:
                line_len += len(word.word)
            else:
                word = replace(word, word=word.word.strip())
                count = options.max_line_count
                if (cue and count is not None and (long_pause or line_count >= count)) or (
                    segment_break
                ):
                    yield cue
                    cue, line_count = [], 1
                elif line_len > 0:
                    line_count += 1
                    word = replace(word, word="\n" + word.word)
                line_len = len(word.word.strip())
            cue.append(word)
            last = word.start
    if cue:
        yield cue


def _word_cues(result: Result, options: Subtitles) -> Iterator[Cue]:
    for cue in _lines(result, options):
        text = "".join(word.word for word in cue)
        if not options.highlight_words:
            yield cue[0].start, cue[-1].end, text
            continue
        last = cue[0].start
        for index, word in enumerate(cue):
            if last != word.start:
                yield last, word.start, text
            marked = [
                re.sub(r"^(\s*)(.*)$", r"\1<u>\2</u>", w.word) if i == index else w.word
                for i, w in enumerate(cue)
            ]
            yield word.start, word.end, "".join(marked)
            last = word.end


def _segment_cues(result: Result) -> list[Cue]:
    """Segments with text; `-->` in a text would end a cue early, so it is broken."""
    return [
        (s.start, s.end, s.text.strip().replace("-->", "->"))
        for s in result.segments
        if s.text.strip()
    ]


def _cues(result: Result, options: Subtitles) -> list[Cue]:
    """Cues from words where the result has them (openai-whisper's), else from segments."""
    if not (result.segments and result.segments[0].words is not None):
        return _segment_cues(result)
    found = _word_cues(result, options)
    return [(start, end, text.replace("-->", "->")) for start, end, text in found if text.strip()]


def _txt(result: Result, _: Subtitles) -> str:
    return result.text + "\n"


def _json(result: Result, _: Subtitles) -> str:
    return json.dumps({"text": result.text}, ensure_ascii=False) + "\n"


def _verbose_json(result: Result, _: Subtitles) -> str:
    payload = {"task": "transcribe", **result.to_json()}
    return json.dumps(payload, ensure_ascii=False, indent=2) + "\n"


def _srt(result: Result, options: Subtitles) -> str:
    return "".join(
        f"{n}\n{_clock(start, ',')} --> {_clock(end, ',')}\n{text}\n\n"
        for n, (start, end, text) in enumerate(_cues(result, options), start=1)
    )


def _vtt(result: Result, options: Subtitles) -> str:
    cues = "".join(
        f"{_clock(start, '.')} --> {_clock(end, '.')}\n{text}\n\n"
        for start, end, text in _cues(result, options)
    )
    return f"WEBVTT\n\n{cues}"


def _tsv(result: Result, _: Subtitles) -> str:
    rows = "".join(
        f"{round(start * 1000)}\t{round(end * 1000)}\t{text.replace(chr(9), ' ')}\n"
        for start, end, text in _segment_cues(result)
    )
    return f"start\tend\ttext\n{rows}"


RENDER: dict[Format, Callable[[Result, Subtitles], str]] = {
    Format.TXT: _txt,
    Format.JSON: _json,
    Format.VERBOSE_JSON: _verbose_json,
    Format.SRT: _srt,
    Format.VTT: _vtt,
    Format.TSV: _tsv,
}
TIMED = frozenset({Format.VERBOSE_JSON, Format.SRT, Format.VTT, Format.TSV})  # need timestamps
EXTENSION = {fmt: "json" if fmt == Format.VERBOSE_JSON else fmt.value for fmt in Format}


def render(result: Result, fmt: Format, subtitles: Subtitles | None = None) -> str:
    """`subtitles` shapes srt and vtt cues from words (a result with word timestamps)."""
    return RENDER[fmt](result, subtitles or Subtitles())
