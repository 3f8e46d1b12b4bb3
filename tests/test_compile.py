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

from pipeline.cli import main
from pipeline.config import CompileParams
from pipeline.errors import UserError
from pipeline.layout import COMPILE_FILE, VITISAI_REPORT_FILE
from pipeline.npu import vitisai
from pipeline.npu.compile import compile_bundle
from pipeline.npu.forecast import forecast_bundle, forecast_graph
from pipeline.providers import VITISAI_PROVIDER
from pipeline.runtime.transcriber import Transcriber
from tests.conftest import REPO, TINY_DIMS, TINY_SPEC, bundle_record, write_tiny_bundle

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
    stx = vitisai.provider_options("a16w8", "stx", "k")
    assert stx == {
        "cache_dir": "cache",
        "cache_key": "k",
        "enable_cache_file_io_in_mem": "0",
        "target": "X2",
    }
    phx = vitisai.provider_options("xint8", "phx", "k")
    assert phx["target"] == "X1" and phx["xclbin"].endswith("xclbins/phoenix/4x4.xclbin")
    assert "config_file" not in stx and "xclbin" not in stx


def test_float_variants_use_the_bf16_flow_on_xdna2_only():
    assert vitisai.provider_options("fp32", "krk", "k")["config_file"] == "vaip_config.json"
    assert vitisai.provider_options("bf16", "hpt", "k") == {}
    assert vitisai.npu_column("fp32", "stx") == "BF16" and vitisai.npu_column("fp32", "phx") is None
    assert "STX/KRK only" in (vitisai.no_npu_reason("bf16", "phx") or "")


def test_vaip_config_per_variant():
    fp32 = vitisai.vaip_config("fp32", "stx")
    vaiml = fp32["passes"][1]["vaiml_config"]
    assert vaiml["optimize_level"] in (1, 2, 3) and vaiml["enable_f32_to_bf16_conversion"] is True
    assert fp32["target"] == "VAIML" and fp32["targets"][0]["pass"] == ["init", "vaiml_partition"]
    bf16 = vitisai.vaip_config("bf16", "stx")["passes"][1]["vaiml_config"]
    assert "enable_f32_to_bf16_conversion" not in bf16
    assert vitisai.vaip_config("a8w8", "hpt")["target"] == "X1"


def test_resolve_options_makes_paths_concrete(tmp_path, monkeypatch):
    monkeypatch.setenv("RYZEN_AI_INSTALLATION_PATH", "/opt/ryzen")
    fp32 = vitisai.resolve_options(vitisai.provider_options("fp32", "stx", "k"), tmp_path)
    assert fp32["config_file"] == str(tmp_path.resolve() / "vaip_config.json")
    assert fp32["cache_dir"] == str(tmp_path.resolve() / "cache")
    phx = vitisai.resolve_options(vitisai.provider_options("a8w8", "phx", "k"), tmp_path)
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


def test_clean_graph_is_one_npu_subgraph(tmp_path):
    graph = forecast_graph(save(tmp_path / "g.onnx", chain("Add", "Softmax")), "A16W8")
    assert (graph.nodes, graph.npu_subgraphs, graph.cpu_islands) == (3, 1, 0)
    assert graph.coverage == 1.0 and graph.clean


def test_unsupported_op_in_the_middle_splits_the_npu_run(tmp_path):
    graph = forecast_graph(save(tmp_path / "g.onnx", chain("Erf", "Add")), "A16W8")
    assert (graph.npu_subgraphs, graph.cpu_islands) == (2, 1)
    assert graph.outside_table == [{"op_type": "Erf", "count": 1, "nodes": ["erf"]}]
    assert graph.coverage == pytest.approx(2 / 3) and not graph.clean


