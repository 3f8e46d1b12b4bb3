"""The export parity gate: the ONNX bundle must compute what PyTorch computes.

Tensors: on the first few eval clips, the encoder's cross K/V and the decoder's logits at every
step of the greedy path are compared with the PyTorch model on the same log-mel. Transcripts:
every eval clip transcribed by the bundle must read exactly as the `reference` stage's
transformers transcript (long-form clips included).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import WhisperForConditionalGeneration

from pipeline.bench.evaluate import reference_texts
from pipeline.config import ParityParams
from pipeline.export.torch_modules import EncoderWithCrossKV
from pipeline.sources.speech_sets import clip_samples, load_saved_set
from pipeline.throughput import transcribe_all
from whisper_npu.bundle import Bundle
from whisper_npu.decoding import greedy_decode
from whisper_npu.errors import GateFailure
from whisper_npu.features import WINDOW_SAMPLES, log_mel
from whisper_npu.transcriber import OrtRunner, Transcriber
from whisper_npu.whisper_io import CROSS_K, CROSS_V


@dataclass
class RecordingRunner:
    """Wraps a Runner and keeps every step's logits and the tokens fed."""

    inner: OrtRunner
    logits: list[np.ndarray] = field(default_factory=list)
    fed: list[int] = field(default_factory=list)

    def encode(self, features: np.ndarray) -> None:
        self.logits.clear()
        self.fed.clear()
        self.inner.encode(features)

    def decode_step(self, token: int, position: int) -> np.ndarray:
        logits = self.inner.decode_step(token, position)
        self.logits.append(logits.copy())
        self.fed.append(token)
        return logits


@torch.inference_mode()
def _tensor_errors(
    model: WhisperForConditionalGeneration, transcriber: Transcriber, samples: np.ndarray
) -> tuple[float, float]:
    """Max |ONNX - PyTorch| of cross K/V and of the step logits along the greedy path."""
    features = log_mel(samples, transcriber.mel_filters, pad_to_window=True)[None]
    recorder = RecordingRunner(transcriber.runner)
    greedy_decode(recorder, transcriber.spec(), features, timestamps=False)
    torch_k, torch_v = EncoderWithCrossKV(model, transcriber.bundle.record.dims)(
        torch.from_numpy(features)
    )
    buffers = transcriber.runner.buffers
    cross_error = max(
        float(np.abs(buffers[CROSS_K] - torch_k.numpy()).max()),
        float(np.abs(buffers[CROSS_V] - torch_v.numpy()).max()),
    )
    full = model(
        input_features=torch.from_numpy(features), decoder_input_ids=torch.tensor([recorder.fed])
    ).logits[0]
    logits_error = float(np.abs(np.stack(recorder.logits) - full.numpy()).max())
    return cross_error, logits_error


def run_parity(
    model: WhisperForConditionalGeneration,
    bundle: Bundle,
    data_dir: Path,
    reference_dir: Path,
    params: ParityParams,
) -> dict[str, Any]:
    reference = reference_texts(reference_dir)
    transcriber = Transcriber(bundle, OrtRunner(bundle))
    eval_set = load_saved_set(data_dir, "eval")
    clips = [clip_samples(row) for row in eval_set]
    cross_error = logits_error = 0.0
    tensor_clips = 0
    for samples in clips:
        if tensor_clips == params.tensor_clips:
            break
        if samples.size <= WINDOW_SAMPLES:
            errors = _tensor_errors(model, transcriber, samples)
            cross_error, logits_error = max(cross_error, errors[0]), max(logits_error, errors[1])
            tensor_clips += 1
    transcripts = transcribe_all(bundle.root, clips)
    differing = [
        row["id"]
        for row, transcript in zip(
            eval_set,
            tqdm(transcripts, total=len(clips), desc="parity (ONNX vs PyTorch)", unit="clip"),
            strict=True,
        )
        if transcript.text != reference.get(row["id"])
    ]
    result = {
        "tensor_clips": tensor_clips,
        "cross_kv_max_abs_error": cross_error,
        "logits_max_abs_error": logits_error,
        "tolerance": {"cross_kv_atol": params.cross_kv_atol, "logits_atol": params.logits_atol},
        "transcript_clips": len(eval_set),
        "transcripts_differing": differing,
    }
    if cross_error > params.cross_kv_atol or logits_error > params.logits_atol:
        raise GateFailure(
            f"parity: ONNX vs PyTorch error cross K/V {cross_error:.2e} "
            f"(max {params.cross_kv_atol:.0e}), logits {logits_error:.2e} "
            f"(max {params.logits_atol:.0e})"
        )
    if differing:
        raise GateFailure(
            f"parity: {len(differing)} of {len(eval_set)} transcripts differ from transformers', "
            f"e.g. {differing[:3]}"
        )
    return result
