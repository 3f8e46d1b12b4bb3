"""The VitisAI execution provider's documented surface, per Ryzen AI release, in one place, and
the code that uses it.

Provider options follow AMD's documentation of each release (amd/ryzen-ai-documentation
docs/modelrun.rst on the release branches: 1.5 @28a0f64, 1.6 @0b78129, 1.7 @25d4062, 1.7.1
@42a517b, 1.8 @0860e4d; amd/RyzenAI-SW docs/develop/model-deployment.mdx @c87208e):

- 1.5: integer models need the `xclbin` option (STX/KRK `strix/AMD_AIE2P_4x4_Overlay.xclbin`,
  PHX/HPT `phoenix/4x4.xclbin`; the 1x4/Nx4 binaries are retired); BF16 models take a compiler
  config (`config_file`) without a target section; `enable_cache_file_io_in_mem` 0 writes the
  compiled model and, with XLNX_ONNX_EP_REPORT_FILE, the partition report to the cache.
- 1.6 and later (1.6.1, 1.7, 1.7.1, 1.8): `target` X2 (default) or X1 for integer models; on
  STX/KRK "the xclbin provider option must not be set", on PHX/HPT `target` X1 and the Phoenix
  `xclbin`; the BF16 config "requires a new target section" (VAIML) and is optional; 1.7
  deprecates `log_level` (not used here); 1.7.1 writes BF16 caches to disk with the same option.
- before 1.5 the options had other names (cacheDir, XLNX_VART_FIRMWARE): not supported.
- BF16 (and so FP32, which VAIML narrows) runs on STX/KRK only, in every release; "the
  deployment version of the VitisAI EP does not support the on-the-fly compilation of BF16
  models": an application ships the EP cache folder made with the same config_file
  (app_development.rst, 1.4-1.8).
- AMD's Whisper compiler settings per graph: RyzenAI-SW
  Demos/ASR/Whisper/config/vitisai_config_whisper_{encoder,decoder}.json @0b65628.

AMD's operator table stays the 1.5.0 data in pipeline/npu/data: the 1.7.0 table (RyzenAI-SW
docs/reference/supported-operators.mdx @b5426cf) differs from it only in A8W8 no longer listing
ReduceMin, ReduceSum, Sigmoid and Sin, none of which a Whisper bundle holds.

Everything here but `compile_graph` is a pure function, testable without the EP.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whisper_npu.compiled import CompileReport
from whisper_npu.layout import CACHE_SUBDIR, VITISAI_REPORT_FILE, vaip_config_file
from whisper_npu.providers import VITISAI_PROVIDER
from whisper_npu.variants import VARIANTS, XDNA1, XDNA2, Variant

# The release whose documentation the compile stage follows, and so what a compiled
# directory's stored options are.
RYZEN_AI_VERSION = "1.7.1"

# Provider options (model-deployment.mdx, "VitisAI EP Provider Options").
CONFIG_FILE = "config_file"  # BF16 compile options (the vaip_config.json below)
TARGET = "target"  # integer backend: "X2" (default, STX/KRK) or "X1" (legacy, needed on PHX/HPT)
XCLBIN = "xclbin"  # the NPU binary for integer models: 1.5 every chip, 1.6+ PHX/HPT only
CACHE_DIR = "cache_dir"
CACHE_KEY = "cache_key"
CACHE_IN_MEMORY = "enable_cache_file_io_in_mem"  # "0": write the compiled model (and report)

# ONNX Runtime session config entries for the EP context cache ("Managing Compiled Models").
CONTEXT_ENABLE = "ep.context_enable"
CONTEXT_FILE_PATH = "ep.context_file_path"
CONTEXT_EMBED_MODE = "ep.context_embed_mode"

# "Operator Assignment Report": written into cache_dir/cache_key under the name this holds.
REPORT_ENV = "XLNX_ONNX_EP_REPORT_FILE"

XCLBINS = "${RYZEN_AI_INSTALLATION_PATH}/voe-4.0-win_amd64/xclbins"
PHX_XCLBIN = f"{XCLBINS}/phoenix/4x4.xclbin"
STX_XCLBIN = f"{XCLBINS}/strix/AMD_AIE2P_4x4_Overlay.xclbin"  # 1.5 only


@dataclass(frozen=True)
class EpOptions:
    """The provider options a span of Ryzen AI releases documents."""

    name: str
    since: tuple[int, int]  # the first release it covers
    # Integer models: the `target` option (X2/X1), and the xclbin per compile target.
    integer_target: bool
    integer_xclbin: Mapping[str, str]
    # The BF16 compiler config carries a target section (VAIML).
    vaiml_target_section: bool
    releases: tuple[str, ...]  # release prefixes it covers ("1.7" covers 1.7.1)
    source: str


EP_1_5 = EpOptions(
    "1.5",
    (1, 5),
    integer_target=False,
    integer_xclbin={
        **dict.fromkeys(XDNA1.targets, PHX_XCLBIN),
        **dict.fromkeys(XDNA2.targets, STX_XCLBIN),
    },
    vaiml_target_section=False,
    releases=("1.5",),
    source="amd/ryzen-ai-documentation docs/modelrun.rst @28a0f64 (1.5)",
)
EP_1_6 = EpOptions(
    "1.6+",
    (1, 6),
    integer_target=True,
    integer_xclbin=dict.fromkeys(XDNA1.targets, PHX_XCLBIN),
    vaiml_target_section=True,
    releases=("1.6", "1.7", "1.8"),
    source="amd/ryzen-ai-documentation docs/modelrun.rst @0b78129 (1.6) to @0860e4d (1.8)",
)
EP_OPTIONS = (EP_1_5, EP_1_6)
COMPILED_WITH = EP_1_6  # RYZEN_AI_VERSION's


def ep_options(release: tuple[int, ...]) -> EpOptions | None:
    """The option set a release documents; None before 1.5 (other option names)."""
    found = [options for options in EP_OPTIONS if tuple(release[:2]) >= options.since]
    return found[-1] if found else None


def releases_of(report: CompileReport) -> tuple[str, ...]:
    """The Ryzen AI releases a compiled directory is made for: the one whose EP made its cache,
    else those whose documented options it follows."""
    if report.ep is not None and report.ep.ryzen_ai:
        return (report.ep.ryzen_ai,)
    found = ep_options(tuple(int(part) for part in report.ryzen_ai_version.split(".")))
    return found.releases if found else (report.ryzen_ai_version,)


def npu_column(variant: Variant, target: str) -> str | None:
    """The column of AMD's operator table that places `variant` on `target`, or None when the
    chip has no NPU path for it (BF16, and so FP32, run on STX/KRK only)."""
    spec = VARIANTS[variant]
    return spec.npu_column if target in spec.runs_on else None


# AMD's Whisper compiler settings (RyzenAI-SW Demos/ASR/Whisper/config/vitisai_config_whisper_*.json
# @0b65628): both graphs optimize_level 3 and a larger AI Engine stack, the encoder LayerNorm in
# its accurate two-pass kernel. No `enable_f32_to_bf16_conversion`: since Ryzen AI 1.6 VAIML
# narrows an FP32 transformer to BF16 itself, and AMD's Whisper configs do not set it.
WHISPER_VAIML = {"optimize_level": 3, "aiecompiler_args": "--system-stack-size=512"}
WHISPER_VAIML_ENCODER = {"fe_experiment": "use-accurate-mode=LayerNorm2PassAdf"}


def vaip_config(
    variant: Variant, target: str, graph: str, ep: EpOptions = COMPILED_WITH
) -> dict[str, Any]:
    """The config_file contents for one graph of a variant.

    VAIML-flow variants get AMD's Whisper config for that graph (with the target section 1.6
    made required). Integer models take no config file: the backend is the `target` provider
    option, recorded here so the compiled directory says which one it was built for.
    """
    if not VARIANTS[variant].bf16_flow:
        backend = "X2" if target in XDNA2.targets else "X1"
        return {TARGET: backend, "passed_to_ep": False}
    options = {**WHISPER_VAIML, **(WHISPER_VAIML_ENCODER if graph == "encoder" else {})}
    config: dict[str, Any] = {
        "passes": [
            {"name": "init", "plugin": "vaip-pass_init"},
            {
                "name": "vaiml_partition",
                "plugin": "vaip-pass_vaiml_partition",
                "vaiml_config": options,
            },
        ],
    }
    if ep.vaiml_target_section:
        config["target"] = "VAIML"
        config["targets"] = [{"name": "VAIML", "pass": ["init", "vaiml_partition"]}]
    return config


def provider_options(
    variant: Variant, target: str, graph: str, cache_key: str, ep: EpOptions = COMPILED_WITH
) -> dict[str, str]:
    """Provider options as stored in provider_options.json: paths relative to the compiled
    directory and the installation variable unexpanded, so the directory can move
    (`resolve_options` makes them concrete). Empty when the chip has no NPU path."""
    if npu_column(variant, target) is None:
        return {}
    options = {CACHE_DIR: CACHE_SUBDIR, CACHE_KEY: cache_key, CACHE_IN_MEMORY: "0"}
    if VARIANTS[variant].bf16_flow:
        options[CONFIG_FILE] = vaip_config_file(graph)
        return options
    if ep.integer_target:
        options[TARGET] = "X2" if target in XDNA2.targets else "X1"
    if target in ep.integer_xclbin:
        options[XCLBIN] = ep.integer_xclbin[target]
    return options


def resolve_options(options: dict[str, str], compiled_dir: Path) -> dict[str, str]:
    """Concrete options for a session: relative paths against `compiled_dir`, env vars expanded."""
    resolved = dict(options)
    for key in (CONFIG_FILE, CACHE_DIR):
        if key in resolved:
            resolved[key] = str((Path(compiled_dir) / resolved[key]).resolve())
    if XCLBIN in resolved:
        resolved[XCLBIN] = os.path.expandvars(resolved[XCLBIN])
    return resolved


def available_providers() -> list[str]:
    from whisper_npu.host import import_onnxruntime

    return list(import_onnxruntime().get_available_providers())


def context_entries(context_model: Path) -> dict[str, str]:
    """Session config entries that make session creation dump an EPContext model, embedded."""
    return {CONTEXT_ENABLE: "1", CONTEXT_FILE_PATH: str(context_model), CONTEXT_EMBED_MODE: "1"}


@contextlib.contextmanager
def report_env() -> Iterator[None]:
    previous = os.environ.get(REPORT_ENV)
    os.environ[REPORT_ENV] = VITISAI_REPORT_FILE
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(REPORT_ENV, None)
        else:
            os.environ[REPORT_ENV] = previous


def compile_graph(
    model: Path, options: dict[str, str], context_model: Path, session_options: Any
) -> Path:
    """Create a VitisAI session (this is the compile), dumping the EPContext model; returns
    where the EP writes its partition report. Only meaningful where the EP is installed."""
    import onnxruntime as ort

    for key, value in context_entries(context_model).items():
        session_options.add_session_config_entry(key, value)
    with report_env():
        ort.InferenceSession(
            str(model), session_options, providers=[VITISAI_PROVIDER], provider_options=[options]
        )
    return Path(options[CACHE_DIR]) / options[CACHE_KEY] / VITISAI_REPORT_FILE


def _op_name(entry: str) -> str:
    """'::Add' or 'com.microsoft::QuantizeLinear' → the op type; '::' separates the domain."""
    return entry.rpartition("::")[2]


# Names the EP's reports give the NPU: "NPU" (1.4+), "DPU" (1.3), "VAIML" (BF16 subgraphs in
# AMD's logs), "IPU"; and the CPU: "CPU", "VITIS_EP_CPU" (ops the EP keeps on the host).
NPU_NAMES = frozenset({"NPU", "DPU", "VAIML", "IPU"})
CPU_NAMES = frozenset({"CPU", "VITIS_EP_CPU"})


def _device(name: str) -> str:
    return "NPU" if name in NPU_NAMES else "CPU" if name in CPU_NAMES else name


def parse_ep_report(report: dict[str, Any]) -> dict[str, Any]:
    """vitisai_ep_report.json's `deviceStat` (nodes and op types per device) and, where the EP
    writes it, `subgraphStat` (subgraphs per device), with the NPU's and the CPU's several names
    read as one each. AMD's documented examples carry deviceStat only ("all", "CPU", "NPU")."""
    stats = report.get("deviceStat")
    if not isinstance(stats, list):
        raise ValueError("not a VitisAI EP report: no deviceStat list")
    devices: dict[str, dict[str, Any]] = {}
    for entry in stats:
        name = _device(str(entry["name"]))
        found = devices.setdefault(name, {"nodes": 0, "op_types": []})
        found["nodes"] += int(entry.get("nodeNum", 0))
        found["op_types"] = sorted(
            {*found["op_types"], *(_op_name(op) for op in entry.get("supportedOpType", []))}
        )
    total = devices.get("all", {}).get("nodes") or sum(
        d["nodes"] for k, d in devices.items() if k != "all"
    )
    npu = devices.get("NPU", {}).get("nodes", 0)
    subgraphs = [
        int(entry.get("count", 0))
        for entry in report.get("subgraphStat", [])
        if _device(str(entry.get("device"))) == "NPU"
    ]
    return {
        "devices": devices,
        "npu_nodes": npu,
        "cpu_nodes": devices.get("CPU", {}).get("nodes", 0),
        "coverage": npu / total if total else 0.0,
        "cpu_op_types": devices.get("CPU", {}).get("op_types", []),
        **({"npu_subgraphs": subgraphs[0]} if subgraphs else {}),
    }
