"""The `reference` stage: the float transformers model's greedy transcripts and WER.

This is the accuracy every exported and quantized artifact is compared against. Clips up to
30 s are decoded greedily without timestamps; longer clips use transformers' own sequential
long-form decoding (which needs timestamps to move from one window to the next).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import WhisperForConditionalGeneration, WhisperProcessor
from transformers.utils import logging as transformers_logging

from pipeline.sources.speech_sets import clip_samples, load_saved_set
from pipeline.workers import map_in_workers
from whisper_npu.errors import UserError
from whisper_npu.fsutil import atomic_dir, write_json
from whisper_npu.layout import TRANSCRIPTS_FILE
from whisper_npu.wer import corpus_wer
from whisper_npu.whisper_io import CHUNK_SECONDS, SAMPLE_RATE


@dataclass(frozen=True)
class Transcript:
    id: str
    reference: str
    text: str
    tokens: list[int]
    duration_s: float


def _require_model(model_dir: Path) -> None:
    if not (Path(model_dir) / "model.safetensors").is_file():
        raise UserError(f"{model_dir}: no model here (run `whisper-npu model` first)")


@contextmanager
def _transformers_errors_only() -> Iterator[None]:
    """transformers logs errors only inside the block, and the caller's level is back after it.

    generate() warns on every call that the suppress-token processors it builds from the
    generation config are also built by Whisper's own generate; both are the same lists.
    """
    previous = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(previous)


@_transformers_errors_only()
def load_model(model_dir: Path) -> tuple[WhisperForConditionalGeneration, WhisperProcessor]:
    _require_model(model_dir)
    model = WhisperForConditionalGeneration.from_pretrained(model_dir, use_safetensors=True)
    return model.eval(), WhisperProcessor.from_pretrained(model_dir)


def log_mel(processor: WhisperProcessor, samples: np.ndarray) -> torch.Tensor:
    """One 30 s window (padded or cut) as the model's input features, shape [1, n_mels, 3000]."""
    features = processor.feature_extractor(samples, sampling_rate=SAMPLE_RATE, return_tensors="pt")
    input_features: torch.Tensor = features.input_features
    return input_features


def _prompt(model: WhisperForConditionalGeneration, language: str) -> dict[str, str]:
    """A multilingual model transcribes in `export.language`, the bundle's default prompt.
    Left to detect the language, transformers 4.57's generate() repeats the first token on
    real Whisper base (`This This This …`), while OpenAI's and faster-whisper's do not."""
    if getattr(model.generation_config, "is_multilingual", False):
        return {"language": language, "task": "transcribe"}
    return {}


@torch.inference_mode()
@_transformers_errors_only()
def greedy_tokens(
    model: WhisperForConditionalGeneration, features: torch.Tensor, language: str = "en"
) -> list[int]:
    """Greedy decode of one window, no timestamps; returns the generated tokens only."""
    output = model.generate(
        features,
        do_sample=False,
        num_beams=1,
        return_timestamps=False,
        **_prompt(model, language),
    )
    return [int(t) for t in output[0]]


@torch.inference_mode()
def _long_form_tokens(
    model: WhisperForConditionalGeneration,
    processor: WhisperProcessor,
    samples: np.ndarray,
    language: str,
) -> list[int]:
    inputs = processor.feature_extractor(
        samples,
        sampling_rate=SAMPLE_RATE,
        return_tensors="pt",
        truncation=False,
        padding="longest",
        return_attention_mask=True,
    )
    output = model.generate(
        inputs.input_features,
        attention_mask=inputs.attention_mask,
        do_sample=False,
        num_beams=1,
        return_timestamps=True,
        condition_on_prev_tokens=False,
        **_prompt(model, language),
    )
    return [int(t) for t in output[0]]


@_transformers_errors_only()
def transcribe_clip(
    model: WhisperForConditionalGeneration,
    processor: WhisperProcessor,
    samples: np.ndarray,
    language: str = "en",
) -> tuple[str, list[int]]:
    if samples.size / SAMPLE_RATE > CHUNK_SECONDS:
        tokens = _long_form_tokens(model, processor, samples, language)
    else:
        tokens = greedy_tokens(model, log_mel(processor, samples), language)
    return processor.tokenizer.decode(tokens, skip_special_tokens=True).strip(), tokens


Model = tuple[WhisperForConditionalGeneration, WhisperProcessor]


def _open_model(model_dir: Path) -> Model:
    torch.set_num_threads(1)  # one thread per worker: the transcripts do not follow core count
    return load_model(model_dir)


def _transcribe_in_worker(
    model: Model, samples: np.ndarray, language: str = "en"
) -> tuple[str, list[int]]:
    return transcribe_clip(*model, samples, language)


def run_reference(
    model_dir: Path, data_dir: Path, out_dir: Path, metrics_file: Path, language: str = "en"
) -> dict[str, Any]:
    """Transcribe the eval set with the float transformers model (one single-threaded worker
    per core), a multilingual one in `language`; write transcripts and WER."""
    _require_model(model_dir)  # before any worker starts
    eval_set = load_saved_set(data_dir, "eval")
    outputs = map_in_workers(
        partial(_transcribe_in_worker, language=language),
        [clip_samples(row) for row in eval_set],
        partial(_open_model, Path(model_dir)),
    )
    transcripts = [
        Transcript(row["id"], row["text"], text, tokens, row["duration_s"])
        for row, (text, tokens) in zip(
            eval_set,
            tqdm(outputs, total=len(eval_set), desc="reference (transformers)", unit="clip"),
            strict=True,
        )
    ]
    long_form = [t for t in transcripts if t.duration_s > CHUNK_SECONDS]
    metrics = {
        "wer": corpus_wer([t.reference for t in transcripts], [t.text for t in transcripts]),
        "wer_long": corpus_wer([t.reference for t in long_form], [t.text for t in long_form])
        if long_form
        else None,
        "clips": len(transcripts),
        "long_clips": len(long_form),
    }
    with atomic_dir(Path(out_dir)) as scratch:
        write_json(scratch / TRANSCRIPTS_FILE, [t.__dict__ for t in transcripts])
    Path(metrics_file).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(metrics_file), metrics)
    return metrics
