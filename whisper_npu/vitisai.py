"""The VitisAI execution provider's documented surface, in one place, and the code that uses it.

Option names, values and file layouts follow the Ryzen AI Software documentation for release
1.7.1 (the `target` option and the BF16 config's `targets` section arrived in 1.6, the
`log_level` option was deprecated in 1.7 and is not used). Sources:

- amd/RyzenAI-SW docs/develop/model-deployment.mdx @c87208e ("Vitis AI EP Options Reference
  Guide", "Using INT8 Models", "Managing Compiled Models", "Operator Assignment Report");
- amd/RyzenAI-SW docs/reference/relnotes.mdx @711f0a2 (1.5: the report needs
  XLNX_ONNX_EP_REPORT_FILE and `enable_cache_file_io_in_mem` 0; 1.6: no `xclbin` on STX/KRK,
  `target` X1 + `xclbin` on PHX/HPT; BF16 models run on STX/KRK only);
- amd/RyzenAI-SW Demos/ASR/Whisper/config/vitisai_config_whisper_{encoder,decoder}.json @0b65628
  (AMD's VAIML settings for Whisper, per graph).

AMD's operator table stays the 1.5.0 data in pipeline/data: the 1.7.0 table (RyzenAI-SW
docs/reference/supported-operators.mdx @b5426cf) differs from it only in A8W8 no longer listing
ReduceMin, ReduceSum, Sigmoid and Sin, none of which a Whisper bundle holds.

Everything here but `compile_graph` is a pure function, testable without the EP.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from whisper_npu.layout import CACHE_SUBDIR, VITISAI_REPORT_FILE, vaip_config_file
from whisper_npu.providers import VITISAI_PROVIDER
from whisper_npu.variants import VARIANTS, XDNA2, Variant

RYZEN_AI_VERSION = "1.7.1"

# Provider options (model-deployment.mdx, "VitisAI EP Provider Options").
CONFIG_FILE = "config_file"  # BF16 compile options (the vaip_config.json below)
TARGET = "target"  # integer backend: "X2" (default, STX/KRK) or "X1" (legacy, needed on PHX/HPT)
XCLBIN = "xclbin"  # PHX/HPT integer models only; must not be set on STX/KRK
CACHE_DIR = "cache_dir"
CACHE_KEY = "cache_key"
CACHE_IN_MEMORY = "enable_cache_file_io_in_mem"  # "0": write the compiled model (and report)

# ONNX Runtime session config entries for the EP context cache ("Managing Compiled Models").
CONTEXT_ENABLE = "ep.context_enable"
CONTEXT_FILE_PATH = "ep.context_file_path"
CONTEXT_EMBED_MODE = "ep.context_embed_mode"

# "Operator Assignment Report": written into cache_dir/cache_key under the name this holds.
REPORT_ENV = "XLNX_ONNX_EP_REPORT_FILE"

# The PHX/HPT NPU binary, under the installation ("Using INT8 Models"); 1x4/Nx4 are retired.
PHX_XCLBIN = "${RYZEN_AI_INSTALLATION_PATH}/voe-4.0-win_amd64/xclbins/phoenix/4x4.xclbin"


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


def vaip_config(variant: Variant, target: str, graph: str) -> dict[str, Any]:
    """The config_file contents for one graph of a variant.

    VAIML-flow variants get AMD's Whisper config for that graph. Integer models take no config
    file: the backend is the `target` provider option, recorded here so the compiled directory
    says which one it was built for.
    """
    if not VARIANTS[variant].bf16_flow:
        backend = "X2" if target in XDNA2.targets else "X1"
        return {TARGET: backend, "passed_to_ep": False}
    options = {**WHISPER_VAIML, **(WHISPER_VAIML_ENCODER if graph == "encoder" else {})}
    return {
        "passes": [
            {"name": "init", "plugin": "vaip-pass_init"},
            {
                "name": "vaiml_partition",
                "plugin": "vaip-pass_vaiml_partition",
                "vaiml_config": options,
            },
        ],
        "target": "VAIML",
        "targets": [{"name": "VAIML", "pass": ["init", "vaiml_partition"]}],
    }


def provider_options(variant: Variant, target: str, graph: str, cache_key: str) -> dict[str, str]:
    """Provider options as stored in provider_options.json: paths relative to the compiled
    directory and the installation variable unexpanded, so the directory can move
    (`resolve_options` makes them concrete). Empty when the chip has no NPU path."""
    if npu_column(variant, target) is None:
        return {}
    options = {CACHE_DIR: CACHE_SUBDIR, CACHE_KEY: cache_key, CACHE_IN_MEMORY: "0"}
    if VARIANTS[variant].bf16_flow:
        options[CONFIG_FILE] = vaip_config_file(graph)
    elif target in XDNA2.targets:
        options[TARGET] = "X2"
    else:
        options.update({TARGET: "X1", XCLBIN: PHX_XCLBIN})
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
    import onnxruntime as ort

    return list(ort.get_available_providers())


def ep_available() -> bool:
    return VITISAI_PROVIDER in available_providers()


def context_entries(context_model: Path) -> dict[str, str]:
    """Session config entries that make session creation dump an EPContext model, embedded."""
    return {CONTEXT_ENABLE: "1", CONTEXT_FILE_PATH: str(context_model), CONTEXT_EMBED_MODE: "1"}


@contextlib.contextmanager
def _report_env() -> Iterator[None]:
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
    with _report_env():
        ort.InferenceSession(
            str(model), session_options, providers=[VITISAI_PROVIDER], provider_options=[options]
        )
    return Path(options[CACHE_DIR]) / options[CACHE_KEY] / VITISAI_REPORT_FILE


def _op_name(entry: str) -> str:
    """'::Add' or 'com.microsoft::QuantizeLinear' → the op type; '::' separates the domain."""
    return entry.rpartition("::")[2]


def parse_ep_report(report: dict[str, Any]) -> dict[str, Any]:
    """The `deviceStat` part of vitisai_ep_report.json: nodes and op types per device.

    AMD's examples name the devices "all", "CPU" and "NPU" (reports before Ryzen AI 1.5 said
    "DPU" for the NPU; it is read as NPU).
    """
    stats = report.get("deviceStat")
    if not isinstance(stats, list):
        raise ValueError("not a VitisAI EP report: no deviceStat list")
    devices: dict[str, dict[str, Any]] = {}
    for entry in stats:
        name = "NPU" if entry["name"] == "DPU" else str(entry["name"])
        devices[name] = {
            "nodes": int(entry["nodeNum"]),
            "op_types": sorted({_op_name(op) for op in entry.get("supportedOpType", [])}),
        }
    total = devices.get("all", {}).get("nodes") or sum(
        d["nodes"] for k, d in devices.items() if k != "all"
    )
    npu = devices.get("NPU", {}).get("nodes", 0)
    return {
        "devices": devices,
        "npu_nodes": npu,
        "cpu_nodes": devices.get("CPU", {}).get("nodes", 0),
        "coverage": npu / total if total else 0.0,
        "cpu_op_types": devices.get("CPU", {}).get("op_types", []),
    }
