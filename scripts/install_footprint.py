"""What `pip install <this repo>` adds to an environment shaped like AMD's Ryzen AI one (numpy
1.26.4, the `onnxruntime` module from `onnxruntime-vitisai`; tests/amd_env.py) beside
`pip install faster-whisper==1.2.1` into another such environment, on each Python AMD ships:
distributions installed, site-packages growth, what of AMD's it replaced, and the median wall
time of importing each runtime in a fresh interpreter.

    python -m scripts.install_footprint          # from the repository's root
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tests.amd_env import (
    NUMPY_VERSION,
    PYTHONS,
    VITISAI,
    Dist,
    Venv,
    amd_venv,
    find_python,
    interpreter_missing,
    source_copy,
)

REPO = Path(__file__).resolve().parent.parent
MB = 1_000_000


@dataclass(frozen=True)
class Candidate:
    """One thing to install and the import that makes it ready to transcribe."""

    label: str
    # pip's argument; None: this repository, copied for each venv (setuptools builds in the
    # source tree, and two builds at once would share it)
    requirement: str | None
    probe: str  # Python run with -c and timed


@dataclass(frozen=True)
class Installed:
    """A candidate installed into its own AMD-shaped venv."""

    python: str
    candidate: Candidate
    venv: Venv
    added: tuple[Dist, ...]  # pip's --report
    growth_bytes: int  # site-packages after minus before
    replaced: tuple[str, ...]  # what of AMD's environment the install changed


@dataclass(frozen=True)
class Footprint:
    installed: Installed
    import_s: float  # median wall time of the probe, interpreter start included


def tree_bytes(root: Path) -> int:
    return sum(path.stat().st_size for path in root.rglob("*") if path.is_file())


def replaced(before: dict[str, str], added: tuple[Dist, ...], after: dict[str, str]) -> list[str]:
    """AMD's numpy changed, and any onnxruntime distribution pip put over onnxruntime-vitisai's
    module (AMD: it removes the VitisAI provider)."""
    notes = [
        f"{dist.name} {dist.version} from PyPI over {VITISAI}'s onnxruntime module"
        for dist in added
        if dist.name.startswith("onnxruntime")
    ]
    if after.get("numpy") != before.get("numpy"):
        notes.append(f"numpy {before.get('numpy')} -> {after.get('numpy')}")
    return notes


def install(python_version: str, python: Path, candidate: Candidate, root: Path) -> Installed:
    venv = amd_venv(python, root / "venv")
    site = venv.site_packages()
    size, before = tree_bytes(site), venv.distributions()
    requirement = candidate.requirement or source_copy(REPO, root / "source")
    added = venv.pip(requirement, report=root / "report.json")
    after = venv.distributions()
    notes = tuple(replaced(before, added, after))
    return Installed(python_version, candidate, venv, added, tree_bytes(site) - size, notes)


def median_import_s(venv: Venv, probe: str, runs: int) -> float:
    """The median of `runs` fresh interpreters, after one untimed run warms the disk cache."""
    times = []
    for attempt in range(runs + 1):
        start = time.perf_counter()
        done = venv.run("-c", probe)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{probe!r} in {venv.root}:\n{done.stderr}")
        if attempt:
            times.append(elapsed)
    return statistics.median(times)


def print_table(rows: list[Footprint], runs: int) -> None:
    header = f"{'python':6}  {'install':22}  {'dists':>5}  {'MB':>7}  {'import s':>8}  replaces"
    print(header)
    print("-" * len(header))
    for row in rows:
        done = row.installed
        print(
            f"{done.python:6}  {done.candidate.label:22}  {len(done.added):5d}  "
            f"{done.growth_bytes / MB:7.1f}  {row.import_s:8.3f}  "
            f"{'; '.join(done.replaced) or 'nothing'}"
        )
    print(
        f"\ndists: distributions pip installed (its --report); MB: site-packages growth (file "
        f"sizes); import s: median wall time of {runs} fresh interpreters running the import "
        f"(start-up included); each in a fresh venv holding numpy {NUMPY_VERSION} and "
        f"{VITISAI}."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed imports per install")
    args = parser.parse_args()
    pythons = {version: find_python(version) for version in PYTHONS}
    for version, python in pythons.items():
        if python is None:
            print(f"skipped: {interpreter_missing(version)}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="install-footprint-") as scratch:
        root = Path(scratch)
        candidates = [
            Candidate("whisper-npu", None, "from whisper_npu import load; load"),
            Candidate("faster-whisper==1.2.1", "faster-whisper==1.2.1", "import faster_whisper"),
        ]
        jobs = [
            (version, python, candidate, root / f"{version}-{index}")
            for version, python in pythons.items()
            if python is not None
            for index, candidate in enumerate(candidates)
        ]
        # Installs overlap well (downloads, unpacking); imports are timed one at a time after.
        with ThreadPoolExecutor(max_workers=2) as pool:
            installed = list(pool.map(lambda job: install(*job), jobs))
        rows = [
            Footprint(done, median_import_s(done.venv, done.candidate.probe, args.runs))
            for done in installed
        ]
    print_table(rows, args.runs)


if __name__ == "__main__":
    main()
