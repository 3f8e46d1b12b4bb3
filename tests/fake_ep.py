"""Stand-ins for a Ryzen AI laptop where there is none (here, and on CI).

`FakeVitisAi` is the onnxruntime module as AMD's onnxruntime-vitisai would present it: it lists
VitisAIExecutionProvider, sessions created with it report it first, and each writes a recorded
partition report where the EP writes its own (cache_dir/cache_key/$XLNX_ONNX_EP_REPORT_FILE) —
while ONNX Runtime's CPU provider runs the graphs. What it tests is the runtime's wiring
(options, working directory, reports, refusals), never a figure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime

from whisper_npu.compiled import Forecast
from whisper_npu.execution import Host
from whisper_npu.host import Npu, OnnxRuntime, RyzenAi
from whisper_npu.providers import CPU_PROVIDER, VITISAI_PROVIDER
from whisper_npu.vitisai import CACHE_DIR, CACHE_KEY, REPORT_ENV

ONNXRUNTIME = OnnxRuntime(("onnxruntime-vitisai",), "1.23.3", (VITISAI_PROVIDER, CPU_PROVIDER))
NO_EP = OnnxRuntime(("onnxruntime-vitisai",), "1.23.3", (CPU_PROVIDER,))
PCI = {"stx": "1022:17f0 rev 10", "krk": "1022:17f0 rev 20", "phx": "1022:1502 rev 00"}


def machine(
    chip: str | None = "stx",
    release: str | None = "1.7.1",
    ort: OnnxRuntime = ONNXRUNTIME,
    ready: bool = True,
) -> Host:
    """A laptop as whisper_npu.host would find it."""
    npu = Npu(chip, PCI.get(chip or ""), ready and chip is not None, "faked for a test")
    ryzen = RyzenAi(release, f"voe {release}" if release else "faked: none", None)
    return Host(lambda: ort, lambda: ryzen, lambda: npu)


def report_like(forecast: Forecast, graph: str, extra_cpu: tuple[str, ...] = ()) -> dict[str, Any]:
    """The EP report a graph would get if the EP placed it as the forecast says, in AMD's
    documented format, with `extra_cpu` op types moved to the CPU."""
    placed = forecast.graph(graph)
    cpu_ops = sorted({row.op_type for row in placed.cpu_ops} | set(extra_cpu))
    cpu_nodes = placed.nodes - placed.npu_nodes + len(extra_cpu)
    return {
        "deviceStat": [
            {"name": "all", "nodeNum": placed.nodes, "supportedOpType": []},
            {"name": "CPU", "nodeNum": cpu_nodes, "supportedOpType": [f"::{op}" for op in cpu_ops]},
            {"name": "NPU", "nodeNum": placed.nodes - cpu_nodes, "supportedOpType": []},
        ]
    }


class _Session:
    """A CPU session that answers get_providers as a VitisAI one would."""

    def __init__(self, session: Any, providers: list[str]) -> None:
        self._session, self._providers = session, providers

    def get_providers(self) -> list[str]:
        return list(self._providers)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class FakeVitisAi:
    """The onnxruntime module of an environment with the VitisAI EP (see the module's note).
    `report(graph_file_stem)` gives the recorded report each session writes."""

    def __init__(self, report: Callable[[str], dict[str, Any]]) -> None:
        self.report = report
        self.options: list[dict[str, str]] = []  # what each VitisAI session was given

    def __getattr__(self, name: str) -> Any:
        return getattr(onnxruntime, name)

    def get_available_providers(self) -> list[str]:
        return [VITISAI_PROVIDER, *onnxruntime.get_available_providers()]

    def InferenceSession(
        self,
        path: str,
        sess_options: Any = None,
        providers: list[str] | None = None,
        provider_options: list[dict[str, str]] | None = None,
    ) -> _Session:
        session = onnxruntime.InferenceSession(path, sess_options, providers=[CPU_PROVIDER])
        if not providers or providers[0] != VITISAI_PROVIDER:
            return _Session(session, [CPU_PROVIDER])
        options = (provider_options or [{}])[0]
        self.options.append(options)
        report_name = os.environ.get(REPORT_ENV)
        if report_name:
            where = Path(options[CACHE_DIR]) / options[CACHE_KEY] / report_name
            where.parent.mkdir(parents=True, exist_ok=True)
            where.write_text(json.dumps(self.report(Path(path).stem.removesuffix("_ctx"))))
        return _Session(session, [VITISAI_PROVIDER, CPU_PROVIDER])
