"""The base of every JSON record one stage writes and another reads (bundle.json, the compile
report, the calibration manifest, sensitivity scores, bench.json, run.json, card.json).

A record is a frozen pydantic model that forbids unknown keys, read once where it is opened,
so a reader uses typed fields instead of string keys and a malformed file fails in one line
naming the file and the field. `read`/`write` take a file; a record that is a directory's
(a bundle's, a compiled directory's) adds `load`/`save` taking the directory.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from typing_extensions import Self

from whisper_npu.errors import UserError
from whisper_npu.fsutil import SHA256, excerpt, is_member_name, read_json_object, write_json

UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")


def _member(name: str) -> str:
    if not is_member_name(name):
        raise ValueError("a path outside its directory")
    return name


Sha256 = Annotated[str, Field(pattern=f"^{SHA256.pattern}$")]
# A file a record lists: relative, POSIX, inside the record's directory.
MemberName = Annotated[str, AfterValidator(_member)]


def describe(error: ValidationError, source: Path, flattened: str | None = None) -> str:
    """A validation error as one line: the file, the dotted path of the field, what is wrong.
    `flattened` names a field whose entries sit at the file's top level (bench.json's
    variants): the path then starts at the entry, as the file does."""
    first = error.errors()[0]
    loc = [str(part) for part in first["loc"]]
    if flattened and len(loc) > 1 and loc[0] == flattened:
        loc = loc[1:]
    key = (".".join(loc) or "(top level)")[:80]
    if first["type"] in UNKNOWN_KEY:
        return f"{source}: unknown key '{key}'"
    if first["type"] in ("union_tag_invalid", "missing"):
        return f"{source}: {key}: {first['msg']}"
    if first["type"] == "value_error" and isinstance(first.get("input"), dict):
        return f"{source}: {_checked_key(loc, str(first['ctx']['error']))}"
    return f"{source}: {key}: {first['msg']} (got {excerpt(first.get('input'))})"


def _checked_key(loc: list[str], message: str) -> str:
    """A model validator's refusal, whose input is a whole section (not worth quoting), as
    `key: message`; a message starting `field: ` names a key inside the section."""
    head, sep, rest = message.partition(": ")
    if sep and re.fullmatch(r"[A-Za-z_][\w.]*", head):
        return f"{'.'.join([*loc, head])}: {rest}"
    return f"{'.'.join(loc) or '(top level)'}: {message}"


class Record(BaseModel):
    """Written back exactly as set: a field the writer never set stays absent (not null), so a
    loaded record writes the same bytes and DVC hashes hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    WHAT: ClassVar[str] = "file"  # how a missing or unreadable file is named
    EXPECTED: ClassVar[str] = "a JSON object"
    FLATTENED: ClassVar[str | None] = None  # see `describe`

    @classmethod
    def read(cls, path: Path) -> Self:
        """The record in `path`, validated; any problem is one UserError line."""
        raw = read_json_object(Path(path), what=cls.WHAT, expected=cls.EXPECTED)
        try:
            return cls.model_validate(cls.from_file(raw))
        except ValidationError as exc:
            raise UserError(describe(exc, path, cls.FLATTENED)) from None

    @classmethod
    def from_file(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """The file's object as the model's fields (the same, unless the file is laid out flat)."""
        return raw

    def to_json(self) -> dict[str, Any]:
        """The file's content."""
        return self.model_dump(exclude_unset=True)

    def write(self, path: Path) -> None:
        write_json(Path(path), self.to_json())

    def but(self, *, drop: tuple[str, ...] = (), **changes: Any) -> Self:
        """A record derived from this one: its fields with `changes`, less `drop` (absent, not
        null, in what it writes)."""
        kept = {name: getattr(self, name) for name in self.model_fields_set if name not in drop}
        return self.model_validate({**kept, **changes})


class Strict(Record):
    """A record of measured figures: a bool or a string is never a number, and nan or inf is
    never a figure (nan compares False and would pass every gate). Every field is written."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
