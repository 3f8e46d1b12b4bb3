"""The `quantize` stage: an fp32 bundle → a quantized bundle per variant that keeps WER.

Whisper collapses under naive 8-bit activations, so precision is chosen by measurement: the
`sensitivity` stage ranks every compute layer by how much rounding it alone hurts the output;
here the k most sensitive layers of each graph stay float for k = 0, 1, 2, 4, … and the first k
whose WER on held-back calibration clips (never the eval set) is within the variant's budget
wins. The excluded layers, their sensitivities and every attempt go into bundle.json and
QUANTIZATION.md.
"""

from __future__ import annotations

import shutil
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from tqdm import tqdm

from pipeline.calibration import CalibrationSet, FeedReader
from pipeline.config import QuantizeParams, Variant
from pipeline.errors import GateFailure, UserError
from pipeline.fsutil import atomic_dir, sha256_tree, write_json
from pipeline.graph_check import check_bundle_graphs
from pipeline.quant_backends import QuantBackend, get_backend
from pipeline.runtime import BUNDLE_FILE, Bundle, Transcriber
from pipeline.sensitivity import VARIANT_GRID, ranked_layers
from pipeline.speech_sets import clip_samples, load_saved_set
from pipeline.wer import corpus_wer
from pipeline.whisper_io import GRAPHS

REPORT_FILE = "QUANTIZATION.md"


def exclusion_ladder(limit: int) -> list[int]:
    """0, 1, 2, 4, … up to `limit`: few quantizer runs, and small k is tried first."""
    steps, k = [0], 1
    while k <= limit:
        steps.append(k)
        k *= 2
    return steps


def holdout_wer(bundle_dir: Path, data_dir: Path, clip_ids: list[str]) -> float:
    """Corpus WER of a bundle on the held-back calibration clips."""
    calibration = load_saved_set(data_dir, "calibration")
    rows = [row for row in calibration if row["id"] in set(clip_ids)]
    if len(rows) != len(clip_ids):
        raise UserError(f"{data_dir}: held-back clips missing from the calibration set")
    transcriber = Transcriber.from_bundle(bundle_dir)
    texts = [transcriber.transcribe(clip_samples(row)).text for row in rows]
    return corpus_wer([row["text"] for row in rows], texts)


def _quantize_graphs(
    backend: QuantBackend,
    params: QuantizeParams,
    variant: Variant,
    fp32: Bundle,
    calibration: CalibrationSet,
    exclude: dict[str, list[str]],
    out: Path,
) -> float:
    """Both graphs into `out` (plus the runtime files); returns seconds spent quantizing."""
    for name in fp32.root.iterdir():
        if name.suffix != ".onnx" and name.name != BUNDLE_FILE:
            shutil.copy2(name, out / name.name)
    readers = {
        "encoder": FeedReader(lambda: calibration.encoder_feeds(params.encoder_calibration_feeds)),
        "decoder": FeedReader(
            lambda: calibration.decoder_feeds(fp32, params.decoder_calibration_feeds)
        ),
    }
    start = time.perf_counter()
    for graph in GRAPHS:
        graph_variant = (
            params.decoder_variant.get(variant, variant) if graph == "decoder" else variant
        )
        backend.quantize(
            fp32.root / f"{graph}.onnx",
            out / f"{graph}.onnx",
            readers[graph],
            graph_variant,
            exclude[graph],
            list(params.op_types),
        )
    return time.perf_counter() - start


def _write_meta(out: Path, fp32: Bundle, meta: dict[str, Any]) -> None:
    full = {**fp32.meta, **meta}
    full.pop("parity", None)  # the fp32 parity gate does not describe a quantized graph
    full["graphs"] = {name: report.summary() for name, report in check_bundle_graphs(out).items()}
    full["files"] = {
        name: digest
        for name, digest in sha256_tree(out).items()
        if name not in (BUNDLE_FILE, REPORT_FILE)
    }
    write_json(out / BUNDLE_FILE, full)


