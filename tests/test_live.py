"""The live engine on arrays (turn detection, LocalAgreement-2, the 30 s bound, flat memory)
and `transcribe --live -` with PCM piped on stdin."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import (
    CLI,
    REPO,
    _cli_env,
    write_wordy_bundle,
)
from whisper_npu import live
from whisper_npu.errors import UserError
from whisper_npu.wer import normalise

RATE = 16_000


def loud(seconds: float, seed: int = 0) -> np.ndarray:
    """Noise at about -20 dBFS: speech to the energy detector."""
    return np.random.default_rng(seed).normal(0, 0.1, int(seconds * RATE)).astype(np.float32)


def quiet(seconds: float, level: float = 0.0) -> np.ndarray:
    return np.full(int(seconds * RATE), level, np.float32)


def numbered() -> live.LiveTranscriber:
    """An engine with item ids item_0, item_1, ... and OpenAI's server_vad defaults."""
    count = iter(range(1000))
    return live.LiveTranscriber(new_id=lambda: f"item_{next(count)}")


def fed(transcriber: live.LiveTranscriber, samples: np.ndarray, chunk: int = 480) -> list:
    """The events of `samples` appended in 30 ms chunks."""
    return [
        event
        for start in range(0, samples.size, chunk)
        for event in transcriber.append(samples[start : start + chunk])
    ]


