"""What this machine offers the runtime, each fact with how it was found: which distribution
provides the `onnxruntime` module and its providers, which Ryzen AI release is installed, and
whether an NPU is present and which chip it is.

Nothing is assumed where a probe finds nothing: "no NPU" is a finding, not an error. Sources:
- chips: AMD's "APU Types" table and `get_npu_info` (amd/ryzen-ai-documentation
  docs/app_development.rst @42a517b; RyzenAI-SW onnx-benchmark/utilities.py @28859cd):
  PCI 1022:1502 rev 00 is PHX/HPT, 1022:17f0 rev 00/10/11 STX, rev 20 KRK; on Linux the
  amdxdna driver binds them and exposes /dev/accel/accelN (amd/xdna-driver
  drivers/accel/amdxdna/amdxdna_pci_drv.c @856409c);
- the Ryzen AI release: AMD's onnx-benchmark `check_env` reads the versions of the `voe` and
  `onnxruntime-vitisai` distributions (RyzenAI-SW onnx-benchmark/utilities.py on the 1.3.1,
  1.4.0, 1.5.0 and 1.6.0 branches: onnxruntime-vitisai 1.19 for 1.3, 1.19-1.20 for 1.4,
  1.21-1.22 for 1.5, up to 1.23 for 1.6); the installer sets RYZEN_AI_INSTALLATION_PATH, by
  default C:\\Program Files\\RyzenAI\\<release>.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path
from types import ModuleType

from whisper_npu.errors import UserError
from whisper_npu.variants import XDNA1, XDNA2, NpuFamily

CPU_EXTRA = "pip install 'whisper-npu[cpu]'"
INSTALL_PATH_ENV = "RYZEN_AI_INSTALLATION_PATH"
AMD_VENDOR = "1022"
# (PCI device, revision) → compile target; PHX and HPT share one id, and so "phx".
PCI_CHIPS = {
    ("1502", "00"): "phx",
    ("17f0", "00"): "stx",
    ("17f0", "10"): "stx",
    ("17f0", "11"): "stx",
    ("17f0", "20"): "krk",
}
CHIP_NAMES = {"phx": "PHX/HPT", "stx": "STX", "krk": "KRK"}
# onnxruntime-vitisai's minor version → the Ryzen AI release that shipped it (AMD's
# onnx-benchmark ranges above; 1.6.1-1.7.1 shipped 1.23.x, 1.8 1.27: newer minors count as 1.8).
VITISAI_ORT_RELEASES = {19: "1.3", 20: "1.4", 21: "1.5", 22: "1.5", 23: "1.6"}
NEWEST_KNOWN_RELEASE = "1.8"
PNPUTIL = ["pnputil", "/enum-devices", "/bus", "PCI", "/deviceids"]
SYSFS = Path("/sys")


@dataclass(frozen=True)
class OnnxRuntime:
    """The `onnxruntime` module as installed: the distributions that provide it (two is AMD's
    documented breakage: a PyPI onnxruntime written over onnxruntime-vitisai), its version
    and the execution providers it offers."""

    distributions: tuple[str, ...]
    version: str
    providers: tuple[str, ...]

    @property
    def distribution(self) -> str:
        return ", ".join(self.distributions) or "an unregistered install"

    def describe(self) -> str:
        return f"onnxruntime {self.version} from {self.distribution}"


# CPU features that change which ONNX Runtime kernels run: a variant's time against fp32, and
# the samples of the built-in speech (piper's VITS runs in ONNX Runtime).
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def cpu_model() -> str:
    """The CPU's name and its kernel-relevant features: two runs compare only if these match."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return platform.processor() or platform.machine()
    name, flags = platform.machine(), set()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return " ".join([name, *(flag for flag in KERNEL_FLAGS if flag in flags)])


def _distribution_version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def import_onnxruntime() -> ModuleType:
    """The `onnxruntime` module, whichever distribution provides it (the runtime requires
    none, so as not to replace AMD's); a UserError naming what to install where none does."""
    try:
        ort: ModuleType = importlib.import_module("onnxruntime")
    except ImportError as exc:
        raise UserError(
            f"no onnxruntime module ({exc}): in a Ryzen AI environment reinstall AMD's "
            f"onnxruntime-vitisai; elsewhere {CPU_EXTRA}"
        ) from None
    return ort


def onnxruntime() -> OnnxRuntime:
    """The installed onnxruntime: its providers and the distributions that provide it."""
    ort = import_onnxruntime()
    providers = tuple(ort.get_available_providers())
    found = tuple(sorted(packages_distributions().get("onnxruntime", [])))
    return OnnxRuntime(found, str(ort.__version__), providers)


