"""Hostile input: every bad file or argument is one line on stderr and exit code 2, never a
traceback, a hang, a read outside the artifact or a lost previous output."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import soundfile as sf

from tests.conftest import REPO, TINY_DIMS, TINY_SPEC, run_cli, start_cli, write_tiny_bundle
from tests.test_bench_results import needs_ray
from whisper_npu.cli import RUNTIME_COMMANDS, main
from whisper_npu.entry import Command

PARAMS = ["--params", str(REPO / "params.yaml")]
SPEC, DIMS = TINY_SPEC, TINY_DIMS


def one_line_error(capsys: pytest.CaptureFixture[str], command: str, expected: str) -> str:
    """The single stderr line of a refused call, checked to name the problem."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"whisper-npu {command}: error: "), lines[0]
    assert expected in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def runnable_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Whisper exported into a bundle the runtime can open."""
    return write_tiny_bundle(tmp_path_factory.mktemp("bundles") / "a16w8")


@pytest.fixture
def bundle(runnable_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of the runnable bundle, for a test to damage."""
    return Path(shutil.copytree(runnable_bundle, tmp_path / "bundle"))


@pytest.fixture
def wav(tmp_path: Path) -> Path:
    path = tmp_path / "ok.wav"
    sf.write(path, np.zeros(1600, np.float32), 16000)
    return path


@pytest.fixture
def deadline():
    """Fail, instead of hanging the suite, if a test's command blocks (on a FIFO it opened)."""

    def expire(signum: int, frame: object) -> None:
        raise TimeoutError("blocked: a FIFO was opened")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def transcribe(capsys: pytest.CaptureFixture[str], artifact: Path, *audio: Path) -> int:
    capsys.readouterr()
    return main(["transcribe", "--artifact", str(artifact), *map(str, audio)])


# --- the bundle a command opens ------------------------------------------------------------


def test_swapped_graphs_are_refused_when_opened(bundle, wav, capsys):
    encoder, decoder = bundle / "encoder.onnx", bundle / "decoder.onnx"
    encoder.rename(bundle / "x"), decoder.rename(encoder), (bundle / "x").rename(decoder)
    assert transcribe(capsys, bundle, wav) == 2
    one_line_error(capsys, "transcribe", "not the encoder graph of this bundle")


@pytest.mark.parametrize(
    ("name", "payload", "expected"),
    [
        ("encoder.onnx", b"not onnx at all", "not a loadable ONNX graph"),
        ("bundle.json", b"{not json", "not valid JSON"),
        ("bundle.json", b"[1, 2]", "expected a JSON object"),
        ("bundle.json", b"\xff\xfe\x00garbage", "not UTF-8"),
        ("bundle.json", b"", "empty file"),
        ("bundle.json", b'{"variant": "a16w8"}', "bundle.json: format: Field required"),
        ("mel_filters.npy", b"\x93NUMPY garbage", "not a numpy array file"),
        ("token_embedding.npy", b"\x93NUMPY garbage", "not a numpy array file"),
        ("position_embedding.npy", b"", "not a numpy array file"),
        ("tokenizer.json", b"{]", "not a tokenizer"),
    ],
)
def test_corrupt_bundle_files_are_one_line(bundle, wav, capsys, name, payload, expected):
    (bundle / name).write_bytes(payload)
    assert transcribe(capsys, bundle, wav) == 2
    one_line_error(capsys, "transcribe", expected)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"dims": {**DIMS.to_json(), "n_mels": "80"}}, "dims: dims must be positive"),
        ({"dims": [80]}, "bundle.json: dims: Input should be a dictionary"),
        ({"decoding": {**SPEC.to_json(), "prefix": 7}}, "decoding.prefix: Input should be a valid"),
        (
            {"decoding": {**SPEC.to_json(), "suppress_tokens": [1, DIMS.vocab_size + 5]}},
            f"token ids outside the {DIMS.vocab_size}-token vocabulary: {DIMS.vocab_size + 5}",
        ),
        ({"files": {"../outside.txt": "0" * 64}}, "a path outside its directory"),
        ({"variant": "int4"}, "bundle.json: variant: Input should be 'fp32'"),
        ({"graphs": {"encoder": {"opset": 17}}}, "bundle.json: graphs.encoder.op_counts: Field"),
        ({"opset": 17, "extra": 1}, "bundle.json: unknown key 'extra'"),
    ],
)
def test_malformed_bundle_json_is_one_line(bundle, wav, capsys, change, expected):
    meta = json.loads((bundle / "bundle.json").read_text())
    (bundle / "bundle.json").write_text(json.dumps({**meta, **change}))
    assert transcribe(capsys, bundle, wav) == 2
    one_line_error(capsys, "transcribe", expected)


