"""Language-ID accuracy per language on the built-in multilingual set: a multilingual bundle
against faster-whisper's `detect_language` on the same CTranslate2 weights and the same clips.

    python scripts/language_id.py --bundle B --ct2 DIR --set DIR [--json OUT]

`--ct2` is the directory the bundle's model was converted from (for `builtin:base`, the
reassembled cache `pipeline.sources.builtin` prints); `--set` is built from
calibration/multilingual_eval.tsv when it does not exist yet. Both detectors see the first
30 s window of each 16 kHz clip and take the most probable language token.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import datasets

from pipeline.runtime.features import log_mel
from pipeline.runtime.language import detect_language
from pipeline.runtime.transcriber import Transcriber
from pipeline.sources.multilingual import SET_NAME, accuracy_by_language, build_multilingual_set
from pipeline.sources.speech_sets import clip_samples

SENTENCES = Path(__file__).resolve().parent.parent / "calibration" / "multilingual_eval.tsv"


def load_set(folder: Path) -> datasets.Dataset:
    if (folder / SET_NAME / "dataset_info.json").is_file():
        return datasets.load_from_disk(str(folder / SET_NAME))
    return build_multilingual_set(SENTENCES, folder)


def bundle_languages(bundle: Path, speech: datasets.Dataset) -> list[str]:
    transcriber = Transcriber.from_bundle(bundle, threads=1)
    spec = transcriber.bundle.record.decoding
    found = []
    for row in speech:
        features = log_mel(clip_samples(row), transcriber.mel_filters, pad_to_window=True)[None]
        found.append(detect_language(transcriber.runner, spec, features).code)
    return found


def faster_whisper_languages(ct2_dir: Path, speech: datasets.Dataset) -> list[str]:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(ct2_dir), device="cpu", compute_type="float32", cpu_threads=1)
    return [model.detect_language(audio=clip_samples(row))[0] for row in speech]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True)
    parser.add_argument("--ct2", type=Path, required=True)
    parser.add_argument("--set", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    speech = load_set(args.set)
    expected = [str(code) for code in speech["language"]]
    found_by: dict[str, list[str]] = {}
    report: dict[str, object] = {}
    for name, detect in (
        ("bundle", lambda: bundle_languages(args.bundle, speech)),
        ("faster-whisper", lambda: faster_whisper_languages(args.ct2, speech)),
    ):
        start = time.perf_counter()
        found = found_by[name] = detect()
        report[name] = {
            "accuracy": accuracy_by_language(expected, found),
            "found": dict(zip(speech["id"], found, strict=True)),
            "seconds": round(time.perf_counter() - start, 1),
        }
    ours, peer = found_by["bundle"], found_by["faster-whisper"]
    agree = sum(a == b for a, b in zip(ours, peer, strict=True))
    report["agreement"] = {"clips": len(expected), "same_language": agree}
    ours_accuracy = accuracy_by_language(expected, ours)
    peer_accuracy = accuracy_by_language(expected, peer)
    for code, accuracy in ours_accuracy.items():
        print(f"{code:4} bundle {accuracy:6.1%}  faster-whisper {peer_accuracy[code]:6.1%}")
    print(f"same language on {agree}/{len(expected)} clips")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
