"""`whisper-npu verify`: re-hash a pulled release or bundle against the sha256 it records.

A release pulled from a DVC remote, fetched with `dvc artifacts get` or copied by hand is
checked against its own card before anyone deploys it: every file the card lists must be there
with the same sha256, and nothing else may be. A plain bundle is checked against the "files" of
its bundle.json the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from whisper_npu.bundle import BundleRecord
from whisper_npu.card import Card
from whisper_npu.errors import GateFailure, UserError
from whisper_npu.fsutil import artifact_files, file_record, read_json_object, sha256_file
from whisper_npu.layout import BUNDLE_FILE, CARD_FILE, MODEL_CARD_FILE, QUANTIZATION_REPORT_FILE

# A record cannot contain its own hash, so these files are outside the record they belong to.
CARD_METADATA = frozenset({CARD_FILE, MODEL_CARD_FILE})
BUNDLE_METADATA = frozenset({BUNDLE_FILE, QUANTIZATION_REPORT_FILE})


@dataclass(frozen=True)
class Differences:
    """Files whose bytes differ from a record, files it lists that are absent, and files it
    does not list."""

    changed: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.changed or self.missing or self.extra)

    def describe(self) -> str:
        parts = [
            f"{label} {_listed(names)}"
            for label, names in (
                ("changed:", self.changed),
                ("missing:", self.missing),
                ("extra:", self.extra),
            )
            if names
        ]
        return "; ".join(parts)


def _listed(names: tuple[str, ...], most: int = 10) -> str:
    """Names for one error line: a hostile record listing thousands must not flood it."""
    shown = ", ".join(name[:120] for name in names[:most])
    return f"{shown} and {len(names) - most} more" if len(names) > most else shown


def compare(record: dict[str, str], actual: dict[str, str], extras: bool = True) -> Differences:
    """`record` and `actual` map POSIX relative paths to sha256; `extras=False` ignores files
    the record does not list (a bundle record inside a release, which also holds npu/)."""
    return Differences(
        changed=tuple(sorted(n for n in record if n in actual and actual[n] != record[n])),
        missing=tuple(sorted(n for n in record if n not in actual)),
        extra=tuple(sorted(n for n in actual if n not in record)) if extras else (),
    )


def _record(path: Path) -> dict[str, str]:
    """The "files" of a card (validated as a whole card) or of a bundle.json."""
    if path.name == CARD_FILE:
        return file_record(path, Card.read(path).files)
    record = read_json_object(path)
    if "files" not in record:
        raise UserError(f"{path}: no sha256 record ('files') to verify against")
    return file_record(path, record["files"])


def _bundle_files(root: Path) -> dict[str, str]:
    files = BundleRecord.load(root).files
    if files is None:
        raise UserError(f"{root / BUNDLE_FILE}: no sha256 record ('files') to verify against")
    return files


def verify_artifact(root: Path) -> str:
    """One line when every file matches; GateFailure (exit 1) naming each difference; UserError
    (exit 2) when `root` is neither a release (card.json) nor a bundle (bundle.json), or holds
    a link or special file (nothing is opened before the listing is known to be clean)."""
    root = Path(root)
    names = artifact_files(root) if root.is_dir() else []
    if CARD_FILE in names:
        primary, skip = root / CARD_FILE, CARD_METADATA
    elif BUNDLE_FILE in names:
        primary, skip = root / BUNDLE_FILE, BUNDLE_METADATA
    else:
        raise UserError(
            f"{root}: not a release or bundle directory (no {CARD_FILE} or {BUNDLE_FILE})"
        )
    record = _record(primary) if primary.name == CARD_FILE else _bundle_files(root)
    actual = {name: sha256_file(root / name) for name in names if name not in skip}
    differences = compare(record, actual)
    if differences:
        raise GateFailure(f"{root}: does not match {primary.name}: {differences.describe()}")
    if primary.name == CARD_FILE and BUNDLE_FILE in names:
        # The bundle's own record travels inside the release: a card rewritten to match
        # replaced graphs still disagrees with it.
        inner = compare(_bundle_files(root), actual, extras=False)
        if inner:
            raise GateFailure(f"{root}: does not match {BUNDLE_FILE}: {inner.describe()}")
    return f"OK: {len(record)} files match {primary.name} in {root}"
