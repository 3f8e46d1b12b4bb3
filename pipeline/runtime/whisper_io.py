"""Whisper's NPU I/O contract: tensor names, static shapes and dtypes, in one place.

Export writes graphs to this contract, the runtime binds buffers from it, and calibration and
the compile forecast read it. Every dimension is a number: the NPU compiles fixed shapes only.

Encoder (one call per 30 s window):
    in:  input_features [1, n_mels, 3000]
    out: cross_k, cross_v [layers, 1, heads, 1500, head_dim]
Decoder (one call per token; the host owns the self-attention cache):
    in:  input_ids [1, 1] int64, position [1] int64,
         self_k_cache, self_v_cache [layers, 1, heads, max_decode_len, head_dim],
         cache_mask [1, max_decode_len] (0 where a cache slot is filled, MASK_OFF elsewhere),
         cross_k, cross_v
    out: logits [1, vocab], new_k, new_v [layers, 1, heads, 1, head_dim]

The decoder returns only the new token's K/V slice, not the updated cache: the host writes
layers * heads * head_dim values per step into a preallocated cache, where returning the cache
would copy layers * heads * max_decode_len * head_dim values out of every call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30  # one window; longer clips are long-form
MAX_DECODE_POSITIONS = 448  # Whisper's decoder positions (max_target_positions)
N_FRAMES = CHUNK_SECONDS * SAMPLE_RATE // HOP_LENGTH  # 3000 mel frames per window
FRAMES_PER_TIMESTAMP = 2  # one timestamp token (0.02 s) spans two mel frames
OPSET = 17
GRAPHS = ("encoder", "decoder")  # the bundle's two graphs, files <name>.onnx
MASK_OFF = -10_000.0  # additive mask: far below any attention score, finite for quantizers

ENCODER_INPUT = "input_features"
CROSS_K, CROSS_V = "cross_k", "cross_v"
INPUT_IDS, POSITION = "input_ids", "position"
SELF_K, SELF_V, CACHE_MASK = "self_k_cache", "self_v_cache", "cache_mask"
LOGITS, NEW_K, NEW_V = "logits", "new_k", "new_v"
DECODER_INPUTS = (INPUT_IDS, POSITION, SELF_K, SELF_V, CACHE_MASK, CROSS_K, CROSS_V)
DECODER_OUTPUTS = (LOGITS, NEW_K, NEW_V)


@dataclass(frozen=True)
class WhisperDims:
    n_mels: int
    n_audio_ctx: int
    d_model: int
    decoder_layers: int
    decoder_heads: int
    vocab_size: int
    max_decode_len: int

    @property
    def head_dim(self) -> int:
        return self.d_model // self.decoder_heads

    @classmethod
    def from_config(cls, config: Any, max_decode_len: int) -> WhisperDims:
        """From a transformers WhisperConfig; the cache can never exceed the position table."""
        if not 4 <= max_decode_len <= config.max_target_positions:
            raise ValueError(
                f"max_decode_len must be 4..{config.max_target_positions}, got {max_decode_len}"
            )
        return cls(
            n_mels=config.num_mel_bins,
            n_audio_ctx=config.max_source_positions,
            d_model=config.d_model,
            decoder_layers=config.decoder_layers,
            decoder_heads=config.decoder_attention_heads,
            vocab_size=config.vocab_size,
            max_decode_len=max_decode_len,
        )

    def cross_shape(self) -> list[int]:
        return [self.decoder_layers, 1, self.decoder_heads, self.n_audio_ctx, self.head_dim]

    def cache_shape(self) -> list[int]:
        return [self.decoder_layers, 1, self.decoder_heads, self.max_decode_len, self.head_dim]

    def slice_shape(self) -> list[int]:
        return [self.decoder_layers, 1, self.decoder_heads, 1, self.head_dim]

    def encoder_io(self) -> dict[str, dict[str, tuple[list[int], str]]]:
        return {
            "inputs": {ENCODER_INPUT: ([1, self.n_mels, N_FRAMES], "float32")},
            "outputs": {
                CROSS_K: (self.cross_shape(), "float32"),
                CROSS_V: (self.cross_shape(), "float32"),
            },
        }

    def decoder_io(self) -> dict[str, dict[str, tuple[list[int], str]]]:
        return {
            "inputs": {
                INPUT_IDS: ([1, 1], "int64"),
                POSITION: ([1], "int64"),
                SELF_K: (self.cache_shape(), "float32"),
                SELF_V: (self.cache_shape(), "float32"),
                CACHE_MASK: ([1, self.max_decode_len], "float32"),
                CROSS_K: (self.cross_shape(), "float32"),
                CROSS_V: (self.cross_shape(), "float32"),
            },
            "outputs": {
                LOGITS: ([1, self.vocab_size], "float32"),
                NEW_K: (self.slice_shape(), "float32"),
                NEW_V: (self.slice_shape(), "float32"),
            },
        }

    def to_json(self) -> dict[str, int]:
        return asdict(self)
