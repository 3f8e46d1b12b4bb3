"""Which layers break under a precision: fake-quantize one compute node at a time and measure.

For each MatMul/Gemm/Conv node the node's activation inputs are rounded to the precision's grid
(asymmetric, from their calibrated min/max, as NPU activation quantizers do) and its weight to a
symmetric weight grid, everything else stays
float; the model's outputs on calibration feeds are compared with fp32 as an SNR in dB. A large
drop marks a layer to keep wide. This needs no quantizer: it ranks layers the same way for
Quark, vai_q_onnx and ORT, and finds outlier layers (huge activation ranges) by measurement,
not by name.

Every node is a fresh copy of the graph and a fresh session, which costs more than running the
decoder's feeds through it, so nodes are scored in one single-threaded worker process per core.
Every session here runs one thread: the scores do not depend on the machine's core count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from pydantic import Field
from tqdm import tqdm

from pipeline.config import QuantizeParams
from pipeline.quant.calibration import CalibrationSet
from pipeline.quant.plan import GraphPlan
from pipeline.workers import map_in_workers
from whisper_npu.bundle import Bundle
from whisper_npu.errors import UserError
from whisper_npu.fsutil import atomic_dir
from whisper_npu.layout import sensitivity_file
from whisper_npu.providers import CPU_PROVIDER
from whisper_npu.record import Record
from whisper_npu.variants import Grid, Precision

COMPUTE_OPS = ("MatMul", "Gemm", "Conv")


class SensitivityRecord(Record):
    """<grid>.json: per graph, each compute layer's output SNR (dB) with it alone rounded to
    the grid, and how many feeds per graph measured it."""

    grid: str  # the precision as Precision.describe() names it
    snr_db: dict[str, dict[str, float]]
    feeds: dict[str, Annotated[int, Field(ge=1)]]

    @classmethod
    def load(cls, root: Path, grid: str) -> SensitivityRecord:
        return cls.read(Path(root) / sensitivity_file(grid))

    def save(self, root: Path, grid: str) -> None:
        self.write(Path(root) / sensitivity_file(grid))


def compute_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [node for node in model.graph.node if node.op_type in COMPUTE_OPS]


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {init.name: init for init in model.graph.initializer}


def activation_ranges(
    model_path: Path, feeds: Iterable[dict[str, np.ndarray]]
) -> dict[str, tuple[float, float]]:
    """(min, max) of every activation input of every compute node, over the feeds."""
    model = onnx.load(str(model_path))
    weights = _initializers(model)
    graph_inputs = {value.name for value in model.graph.input}
    wanted = sorted(
        {
            name
            for node in compute_nodes(model)
            for name in node.input
            if name and name not in weights
        }
    )
    existing = {output.name for output in model.graph.output}
    for name in wanted:
        if name not in existing and name not in graph_inputs:
            model.graph.output.append(helper.make_empty_tensor_value_info(name))
    session = _session(model)
    ranges = {name: (0.0, 0.0) for name in wanted}
    readable = [name for name in wanted if name not in graph_inputs]
    for feed in feeds:
        values = dict(zip(readable, session.run(readable, feed), strict=True))
        values.update({name: feed[name] for name in wanted if name in graph_inputs})
        for name, value in values.items():
            low, high = ranges[name]
            ranges[name] = (min(low, float(value.min())), max(high, float(value.max())))
    return ranges


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    """A one-thread CPU session; quiet, since ORT warns for every unused initializer a rewired
    copy leaves behind, which is expected."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=[CPU_PROVIDER])


def _round_to_grid(values: np.ndarray, bits: int | None) -> np.ndarray:
    if bits is None:  # bfloat16: keep the top 16 bits, round to nearest even
        raw = values.astype(np.float32).view(np.uint32)
        rounded = (raw + 0x7FFF + ((raw >> 16) & 1)) & 0xFFFF0000
        return rounded.view(np.float32)
    limit = 2 ** (bits - 1) - 1
    scale = max(float(np.abs(values).max()), 1e-12) / limit
    on_grid: np.ndarray = np.clip(np.round(values / scale), -limit, limit) * scale
    return on_grid.astype(values.dtype)