def test_mel_filters_of_the_wrong_shape_are_refused(bundle, wav, capsys):
    np.save(bundle / "mel_filters.npy", np.zeros((201, 128)))
    assert transcribe(capsys, bundle, wav) == 2
    one_line_error(capsys, "transcribe", "expected finite floats of shape (201, 80)")


@pytest.mark.parametrize(
    ("name", "table", "expected"),
    [
        ("token_embedding.npy", np.zeros((100, 64), np.float32), "shape (51864, 64), got float32"),
        ("position_embedding.npy", np.zeros((8, 64)), "expected float32 of shape (8, 64)"),
    ],
)
def test_embedding_tables_not_of_the_contract_are_refused(
    bundle, wav, capsys, name, table, expected
):
    np.save(bundle / name, table)
    assert transcribe(capsys, bundle, wav) == 2
    one_line_error(capsys, "transcribe", expected)


def test_corrupt_compile_report_is_one_line(bundle, wav, tmp_path, capsys):
    compiled = tmp_path / "compiled"
    compiled.mkdir()
    (compiled / "compile_report.json").write_text('{"bundle": ')
    assert transcribe(capsys, compiled, wav) == 2
    one_line_error(capsys, "transcribe", "compile_report.json: not valid JSON")


# --- release and verify: an artifact's bytes are its own -----------------------------------


@pytest.fixture
def release_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    from tests.test_release import fake_bundle, fake_compiled

    bundle = fake_bundle(tmp_path / "bundles" / "a16w8")
    compiled = fake_compiled(tmp_path / "compiled" / "a16w8", bundle)
    metrics = tmp_path / "bench.json"
    metrics.write_text(json.dumps({"a16w8": {"wer": 0.03, "speedup_vs_fp32": 1.0}}))
    return bundle, compiled, metrics


def release(capsys, inputs: tuple[Path, Path, Path], out: Path) -> int:
    bundle, compiled, metrics = inputs
    capsys.readouterr()
    args = ["--bundle", str(bundle), "--compiled", str(compiled), "--metrics", str(metrics)]
    return main(["release", *PARAMS, *args, "--out", str(out)])


@pytest.mark.parametrize(
    ("where", "make"),
    [
        ("bundle", lambda d, outside: (d / "extra.txt").symlink_to(outside / "secret.txt")),
        ("compiled", lambda d, outside: (d / "cache").symlink_to(outside)),
        ("compiled", lambda d, outside: os.mkfifo(d / "pipe")),
    ],
    ids=["file-link", "dir-link", "fifo"],
)
def test_release_refuses_links_and_special_files(
    release_inputs, tmp_path, capsys, deadline, where, make
):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not part of any artifact")
    bundle, compiled, _ = release_inputs
    make(bundle if where == "bundle" else compiled, outside)
    out = tmp_path / "release"
    assert release(capsys, release_inputs, out) == 2
    line = one_line_error(capsys, "release", "")
    assert "symbolic link" in line or "FIFO" in line
    assert not out.exists()


@pytest.fixture
def built_release(release_inputs, tmp_path, capsys) -> Path:
    out = tmp_path / "release"
    assert release(capsys, release_inputs, out) == 0
    return out


def verify(target: Path) -> tuple[int, list[str]]:
    """The CLI in a subprocess with a timeout: a FIFO that is opened would block forever."""
    result = run_cli("verify", str(target), timeout=60)
    return result.returncode, [line for line in result.stderr.splitlines() if line.strip()]


def _replace_with_link_to_copy(release: Path, outside: Path) -> None:
    shutil.copy(release / "tokenizer.json", outside / "tokenizer.json")
    (release / "tokenizer.json").unlink()
    (release / "tokenizer.json").symlink_to(outside / "tokenizer.json")


