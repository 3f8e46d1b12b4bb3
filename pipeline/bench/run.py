"""The `bench` stage: WER and latency of every variant against the fp32 CPU baseline, one run.

How it stays honest on a noisy shared machine:

- Every engine (the fp32 CPU baseline, each variant, each peer) runs in a worker process of its
  own, so one engine's thread pool, allocator or imports cannot slow or bloat another, and the
  worker's peak RSS (getrusage) is that engine's own footprint, runtime and imports included.
- One worker computes at a time. Each clip goes to every engine in turn, the first engine
  rotating from clip to clip, so machine drift and cache effects hit all engines alike.
- Ratios against fp32 are medians of per-clip ratios measured back to back, so the machine's
  speed cancels out; `check` gates on those ratios, never on milliseconds.

After `bench.warmup` untimed transcriptions per engine, `bench.repeats` passes over
`bench.latency_clips` short-form clips (spread evenly by duration) give the latency figures; then
one pass over the rest of the eval set completes every engine's transcripts for WER. Two engines
skip that pass when they can: the fp32 baseline, whose export parity gate proved its transcript
of every eval clip identical to the reference stage's, and the transformers peer, which is the
reference stage's own model and code; each takes the reference transcripts only if its timed
transcripts match them here, clip for clip, and is run over the whole set otherwise. Decoder time
by token position pools every decoder call of both passes (the long-form clips reach the far
positions).

This module is also the worker (`serve`), so its top level imports only the standard library
and numpy: the coordinator's data loading stays out of the workers' memory figures.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import os
import pickle
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np

from pipeline.errors import UserError
from pipeline.variants import BASELINE

if TYPE_CHECKING:
    from pipeline.config import BenchParams
    from pipeline.runtime.decoding import Runner

CPU = "CPUExecutionProvider"
PEERS = ("transformers", "faster_whisper")
VERSIONED = (
    "onnxruntime",
    "amd-quark",
    "transformers",
    "numpy",
    "torch",
    "faster-whisper",
    "ctranslate2",
)
ROOT = Path(__file__).resolve().parents[2]
# Decoder calls are pooled over POSITION_BIN neighbouring cache positions: few clips reach the
# far positions, and a median of a handful of calls on a shared machine is mostly noise.
POSITION_BIN = 4
MIN_POSITION_SAMPLES = 8

EngineKind = Literal["ours", "transformers", "faster_whisper"]
# What a worker imports before its load clock starts: load_s is session creation, not imports.
IMPORTS: dict[str, tuple[str, ...]] = {
    "ours": ("onnxruntime", "pipeline.runtime.transcriber"),
    "transformers": ("torch", "transformers", "pipeline.export.reference"),
    "faster_whisper": ("faster_whisper",),
}


@dataclass(frozen=True)
class EngineSpec:
    """What one worker opens: `name` is its key in bench.json."""

    name: str
    kind: EngineKind
    path: Path
    threads: int | None
    cpu_only: bool = False  # the fp32 baseline runs on CPU whatever the machine has


@dataclass(frozen=True)
class Sample:
    """One timed transcription of one clip by one engine."""

    clip: int
    text: str
    tokens: int  # text tokens (below end-of-text), the same count for every engine
    e2e_ms: float
    encoder_ms: tuple[float, ...] = ()
    decoder_ms: tuple[tuple[int, float], ...] = ()  # (cache position, ms) per decoder call


def _elapsed_ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class TimingRunner:
    """Any `Runner`, with the wall time of every encoder and decoder call recorded."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.encoder_ms: list[float] = []
        self.decoder_ms: list[tuple[int, float]] = []

    def encode(self, features: np.ndarray) -> None:
        start = time.perf_counter()
        self.inner.encode(features)
        self.encoder_ms.append(_elapsed_ms(start))

    def decode_step(self, token: int, position: int) -> np.ndarray:
        start = time.perf_counter()
        logits = self.inner.decode_step(token, position)
        self.decoder_ms.append((position, _elapsed_ms(start)))
        return logits

    def take(self) -> tuple[tuple[float, ...], tuple[tuple[int, float], ...]]:
        """The calls recorded since the last take, and a clean slate for the next clip."""
        calls = tuple(self.encoder_ms), tuple(self.decoder_ms)
        self.encoder_ms.clear()
        self.decoder_ms.clear()
        return calls


