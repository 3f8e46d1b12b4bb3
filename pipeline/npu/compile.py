"""The `compile` stage: a bundle → what the VitisAI EP needs to put it on the NPU.

Writes, atomically, one directory per bundle:
    provider_options.json  VitisAIExecutionProvider options per graph (paths relative to here)
    vaip_config_<graph>.json  each graph's compiler config (see whisper_npu.vitisai)
    compile_report.json    variant, target, the bundle it belongs to, the partition forecast,
                           and the EP's own partition report when the EP compiled it
    cache/, *_ctx.onnx     the EP's cache and EPContext models, only where the EP exists

Where onnxruntime has no VitisAI EP (any machine without Ryzen AI Software) the stage says so
and writes the forecast alone: nothing here pretends to have compiled. A CPU-only variant
(`cpu-int8`) gets a record saying so and nothing else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError

from pipeline.config import CompileParams
from pipeline.npu.forecast import describe_split, forecast_bundle, summary_lines
from pipeline.npu.graph_check import ops_table
from whisper_npu import host, vitisai
from whisper_npu.bundle import Bundle
from whisper_npu.compiled import (
    SEED_DISPATCHES,
    AmdFormForecast,
    CompileRecord,
    CompileReport,
    EpIdentity,
    EpReport,
    Forecast,
    OpsTableSource,
    ProviderOptions,
    disagreements,
)
from whisper_npu.errors import GateFailure, UserError, say
from whisper_npu.fsutil import atomic_dir, read_json_object, write_json
from whisper_npu.layout import AMD_FORM_FILE, graph_file, vaip_config_file
from whisper_npu.providers import CPU_PROVIDER, VITISAI_PROVIDER
from whisper_npu.transcriber import session_options
from whisper_npu.variants import CPU_ONLY_NOTE, VARIANTS, Target, Variant
from whisper_npu.whisper_io import GRAPHS


def _options(variant: Variant, target: str) -> dict[str, dict[str, str]]:
    return {
        name: vitisai.provider_options(variant, target, name, f"whisper-{variant}-{name}")
        for name in GRAPHS
    }


def _compile_with_ep(
    bundle: Bundle, options: dict[str, dict[str, str]], scratch: Path
) -> dict[str, EpReport | None]:
    """Create the sessions (the EP compiles), dumping EPContext models and reading the EP's
    partition report for each graph."""
    reports: dict[str, EpReport | None] = {}
    for name in GRAPHS:
        resolved = vitisai.resolve_options(options[name], scratch)
        report = vitisai.compile_graph(
            bundle.root / graph_file(name),
            resolved,
            scratch / f"{name}_ctx.onnx",
            session_options(None, bundle.record.custom_ops),
        )
        reports[name] = (
            EpReport.model_validate(vitisai.parse_ep_report(read_json_object(report)))
            if report.is_file()
            else None
        )
    return reports


def _bundle_path(bundle: Bundle, out_dir: Path) -> str:
    return Path(os.path.relpath(bundle.root.resolve(), out_dir.resolve())).as_posix()


@dataclass(frozen=True)
class NpuCompile:
    """What compiling for the NPU found: the forecast and, with the EP, its own reports."""

    target: Target
    forecast: Forecast
    report: dict[str, EpReport | None] | None
    amd_demo_form: AmdFormForecast | None


def _compile_report(
    bundle: Bundle, out_dir: Path, providers: list[str], found: NpuCompile | str
) -> CompileReport:
    """compile_report.json: what every variant's holds (its bundle, the providers this
    onnxruntime has, the ops table), and what compiling it found, or (a str) why a CPU-only
    variant was not compiled."""
    npu = found if isinstance(found, NpuCompile) else None
    return CompileReport(
        variant=bundle.record.variant,
        target=npu.target if npu else None,
        ryzen_ai_version=vitisai.RYZEN_AI_VERSION,
        ops_table=OpsTableSource.model_validate(
            {key: ops_table()[key] for key in ("ryzen_ai_version", "source")}
        ),
        ep_available=VITISAI_PROVIDER in providers,
        providers=providers,
        bundle=_bundle_path(bundle, out_dir),
        bundle_sha256=bundle.sha256(),
        budget_met=bundle.record.budget_met,
        cpu_only=found if isinstance(found, str) else None,
        forecast=npu.forecast if npu else None,
        report=npu.report if npu else None,
        disagreements=disagreements(npu.forecast, npu.report) if npu else [],
        seed_dispatches=SEED_DISPATCHES,
        amd_demo_form=npu.amd_demo_form if npu else None,
        # Which EP made npu/cache, so the runtime uses the cache only with that EP.
        **({"ep": _ep_identity()} if npu and npu.report is not None else {}),
    )


def _ep_identity() -> EpIdentity:
    release = host.ryzen_ai()
    return EpIdentity(
        ryzen_ai=release.release, how=release.how, onnxruntime=host.onnxruntime().describe()
    )


def record_cpu_only(bundle: Bundle, out_dir: Path) -> CompileReport:
    """A CPU-only variant's compiled directory: a record that points at its bundle and says it
    is not for the NPU, with no provider options, compiler config or forecast. Bench and release
    read it as they read any variant's; the runtime runs it on the CPU by design, not as a
    fallback."""
    variant = bundle.record.variant
    why = (
        f"{CPU_ONLY_NOTE}: {variant} is quantized for ONNX Runtime's {CPU_PROVIDER} "
        "(integer kernels the VitisAI EP does not take); nothing was compiled or forecast"
    )
    say("compile", why, kind=None)
    with atomic_dir(out_dir) as scratch:
        record = _compile_report(bundle, out_dir, vitisai.available_providers(), why)
        CompileRecord(record, ProviderOptions(encoder={}, decoder={})).save(scratch)
    return record


def compile_bundle(
    params: CompileParams,
    bundle_dir: Path,
    out_dir: Path,
    amd_form: Path | None = None,
    allow_split: bool = False,
) -> CompileReport:
    """Forecast, gate (unless `allow_split`) and write the compiled directory; `amd_form` is the
    amd_form stage's output, whose forecast the report puts beside the bundle's."""
    bundle = Bundle.load(Path(bundle_dir))
    variant, target = bundle.record.variant, params.target
    if VARIANTS[variant].cpu_only:
        return record_cpu_only(bundle, Path(out_dir))
    try:
        forecast = forecast_bundle(
            bundle.root, variant, target, params.tokens_per_window, bundle.record.custom_ops
        )
    except DecodeError as exc:  # a graph file that is not ONNX
        raise UserError(f"{bundle.root}: a graph is not a readable ONNX model ({exc})") from None
    providers = vitisai.available_providers()
    ep = VITISAI_PROVIDER in providers
    if not ep:
        say(
            "compile",
            f"{VITISAI_PROVIDER} not available in this onnxruntime "
            f"(providers: {', '.join(providers)}); wrote the forecast only",
            kind=None,
        )
    print("\n".join(summary_lines(variant, forecast)), flush=True)
    # A quantized bundle that missed its held-back WER budget is compiled all the same.
    if not bundle.record.budget_met:
        say(
            "compile",
            f"{variant} missed its held-back WER budget when it was quantized "
            "(budget_met: false in its bundle.json)",
            kind="note",
        )
    if not forecast.clean and not allow_split:
        raise GateFailure(
            f"{bundle_dir} would split on the NPU ({forecast.flow}, {target}): "
            + describe_split(forecast)
        )
    options = _options(variant, target)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as scratch:
        for name in GRAPHS:
            write_json(scratch / vaip_config_file(name), vitisai.vaip_config(variant, target, name))
        report = _compile_with_ep(bundle, options, scratch) if ep and forecast.npu_dtype else None
        amd_demo_form = AmdFormForecast.read(Path(amd_form) / AMD_FORM_FILE) if amd_form else None
        found = NpuCompile(target, forecast, report, amd_demo_form)
        record = _compile_report(bundle, out_dir, providers, found)
        CompileRecord(record, ProviderOptions.model_validate(options)).save(scratch)
    return record
