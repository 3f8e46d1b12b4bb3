"""whisper_npu.host: the NPU found the way AMD's own code looks for it (pnputil's PCI ids on
Windows, sysfs and the amdxdna driver on Linux), the Ryzen AI release read from the
distributions AMD's onnx-benchmark reads, and the distribution that provides onnxruntime. The
machines are faked: sysfs trees and pnputil listings written here."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from whisper_npu import host

# pnputil /enum-devices /bus PCI /deviceids, as Windows prints it (trimmed).
PNPUTIL = r"""
Instance ID:                PCI\VEN_1022&DEV_{dev}&SUBSYS_00000000&REV_{rev}\4&1b2c4c4&0&0141
Device Description:         NPU Compute Accelerator Device
Hardware IDs:               PCI\VEN_1022&DEV_{dev}&SUBSYS_00000000&REV_{rev}
                            PCI\VEN_1022&DEV_{dev}&REV_{rev}
                            PCI\VEN_1022&DEV_{dev}
"""


@pytest.mark.runtime
@pytest.mark.parametrize(
    ("dev", "rev", "chip"),
    [("17F0", "10", "stx"), ("17F0", "11", "stx"), ("17F0", "20", "krk"), ("1502", "00", "phx")],
)
def test_windows_reads_amds_pci_table(dev, rev, chip):
    found = host.detect_npu("Windows", run=lambda _: PNPUTIL.format(dev=dev, rev=rev))
    assert (found.chip, found.ready) == (chip, True)
    assert found.pci == f"1022:{dev.lower()} rev {rev}"


@pytest.mark.runtime
def test_windows_without_an_npu_or_pnputil():
    assert (
        host.detect_npu("Windows", run=lambda _: "Instance ID: PCI\\VEN_8086&DEV_1234").chip is None
    )

    def missing(_: list[str]) -> str:
        raise FileNotFoundError("pnputil")

    found = host.detect_npu("Windows", run=missing)
    assert found.chip is None and found.how == "pnputil failed: pnputil"


def sysfs(tmp_path: Path, device: str, revision: str, driver: str | None, accel: bool) -> Path:
    """/sys with one PCI device as the amdxdna driver lays it out."""
    root = tmp_path / "sys"
    pci = root / "bus" / "pci" / "devices" / "0000:c5:00.1"
    pci.mkdir(parents=True)
    for name, value in (("vendor", "0x1022"), ("device", device), ("revision", revision)):
        (pci / name).write_text(value + "\n")
    if driver:
        target = root / "bus" / "pci" / "drivers" / driver
        target.mkdir(parents=True)
        os.symlink(target, pci / "driver")
    if accel:
        (pci / "accel" / "accel0").mkdir(parents=True)
    return root


@pytest.mark.runtime
def test_linux_finds_the_chip_and_whether_amdxdna_drives_it(tmp_path):
    ready = host.detect_npu("Linux", sysfs(tmp_path / "a", "0x17f0", "0x10", "amdxdna", True))
    assert (ready.chip, ready.ready) == ("stx", True) and "/dev/accel/accel0" in ready.how
    unbound = host.detect_npu("Linux", sysfs(tmp_path / "b", "0x1502", "0x00", None, False))
    assert (unbound.chip, unbound.ready) == ("phx", False)
    assert unbound.how == "0000:c5:00.1: driver none bound, not amdxdna"
    no_node = host.detect_npu("Linux", sysfs(tmp_path / "c", "0x17f0", "0x20", "amdxdna", False))
    assert (no_node.chip, no_node.ready) == ("krk", False)
    other = host.detect_npu("Linux", sysfs(tmp_path / "d", "0x1234", "0x00", "x", True))
    assert other.chip is None and other.describe().startswith("none found (no AMD NPU among")
    assert host.detect_npu("Darwin").chip is None


@pytest.mark.runtime
@pytest.mark.parametrize(
    ("voe", "vitisai", "path", "release"),
    [
        ("1.7.1", "1.23.3", None, "1.7.1"),
        ("1.5.0.dev20250101", "1.22.0", None, "1.5"),  # PyPI's placeholder voe is ignored
        (None, "1.19.0", None, "1.3"),
        (None, "1.23.2", None, "1.6"),
        (None, "1.27.0", None, "1.8"),
        (None, None, r"C:\Program Files\RyzenAI\1.7.1", "1.7.1"),
        (None, None, "/opt/ryzen_ai/venv", None),
        (None, None, None, None),
    ],
)
def test_the_release_comes_from_voe_then_onnxruntime_vitisai_then_the_folder(
    voe, vitisai, path, release
):
    versions = {"voe": voe, "onnxruntime-vitisai": vitisai}
    environ = {host.INSTALL_PATH_ENV: path} if path else {}
    found = host.ryzen_ai(versions.get, environ)
    assert found.release == release and found.install_path == path


# Not runtime-marked: AMD's environment's onnxruntime is onnxruntime-vitisai's (test_amd_env).
def test_this_machines_onnxruntime_is_pypis_and_cpu_only():
    found = host.onnxruntime()
    assert found.distributions == ("onnxruntime",)
    assert "VitisAIExecutionProvider" not in found.providers
    assert found.describe().startswith("onnxruntime 1.")
