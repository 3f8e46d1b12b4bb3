"""Where a loaded artifact runs, chosen once and said once (`--device auto|npu|cpu`).

Users' first complaint about NPU runtimes is a silent fall back to the CPU. So the choice rests
on facts probed here (whisper_npu.host: the EP, the Ryzen AI release, the chip), `npu` refuses
in one line what `auto` runs on the CPU, and every path ends in an `Execution` record that the
CLI prints as one stderr line and puts in JSON output and the server's /health.

A compiled artifact on the NPU runs from a working directory outside the release
(`cache_root()/vitisai/<key>`), keyed by the compile record and the installed EP: the EP writes
its cache and partition reports there, a release stays byte for byte what `verify` checks (and
may be read-only), and an EP cache shipped in the release (AMD: the deployment EP does not
compile BF16 models; ship the cache made with the same config_file) is copied there once, when
the installed EP is the one that made it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import Field

from whisper_npu import host, vitisai
from whisper_npu.bundle import Artifact
from whisper_npu.compat import StrEnum
from whisper_npu.compiled import EpReport, moved_to_cpu
from whisper_npu.errors import UserError
from whisper_npu.fsutil import cache_root, read_json_object, sha256_file, write_json
from whisper_npu.layout import CACHE_SUBDIR, COMPILE_FILE, VITISAI_REPORT_FILE, vaip_config_file
from whisper_npu.providers import CPU_PROVIDER, VITISAI_PROVIDER
from whisper_npu.record import Record
from whisper_npu.variants import VARIANTS
from whisper_npu.whisper_io import GRAPHS

# AMD's Whisper README: "First run on NPU may take ~15 min for model compilation."
FIRST_COMPILE = "the first run compiles for the NPU (AMD: ~15 min for Whisper)"


class Device(StrEnum):
    AUTO = "auto"  # the NPU where artifact, EP, release and chip allow, else the CPU, said once
    NPU = "npu"  # the NPU, or a one-line refusal naming what is missing (exit 2)
    CPU = "cpu"  # ONNX Runtime's CPU provider, said once


DEVICE_HELP = (
    "auto (default): the NPU where the VitisAI EP, the Ryzen AI release and the chip can run "
    "the artifact, else the CPU, said in one line; npu: the NPU or exit 2; cpu: the CPU"
)


class Execution(Record):
    """What runs the graphs, and why, as JSON output, /health and the bench's run.json say."""

    device: Device  # what was asked for
    provider: str  # what runs them
    compiled: bool  # a compiled directory or release (a bundle alone is for the CPU)
    fallback: str | None = None  # auto: why an NPU artifact runs on the CPU
    notes: list[str] = Field(default_factory=list)  # what else the user should know
    ryzen_ai: str | None = None  # the release whose provider options were used
    chip: str | None = None  # the NPU they were chosen for

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def lines(self) -> list[str]:
        """The stderr lines a command says once: the fall back, or the CPU when asked, and
        the notes."""
        said = [self.fallback] if self.fallback else []
        if self.device is Device.CPU:
            said.append(f"running on {CPU_PROVIDER} (--device cpu)")
        return said + list(self.notes)

    @classmethod
    def cpu(cls, device: Device, compiled: bool, fallback: str | None = None) -> Execution:
        return cls(device=device, provider=CPU_PROVIDER, compiled=compiled, fallback=fallback)


class Host:
    """The facts the choice rests on, each probed when first needed (a bundle needs none; a
    missing EP needs no chip probe). Tests pass their own probes."""

    def __init__(
        self,
        onnxruntime: Callable[[], host.OnnxRuntime] | None = None,
        ryzen_ai: Callable[[], host.RyzenAi] | None = None,
        npu: Callable[[], host.Npu] | None = None,
    ) -> None:
        self._probes = (
            onnxruntime or host.onnxruntime,
            ryzen_ai or host.ryzen_ai,
            npu or host.detect_npu,
        )

    @cached_property
    def onnxruntime(self) -> host.OnnxRuntime:
        return self._probes[0]()

    @cached_property
    def ryzen_ai(self) -> host.RyzenAi:
        return self._probes[1]()

    @cached_property
    def npu(self) -> host.Npu:
        return self._probes[2]()

    def ep_options(self) -> vitisai.EpOptions | None:
        """The installed release's option set; the newest where the release cannot be told
        (the EP is there, so some Ryzen AI Software is)."""
        version = self.ryzen_ai.version
        return vitisai.ep_options(version) if version else vitisai.EP_OPTIONS[-1]