def _fake_quant_nodes(
    tensor: str, value_range: tuple[float, float], bits: int | None, tag: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Nodes that round `tensor` to the grid; returns (nodes, constants, rounded tensor name)."""
    out = f"{tensor}__fq_{tag}"
    if bits is None:
        narrowed = f"{out}_bf16"
        return (
            [
                helper.make_node("Cast", [tensor], [narrowed], to=TensorProto.BFLOAT16),
                helper.make_node("Cast", [narrowed], [out], to=TensorProto.FLOAT),
            ],
            [],
            out,
        )
    low, high = min(value_range[0], 0.0), max(value_range[1], 0.0)
    step = max(high - low, 1e-12) / (2**bits - 1)
    zero = round(-low / step)
    constants = [
        numpy_helper.from_array(np.array(value, np.float32), f"{out}_{name}")
        for name, value in (("step", step), ("zero", zero), ("qmax", 2**bits - 1), ("qmin", 0.0))
    ]
    names = [f"{out}_{stage}" for stage in ("div", "round", "shift", "clip", "unshift")]
    nodes = [
        helper.make_node("Div", [tensor, f"{out}_step"], [names[0]]),
        helper.make_node("Round", [names[0]], [names[1]]),
        helper.make_node("Add", [names[1], f"{out}_zero"], [names[2]]),
        helper.make_node("Clip", [names[2], f"{out}_qmin", f"{out}_qmax"], [names[3]]),
        helper.make_node("Sub", [names[3], f"{out}_zero"], [names[4]]),
        helper.make_node("Mul", [names[4], f"{out}_step"], [out]),
    ]
    return nodes, constants, out


def with_layer_quantized(
    model: onnx.ModelProto,
    node_name: str,
    precision: Precision,
    ranges: dict[str, tuple[float, float]],
    lifted: Mapping[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """A copy of `model` where only `node_name` sees rounded inputs and a rounded weight.
    `lifted` holds the values of weights `lift_weights` turned into graph inputs."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    target = next(node for node in model.graph.node if node.name == node_name)
    initializers = _initializers(model)
    weights = {
        **{
            name: numpy_helper.to_array(initializers[name])
            for name in target.input
            if name in initializers
        },
        **(lifted or {}),
    }
    added_nodes: list[onnx.NodeProto] = []
    for index, name in enumerate(list(target.input)):
        if not name:
            continue
        if name in weights:
            if index == 2 and target.op_type in ("Gemm", "Conv"):
                continue  # biases stay 32-bit in every NPU scheme
            weight = weights[name]
            rounded = numpy_helper.from_array(
                _round_to_grid(weight, precision.weight_bits), f"{name}__fq_w"
            )
            model.graph.initializer.append(rounded)
            target.input[index] = rounded.name
        else:
            tag = node_name.replace("/", "_")
            nodes, constants, out = _fake_quant_nodes(
                name, ranges[name], precision.activation_bits, tag
            )
            added_nodes += nodes
            model.graph.initializer.extend(constants)
            target.input[index] = out
    position = list(model.graph.node).index(target)
    for offset, node in enumerate(added_nodes):
        model.graph.node.insert(position + offset, node)
    return model


def snr_db(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    signal = sum(float(np.sum(r.astype(np.float64) ** 2)) for r in reference)
    noise = sum(
        float(np.sum((r.astype(np.float64) - c) ** 2))
        for r, c in zip(reference, candidate, strict=True)
    )
    return float("inf") if noise == 0 else 10.0 * np.log10(signal / noise)


LIFTED_MIN_ELEMENTS = 4096


def lift_weights(model: onnx.ModelProto) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """The graph with its large float initializers turned into graph inputs, and their values.

    Copying, serialising and opening the 114 MB tiny.en decoder once per node took ~0.8 s, eight
    times what running its feeds takes; without its weights the graph is a few hundred KB."""
    light = onnx.ModelProto.FromString(model.SerializeToString())
    lifted, kept = {}, []
    for init in light.graph.initializer:
        if init.data_type == TensorProto.FLOAT and np.prod(init.dims) >= LIFTED_MIN_ELEMENTS:
            lifted[init.name] = numpy_helper.to_array(init)
            light.graph.input.append(
                helper.make_tensor_value_info(init.name, TensorProto.FLOAT, list(init.dims))
            )
        else:
            kept.append(init)
    del light.graph.initializer[:]
    light.graph.initializer.extend(kept)
    return light, lifted


@dataclass(frozen=True)
class _Scoring:
    """What a worker scores nodes against: the weightless graph (`lift_weights`), feeds that
    carry the weights, and the fp32 outputs."""

    model: onnx.ModelProto
    lifted: dict[str, np.ndarray]
    feeds: list[dict[str, np.ndarray]]
    outputs: list[str]
    ranges: dict[str, tuple[float, float]]
    reference: list[np.ndarray]


def _open_scoring(
    model_path: Path,
    feeds: list[dict[str, np.ndarray]],
    outputs: list[str],
    ranges: dict[str, tuple[float, float]],
) -> _Scoring:
    model, lifted = lift_weights(onnx.load(str(model_path)))
    feeds = [{**feed, **lifted} for feed in feeds]
    baseline = _session(model)
    reference = [value for feed in feeds for value in baseline.run(outputs, feed)]
    return _Scoring(model, lifted, feeds, outputs, ranges, reference)


def _score_node(scoring: _Scoring, task: tuple[str, Precision]) -> float:
    node_name, precision = task
    variant = with_layer_quantized(
        scoring.model, node_name, precision, scoring.ranges, scoring.lifted
    )
    session = _session(variant)
    candidate = [value for feed in scoring.feeds for value in session.run(scoring.outputs, feed)]
    return snr_db(scoring.reference, candidate)


def layer_sensitivity(
    model_path: Path,
    feeds: list[dict[str, np.ndarray]],
    outputs: list[str],
    precisions: Sequence[Precision],
) -> dict[Precision, dict[str, float]]:
    """Per precision, the output SNR (dB) with one node at a time rounded to it; lower means
    more sensitive."""
    names = [node.name for node in compute_nodes(onnx.load(str(model_path)))]
    ranges = activation_ranges(model_path, feeds)
    tasks = [(name, precision) for precision in precisions for name in names]
    scores = iter(
        map_in_workers(
            _score_node, tasks, partial(_open_scoring, model_path, feeds, outputs, ranges)
        )
    )
    return {precision: {name: next(scores) for name in names} for precision in precisions}


MODEL_OUTPUTS = {"encoder": ["cross_k", "cross_v"], "decoder": ["logits"]}


def sensitivity_grids(params: QuantizeParams) -> list[Grid]:
    """Every grid a quantize plan ranks on: each variant's, and each decoder_variant's (the
    decoder is ranked on its own variant's grid), by name."""
    variants = [*params.variants, *params.decoder_variant.values()]
    return sorted({GraphPlan.of(variant).quant.grid for variant in variants}, key=lambda g: g.name)


def run_sensitivity(
    params: QuantizeParams, bundle_dir: Path, calibration_dir: Path, out_dir: Path
) -> dict[str, Any]:
    """The `sensitivity` stage: per-layer output SNR of both graphs for each grid in use."""
    bundle = Bundle.load(bundle_dir)
    calibration = CalibrationSet(calibration_dir)
    calibration.check_fits(bundle)
    feeds = {
        "encoder": list(calibration.encoder_feeds(params.sensitivity.encoder_feeds)),
        "decoder": list(calibration.decoder_feeds(bundle, params.sensitivity.decoder_feeds)),
    }
    grids = sensitivity_grids(params)
    scores = {
        model: layer_sensitivity(
            bundle.root / f"{model}.onnx",
            feeds[model],
            MODEL_OUTPUTS[model],
            [grid.precision for grid in grids],
        )
        for model in tqdm(("encoder", "decoder"), desc="sensitivity", unit="graph")
    }
    summary = {}
    with atomic_dir(Path(out_dir)) as scratch:
        for grid in grids:
            result = {model: scores[model][grid.precision] for model in scores}
            SensitivityRecord(
                grid=grid.precision.describe(),
                snr_db=result,
                feeds={k: len(v) for k, v in feeds.items()},
            ).save(scratch, grid.name)
            summary[grid.name] = {
                model: min(layers, key=lambda n: layers[n]) for model, layers in result.items()
            }
    return {"most_sensitive": summary}


def ranked_layers(sensitivity_dir: Path, plan: GraphPlan) -> dict[str, list[tuple[str, float]]]:
    """Layers of each graph, most sensitive (lowest SNR) first, on a plan's grid."""
    path = Path(sensitivity_dir) / sensitivity_file(plan.quant.grid.name)
    if not path.is_file():
        raise UserError(
            f"{path}: no sensitivity for {plan.variant} (run `whisper-npu sensitivity` first)"
        )
    scores = SensitivityRecord.load(sensitivity_dir, plan.quant.grid.name).snr_db
    return {
        model: sorted(layers.items(), key=lambda item: item[1]) for model, layers in scores.items()
    }
