"""Whisper's NPU I/O contract: tensor names, static shapes and dtypes, in one place.

Export writes graphs to this contract, the runtime binds buffers from it, and calibration and
the compile forecast read it. Every dimension is a number: the NPU compiles fixed shapes only.
Every graph input and output is float32, and no integer or bool tensor is computed inside
either graph: AMD's compiler places such tensors, and the nodes that make or use them, on the
CPU, and each CPU island splits a graph into more NPU subgraphs, i.e. more host→NPU dispatches
per call. Integers remain only as constants the compiler reads as data (Reshape shapes, Slice
bounds, Unsqueeze axes).

Encoder (one call per 30 s window):
    in:  input_features [1, n_mels, 3000]
    out: cross_k, cross_v [layers, 1, heads, 1500, head_dim]
Decoder (one call per token; the host owns the embeddings and the self-attention cache):
    in:  embedded_token [1, 1, d_model] = token_embedding[token] + position_embedding[position],
         self_k_cache, self_v_cache [layers, 1, heads, max_decode_len, head_dim],
         cache_mask [1, max_decode_len] (0 where a cache slot is filled, MASK_OFF elsewhere),
         cross_k, cross_v
    out: logits [1, vocab], new_k, new_v [layers, 1, heads, 1, head_dim],
         alignment [alignment_heads, 1500] (bundles exported with it: alignment_heads > 0)

`alignment` is the cross-attention scores (q·k / sqrt(head_dim), before the softmax) of the
checkpoint's alignment heads (generation_config.alignment_heads) for the token just fed: what
openai-whisper's and faster-whisper's word timestamps are computed from (whisper_npu.alignment).
It is a few Slices of a MatMul the graph computes anyway, so the graph stays one NPU subgraph;
a bundle without it transcribes as before and refuses word timestamps.

The embedding lookups run on the host, from the bundle's token_embedding [vocab, d_model] and
position_embedding [max_decode_len, d_model] float32 tables (memory-mapped), rather than as a
Gather on int64 ids in the graph or as a one-hot MatMul. For tiny.en (vocab 51864, d_model 384,
4 layers, 448 cache slots) each call then sends the NPU 384 floats (1536 B) instead of a
51864-float one-hot (207,456 B), and the NPU does no vocab x d_model = 19.9 M MAC lookup: the
decoder's ~34.2 M MACs per token (14.2 M in its layers, 19.9 M in the logits projection) would
grow to ~54.1 M (+58%) with a one-hot MatMul. The host's cost is the table pages a transcript
touches: one 1536 B row per token, not the 79.7 MB token table.

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
EMBEDDED_TOKEN = "embedded_token"
SELF_K, SELF_V, CACHE_MASK = "self_k_cache", "self_v_cache", "cache_mask"
LOGITS, NEW_K, NEW_V, ALIGNMENT = "logits", "new_k", "new_v", "alignment"
DECODER_INPUTS = (EMBEDDED_TOKEN, SELF_K, SELF_V, CACHE_MASK, CROSS_K, CROSS_V)
DECODER_OUTPUTS = (LOGITS, NEW_K, NEW_V)  # ALIGNMENT follows where alignment_heads > 0


@dataclass(frozen=True)
class WhisperDims:
    n_mels: int
    n_audio_ctx: int
    d_model: int
    decoder_layers: int
    decoder_heads: int
    vocab_size: int
    max_decode_len: int
    alignment_heads: int = 0  # rows of the decoder's ALIGNMENT output; 0: no such output

    @property
    def head_dim(self) -> int:
        return self.d_model // self.decoder_heads

    @classmethod
    def from_config(cls, config: Any, max_decode_len: int, alignment_heads: int = 0) -> WhisperDims:
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
            alignment_heads=alignment_heads,
        )

    def cross_shape(self) -> list[int]:
        return [self.decoder_layers, 1, self.decoder_heads, self.n_audio_ctx, self.head_dim]

    def cache_shape(self) -> list[int]:
        return [self.decoder_layers, 1, self.decoder_heads, self.max_decode_len, self.head_dim]

    def slice_shape(self) -> list[int]:
        return [self.decoder_layers, 1, self.decoder_heads, 1, self.head_dim]

    def embedded_shape(self) -> list[int]:
        return [1, 1, self.d_model]

    def token_embedding_shape(self) -> list[int]:
        """The host's token table: one row per vocabulary id."""
        return [self.vocab_size, self.d_model]

    def position_embedding_shape(self) -> list[int]:
        """The host's position table: one row per cache slot."""
        return [self.max_decode_len, self.d_model]

    def alignment_shape(self) -> list[int]:
        return [self.alignment_heads, self.n_audio_ctx]

    def decoder_outputs(self) -> tuple[str, ...]:
        return (*DECODER_OUTPUTS, ALIGNMENT) if self.alignment_heads else DECODER_OUTPUTS

    def encoder_io(self) -> dict[str, dict[str, tuple[list[int], str]]]:
        return {
            "inputs": {ENCODER_INPUT: ([1, self.n_mels, N_FRAMES], "float32")},
            "outputs": {
                CROSS_K: (self.cross_shape(), "float32"),
                CROSS_V: (self.cross_shape(), "float32"),
            },
        }

    def decoder_io(self) -> dict[str, dict[str, tuple[list[int], str]]]:
        alignment = {ALIGNMENT: (self.alignment_shape(), "float32")} if self.alignment_heads else {}
        return {
            "inputs": {
                EMBEDDED_TOKEN: (self.embedded_shape(), "float32"),
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
                **alignment,
            },
        }

    def to_json(self) -> dict[str, int]:
        return asdict(self)