def test_a_path_through_the_cpu_splits_even_a_connected_run(tmp_path):
    """Add → LayerNorm (CPU) → MatMul → Add(residual): the two Adds are connected directly, but
    the second waits for the CPU, so the EP needs two NPU calls."""
    nodes = [
        helper.make_node("Add", ["x", "B"], ["r"], name="add"),
        helper.make_node("LayerNormalization", ["r", "B", "B"], ["n"], name="norm"),
        helper.make_node("MatMul", ["n", "W"], ["m"], name="matmul"),
        helper.make_node("Add", ["r", "m"], ["y"], name="residual"),
    ]
    graph = forecast_graph(save(tmp_path / "g.onnx", nodes), "A16W8")
    assert (graph.npu_subgraphs, graph.cpu_islands) == (2, 1)


def test_weight_dequantize_and_constants_join_their_consumer(tmp_path):
    """Add → Erf (CPU) → MatMul(·, DQ(w8)): the weight's DequantizeLinear has no producer, and
    runs with the MatMul it feeds, not in a call of its own; Constant nodes are data."""
    nodes = [
        helper.make_node("Constant", [], ["zp"], value=numpy_helper.from_array(np.int8(0))),
        helper.make_node("Constant", [], ["scale"], value=numpy_helper.from_array(np.float32(1))),
        helper.make_node("Add", ["x", "B"], ["a"], name="add"),
        helper.make_node("Erf", ["a"], ["e"], name="erf"),
        helper.make_node("DequantizeLinear", ["w8", "scale", "zp"], ["w"], name="dq"),
        helper.make_node("MatMul", ["e", "w"], ["y"], name="matmul"),
    ]
    path = save(tmp_path / "g.onnx", nodes)
    model = onnx.load(str(path))
    model.graph.initializer.append(numpy_helper.from_array(np.ones((4, 4), np.int8), "w8"))
    onnx.save(model, str(path))
    graph = forecast_graph(path, "A16W8")
    assert graph.op_counts == {"Add": 1, "DequantizeLinear": 1, "Erf": 1, "MatMul": 1}
    assert (graph.npu_subgraphs, graph.cpu_islands) == (2, 1)


def test_16_bit_qdq_of_another_domain_is_placed_by_name_and_shape_inferred(tmp_path):
    zero = numpy_helper.from_array(np.zeros((), np.int16), "zero")
    scale = numpy_helper.from_array(np.ones((), np.float32), "scale")
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "scale", "zero"], ["q"], domain="com.microsoft"),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["d"], domain="com.microsoft"),
        helper.make_node("MatMul", ["d", "W"], ["y"], name="matmul"),
    ]
    path = save(tmp_path / "g.onnx", nodes)
    model = onnx.load(str(path))
    model.graph.initializer.extend([zero, scale])
    onnx.save(model, str(path))
    graph = forecast_graph(path, "A16W8")
    assert graph.non_static == []  # ONNX alone cannot infer through com.microsoft Q/DQ
    assert graph.op_counts["com.microsoft.QuantizeLinear"] == 1
    assert (graph.npu_subgraphs, graph.cpu_islands, graph.coverage) == (1, 0, 1.0)


def test_symbolic_dim_is_flagged_and_not_clean(tmp_path):
    graph = forecast_graph(save(tmp_path / "g.onnx", chain("Add"), ["batch", 4]), "A16W8")
    assert "x" in graph.non_static and "y" in graph.non_static
    assert graph.npu_subgraphs == 1 and not graph.clean


def test_no_npu_path_places_everything_on_the_cpu(tmp_path):
    graph = forecast_graph(save(tmp_path / "g.onnx", chain("Add")), None)
    assert (graph.npu_nodes, graph.npu_subgraphs, graph.cpu_islands) == (0, 0, 1)


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


def test_forecast_counts_dispatches_per_window(tmp_path):
    bundle = fake_bundle(tmp_path / "b", "a8w8", "Erf", "Add")
    forecast = forecast_bundle(bundle, "a8w8", "stx", tokens_per_window=10)
    assert forecast["dispatches_per_window"] == 2 + 10 * 2 and not forecast["clean"]


