"""Degraded copies of the clean speech sets: noise, rooms, telephone lines, levels.

Each condition (params `conditions.define`, pipeline.config.Condition) is applied to a fixed
selection of clean clips, seeded per condition and clip, so the same params give the same
bytes on every machine and in any order. A condition's set is saved like the clean ones (same
`datasets` features, each clip keeping its clean clip's id and text) under
`<out>/<condition>/`, beside a manifest naming what made it.

The writer only, run by the `conditions` stage alone: the manifest's records and the loader the
other stages read the sets with are in pipeline.sources.condition_sets, so changing a
degradation reruns only this stage.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from scipy import signal
from tqdm import tqdm

from pipeline.config import (
    SPEED_OF_SOUND,
    BuiltinSet,
    Condition,
    DataParams,
    EspeakVoice,
    Params,
    Reverb,
)
from pipeline.sources.condition_sets import ConditionEntry, ConditionSetName, ConditionsManifest
from pipeline.sources.speech_sets import (
    FEATURES,
    clip_samples,
    load_saved_set,
    pick_latency_clips,
    read_lines,
    summarise,
)
from pipeline.sources.synthesis import synthesize
from whisper_npu.errors import UserError
from whisper_npu.fsutil import atomic_dir, sha256_tree
from whisper_npu.host import cpu_model
from whisper_npu.layout import MANIFEST_FILE
from whisper_npu.whisper_io import CHUNK_SECONDS, SAMPLE_RATE

# The degradations: float32 16 kHz mono in, float32 out, every step a pure function of its
# inputs and a generator seeded from stable integer keys, so any order or process gives the
# same bytes.

PEAK_LIMIT = 0.99  # the sets store 16-bit WAV, which clips at full scale
MU = 255  # G.711 μ-law, 8 bits a sample
TELEPHONE_RATE = 8000
TELEPHONE_BAND_HZ = (300.0, 3400.0)
# White noise through the classic 3-pole 1/f filter (J. O. Smith, "Spectral Audio Signal
# Processing", pink noise): -10 dB a decade from 10 Hz to 8 kHz, within about a dB.
PINK_B = (0.049922035, -0.095993537, 0.050612699, -0.004408786)
PINK_A = (1.0, -2.494956002, 2.017265875, -0.522189400)
PINK_WARMUP = 2048  # samples dropped: the slowest pole (0.995) has decayed by 60 dB in ~1400
REVERB_TAIL_S = 0.5  # the longest tail kept after a reverberated clip
MIC_HEIGHT_M = 1.2  # a seated talker's mouth and a table microphone
BABBLE_SENTENCES = Path("calibration/sentences_babble.txt")
# Six talkers in the room: accents, a female variant or two, different speaking rates.
BABBLE_VOICES = (
    EspeakVoice(engine="espeak-ng", voice="en-gb", words_per_minute=150),
    EspeakVoice(engine="espeak-ng", voice="en-us+f2", words_per_minute=170),
    EspeakVoice(engine="espeak-ng", voice="en-gb-scotland", words_per_minute=160),
    EspeakVoice(engine="espeak-ng", voice="en-029", words_per_minute=180),
    EspeakVoice(engine="espeak-ng", voice="en-us-nyc+f4", words_per_minute=155),
    EspeakVoice(engine="espeak-ng", voice="en-gb-x-rp", words_per_minute=175),
)


def stable_key(text: str) -> int:
    """A name as a seed word: Python's hash() is salted per process, crc32 is not."""
    return zlib.crc32(text.encode())


def clip_rng(seed: int, condition: str, clip_id: str) -> np.random.Generator:
    return np.random.default_rng([seed, stable_key(condition), stable_key(clip_id)])


def power(samples: np.ndarray) -> float:
    """Mean square, in float64 so a long clip's sum keeps its digits."""
    return float(np.mean(np.square(samples, dtype=np.float64)))


def white_noise(rng: np.random.Generator, length: int) -> np.ndarray:
    return rng.standard_normal(length)


def pink_noise(rng: np.random.Generator, length: int) -> np.ndarray:
    white = rng.standard_normal(length + PINK_WARMUP)
    filtered: np.ndarray = signal.lfilter(PINK_B, PINK_A, white)
    return filtered[PINK_WARMUP:]


