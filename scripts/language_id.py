"""The bench's multilingual pass alone: language-ID accuracy and per-language WER (CER where
words are not space-separated) of one multilingual bundle on the built-in multilingual set,
against faster-whisper on the same CTranslate2 weights and the same clips.

    python scripts/language_id.py --bundle B --set DIR [--ct2 DIR [--int8]] [--threads N]
                                  [--json OUT] [--clips OUT.jsonl]

`--set` is a `data_languages` output, or a directory to build the set into from
calibration/multilingual_eval.tsv (espeak-ng) when it holds none yet. `--ct2` is the directory
the bundle's model was converted from (for `builtin:base`, the reassembled cache
`pipeline.sources.builtin` prints); without it only the bundle runs. The scoring, the engines
and the table are `pipeline.bench.languages`, as in the bench stage.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from pipeline.bench.languages import (
    evaluate_engines,
    format_languages,
    load_language_clips,
    summarise_languages,
    write_language_clips,
)
from pipeline.bench.records import EngineSpec
from pipeline.sources.multilingual import build_multilingual_set
from whisper_npu.bundle import BundleRecord
from whisper_npu.layout import MANIFEST_FILE

SENTENCES = Path(__file__).resolve().parent.parent / "calibration" / "multilingual_eval.tsv"


def engines(args: argparse.Namespace, variant: str) -> list[EngineSpec]:
    specs = [EngineSpec(variant, "ours", args.bundle, args.threads, cpu_only=True)]
    if args.ct2:
        specs.append(EngineSpec("faster_whisper", "faster_whisper", args.ct2, args.threads))
        if args.int8:
            specs.append(
                EngineSpec(
                    "faster_whisper_int8",
                    "faster_whisper",
                    args.ct2,
                    args.threads,
                    compute_type="int8",
                )
            )
    return specs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--set", type=Path, required=True)
    parser.add_argument("--ct2", type=Path, help="CTranslate2 weights for faster-whisper")
    parser.add_argument("--int8", action="store_true", help="faster-whisper int8 as well")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path, help="bench.json's `languages` section, alone")
    parser.add_argument("--clips", type=Path, help="the per-clip rows (JSON Lines)")
    args = parser.parse_args()
    record = BundleRecord.load(args.bundle)
    if not (args.set / MANIFEST_FILE).is_file():
        build_multilingual_set(SENTENCES, args.set)
    clips = load_language_clips(args.set, record.decoding.languages, None)
    if clips is None:
        raise SystemExit(f"{args.set}: built for an English-only model")
    start = time.perf_counter()
    rows = evaluate_engines(engines(args, record.variant), clips)
    seconds = time.perf_counter() - start
    report = summarise_languages(rows)
    note = f"{len(clips.ids)} clips, {seconds:.0f} s, {args.threads} thread(s)"
    print(format_languages(report, note))
    if args.json:
        section = {
            engine: {k: v.to_json() for k, v in row.items()} for engine, row in report.items()
        }
        args.json.write_text(json.dumps(section, indent=2, ensure_ascii=False) + "\n")
    if args.clips:
        write_language_clips(args.clips, rows)


if __name__ == "__main__":
    main()