def test_cli_exit_codes_gate_on_the_forecast(tmp_path, capsys):
    clean = fake_bundle(tmp_path / "clean", "a16w8", "Add", "Softmax")
    split = fake_bundle(tmp_path / "split", "a16w8", "Erf", "Add")
    out = tmp_path / "compiled"

    assert main(["compile", *PARAMS, "--bundle", str(clean), "--out", str(out)]) == 0
    streams = capsys.readouterr()
    assert "VitisAIExecutionProvider not available" in streams.err
    assert "wrote the forecast only" in streams.err and "(clean)" in streams.out
    assert json.loads((out / COMPILE_FILE).read_text())["forecast"]["clean"] is True

    assert main(["compile", *PARAMS, "--bundle", str(split), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "would split" in err and "Erf x1 (erf)" in err
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
    record = compile_bundle(CompileParams(target="phx"), bundle, out)
    assert record.bundle == "../../bundles/a16w8" and record.ep_available is False
    assert record.target == "phx" and record.report is None
    options = json.loads((out / "provider_options.json").read_text())
    assert options["encoder"]["target"] == "X1" and options["decoder"]["cache_key"].endswith(
        "decoder"
    )
    assert json.loads((out / "vaip_config.json").read_text())["target"] == "X1"


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
    record = compile_bundle(CompileParams(), bundle, tmp_path / "c")
    assert record.ep_available is True and record.report is not None
    encoder = record.report["encoder"]
    assert encoder is not None and encoder.coverage == pytest.approx(398 / 400)
    assert (tmp_path / "c" / "cache" / "whisper-xint8-decoder" / VITISAI_REPORT_FILE).is_file()


# --- the runtime hook ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def runnable_bundle(tmp_path_factory) -> Path:
    """A tiny random Whisper exported into a bundle the runtime can open."""
    return write_tiny_bundle(tmp_path_factory.mktemp("bundles") / "a16w8")


def test_compiled_dir_without_the_ep_runs_on_cpu_and_says_so(runnable_bundle, tmp_path, capsys):
    out = tmp_path / "compiled" / "a16w8"
    compile_bundle(CompileParams(), runnable_bundle, out, allow_split=True)
    transcriber = Transcriber.from_artifact(out)
    assert transcriber.execution == {
        "provider": "CPUExecutionProvider",
        "compiled": True,
        "fallback": f"VitisAIExecutionProvider not available; running {out} on "
        "CPUExecutionProvider",
    }
    assert transcriber.bundle.root == runnable_bundle.resolve()

    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(16000, np.float32), 16000)
    capsys.readouterr()
    assert main(["transcribe", "--artifact", str(out), str(wav)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("whisper-npu transcribe: VitisAIExecutionProvider not available;")


def test_bundle_and_release_dirs_open_too(runnable_bundle, tmp_path):
    plain = Transcriber.from_artifact(runnable_bundle)
    assert plain.execution == {
        "provider": "CPUExecutionProvider",
        "compiled": False,
        "fallback": None,
    }

    release = tmp_path / "release"
    release.mkdir()
    for path in runnable_bundle.iterdir():
        (release / path.name).write_bytes(path.read_bytes())
    compile_bundle(CompileParams(), runnable_bundle, release / "npu", allow_split=True)
    record = json.loads((release / "npu" / COMPILE_FILE).read_text())
    (release / "npu" / COMPILE_FILE).write_text(json.dumps({**record, "bundle": ".."}))
    opened = Transcriber.from_artifact(release)
    assert opened.bundle.root == release.resolve() and opened.execution["compiled"] is True


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
    report = compile_bundle(CompileParams(), fp32_bundle, tmp_path / "fp32", allow_split=True)
    record = report.to_json()
    forecast = record["forecast"]
    assert forecast["npu_dtype"] == "BF16" and record["variant"] == "fp32"
    for name in ("encoder", "decoder"):
        outside = {row["op_type"] for row in forecast[name]["outside_table"]}
        assert outside == {"LayerNormalization", "Softmax"}  # AMD's BF16 column lacks both
        assert 0.9 < forecast[name]["coverage"] < 1 and forecast[name]["non_static"] == []
    assert forecast["dispatches_per_window"] == (
        forecast["encoder"]["npu_subgraphs"] + 120 * forecast["decoder"]["npu_subgraphs"]
    )