@dataclass(frozen=True)
class RyzenAi:
    """The Ryzen AI Software release installed, as far as the environment tells."""

    release: str | None  # "1.7.1", "1.5"; None: no sign of Ryzen AI Software
    how: str  # what it was read from
    install_path: str | None  # RYZEN_AI_INSTALLATION_PATH

    @property
    def version(self) -> tuple[int, ...] | None:
        return _version_tuple(self.release) if self.release else None


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def ryzen_ai(
    distribution_version: Callable[[str], str | None] = _distribution_version,
    environ: dict[str, str] | None = None,
) -> RyzenAi:
    """`voe`'s version where AMD's voe is installed (PyPI's placeholder is a .dev release),
    else onnxruntime-vitisai's mapped to the release that shipped it, else the installation
    folder's name."""
    env = os.environ if environ is None else environ
    install = env.get(INSTALL_PATH_ENV)
    voe = distribution_version("voe")
    if voe and "dev" not in voe:
        return RyzenAi(".".join(voe.split(".")[:3]), f"voe {voe}", install)
    vitisai = distribution_version("onnxruntime-vitisai")
    if vitisai:
        minor = _version_tuple(vitisai)[1:2]
        release = VITISAI_ORT_RELEASES.get(minor[0]) if minor else None
        if minor and release is None and minor[0] > max(VITISAI_ORT_RELEASES):
            release = NEWEST_KNOWN_RELEASE
        if release:
            how = f"onnxruntime-vitisai {vitisai}, which Ryzen AI {release} shipped"
            return RyzenAi(release, how, install)
    folder = re.split(r"[\\/]", install.rstrip("\\/"))[-1] if install else ""
    if re.fullmatch(r"\d+\.\d+(\.\d+)?", folder):
        return RyzenAi(folder, f"{INSTALL_PATH_ENV} ends in {folder}", install)
    how = "no voe or onnxruntime-vitisai distribution" + (
        f"; {INSTALL_PATH_ENV}={install}" if install else f", no {INSTALL_PATH_ENV}"
    )
    return RyzenAi(None, how, install)


@dataclass(frozen=True)
class Npu:
    """What the NPU probe found. `chip` is the compile target that names it (None: no AMD NPU
    found); `ready` says whether the OS can use it (Linux: the amdxdna driver bound and an accel
    device node; Windows: the device is listed, which needs its driver)."""

    chip: str | None
    pci: str | None  # "1022:17f0 rev 10"
    ready: bool
    how: str

    @property
    def family(self) -> NpuFamily | None:
        if self.chip is None:
            return None
        return XDNA1 if self.chip in XDNA1.targets else XDNA2

    def describe(self) -> str:
        if self.chip is None:
            return f"none found ({self.how})"
        name = f"{CHIP_NAMES[self.chip]} ({self.family.name if self.family else ''})"
        return f"{name}, PCI {self.pci}; {self.how}"


def _chip(device: str, revision: str) -> str | None:
    return PCI_CHIPS.get((device.lower(), revision.lower()))


def _windows_npu(run: Callable[[list[str]], str]) -> Npu:
    try:
        listing = run(PNPUTIL)
    except (OSError, subprocess.SubprocessError) as exc:
        return Npu(None, None, False, f"pnputil failed: {exc}")
    for device, revision in re.findall(
        rf"PCI\\VEN_{AMD_VENDOR}&DEV_([0-9A-Fa-f]{{4}})&REV_([0-9A-Fa-f]{{2}})", listing
    ):
        if chip := _chip(device, revision):
            pci = f"{AMD_VENDOR}:{device.lower()} rev {revision.lower()}"
            return Npu(chip, pci, True, "listed by pnputil /enum-devices /bus PCI")
    return Npu(None, None, False, "pnputil lists no AMD NPU (PCI 1022:1502 or 1022:17f0)")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip().lower().removeprefix("0x")
    except (OSError, UnicodeDecodeError):
        return ""


def _linux_npu(sysfs: Path) -> Npu:
    devices = sysfs / "bus" / "pci" / "devices"
    for device in sorted(devices.iterdir()) if devices.is_dir() else []:
        if _read(device / "vendor") != AMD_VENDOR:
            continue
        dev_id, revision = _read(device / "device"), _read(device / "revision")
        chip = _chip(dev_id, revision)
        if chip is None:
            continue
        driver_link = device / "driver"
        driver = Path(os.readlink(driver_link)).name if driver_link.is_symlink() else None
        accel = sorted(p.name for p in (device / "accel").glob("accel*"))
        pci = f"{AMD_VENDOR}:{dev_id} rev {revision}"
        if driver != "amdxdna":
            how = f"{device.name}: driver {driver or 'none'} bound, not amdxdna"
            return Npu(chip, pci, False, how)
        if not accel:
            return Npu(chip, pci, False, f"{device.name}: amdxdna bound, no /dev/accel node")
        return Npu(chip, pci, True, f"{device.name}: amdxdna, /dev/accel/{accel[0]}")
    return Npu(None, None, False, f"no AMD NPU among {devices}")


def _pnputil(command: list[str]) -> str:
    done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    return done.stdout


def detect_npu(
    system: str | None = None,
    sysfs: Path = SYSFS,
    run: Callable[[list[str]], str] = _pnputil,
) -> Npu:
    """The NPU the way AMD's own code looks for it: pnputil's PCI ids on Windows, sysfs (and
    the amdxdna driver) on Linux."""
    system = system or platform.system()
    if system == "Windows":
        return _windows_npu(run)
    if system == "Linux":
        return _linux_npu(sysfs)
    return Npu(None, None, False, f"Ryzen AI NPUs are driven on Windows and Linux, not {system}")
