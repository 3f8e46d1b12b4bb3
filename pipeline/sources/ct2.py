"""Read a CTranslate2 Whisper model (faster-whisper format) and rebuild it as transformers.

The CT2 `model.bin` layout is the one `ctranslate2.specs.model_spec._serialize` writes:
version, spec name, revision, then (name, rank, dims, dtype, bytes) per variable, then aliases.
The Whisper spec fuses self-attention q/k/v into one linear and cross-attention k/v into
another, has no k bias (HF's k_proj has none either), and aliases the output projection to the
token embedding.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tokenizers import AddedToken
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizerFast,
)

from whisper_npu.errors import UserError

SUPPORTED_BINARY_VERSIONS = range(1, 7)
# Order of ctranslate2's DataType enum (include/ctranslate2/types.h).
CT2_DTYPES: tuple[str, ...] = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
TIMESTAMP_STEP_S = 0.02


@dataclass(frozen=True)
class Ct2Model:
    spec_name: str
    variables: dict[str, np.ndarray]


class _Reader:
    def __init__(self, blob: bytes, path: Path) -> None:
        self.blob, self.path, self.offset = blob, path, 0

    def take(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        if self.offset + size > len(self.blob):
            raise UserError(f"{self.path}: corrupt CTranslate2 model.bin (truncated)")
        (value,) = struct.unpack_from(fmt, self.blob, self.offset)
        self.offset += size
        return int(value)

    def text(self) -> str:
        length = self.take("H")
        raw = self.blob[self.offset : self.offset + length - 1]
        self.offset += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UserError(f"{self.path}: corrupt CTranslate2 model.bin (bad name)") from None

    def array(self, dims: list[int], dtype_id: int, nbytes: int) -> np.ndarray:
        if dtype_id >= len(CT2_DTYPES) or self.offset + nbytes > len(self.blob):
            raise UserError(f"{self.path}: corrupt CTranslate2 model.bin (bad variable)")
        raw = self.blob[self.offset : self.offset + nbytes]
        self.offset += nbytes
        dtype = CT2_DTYPES[dtype_id]
        if dtype == "bfloat16":
            widened = np.frombuffer(raw, dtype="<u2").astype("<u4") << 16
            return widened.view("<f4").reshape(dims)
        values = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        if values.size != int(np.prod(dims)):
            raise UserError(f"{self.path}: corrupt CTranslate2 model.bin (size mismatch)")
        return values.reshape(dims)


def read_ct2_model(model_bin: Path) -> Ct2Model:
    """Parse every variable of a CT2 model.bin into numpy, resolving aliases."""
    reader = _Reader(Path(model_bin).read_bytes(), Path(model_bin))
    version = reader.take("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise UserError(f"{model_bin}: not a CTranslate2 model.bin (binary version {version})")
    spec_name = reader.text()
    reader.take("I")  # spec revision: the Whisper layout has not changed across revisions
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.take("I")):
        name = reader.text()
        dims = [reader.take("I") for _ in range(reader.take("B"))]
        dtype_id = reader.take("B")
        variables[name] = reader.array(dims, dtype_id, reader.take("I"))
    for _ in range(reader.take("I")):
        alias, target = reader.text(), reader.text()
        variables[alias] = variables[target]
    if reader.offset != len(reader.blob):
        raise UserError(f"{model_bin}: corrupt CTranslate2 model.bin (trailing bytes)")
    return Ct2Model(spec_name, variables)


def _count_layers(variables: dict[str, np.ndarray], stack: str) -> int:
    pattern = re.compile(rf"^{stack}/layer_(\d+)/")
    return 1 + max(int(m.group(1)) for name in variables if (m := pattern.match(name)))


def _split_rows(tensor: np.ndarray, parts: int) -> list[np.ndarray]:
    return list(np.split(tensor, parts, axis=0))


def whisper_state_dict(variables: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Map CT2 Whisper variables to the state dict of `WhisperForConditionalGeneration`."""
    out: dict[str, np.ndarray] = {}

    def linear(hf: str, ct2: str, bias: bool = True) -> None:
        out[f"{hf}.weight"] = variables[f"{ct2}/weight"]
        if bias:
            out[f"{hf}.bias"] = variables[f"{ct2}/bias"]

    def norm(hf: str, ct2: str) -> None:
        out[f"{hf}.weight"] = variables[f"{ct2}/gamma"]
        out[f"{hf}.bias"] = variables[f"{ct2}/beta"]

    def fused(hf_names: list[str], ct2: str) -> None:
        weights = _split_rows(variables[f"{ct2}/weight"], len(hf_names))
        biases = _split_rows(variables[f"{ct2}/bias"], len(hf_names))
        for hf, weight, bias in zip(hf_names, weights, biases, strict=True):
            out[f"{hf}.weight"] = weight
            if not hf.endswith("k_proj"):  # Whisper's key projection has no bias
                out[f"{hf}.bias"] = bias

    for stack in ("encoder", "decoder"):
        out[f"model.{stack}.embed_positions.weight"] = variables[
            f"{stack}/position_encodings/encodings"
        ]
        norm(f"model.{stack}.layer_norm", f"{stack}/layer_norm")
        for i in range(_count_layers(variables, stack)):
            hf, ct2 = f"model.{stack}.layers.{i}", f"{stack}/layer_{i}"
            attn = f"{hf}.self_attn"
            fused(
                [f"{attn}.q_proj", f"{attn}.k_proj", f"{attn}.v_proj"],
                f"{ct2}/self_attention/linear_0",
            )
            linear(f"{attn}.out_proj", f"{ct2}/self_attention/linear_1")
            norm(f"{hf}.self_attn_layer_norm", f"{ct2}/self_attention/layer_norm")
            linear(f"{hf}.fc1", f"{ct2}/ffn/linear_0")
            linear(f"{hf}.fc2", f"{ct2}/ffn/linear_1")
            norm(f"{hf}.final_layer_norm", f"{ct2}/ffn/layer_norm")
            if stack == "decoder":
                cross = f"{hf}.encoder_attn"
                linear(f"{cross}.q_proj", f"{ct2}/attention/linear_0")
                fused([f"{cross}.k_proj", f"{cross}.v_proj"], f"{ct2}/attention/linear_1")
                linear(f"{cross}.out_proj", f"{ct2}/attention/linear_2")
                norm(f"{hf}.encoder_attn_layer_norm", f"{ct2}/attention/layer_norm")
    for conv in ("conv1", "conv2"):
        linear(f"model.encoder.{conv}", f"encoder/{conv}")
    out["model.decoder.embed_tokens.weight"] = variables["decoder/embeddings/weight"]
    out["proj_out.weight"] = variables["decoder/projection/weight"]
    return {
        name: torch.from_numpy(np.array(value, dtype=np.float32)) for name, value in out.items()
    }


