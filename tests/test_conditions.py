"""The `conditions` stage: each degradation on synthetic signals, the saved sets end to end, and
bad input refused in one line with nothing written."""

from __future__ import annotations

import hashlib
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
import yaml
from scipy import signal

from pipeline.config import Condition, Params, Reverb, load_params
from pipeline.sources.condition_sets import load_condition_sets
from pipeline.sources.conditions import (
    BABBLE_SENTENCES,
    Degradation,
    amplify,
    babble_noise,
    build_condition_set,
    mu_law,
    pink_noise,
    power,
    prepare,
    reverberate,
    room_impulse_response,
    set_peak,
    telephone,
    white_noise,
)
from pipeline.sources.speech_sets import FEATURES, clip_samples, read_lines
from whisper_npu.fsutil import sha256_file
from whisper_npu.layout import MANIFEST_FILE
from whisper_npu.whisper_io import SAMPLE_RATE

REPO = Path(__file__).resolve().parent.parent
NO_ESPEAK = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="Debian espeak-ng not installed (babble talkers)"
)
SMALL_ROOM = Reverb(rt60_s=0.3, room_m=(4, 3.5, 2.7), distance_m=1.0)
LARGE_ROOM = Reverb(rt60_s=0.9, room_m=(12, 9, 4), distance_m=2.0)


def speechlike(seconds: float, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """A voiced buzz (120 Hz and harmonics) in syllable bursts with pauses: speech's shape,
    without synthesising any."""
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = 2 * np.pi * np.cumsum(120 + 15 * np.sin(2 * np.pi * 0.7 * t + seed)) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 24))
    syllables = np.clip(np.sin(2 * np.pi * 2.5 * t + seed), 0, None) ** 2
    out = voiced * syllables
    return (level * out / np.max(np.abs(out))).astype(np.float32)


def snr_of(clean: np.ndarray, noisy: np.ndarray) -> float:
    return 10 * math.log10(power(clean) / power(noisy.astype(np.float64) - clean))


def babble_like(seconds: float) -> np.ndarray:
    """A stand-in babble track for unit tests (the real one needs espeak-ng)."""
    rng = np.random.default_rng(7)
    return signal.lfilter([1.0], [1.0, -0.9], rng.standard_normal(round(seconds * SAMPLE_RATE)))


def band_share(samples: np.ndarray, low_hz: float, high_hz: float) -> float:
    """The share of the signal's power between two frequencies (Welch's estimate)."""
    freqs, psd = signal.welch(samples, fs=SAMPLE_RATE, nperseg=1024)
    inside = (freqs >= low_hz) & (freqs <= high_hz)
    return float(psd[inside].sum() / psd.sum())


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("snr_db", [0.0, 5.0, 20.0])
def test_noise_is_mixed_at_the_snr(kind: str, snr_db: float) -> None:
    """Speech power over the whole clip against the noise's, to 0.1 dB (float32 rounding
    leaves ~1e-5 dB: the bound is the brief's)."""
    clean = speechlike(3.0, level=0.05)  # quiet enough that no peak limit scales it
    condition = Condition(name=kind, noise=kind, snr_db=[snr_db])
    track = babble_like(10.0) if kind == "babble" else None
    noisy = Degradation(kind, condition, snr_db, babble=track).apply(clean, 0, "clip-0")
    assert noisy.dtype == np.float32 and noisy.size == clean.size
    assert abs(snr_of(clean, noisy) - snr_db) < 0.1


def test_a_peak_past_full_scale_is_scaled_down_keeping_the_snr() -> None:
    clean = speechlike(2.0, level=0.9)
    condition = Condition(name="white", noise="white", snr_db=[0])
    noisy = Degradation("white-0db", condition, 0.0).apply(clean, 0, "loud")
    assert float(np.max(np.abs(noisy))) == pytest.approx(0.99, abs=1e-7)
    # Scaled whole: the clean part is the clean clip times one factor (estimated here, which
    # the noise's chance correlation with the clip moves by a few hundredths of a dB).
    factor = float(np.dot(noisy, clean) / np.dot(clean, clean))
    assert abs(snr_of(clean * factor, noisy)) < 0.1