def npu_obstacle(artifact: Artifact, machine: Host) -> str | None:
    """Why the NPU cannot run `artifact` here, as one clause; None when it can."""
    if artifact.compiled is None or artifact.record is None:
        return f"{artifact.bundle.root} is a bundle, compiled for no NPU (use its release)"
    variant = artifact.bundle.record.variant
    if artifact.cpu_only:
        return f"{variant} is CPU only, not for the NPU"
    forecast = artifact.record.report.forecast
    if forecast is None or forecast.no_npu_reason:
        return forecast.no_npu_reason if forecast else "its compile record has no forecast"
    ort = machine.onnxruntime
    if VITISAI_PROVIDER not in ort.providers:
        return (
            f"{VITISAI_PROVIDER} not available ({ort.describe()}; providers: "
            f"{', '.join(ort.providers)})"
        )
    release = machine.ryzen_ai
    if machine.ep_options() is None:
        return f"Ryzen AI {release.release} ({release.how}) predates 1.5, whose options this uses"
    npu = machine.npu
    if npu.chip is None:
        return f"no NPU found ({npu.how})"
    if not npu.ready:
        return f"the {host.CHIP_NAMES[npu.chip]} NPU is not usable: {npu.how}"
    if npu.chip not in VARIANTS[variant].runs_on:
        return f"{variant} has no NPU path on {host.CHIP_NAMES[npu.chip]} (BF16 runs on STX/KRK)"
    return None


@dataclass(frozen=True)
class NpuSetup:
    """Everything an NPU session needs, prepared in the working directory."""

    options: dict[str, dict[str, str]]  # per graph, concrete
    graph_files: dict[str, Path]  # EPContext models the compile stage dumped
    workdir: Path
    execution: Execution
    cached: bool  # an EP cache is there (an earlier run's, or the release's): no compile

    def report_files(self) -> dict[str, Path]:
        return {
            name: Path(opts[vitisai.CACHE_DIR]) / opts[vitisai.CACHE_KEY] / VITISAI_REPORT_FILE
            for name, opts in self.options.items()
        }


def choose(artifact: Artifact, device: Device, machine: Host) -> Execution | NpuSetup:
    """The CPU (an Execution) or the NPU (its setup), or a UserError for `--device npu`."""
    compiled = artifact.compiled is not None and not artifact.cpu_only
    if device is Device.CPU:
        return Execution.cpu(device, compiled)
    obstacle = npu_obstacle(artifact, machine)
    if obstacle and device is Device.NPU:
        raise UserError(f"--device npu: {obstacle}")
    if obstacle:
        # A bundle or a CPU-only variant runs on the CPU by design: nothing fell back.
        fallback = f"{obstacle}; running on {CPU_PROVIDER}" if compiled else None
        return Execution.cpu(device, compiled, fallback)
    return _prepare(artifact, device, machine)


def _workdir(artifact: Artifact, machine: Host) -> Path:
    assert artifact.compiled is not None
    identity = "\n".join(
        [
            sha256_file(artifact.compiled / COMPILE_FILE),
            machine.onnxruntime.describe(),
            str(machine.ryzen_ai.release),
            str(machine.npu.chip),
        ]
    )
    return cache_root() / "vitisai" / hashlib.sha256(identity.encode()).hexdigest()[:16]


