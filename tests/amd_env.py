"""Python environments shaped like the one AMD's Ryzen AI installer makes, for the install tests
(tests/test_amd_env.py) and scripts/install_footprint.py.

AMD's environment owns three things the runtime must leave alone: the Python version (3.10 for
Ryzen AI 1.3-1.5, 3.12 from 1.6), numpy 1.26.4, and the `onnxruntime` module, which comes from
the distribution `onnxruntime-vitisai` (a PyPI onnxruntime installed over it removes the
VitisAI provider). The real onnxruntime-vitisai is not on PyPI, so PyPI's CPU onnxruntime wheel
stands in for it under that name: same module, same files, another distribution name, which is
all pip and importlib.metadata go by. The renamed wheel is built once per Python and platform
and cached outside the repository, beside the built-in models' cache.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from whisper_npu.fsutil import cache_root

PYTHONS = ("3.10", "3.12")
NUMPY_VERSION = "1.26.4"
VITISAI = "onnxruntime-vitisai"
# The onnxruntime-vitisai of Ryzen AI 1.6-1.7 is 1.23 (whisper_npu.host); PyPI's 1.23.2 has
# wheels for both Pythons.
ORT_VERSION = "1.23.2"
# What the build stack brings and the runtime must not: GBs, and numpy 2 with several of them.
BUILD_STACK = (
    "torch",
    "transformers",
    "datasets",
    "amd-quark",
    "dvc",
    "piper-tts",
    "matplotlib",
    "torchcodec",
)
# Variables that would point the venv's Python at another environment's modules.
FOREIGN = ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def clean_env() -> dict[str, str]:
    """This process's environment without what would leak the calling venv into another."""
    return {key: value for key, value in os.environ.items() if key not in FOREIGN}


