"""The `model` stage: any Whisper source → one transformers `save_pretrained` directory.

Sources: `builtin:tiny.en` / `builtin:base` (CTranslate2 weights shipped in packages; see
`pipeline.sources.builtin`), a local CTranslate2 directory, a local transformers directory, or
a hub id. Weights are only ever read from safetensors and remote code is never trusted, so no
pickle runs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from transformers import WhisperForConditionalGeneration, WhisperProcessor

from pipeline.config import ModelParams
from pipeline.provenance import package_versions
from pipeline.sources.builtin import builtin_dir, source_hashes
from pipeline.sources.ct2 import convert_ct2_whisper
from pipeline.sources.hub import repo_info
from whisper_npu.errors import UserError
from whisper_npu.fsutil import atomic_dir, sha256_file, write_json
from whisper_npu.layout import SOURCE_FILE

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def classify_source(source: str) -> tuple[str, Path | str]:
    """('ct2' | 'transformers' | 'hub', location) for a `model.source` string."""
    if source.startswith("builtin:"):
        return "ct2", builtin_dir(source)
    path = Path(source).expanduser()
    if path.is_dir():
        if (path / "model.bin").is_file() and not (path / "model.safetensors").exists():
            return "ct2", path
        config = _read_config(path / "config.json")
        if config.get("model_type") == "whisper":
            _refuse_remote_code(config, str(path))
            return "transformers", path
        raise UserError(
            f"{path}: not a Whisper model directory "
            "(no CTranslate2 model.bin, no whisper config.json)"
        )
    if path.exists() or not HUB_ID.match(source):
        raise UserError(
            f"{source!r}: not a model directory, built-in name, "
            "or hub id like openai/whisper-tiny.en"
        )
    return "hub", source


def _read_config(config: Path) -> dict[str, Any]:
    """A model directory's config.json as a mapping ({} when there is none)."""
    if not config.is_file():
        return {}
    try:
        loaded = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{config}: unreadable model config ({type(exc).__name__})") from None
    if not isinstance(loaded, dict):
        raise UserError(f"{config}: model config is not a JSON object")
    return loaded


def _refuse_remote_code(config: dict[str, Any], where: str) -> None:
    """`auto_map` names Python classes to import from the model's own files: never run them."""
    if "auto_map" in config:
        raise UserError(f"{where}: config.json asks for remote code (auto_map); refusing it")


def _check_hub(repo_id: str, revision: str) -> None:
    """Reach the hub once first (`pipeline.sources.hub`), and refuse repos that only ship
    pickled weights."""
    info = repo_info(repo_id, revision, "model")
    _refuse_remote_code(info.config or {}, f"hub model {repo_id!r}")
    files = {sibling.rfilename for sibling in info.siblings or []}
    if not any(name.endswith(".safetensors") for name in files):
        raise UserError(
            f"hub model {repo_id!r} has no safetensors weights; refusing pickled checkpoints"
        )


def _load_transformers(location: str | Path, revision: str | None) -> tuple[Any, Any]:
    """Safetensors only, never remote code; offline or missing models become one line."""
    kwargs: dict[str, Any] = {"revision": revision, "trust_remote_code": False}
    try:
        model = WhisperForConditionalGeneration.from_pretrained(
            location, use_safetensors=True, **kwargs
        )
        processor = WhisperProcessor.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        where = "hub model" if isinstance(location, str) else "model directory"
        raise UserError(f"cannot load {where} {str(location)!r}: {first}") from None
    return model, processor


def fetch_model(params: ModelParams, out_dir: Path) -> dict[str, Any]:
    """Write the model, processor and generation config to `out_dir`, plus source.json."""
    kind, location = classify_source(params.source)
    with atomic_dir(Path(out_dir)) as scratch:
        if kind == "ct2":
            convert_ct2_whisper(Path(location), scratch)
            fingerprint = source_hashes(params.source, Path(location))
        else:
            if kind == "hub":
                _check_hub(str(location), params.revision)
            model, processor = _load_transformers(
                location, params.revision if kind == "hub" else None
            )
            model.save_pretrained(scratch, safe_serialization=True)
            processor.save_pretrained(scratch)
            fingerprint = {}
        record = {
            "source": params.source,
            "kind": kind,
            "revision": params.revision if kind == "hub" else None,
            "source_sha256": fingerprint,
            "model_sha256": sha256_file(scratch / "model.safetensors"),
            "versions": package_versions(("transformers", "torch", "tokenizers")),
        }
        write_json(scratch / SOURCE_FILE, record)
    return record