def _edit_card(name: str) -> object:
    def edit(release: Path, outside: Path) -> None:
        card = json.loads((release / "card.json").read_text())
        card["files"][name] = "0" * 64
        (release / "card.json").write_text(json.dumps(card))

    return edit


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (_replace_with_link_to_copy, "tokenizer.json: is a symbolic link"),
        (lambda r, o: (r / "npu" / "more").symlink_to(o), "npu/more: is a symbolic link"),
        (lambda r, o: (r / "dangling").symlink_to(o / "nowhere"), "dangling: is a symbolic"),
        (lambda r, o: os.mkfifo(r / "pipe"), "pipe: is not a regular file"),
        (lambda r, o: ((r / "card.json").unlink(), os.mkfifo(r / "card.json")), "card.json"),
        (_edit_card("../outside.txt"), "lists '../outside.txt', a path outside its directory"),
        (_edit_card("/etc/passwd"), "lists '/etc/passwd', a path outside its directory"),
        (lambda r, o: (r / "card.json").write_text("{oops"), "card.json: not valid JSON"),
        (lambda r, o: (r / "card.json").write_bytes(b"\xff\xfe"), "card.json: not UTF-8"),
    ],
    ids=[
        "listed-file-linked-to-copy",
        "dir-link",
        "dangling-link",
        "fifo",
        "fifo-card",
        "dotdot-name",
        "absolute-name",
        "corrupt-card",
        "non-utf8-card",
    ],
)
def test_verify_refuses_links_fifos_and_escaping_names(built_release, tmp_path, damage, expected):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    damage(built_release, outside)
    code, lines = verify(built_release)
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("whisper-npu verify: error: ") and expected in lines[0]


# --- outputs are never lost ------------------------------------------------------------------


def compile_(capsys, bundle: Path, out: Path) -> int:
    capsys.readouterr()
    return main(["compile", *PARAMS, "--bundle", str(bundle), "--out", str(out), "--allow-split"])


@pytest.mark.parametrize("relation", ["same", "inside", "containing"])
def test_compile_out_overlapping_the_bundle_is_refused(release_inputs, capsys, relation):
    bundle = release_inputs[0]
    before = sorted(p.name for p in bundle.iterdir())
    out = {"same": bundle, "inside": bundle / "npu", "containing": bundle.parent}[relation]
    assert compile_(capsys, bundle, out) == 2
    one_line_error(capsys, "compile", "output overlaps")
    assert sorted(p.name for p in bundle.iterdir()) == before


def test_compile_out_naming_a_file_is_refused(release_inputs, tmp_path, capsys):
    precious = tmp_path / "notes.txt"
    precious.write_text("keep me")
    assert compile_(capsys, release_inputs[0], precious) == 2
    one_line_error(capsys, "compile", "exists and is not a directory")
    assert precious.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["notes.txt", "bundles", "compiled", "bench.json"]
    )


def test_release_out_equal_to_an_input_is_refused(release_inputs, capsys):
    compiled = release_inputs[1]
    before = sorted(p.name for p in compiled.iterdir())
    assert release(capsys, release_inputs, compiled) == 2
    one_line_error(capsys, "release", "output overlaps")
    assert sorted(p.name for p in compiled.iterdir()) == before


def _writers() -> list[tuple[Command, str]]:
    from pipeline.cli import COMMANDS

    return [
        (command, dest) for command in (*RUNTIME_COMMANDS, *COMMANDS) for dest in command.writes
    ]


def _path_actions(command: Command) -> list[argparse.Action]:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return [action for action in parser._actions if action.type is Path]


