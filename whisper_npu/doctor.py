"""`whisper-npu doctor [--artifact PATH] [--json]`: the first command a laptop user runs. Can
this environment run a release on the NPU, and if not, why: Python, numpy, the distribution
that provides onnxruntime and its providers, the Ryzen AI release, the NPU and its chip, and
for each release variant under PATH whether it would run on the NPU or the CPU here.

It only looks: no session is created, nothing is compiled or written. Exit 0 when the release
(without --artifact: the NPU path) would run on the NPU, 1 when it would run on the CPU, 2 on
bad input.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from whisper_npu import vitisai
from whisper_npu.bundle import Artifact
from whisper_npu.errors import UserError
from whisper_npu.execution import Host, first_run_note, npu_obstacle, release_note
from whisper_npu.host import CHIP_NAMES
from whisper_npu.layout import BUNDLE_FILE, CARD_FILE, COMPILE_FILE
from whisper_npu.providers import VITISAI_PROVIDER
from whisper_npu.record import Record
from whisper_npu.variants import Variant

# Which variant a machine should run, best first: the NPU variants by AMD's documented route
# (BF16, then fp32 through VAIML), then the experimental integer ones; cpu-int8 is the CPU pick.
NPU_PREFERENCE = (Variant.BF16, Variant.FP32, Variant.A16W8, Variant.XINT8, Variant.A8W8)
CPU_PREFERENCE = (Variant.CPU_INT8, Variant.FP32, Variant.BF16)
REINSTALL = (
    "a PyPI onnxruntime installed over onnxruntime-vitisai removes the VitisAI provider "
    "(amd/ryzen-ai-documentation #59): pip uninstall onnxruntime, then reinstall "
    "onnxruntime-vitisai from the Ryzen AI install"
)


class VariantVerdict(Record):
    path: str
    variant: Variant
    runs_on: str  # "NPU" or "CPU"
    why: str | None  # why not the NPU (None: it runs there, or is CPU only by design)
    notes: list[str]  # the first run's compile, a release the artifact was not made for


class Diagnosis(Record):
    """What `doctor --json` prints."""

    python: str
    numpy: str | None
    onnxruntime: str  # its version
    onnxruntime_from: list[str]  # the distributions that provide it
    providers: list[str]
    ryzen_ai: str | None
    ryzen_ai_how: str
    install_path: str | None
    npu: str | None  # the chip's compile target (phx covers Hawk Point)
    npu_found: str
    npu_ready: bool
    problems: list[str]  # what to fix in the environment
    variants: list[VariantVerdict]
    use: str | None  # the variant (path) the machine should run
    verdict: str  # "NPU" or "CPU: why"

    @property
    def on_npu(self) -> bool:
        return self.verdict == "NPU"


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _artifacts(path: Path) -> list[Path]:
    """A release, compiled or bundle directory, or a directory of releases (one per variant)."""
    if not path.is_dir():
        raise UserError(f"{path}: no such directory")

    def is_artifact(directory: Path) -> bool:
        return any(
            (directory / marker).exists() for marker in (CARD_FILE, BUNDLE_FILE, COMPILE_FILE)
        )

    if is_artifact(path):
        return [path]
    found = [child for child in sorted(path.iterdir()) if is_artifact(child)]
    if not found:
        raise UserError(f"{path}: not a release, compiled or bundle directory, nor one of them")
    return found


def _verdict(path: Path, machine: Host) -> VariantVerdict:
    artifact = Artifact.open(path)
    variant = artifact.bundle.record.variant
    why = npu_obstacle(artifact, machine)
    if why is None:
        notes = [note for note in (first_run_note(artifact, machine),) if note]
        notes += [note for note in (release_note(artifact, machine),) if note]
        return VariantVerdict(path=str(path), variant=variant, runs_on="NPU", why=None, notes=notes)
    by_design = artifact.cpu_only
    return VariantVerdict(
        path=str(path), variant=variant, runs_on="CPU", why=None if by_design else why, notes=[]
    )


def _pick(verdicts: list[VariantVerdict]) -> VariantVerdict | None:
    on_npu = {v.variant: v for v in verdicts if v.runs_on == "NPU"}
    on_cpu = {v.variant: v for v in verdicts}
    for variant in NPU_PREFERENCE:
        if variant in on_npu:
            return on_npu[variant]
    return next((on_cpu[v] for v in CPU_PREFERENCE if v in on_cpu), None)


def _problems(machine: Host, numpy: str | None) -> list[str]:
    ort = machine.onnxruntime
    found = []
    if len(ort.distributions) > 1:
        found.append(f"{', '.join(ort.distributions)} all provide onnxruntime: {REINSTALL}")
    vitisai_installed = "onnxruntime-vitisai" in ort.distributions
    if vitisai_installed and VITISAI_PROVIDER not in ort.providers:
        found.append(f"onnxruntime-vitisai is installed but offers no {VITISAI_PROVIDER}")
    if vitisai_installed and numpy and int(numpy.split(".")[0]) >= 2:
        found.append(f"numpy {numpy}: AMD's Ryzen AI environments pin numpy 1.26.4")
    release = machine.ryzen_ai
    if release.release and machine.ep_options() is None:
        found.append(f"Ryzen AI {release.release} predates 1.5, the oldest release supported")
    npu = machine.npu
    if npu.chip and not npu.ready:
        found.append(f"the NPU is there but not usable: {npu.how}")
    return found


def _machine_verdict(machine: Host) -> str:
    """Without an artifact: whether an NPU artifact could run here at all."""
    ort, npu = machine.onnxruntime, machine.npu
    if VITISAI_PROVIDER not in ort.providers:
        return f"CPU: {VITISAI_PROVIDER} not available ({ort.describe()})"
    if machine.ep_options() is None:
        return f"CPU: Ryzen AI {machine.ryzen_ai.release} predates 1.5"
    if npu.chip is None or not npu.ready:
        return f"CPU: no usable NPU ({npu.describe()})"
    return "NPU"


def diagnose(artifact: Path | None = None, machine: Host | None = None) -> Diagnosis:
    machine = machine or Host()
    ort = machine.onnxruntime  # none at all: one line naming what to install
    numpy = _version("numpy")
    verdicts = [_verdict(path, machine) for path in _artifacts(artifact)] if artifact else []
    pick = _pick(verdicts)
    if artifact is None:
        verdict = _machine_verdict(machine)
    elif pick is not None and pick.runs_on == "NPU":
        verdict = "NPU"
    else:
        reasons = sorted({v.why for v in verdicts if v.why})
        verdict = "CPU: " + ("; ".join(reasons) or "CPU-only variants")
    return Diagnosis(
        python=f"{sys.version.split()[0]} ({sys.executable})",
        numpy=numpy,
        onnxruntime=ort.version,
        onnxruntime_from=list(ort.distributions),
        providers=list(ort.providers),
        ryzen_ai=machine.ryzen_ai.release,
        ryzen_ai_how=machine.ryzen_ai.how,
        install_path=machine.ryzen_ai.install_path,
        npu=machine.npu.chip,
        npu_found=machine.npu.describe(),
        npu_ready=machine.npu.ready,
        problems=_problems(machine, numpy),
        variants=verdicts,
        use=pick.path if pick else None,
        verdict=verdict,
    )


def render(diagnosis: Diagnosis) -> str:
    """The plain report: one fact a line, then each variant, then what to use."""
    d = diagnosis
    options = d.ryzen_ai and vitisai.ep_options(tuple(int(p) for p in d.ryzen_ai.split(".")))
    release = (
        f"{d.ryzen_ai} ({d.ryzen_ai_how}; provider options of {options.name})"
        if d.ryzen_ai and options
        else f"{d.ryzen_ai or 'not found'} ({d.ryzen_ai_how})"
    )
    chip = CHIP_NAMES.get(d.npu or "", "none")
    provided_by = ", ".join(d.onnxruntime_from) or "an unlisted install"
    lines = [
        f"python       {d.python}",
        f"numpy        {d.numpy or 'not installed'}",
        f"onnxruntime  {d.onnxruntime} from {provided_by}",
        f"providers    {', '.join(d.providers)}",
        f"ryzen ai     {release}",
        f"install      {d.install_path or 'RYZEN_AI_INSTALLATION_PATH not set'}",
        f"npu          {chip}: {d.npu_found}",
        *(f"problem      {problem}" for problem in d.problems),
    ]
    for v in d.variants:
        why = f" ({v.why})" if v.why else ""
        lines.append(f"variant      {v.variant} {v.path}: {v.runs_on}{why}")
        lines += [f"  note       {note}" for note in v.notes]
    if d.use:
        lines.append(f"use          {d.use}")
    lines.append(f"verdict      {d.verdict}")
    return "\n".join(lines)
