"""DVC stage `data_languages`: the built-in multilingual set (`datasets`), for the bench's
language-ID and per-language WER pass; for an English-only model, a manifest saying so."""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline.config import DEFAULT_PARAMS, load_params
from whisper_npu.entry import Command, run_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sentences",
        type=Path,
        required=True,
        help="language<TAB>espeak-ng voice<TAB>sentence per line",
    )
    parser.add_argument(
        "--model", type=Path, required=True, help="the model stage's output (multilingual?)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the set's directory to write")


def run(args: argparse.Namespace) -> object:
    from pipeline.sources.multilingual import build_language_set

    load_params(args.params)  # every stage validates params.yaml first, though this reads none
    manifest = build_language_set(args.sentences, args.model, args.out)
    return {k: v for k, v in manifest.items() if k != "arrow_sha256"}


COMMAND = Command(
    "data_languages",
    "build the multilingual set (language ID, per-language WER) for a multilingual model",
    add_arguments,
    run,
    params=DEFAULT_PARAMS,
    writes={"out": "directory"},
)

# Guarded: worker processes (spawn) import this module again under another name.
if __name__ == "__main__":
    run_stage(COMMAND)