# --- engines (run inside a worker) -------------------------------------------------------------

Transcribe = Callable[[int, np.ndarray], Sample]


def _size_mb(files: Iterable[Path]) -> float:
    return sum(path.stat().st_size for path in files) / 2**20


def _open_ours(spec: EngineSpec) -> tuple[Transcribe, dict[str, Any]]:
    from pipeline.runtime.transcriber import Transcriber

    if spec.cpu_only:
        transcriber = Transcriber.from_bundle(spec.path, providers=[CPU], threads=spec.threads)
        execution = {"provider": CPU, "compiled": False, "fallback": None}
    else:
        transcriber = Transcriber.from_artifact(spec.path, threads=spec.threads)
        execution = dict(transcriber.execution)
    timer = TimingRunner(transcriber.runner)
    transcriber.runner = timer
    eot = transcriber.bundle.decoding.eot

    def run(clip: int, samples: np.ndarray) -> Sample:
        start = time.perf_counter()
        result = transcriber.transcribe(samples)
        e2e = _elapsed_ms(start)
        encoder, decoder = timer.take()
        tokens = sum(token < eot for token in result.tokens)
        return Sample(clip, result.text, tokens, e2e, encoder, decoder)

    root = transcriber.bundle.root
    quantization = transcriber.bundle.meta.get("quantization") or {}
    return run, {
        "execution": execution,
        "size_mb": _size_mb(root.glob("*.onnx")),
        # 1 when the quantize stage met its held-back WER budget (fp32: nothing to meet).
        "budget_met": float(quantization.get("budget_met", True)),
    }


def _open_transformers(spec: EngineSpec) -> tuple[Transcribe, dict[str, Any]]:
    import torch

    from pipeline.export.reference import load_model, transcribe_clip

    if spec.threads:
        torch.set_num_threads(spec.threads)
    model, processor = load_model(spec.path)
    eot = model.generation_config.eos_token_id

    def run(clip: int, samples: np.ndarray) -> Sample:
        start = time.perf_counter()
        text, tokens = transcribe_clip(model, processor, samples)
        return Sample(clip, text, sum(t < eot for t in tokens), _elapsed_ms(start))

    execution = {"provider": "torch eager CPU", "compiled": False, "fallback": None}
    return run, {
        "execution": execution,
        "size_mb": _size_mb(spec.path.glob("*.safetensors")),
    }


def _open_faster_whisper(spec: EngineSpec) -> tuple[Transcribe, dict[str, Any]]:
    from faster_whisper import WhisperModel

    from pipeline.runtime.features import WINDOW_SAMPLES

    model = WhisperModel(
        str(spec.path), device="cpu", compute_type="float32", cpu_threads=spec.threads or 0
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
        )
        segments = list(segments)  # a generator: the decoding happens here
        e2e = _elapsed_ms(start)
        text = "".join(segment.text for segment in segments).strip()
        tokens = sum(t < eot for segment in segments for t in segment.tokens)
        return Sample(clip, text, tokens, e2e)

    execution = {"provider": "CTranslate2 fp32 CPU", "compiled": False, "fallback": None}
    return run, {"execution": execution, "size_mb": _size_mb(spec.path.glob("model.bin"))}


OPENERS: dict[str, Callable[[EngineSpec], tuple[Transcribe, dict[str, Any]]]] = {
    "ours": _open_ours,
    "transformers": _open_transformers,
    "faster_whisper": _open_faster_whisper,
}