@pytest.mark.parametrize("relation", ["same", "inside", "containing"])
@pytest.mark.parametrize(
    ("command", "dest"), _writers(), ids=lambda value: getattr(value, "name", value)
)
def test_no_output_of_any_command_can_replace_another_of_its_paths(
    command: Command, dest: str, relation: str, tmp_path: Path, capsys
) -> None:
    """The one guard (`Command.writes`, checked by the entry point before any work): every
    stage and command, every output, against another path it was given (an input, or
    --params where it has no other), equal, inside or holding it: one line, exit 2, nothing
    touched. (`amd_form`, `data_languages` and `reference` used to replace their input.)"""
    actions = _path_actions(command)
    out_action = next(action for action in actions if action.dest == dest)
    others = [action for action in actions if action.dest != dest]
    (tmp_path / "victim").mkdir()
    params = tmp_path / "victim" / "params.yaml"
    shutil.copy(REPO / "params.yaml", params)
    victim = tmp_path / "victim" if others else params
    out = {"same": victim, "inside": victim / "sub", "containing": victim.parent}[relation]
    argv = [command.name, *(["--params", str(params)] if command.params else [])]
    for index, action in enumerate(others):
        if index == 0 or action.required or not action.option_strings:
            path = victim if index == 0 else tmp_path / f"input{index}"
            argv += [*action.option_strings[:1], str(path)]
    argv += ["--variant", "bf16"] if command.name == "quantize" else []
    argv += ["--set", "eval"] if command.name == "conditions" else []
    argv += [*out_action.option_strings[:1], str(out)]
    capsys.readouterr()
    assert main(argv) == 2, argv
    line = one_line_error(capsys, command.name, str(out))
    assert "overlaps" in line or "exists and is not" in line, line
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["params.yaml", "victim"]
    assert params.read_bytes() == (REPO / "params.yaml").read_bytes()


def test_sigterm_inside_the_swap_leaves_an_output(tmp_path, monkeypatch):
    """SIGTERM between renaming the old output away and the new one in: the swap finishes,
    then the interrupt is delivered."""
    from whisper_npu.fsutil import atomic_dir

    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    rename = Path.rename

    def rename_then_signal(self: Path, target: Path) -> Path:
        moved = rename(self, target)
        if self == final:
            os.kill(os.getpid(), signal.SIGTERM)
        return moved

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "rename", rename_then_signal)
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt), atomic_dir(final) as scratch:
            (scratch / "new.txt").write_text("new")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert [p.name for p in final.iterdir()] == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("directory", ["bench.json", "clips.jsonl"])
def test_bench_out_on_a_directory_fails_before_measuring(tmp_path, capsys, monkeypatch, directory):
    import pipeline.bench.run

    def measure(*args: object, **kwargs: object) -> None:
        raise AssertionError("measured before checking --out and --clips")

    monkeypatch.setattr(pipeline.bench.run, "run_bench", measure)
    (tmp_path / directory).mkdir()
    args = ["--out", str(tmp_path / "bench.json"), "--plots", str(tmp_path / "plots")]
    args += ["--clips", str(tmp_path / "clips.jsonl")]
    for name in ("compiled", "data", "baseline-bundle", "model"):
        args += [f"--{name}", str(tmp_path / name)]
    assert main(["bench", *PARAMS, *args]) == 2
    one_line_error(capsys, "bench", "exists and is not a file")


# --- thresholds and counts -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--max-wer-increase", "nan"],
        ["--max-wer-increase", "inf"],
        ["--max-latency-increase", "nan"],
    ],
)
def test_check_refuses_non_finite_thresholds(tmp_path, capsys, args):
    metrics = tmp_path / "bench.json"
    metrics.write_text(json.dumps({"a16w8": {"wer": 0.5, "speedup_vs_fp32": 0.1}}))
    with pytest.raises(SystemExit) as exit_:
        main(["check", *PARAMS, "--baseline", str(metrics), "--current", str(metrics), *args])
    assert exit_.value.code == 2
    assert "must be a finite number >= 0" in capsys.readouterr().err


def test_params_refuse_non_finite_gate(tmp_path, capsys):
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["gate"]["max_wer_increase"] = float("nan")
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    metrics = tmp_path / "bench.json"
    metrics.write_text(json.dumps({"a16w8": {"wer": 0.5, "speedup_vs_fp32": 0.1}}))
    args = ["--baseline", str(metrics), "--current", str(metrics)]
    assert main(["check", "--params", str(params), *args]) == 2
    one_line_error(capsys, "check", "gate.max_wer_increase: Input should be a finite number")


@pytest.mark.parametrize("threads", ["-1", "0"])
def test_transcribe_refuses_non_positive_threads(wav, capsys, threads):
    with pytest.raises(SystemExit) as exit_:
        main(["transcribe", "--threads", threads, str(wav)])
    assert exit_.value.code == 2
    assert "must be an integer >= 1" in capsys.readouterr().err


