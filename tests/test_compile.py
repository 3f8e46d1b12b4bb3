"""The compile stage without the VitisAI EP: option and config builders, the EP report parser,
the partition forecast on graphs built here, the CLI's exit codes and the CPU fallback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf
from onnx import TensorProto, helper, numpy_helper

from pipeline.config import CompileParams
from pipeline.npu.compile import compile_bundle
from pipeline.npu.flows import Reason
from pipeline.npu.forecast import LoadedGraph, forecast_bundle, forecast_file, no_npu_reason
from tests.conftest import REPO, TINY_DIMS, TINY_SPEC, bundle_record, write_tiny_bundle
from whisper_npu import vitisai
from whisper_npu.cli import main
from whisper_npu.compiled import EpReport, Forecast, GraphPlacement, disagreements
from whisper_npu.errors import UserError
from whisper_npu.execution import Device, Execution
from whisper_npu.layout import COMPILE_FILE, VITISAI_REPORT_FILE
from whisper_npu.providers import VITISAI_PROVIDER
from whisper_npu.transcriber import Transcriber
from whisper_npu.variants import Flow

PARAMS = ["--params", str(REPO / "params.yaml")]
SPEC, DIMS = TINY_SPEC, TINY_DIMS

# The report in the format AMD documents (Ryzen AI model-deployment, Operator Assignment Report).
AMD_REPORT = {
    "deviceStat": [
        {"name": "all", "nodeNum": 400, "supportedOpType": ["::Add", "::Conv"]},
        {
            "name": "CPU",
            "nodeNum": 2,
            "supportedOpType": ["::DequantizeLinear", "::QuantizeLinear"],
        },
        {"name": "NPU", "nodeNum": 398, "supportedOpType": ["::Add", "::Conv"]},
    ]
}


def tensor(name: str, shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def weight(name: str, shape: tuple[int, ...] = (4, 4)) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, np.float32), name)


def save(path: Path, nodes: list[onnx.NodeProto], x_shape: list[int | str] | None = None) -> Path:
    """x [1, 4] → nodes → y, with weights W and B as initializers."""
    shape = x_shape or [1, 4]
    graph = helper.make_graph(
        nodes,
        "g",
        [tensor("x", shape)],
        [tensor("y", shape)],
        [weight("W"), weight("B", (4,))],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)],
    )
    onnx.save(model, str(path))
    return path


def chain(*ops: str) -> list[onnx.NodeProto]:
    """MatMul(x, W) followed by `ops`, each taking the previous output (Add also takes B)."""
    nodes = [helper.make_node("MatMul", ["x", "W"], ["t0"], name="matmul")]
    for i, op in enumerate(ops, start=1):
        inputs = [f"t{i - 1}", "B"] if op == "Add" else [f"t{i - 1}"]
        nodes.append(helper.make_node(op, inputs, [f"t{i}"], name=op.lower()))
    nodes[-1].output[0] = "y"
    return nodes


# --- option and config builders ------------------------------------------------------------


def test_integer_options_follow_the_chip():
    stx = vitisai.provider_options("a16w8", "stx", "encoder", "k")
    assert stx == {
        "cache_dir": "cache",
        "cache_key": "k",
        "enable_cache_file_io_in_mem": "0",
        "target": "X2",
    }
    phx = vitisai.provider_options("xint8", "phx", "encoder", "k")
    assert phx["target"] == "X1" and phx["xclbin"].endswith("xclbins/phoenix/4x4.xclbin")
    assert "config_file" not in stx and "xclbin" not in stx


def test_float_variants_use_the_vaiml_flow_on_xdna2_only():
    options = vitisai.provider_options("fp32", "krk", "decoder", "k")
    assert options["config_file"] == "vaip_config_decoder.json"
    assert vitisai.provider_options("bf16", "hpt", "encoder", "k") == {}
    assert vitisai.npu_column("fp32", "stx") == "BF16" and vitisai.npu_column("fp32", "phx") is None
    assert "STX/KRK only" in (no_npu_reason(Flow.VAIML, "phx") or "")
    assert no_npu_reason(Flow.X2_INT, "phx") is None


def test_vaip_config_is_amds_whisper_config_per_graph():
    """amd/RyzenAI-SW Demos/ASR/Whisper/config/vitisai_config_whisper_{encoder,decoder}.json."""
    encoder = vitisai.vaip_config("fp32", "stx", "encoder")
    vaiml = encoder["passes"][1]["vaiml_config"]
    assert vaiml == {
        "optimize_level": 3,
        "aiecompiler_args": "--system-stack-size=512",
        "fe_experiment": "use-accurate-mode=LayerNorm2PassAdf",
    }
    assert encoder["target"] == "VAIML" and encoder["targets"][0]["pass"] == [
        "init",
        "vaiml_partition",
    ]
    decoder = vitisai.vaip_config("bf16", "stx", "decoder")["passes"][1]["vaiml_config"]
    assert decoder == {"optimize_level": 3, "aiecompiler_args": "--system-stack-size=512"}
    assert vitisai.vaip_config("a8w8", "hpt", "encoder")["target"] == "X1"


def test_resolve_options_makes_paths_concrete(tmp_path, monkeypatch):
    monkeypatch.setenv("RYZEN_AI_INSTALLATION_PATH", "/opt/ryzen")
    options = vitisai.provider_options("fp32", "stx", "encoder", "k")
    fp32 = vitisai.resolve_options(options, tmp_path)
    assert fp32["config_file"] == str(tmp_path.resolve() / "vaip_config_encoder.json")
    assert fp32["cache_dir"] == str(tmp_path.resolve() / "cache")
    phx = vitisai.resolve_options(vitisai.provider_options("a8w8", "phx", "encoder", "k"), tmp_path)
    assert phx["xclbin"] == "/opt/ryzen/voe-4.0-win_amd64/xclbins/phoenix/4x4.xclbin"


def test_context_entries_are_the_documented_session_options(tmp_path):
    entries = vitisai.context_entries(tmp_path / "encoder_ctx.onnx")
    assert entries["ep.context_enable"] == "1" and entries["ep.context_embed_mode"] == "1"
    assert entries["ep.context_file_path"].endswith("encoder_ctx.onnx")


# --- the EP's report -----------------------------------------------------------------------


def test_report_parser_reads_amds_documented_format():
    parsed = vitisai.parse_ep_report(AMD_REPORT)
    assert parsed["npu_nodes"] == 398 and parsed["cpu_nodes"] == 2
    assert parsed["coverage"] == pytest.approx(398 / 400)
    assert parsed["cpu_op_types"] == ["DequantizeLinear", "QuantizeLinear"]


def test_report_parser_reads_the_older_dpu_name_and_refuses_other_json():
    old = {"deviceStat": [{**row, "name": "DPU"} if row["name"] == "NPU" else row
                          for row in AMD_REPORT["deviceStat"]]}  # fmt: skip
    assert vitisai.parse_ep_report(old)["npu_nodes"] == 398
    with pytest.raises(ValueError, match="deviceStat"):
        vitisai.parse_ep_report({"nodes": []})


# --- the forecast --------------------------------------------------------------------------


def forecast_graph(path: Path, flow: Flow, column: str | None = "A16W8") -> GraphPlacement:
    return LoadedGraph.load(path).place(flow, column)


def cpu_reasons(graph: GraphPlacement) -> dict[str, str]:
    return {row.op_type: row.reason for row in graph.cpu_ops}


def quantized(path: Path, nodes: list[onnx.NodeProto], bits: int = 8) -> Path:
    """`save`, plus int weights `w8`, a scale and a zero point of `bits` for Q/DQ nodes."""
    save(path, nodes)
    model = onnx.load(str(path))
    kind = np.int8 if bits == 8 else np.int16
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.ones((4, 4), np.int8), "w8"),
            numpy_helper.from_array(np.ones((), np.float32), "scale"),
            numpy_helper.from_array(np.zeros((), kind), "zero"),
            numpy_helper.from_array(np.zeros((), np.int8), "zero8"),
        ]
    )
    onnx.save(model, str(path))
    return path


def qdq(name: str, source: str, out: str, domain: str = "") -> list[onnx.NodeProto]:
    quantize = helper.make_node(
        "QuantizeLinear", [source, "scale", "zero"], [f"{name}_q"], name=f"{name}_q", domain=domain
    )
    dequantize = helper.make_node(
        "DequantizeLinear", [f"{name}_q", "scale", "zero"], [out], name=f"{name}_dq", domain=domain
    )
    return [quantize, dequantize]


def weight_dq() -> onnx.NodeProto:
    return helper.make_node("DequantizeLinear", ["w8", "scale", "zero8"], ["w"], name="w_dq")


def test_vaiml_places_whispers_float_ops_on_the_npu_as_amd_shows(tmp_path):
    """LayerNormalization and Softmax are in no table column AMD publishes for BF16, but AMD's
    Whisper encoder runs them on VAIML: shown, so NPU, one subgraph."""
    nodes = [
        helper.make_node("LayerNormalization", ["x", "B", "B"], ["n"], name="norm"),
        helper.make_node("MatMul", ["n", "W"], ["m"], name="matmul"),
        helper.make_node("Softmax", ["m"], ["y"], name="softmax"),
    ]
    graph = forecast_graph(save(tmp_path / "g.onnx", nodes), Flow.VAIML, "BF16")
    assert (graph.nodes, graph.npu_subgraphs, graph.cpu_islands) == (3, 1, 0)
    assert graph.coverage == 1.0 and graph.clean and graph.unverified == []
    table = forecast_graph(tmp_path / "g.onnx", Flow.TABLE, "BF16")
    assert cpu_reasons(table) == {"LayerNormalization": Reason.OUTSIDE, "Softmax": Reason.OUTSIDE}


def test_vaiml_sends_bool_tensors_to_the_cpu_and_splits(tmp_path):
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["m"], name="matmul"),
        helper.make_node("Greater", ["m", "B"], ["mask"], name="greater"),
        helper.make_node("Where", ["mask", "m", "B"], ["w"], name="where"),
        helper.make_node("Softmax", ["w"], ["y"], name="softmax"),
    ]
    graph = forecast_graph(save(tmp_path / "g.onnx", nodes), Flow.VAIML, "BF16")
    assert cpu_reasons(graph) == {"Greater": Reason.NOT_FLOAT, "Where": Reason.NOT_FLOAT}
    assert (graph.npu_subgraphs, graph.cpu_islands) == (2, 1) and not graph.clean


def test_vaiml_reports_an_op_no_source_covers_as_unverified(tmp_path):
    graph = forecast_graph(save(tmp_path / "g.onnx", chain("Hardmax", "Softmax")), Flow.VAIML)
    assert graph.unverified == ["Hardmax"] and cpu_reasons(graph) == {"Hardmax": Reason.UNVERIFIED}
    assert graph.npu_subgraphs == 2 and not graph.clean


def test_x2_int_units_fuse_their_qdq_and_leave_only_the_boundary_on_the_cpu(tmp_path):
    """Q(x) → DQ → MatMul(·, DQ(w8)) → Q → DQ → y: AMD's clean INT8 shape (NPU 393,
    VITIS_EP_CPU 2): the MatMul's unit on the NPU, the graph's own Q and DQ on the CPU."""
    nodes = [
        *qdq("in", "x", "xd"),
        weight_dq(),
        helper.make_node("MatMul", ["xd", "w"], ["m"], name="matmul"),
        *qdq("out", "m", "y"),
    ]
    graph = forecast_graph(quantized(tmp_path / "g.onnx", nodes), Flow.X2_INT, "A8W8")
    assert (graph.npu_subgraphs, graph.cpu_islands, graph.boundary_nodes) == (1, 0, 2)
    assert graph.clean and graph.npu_nodes == 4  # weight DQ, in DQ, MatMul, out Q


def test_x2_int_float_node_between_units_is_a_cpu_island(tmp_path):
    nodes = [
        *qdq("in", "x", "xd"),
        weight_dq(),
        helper.make_node("MatMul", ["xd", "w"], ["m"], name="matmul"),
        *qdq("mid", "m", "md"),
        helper.make_node("LayerNormalization", ["md", "B", "B"], ["n"], name="norm"),
        *qdq("norm", "n", "nd"),
        helper.make_node("MatMul", ["nd", "w"], ["m2"], name="matmul2"),
        *qdq("out", "m2", "y"),
    ]
    graph = forecast_graph(quantized(tmp_path / "g.onnx", nodes), Flow.X2_INT, "A8W8")
    assert cpu_reasons(graph)["LayerNormalization"] == Reason.FLOAT_ISLAND
    assert (graph.npu_subgraphs, graph.cpu_islands) == (2, 1) and not graph.clean


def test_16_bit_qdq_of_another_domain_is_placed_by_name_and_shape_inferred(tmp_path):
    nodes = [
        *qdq("in", "x", "xd", domain="com.microsoft"),
        weight_dq(),
        helper.make_node("MatMul", ["xd", "w"], ["m"], name="matmul"),
        *qdq("out", "m", "y", domain="com.microsoft"),
    ]
    path = quantized(tmp_path / "g.onnx", nodes, bits=16)
    graph = forecast_graph(path, Flow.X2_INT, "A16W8")
    assert graph.non_static == []  # ONNX alone cannot infer through com.microsoft Q/DQ
    assert graph.op_counts["com.microsoft.QuantizeLinear"] == 2
    assert graph.clean and graph.boundary_nodes == 2
    assert forecast_file(path, None, None, "stx").column == "A16W8"  # read from the quantizers


def test_a_path_through_the_cpu_splits_even_a_connected_run(tmp_path):
    """Add → LayerNorm (CPU) → MatMul → Add(residual): the two Adds are connected directly, but
    the second waits for the CPU, so the EP needs two NPU calls."""
    nodes = [
        helper.make_node("Add", ["x", "B"], ["r"], name="add"),
        helper.make_node("LayerNormalization", ["r", "B", "B"], ["n"], name="norm"),
        helper.make_node("MatMul", ["n", "W"], ["m"], name="matmul"),
        helper.make_node("Add", ["r", "m"], ["y"], name="residual"),
    ]
    graph = forecast_graph(save(tmp_path / "g.onnx", nodes), Flow.TABLE, "A8W8")
    assert (graph.npu_subgraphs, graph.cpu_islands) == (2, 1)


def test_the_forecast_reads_the_graph_onnx_runtime_hands_the_ep(tmp_path):
    """Basic optimizations run before any provider partitions: MatMul + Add become one Gemm,
    and constant Constant nodes fold away."""
    ones = numpy_helper.from_array(np.ones(4, np.float32))
    nodes = [
        helper.make_node("Constant", [], ["c"], value=ones),
        helper.make_node("MatMul", ["x", "W"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "B"], ["a"], name="add"),
        helper.make_node("Mul", ["a", "c"], ["y"], name="mul"),
    ]
    graph = forecast_graph(save(tmp_path / "g.onnx", nodes), Flow.VAIML)
    assert graph.optimized and graph.op_counts == {"Gemm": 1, "Mul": 1}
    assert graph.work.macs == 16 and graph.work.weight_bytes >= 16 * 4
    assert graph.work.inputs == {"x": 16} and graph.work.outputs == {"y": 16}


def test_symbolic_dim_is_flagged_and_not_clean(tmp_path):
    graph = forecast_graph(save(tmp_path / "g.onnx", chain("Add"), ["batch", 4]), Flow.VAIML)
    assert "x" in graph.non_static and "y" in graph.non_static
    assert graph.npu_subgraphs == 1 and not graph.clean


def test_forecast_cli_exit_codes_and_json(tmp_path, capsys):
    clean = save(tmp_path / "clean.onnx", chain("Add", "Softmax"))
    split = save(tmp_path / "split.onnx", chain("Hardmax", "Add"))
    assert main(["forecast", str(clean)]) == 0
    assert "1 NPU subgraph(s)" in capsys.readouterr().out
    assert main(["forecast", str(clean), str(split)]) == 1
    assert "Hardmax x1 (unverified" in capsys.readouterr().out
    assert main(["forecast", str(clean), "--target", "phx"]) == 1
    assert "no NPU path" in capsys.readouterr().out
    assert main(["forecast", str(split), "--json", "--flow", "table", "--column", "BF16"]) == 1
    (record,) = json.loads(capsys.readouterr().out)
    assert record["flow"] == "table" and record["placement"]["cpu_ops"][0]["op_type"] == "Hardmax"
    (tmp_path / "bad.onnx").write_text("not onnx")
    assert main(["forecast", str(tmp_path / "bad.onnx")]) == 2
    assert "not a readable ONNX graph" in capsys.readouterr().err
    assert main(["forecast", str(tmp_path / "missing.onnx")]) == 2


def test_a_bool_where_planted_mid_decoder_is_named_and_splits(tmp_path, capsys):
    """The tiny random decoder is clean under vaiml; a bool Where planted after its first
    LayerNormalization sends Greater and Where to the CPU: two NPU runs, exit 1."""
    bundle = write_tiny_bundle(tmp_path / "fp32")
    decoder = bundle / "decoder.onnx"
    model = onnx.load(str(decoder))
    norm = next(
        i for i, node in enumerate(model.graph.node) if node.op_type == "LayerNormalization"
    )
    out = model.graph.node[norm].output[0]
    planted = [
        helper.make_node("Greater", [out, "zero_f"], ["mask"], name="planted_greater"),
        helper.make_node("Where", ["mask", out, "zero_f"], ["planted"], name="planted_where"),
    ]
    for node in model.graph.node[norm + 1 :]:
        for i, name in enumerate(node.input):
            if name == out:
                node.input[i] = "planted"
    for offset, node in enumerate(planted, start=1):
        model.graph.node.insert(norm + offset, node)
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float32), "zero_f"))
    onnx.save(model, str(tmp_path / "planted.onnx"))
    assert main(["forecast", str(tmp_path / "planted.onnx")]) == 1
    line = capsys.readouterr().out
    assert (
        "Greater x1 (integer or bool tensor)" in line
        and "Where x1 (integer or bool tensor)" in line
    )
    graph = forecast_graph(tmp_path / "planted.onnx", Flow.VAIML)
    assert graph.npu_subgraphs >= 2


def test_disagreements_name_where_the_ep_and_the_forecast_differ():
    placement = GraphPlacement.model_validate(
        {
            "optimized": True, "opset": 17, "nodes": 400, "op_counts": {}, "npu_nodes": 400,
            "coverage": 1.0, "npu_subgraphs": 1, "cpu_islands": 0, "boundary_nodes": 0,
            "cpu_ops": [], "unverified": [], "non_static": [], "control_flow": [],
            "work": {"macs": 0, "weight_bytes": 0, "inputs": {}, "outputs": {}}, "clean": True,
        }
    )  # fmt: skip
    forecast = Forecast.model_construct(encoder=placement, decoder=placement)
    report = EpReport.model_validate(vitisai.parse_ep_report(AMD_REPORT))
    found = disagreements(forecast, {"encoder": report, "decoder": None})
    assert found == [
        "encoder: EP placed 398 NPU / 2 CPU nodes, forecast 400 / 0",
        "encoder: EP put ['DequantizeLinear', 'QuantizeLinear'] on the CPU, forecast had them "
        "on the NPU",
        "decoder: the EP wrote no partition report",
    ]
    assert disagreements(forecast, None) == []


# --- the stage and the CLI on tiny bundles -------------------------------------------------


def fake_bundle(root: Path, variant: str, *ops: str) -> Path:
    """Bundle.load's layout around two small graphs (not runnable as Whisper)."""
    root.mkdir(parents=True)
    for name in ("encoder", "decoder"):
        save(root / f"{name}.onnx", chain(*ops))
    (root / "bundle.json").write_text(json.dumps(bundle_record(variant, DIMS, SPEC)))
    (root / "tokenizer.json").write_text("{}")
    np.save(root / "mel_filters.npy", np.zeros((201, 80)))
    return root


