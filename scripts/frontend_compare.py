"""Two Whisper front-ends on the same weights, per degraded condition: OpenAI's and
transformers' (the clip padded with silence to 30 s, then the log-mel; this runtime's) against
faster-whisper's (the log-mel of the clip alone, 10 ms of silence appended, normalised to the
clip's own loudest frame, then padded with zeros to 3000 frames: its `FeatureExtractor` and
`pad_or_trim`, called here as they are).

Each clip (the clean eval set's short-form clips, then every condition of
`artifacts/conditions/eval`) is decoded greedily by the fp32 bundle from both log-mels; WER is
the bench's (whisper_npu.wer).

    python -m scripts.frontend_compare --root . [--out frontends.json]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline.bench.evaluate import load_eval_clips
from pipeline.bench.run import load_condition_clips
from whisper_npu.decoding import greedy_decode
from whisper_npu.features import WINDOW_SAMPLES, log_mel
from whisper_npu.transcriber import Transcriber
from whisper_npu.wer import clip_edits, total_edits

FrontEnd = Callable[[np.ndarray], np.ndarray]


def front_ends(transcriber: Transcriber) -> dict[str, FrontEnd]:
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.feature_extractor import FeatureExtractor

    extractor = FeatureExtractor(feature_size=transcriber.bundle.record.dims.n_mels)
    return {
        "audio padded (ours, openai, transformers)": lambda samples: log_mel(
            samples, transcriber.mel_filters, pad_to_window=True
        ),
        "log-mel padded (faster-whisper)": lambda samples: pad_or_trim(extractor(samples)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path("."))
    parser.add_argument("--out", type=Path, help="the figures (JSON) to write")
    args = parser.parse_args()
    artifacts = args.root / "artifacts"
    transcriber = Transcriber.from_bundle(artifacts / "bundles" / "fp32")
    spec = transcriber.spec()
    clean = load_eval_clips(artifacts / "data")
    short = [i for i, s in enumerate(clean.samples) if s.size <= WINDOW_SAMPLES]
    sets = {"clean": [(clean.samples[i], clean.references[i]) for i in short]}
    for found in load_condition_clips(artifacts / "conditions" / "eval"):
        sets[found.name] = list(zip(found.clips.samples, found.clips.references, strict=True))
    figures: dict[str, dict[str, float]] = {}
    for name, clips in sets.items():
        for front, features in front_ends(transcriber).items():
            edits = []
            for samples, reference in clips:
                mel = features(samples)[None].astype(np.float32)
                tokens = greedy_decode(transcriber.runner, spec, mel, timestamps=False)
                edits.append(clip_edits(reference, transcriber.text(tokens)))
            figures.setdefault(name, {})[front] = round(100 * total_edits(edits).wer, 2)
        print(name, figures[name], flush=True)
    if args.out:
        args.out.write_text(json.dumps(figures, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