def _tokenizer(ct2_dir: Path, vocab_size: int) -> WhisperTokenizerFast:
    tokenizer_file = ct2_dir / "tokenizer.json"
    if not tokenizer_file.is_file():
        raise UserError(f"{ct2_dir}: CTranslate2 Whisper directory has no tokenizer.json")
    tokenizer = WhisperTokenizerFast(
        tokenizer_file=str(tokenizer_file),
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    # faster-whisper's tokenizer.json stops before the timestamp tokens; the model has them.
    missing = vocab_size - len(tokenizer)
    tokenizer.add_tokens(
        [
            AddedToken(
                f"<|{i * TIMESTAMP_STEP_S:.2f}|>", lstrip=False, rstrip=False, normalized=False
            )
            for i in range(missing)
        ]
    )
    if len(tokenizer) != vocab_size:
        raise UserError(f"{ct2_dir}: tokenizer has {len(tokenizer)} tokens, model {vocab_size}")
    return tokenizer


def _generation_config(
    config: WhisperConfig, tokenizer: WhisperTokenizerFast, ct2_config: dict[str, Any]
) -> GenerationConfig:
    token_id = tokenizer.convert_tokens_to_ids
    multilingual = config.vocab_size >= 51865  # the .en models have one language token less
    extra: dict[str, object] = {}
    if multilingual:
        lang_ids = [int(i) for i in ct2_config.get("lang_ids", [])]
        extra["lang_to_id"] = {tokenizer.convert_ids_to_tokens(i): i for i in lang_ids}
        extra["task_to_id"] = {
            "transcribe": token_id("<|transcribe|>"),
            "translate": token_id("<|translate|>"),
        }
    return GenerationConfig(
        alignment_heads=ct2_config.get("alignment_heads"),
        begin_suppress_tokens=ct2_config.get("suppress_ids_begin"),
        suppress_tokens=ct2_config.get("suppress_ids"),
        bos_token_id=config.bos_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        no_timestamps_token_id=token_id("<|notimestamps|>"),
        prev_sot_token_id=token_id("<|startofprev|>"),
        is_multilingual=multilingual,
        max_initial_timestamp_index=50,
        max_length=config.max_target_positions,
        return_timestamps=False,
        **extra,
    )


def convert_ct2_whisper(ct2_dir: Path, out_dir: Path) -> None:
    """Write `ct2_dir` as a transformers `save_pretrained` directory (model + processor)."""
    ct2_dir = Path(ct2_dir)
    model = read_ct2_model(ct2_dir / "model.bin")
    if model.spec_name != "WhisperSpec":
        raise UserError(f"{ct2_dir}: CTranslate2 model is a {model.spec_name}, not Whisper")
    variables = model.variables
    ct2_config = json.loads((ct2_dir / "config.json").read_text(encoding="utf-8"))
    d_model, n_mels, _ = variables["encoder/conv1/weight"].shape
    vocab_size = variables["decoder/embeddings/weight"].shape[0]
    tokenizer = _tokenizer(ct2_dir, vocab_size)
    eot, sot = tokenizer.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>"])
    config = WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=n_mels,
        d_model=d_model,
        encoder_layers=_count_layers(variables, "encoder"),
        decoder_layers=_count_layers(variables, "decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=variables["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=variables["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=variables["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=variables["decoder/position_encodings/encodings"].shape[0],
        bos_token_id=sot,
        decoder_start_token_id=sot,
        eos_token_id=eot,
        pad_token_id=eot,
        tie_word_embeddings=True,
    )
    whisper = WhisperForConditionalGeneration(config)
    whisper.load_state_dict(whisper_state_dict(variables), strict=True)
    whisper.generation_config = _generation_config(config, tokenizer, ct2_config)
    whisper.eval()
    whisper.save_pretrained(out_dir, safe_serialization=True)
    processor = WhisperProcessor(WhisperFeatureExtractor(feature_size=n_mels), tokenizer)
    processor.save_pretrained(out_dir)