def peak_rss_mb() -> float:
    """This process's peak resident set size in MiB."""
    try:
        import resource
    except ImportError:  # Windows
        import psutil

        return float(psutil.Process().memory_info().peak_wset) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes there, KiB here


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def serve() -> None:
    """Worker loop: open one engine, transcribe clips on request, report peak RSS at the end.

    Requests and replies are pickled over stdin and a private copy of stdout; file descriptor 1
    is pointed at stderr first, so whatever a library prints cannot corrupt the replies.
    """
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer

    def reply(status: str, payload: Any) -> None:
        pickle.dump((status, payload), replies)
        replies.flush()

    spec: EngineSpec = pickle.load(requests)
    try:
        for module in IMPORTS[spec.kind]:
            importlib.import_module(module)
        start = time.perf_counter()
        run, info = OPENERS[spec.kind](spec)
        reply("ok", {**info, "load_s": time.perf_counter() - start})
    except Exception as exc:
        reply("error", _one_line(exc))
        return
    while (request := pickle.load(requests))[0] == "run":
        try:
            reply("ok", run(request[1], request[2]))
        except Exception as exc:
            reply("error", _one_line(exc))
    reply("ok", peak_rss_mb())


# --- coordinator -------------------------------------------------------------------------------


class Worker:
    """One engine in its own process, spoken to with pickled requests."""

    def __init__(self, spec: EngineSpec, log: IO[bytes]) -> None:
        self.spec, self.log = spec, log
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from pipeline.bench.run import serve; serve()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            env={**os.environ, "PYTHONPATH": path},
        )
        self.info: dict[str, Any] = self._ask(spec)

    def _ask(self, request: Any) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        try:
            pickle.dump(request, self.process.stdin)
            self.process.stdin.flush()
            status, payload = pickle.load(self.process.stdout)
        except (EOFError, BrokenPipeError, pickle.UnpicklingError):
            status, payload = "error", f"worker exited ({self._last_log_line()})"
        if status != "ok":
            raise UserError(f"{self.spec.name} ({self.spec.path}): {payload}")
        return payload

    def _last_log_line(self) -> str:
        self.log.flush()
        lines = Path(self.log.name).read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no message"

    def transcribe(self, clip: int, samples: np.ndarray) -> Sample:
        sample: Sample = self._ask(("run", clip, samples))
        return sample

    def finish(self) -> float:
        """Stop the worker; its peak RSS in MiB."""
        peak: float = self._ask(("stop",))
        self.process.wait(timeout=60)
        return peak

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@dataclass(frozen=True)
class EvalClips:
    samples: list[np.ndarray]
    references: list[str]
    durations: list[float]
    ids: list[str]


def load_eval_clips(data_dir: Path) -> EvalClips:
    from pipeline.sources.speech_sets import clip_samples, load_saved_set

    rows = list(load_saved_set(data_dir, "eval"))
    return EvalClips(
        [clip_samples(row) for row in rows],
        [row["text"] for row in rows],
        [row["duration_s"] for row in rows],
        [row["id"] for row in rows],
    )


def pick_latency_clips(durations: Sequence[float], count: int, limit_s: float) -> list[int]:
    """`count` clips of at most `limit_s`, evenly spaced by duration from shortest to longest."""
    ranked = [i for _, i in sorted((d, i) for i, d in enumerate(durations) if d <= limit_s)]
    if len(ranked) <= count:
        return sorted(ranked)
    step = (len(ranked) - 1) / max(count - 1, 1)
    return sorted(ranked[round(k * step)] for k in range(count))


