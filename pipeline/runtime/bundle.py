"""What a bundle, a compiled directory and a release are on disk, opened and checked once.

A bundle is the exported (or quantized) graphs with their tokenizer, mel filters and
`bundle.json`; a compiled directory is the compile stage's record pointing at its bundle; a
release holds a bundle's files with the compiled ones under `npu/`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.errors import UserError
from pipeline.fsutil import file_record, read_json_object, sha256_file
from pipeline.layout import (
    BUNDLE_FILE,
    COMPILE_FILE,
    MEL_FILTERS_FILE,
    NPU_DIR,
    PROVIDER_OPTIONS_FILE,
    TOKENIZER_FILE,
    graph_file,
)
from pipeline.npu import vitisai
from pipeline.providers import VITISAI_PROVIDER
from pipeline.runtime.decoding import DecodingSpec
from pipeline.runtime.whisper_io import GRAPHS, WhisperDims


@dataclass(frozen=True)
class Bundle:
    root: Path
    meta: dict[str, Any]
    dims: WhisperDims
    decoding: DecodingSpec

    @classmethod
    def load(cls, root: Path) -> Bundle:
        root = Path(root)
        meta_file = root / BUNDLE_FILE
        if not meta_file.is_file():
            raise UserError(f"{root}: not a whisper-npu bundle (no {BUNDLE_FILE})")
        meta = read_json_object(meta_file)
        for name in (*map(graph_file, GRAPHS), TOKENIZER_FILE, MEL_FILTERS_FILE):
            if not (root / name).is_file():
                raise UserError(f"{root}: bundle is missing {name}")
        try:
            dims = WhisperDims(**meta["dims"])
            decoding = DecodingSpec.from_json(meta["decoding"])
        except (KeyError, TypeError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"[:120]
            raise UserError(f"{meta_file}: not a bundle record ({reason})") from None
        numbers = [
            *decoding.prefix,
            *decoding.suppress_tokens,
            *decoding.begin_suppress_tokens,
            decoding.eot,
            decoding.no_timestamps,
            decoding.max_length,
            decoding.max_initial_timestamp_index or 0,
        ]
        if not all(_count(v, 1) for v in vars(dims).values()) or not all(
            _count(v, 0) for v in numbers
        ):
            raise UserError(f"{meta_file}: dims and decoding must hold non-negative integers")
        if "files" in meta:
            file_record(meta_file, meta["files"])
        return cls(root, meta, dims, decoding)


def _count(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


@dataclass(frozen=True)
class Artifact:
    """A bundle and, when the path is a compiled or release directory, its compiled files."""

    bundle: Bundle
    compiled: Path | None = None
    record: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def open(cls, path: Path) -> Artifact:
        if (path / NPU_DIR / COMPILE_FILE).is_file():
            path = path / NPU_DIR
        if not (path / COMPILE_FILE).is_file():
            return cls(Bundle.load(path))
        record = read_json_object(path / COMPILE_FILE)
        if not isinstance(record.get("bundle"), str):
            raise UserError(f"{path / COMPILE_FILE}: names no bundle")
        try:
            bundle_root = (path / record["bundle"]).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
            raise UserError(f"{path / COMPILE_FILE}: bundle {record['bundle']!r}: {exc}") from None
        bundle = Bundle.load(bundle_root)
        if sha256_file(bundle.root / BUNDLE_FILE) != record.get("bundle_sha256"):
            raise UserError(
                f"{path}: compiled from another {BUNDLE_FILE} than {bundle.root}'s; "
                "compile that bundle again"
            )
        return cls(bundle, path, record)

    def cpu_reason(self) -> str | None:
        """Why this compiled artifact cannot use the NPU here; None when it can or is no
        compiled artifact."""
        if self.compiled is None:
            return None
        forecast = self.record.get("forecast")
        no_npu = forecast.get("no_npu_reason") if isinstance(forecast, dict) else None
        if no_npu:
            return str(no_npu)
        if not vitisai.ep_available():
            return f"{VITISAI_PROVIDER} not available"
        return None

    def options(self) -> dict[str, dict[str, str]]:
        assert self.compiled is not None
        source = self.compiled / PROVIDER_OPTIONS_FILE
        stored = read_json_object(source)
        if not all(isinstance(stored.get(name), dict) for name in GRAPHS):
            raise UserError(f"{source}: expected options for each of {', '.join(GRAPHS)}")
        return {name: vitisai.resolve_options(stored[name], self.compiled) for name in GRAPHS}

    def context_models(self) -> dict[str, Path]:
        """EPContext models the compile stage dumped, which load without recompiling."""
        assert self.compiled is not None
        found = {name: self.compiled / f"{name}_ctx.onnx" for name in GRAPHS}
        return {name: file for name, file in found.items() if file.is_file()}
