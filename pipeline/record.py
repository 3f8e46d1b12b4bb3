"""The base of every JSON record one stage writes and another reads (bundle.json, the compile
report, the calibration manifest, sensitivity scores).

A record is a frozen pydantic model that forbids unknown keys, read once where it is opened,
so a reader uses typed fields instead of string keys and a malformed file fails in one line
naming the file and the field. It is written back exactly as set: a field the writer never set
stays absent (not null), so a loaded record saves to the same bytes and DVC hashes hold.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import UserError
from pipeline.fsutil import SHA256, excerpt, is_member_name, read_json_object, write_json

UNKNOWN_KEY = ("extra_forbidden", "unexpected_keyword_argument")


def _member(name: str) -> str:
    if not is_member_name(name):
        raise ValueError("a path outside its directory")
    return name


Sha256 = Annotated[str, Field(pattern=f"^{SHA256.pattern}$")]
# A file a record lists: relative, POSIX, inside the record's directory.
MemberName = Annotated[str, AfterValidator(_member)]


def describe(error: ValidationError, source: Path) -> str:
    """A validation error as one line: the file, the dotted path of the field, what is wrong."""
    first = error.errors()[0]
    key = (".".join(str(part) for part in first["loc"]) or "(top level)")[:80]
    if first["type"] in UNKNOWN_KEY:
        return f"{source}: unknown key '{key}'"
    if first["type"] in ("union_tag_invalid", "missing"):
        return f"{source}: {key}: {first['msg']}"
    return f"{source}: {key}: {first['msg']} (got {excerpt(first.get('input'))})"


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def read(cls, path: Path) -> Self:
        """The record in `path`, validated; any problem is one UserError line."""
        try:
            return cls.model_validate(read_json_object(path))
        except ValidationError as exc:
            raise UserError(describe(exc, path)) from None

    def write(self, path: Path) -> None:
        write_json(path, self.model_dump(exclude_unset=True))

    def but(self, *, drop: tuple[str, ...] = (), **changes: Any) -> Self:
        """A record derived from this one: its fields with `changes`, less `drop` (absent, not
        null, in what it writes)."""
        kept = {name: getattr(self, name) for name in self.model_fields_set if name not in drop}
        return self.model_validate({**kept, **changes})