# --- params and metrics files: never block, never balloon -------------------------------------

BOMB = "\n".join(
    [
        'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]',
        *(
            f"{x}: &{x} [{', '.join([f'*{p}'] * 9)}]"
            for p, x in zip("abcdefgh", "bcdefghi", strict=True)
        ),
    ]
)


def hostile_file(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"hostile-{kind}"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "non-utf8":
        path.write_bytes(b"base:\n  seed: 0  # caf\xe9\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "loop":
        path.symlink_to(path)
    elif kind == "bomb":
        path.write_text(BOMB)
    return path


PARAMS_CASES = {
    "fifo": "is a FIFO, socket or device",
    "directory": "is a directory",
    "non-utf8": "not UTF-8 text",
    "empty": "empty file",
    "loop": "Too many levels of symbolic links",
    "bomb": "anchors and aliases are not allowed",
}


@pytest.mark.parametrize("kind", PARAMS_CASES)
def test_hostile_params_file_is_one_line(tmp_path, capsys, deadline, kind):
    metrics = tmp_path / "bench.json"
    metrics.write_text(json.dumps({"a16w8": {"wer": 0.5, "speedup_vs_fp32": 0.1}}))
    params = hostile_file(tmp_path, kind)
    args = ["--baseline", str(metrics), "--current", str(metrics)]
    assert main(["check", "--params", str(params), *args]) == 2
    one_line_error(capsys, "check", PARAMS_CASES[kind])


@pytest.mark.parametrize("kind", [k for k in PARAMS_CASES if k != "bomb"])
def test_hostile_metrics_file_is_one_line(tmp_path, capsys, deadline, kind):
    metrics = tmp_path / "bench.json"
    metrics.write_text(json.dumps({"a16w8": {"wer": 0.5, "speedup_vs_fp32": 0.1}}))
    args = ["--baseline", str(hostile_file(tmp_path, kind)), "--current", str(metrics)]
    assert main(["check", *PARAMS, *args]) == 2
    one_line_error(capsys, "check", PARAMS_CASES[kind])


def test_a_huge_value_is_not_echoed_in_full(tmp_path, capsys):
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["quantize"]["max_excluded"] = "9" * 100_000 + "x"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    assert main(["verify", str(tmp_path)]) == 2  # needs no params: shows the CLI still works
    capsys.readouterr()
    assert main(["check", "--params", str(params), "--baseline", str(params)]) == 2
    line = one_line_error(capsys, "check", "quantize.max_excluded")
    assert len(line) < 300


# --- audio -----------------------------------------------------------------------------------


def write_audio_cases(root: Path) -> dict[str, str]:
    """Bad audio files and the words their one line must contain."""
    root.mkdir()
    sf.write(root / "low-rate.wav", np.zeros(500, np.float32), 500)
    sf.write(root / "high-rate.wav", np.zeros(4000, np.float32), 400_000)
    sf.write(root / "long.wav", np.zeros(4 * 1000, np.int16), 1000)  # 4 s: DEFAULT_MAX_SECONDS is 3
    nan = np.array([0.0, np.nan, 0.1] * 100, np.float32)
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    sf.write(root / "inf.wav", np.nan_to_num(nan, nan=np.inf), 16000, subtype="FLOAT")
    (root / "empty.wav").write_bytes(b"")
    sf.write(root / "whole.wav", np.zeros(1600, np.float32), 16000)
    (root / "truncated.wav").write_bytes((root / "whole.wav").read_bytes()[:30])
    (root / "text.wav").write_text("this is not audio\n" * 40)
    (root / "dir.wav").mkdir()
    os.mkfifo(root / "fifo.wav")
    (root / "loop.wav").symlink_to(root / "loop.wav")
    return {
        "low-rate.wav": "sample rate 500 Hz is outside 1000..384000 Hz",
        "high-rate.wav": "sample rate 400000 Hz is outside",
        "long.wav": "4 s of audio, more than the 3 s one call transcribes",
        "nan.wav": "NaN or infinite samples",
        "inf.wav": "NaN or infinite samples",
        "empty.wav": "empty file",
        "truncated.wav": "not readable audio",
        "text.wav": "not readable audio",
        "dir.wav": "is a directory",
        "fifo.wav": "is a FIFO, socket or device",
        "loop.wav": "Too many levels of symbolic links",
        "missing.wav": "no such file",
    }


def test_bad_audio_is_one_line_each_and_the_rest_is_transcribed(
    runnable_bundle, tmp_path, capsys, monkeypatch, deadline
):
    import whisper_npu.audio

    monkeypatch.setattr(whisper_npu.audio, "DEFAULT_MAX_SECONDS", 3)
    cases = write_audio_cases(tmp_path / "audio")
    good = tmp_path / "audio" / "eight-channels.wav"
    sf.write(good, np.zeros((16000, 8), np.float32), 16000)
    odd_name = Path(os.fsdecode(bytes(tmp_path / "audio") + b"/caf\xe9.wav"))
    shutil.copy(tmp_path / "audio" / "whole.wav", odd_name)
    audio = [tmp_path / "audio" / name for name in cases]
    code = transcribe(capsys, runnable_bundle, good, *audio, odd_name)
    out, err = capsys.readouterr()
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == len(cases), lines
    for line, (name, expected) in zip(lines, cases.items(), strict=True):
        assert line.startswith(f"whisper-npu transcribe: error: {tmp_path / 'audio' / name}: ")
        assert expected in line, line
    assert [line.split("\t")[0] for line in out.splitlines()] == [
        str(good),
        f"{tmp_path / 'audio'}/caf\\xe9.wav",
    ]


# --- OS errors and signals ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (PermissionError(13, "Permission denied", "/srv/out"), "/srv/out: Permission denied"),
        (OSError(28, "No space left on device", "/srv/out/x"), "No space left on device"),
    ],
)
def test_os_errors_are_one_line(release_inputs, tmp_path, capsys, monkeypatch, error, expected):
    import pipeline.release.build

    def fail(*args: object) -> None:
        raise error

    monkeypatch.setattr(pipeline.release.build, "build_release", fail)
    assert release(capsys, release_inputs, tmp_path / "release") == 2
    one_line_error(capsys, "release", expected)