def variant_specs(
    variants: Sequence[str], compiled_dir: Path, baseline_bundle: Path, threads: int | None
) -> list[EngineSpec]:
    """The fp32 CPU baseline first, then every variant's compiled artifact.

    The fp32 artifact is benched beside the baseline only when the NPU is there; without it the
    two are the same bundle on the same provider.
    """
    from pipeline.npu.vitisai import ep_available

    specs = [EngineSpec(BASELINE, "ours", Path(baseline_bundle), threads, cpu_only=True)]
    for variant in variants:
        if variant == BASELINE and not ep_available():
            continue
        path = Path(compiled_dir) / variant
        if not path.is_dir():
            raise UserError(f"{path}: no compiled artifact for variant {variant!r}")
        name = f"{variant}_npu" if variant == BASELINE else variant
        specs.append(EngineSpec(name, "ours", path, threads))
    return specs


def _faster_whisper_weights(model_dir: Path) -> Path | str:
    """The CTranslate2 directory `model_dir` was converted from, or why there is none."""
    from pipeline.fsutil import sha256_file
    from pipeline.sources.model import SOURCE_FILE, classify_source

    record = model_dir / SOURCE_FILE
    if not record.is_file():
        return f"{record} is missing, so the weights it came from are unknown"
    source = json.loads(record.read_text(encoding="utf-8"))
    if source.get("kind") != "ct2":
        return f"the model was not converted from CTranslate2 weights ({source.get('kind')})"
    _, location = classify_source(source["source"])
    weights = Path(location)
    if sha256_file(weights / "model.bin") != source.get("source_sha256", {}).get("model.bin"):
        return f"{weights}/model.bin is not the file {model_dir} was converted from"
    return weights


def peer_specs(model_dir: Path, threads: int | None) -> tuple[list[EngineSpec], dict[str, str]]:
    """Peers on the same weights, and why any is skipped. Without a thread count they get
    ORT's default, one thread per physical core (CTranslate2's own default is 4 regardless)."""
    import psutil

    threads = threads or psutil.cpu_count(logical=False) or os.cpu_count() or 1
    model_dir = Path(model_dir)
    if not (model_dir / "model.safetensors").is_file():
        return [], {peer: f"{model_dir}: no converted model" for peer in PEERS}
    specs, skipped = [], {}
    if importlib.util.find_spec("torch") is not None:
        specs.append(EngineSpec("transformers", "transformers", model_dir, threads))
    else:
        skipped["transformers"] = "torch is not installed"
    if importlib.util.find_spec("faster_whisper") is None:
        skipped["faster_whisper"] = "faster-whisper is not installed (pip install '.[peers]')"
    elif isinstance(weights := _faster_whisper_weights(model_dir), str):
        skipped["faster_whisper"] = weights
    else:
        specs.append(EngineSpec("faster_whisper", "faster_whisper", weights, threads))
    return specs, skipped


Samples = dict[str, list[Sample]]


def interleave(
    workers: Sequence[Worker],
    clips: Sequence[int],
    audio: Sequence[np.ndarray],
    tick: Callable[[], object],
) -> Samples:
    """Each clip through every engine in turn, the first engine rotating from clip to clip."""
    out: Samples = {worker.spec.name: [] for worker in workers}
    for turn, clip in enumerate(clips):
        for k in range(len(workers)):
            worker = workers[(turn + k) % len(workers)]
            out[worker.spec.name].append(worker.transcribe(clip, audio[clip]))
            tick()
    return out


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def paired_speedup(reference: Sequence[Sample], other: Sequence[Sample]) -> float:
    """Median over clips of reference time / other time, each pair measured back to back."""
    return statistics.median(r.e2e_ms / o.e2e_ms for r, o in zip(reference, other, strict=True))


def latency_stats(samples: Sequence[Sample], durations: Sequence[float]) -> dict[str, float]:
    e2e = [s.e2e_ms for s in samples]
    seconds = sum(e2e) / 1000
    stats = {
        "e2e_ms_p50": percentile(e2e, 50),
        "e2e_ms_p90": percentile(e2e, 90),
        "rtf": seconds / sum(durations[s.clip] for s in samples),
        "tokens_per_s": sum(s.tokens for s in samples) / seconds,
    }
    encoder = [ms for s in samples for ms in s.encoder_ms]
    decoder = [ms for s in samples for _, ms in s.decoder_ms]
    if encoder:
        stats |= {
            "encoder_ms_p50": percentile(encoder, 50),
            "encoder_ms_p90": percentile(encoder, 90),
        }
    if decoder:
        stats |= {
            "decoder_ms_per_token_p50": percentile(decoder, 50),
            "decoder_ms_per_token_p90": percentile(decoder, 90),
        }
    return stats