def babble_noise(rng: np.random.Generator, length: int, track: np.ndarray) -> np.ndarray:
    """`length` samples of the babble track from a seeded offset, wrapping around its end."""
    start = int(rng.integers(track.size))
    return np.take(track, np.arange(start, start + length), mode="wrap")


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """`speech` plus `noise` scaled to `snr_db` below it. Both powers are means over the whole
    clip, pauses included: no voice-activity detector to depend on, and the noise is steady
    under every word of a clip."""
    gain = math.sqrt(power(speech) / (power(noise) * 10 ** (snr_db / 10)))
    return (speech + gain * noise).astype(np.float32)


def limit_peak(samples: np.ndarray) -> np.ndarray:
    """Scaled down whole if its peak would clip in the saved 16-bit WAV (levels keep their
    ratios, so the SNR holds)."""
    peak = float(np.max(np.abs(samples)))
    return samples if peak <= PEAK_LIMIT else (samples * (PEAK_LIMIT / peak)).astype(np.float32)


def room_impulse_response(reverb: Reverb) -> np.ndarray:
    """The shoebox's impulse response from the talker to a microphone at the room's centre.

    The image method sums its sources on `num_threads` threads, and the sum's order (so its
    last bits) follows the thread count: it runs on one, and gives the same bytes anywhere."""
    try:
        import pyroomacoustics as pra
    except ImportError:
        raise UserError("pyroomacoustics not installed; pip install -e .[pipeline]") from None
    x, y, _ = reverb.room_m
    absorption, max_order = pra.inverse_sabine(reverb.rt60_s, reverb.room_m, c=SPEED_OF_SOUND)
    room = pra.ShoeBox(
        list(reverb.room_m),
        fs=SAMPLE_RATE,
        materials=pra.Material(absorption),
        max_order=max_order,
    )
    room.add_source([x / 2 + reverb.distance_m, y / 2, MIC_HEIGHT_M])
    room.add_microphone([x / 2, y / 2, MIC_HEIGHT_M])
    threads = pra.constants.get("num_threads")
    pra.constants.set("num_threads", 1)
    try:
        room.compute_rir()
    finally:
        pra.constants.set("num_threads", threads)
    return np.asarray(room.rir[0][0], dtype=np.float64)


def reverberate(samples: np.ndarray, rir: np.ndarray, rt60_s: float) -> np.ndarray:
    """The clip in the room, its reverberant tail kept up to `REVERB_TAIL_S`, at the dry
    clip's RMS (a room changes the sound, not how loud the set is)."""
    tail = round(min(rt60_s, REVERB_TAIL_S) * SAMPLE_RATE)
    wet: np.ndarray = signal.fftconvolve(samples.astype(np.float64), rir)[: samples.size + tail]
    return (wet * math.sqrt(power(samples) / power(wet))).astype(np.float32)


def mu_law(samples: np.ndarray) -> np.ndarray:
    """8-bit μ-law encoded and decoded, a sign and 7 bits of log-magnitude as in G.711: the
    line's quantisation noise, which follows the level."""
    clipped = np.clip(samples, -1.0, 1.0)
    code = np.round(np.log1p(MU * np.abs(clipped)) / math.log1p(MU) * 127)
    decoded: np.ndarray = np.sign(clipped) * np.expm1(code / 127 * math.log1p(MU)) / MU
    return decoded


def telephone(samples: np.ndarray) -> np.ndarray:
    """A narrow-band call: 8 kHz, the 300-3400 Hz channel, μ-law, back to 16 kHz at the same
    length."""
    narrow = signal.resample_poly(samples.astype(np.float64), TELEPHONE_RATE, SAMPLE_RATE)
    band = signal.butter(4, TELEPHONE_BAND_HZ, btype="bandpass", fs=TELEPHONE_RATE, output="sos")
    line = mu_law(signal.sosfilt(band, narrow))
    wide = signal.resample_poly(line, SAMPLE_RATE, TELEPHONE_RATE)
    return np.pad(wide, (0, max(0, samples.size - wide.size)))[: samples.size].astype(np.float32)


def set_peak(samples: np.ndarray, peak_dbfs: float) -> np.ndarray:
    gain = 10 ** (peak_dbfs / 20) / float(np.max(np.abs(samples)))
    return (samples * gain).astype(np.float32)


def amplify(samples: np.ndarray, gain_db: float) -> np.ndarray:
    """Amplified past full scale and clipped, as an overdriven input stage does."""
    return np.clip(samples * np.float32(10 ** (gain_db / 20)), -1.0, 1.0).astype(np.float32)


