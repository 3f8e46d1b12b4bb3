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


def _gated_run(monkeypatch, root: Path) -> tuple[int, list[str]]:
    """`run_pipeline_gated` in `root`, dvc and the gate faked: the repro writes new metrics,
    the gate records the baseline it was handed."""
    import subprocess

    bootstrap = _bootstrap()
    metrics = root / "artifacts" / "metrics" / "bench.json"
    monkeypatch.setattr(bootstrap, "ROOT", root)
    monkeypatch.setattr(bootstrap, "BENCH_METRICS", metrics)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(root.parent))
    seen: list[str] = []
    real_run = subprocess.run

    def run(command: list[str], **kwargs: object) -> object:
        if command[0] != "PYTHON":
            return real_run(command, **kwargs)
        if "dvc" in command:
            metrics.write_text("measured now")
        else:
            seen.append(Path(command[command.index("--baseline") + 1]).read_text())
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(bootstrap.subprocess, "run", run)
    return bootstrap.run_pipeline_gated("PYTHON", {}), seen


def test_the_gate_baseline_is_the_committed_metrics(tmp_path, monkeypatch) -> None:
    """Whatever the working tree holds (an edited or regenerated bench.json), the new run is
    gated against the one committed at HEAD."""
    import subprocess

    metrics = tmp_path / "artifacts" / "metrics" / "bench.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("committed")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    for command in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "metrics"]):
        subprocess.run([*git, *command], check=True)
    metrics.write_text("edited in the working tree")
    assert _gated_run(monkeypatch, tmp_path) == (0, ["committed"])


def test_outside_git_the_working_tree_metrics_are_the_baseline(tmp_path, monkeypatch, capsys):
    metrics = tmp_path / "artifacts" / "metrics" / "bench.json"
    metrics.parent.mkdir(parents=True)
    metrics.write_text("in the working tree")
    assert _gated_run(monkeypatch, tmp_path) == (0, ["in the working tree"])
    assert capsys.readouterr().out.count("not a git checkout") == 1
