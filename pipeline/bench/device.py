"""Device reports sent back from Ryzen AI laptops (`whisper-npu device-report`, committed under
`device_reports/`) as the bench shows them: a benched variant's bundle measured on another
machine's NPU. Only a report of a bundle this run benches is shown (a report of an older
export would quote figures of other weights), and always apart from the run's own rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline.bench.metrics import DeviceRow
from pipeline.bench.records import EngineSpec
from pipeline.bench.stats import round_sig
from whisper_npu.errors import UserError
from whisper_npu.figures import DeviceFigures


@dataclass(frozen=True)
class DeviceReports:
    rows: dict[str, DeviceRow]  # per `<variant>@<chip>`
    skipped: dict[str, str]  # per report file's name, why it is not shown

    def note(self) -> str:
        """One line naming every report not shown, and why; empty when none was left out."""
        if not self.skipped:
            return ""
        return "device reports not shown: " + "; ".join(
            f"{name} ({why})" for name, why in self.skipped.items()
        )


def benched_bundles(specs: Sequence[EngineSpec]) -> dict[str, str]:
    """The variant each bundle.json this run benches belongs to, by its sha256: the name a
    device report gives the bundle it measured. The peers run other weights' formats."""
    from whisper_npu.bundle import Artifact

    found = {}
    for spec in specs:
        if spec.kind == "ours":
            bundle = Artifact.open(spec.path).bundle
            found[bundle.sha256()] = str(bundle.record.variant)
    return found


def _rounded(figures: DeviceFigures) -> DeviceFigures:
    """To bench.json's 4 significant digits, so a diff of it stays readable."""
    return DeviceFigures.model_validate(
        {
            name: round_sig(value) if isinstance(value, float) else value
            for name, value in figures.to_json().items()
        }
    )


def _row(path: Path) -> tuple[str, str, DeviceRow]:
    """The report in `path` (a malformed one is a UserError naming it): its bundle's sha256,
    its chip and its row."""
    from whisper_npu.device_report import DeviceReport

    report = DeviceReport.read(path)
    chip = report.machine.chip or "unknown chip"
    row = DeviceRow(
        report=path.name,
        artifact=report.artifact,
        bundle_sha256=report.bundle_sha256,
        chip=report.machine.chip,
        ryzen_ai=report.machine.ryzen_ai,
        created=report.created,
        clips=report.clips,
        audio_s=round_sig(report.audio_s),
        session_s=round_sig(report.session_s),
        compiled=report.compiled,
        npu=_rounded(report.npu),
        cpu=_rounded(report.cpu),
        speedup_vs_cpu=round_sig(report.speedup_vs_cpu),
    )
    return report.bundle_sha256, chip, row


def read_device_reports(directory: Path, bundles: dict[str, str]) -> DeviceReports:
    """Every `*.json` in `directory` whose bundle is one of `bundles` (benched_bundles), keyed
    `<variant>@<chip>`; of two reports of one variant on one chip, the later (`created`)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such directory of device reports")
    rows: dict[str, DeviceRow] = {}
    skipped: dict[str, str] = {}
    for path in sorted(directory.glob("*.json")):
        sha, chip, row = _row(path)
        if sha not in bundles:
            skipped[path.name] = f"it measured bundle {sha[:12]}…, which no variant of this run has"
            continue
        key = f"{bundles[sha]}@{chip}"
        kept = rows.get(key)
        if kept is not None and kept.created >= row.created:
            skipped[path.name] = f"{kept.report} is a later report of {key}"
            continue
        if kept is not None:
            skipped[kept.report] = f"{row.report} is a later report of {key}"
        rows[key] = row
    return DeviceReports(dict(sorted(rows.items())), skipped)