def test_closed_stdout_exits_quietly(built_release):
    child = start_cli("verify", str(built_release))
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()
    err = child.stderr.read()
    assert child.wait(timeout=60) == 2
    assert err == b""


def handles_sigterm(pid: int) -> None:
    """Wait until the process has installed its SIGTERM handler (Linux: SigCgt in /proc); before
    that, in the first ~50 ms of interpreter start-up, Python's default action applies."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(
            next(line for line in status.splitlines() if line.startswith("SigCgt"))[7:], 16
        )
        if caught & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.005)
    raise AssertionError("the SIGTERM handler was never installed")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
@pytest.mark.parametrize("delay_s", [0.0, 0.02, 0.1])
def test_sigterm_during_imports_is_the_interrupted_line(runnable_bundle, wav, delay_s):
    child = start_cli("transcribe", "--artifact", str(runnable_bundle), wav, text=True)
    handles_sigterm(child.pid)  # then the imports are still running: torch, onnxruntime
    time.sleep(delay_s)  # at several moments of them (and of the transcription after)
    child.send_signal(signal.SIGTERM)
    _, err = child.communicate(timeout=60)
    assert child.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].endswith("interrupted; previous outputs left untouched")


# --- Ray addresses: refused when malformed, given up on when nobody answers --------------------


@pytest.mark.parametrize("address", ["head", "ray://", "http://head:10001", "head:0", "h:70000"])
def test_evaluate_refuses_a_malformed_ray_address(capsys, address):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--ray", address])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --ray" in err and "not a Ray address" in err and "Traceback" not in err


def one_clip_eval_set(data: Path) -> Path:
    """An `artifacts/data` with a one-clip eval set, as `whisper-npu data` saves it."""
    import datasets

    from pipeline.sources.speech_sets import FEATURES

    columns = {
        "id": ["c0"],
        "audio": [{"array": np.zeros(16000, np.float32), "sampling_rate": 16000}],
        "text": ["nothing"],
        "duration_s": [1.0],
    }
    datasets.Dataset.from_dict(columns, features=FEATURES).save_to_disk(str(data / "eval"))
    return data


@needs_ray
def test_evaluate_gives_up_on_a_ray_address_nobody_answers(runnable_bundle, tmp_path):
    """Ray 2.60 alone retries an unreachable GCS address for about 12 minutes."""
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens there
        probe.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{probe.getsockname()[1]}"
    data = one_clip_eval_set(tmp_path / "data")
    start = time.monotonic()
    done = run_cli(
        "evaluate", "--artifact", str(runnable_bundle), "--data", str(data),
        "--ray", address, "--ray-timeout", "1", timeout=120,
    )  # fmt: skip
    assert time.monotonic() - start < 100  # imports on a busy machine; Ray's own retries: 700 s
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines == [
        f"whisper-npu evaluate: error: Ray: no cluster answered at {address} within 1 s"
    ]


# --- graphs handed to the forecast ------------------------------------------------------------


def add_graph(weight: onnx.TensorProto, rows: int = 1) -> onnx.ModelProto:
    """y = x + weight, x of shape [1, 4] broadcast over the weight's rows."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, 4])
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", [x], [y], [weight])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def ones(rows: int = 1) -> onnx.TensorProto:
    from onnx import numpy_helper

    return numpy_helper.from_array(np.ones((rows, 4), np.float32), "w")


