"""The base of the JSON records the pipeline writes and reads back (bench.json, run.json,
card.json): one frozen, strict schema each, so a reader gets typed fields and a bad file is one
line naming the file and the field, never a KeyError deep inside a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, ValidationError

from pipeline.errors import UserError
from pipeline.fsutil import excerpt, read_json_object, write_json


class Strict(BaseModel):
    # strict: a bool or a string is never a number; nan and inf are never a figure (nan compares
    # False and would pass every gate).
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class JsonRecord(Strict):
    """A whole file: `load` validates it, `save` writes what `to_json` gives."""

    WHAT: ClassVar[str] = "file"  # how a missing or unreadable file is named
    EXPECTED: ClassVar[str] = "a JSON object"
    # A field whose entries sit at the top level of the file (bench.json's variants): errors
    # name the entry, as the file does.
    FLATTENED: ClassVar[str | None] = None

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        raw = read_json_object(path, what=cls.WHAT, expected=cls.EXPECTED)
        try:
            return cls.model_validate(cls.from_file(raw))
        except ValidationError as exc:
            raise UserError(cls._describe(exc, path)) from None

    @classmethod
    def from_file(cls, raw: dict[str, Any]) -> dict[str, Any]:
        """The file's object as the model's fields (the same, unless the file is laid out flat)."""
        return raw

    @classmethod
    def _describe(cls, error: ValidationError, path: Path) -> str:
        first = error.errors()[0]
        loc = [str(part) for part in first["loc"]]
        if len(loc) > 1 and loc[0] == cls.FLATTENED:
            loc = loc[1:]
        key = (".".join(loc) or "(top level)")[:80]
        if first["type"] == "extra_forbidden":
            return f"{path}: unknown key '{key}'"
        if first["type"] == "missing":
            return f"{path}: {key}: missing"
        return f"{path}: {key}: {first['msg']} (got {excerpt(first.get('input'))})"

    def to_json(self) -> dict[str, Any]:
        """The file's content, as plain JSON values."""
        return self.model_dump(mode="json")

    def save(self, path: Path) -> None:
        write_json(Path(path), self.to_json())