@dataclass(frozen=True)
class Degradation:
    """One condition made ready to apply: its room's response and the babble track computed
    once, shared by every clip."""

    name: str
    condition: Condition
    snr_db: float | None
    rir: np.ndarray | None = None
    babble: np.ndarray | None = None

    def noise(self, rng: np.random.Generator, length: int) -> np.ndarray:
        if self.condition.noise == "white":
            return white_noise(rng, length)
        if self.condition.noise == "pink":
            return pink_noise(rng, length)
        assert self.babble is not None, "a babble condition is prepared with its track"
        return babble_noise(rng, length, self.babble)

    def apply(self, samples: np.ndarray, seed: int, clip_id: str) -> np.ndarray:
        """The room, then noise in it, then the line, then the level (a real signal path)."""
        out = samples.astype(np.float32)
        condition = self.condition
        if condition.reverb is not None:
            assert self.rir is not None, "a reverb condition is prepared with its response"
            out = limit_peak(reverberate(out, self.rir, condition.reverb.rt60_s))
        if self.snr_db is not None:
            noise = self.noise(clip_rng(seed, self.name, clip_id), out.size)
            out = limit_peak(mix_at_snr(out, noise, self.snr_db))
        if condition.telephone:
            out = limit_peak(telephone(out))  # the filters ring past μ-law's full scale
        if condition.peak_dbfs is not None:
            out = set_peak(out, condition.peak_dbfs)
        if condition.gain_db is not None:
            out = amplify(out, condition.gain_db)
        return out


# The babble: other talkers reading sentences that are in no speech set.


def check_babble_disjoint(data: DataParams, sentences: list[str]) -> None:
    """Babble sentences must never be any set's: a model could be scored right for
    transcribing the background."""
    used = {
        line.lower()
        for spec in (data.calibration, data.eval)
        if isinstance(spec, BuiltinSet)
        for path in (spec.sentences, spec.longform)
        if path
        for line in read_lines(path)
    }
    shared = used & {line.lower() for line in sentences}
    if shared:
        raise UserError(
            f"{BABBLE_SENTENCES}: shares {len(shared)} line(s) with the data sentence lists, "
            f"e.g. {min(shared)!r}"
        )