def test_pink_noise_falls_10_db_a_decade() -> None:
    freqs, psd = signal.welch(pink_noise(np.random.default_rng(0), 160_000), fs=SAMPLE_RATE)
    band = (freqs >= 50) & (freqs <= 5000)
    slope = np.polyfit(np.log10(freqs[band]), 10 * np.log10(psd[band]), 1)[0]
    assert -11.5 < slope < -8.5
    white = white_noise(np.random.default_rng(0), 160_000)
    assert abs(np.mean(white)) < 0.01 and power(white) == pytest.approx(1, abs=0.02)


def test_babble_wraps_around_its_track() -> None:
    track = np.arange(10.0)
    rng = np.random.default_rng(0)
    start = int(np.random.default_rng(0).integers(10))
    segment = babble_noise(rng, 25, track)
    assert segment.tolist() == [float((start + i) % 10) for i in range(25)]


def test_telephone_keeps_the_length_and_nothing_above_the_band() -> None:
    noise = 0.1 * white_noise(np.random.default_rng(1), 3 * SAMPLE_RATE)
    line = telephone(noise.astype(np.float32))
    assert line.dtype == np.float32 and line.size == noise.size
    assert band_share(line, 3600, SAMPLE_RATE / 2) < 1e-3
    assert band_share(line, 0, 200) < 1e-2
    assert band_share(noise, 3600, SAMPLE_RATE / 2) > 0.5  # what the line took away


def test_mu_law_has_8_bits_and_keeps_silence_silent() -> None:
    ramp = np.linspace(-1, 1, 100_001)
    decoded = mu_law(ramp)
    assert len(np.unique(decoded)) == 255  # sign + 7 bits, ±0 one code
    assert mu_law(np.zeros(4)).tolist() == [0.0] * 4
    assert np.all(np.diff(decoded) >= 0)
    loud = np.abs(ramp) > 0.01
    assert np.max(np.abs(decoded - ramp)[loud] / np.abs(ramp[loud])) < 0.07  # log steps


def test_peak_dbfs_sets_the_peak_exactly() -> None:
    quiet = set_peak(speechlike(1.0), -30.0)
    assert float(np.max(np.abs(quiet))) == pytest.approx(10 ** (-30 / 20), rel=1e-6)


def test_gain_clips_at_full_scale_and_nowhere_else() -> None:
    tone = (0.5 * np.sin(2 * np.pi * 200 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)).astype(np.float32)
    loud = amplify(tone, 12.0)
    gain = np.float32(10 ** (12 / 20))
    assert float(loud.max()) == 1.0 and float(loud.min()) == -1.0
    inside = np.abs(tone * gain) < 1
    assert np.array_equal(loud[inside], (tone * gain)[inside])
    assert 0.3 < float(np.mean(~inside)) < 0.8  # ~2 dB over: most of each cycle is cut


def decay_time(rir: np.ndarray) -> float:
    """Seconds for the energy to fall from -5 to -25 dB, times 3 (T20 as an RT60 estimate),
    from Schroeder's backward integral."""
    energy = np.cumsum(rir[::-1] ** 2)[::-1]
    curve = 10 * np.log10(energy / energy[0])
    return 3 * float(np.argmax(curve < -25) - np.argmax(curve < -5)) / SAMPLE_RATE