def with_external_data(folder: Path, location: str, keep: bool = True) -> Path:
    """The graph with its weight in a file beside it, then pointed at `location`, that file
    renamed `w.bin` (or removed)."""
    path = folder / "graph.onnx"
    onnx.save(add_graph(ones()), str(path), save_as_external_data=True, size_threshold=0)
    model = onnx.load(str(path), load_external_data=False)
    (entry,) = [e for e in model.graph.initializer[0].external_data if e.key == "location"]
    saved = folder / entry.value
    if keep:
        saved.replace(folder / "w.bin")
    else:
        saved.unlink()
    entry.value = location
    onnx.save(model, str(path))
    return path


def hostile_graph(folder: Path, kind: str) -> Path:
    from onnx import TensorProto

    path = folder / f"{kind}.onnx"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "not a model":  # a valid protobuf, of a graph alone
        path.write_bytes(add_graph(ones()).graph.SerializeToString())
    elif kind == "data missing":
        return with_external_data(folder, "w.bin", keep=False)
    elif kind == "data outside":
        (folder.parent / "secret.bin").write_bytes(np.ones(4, np.float32).tobytes())
        return with_external_data(folder, "../secret.bin")
    elif kind == "data short":
        path = with_external_data(folder, "w.bin")
        (folder / "w.bin").write_bytes(b"1")
    elif kind == "huge, no data":
        weight = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1 << 40, 4])
        onnx.save(add_graph(weight, 1 << 40), str(path))
    elif kind == "future opset":
        model = add_graph(ones())
        model.opset_import[0].version = 99
        onnx.save(model, str(path))
    return path


GRAPH_CASES = {
    "empty": "empty file, not an ONNX model",
    "not a model": "not an ONNX model (no graph, opset or IR version)",
    "data missing": "not loadable: tensor 'w': its external data 'w.bin' is missing",
    "data outside": "its external data '../secret.bin' is outside the graph's folder",
    "data short": "its external data 'w.bin' holds no 16 bytes at offset 0",
    "huge, no data": "4398046511104 elements declared, and its data does not match",
    "future opset": "not loadable by ONNX Runtime",
}


@pytest.mark.parametrize("kind", GRAPH_CASES)
def test_forecast_refuses_a_graph_onnx_runtime_cannot_load(tmp_path, capsys, kind):
    """Never forecast as clean (exit 0) what the EP could not even load."""
    folder = tmp_path / "graph"
    folder.mkdir()
    path = hostile_graph(folder, kind)
    capsys.readouterr()
    assert main(["forecast", str(path)]) == 2
    one_line_error(capsys, "forecast", GRAPH_CASES[kind])


def test_forecast_reads_external_data_beside_the_graph(tmp_path, capsys):
    sub = tmp_path / "weights"
    sub.mkdir()
    path = with_external_data(tmp_path, "w.bin")
    assert main(["forecast", str(path)]) == 0
    (sub / "w.bin").write_bytes((tmp_path / "w.bin").read_bytes())
    with_external_data(tmp_path, "weights/w.bin")
    assert main(["forecast", str(path)]) == 0
    assert "1 NPU subgraph(s)" in capsys.readouterr().out