def run(
    command: list[str | Path], cwd: Path | None = None, timeout: float = 900, path: str = ""
) -> subprocess.CompletedProcess[str]:
    """`command` run to its end in the clean environment (with `path` as its PATH, if given),
    its output captured."""
    return subprocess.run(
        list(map(str, command)),
        cwd=cwd,
        env=clean_env() | ({"PATH": path} if path else {}),
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


def _probe(command: list[str | Path], version: str) -> Path | None:
    """The interpreter `command` runs, when it runs and is Python `version`."""
    code = "import sys; print(sys.executable); print('%d.%d' % sys.version_info[:2])"
    try:
        done = run([*command, "-c", code], timeout=60)
    except OSError:
        return None
    lines = done.stdout.split()
    if done.returncode != 0 or len(lines) != 2 or lines[1] != version:
        return None
    return Path(lines[0])


def find_python(version: str) -> Path | None:
    """An interpreter of `version` ("3.10"): `python3.10` on PATH, the Windows `py` launcher,
    or pyenv's installs (whose shims answer only for the versions selected)."""
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    installs = sorted(pyenv.glob(f"{version}.*"), reverse=True) if pyenv.is_dir() else []
    candidates: list[list[str | Path]] = [[f"python{version}"], ["py", f"-{version}"]]
    # pyenv's layout on Linux and macOS, and pyenv-win's.
    candidates += [[root / "bin" / "python"] for root in installs]
    candidates += [[root / "python.exe"] for root in installs]
    for command in candidates:
        if found := _probe(command, version):
            return found
    return None


@dataclass(frozen=True)
class Dist:
    """One installed distribution, its name canonical."""

    name: str
    version: str


@dataclass(frozen=True)
class Venv:
    """A virtual environment, driven through its own interpreter."""

    root: Path

    @property
    def bin(self) -> Path:
        return self.root / ("Scripts" if os.name == "nt" else "bin")

    @property
    def python(self) -> Path:
        return self.bin / ("python.exe" if os.name == "nt" else "python")

    def script(self, name: str) -> Path:
        return self.bin / (f"{name}.exe" if os.name == "nt" else name)

    def run(
        self, *args: str | Path, cwd: Path | None = None, timeout: float = 900
    ) -> subprocess.CompletedProcess[str]:
        """This venv's Python run on `args` to its end, captured."""
        return run([self.python, *args], cwd=cwd, timeout=timeout)

    def pip(self, *args: str | Path, report: Path | None = None) -> tuple[Dist, ...]:
        """`pip install` of `args`; what it installed, from its --report."""
        report = report or self.root / "pip-report.json"
        done = self.run(
            "-m", "pip", "install", "--disable-pip-version-check", "--report", report, *args
        )
        if done.returncode != 0:
            wanted = " ".join(map(str, args))
            raise RuntimeError(f"pip install {wanted} in {self.root}:\n{done.stderr}")
        installed = json.loads(report.read_text(encoding="utf-8"))["install"]
        return tuple(
            Dist(canonical(item["metadata"]["name"]), item["metadata"]["version"])
            for item in installed
        )

    def distributions(self) -> dict[str, str]:
        """Every distribution installed here: canonical name → version."""
        code = (
            "import importlib.metadata as m, json; "
            "print(json.dumps({d.metadata['Name']: d.version for d in m.distributions()}))"
        )
        done = self.run("-c", code)
        if done.returncode != 0:
            raise RuntimeError(done.stderr)
        return {canonical(name): version for name, version in json.loads(done.stdout).items()}

    def site_packages(self) -> Path:
        done = self.run("-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
        return Path(done.stdout.strip())


def create_venv(python: Path, root: Path) -> Venv:
    done = run([python, "-m", "venv", root])
    if done.returncode != 0:
        raise RuntimeError(f"{python} -m venv {root}:\n{done.stderr}")
    return Venv(root)


def _digest(data: bytes) -> str:
    """A RECORD hash: urlsafe base64 of the sha256, unpadded (the wheel spec)."""
    encoded = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
    return "sha256=" + encoded.rstrip(b"=").decode("ascii")


def rename_wheel(wheel: Path, name: str, out_dir: Path) -> Path:
    """`wheel` as the distribution `name`: its .dist-info (and .data) directory and METADATA's
    Name renamed, RECORD rewritten with each file's hash and size. The modules are untouched."""
    old_stem, version, tags = wheel.name.split("-", 2)
    new_stem = canonical(name).replace("-", "_")
    old_prefixes = tuple(f"{old_stem}-{version}.{kind}/" for kind in ("dist-info", "data"))
    record_name = f"{new_stem}-{version}.dist-info/RECORD"
    out = out_dir / f"{new_stem}-{version}-{tags}"
    rows = io.StringIO()
    record = csv.writer(rows, lineterminator="\n")
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as dest:
        for info in source.infolist():
            path = info.filename
            if path.startswith(old_prefixes):
                path = f"{new_stem}-{path[len(old_stem) + 1 :]}"
            if path == record_name or info.is_dir():
                continue
            data = source.read(info)
            if path.endswith(".dist-info/METADATA"):
                text = data.decode("utf-8")
                data = re.sub(r"(?m)^Name: .*$", f"Name: {name}", text, count=1).encode("utf-8")
            renamed = zipfile.ZipInfo(path, info.date_time)
            renamed.external_attr, renamed.compress_type = info.external_attr, zipfile.ZIP_DEFLATED
            dest.writestr(renamed, data)
            record.writerow([path, _digest(data), len(data)])
        record.writerow([record_name, "", ""])
        dest.writestr(record_name, rows.getvalue())
    return out


def _wheel_key(venv: Venv) -> str:
    """What PyPI's onnxruntime wheel depends on: the Python version and the platform."""
    code = (
        "import sys, sysconfig; "
        "print('cp%d%d-%s' % (*sys.version_info[:2], sysconfig.get_platform()))"
    )
    return venv.run("-c", code).stdout.strip()


def vitisai_wheel(venv: Venv) -> Path:
    """PyPI's CPU onnxruntime for `venv`'s Python as `onnxruntime-vitisai`, from the cache
    ($WHISPER_NPU_CACHE/test-wheels) or built into it, written whole or not at all."""
    cache = cache_root() / "test-wheels" / f"{VITISAI}-{ORT_VERSION}" / _wheel_key(venv)
    if built := sorted(cache.glob("*.whl")):
        return built[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as scratch:
        download = Path(scratch)
        done = venv.run(
            "-m", "pip", "download", "--disable-pip-version-check", "--no-deps",
            "--only-binary=:all:", "--dest", download, f"onnxruntime=={ORT_VERSION}",
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"pip download onnxruntime=={ORT_VERSION}:\n{done.stderr}")
        (wheel,) = download.glob("onnxruntime-*.whl")
        renamed = rename_wheel(wheel, VITISAI, download)
        final = cache / renamed.name
        os.replace(renamed, final)
    return final


def amd_venv(python: Path, root: Path, *pip_options: str) -> Venv:
    """A fresh venv of `python` with what AMD's installer puts there for the runtime to find:
    numpy 1.26.4 and the onnxruntime module from `onnxruntime-vitisai`."""
    venv = create_venv(python, root)
    wanted = (f"numpy=={NUMPY_VERSION}", vitisai_wheel(venv))
    venv.pip(*pip_options, *wanted, report=root / "amd-report.json")
    return venv


def source_copy(repo: Path, dest: Path) -> Path:
    """The repository's files as a clone has them (tracked and new, not ignored): what
    `pip install <repo>` builds from, copied so the build writes nothing into `repo`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=repo,
        capture_output=True,
        check=True,
    ).stdout.decode("utf-8")
    for name in filter(None, listed.split("\0")):
        source = repo / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@dataclass(frozen=True)
class RuntimeInstall:
    """An AMD-shaped venv after `pip install <repo>`: what that install added (its --report)
    and every distribution present right after it, before any test adds its own tools."""

    venv: Venv
    installed: tuple[Dist, ...]
    present: dict[str, str]


def install_runtime(python: Path, root: Path, repo: Path) -> RuntimeInstall:
    """`pip install <repo>` into a fresh AMD-shaped venv. Nothing is byte-compiled: the tests
    time nothing, and compiling scipy's and sympy's modules doubled the build on 2 cores."""
    venv = amd_venv(python, root / "venv", "--no-compile")
    source = source_copy(repo, root / "source")
    installed = venv.pip("--no-compile", source, report=root / "runtime-report.json")
    return RuntimeInstall(venv, installed, venv.distributions())


def interpreter_missing(version: str) -> str:
    return (
        f"no Python {version} here (looked for python{version} on PATH, `py -{version}` and "
        f"pyenv's versions/{version}.*); it is what AMD's Ryzen AI environments run"
    )