def test_a_room_lengthens_the_decay_and_keeps_the_level() -> None:
    small, large = room_impulse_response(SMALL_ROOM), room_impulse_response(LARGE_ROOM)
    # pyroomacoustics' inverse Sabine lands near the asked RT60 (measured 0.32 s and 1.4 s)
    assert 0.2 < decay_time(small) < 0.6 < 0.9 < decay_time(large) < 2.0
    burst = speechlike(1.0)
    burst[SAMPLE_RATE // 2 :] = 0  # half a second of speech, then silence
    wet = reverberate(burst, large, LARGE_ROOM.rt60_s)
    assert wet.size == burst.size + SAMPLE_RATE // 2  # the tail kept: min(rt60, 0.5 s)
    assert power(wet) == pytest.approx(power(burst), rel=1e-5)
    late = slice(SAMPLE_RATE * 3 // 4, SAMPLE_RATE)  # after the speech stopped
    assert power(wet[late]) > 1e-3 * power(wet) and not burst[late].any()
    assert power(reverberate(burst, small, 0.3)[late]) < power(wet[late])


def test_the_room_response_is_the_same_whatever_pyroomacoustics_threads() -> None:
    """Its image sources are summed on `num_threads` threads in an order that follows the
    count: the response is computed on one, and the setting is given back."""
    import pyroomacoustics as pra

    before = pra.constants.get("num_threads")
    first = room_impulse_response(LARGE_ROOM)
    try:
        pra.constants.set("num_threads", 3)
        again = room_impulse_response(LARGE_ROOM)
        assert pra.constants.get("num_threads") == 3
    finally:
        pra.constants.set("num_threads", before)
    assert first.tobytes() == again.tobytes()


def test_each_clip_and_condition_has_its_own_noise_and_the_same_every_time() -> None:
    clean = speechlike(1.0, level=0.05)
    condition = Condition(name="white", noise="white", snr_db=[5])
    one = Degradation("white-5db", condition, 5.0)
    assert one.apply(clean, 0, "a").tobytes() == one.apply(clean, 0, "a").tobytes()
    assert one.apply(clean, 0, "a").tobytes() != one.apply(clean, 0, "b").tobytes()
    assert one.apply(clean, 0, "a").tobytes() != one.apply(clean, 1, "a").tobytes()
    other = Degradation("white-other", condition, 5.0)
    assert one.apply(clean, 0, "a").tobytes() != other.apply(clean, 0, "a").tobytes()


def test_a_full_signal_path_runs_in_order_and_keeps_the_input() -> None:
    clean = speechlike(1.0)
    kept = clean.copy()
    condition = Condition(
        name="all", reverb=SMALL_ROOM, noise="pink", snr_db=[10], telephone=True, peak_dbfs=-6
    )
    rir = room_impulse_response(SMALL_ROOM)
    out = Degradation("all-10db", condition, 10.0, rir=rir).apply(clean, 0, "x")
    assert np.array_equal(clean, kept)
    assert out.size == clean.size + round(0.3 * SAMPLE_RATE)
    assert float(np.max(np.abs(out))) == pytest.approx(10 ** (-6 / 20), rel=1e-6)
    assert band_share(out, 3600, SAMPLE_RATE / 2) < 1e-3


def test_babble_sentences_are_in_no_other_list() -> None:
    """Other talkers' words must never be a set's: a model transcribing the background would
    be scored right."""
    babble = [line.lower() for line in read_lines(REPO / BABBLE_SENTENCES)]
    assert len(babble) >= 30 and len(set(babble)) == len(babble)
    others = [
        path for path in (REPO / "calibration").iterdir() if path.name != "sentences_babble.txt"
    ]
    text = " ".join(path.read_text(encoding="utf-8").lower() for path in others)
    assert [line for line in babble if line in text] == []


# The saved sets, end to end, from a tiny clean set.

EVAL_SECONDS = (1.0, 1.6, 31.0, 0.8)  # the 31 s clip is long-form: never degraded
CALIBRATION_CLIPS = 8


def save_set(path: Path, name: str, seconds: list[float]) -> None:
    rows: dict[str, list[Any]] = {"id": [], "audio": [], "text": [], "duration_s": []}
    for index, length in enumerate(seconds):
        rows["id"].append(f"{name}-{index:04d}")
        rows["audio"].append({"array": speechlike(length, index), "sampling_rate": SAMPLE_RATE})
        rows["text"].append(f"clip {index} of the {name} set")
        rows["duration_s"].append(round(length, 4))
    datasets.Dataset.from_dict(rows, features=FEATURES).save_to_disk(str(path / name))


@pytest.fixture(scope="module")
def clean_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("clean") / "data"
    save_set(data, "eval", list(EVAL_SECONDS))
    save_set(data, "calibration", [0.5 + 0.1 * i for i in range(CALIBRATION_CLIPS)])
    return data


def params_file(folder: Path, **changes: dict[str, Any]) -> Path:
    """params.yaml with sections' keys changed; 2 calibrating clips, 4 held back, 2 of each
    degraded."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    raw["calibrate"].update({"clips": 2, "holdout": 4})
    raw["conditions"].update({"eval_clips": 2, "holdback_clips": 2})
    for section, keys in changes.items():
        raw[section].update(keys)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture
def small_params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Params:
    monkeypatch.chdir(REPO)  # the sentence lists are named relative to the project, as DVC runs
    return load_params(params_file(tmp_path))


@NO_ESPEAK
def test_both_sets_are_saved_and_read_back(
    clean_data: Path, small_params: Params, tmp_path: Path
) -> None:
    for set_name, source, ids in (
        ("eval", "eval", ["eval-0001", "eval-0003"]),  # the longest short-form, the shortest
        ("holdback", "calibration", ["calibration-0002", "calibration-0005"]),  # held back: 2-5
    ):
        out = tmp_path / set_name
        manifest = build_condition_set(small_params, set_name, clean_data, out)
        assert manifest.set == set_name and manifest.seed == 0
        wanted = small_params.conditions.resolve(set_name)
        assert list(manifest.conditions) == list(wanted)
        clean = datasets.load_from_disk(str(clean_data / source))
        texts = dict(zip(clean["id"], clean["text"], strict=True))
        loaded = load_condition_sets(out)
        # manifest.json is written with sorted keys (write_json): read back in name order.
        assert [condition.name for condition in loaded] == sorted(wanted)
        for condition in loaded:
            entry = condition.entry
            assert (entry.entry, entry.snr_db) == wanted[condition.name]
            assert condition.speech["id"] == entry.source_ids == ids
            assert condition.speech["text"] == [texts[i] for i in ids]
            assert entry.clips == 2
            assert entry.total_s == round(sum(condition.speech["duration_s"]), 2)
            for name, digest in entry.arrow_sha256.items():
                assert sha256_file(out / condition.name / name) == digest
            samples = clip_samples(condition.speech[0])
            assert samples.size == round(condition.speech[0]["duration_s"] * SAMPLE_RATE)
            assert float(np.max(np.abs(samples))) <= 1.0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["eval", "holdback", "params.yaml"]


@NO_ESPEAK
def test_the_same_params_give_the_same_bytes(
    clean_data: Path, small_params: Params, tmp_path: Path
) -> None:
    first = build_condition_set(small_params, "eval", clean_data, tmp_path / "a")
    again = build_condition_set(small_params, "eval", clean_data, tmp_path / "b")
    assert first.to_json() == again.to_json()
    changed = small_params.model_copy(
        update={"conditions": small_params.conditions.model_copy(update={"seed": 1})}
    )
    other = build_condition_set(changed, "eval", clean_data, tmp_path / "c")
    noisy = [name for name, entry in other.conditions.items() if entry.snr_db is not None]
    assert all(
        other.conditions[name].arrow_sha256 != first.conditions[name].arrow_sha256 for name in noisy
    )
    assert other.conditions["quiet"].arrow_sha256 == first.conditions["quiet"].arrow_sha256


def test_no_condition_listed_writes_the_manifest_alone(clean_data: Path, tmp_path: Path) -> None:
    params = load_params(params_file(tmp_path, conditions={"holdback": []}))
    out = tmp_path / "holdback"
    manifest = build_condition_set(params, "holdback", clean_data, out)
    assert manifest.conditions == {}
    assert [path.name for path in out.iterdir()] == [MANIFEST_FILE]
    assert load_condition_sets(out) == []


DIGEST = """
import hashlib, sys
import numpy as np
from pipeline.config import load_params
from pipeline.sources.conditions import prepare
sys.path.insert(0, "tests")
from test_conditions import speechlike
clean = speechlike(1.5)
digest = hashlib.sha256()
for degradation in prepare(load_params(sys.argv[1]), "eval"):
    digest.update(degradation.apply(clean, 0, "clip").tobytes())
print(digest.hexdigest())
"""


@pytest.mark.integration
@NO_ESPEAK
def test_every_condition_is_the_same_bytes_on_one_thread_or_two(small_params: Params) -> None:
    """Every default eval condition (babble talkers, rooms, the line) applied in fresh
    processes with 1 and 2 BLAS/OpenMP threads, and here."""
    digest = hashlib.sha256()
    for degradation in prepare(small_params, "eval"):
        digest.update(degradation.apply(speechlike(1.5), 0, "clip").tobytes())
    for threads in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", DIGEST, str(REPO / "params.yaml")],
            cwd=REPO,
            env={**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads},
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == digest.hexdigest(), threads


# Bad input: one line naming the key, exit 2, the previous output untouched.


def refused(params: Path, data: Path, out: Path, set_name: str) -> list[str]:
    """The stage as DVC runs it; its stderr lines after it exits 2."""
    arguments = ["--set", set_name, "--data", str(data), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "stages.conditions", "--params", str(params), *arguments],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 2, done.stderr
    return [line for line in done.stderr.splitlines() if line.strip()]


@pytest.fixture
def previous_output(tmp_path: Path) -> Path:
    out = tmp_path / "artifacts" / "conditions"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("from the last good run")
    return out


def long_only_data(folder: Path) -> Path:
    save_set(folder / "data", "eval", [31.0])
    return folder / "data"


NONE = {"eval": [], "holdback": []}
DRY_ROOM = {"rt60_s": 0.05, "room_m": [7, 5, 3]}


@pytest.mark.parametrize(
    ("set_name", "changes", "expected"),
    [
        (
            "eval",
            {"conditions": {"eval": ["no-such-room"]}},
            "conditions.eval: unknown condition 'no-such-room' (defined: white-10db",
        ),
        (
            "eval",
            {
                "conditions": {
                    "define": [{"name": "hiss", "noise": "white", "snr_db": [-5]}],
                    **NONE,
                }
            },
            "conditions.define.0.snr_db.0: Input should be greater than or equal to 0",
        ),
        (
            "eval",
            {"conditions": {"define": [{"name": "dry", "reverb": DRY_ROOM}], **NONE}},
            "conditions.define.0.reverb.rt60_s: 0.05 s is shorter than any 7",
        ),
        (
            "holdback",
            {"conditions": {"holdback_clips": 5}},
            "conditions.holdback_clips: 5 is more than the 4 held-back clips (calibrate.holdout)",
        ),
        (
            "holdback",
            {"calibrate": {"holdout": 7}},
            "calibrate.holdout: the calibration set has 8 clips; "
            "calibrate.clips + calibrate.holdout = 9",
        ),
        (
            "long",
            {},
            "conditions.eval_clips: the eval set has no clip of 30 s or less",
        ),
    ],
    ids=["unknown-name", "negative-snr", "impossible-rt60", "holdback-clips", "holdout", "long"],
)
def test_bad_input_is_one_line_and_writes_nothing(
    set_name: str,
    changes: dict[str, dict[str, Any]],
    expected: str,
    clean_data: Path,
    previous_output: Path,
    tmp_path: Path,
) -> None:
    data = long_only_data(tmp_path) if set_name == "long" else clean_data
    params = params_file(tmp_path, **changes)
    lines = refused(params, data, previous_output, "eval" if set_name == "long" else set_name)
    assert len(lines) == 1, lines
    assert lines[0].startswith("whisper-npu conditions: error: "), lines[0]
    assert expected in lines[0], lines[0]
    assert [path.name for path in previous_output.parent.iterdir()] == ["conditions"]
    assert [path.name for path in previous_output.iterdir()] == ["keep.txt"]