def round_sig(value: float, digits: int = 4) -> float:
    """A readable number for a diff: `digits` significant digits."""
    return float(f"{value:.{digits}g}")


def decoder_by_position(samples: Samples) -> dict[str, dict[int, float]]:
    """Median decoder ms per bin of cache positions (keyed by its first position), per engine
    that exposes its decoder."""
    out = {}
    for name, runs in samples.items():
        by_position: dict[int, list[float]] = defaultdict(list)
        for sample in runs:
            for position, ms in sample.decoder_ms:
                by_position[position - position % POSITION_BIN].append(ms)
        if by_position:
            out[name] = {
                position: statistics.median(values)
                for position, values in sorted(by_position.items())
                if len(values) >= MIN_POSITION_SAMPLES
            }
    return out


def time_split(samples: Samples) -> dict[str, dict[str, float]]:
    """Mean ms per clip in the encoder, in the decoder, and in the rest (log-mel, decode loop,
    detokenise) for engines that expose their calls; the parts add up to the mean e2e time."""
    out = {}
    for name, runs in samples.items():
        if not runs[0].encoder_ms:
            continue
        encoder = statistics.fmean(sum(s.encoder_ms) for s in runs)
        decoder = statistics.fmean(sum(ms for _, ms in s.decoder_ms) for s in runs)
        total = statistics.fmean(s.e2e_ms for s in runs)
        out[name] = {"encoder": encoder, "decoder": decoder, "other": total - encoder - decoder}
    return out


def engine_metrics(measured: Measurement, clips: EvalClips) -> dict[str, dict[str, float]]:
    """Every engine's figures, with same-run ratios against fp32 and against each peer."""
    from pipeline.bench.evaluate import score

    latency_pass = measured.latency
    peers = [name for name in PEERS if name in latency_pass]
    scores = {
        name: {
            key: value
            for key, value in score(clips.references, clips.durations, texts).items()
            if value is not None
        }
        for name, texts in measured.texts.items()
    }
    out: dict[str, dict[str, float]] = {}
    for name, runs in latency_pass.items():
        figures: dict[str, float] = {
            **scores[name],
            "wer_delta_vs_fp32": 100 * (scores[name]["wer"] - scores[BASELINE]["wer"]),
            **latency_stats(runs, clips.durations),
            "speedup_vs_fp32": paired_speedup(latency_pass[BASELINE], runs),
            **{
                f"speedup_vs_{peer}": paired_speedup(latency_pass[peer], runs)
                for peer in peers
                if peer != name and name not in PEERS
            },
            **{
                key: measured.info[name][key]
                for key in ("peak_rss_mb", "size_mb", "load_s", "budget_met")
                if key in measured.info[name]
            },
        }
        out[name] = {key: round_sig(value) for key, value in figures.items()}
    return out


def _versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in VERSIONED:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


# bench.json's top-level keys that are not variants: the peers' rows (context, not gated) and
# the machine it was measured on.
PEERS_KEY = "peers"
MACHINE = "machine"
NOT_VARIANTS = (PEERS_KEY, MACHINE)
# CPU features that change which ONNX Runtime kernels run, and so a variant's time against fp32.
KERNEL_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")


