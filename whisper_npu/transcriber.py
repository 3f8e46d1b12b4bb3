"""Run an exported bundle with ONNX Runtime: numpy + onnxruntime + tokenizers, no torch.

Every tensor lives in a numpy buffer allocated once and bound to the sessions with IO binding,
so the encoder writes cross K/V straight where the decoder reads them, and a decode step copies
only the new token's K/V slice into the cache. The token and position embeddings are looked up
here, from the bundle's memory-mapped tables, so the decoder graph takes floats only.

`Transcriber.from_artifact` opens what the pipeline ships: a bundle, a compiled directory (the
`compile` stage's output, pointing at its bundle) or a release (bundle files + `npu/`). A
compiled artifact runs on the VitisAI EP with its compiled provider options where the EP is
installed, and on the CPU otherwise, saying so in `execution["fallback"]`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tokenizers import Tokenizer

from whisper_npu import vitisai
from whisper_npu.alignment import WordSplitter
from whisper_npu.bundle import Artifact, Bundle
from whisper_npu.decoding import (
    TRANSCRIBE,
    DecodingSpec,
    TranscribeOptions,
    Window,
    WindowDecoder,
    with_prompt,
)
from whisper_npu.errors import UserError
from whisper_npu.execution import Device, Execution, Host, NpuSetup, checked, choose
from whisper_npu.features import WINDOW_SAMPLES, log_mel
from whisper_npu.host import import_onnxruntime
from whisper_npu.language import AUTO, detect_language, first_window
from whisper_npu.layout import (
    MEL_FILTERS_FILE,
    POSITION_EMBEDDING_FILE,
    TOKEN_EMBEDDING_FILE,
    TOKENIZER_FILE,
    graph_file,
)
from whisper_npu.providers import CPU_PROVIDER, VITISAI_PROVIDER
from whisper_npu.whisper_io import (
    ALIGNMENT,
    CACHE_MASK,
    CROSS_K,
    CROSS_V,
    EMBEDDED_TOKEN,
    ENCODER_INPUT,
    GRAPHS,
    LOGITS,
    MASK_OFF,
    N_FFT,
    N_FRAMES,
    NEW_K,
    NEW_V,
    SELF_K,
    SELF_V,
)

if TYPE_CHECKING:
    import onnxruntime as ort


# Idle intra-op threads do not busy-wait for work. ORT's default (they spin) costs nothing on
# an idle machine and much on a busy one, where the spinning threads take the cores the work
# needs: `python -m scripts.busy_bench` (one core kept busy, 2-core machine, 12 clips x 3) gave
# fp32 567 vs 570 ms idle and 772 vs 951 ms busy without spinning, cpu-int8 499 vs 499 idle and
# 667 vs 774 busy (faster-whisper int8: 598 idle, 788 busy).
SPIN = False


def session_options(
    threads: int | None, custom_ops: str | None = None, spin: bool | None = SPIN
) -> ort.SessionOptions:
    """ORT's options for one graph; `spin`: whether idle intra-op threads busy-wait for work
    (None: ORT's default, which spins)."""
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    if custom_ops == "quark":
        # Quark's BFloat16 Q/DQ ops, which only Quark's library runs (on the CPU).
        from quark.onnx import get_library_path

        options.register_custom_ops_library(get_library_path())
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    if spin is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return options


@dataclass
class OrtRunner:
    """The `Runner` protocol on two ONNX Runtime sessions with preallocated, bound buffers."""

    bundle: Bundle
    providers: list[str] = field(default_factory=lambda: [CPU_PROVIDER])
    threads: int | None = None
    spin: bool | None = SPIN  # see SPIN
    # Per graph: another model file (an EPContext model) and the providers' options.
    graph_files: dict[str, Path] = field(default_factory=dict)
    graph_options: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        dims = self.bundle.record.dims
        self.encoder, self.decoder = (self._session(name) for name in GRAPHS)
        root = self.bundle.root
        self.token_embedding = _embedding_table(
            root / TOKEN_EMBEDDING_FILE, dims.token_embedding_shape()
        )
        self.position_embedding = _embedding_table(
            root / POSITION_EMBEDDING_FILE, dims.position_embedding_shape()
        )
        zeros = np.zeros
        self.buffers: dict[str, np.ndarray] = {
            ENCODER_INPUT: zeros((1, dims.n_mels, N_FRAMES), np.float32),
            CROSS_K: zeros(dims.cross_shape(), np.float32),
            CROSS_V: zeros(dims.cross_shape(), np.float32),
            EMBEDDED_TOKEN: zeros(dims.embedded_shape(), np.float32),
            SELF_K: zeros(dims.cache_shape(), np.float32),
            SELF_V: zeros(dims.cache_shape(), np.float32),
            CACHE_MASK: np.full((1, dims.max_decode_len), MASK_OFF, np.float32),
            LOGITS: zeros((1, dims.vocab_size), np.float32),
            NEW_K: zeros(dims.slice_shape(), np.float32),
            NEW_V: zeros(dims.slice_shape(), np.float32),
        }
        if dims.alignment_heads:
            self.buffers[ALIGNMENT] = zeros(dims.alignment_shape(), np.float32)
        self.encoder_binding = self._bind(self.encoder)
        self.decoder_binding = self._bind(self.decoder)

    def _session(self, name: str) -> ort.InferenceSession:
        """Open one graph, refused unless its I/O is the contract's for this bundle's dims (a
        swapped or foreign graph would otherwise run to an empty transcript)."""
        path = self.graph_files.get(name, self.bundle.root / graph_file(name))
        ort = import_onnxruntime()
        try:
            session = ort.InferenceSession(
                str(path),
                session_options(self.threads, self.bundle.record.custom_ops, self.spin),
                providers=self.providers,
                provider_options=self.graph_options.get(name),
            )
        except Exception as exc:  # ORT's own exception types derive from Exception only
            reason = (str(exc).strip() or type(exc).__name__).splitlines()[0][:200]
            raise UserError(f"{path}: not a loadable ONNX graph ({reason})") from None
        contract = getattr(self.bundle.record.dims, f"{name}_io")()
        for kind, nodes in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
            found = {node.name: list(node.shape) for node in nodes}
            expected = {tensor: shape for tensor, (shape, _) in contract[kind].items()}
            if found != expected:
                raise UserError(
                    f"{path}: not the {name} graph of this bundle: {kind} "
                    f"{_shapes(found)}, expected {_shapes(expected)}"
                )
        return session

    def _bind(self, session: ort.InferenceSession) -> ort.IOBinding:
        """Bind every graph input and output to its numpy buffer (shared memory on CPU)."""
        ort = import_onnxruntime()
        binding = session.io_binding()
        for node in session.get_inputs():
            binding.bind_ortvalue_input(
                node.name, ort.OrtValue.ortvalue_from_numpy(self.buffers[node.name])
            )
        for node in session.get_outputs():
            binding.bind_ortvalue_output(
                node.name, ort.OrtValue.ortvalue_from_numpy(self.buffers[node.name])
            )
        return binding

    @property
    def active_provider(self) -> str:
        """The provider the sessions were created with first (the EP, when it took them)."""
        return str(self.decoder.get_providers()[0])

    def encode(self, features: np.ndarray) -> None:
        self.buffers[ENCODER_INPUT][...] = features
        self.encoder.run_with_iobinding(self.encoder_binding)
        self.reset()

    def reset(self) -> None:
        """Every cache slot masked again; cross K/V stay bound for the next decode."""
        self.buffers[CACHE_MASK].fill(MASK_OFF)

    def embed(self, token: int, position: int) -> None:
        """The decoder's input for `token` at `position`: the sum of the two table rows (only
        those rows' pages of the mapped tables are read)."""
        np.add(
            self.token_embedding[token],
            self.position_embedding[position],
            out=self.buffers[EMBEDDED_TOKEN][0, 0],
        )

    def decode_step(self, token: int, position: int) -> np.ndarray:
        buffers = self.buffers
        self.embed(token, position)
        self.decoder.run_with_iobinding(self.decoder_binding)
        buffers[SELF_K][:, :, :, position] = buffers[NEW_K][:, :, :, 0]
        buffers[SELF_V][:, :, :, position] = buffers[NEW_V][:, :, :, 0]
        buffers[CACHE_MASK][0, position] = 0.0
        logits: np.ndarray = buffers[LOGITS][0]
        return logits

    def alignment(self) -> np.ndarray | None:
        """The alignment heads' cross-attention scores [heads, 1500] of the last decode_step
        (overwritten by the next), or None for a bundle exported without them."""
        return self.buffers.get(ALIGNMENT)


def _shapes(tensors: dict[str, list[Any]]) -> str:
    return ", ".join(f"{name}{shape}" for name, shape in sorted(tensors.items()))[:300]


@dataclass(frozen=True)
class Decoded:
    """A clip's decoded windows, the spec (prompt) they were decoded with, and the language:
    None for an English-only bundle, with its probability when it was detected."""

    windows: list[Window]
    spec: DecodingSpec
    language: str | None
    language_probability: float | None


@dataclass(frozen=True)
class Transcription:
    text: str
    tokens: list[int]
    language: str | None = None  # the language of the prompt (None: an English-only bundle)
    language_probability: float | None = None  # when detected (`language="auto"`)


def read_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """A .npy file (never pickled objects); memory-mapped, its pages are read when used."""
    try:
        array: np.ndarray = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: not a numpy array file ({str(exc)[:120]})") from None
    return array


def _embedding_table(path: Path, shape: list[int]) -> np.ndarray:
    """One of the decoder's host-side tables, memory-mapped, refused unless it is float32 of
    the contract's shape (the decoder would otherwise take the wrong rows or none)."""
    table = read_npy(path, mmap=True)
    if table.shape != tuple(shape) or table.dtype != np.float32:
        raise UserError(
            f"{path}: expected float32 of shape {tuple(shape)}, "
            f"got {table.dtype} of shape {table.shape}"
        )
    return table


def _mel_filters(bundle: Bundle) -> np.ndarray:
    """mel_filters.npy, refused unless it is the [n_fft/2+1, n_mels] float bank log_mel needs."""
    path = bundle.root / MEL_FILTERS_FILE
    filters = read_npy(path)
    shape = (N_FFT // 2 + 1, bundle.record.dims.n_mels)
    if filters.shape != shape or filters.dtype.kind != "f" or not np.isfinite(filters).all():
        raise UserError(f"{path}: expected finite floats of shape {shape}, got {filters.shape}")
    return filters


class Transcriber:
    """Audio (16 kHz mono float32) → text with one bundle and one `Runner`."""

    def __init__(self, bundle: Bundle, runner: Any, execution: Execution | None = None) -> None:
        self.bundle, self.runner = bundle, runner
        try:
            self.tokenizer = Tokenizer.from_file(str(bundle.root / TOKENIZER_FILE))
        except Exception as exc:  # tokenizers raises plain Exception
            reason = str(exc).strip()[:120] or type(exc).__name__
            raise UserError(f"{bundle.root}/tokenizer.json: not a tokenizer ({reason})") from None
        self.mel_filters = _mel_filters(bundle)
        self.execution = execution or Execution.cpu(Device.CPU, compiled=False)
        self.npu: NpuSetup | None = None  # how the NPU sessions were set up, when they were

    @classmethod
    def from_artifact(
        cls,
        path: Path,
        threads: int | None = None,
        device: Device = Device.AUTO,
        machine: Host | None = None,
    ) -> Transcriber:
        """A bundle, compiled or release directory, where `device` says (whisper_npu.execution:
        `auto` puts a compiled artifact on the NPU where it can run, a CPU-only variant and a
        bundle on the CPU, as they are meant to run)."""
        artifact = Artifact.open(Path(path))
        chosen = choose(artifact, device, machine or Host())
        if isinstance(chosen, Execution):
            return cls(artifact.bundle, OrtRunner(artifact.bundle, threads=threads), chosen)
        with vitisai.report_env():
            runner = OrtRunner(
                artifact.bundle,
                [VITISAI_PROVIDER, CPU_PROVIDER],
                threads=threads,
                graph_files=chosen.graph_files,
                graph_options={name: [opts, {}] for name, opts in chosen.options.items()},
            )
        made = cls(artifact.bundle, runner, checked(chosen, artifact, runner.active_provider))
        made.npu = chosen
        return made

    @classmethod
    def from_bundle(
        cls,
        root: Path,
        providers: list[str] | None = None,
        threads: int | None = None,
    ) -> Transcriber:
        bundle = Bundle.load(root)
        return cls(bundle, OrtRunner(bundle, providers or [CPU_PROVIDER], threads))

    def text(self, tokens: list[int]) -> str:
        words = [t for t in tokens if t < self.bundle.record.decoding.eot]
        text: str = self.tokenizer.decode(words, skip_special_tokens=True)
        return text.strip()

    def word_splitter(self, language: str | None) -> WordSplitter:
        """Tokens to words as faster-whisper splits them for `language` (None: English)."""
        return WordSplitter(self.tokenizer, self.bundle.record.decoding.eot, language or "en")

    def spec(self, language: str | None = None, task: str = TRANSCRIBE) -> DecodingSpec:
        """The bundle's decoding rules with the prompt for `language` (None: the bundle's
        default) and `task`; refuses what an English-only bundle cannot do."""
        return with_prompt(self.bundle.record.decoding, language, task)

    def check_prompt(self, options: TranscribeOptions) -> None:
        """Refuse, before any audio, a language, task or initial prompt this bundle cannot
        take, and word timestamps from a bundle without the alignment output."""
        self.spec(None if options.language == AUTO else options.language, options.task)
        self.previous_tokens(options.initial_prompt)
        self.check_words(options)

    def check_words(self, options: TranscribeOptions) -> None:
        if options.word_timestamps and not self.bundle.record.dims.alignment_heads:
            raise UserError(
                f"{self.bundle.root}: this bundle has no alignment output (exported before "
                "word timestamps): export it again for --word-timestamps"
            )

    def previous_tokens(self, prompt: str | None) -> tuple[int, ...]:
        """An initial prompt as OpenAI encodes it (" " + the stripped text), its last
        `max_previous` tokens; () for none or a blank one. Text that holds a special token
        (`<|endoftext|>`, a timestamp) is refused, as OpenAI's and transformers' tokenizers do."""
        if prompt is None or not prompt.strip():
            return ()
        spec = self.bundle.record.decoding
        try:
            ids = self.tokenizer.encode(" " + prompt.strip(), add_special_tokens=False).ids
        except Exception as exc:  # tokenizers raises plain Exception
            reason = str(exc).strip()[:120] or type(exc).__name__
            raise UserError(f"initial prompt: the tokenizer cannot encode it ({reason})") from None
        special = sorted({self.tokenizer.id_to_token(t) or str(t) for t in ids if t >= spec.eot})
        if special:
            raise UserError(f"initial prompt holds special tokens: {', '.join(special)[:200]}")
        return tuple(ids[-spec.max_previous :]) if spec.max_previous > 0 else ()

    def decode(self, samples: np.ndarray, options: TranscribeOptions) -> Decoded:
        """The decoded windows of a clip: one window without timestamps for up to 30 s (the
        log-mel of the clip padded to 30 s, as transformers computes it), else sequential
        windows with timestamps over the whole recording's log-mel. `language="auto"` is
        detected once, from the first window."""
        self.check_words(options)
        timed = samples.size > WINDOW_SAMPLES or options.timestamps or options.word_timestamps
        mel = log_mel(samples, self.mel_filters, pad_to_window=not timed)
        language, probability = options.language, None
        if language == AUTO:
            found = detect_language(self.runner, self.bundle.record.decoding, first_window(mel))
            language, probability = found.code, found.probability
        spec = self.spec(language, options.task)
        previous = self.previous_tokens(options.initial_prompt)
        decoder = WindowDecoder(self.runner, spec, self.text, options, previous)
        windows = list(decoder.windows(mel, samples, timestamps=timed))
        multilingual = bool(spec.languages)
        return Decoded(
            windows,
            spec,
            (language or spec.language) if multilingual else None,
            probability if multilingual else None,
        )

    def transcribe(
        self, samples: np.ndarray, language: str | None = None, task: str = TRANSCRIBE
    ) -> Transcription:
        """The pipeline's transcript (greedy, no guards): what parity and WER are measured on."""
        options = replace(TranscribeOptions.plain(), language=language, task=task)
        decoded = self.decode(samples, options)
        tokens = [token for window in decoded.windows for token in window.kept]
        return Transcription(
            self.text(tokens), tokens, decoded.language, decoded.language_probability
        )
