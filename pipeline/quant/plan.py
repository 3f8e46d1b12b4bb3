"""How a variant's bundle is quantized, graph by graph: the quantize stage's and the sensitivity
stage's plan."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from whisper_npu.variants import QUANTIZED, QuantSpec, Variant


@dataclass(frozen=True)
class GraphPlan:
    """How one graph is quantized: the variant whose config (backend preset) it takes, and so
    the grid its float-kept layers are ranked on."""

    variant: Variant
    quant: QuantSpec

    @classmethod
    def of(cls, variant: Variant) -> GraphPlan:
        return cls(Variant(variant), QUANTIZED[variant])


@dataclass(frozen=True)
class QuantizePlan:
    """Per graph plans of one variant's bundle: the decoder may follow another variant
    (`quantize.decoder_variant`, e.g. {a8w8: a16w8}), and is then ranked, quantized and
    recorded on that variant's grid, never the encoder's."""

    encoder: GraphPlan
    decoder: GraphPlan

    @classmethod
    def of(cls, variant: Variant, decoder_variant: Mapping[Variant, Variant]) -> QuantizePlan:
        return cls(GraphPlan.of(variant), GraphPlan.of(decoder_variant.get(variant, variant)))

    @property
    def graphs(self) -> dict[str, GraphPlan]:
        return {"encoder": self.encoder, "decoder": self.decoder}

    def record(self) -> dict[str, str]:
        """The plan as bundle.json's quantization section states it."""
        return {
            "grid": self.encoder.quant.grid.name,
            "decoder_grid": self.decoder.quant.grid.name,
            "decoder_variant": self.decoder.variant,
        }