def _copy_shipped_cache(source: Path, target: Path) -> None:
    """The release's EP cache into the working directory, whole or not at all."""
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".cache-", dir=target.parent))
    try:
        shutil.copytree(source, scratch, dirs_exist_ok=True)
        os.replace(scratch, target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def shipped_cache(artifact: Artifact, machine: Host) -> Path | None:
    """The release's EP cache when the installed EP is the one that made it (AMD reuses no
    cache across EP versions), else None."""
    assert artifact.compiled is not None and artifact.record is not None
    shipped = artifact.compiled / CACHE_SUBDIR
    made_by = artifact.record.report.ep
    usable = made_by is not None and made_by.onnxruntime == machine.onnxruntime.describe()
    return shipped if shipped.is_dir() and usable else None


def first_run_note(artifact: Artifact, machine: Host) -> str | None:
    """What the first NPU run costs when no usable EP cache ships with the artifact."""
    assert artifact.compiled is not None and artifact.record is not None
    if shipped_cache(artifact, machine):
        return None
    bf16 = VARIANTS[artifact.bundle.record.variant].bf16_flow
    needs = "; it needs the full Ryzen AI install (the deployment EP compiles no BF16)"
    made_by = artifact.record.report.ep
    if (artifact.compiled / CACHE_SUBDIR).is_dir() and made_by is not None:
        return (
            f"its EP cache was made by Ryzen AI {made_by.ryzen_ai} ({made_by.onnxruntime}), "
            f"this is {machine.onnxruntime.describe()}: AMD reuses no cache across EP "
            f"versions, so {FIRST_COMPILE}" + (needs if bf16 else "")
        )
    return f"no compiled EP cache shipped: {FIRST_COMPILE}" + (needs if bf16 else "")


def _cache_notes(artifact: Artifact, machine: Host, cache: Path) -> list[str]:
    """Bring a usable shipped cache over; else say what the first run costs (once: later runs
    find the cache the first one left)."""
    if cache.is_dir():
        return []
    if shipped := shipped_cache(artifact, machine):
        _copy_shipped_cache(shipped, cache)
        return []
    note = first_run_note(artifact, machine)
    return [note] if note else []


def release_note(artifact: Artifact, machine: Host) -> str | None:
    """One line when the installed Ryzen AI release is not one the artifact was made for."""
    assert artifact.record is not None
    made_for = vitisai.releases_of(artifact.record.report)
    release, ep = machine.ryzen_ai.release, machine.ep_options()
    if release is None or ep is None or any(release.startswith(made) for made in made_for):
        return None
    return (
        f"made for Ryzen AI {', '.join(made_for)}; this is {release} ({machine.ryzen_ai.how}): "
        f"its provider options follow {ep.name}'s documentation"
    )


def _prepare(artifact: Artifact, device: Device, machine: Host) -> NpuSetup:
    """Provider options for the installed release and the detected chip, with the compiler
    configs (in that release's form) and the cache in the working directory."""
    assert artifact.record is not None and artifact.compiled is not None
    ep = machine.ep_options()
    chip = machine.npu.chip
    assert ep is not None and chip is not None  # npu_obstacle checked both
    variant = artifact.bundle.record.variant
    workdir = _workdir(artifact, machine)
    workdir.mkdir(parents=True, exist_ok=True)
    notes = _cache_notes(artifact, machine, workdir / CACHE_SUBDIR)
    cached = (workdir / CACHE_SUBDIR).is_dir()
    stored = artifact.record.options.graphs()
    options = {}
    for name in GRAPHS:
        key = stored[name].get(vitisai.CACHE_KEY, f"whisper-{variant}-{name}")
        found = vitisai.provider_options(variant, chip, name, key, ep)
        if vitisai.CONFIG_FILE in found:
            write_json(
                workdir / vaip_config_file(name), vitisai.vaip_config(variant, chip, name, ep)
            )
        options[name] = vitisai.resolve_options(found, workdir)
    if mismatch := release_note(artifact, machine):
        notes.append(mismatch)
    execution = Execution(
        device=device,
        provider=VITISAI_PROVIDER,
        compiled=True,
        notes=notes,
        ryzen_ai=machine.ryzen_ai.release,
        chip=chip,
    )
    return NpuSetup(options, artifact.context_models(), workdir, execution, cached)


def checked(setup: NpuSetup, artifact: Artifact, active_provider: str) -> Execution:
    """The execution the sessions really have: the EP took them, and its partition reports put
    nothing on the CPU that the forecast placed on the NPU (`npu` refuses that; `auto` says
    it)."""
    execution = setup.execution
    if active_provider != VITISAI_PROVIDER:
        why = f"ONNX Runtime created the sessions on {active_provider}, not {VITISAI_PROVIDER}"
        if execution.device is Device.NPU:
            raise UserError(f"--device npu: {why}")
        return execution.but(provider=active_provider, fallback=why)
    assert artifact.record is not None and artifact.record.report.forecast is not None
    reports = {
        name: EpReport.model_validate(vitisai.parse_ep_report(read_json_object(path)))
        for name, path in setup.report_files().items()
        if path.is_file()
    }
    moved = moved_to_cpu(artifact.record.report.forecast, reports)
    if moved and execution.device is Device.NPU:
        raise UserError(f"--device npu: {moved[0]}")
    return execution.but(notes=[*execution.notes, *moved]) if moved else execution