def talker(text: str, voice: EspeakVoice) -> np.ndarray:
    """One voice reading `text`, at 16 kHz."""
    samples, rate = synthesize(text, voice)
    common = math.gcd(SAMPLE_RATE, rate)
    return np.asarray(
        signal.resample_poly(samples.astype(np.float64), SAMPLE_RATE // common, rate // common)
    )


def babble_track(seed: int, sentences: list[str]) -> np.ndarray:
    """Every voice of `BABBLE_VOICES` reading all of `sentences` at once, each from its own
    place in the list, looped to the longest and started at a seeded point; at unit RMS.
    Each reads them all so the track (~2 min) outlasts any short-form clip: no clip hears
    the same babble twice, and clips share little of it."""
    step = len(sentences) // len(BABBLE_VOICES)
    voices = [
        talker(" ".join(sentences[k * step :] + sentences[: k * step]), voice)
        for k, voice in enumerate(BABBLE_VOICES)
    ]
    length = max(voice.size for voice in voices)
    rng = np.random.default_rng([seed, stable_key("babble-track")])
    track = np.zeros(length)
    for voice in voices:
        looped = np.resize(voice, length) / math.sqrt(power(voice))
        track += np.roll(looped, int(rng.integers(length)))
    return track / math.sqrt(power(track))


def prepare(params: Params, set_name: ConditionSetName) -> list[Degradation]:
    """The set's conditions, each with what it shares across clips made once."""
    wanted = params.conditions.resolve(set_name)
    track = None
    if any(condition.noise == "babble" for condition, _ in wanted.values()):
        sentences = read_lines(BABBLE_SENTENCES)
        if len(sentences) < len(BABBLE_VOICES):
            raise UserError(
                f"{BABBLE_SENTENCES}: {len(sentences)} sentence(s) for {len(BABBLE_VOICES)} "
                "babble talkers"
            )
        check_babble_disjoint(params.data, sentences)
        track = babble_track(params.conditions.seed, sentences)
    rooms = {condition.reverb for condition, _ in wanted.values() if condition.reverb}
    rirs = {room: room_impulse_response(room) for room in rooms}
    return [
        Degradation(
            name,
            condition,
            snr,
            rir=rirs[condition.reverb] if condition.reverb else None,
            babble=track if condition.noise == "babble" else None,
        )
        for name, (condition, snr) in wanted.items()
    ]


# The clean clips each set degrades.


def eval_clips(params: Params, data_dir: Path) -> datasets.Dataset:
    """`conditions.eval_clips` short-form eval clips, spread by duration as the bench's
    latency clips are."""
    speech = load_saved_set(data_dir, "eval")
    picked = pick_latency_clips(speech["duration_s"], params.conditions.eval_clips, CHUNK_SECONDS)
    if not picked:
        raise UserError(
            f"conditions.eval_clips: the eval set has no clip of {CHUNK_SECONDS} s or less"
        )
    return speech.select(picked)


def holdback_clips(params: Params, data_dir: Path) -> datasets.Dataset:
    """`conditions.holdback_clips` of the calibration clips the quantizer holds back
    (pipeline.quant.calibration), spread evenly over them."""
    speech = load_saved_set(data_dir, "calibration")
    first, count = params.calibrate.clips, params.calibrate.holdout
    wanted = params.conditions.holdback_clips
    if len(speech) < first + count:
        raise UserError(
            f"calibrate.holdout: the calibration set has {len(speech)} clips; "
            f"calibrate.clips + calibrate.holdout = {first + count}"
        )
    if wanted > count:
        raise UserError(
            f"conditions.holdback_clips: {wanted} is more than the {count} held-back clips "
            "(calibrate.holdout)"
        )
    # The same even spread, by index: each held-back clip's index stands for its duration.
    spread = pick_latency_clips([float(i) for i in range(count)], wanted, math.inf)
    return speech.select([first + i for i in spread])


def _clean_clips(
    params: Params, set_name: ConditionSetName, data_dir: Path
) -> list[tuple[str, str, np.ndarray]]:
    """(id, text, samples) of the clips the set degrades, each decoded once."""
    pick = eval_clips if set_name == "eval" else holdback_clips
    clips = []
    for row in pick(params, Path(data_dir)):
        samples = clip_samples(row)
        if not np.any(samples):
            raise UserError(f"{set_name} clip {row['id']}: silent, so it has no SNR or level")
        clips.append((str(row["id"]), str(row["text"]), samples))
    return clips


def _save(
    degradation: Degradation, clips: list[tuple[str, str, np.ndarray]], seed: int, path: Path
) -> ConditionEntry:
    rows: dict[str, list[Any]] = {"id": [], "audio": [], "text": [], "duration_s": []}
    for clip_id, text, samples in clips:
        degraded = degradation.apply(samples, seed, clip_id)
        rows["id"].append(clip_id)
        rows["audio"].append({"array": degraded, "sampling_rate": SAMPLE_RATE})
        rows["text"].append(text)
        rows["duration_s"].append(round(degraded.size / SAMPLE_RATE, 4))
    speech = datasets.Dataset.from_dict(rows, features=FEATURES)
    speech.save_to_disk(str(path))
    files = sha256_tree(path)
    return ConditionEntry(
        entry=degradation.condition,
        snr_db=degradation.snr_db,
        clips=len(clips),
        total_s=summarise(speech)["total_s"],
        source_ids=rows["id"],
        arrow_sha256={k: v for k, v in files.items() if k.endswith(".arrow")},
    )


def build_condition_set(
    params: Params, set_name: ConditionSetName, data_dir: Path, out_dir: Path
) -> ConditionsManifest:
    """Write `out_dir/<condition>/` (datasets save_to_disk) for every condition the set lists,
    and `out_dir/manifest.json`; with none listed, the manifest alone."""
    # The clips first: a set without the clips asked for fails before any synthesis.
    clips = _clean_clips(params, set_name, data_dir) if params.conditions.resolve(set_name) else []
    degradations = prepare(params, set_name)
    seed = params.conditions.seed
    with atomic_dir(Path(out_dir)) as scratch:
        entries = {
            degradation.name: _save(degradation, clips, seed, scratch / degradation.name)
            for degradation in tqdm(degradations, desc=f"conditions {set_name}", unit="condition")
        }
        manifest = ConditionsManifest(set=set_name, seed=seed, cpu=cpu_model(), conditions=entries)
        manifest.write(scratch / MANIFEST_FILE)
    return manifest
