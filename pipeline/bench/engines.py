"""What runs inside a worker process: one engine opened, timed clip by clip, and its peak RSS.

Every engine (the fp32 CPU baseline, each variant, each peer) runs in a worker of its own, so one
engine's thread pool, allocator or imports cannot slow or bloat another, and the worker's peak
RSS (`peak_rss_mb`) is that engine's own footprint, runtime and imports included. The worker
runs this module (`python -m`), whose top level imports only the standard library and three small
project modules: the coordinator's data loading stays out of the workers' memory figures.
"""

from __future__ import annotations

import importlib
import os
import pickle
import sys
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipeline.bench.records import EngineSpec
from pipeline.workers import exit_with_parent
from whisper_npu.providers import CPU_PROVIDER
from whisper_npu.timing import Sample, TimingRunner, elapsed_ms

if TYPE_CHECKING:
    import numpy as np

    from whisper_npu.transcriber import Transcriber

    Transcribe = Callable[[int, np.ndarray], Sample]

# What a worker imports before its load clock starts: load_s is session creation, not imports.
IMPORTS: dict[str, tuple[str, ...]] = {
    "ours": ("onnxruntime", "whisper_npu.transcriber"),
    "transformers": ("torch", "transformers", "pipeline.export.reference"),
    "faster_whisper": ("faster_whisper",),
}


def _size_mb(files: Iterable[Path]) -> float:
    return sum(path.stat().st_size for path in files) / 2**20


def open_transcriber(spec: EngineSpec) -> Transcriber:
    """One of our variants as the bench runs it: a CPU-only variant's bundle on the CPU provider
    by design, any other as its compiled artifact says (the fp32 baseline on the CPU)."""
    from whisper_npu.execution import Device
    from whisper_npu.transcriber import Transcriber

    if spec.cpu_only:
        return Transcriber.from_bundle(spec.path, providers=[CPU_PROVIDER], threads=spec.threads)
    return Transcriber.from_artifact(spec.path, spec.threads, Device(spec.device))


def _open_ours(spec: EngineSpec) -> tuple[Transcribe, dict[str, Any]]:
    transcriber = open_transcriber(spec)
    execution = transcriber.execution
    timer = TimingRunner(transcriber.runner)
    transcriber.runner = timer
    eot = transcriber.bundle.record.decoding.eot

    def run(clip: int, samples: np.ndarray) -> Sample:
        start = time.perf_counter()
        result = transcriber.transcribe(samples)
        e2e = elapsed_ms(start)
        encoder, decoder = timer.take()
        tokens = sum(token < eot for token in result.tokens)
        return Sample(clip, result.text, tokens, e2e, encoder, decoder)

    root = transcriber.bundle.root
    return run, {
        "execution": execution,
        # What the runtime loads: the graphs and the host-side tables (embeddings, mel filters).
        "size_mb": _size_mb([*root.glob("*.onnx"), *root.glob("*.npy")]),
        # 1 when the quantize stage met its held-back WER budget (fp32: nothing to meet).
        "budget_met": float(transcriber.bundle.record.budget_met),
    }


def _open_transformers(spec: EngineSpec) -> tuple[Transcribe, dict[str, Any]]:
    import torch

    from pipeline.export.reference import load_model, transcribe_clip
    from whisper_npu.execution import Device, Execution

    if spec.threads:
        torch.set_num_threads(spec.threads)
    model, processor = load_model(spec.path)
    eot = model.generation_config.eos_token_id

    def run(clip: int, samples: np.ndarray) -> Sample:
        start = time.perf_counter()
        text, tokens = transcribe_clip(model, processor, samples, spec.language or "en")
        return Sample(clip, text, sum(t < eot for t in tokens), elapsed_ms(start))

    execution = Execution(device=Device.CPU, provider="torch eager CPU", compiled=False)
    return run, {
        "execution": execution,
        "size_mb": _size_mb(spec.path.glob("*.safetensors")),
    }


def _open_faster_whisper(spec: EngineSpec) -> tuple[Transcribe, dict[str, Any]]:
    from faster_whisper import WhisperModel

    from whisper_npu.execution import Device, Execution
    from whisper_npu.features import WINDOW_SAMPLES

    model = WhisperModel(
        str(spec.path), device="cpu", compute_type=spec.compute_type, cpu_threads=spec.threads or 0
    )
    eot = model.hf_tokenizer.token_to_id("<|endoftext|>")

    def run(clip: int, samples: np.ndarray) -> Sample:
        start = time.perf_counter()
        segments, _ = model.transcribe(
            samples,
            beam_size=1,
            temperature=0.0,
            # As ours and transformers decode: timestamps only to move through long audio.
            without_timestamps=samples.size <= WINDOW_SAMPLES,
            condition_on_previous_text=False,
            vad_filter=False,
            # Told the language ours and transformers decode in: left to detect it, a
            # multilingual model runs an extra encoder call and decoder step on every clip.
            language=spec.language,
        )
        segments = list(segments)  # a generator: the decoding happens here
        e2e = elapsed_ms(start)
        text = "".join(segment.text for segment in segments).strip()
        tokens = sum(t < eot for segment in segments for t in segment.tokens)
        return Sample(clip, text, tokens, e2e)

    precision = {"float32": "fp32", "int8": "int8"}[spec.compute_type]
    execution = Execution(
        device=Device.CPU, provider=f"CTranslate2 {precision} CPU", compiled=False
    )
    return run, {"execution": execution, "size_mb": _size_mb(spec.path.glob("model.bin"))}


OPENERS: dict[str, Callable[[EngineSpec], tuple[Transcribe, dict[str, Any]]]] = {
    "ours": _open_ours,
    "transformers": _open_transformers,
    "faster_whisper": _open_faster_whisper,
}


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB.

    On Linux, VmHWM: the high-water mark of this process image's own memory. Not getrusage's
    ru_maxrss, which a child keeps across fork and exec: a worker would report at least the
    coordinator's footprint at the time it was started (measured: a 13 MB child of an 813 MB
    parent reads 813 MB).
    """
    if sys.platform == "win32":
        import psutil

        return float(psutil.Process().memory_info().peak_wset) / 2**20
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def serve() -> None:
    """Worker loop: open one engine, transcribe clips on request, report peak RSS at the end.

    Requests and replies are pickled over stdin and a private copy of stdout; file descriptor 1
    is pointed at stderr first, so whatever a library prints cannot corrupt the replies. Stdin
    is read on its own thread, which ends the worker as soon as the coordinator has ended.
    """
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    # A reader of its own on stdin: at exit the interpreter closes sys.stdin, and if the reading
    # thread held its lock then, Python would abort with a fatal error.
    requests = exit_with_parent(partial(pickle.load, os.fdopen(os.dup(0), "rb")))

    def reply(status: str, payload: Any) -> None:
        pickle.dump((status, payload), replies)
        replies.flush()

    spec: EngineSpec = requests.get()
    try:
        for module in IMPORTS[spec.kind]:
            importlib.import_module(module)
        start = time.perf_counter()
        run, info = OPENERS[spec.kind](spec)
        reply("ok", {**info, "load_s": time.perf_counter() - start})
    except Exception as exc:
        reply("error", _one_line(exc))
        return
    while (request := requests.get())[0] == "run":
        try:
            reply("ok", run(request[1], request[2]))
        except Exception as exc:
            reply("error", _one_line(exc))
    reply("ok", peak_rss_mb())


# Started by `Worker` as `python -m pipeline.bench.engines`.
if __name__ == "__main__":
    serve()
