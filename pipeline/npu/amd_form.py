"""AMD's documented Whisper form, built from our model and forecast beside our bundle.

AMD's Whisper example (amd/RyzenAI-SW Transformer-examples/ASR/Whisper-AI @0b65628) exports
with `optimum-cli export onnx --opset 17`, fixes shapes with onnxruntime's
`make_dynamic_shape_fixed` from its params.json (batch 1, encoder 1500, decoder 180) and
compiles through VAIML. AMD reports for whisper-base: encoder 225 operators, 1 subgraph, all
VAIML; decoder 341 VAIML + 24 CPU, 2 subgraphs. The decoder has no KV cache: each token re-runs
all 180 positions and re-projects the cross-attention K/V. Building that form of the configured
model and forecasting it with the same rules as our bundle is the forecast's calibration.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pipeline.npu.forecast import LoadedGraph, forecast_pair
from whisper_npu.compiled import AMD_WHISPER_BASE, AmdFormForecast
from whisper_npu.errors import UserError
from whisper_npu.variants import BF16_COLUMN, Flow

# params.json of AMD's example, applied as `make_dynamic_shape_fixed` applies it. optimum names
# the decoder's encoder axis `encoder_sequence_length` (the encoder's is `… / 2`); AMD's demo
# feeds it the encoder's 1500 frames, so it is fixed to that too.
AMD_STATIC_DIMS = {
    "batch_size": 1,
    "encoder_sequence_length / 2": 1500,
    "encoder_sequence_length": 1500,
    "decoder_sequence_length": 180,
}
AMD_GRAPHS = {"encoder": "encoder_model.onnx", "decoder": "decoder_model.onnx"}


def export_amd_form(model_dir: Path, out_dir: Path) -> dict[str, Path]:
    """optimum's opset-17 export (what `optimum-cli export onnx --opset 17` runs), shapes fixed
    as AMD's params.json fixes them; returns the two static graphs."""
    if not (Path(model_dir) / "model.safetensors").is_file():  # else optimum takes a hub id
        raise UserError(f"{model_dir}: no model here (run `whisper-npu model` first)")
    try:
        from optimum.exporters.onnx import main_export
    except ImportError:
        raise UserError("AMD's demo form needs optimum-onnx (pip install -e '.[peers]')") from None
    import onnx
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_dim_param_fixed

    exported = out_dir / "optimum"
    main_export(
        str(model_dir),
        output=exported,
        task="automatic-speech-recognition",
        opset=17,
        no_post_process=True,
        do_validation=False,
        local_files_only=True,
    )
    graphs = {}
    for name, file in AMD_GRAPHS.items():
        model = onnx.load(str(exported / file))
        for dim, value in AMD_STATIC_DIMS.items():
            make_dim_param_fixed(model.graph, dim, value)
        fix_output_shapes(model)
        graphs[name] = out_dir / file
        onnx.save(model, str(graphs[name]), save_as_external_data=True, location=f"{file}.data")
    shutil.rmtree(exported)
    return graphs


def forecast_amd_form(
    model_dir: Path, source: str, scratch: Path, tokens_per_window: int
) -> AmdFormForecast:
    """Build AMD's form of the model in `scratch` and forecast it as our bundle is forecast."""
    graphs = export_amd_form(Path(model_dir), Path(scratch))
    loaded = {name: LoadedGraph.load(path) for name, path in graphs.items()}
    return AmdFormForecast(
        model=source,
        static_dims=AMD_STATIC_DIMS,
        decoder_positions=AMD_STATIC_DIMS["decoder_sequence_length"],
        forecast=forecast_pair(loaded, Flow.VAIML, BF16_COLUMN, "stx", tokens_per_window),
        published=AMD_WHISPER_BASE,
    )
