"""Which engines a bench runs: the fp32 CPU baseline, every compiled variant, and the peers
that can run on the same weights (or why each cannot)."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.bench.records import EngineSpec
from whisper_npu.errors import UserError
from whisper_npu.figures import PEERS
from whisper_npu.layout import SOURCE_FILE
from whisper_npu.variants import BASELINE

if TYPE_CHECKING:
    from pipeline.config import BenchParams


def variant_specs(
    variants: Sequence[str], compiled_dir: Path, baseline_bundle: Path, params: BenchParams
) -> list[EngineSpec]:
    """The fp32 CPU baseline first, then every variant's compiled artifact, run where
    `params.device` says.

    The fp32 artifact is benched beside the baseline only when it may run on the NPU; otherwise
    the two are the same bundle on the same provider.
    """
    from whisper_npu.providers import VITISAI_PROVIDER
    from whisper_npu.vitisai import available_providers

    npu = params.device != "cpu" and VITISAI_PROVIDER in available_providers()
    baseline = EngineSpec(BASELINE, "ours", Path(baseline_bundle), params.threads, cpu_only=True)
    specs = [baseline]
    for variant in variants:
        if variant == BASELINE and not npu:
            continue
        path = Path(compiled_dir) / variant
        if not path.is_dir():
            raise UserError(f"{path}: no compiled artifact for variant {variant!r}")
        name = f"{variant}_npu" if variant == BASELINE else variant
        specs.append(EngineSpec(name, "ours", path, params.threads, device=params.device))
    return specs


def _faster_whisper_weights(model_dir: Path) -> Path | str:
    """The CTranslate2 directory `model_dir` was converted from, or why there is none."""
    from pipeline.sources.model import classify_source
    from whisper_npu.fsutil import sha256_file

    record = model_dir / SOURCE_FILE
    if not record.is_file():
        return f"{record} is missing, so the weights it came from are unknown"
    source = json.loads(record.read_text(encoding="utf-8"))
    if source.get("kind") != "ct2":
        return f"the model was not converted from CTranslate2 weights ({source.get('kind')})"
    _, location = classify_source(source["source"])
    weights = Path(location)
    if sha256_file(weights / "model.bin") != source.get("source_sha256", {}).get("model.bin"):
        return f"{weights}/model.bin is not the file {model_dir} was converted from"
    return weights


def peer_specs(
    model_dir: Path, threads: int | None, language: str | None = None
) -> tuple[list[EngineSpec], dict[str, str]]:
    """Peers on the same weights, told `language` (a multilingual bundle's), and why any is
    skipped. Without a thread count they get ORT's default, one thread per physical core
    (CTranslate2's own default is 4 regardless)."""
    import psutil

    threads = threads or psutil.cpu_count(logical=False) or os.cpu_count() or 1
    model_dir = Path(model_dir)
    if not (model_dir / "model.safetensors").is_file():
        return [], {peer: f"{model_dir}: no converted model" for peer in PEERS}
    specs, skipped = [], {}
    if importlib.util.find_spec("torch") is not None:
        specs.append(
            EngineSpec("transformers", "transformers", model_dir, threads, language=language)
        )
    else:
        skipped["transformers"] = "torch is not installed"
    fw_peers = ("faster_whisper", "faster_whisper_int8")
    if importlib.util.find_spec("faster_whisper") is None:
        skipped |= dict.fromkeys(
            fw_peers, "faster-whisper is not installed (pip install '.[peers]')"
        )
    elif isinstance(weights := _faster_whisper_weights(model_dir), str):
        skipped |= dict.fromkeys(fw_peers, weights)
    else:
        specs += [
            EngineSpec("faster_whisper", "faster_whisper", weights, threads, language=language),
            # The same weights as CPU users run them: int8, quantized by CTranslate2 on load.
            EngineSpec(
                "faster_whisper_int8",
                "faster_whisper",
                weights,
                threads,
                compute_type="int8",
                language=language,
            ),
        ]
    return specs, skipped


def bench_specs(
    variants: Sequence[str],
    compiled_dir: Path,
    baseline_bundle: Path,
    model_dir: Path,
    params: BenchParams,
) -> tuple[list[EngineSpec], dict[str, str]]:
    """Every engine one bench runs, in order (the baseline first), and why any peer is
    skipped; the peers decode in the baseline bundle's language, as ours do."""
    from whisper_npu.bundle import BundleRecord

    specs = variant_specs(variants, compiled_dir, baseline_bundle, params)
    if not params.peers:
        return specs, {}
    language = BundleRecord.load(Path(baseline_bundle)).decoding.language
    found, skipped = peer_specs(model_dir, params.threads, language)
    return specs + found, skipped