def spoken(text: str, rate: int = RATE) -> np.ndarray:
    """`text` read by the project's Piper voice, at `rate`."""
    from scipy.signal import resample_poly

    from pipeline.config import PiperVoice
    from pipeline.sources.synthesis import synthesize

    samples, source = synthesize(text, PiperVoice(engine="piper"))
    divisor = np.gcd(rate, source)
    return resample_poly(samples, rate // divisor, source // divisor).astype(np.float32)


def test_energy_scores_map_minus_70_to_minus_10_dbfs_onto_0_to_1():
    levels = np.array([-90.0, -70.0, -40.0, -10.0, 0.0])
    frames = np.ones((5, 320)) * (10 ** (levels / 20))[:, None]
    assert np.allclose(live.energy_scores(frames), [0.0, 0.0, 0.5, 1.0, 1.0])


def test_vad_events_carry_openais_times_and_the_padded_audio():
    transcriber = numbered()
    events = fed(transcriber, np.concatenate([quiet(1.0), loud(2.0), quiet(1.0)]))
    assert events == [
        live.SpeechStarted("item_0", 700),  # the speech at 1 s, 300 ms of prefix padding
        live.SpeechStopped("item_0", 3500),  # its end at 3 s, then 500 ms of silence
        live.Committed("item_0", None),
    ]
    job = transcriber.next_job()
    assert job is not None and job.final and job.item_id == "item_0"
    assert job.samples.size == int(2.8 * RATE)  # 0.7 s to 3.5 s
    assert transcriber.next_job() is None
    assert transcriber.finish(job, " Hello there.") == [
        live.Completed("item_0", "Hello there.", 2.8)
    ]


def test_vad_honours_threshold_silence_and_prefix_settings():
    # -40 dBFS noise scores 0.5: speech at threshold 0.5, not at 0.6.
    murmur = quiet(2.0, 0.0105)
    assert fed(live.LiveTranscriber(live.TurnDetection(threshold=0.6)), murmur) == []
    assert len(fed(live.LiveTranscriber(live.TurnDetection(threshold=0.5)), murmur)) == 1
    # A 300 ms pause ends an utterance only when silence_duration_ms is shorter.
    paused = np.concatenate([loud(1.0), quiet(0.3), loud(1.0), quiet(1.0)])
    long_silence = live.LiveTranscriber(live.TurnDetection(silence_duration_ms=500))
    assert [type(e) for e in fed(long_silence, paused)].count(live.Committed) == 1
    short_silence = live.LiveTranscriber(live.TurnDetection(silence_duration_ms=200))
    assert [type(e) for e in fed(short_silence, paused)].count(live.Committed) == 2
    padded = live.LiveTranscriber(live.TurnDetection(prefix_padding_ms=0))
    started = fed(padded, np.concatenate([quiet(1.0), loud(1.0)]))[0]
    assert started.audio_start_ms == 1000
    with pytest.raises(UserError, match="threshold"):
        live.TurnDetection(threshold=1.5)


def test_a_click_does_not_start_speech():
    click = np.concatenate([quiet(0.5), loud(0.04), quiet(1.0)])
    assert fed(numbered(), click) == []


def test_partials_come_every_second_of_speech_and_finals_first():
    transcriber = numbered()
    fed(transcriber, loud(2.5))
    partial = transcriber.next_job()
    assert partial is not None and not partial.final
    assert transcriber.next_job() is None  # no new second of audio yet
    fed(transcriber, loud(1.0, seed=1))
    assert transcriber.next_job() is not None
    fed(transcriber, loud(1.0, seed=2))
    fed(transcriber, quiet(1.0))
    assert transcriber.next_job().final  # committed: before any partial
    assert transcriber.next_job() is None


def test_manual_mode_commits_on_request_and_refuses_an_empty_buffer():
    transcriber = live.LiveTranscriber(None, new_id=lambda: "item_m")
    assert fed(transcriber, np.concatenate([quiet(0.5), loud(1.0), quiet(1.0)])) == []
    assert transcriber.commit() == [live.Committed("item_m", None)]
    assert transcriber.next_job().samples.size == int(2.5 * RATE)
    with pytest.raises(UserError, match="buffer too small"):
        transcriber.commit()
    fed(transcriber, loud(1.0))
    transcriber.clear()
    assert transcriber.buffered == 0
    with pytest.raises(UserError):
        transcriber.commit()


def test_an_utterance_reaching_30_s_is_cut_at_its_quietest_recent_frame():
    transcriber = numbered()
    speech = loud(40.0)
    speech[int(29.0 * RATE) : int(29.1 * RATE)] *= 0.01  # a pause between words at 29 s
    events = fed(transcriber, np.concatenate([speech, quiet(1.0)]))
    assert [type(e).__name__ for e in events] == [
        "SpeechStarted",
        "SpeechStopped",
        "Committed",
        "SpeechStarted",
        "SpeechStopped",
        "Committed",
    ]
    cut = events[1].audio_end_ms
    assert 29_000 <= cut <= 29_100 and events[3].audio_start_ms == cut
    jobs = [transcriber.next_job(), transcriber.next_job()]
    assert all(job.final for job in jobs)
    assert jobs[0].samples.size <= 30 * RATE
    assert jobs[0].samples.size + jobs[1].samples.size == int(40.5 * RATE)  # to the stop


def test_memory_stays_flat_over_a_long_session():
    transcriber = numbered()
    most = 0
    for seed in range(60):  # 10 min: 6 s of speech, 4 s of silence, decoded as it goes
        fed(transcriber, np.concatenate([loud(6.0, seed), quiet(4.0)]), chunk=1600)
        while (job := transcriber.next_job()) is not None:
            transcriber.finish(job, "words")
        most = max(most, transcriber.buffered)
    assert most <= 7 * RATE and transcriber.backlog == 0


def test_local_agreement_sends_only_what_two_hypotheses_agree_on():
    agreement = live.LocalAgreement()
    assert agreement.update("The quick") == ""  # one hypothesis: nothing agreed yet
    assert agreement.update("The quick brown") == "The quick"
    assert agreement.update("The quick brown fox") == " brown"
    assert agreement.update("the quick, brown fox jumps.") == " fox"  # case, punctuation
    assert agreement.update("The quick brown fax jumps") == ""  # fox is not taken back
    assert agreement.update("The quick brown fax jumps over") == " jumps"
    assert agreement.sent == ["The", "quick", "brown", "fox", "jumps"]
    final = agreement.complete("The quick brown fox jumps over the lazy dog.")
    assert final == "The quick brown fox jumps over the lazy dog."
    assert agreement.update("anything at all") == ""


def test_the_final_transcript_starts_with_the_deltas_whatever_the_final_decode_says():
    agreement = live.LocalAgreement()
    deltas = [agreement.update(h) for h in ("I saw the", "I saw the cat", "I saw the cat sit")]
    sent = "".join(deltas)
    assert sent == "I saw the cat"
    # The final decode changed its mind about an early word: nothing sent twice or lost.
    assert agreement.complete("I sew the cat sitting down.") == "I saw the cat sitting down."
    other = live.LocalAgreement(sent=["hello", "world"])
    assert other.complete("completely different") == "hello world"


def test_continuation_finds_where_a_hypothesis_goes_on():
    assert live.continuation([], ["a", "b"]) == 0
    assert live.continuation(["a", "b"], ["A", "b,", "c"]) == 2
    assert live.continuation(["a", "x", "c"], ["a", "b", "c", "d"]) == 3
    assert live.continuation(["a", "fox"], ["a", "fax", "jumps", "over"]) == 2
    assert live.continuation(["a", "b"], []) == 0


def test_pcm16_and_the_24k_resampler():
    assert np.allclose(live.pcm16(np.array([0, 16384, -32768], "<i2").tobytes()), [0, 0.5, -1])
    with pytest.raises(UserError, match="even number"):
        live.pcm16(b"abc")
    resampler = live.Resampler(24_000)
    tone = np.sin(2 * np.pi * 440 * np.arange(48_000) / 24_000).astype(np.float32)
    out = np.concatenate([resampler(tone[i : i + 480]) for i in range(0, tone.size, 480)])
    assert abs(out.size - 32_000) <= 32  # the filter's delay
    assert live.Resampler(RATE)(tone) is tone


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wordy_bundle(tmp_path_factory.mktemp("live") / "bundle")


def live_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*CLI, "transcribe", *args],
        cwd=REPO,
        env=_cli_env(),
        input=stdin,
        capture_output=True,
        check=False,
        timeout=300,
    )