def _report(
    variant: Variant, meta: dict[str, Any], ranking: dict[str, list[tuple[str, float]]]
) -> str:
    q = meta["quantization"]
    lines = [
        f"# {variant}: quantization report",
        "",
        f"Backend {q['backend']}, grid {q['grid']}, op types {', '.join(q['op_types'])}.",
        f"Budget: held-back WER within +{q['max_wer_delta']:.1f} points of fp32 "
        f"({q['fp32_holdout_wer']:.2%}).",
        "",
        "| layers kept float per graph | held-back WER | delta |",
        "| --- | --- | --- |",
    ]
    lines += [
        f"| {a['excluded_per_graph']} | {a['holdout_wer']:.2%} | {a['wer_delta']:+.2f} |"
        for a in q["attempts"]
    ]
    lines += ["", "## Layers kept float", ""]
    for graph in GRAPHS:
        lines += [
            f"- {graph}: "
            + (
                ", ".join(
                    f"`{n}` ({ranking_snr(ranking, graph, n):.1f} dB)" for n in q["excluded"][graph]
                )
                or "none"
            )
        ]
    lines += ["", "## Most sensitive layers (output SNR with only that layer rounded)", ""]
    for graph in GRAPHS:
        lines += [
            f"- {graph}: " + ", ".join(f"`{n}` {snr:.1f} dB" for n, snr in ranking[graph][:8])
        ]
    return "\n".join(lines) + "\n"


def ranking_snr(ranking: dict[str, list[tuple[str, float]]], graph: str, node: str) -> float:
    return dict(ranking[graph])[node]


def quantize_variant(
    params: QuantizeParams,
    variant: Variant,
    fp32_dir: Path,
    calibration_dir: Path,
    sensitivity_dir: Path,
    data_dir: Path,
    out_dir: Path,
) -> dict[str, Any]:
    if variant not in params.variants:
        raise UserError(f"variant {variant!r} is not in quantize.variants {params.variants}")
    backend = get_backend(params.backend)
    fp32 = Bundle.load(Path(fp32_dir).resolve())  # readers open it again from Quark's directory
    calibration = CalibrationSet(calibration_dir)
    calibration.check_fits(fp32)
    ranking = ranked_layers(sensitivity_dir, variant)
    holdout = calibration.manifest["holdout_clips"]
    baseline = holdout_wer(fp32_dir, data_dir, holdout)
    budget = params.max_wer_delta[variant]
    attempts: list[dict[str, Any]] = []
    # Wall-clock seconds per attempt go to stdout only: in bundle.json they would make two
    # identical runs produce different outputs (and DVC hashes).
    seconds: list[float] = []
    with atomic_dir(Path(out_dir)) as scratch:
        for k in tqdm(
            exclusion_ladder(params.max_excluded), desc=f"quantize {variant}", unit="try"
        ):
            exclude = {graph: [name for name, _ in ranking[graph][:k]] for graph in GRAPHS}
            for stale in scratch.iterdir():
                stale.unlink()
            seconds.append(
                _quantize_graphs(backend, params, variant, fp32, calibration, exclude, scratch)
            )
            write_json(
                scratch / BUNDLE_FILE, {**fp32.meta, "custom_ops": backend.custom_ops_for(variant)}
            )
            wer = holdout_wer(scratch, data_dir, holdout)
            attempts.append(
                {
                    "excluded_per_graph": k,
                    "holdout_wer": wer,
                    "wer_delta": 100 * (wer - baseline),
                }
            )
            if 100 * (wer - baseline) <= budget:
                break
        else:
            raise GateFailure(
                f"{variant}: no setting within +{budget} WER points on held-back clips "
                f"(best {min(a['wer_delta'] for a in attempts):+.2f} "
                f"with up to {params.max_excluded} layers float)"
            )
        meta = {
            "variant": variant,
            "custom_ops": backend.custom_ops_for(variant),
            "quantization": {
                "backend": backend.name,
                "backend_version": version("amd-quark") if backend.name == "quark" else None,
                "grid": VARIANT_GRID[variant],
                "decoder_variant": params.decoder_variant.get(variant, variant),
                "op_types": list(params.op_types),
                "max_wer_delta": budget,
                "fp32_holdout_wer": baseline,
                "holdout_clips": holdout,
                "excluded": exclude,
                "sensitivity_db": {graph: dict(ranking[graph]) for graph in GRAPHS},
                "attempts": attempts,
                "calibration": calibration.manifest,
            },
        }
        (scratch / REPORT_FILE).write_text(_report(variant, meta, ranking), encoding="utf-8")
        _write_meta(scratch, fp32, meta)
    return {
        "variant": variant,
        "attempts": attempts,
        "quantize_s": [round(s, 1) for s in seconds],
        "excluded": exclude,
    }