def _cpu_model() -> str:
    """The CPU's name and its kernel-relevant features: two runs compare only if these match."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return platform.processor() or platform.machine()
    name, flags = platform.machine(), set()
    for line in cpuinfo.read_text(errors="replace").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            name = value.strip()
        elif key.strip() == "flags":
            flags = set(value.split())
    return " ".join([name, *(flag for flag in KERNEL_FLAGS if flag in flags)])


def _open_workers(specs: Sequence[EngineSpec], stack: ExitStack) -> list[Worker]:
    """Start the workers one after another, so each load time is measured alone."""
    workers = []
    for spec in specs:
        # The stack closes (and deletes) each log when the bench ends.
        log = stack.enter_context(tempfile.NamedTemporaryFile(prefix=f"bench-{spec.name}-"))  # noqa: SIM115
        worker = Worker(spec, log)
        stack.callback(worker.kill)
        workers.append(worker)
    return workers


@dataclass(frozen=True)
class BenchResult:
    metrics: dict[str, Any]  # bench.json: numbers only
    run: dict[str, Any]  # run.json: providers, threads, versions, clip counts
    positions: dict[str, dict[int, float]]
    split: dict[str, dict[str, float]]


@dataclass(frozen=True)
class Measurement:
    """What the workers measured, and every engine's transcript of every eval clip."""

    latency: Samples  # the timed passes over the latency clips
    accuracy: Samples  # the pass over the other clips, for engines without known transcripts
    texts: dict[str, list[str]]  # per engine, its transcript of each eval clip in order
    text_source: dict[str, str]  # per engine, where those transcripts came from
    info: dict[str, dict[str, Any]]  # per engine, what its worker reported (with peak RSS)


def known_transcripts(
    reference_dir: Path | None, baseline_bundle: Path, clip_ids: Sequence[str]
) -> dict[str, dict[str, str]]:
    """Engines whose transcripts of the eval set are already on disk: the transformers peer
    (the reference stage is that model) and the fp32 baseline when its parity gate matched the
    reference on every eval clip. The bench still checks them on the clips it times."""
    from pipeline.bench.evaluate import reference_texts
    from pipeline.fsutil import read_json_object
    from pipeline.runtime.bundle import BUNDLE_FILE

    if reference_dir is None:
        return {}
    texts = reference_texts(reference_dir)
    if not set(clip_ids) <= texts.keys():
        return {}
    known = {"transformers": texts}
    parity = read_json_object(baseline_bundle / BUNDLE_FILE).get("parity")
    if (
        isinstance(parity, dict)
        and parity.get("transcript_clips") == len(texts)  # it compared every reference clip
        and parity.get("transcripts_differing") == []
    ):
        known[BASELINE] = texts
    return known


def measure(
    specs: Sequence[EngineSpec],
    clips: EvalClips,
    params: BenchParams,
    known: dict[str, dict[str, str]],
) -> Measurement:
    """Warm-up, the latency passes, then the rest of the eval set for the engines that need it."""
    from tqdm import tqdm

    from pipeline.sources.speech_sets import LONG_FORM_S

    latency = pick_latency_clips(clips.durations, params.latency_clips, LONG_FORM_S)
    if not latency:
        raise UserError("the eval set has no clip of 30 s or less to time")
    warmup = [latency[i % len(latency)] for i in range(params.warmup)]
    timed = latency * params.repeats
    timed_clips = set(latency)
    others = [clip for clip in range(len(clips.samples)) if clip not in timed_clips]
    with ExitStack() as stack:
        workers = _open_workers(specs, stack)
        with tqdm(
            total=len(specs) * (len(warmup) + len(timed)), desc="bench", unit="run", file=sys.stderr
        ) as progress:
            interleave(workers, warmup, clips.samples, progress.update)
            latency_pass = interleave(workers, timed, clips.samples, progress.update)
            timed_texts = {
                name: {s.clip: s.text for s in runs} for name, runs in latency_pass.items()
            }
            settled = {
                name
                for name, texts in known.items()
                if name in timed_texts
                and all(timed_texts[name][clip] == texts[clips.ids[clip]] for clip in latency)
            }
            remaining = [w for w in workers if w.spec.name not in settled]
            progress.total += len(remaining) * len(others)
            progress.refresh()
            accuracy = interleave(remaining, others, clips.samples, progress.update)
        info = {w.spec.name: {**w.info, "peak_rss_mb": w.finish()} for w in workers}
    texts, source = {}, {}
    for name in latency_pass:
        if name in settled:
            texts[name] = [known[name][clip_id] for clip_id in clips.ids]
            source[name] = (
                f"the reference stage's transcripts (identical on the {len(latency)} timed clips)"
            )
        else:
            by_clip = {**timed_texts[name], **{s.clip: s.text for s in accuracy[name]}}
            texts[name] = [by_clip[clip] for clip in range(len(clips.samples))]
            source[name] = "transcribed in this run"
    return Measurement(latency_pass, accuracy, texts, source, info)


