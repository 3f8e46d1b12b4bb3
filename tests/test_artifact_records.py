"""Typed artifact records: a record loaded and saved again is the same bytes (DVC hashes of the
stages' outputs hold), and a malformed one is one line naming its file and field.

tests/data/records holds real outputs of the default pipeline (the fp32 bundle.json, the
a16w8 sensitivity scores); the others are written here the way their stages write them.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import CompileParams
from pipeline.npu.compile import compile_bundle
from pipeline.quant.sensitivity import SensitivityRecord
from tests.test_compile import fake_bundle
from tests.test_release import CALIBRATION_MANIFEST
from tests.test_release import fake_bundle as quantized_bundle
from whisper_npu.bundle import BundleRecord, CalibrationManifest
from whisper_npu.compiled import CompileRecord
from whisper_npu.errors import UserError
from whisper_npu.fsutil import write_json
from whisper_npu.layout import BUNDLE_FILE, COMPILE_FILE, MANIFEST_FILE, PROVIDER_OPTIONS_FILE

DATA = Path(__file__).parent / "data" / "records"


def same_bytes(source: Path, saved: Path, names: list[str]) -> None:
    for name in names:
        assert (saved / name).read_bytes() == (source / name).read_bytes(), name


def test_the_real_fp32_bundle_record_saves_to_the_same_bytes(tmp_path: Path) -> None:
    BundleRecord.load(DATA / "bundle-fp32").save(tmp_path)
    same_bytes(DATA / "bundle-fp32", tmp_path, [BUNDLE_FILE])


def test_a_quantized_bundle_record_saves_to_the_same_bytes(tmp_path: Path) -> None:
    """custom_ops null stays null, parity absent stays absent."""
    source = quantized_bundle(tmp_path / "source")
    write_json(source / BUNDLE_FILE, json.loads((source / BUNDLE_FILE).read_text()))
    record = BundleRecord.load(source)
    assert record.custom_ops is None and record.parity is None and record.quantization
    record.save(tmp_path)
    same_bytes(source, tmp_path, [BUNDLE_FILE])


def test_the_real_sensitivity_record_saves_to_the_same_bytes(tmp_path: Path) -> None:
    SensitivityRecord.load(DATA / "sensitivity", "a16w8").save(tmp_path, "a16w8")
    same_bytes(DATA / "sensitivity", tmp_path, ["a16w8.json"])


def test_a_calibration_manifest_saves_to_the_same_bytes(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.mkdir()
    write_json(source / MANIFEST_FILE, CALIBRATION_MANIFEST)
    CalibrationManifest.load(source).save(tmp_path)
    same_bytes(source, tmp_path, [MANIFEST_FILE])


def test_a_compile_record_saves_to_the_same_bytes(tmp_path: Path) -> None:
    bundle = fake_bundle(tmp_path / "bundle", "a16w8", "Erf", "Add")
    compiled = tmp_path / "compiled"
    compile_bundle(CompileParams(), bundle, compiled, allow_split=True)
    saved = tmp_path / "saved"
    saved.mkdir()
    CompileRecord.load(compiled).save(saved)
    same_bytes(compiled, saved, [COMPILE_FILE, PROVIDER_OPTIONS_FILE])


def _bundle(tmp_path: Path) -> Path:
    shutil.copytree(DATA / "bundle-fp32", tmp_path / "r")
    return tmp_path / "r"


def _sensitivity(tmp_path: Path) -> Path:
    shutil.copytree(DATA / "sensitivity", tmp_path / "r")
    return tmp_path / "r"


def _manifest(tmp_path: Path) -> Path:
    (tmp_path / "r").mkdir()
    write_json(tmp_path / "r" / MANIFEST_FILE, CALIBRATION_MANIFEST)
    return tmp_path / "r"


def _compiled(tmp_path: Path) -> Path:
    bundle = fake_bundle(tmp_path / "bundle", "fp32", "Add")
    compile_bundle(CompileParams(), bundle, tmp_path / "r")
    return tmp_path / "r"


RECORDS: dict[str, tuple[Callable[[Path], Path], str, Callable[[Path], object]]] = {
    "bundle": (_bundle, BUNDLE_FILE, BundleRecord.load),
    "sensitivity": (_sensitivity, "a16w8.json", lambda r: SensitivityRecord.load(r, "a16w8")),
    "manifest": (_manifest, MANIFEST_FILE, CalibrationManifest.load),
    "compile": (_compiled, COMPILE_FILE, CompileRecord.load),
    "options": (_compiled, PROVIDER_OPTIONS_FILE, CompileRecord.load),
}
FIELD = {
    "bundle": "opset",
    "sensitivity": "grid",
    "manifest": "decoder_steps",
    "compile": "ep_available",
    "options": "encoder",
}


def _wrong_type(record: dict[str, Any], field: str) -> tuple[str, str]:
    record[field] = [["not", "this"]]
    return field, f"{field}: Input should be"


def _missing(record: dict[str, Any], field: str) -> tuple[str, str]:
    del record[field]
    return field, f"{field}: Field required"


def _unknown(record: dict[str, Any], field: str) -> tuple[str, str]:
    record["surprise"] = 1
    return "surprise", "unknown key 'surprise'"


@pytest.mark.parametrize("kind", list(RECORDS))
@pytest.mark.parametrize("damage", [_wrong_type, _missing, _unknown])
def test_a_malformed_record_is_one_line_naming_file_and_field(
    tmp_path: Path,
    kind: str,
    damage: Callable[[dict[str, Any], str], tuple[str, str]],
) -> None:
    make, name, load = RECORDS[kind]
    root = make(tmp_path)
    record = json.loads((root / name).read_text())
    _, expected = damage(record, FIELD[kind])
    write_json(root / name, record)
    with pytest.raises(UserError) as failure:
        load(root)
    message = str(failure.value)
    assert "\n" not in message
    assert message.startswith(f"{root / name}: ") and expected in message
