"""scripts/bootstrap.py's disk check: said up front, never fatal."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "bootstrap.py"


def _bootstrap() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bootstrap", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("free_gb", "warned"), [(2.0, True), (500.0, False)])
def test_short_disk_is_one_warning_line(monkeypatch, capsys, free_gb, warned) -> None:
    bootstrap = _bootstrap()
    usage = SimpleNamespace(free=int(free_gb * 10**9))
    monkeypatch.setattr(bootstrap.shutil, "disk_usage", lambda _: usage)
    bootstrap.warn_if_disk_is_short("test")
    err = capsys.readouterr().err
    assert (err.count("\n"), "2.0 GB free" in err) == ((1, True) if warned else (0, False))