def s16le(samples: np.ndarray) -> bytes:
    return np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2").tobytes()


def test_live_stdin_prints_one_line_per_utterance(bundle):
    talk = np.concatenate([quiet(0.5), loud(1.5), quiet(1.0), loud(2.5, seed=1), quiet(1.0)])
    done = live_cli("--artifact", str(bundle), "--live", "-", "--partials", stdin=s16le(talk))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert len(lines) == 2 and all(lines)
    # The partials on stderr are each line's start (LocalAgreement never takes words back).
    partials = [line for line in done.stderr.decode().splitlines() if "whisper-npu" not in line]
    assert all(line.startswith(p) for line, p in zip(lines, partials, strict=True))


def test_live_stdin_ending_mid_utterance_still_transcribes_it(bundle):
    done = live_cli("--artifact", str(bundle), "--live", "-", stdin=s16le(loud(1.2)))
    assert done.returncode == 0 and len(done.stdout.decode().splitlines()) == 1


def test_live_refuses_bad_use_in_one_line(bundle):
    for args, message in (
        (("--live", "-", "clip.wav"), "--live reads no files"),
        (("--live", "-", "--word-timestamps"), "no --output-dir, --json, --vad or --word-"),
        (("--live", "tape"), "--live takes - (stdin) or nothing"),
        ((), "no audio files given"),
    ):
        done = live_cli("--artifact", str(bundle), *args)
        assert done.returncode == 2 and message in done.stderr.decode()
        assert len(done.stderr.decode().strip().splitlines()) == 1
    odd = live_cli("--artifact", str(bundle), "--live", "-", stdin=b"\x00" * 3201)
    assert odd.returncode == 2 and "even number of bytes" in odd.stderr.decode()


def test_live_microphone_without_portaudio_or_device_is_one_line(bundle):
    """Here there is no sound card (and maybe no PortAudio): one line naming what is missing."""
    done = live_cli("--artifact", str(bundle), "--live")
    err = done.stderr.decode()
    assert done.returncode == 2 and len(err.strip().splitlines()) == 1
    assert "live extra" in err or "no usable input device" in err


@pytest.mark.integration
def test_live_stdin_transcribes_real_speech(fp32_bundle):
    sentence = "The meeting moved to Thursday afternoon."
    talk = np.concatenate([quiet(0.5), spoken(sentence), quiet(1.0)])
    done = live_cli("--artifact", str(fp32_bundle), "--live", "-", stdin=s16le(talk))
    assert done.returncode == 0 and len(done.stdout.decode().splitlines()) == 1
    # Case and punctuation aside: a word's first form sent as a delta stays (never taken back).
    assert normalise(done.stdout.decode()) == normalise(sentence)
