"""The `calibrate` stage and the calibration readers the quantizers consume.

The stage runs the fp32 bundle over the calibration set and keeps the real inputs: the
encoder's log-mels, stored as they are, and for the decoder the greedy token path of each clip
with a few sampled steps. A decoder step's full feed (its self-attention cache and the cross
K/V) is ~24 MB for tiny.en, so it is not stored: the reader replays the fp32 bundle along the
recorded path, which reproduces the exact inputs. The first clips calibrate; the next ones are
held back for the quantize stage's WER budget and never calibrate anything, as are the degraded
copies of some of them (the conditions stage's holdback sets: noise, rooms), and, for a
multilingual model, the multilingual set's held-back half, each clip in its language. The fp32
bundle's transcripts of those are made here, once, rather than once per quantized variant.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import datasets
import numpy as np
from tqdm import tqdm

from pipeline.config import CalibrateParams
from pipeline.sources.speech_sets import clip_samples, load_saved_set
from pipeline.throughput import transcribe_all
from whisper_npu.bundle import Bundle, CalibrationManifest, HeldBackTexts
from whisper_npu.decoding import greedy_decode
from whisper_npu.errors import UserError
from whisper_npu.features import log_mel
from whisper_npu.fsutil import atomic_dir, read_json, write_json
from whisper_npu.layout import BUNDLE_FILE, MANIFEST_FILE, MELS_FILE, STEPS_FILE
from whisper_npu.transcriber import OrtRunner, Transcriber, read_npy
from whisper_npu.whisper_io import ENCODER_INPUT, N_FRAMES

if TYPE_CHECKING:  # the sensitivity stage reads calibrations and needs no degraded sets
    from pipeline.sources.condition_sets import ConditionSet
    from pipeline.sources.multilingual import LanguageHalf

CLEAN = "clean"  # the held-back clips as recorded, beside the degraded conditions
LANGUAGES = "multilingual"  # the multilingual set's held-back half, beside them


def _sampled_positions(fed: int, count: int) -> list[int]:
    """`count` decoder positions spread over a path of `fed` steps, first and last included."""
    return sorted({round(float(x)) for x in np.linspace(0, fed - 1, num=min(count, fed))})


def _check_held_back(conditions: Sequence[ConditionSet], holdout_ids: list[str]) -> None:
    """A degraded clip must be a held-back one: a clip that calibrated the quantizer would judge
    it on what it was fitted to."""
    held = set(holdout_ids)
    for found in conditions:
        if found.name in (CLEAN, LANGUAGES):
            raise UserError(f"a holdback condition is named {found.name!r}, a held-back set's name")
        if strays := [clip for clip in found.speech["id"] if clip not in held]:
            raise UserError(
                f"condition {found.name!r} degrades {strays[0]}, which is not a held-back clip "
                "(the conditions stage and calibrate.clips/holdout disagree)"
            )


def _fp32_texts(bundle_dir: Path, sets: dict[str, datasets.Dataset]) -> dict[str, list[str]]:
    """The fp32 bundle's transcript of every clip of every set, in one pass of its workers; a
    set with a `language` column (the multilingual set's) is transcribed in each clip's."""
    samples = [clip_samples(row) for speech in sets.values() for row in speech]
    languages = [
        language
        for speech in sets.values()
        for language in (
            speech["language"] if "language" in speech.column_names else [None] * len(speech)
        )
    ]
    transcripts = transcribe_all(bundle_dir, samples, languages)
    shown = tqdm(transcripts, total=len(samples), desc="held-back (fp32 bundle)", unit="clip")
    texts = iter([transcript.text for transcript in shown])
    return {name: list(islice(texts, len(speech))) for name, speech in sets.items()}


@dataclass(frozen=True)
class HeldBackSets:
    """What is held back beside the clean clips: their degraded copies (the conditions stage's
    holdback sets) and a multilingual model's held-back half of the multilingual set."""

    conditions: Sequence[ConditionSet] = ()
    languages: LanguageHalf | None = None


def run_calibration(
    params: CalibrateParams,
    bundle_dir: Path,
    data_dir: Path,
    out_dir: Path,
    held_back: HeldBackSets = HeldBackSets(),
) -> CalibrationManifest:
    """Write encoder_inputs.npy, decoder_steps.json and manifest.json to `out_dir`, the
    manifest with the fp32 transcripts of the held-back clips and of `held_back`'s sets."""
    conditions, languages = held_back.conditions, held_back.languages
    calibration = load_saved_set(data_dir, "calibration")
    needed = params.clips + params.holdout
    if len(calibration) < needed:
        raise UserError(
            f"calibration set has {len(calibration)} clips; "
            f"calibrate.clips + calibrate.holdout = {needed}"
        )
    holdout = calibration.select(range(params.clips, needed))
    _check_held_back(conditions, list(holdout["id"]))
    transcriber = Transcriber.from_bundle(bundle_dir)
    spec = transcriber.spec()
    mels, paths = [], []
    for index in tqdm(range(params.clips), desc="calibrate (fp32 bundle)", unit="clip"):
        samples = clip_samples(calibration[index])
        features = log_mel(samples, transcriber.mel_filters, pad_to_window=True)[None]
        tokens = greedy_decode(transcriber.runner, spec, features, timestamps=False)
        fed = [*spec.prefix, spec.no_timestamps, *tokens]
        mels.append(features[0])
        paths.append(
            {
                "clip": index,
                "id": calibration[index]["id"],
                "tokens": fed,
                "positions": _sampled_positions(len(fed), params.decoder_steps_per_clip),
            }
        )
    held = {CLEAN: holdout, **{c.name: c.speech for c in conditions}}
    if languages is not None:
        held[LANGUAGES] = languages.speech
    texts = _fp32_texts(bundle_dir, held)
    with atomic_dir(Path(out_dir)) as scratch:
        np.save(scratch / MELS_FILE, np.stack(mels).astype(np.float32))
        write_json(scratch / STEPS_FILE, paths)
        manifest = CalibrationManifest(
            bundle_sha256=transcriber.bundle.sha256(),
            calibration_clips=[p["id"] for p in paths],
            holdout_clips=list(holdout["id"]),
            holdout_fp32_texts=texts[CLEAN],
            decoder_steps=sum(len(p["positions"]) for p in paths),
            bytes={name: (scratch / name).stat().st_size for name in (MELS_FILE, STEPS_FILE)},
            conditions={
                c.name: HeldBackTexts(
                    clips=list(c.speech["id"]),
                    fp32_texts=texts[c.name],
                    arrow_sha256=c.entry.arrow_sha256,
                )
                for c in conditions
            },
            languages=None
            if languages is None
            else HeldBackTexts(
                clips=list(languages.speech["id"]),
                fp32_texts=texts[LANGUAGES],
                arrow_sha256=languages.arrow_sha256,
            ),
        )
        manifest.save(scratch)
    return manifest


class CalibrationSet:
    """The saved calibration inputs, with checks that they fit the bundle being quantized."""

    def __init__(self, root: Path) -> None:
        root = Path(root)
        if not (root / MANIFEST_FILE).is_file():
            raise UserError(f"{root}: no calibration set here (run `whisper-npu calibrate` first)")
        self.root = root
        self.manifest = CalibrationManifest.load(root)
        self.mels = read_npy(root / MELS_FILE, mmap=True)
        self.paths = read_json(root / STEPS_FILE, 1 << 30, "decoder steps")
        if self.mels.ndim != 3 or not isinstance(self.paths, list):
            raise UserError(f"{root}: malformed calibration set (run `whisper-npu calibrate`)")
        if len(self.mels) == 0 or len(self.paths) != len(self.mels):
            raise UserError(f"{root}: empty or inconsistent calibration set")
        self.holdout_ids = self.manifest.holdout_clips
        self.holdout_fp32_texts = self.manifest.holdout_fp32_texts
        if len(self.holdout_ids) != len(self.holdout_fp32_texts):
            raise UserError(
                f"{root}: held-back clips without their fp32 transcripts "
                "(run `whisper-npu calibrate` again)"
            )

    def check_fits(self, bundle: Bundle) -> None:
        """The inputs were recorded through this very bundle (the fp32 one), at its mel shape."""
        if bundle.sha256() != self.manifest.bundle_sha256:
            raise UserError(
                f"{self.root}: recorded through another {BUNDLE_FILE} than {bundle.root}'s "
                "(run `whisper-npu calibrate` again)"
            )
        expected = (bundle.record.dims.n_mels, N_FRAMES)
        if tuple(self.mels.shape[1:]) != expected:
            raise UserError(
                f"{self.root}: calibration mels are {self.mels.shape[1:]}, "
                f"the bundle needs {expected}"
            )

    def encoder_feeds(self, limit: int | None = None) -> Iterator[dict[str, np.ndarray]]:
        for mel in self.mels[:limit]:
            yield {ENCODER_INPUT: np.array(mel[None], dtype=np.float32)}

    def decoder_feeds(
        self, bundle: Bundle, limit: int | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """Replay the fp32 bundle along each recorded path, yielding the feeds at sampled steps."""
        runner = OrtRunner(bundle)
        names = [node.name for node in runner.decoder.get_inputs()]
        produced = 0
        for path, mel in zip(self.paths, self.mels, strict=True):
            runner.encode(np.array(mel[None], dtype=np.float32))
            wanted = set(path["positions"])
            for position, token in enumerate(path["tokens"]):
                if position in wanted:
                    runner.embed(token, position)
                    yield {name: runner.buffers[name].copy() for name in names}
                    produced += 1
                    if limit is not None and produced >= limit:
                        return
                runner.decode_step(token, position)


class FeedReader:
    """onnxruntime/Quark CalibrationDataReader over a feed iterator factory (rewindable)."""

    def __init__(self, make_feeds: Any) -> None:
        self.make_feeds = make_feeds
        self.feeds = make_feeds()

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)

    def rewind(self) -> None:
        self.feeds = self.make_feeds()
