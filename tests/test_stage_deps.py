"""Every DVC stage lists exactly the project modules its command imports, transitively.

A module missing from a stage's deps means editing it does not rerun the stage (outputs go
stale against the code); a listed module the stage never imports reruns it for nothing. Imports
inside functions count (they run when the stage does); `if TYPE_CHECKING:` imports do not.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("pipeline", "stages", "whisper_npu")


def module_file(dotted: str) -> Path | None:
    """The project file a dotted module name imports, or None for a third-party module."""
    if dotted.split(".")[0] not in PROJECT_PACKAGES:
        return None
    base = REPO.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _type_checking_only(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imported_modules(path: Path) -> set[Path]:
    """Project files `path` imports, including a package's submodules named by `from X import y`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and _type_checking_only(node)
        for child in node.body
        for inner in ast.walk(child)
    }
    found: set[Path] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        for name in names:
            parts = name.split(".")
            # `import a.b.c` runs a/__init__, a/b/__init__ and a/b/c.
            for end in range(1, len(parts) + 1):
                file = module_file(".".join(parts[:end]))
                if file is not None:
                    found.add(file)
    return found


def closure(entry: Path) -> set[Path]:
    seen: set[Path] = set()
    pending = [entry]
    while pending:
        file = pending.pop()
        if file in seen:
            continue
        seen.add(file)
        pending.extend(imported_modules(file) - seen)
    return seen


def code_files(files: set[Path]) -> set[str]:
    """The modules a stage's deps must name: docstring-only package `__init__`s are left out."""
    return {
        file.relative_to(REPO).as_posix()
        for file in files
        if file.name != "__init__.py" or ast.parse(file.read_text("utf-8")).body[1:]
    }


def stages() -> dict[str, dict[str, Any]]:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))
    return {name: stage.get("do", stage) for name, stage in dvc["stages"].items()}


@pytest.mark.parametrize("name", sorted(stages()))
def test_stage_deps_are_the_modules_its_command_imports(name: str) -> None:
    stage = stages()[name]
    entry = stage["cmd"].split()[2]  # python -m stages.<name> …
    assert entry == f"stages.{name}", "each stage runs its own module"
    imported = code_files(closure(REPO / "stages" / f"{name}.py"))
    listed = {dep for dep in stage["deps"] if dep.endswith(".py")}
    assert sorted(imported - listed) == [], f"{name}: imported but not in its dvc.yaml deps"
    assert sorted(listed - imported) == [], f"{name}: in its dvc.yaml deps but never imported"


def test_closure_follows_function_level_imports(tmp_path: Path) -> None:
    """The check sees the lazy imports stages make inside `run`."""
    imported = code_files(closure(REPO / "stages" / "quantize.py"))
    assert "pipeline/quant/quantize.py" in imported
    assert "pipeline/quant/sensitivity.py" in imported