def run_info(
    specs: Sequence[EngineSpec],
    measured: Measurement,
    skipped: dict[str, str],
    clips: EvalClips,
    params: BenchParams,
) -> dict[str, Any]:
    from pipeline.sources.speech_sets import LONG_FORM_S

    latency_ids = sorted({clips.ids[s.clip] for s in measured.latency[BASELINE]})
    return {
        "engines": {
            spec.name: {
                "kind": spec.kind,
                "path": spec.path.as_posix(),
                "threads": spec.threads,
                "transcripts": measured.text_source[spec.name],
                **measured.info[spec.name]["execution"],
            }
            for spec in specs
        },
        "peers_skipped": skipped,
        "threads": params.threads,
        "threads_note": "null: ONNX Runtime's default (one per physical core)",
        "cpu": {"model": _cpu_model(), "logical_cores": os.cpu_count()},
        "versions": _versions(),
        "clips": {
            "eval": len(clips.ids),
            "long_form": sum(d > LONG_FORM_S for d in clips.durations),
            "latency": latency_ids,
            "warmup_runs_per_engine": params.warmup,
            "repeats": params.repeats,
        },
    }


def run_bench(
    variants: Sequence[str],
    params: BenchParams,
    compiled_dir: Path,
    data_dir: Path,
    out_file: Path,
    plots_dir: Path,
    baseline_bundle: Path,
    model_dir: Path,
    reference_dir: Path | None = None,
) -> BenchResult:
    """Measure, then write bench.json (metrics) and `plots_dir` (run.json, plot data, PNGs).

    With `reference_dir` (the reference stage's output), engines whose transcripts it already
    holds are timed but not run over the whole eval set again (see the module's docstring)."""
    from pipeline.bench.plots import write_plots
    from pipeline.fsutil import atomic_dir, write_json

    started = time.perf_counter()
    clips = load_eval_clips(data_dir)
    specs = variant_specs(variants, compiled_dir, baseline_bundle, params.threads)
    peers, skipped = peer_specs(model_dir, params.threads) if params.peers else ([], {})
    specs += peers
    known = known_transcripts(reference_dir, Path(baseline_bundle), clips.ids)
    measured = measure(specs, clips, params, known)
    figures = engine_metrics(measured, clips)
    metrics: dict[str, Any] = {k: v for k, v in figures.items() if k not in PEERS}
    if peers:
        metrics[PEERS_KEY] = {k: v for k, v in figures.items() if k in PEERS}
    metrics[MACHINE] = {"cpu": _cpu_model()}  # the gate compares latency on like CPUs
    run = {
        **run_info(specs, measured, skipped, clips, params),
        "wall_s": round(time.perf_counter() - started, 1),
    }
    everything = {
        name: [*runs, *measured.accuracy.get(name, [])] for name, runs in measured.latency.items()
    }
    result = BenchResult(
        metrics, run, decoder_by_position(everything), time_split(measured.latency)
    )
    with atomic_dir(Path(plots_dir)) as scratch:
        write_json(scratch / "run.json", run)
        write_plots(scratch, figures, result.positions, result.split, run)
    Path(out_file).parent.mkdir(parents=True, exist_ok=True)
    write_json(Path(out_file), metrics)
    return result


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned first two columns, the numbers right-aligned, widths from the content."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(
            cell.ljust(w) if i < 2 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in [header, *rows]
    ]


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def format_table(result: BenchResult) -> str:
    """The scoreboard a person reads: time and WER against fp32 CPU and against each peer,
    then where the time and memory go."""
    rows = {
        **{k: v for k, v in result.metrics.items() if k not in NOT_VARIANTS},
        **result.metrics.get(PEERS_KEY, {}),
    }
    engines, clips = result.run["engines"], result.run["clips"]
    peers = [p for p in PEERS if p in rows]
    ratios = [
        [
            name,
            engines[name]["provider"].replace("ExecutionProvider", ""),
            _fmt(m["e2e_ms_p50"], ".0f"),
            _fmt(m["speedup_vs_fp32"], ".2f", "x"),
            *(_fmt(m.get(f"speedup_vs_{p}"), ".2f", "x") for p in peers),
            _fmt(100 * m["wer"], ".2f"),
            _fmt(m["wer_delta_vs_fp32"], "+.2f"),
            *(
                _fmt(None if p == name else 100 * (m["wer"] - rows[p]["wer"]), "+.2f")
                for p in peers
            ),
        ]
        for name, m in rows.items()
    ]
    header = [
        "engine",
        "provider",
        "e2e ms p50",
        "speed vs fp32",
        *(f"vs {p}" for p in peers),
        "WER %",
        "dWER vs fp32",
        *(f"vs {p}" for p in peers),
    ]
    costs = [
        [
            name,
            engines[name]["provider"].replace("ExecutionProvider", ""),
            _fmt(m.get("encoder_ms_p50"), ".1f"),
            _fmt(m.get("encoder_ms_p90"), ".1f"),
            _fmt(m.get("decoder_ms_per_token_p50"), ".2f"),
            _fmt(m.get("decoder_ms_per_token_p90"), ".2f"),
            _fmt(m["e2e_ms_p90"], ".0f"),
            _fmt(m["rtf"], ".3f"),
            _fmt(m["tokens_per_s"], ".1f"),
            _fmt(m["peak_rss_mb"], ".0f"),
            _fmt(m["size_mb"], ".1f"),
            _fmt(m["load_s"], ".2f"),
        ]
        for name, m in rows.items()
    ]
    cost_header = [
        "engine",
        "provider",
        "enc ms p50",
        "p90",
        "dec ms/token p50",
        "p90",
        "e2e ms p90",
        "RTF",
        "tokens/s",
        "peak RSS MB",
        "size MB",
        "load s",
    ]
    notes = [
        f"WER: {clips['eval']} eval clips ({clips['long_form']} long-form)"
        + "".join(
            f"; {name}: {e['transcripts']}"
            for name, e in engines.items()
            if e.get("transcripts", "").startswith("the reference")
        )
        + ". Latency: "
        f"{len(clips['latency'])} clips x {clips['repeats']} repeats after "
        f"{clips['warmup_runs_per_engine']} warm-up run(s), engines interleaved, "
        f"threads {result.run['threads'] or 'ORT default'}. Speed = median of per-clip time "
        "ratios measured back to back (>1: faster); dWER in points.",
        *(f"peer skipped: {k}: {v}" for k, v in result.run["peers_skipped"].items()),
        *(
            f"{name}: NPU wanted, ran on CPU: {e['fallback']}"
            for name, e in engines.items()
            if e.get("fallback")
        ),
        *(
            f"{name}: quantized outside its held-back WER budget (budget_met 0; see its "
            "QUANTIZATION.md)"
            for name, m in rows.items()
            if m.get("budget_met") == 0
        ),
        f"bench took {result.run['wall_s']:.0f} s",
    ]
    return "\n".join([*_table(header, ratios), "", *_table(cost_header, costs), "", *notes])
