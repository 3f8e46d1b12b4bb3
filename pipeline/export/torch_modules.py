"""PyTorch modules that trace into Whisper's static NPU graphs (see whisper_npu.whisper_io).

They reuse the transformers model's own layers and weights; only the data flow changes:
the encoder also projects the cross-attention K/V once per window, and the decoder takes one
embedded token against a fixed-size self-attention cache that the host owns; the host also
looks the embeddings up (`embedding_tables`), so the decoder graph has no integer input.
Indexing uses Slice + Reshape rather than Gather/Split, which AMD's NPU table covers for fewer
dtypes. The decoder also returns its alignment heads' cross-attention scores (word timestamps).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import WhisperForConditionalGeneration

from whisper_npu.whisper_io import WhisperDims


def _scaled_copy(projection: nn.Linear, scale: float) -> nn.Linear:
    """A copy of a linear layer with its output multiplied by `scale` (folded into the weights)."""
    scaled = nn.Linear(
        projection.in_features, projection.out_features, bias=projection.bias is not None
    )
    with torch.no_grad():
        scaled.weight.copy_(projection.weight * scale)
        if projection.bias is not None:
            scaled.bias.copy_(projection.bias * scale)
    return scaled.requires_grad_(False)


AlignmentHeads = tuple[tuple[int, int], ...]  # (decoder layer, head) pairs


def alignment_heads(model: WhisperForConditionalGeneration) -> AlignmentHeads:
    """The checkpoint's word-timing heads (generation_config.alignment_heads), else every head
    of the decoder's second half, as openai-whisper and faster-whisper default."""
    listed = getattr(model.generation_config, "alignment_heads", None)
    if listed:
        return tuple((int(layer), int(head)) for layer, head in listed)
    config = model.config
    return tuple(
        (layer, head)
        for layer in range(config.decoder_layers // 2, config.decoder_layers)
        for head in range(config.decoder_attention_heads)
    )


def _layer(stacked: torch.Tensor, index: int) -> torch.Tensor:
    """[layers, 1, heads, n, head_dim] → [1, heads, n, head_dim] for one layer."""
    return stacked[index : index + 1].reshape(stacked.shape[1:])


class EncoderWithCrossKV(nn.Module):
    """log-mel [1, n_mels, 3000] → cross-attention K and V of every decoder layer."""

    def __init__(self, model: WhisperForConditionalGeneration, dims: WhisperDims) -> None:
        super().__init__()
        self.encoder = model.model.encoder
        self.cross_attention = nn.ModuleList(
            layer.encoder_attn for layer in model.model.decoder.layers
        )
        self.dims = dims

    def _heads(self, projected: torch.Tensor) -> torch.Tensor:
        d = self.dims
        return projected.reshape(1, d.n_audio_ctx, d.decoder_heads, d.head_dim).transpose(1, 2)

    def forward(self, input_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(input_features).last_hidden_state
        attentions: list[Any] = list(self.cross_attention)
        keys = [self._heads(attn.k_proj(hidden)) for attn in attentions]
        values = [self._heads(attn.v_proj(hidden)) for attn in attentions]
        return torch.stack(keys), torch.stack(values)


class DecoderStep(nn.Module):
    """One token through the decoder against a static cache; returns logits and the new K/V slice.

    Cached keys and the new key are scored separately and only the small score vectors are
    concatenated, so the graph never copies the whole cache. The 1/sqrt(head_dim) query scaling
    is folded into the query projections, and every product is a MatMul: fewer ops for the NPU,
    and none of the scalar Mul/ReduceSum patterns that quantizer graph passes mishandle.
    """

    def __init__(
        self,
        model: WhisperForConditionalGeneration,
        dims: WhisperDims,
        alignment: AlignmentHeads = (),
    ) -> None:
        super().__init__()
        self.decoder = model.model.decoder
        self.alignment = alignment
        # Transposed once here, so the graph holds the output projection as a plain MatMul
        # weight [d_model, vocab] rather than a Transpose of it.
        self.projection_t = nn.Parameter(
            model.proj_out.weight.detach().T.contiguous(), requires_grad=False
        )
        self.dims = dims
        scaling = dims.head_dim**-0.5
        self.self_query = nn.ModuleList(
            _scaled_copy(layer.self_attn.q_proj, scaling) for layer in self.decoder.layers
        )
        self.cross_query = nn.ModuleList(
            _scaled_copy(layer.encoder_attn.q_proj, scaling) for layer in self.decoder.layers
        )

    def _heads(self, projected: torch.Tensor) -> torch.Tensor:
        return projected.reshape(1, 1, self.dims.decoder_heads, self.dims.head_dim).transpose(1, 2)

    def _merge(self, attended: torch.Tensor) -> torch.Tensor:
        return attended.transpose(1, 2).reshape(1, 1, self.dims.d_model)

    def _self_attention(
        self,
        index: int,
        hidden: torch.Tensor,
        cache_k: torch.Tensor,
        cache_v: torch.Tensor,
        cache_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        attn = self.decoder.layers[index].self_attn
        query = self._heads(self.self_query[index](hidden))
        key, value = self._heads(attn.k_proj(hidden)), self._heads(attn.v_proj(hidden))
        cached_scores = query @ cache_k.transpose(-1, -2) + cache_mask
        own_score = query @ key.transpose(-1, -2)
        weights = torch.softmax(torch.cat([cached_scores, own_score], dim=-1), dim=-1)
        limit = self.dims.max_decode_len
        attended = weights[..., :limit] @ cache_v + weights[..., limit:] @ value
        return attn.out_proj(self._merge(attended)), key, value

    def _cross_attention(
        self, index: int, hidden: torch.Tensor, cross_k: torch.Tensor, cross_v: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The attended values and the scores [1, heads, 1, n_audio_ctx] before the softmax."""
        attn = self.decoder.layers[index].encoder_attn
        query = self._heads(self.cross_query[index](hidden))
        scores = query @ cross_k.transpose(-1, -2)
        weights = torch.softmax(scores, dim=-1)
        attended: torch.Tensor = attn.out_proj(self._merge(weights @ cross_v))
        return attended, scores

    def _alignment(self, scores: list[torch.Tensor]) -> torch.Tensor:
        """The alignment heads' scores [heads, n_audio_ctx], in the checkpoint's order: one
        Slice per head and a Concat (no Gather)."""
        rows = [scores[layer][:, head : head + 1] for layer, head in self.alignment]
        return torch.cat(rows, dim=1).reshape(len(self.alignment), self.dims.n_audio_ctx)

    def forward(  # noqa: PLR0913 -- one parameter per input of the decoder graph (DECODER_INPUTS)
        self,
        embedded_token: torch.Tensor,
        self_k_cache: torch.Tensor,
        self_v_cache: torch.Tensor,
        cache_mask: torch.Tensor,
        cross_k: torch.Tensor,
        cross_v: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        decoder = self.decoder
        hidden = embedded_token
        mask = cache_mask.reshape(1, 1, 1, self.dims.max_decode_len)
        new_keys, new_values, cross_scores = [], [], []
        for index, layer in enumerate(decoder.layers):
            attended, key, value = self._self_attention(
                index,
                layer.self_attn_layer_norm(hidden),
                _layer(self_k_cache, index),
                _layer(self_v_cache, index),
                mask,
            )
            hidden = hidden + attended
            attended, scores = self._cross_attention(
                index,
                layer.encoder_attn_layer_norm(hidden),
                _layer(cross_k, index),
                _layer(cross_v, index),
            )
            hidden = hidden + attended
            cross_scores.append(scores)
            hidden = hidden + layer.fc2(
                layer.activation_fn(layer.fc1(layer.final_layer_norm(hidden)))
            )
            new_keys.append(key)
            new_values.append(value)
        final = decoder.layer_norm(hidden).reshape(1, self.dims.d_model)
        outputs = (final @ self.projection_t, torch.stack(new_keys), torch.stack(new_values))
        return (*outputs, self._alignment(cross_scores)) if self.alignment else outputs


def embedding_tables(
    model: WhisperForConditionalGeneration, dims: WhisperDims
) -> tuple[torch.Tensor, torch.Tensor]:
    """The host's token [vocab, d_model] and position [max_decode_len, d_model] tables: the
    decoder's input is their rows' sum, as WhisperDecoder adds them (it scales neither)."""
    decoder = model.model.decoder
    return (
        decoder.embed_tokens.weight.detach(),
        decoder.embed_positions.weight.detach()[: dims.max_decode_len],
    )