def test_forecast_counts_dispatches_and_work_per_window(tmp_path):
    bundle = fake_bundle(tmp_path / "b", "fp32", "Hardmax", "Add")
    forecast = forecast_bundle(bundle, "fp32", "stx", tokens_per_window=10)
    assert forecast.dispatches_per_window == 2 + 10 * 2 and not forecast.clean
    assert forecast.window.macs == 16 + 10 * 16 and forecast.flow == Flow.VAIML
    assert forecast.table.dispatches_per_window == 2 + 10 * 2


def test_cli_exit_codes_gate_on_the_forecast(tmp_path, capsys):
    clean = fake_bundle(tmp_path / "clean", "fp32", "Add", "Softmax")
    split = fake_bundle(tmp_path / "split", "fp32", "Hardmax", "Add")
    out = tmp_path / "compiled"

    assert main(["compile", *PARAMS, "--bundle", str(clean), "--out", str(out)]) == 0
    streams = capsys.readouterr()
    assert "VitisAIExecutionProvider not available" in streams.err
    assert "wrote the forecast only" in streams.err and "(clean)" in streams.out
    assert json.loads((out / COMPILE_FILE).read_text())["forecast"]["clean"] is True

    assert main(["compile", *PARAMS, "--bundle", str(split), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "would split" in err and "Hardmax x1 [unverified" in err
    assert json.loads((out / COMPILE_FILE).read_text())["forecast"]["clean"] is True  # kept

    args = ["compile", *PARAMS, "--bundle", str(split), "--out", str(out), "--allow-split"]
    assert main(args) == 0
    assert json.loads((out / COMPILE_FILE).read_text())["forecast"]["clean"] is False

    assert main(["compile", *PARAMS, "--bundle", str(tmp_path / "nope"), "--out", str(out)]) == 2
    odd = fake_bundle(tmp_path / "odd", "int4", "Add")
    assert main(["compile", *PARAMS, "--bundle", str(odd), "--out", str(out)]) == 2
    assert "bundle.json: variant: Input should be 'fp32'" in capsys.readouterr().err


def test_compiled_dir_holds_the_contract(tmp_path):
    bundle = fake_bundle(tmp_path / "bundles" / "a16w8", "a16w8", "Add")
    out = tmp_path / "compiled" / "a16w8"
    record = compile_bundle(CompileParams(target="phx"), bundle, out, allow_split=True)
    assert record.bundle == "../../bundles/a16w8" and record.ep_available is False
    assert record.target == "phx" and record.report is None and record.seed_dispatches == 2679
    assert record.forecast.flow == Flow.X2_INT and record.amd_demo_form is None
    options = json.loads((out / "provider_options.json").read_text())
    assert options["encoder"]["target"] == "X1" and options["decoder"]["cache_key"].endswith(
        "decoder"
    )
    assert json.loads((out / "vaip_config_encoder.json").read_text())["target"] == "X1"


def test_with_the_ep_the_report_is_parsed_into_the_record(tmp_path, monkeypatch):
    """The EP path's wiring, with the session creation standing in for the EP."""

    def fake_compile(model, options, context_model, session_options):
        report = Path(options["cache_dir"]) / options["cache_key"] / VITISAI_REPORT_FILE
        report.parent.mkdir(parents=True)
        report.write_text(json.dumps(AMD_REPORT))
        return report

    monkeypatch.setattr(vitisai, "available_providers", lambda: [VITISAI_PROVIDER, "CPU"])
    monkeypatch.setattr(vitisai, "compile_graph", fake_compile)
    bundle = fake_bundle(tmp_path / "b", "xint8", "Add")
    record = compile_bundle(CompileParams(), bundle, tmp_path / "c", allow_split=True)
    assert record.ep_available is True and record.report is not None
    encoder = record.report["encoder"]
    assert encoder is not None and encoder.coverage == pytest.approx(398 / 400)
    assert (tmp_path / "c" / "cache" / "whisper-xint8-decoder" / VITISAI_REPORT_FILE).is_file()
    assert any(line.startswith("encoder: EP placed 398") for line in record.disagreements)


# --- the runtime hook ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def runnable_bundle(tmp_path_factory) -> Path:
    """A tiny random Whisper exported into a bundle the runtime can open."""
    return write_tiny_bundle(tmp_path_factory.mktemp("bundles") / "a16w8")


def test_compiled_dir_without_the_ep_runs_on_cpu_and_says_so(runnable_bundle, tmp_path, capsys):
    out = tmp_path / "compiled" / "a16w8"
    compile_bundle(CompileParams(), runnable_bundle, out, allow_split=True)
    transcriber = Transcriber.from_artifact(out)
    execution = transcriber.execution
    assert (execution.provider, execution.compiled) == ("CPUExecutionProvider", True)
    assert execution.fallback is not None
    assert execution.fallback.startswith("VitisAIExecutionProvider not available (onnxruntime ")
    assert execution.fallback.endswith("; running on CPUExecutionProvider")
    assert transcriber.bundle.root == runnable_bundle.resolve()

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    capsys.readouterr()
    assert main(["transcribe", "--artifact", str(out), str(wav)]) == 0
    err = capsys.readouterr().err
    (line,) = err.splitlines()
    assert line.startswith("whisper-npu transcribe: VitisAIExecutionProvider not available (")
    assert line.endswith("running on CPUExecutionProvider")


def test_bundle_and_release_dirs_open_too(runnable_bundle, tmp_path):
    plain = Transcriber.from_artifact(runnable_bundle)
    assert plain.execution == Execution.cpu(Device.AUTO, compiled=False)

    release = tmp_path / "release"
    release.mkdir()
    for path in runnable_bundle.iterdir():
        (release / path.name).write_bytes(path.read_bytes())
    compile_bundle(CompileParams(), runnable_bundle, release / "npu", allow_split=True)
    record = json.loads((release / "npu" / COMPILE_FILE).read_text())
    (release / "npu" / COMPILE_FILE).write_text(json.dumps({**record, "bundle": ".."}))
    opened = Transcriber.from_artifact(release)
    assert opened.bundle.root == release.resolve() and opened.execution.compiled is True


def test_a_compile_of_another_bundle_is_refused(runnable_bundle, tmp_path):
    out = tmp_path / "compiled"
    compile_bundle(CompileParams(), runnable_bundle, out, allow_split=True)
    record = json.loads((out / COMPILE_FILE).read_text())
    (out / COMPILE_FILE).write_text(json.dumps({**record, "bundle_sha256": "0" * 64}))
    with pytest.raises(UserError, match="compile that bundle again"):
        Transcriber.from_artifact(out)


# --- the real tiny.en ----------------------------------------------------------------------


@pytest.mark.integration
def test_real_fp32_bundle_forecast(fp32_bundle, tmp_path):
    """Our real tiny.en fp32 bundle under vaiml: the encoder is one subgraph, 100% NPU; the
    decoder's only CPU nodes are integer or bool ones (none once the decoder is integer-free)."""
    report = compile_bundle(CompileParams(), fp32_bundle, tmp_path / "fp32", allow_split=True)
    forecast = report.forecast
    assert forecast.flow == Flow.VAIML and report.variant == "fp32"
    assert (forecast.encoder.npu_subgraphs, forecast.encoder.coverage) == (1, 1.0)
    for name in ("encoder", "decoder"):
        graph = forecast.graph(name)
        assert graph.unverified == [] and graph.non_static == [] and graph.optimized
        assert {row.reason for row in graph.cpu_ops} <= {Reason.NOT_FLOAT.value}
    assert forecast.dispatches_per_window == (
        forecast.encoder.npu_subgraphs + 120 * forecast.decoder.npu_subgraphs
    )
    assert forecast.window.macs > 120 * forecast.decoder.work.macs
