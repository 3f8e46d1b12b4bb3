import os
import subprocess
import sys

import pytest

from whisper_npu.fsutil import atomic_dir, remove_stale_scratch, sha256_tree

pytestmark = pytest.mark.runtime


def test_atomic_dir_replaces_on_success(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with atomic_dir(final) as scratch:
        (scratch / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


@pytest.mark.parametrize("failure", [RuntimeError("boom"), KeyboardInterrupt()])
def test_atomic_dir_keeps_previous_output_when_the_body_fails(tmp_path, failure):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(type(failure)), atomic_dir(final) as scratch:
        (scratch / "half.txt").write_text("half")
        raise failure
    assert sorted(p.name for p in final.iterdir()) == ["old.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_sha256_tree_uses_posix_relative_paths(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "b.txt").write_text("x")
    assert list(sha256_tree(tmp_path)) == ["a/b.txt"]


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_atomic_dir_removes_what_killed_runs_left_and_nothing_else(tmp_path):
    """A SIGKILLed run leaves `.out.tmp-<pid>` (and `.out.old-<pid>` if it died swapping); the
    next run removes those of dead processes, never a running one's or another output's."""
    final, dead, live = tmp_path / "out", dead_pid(), os.getppid()
    final.mkdir()
    (final / "old.txt").write_text("old")
    left = [f".out.tmp-{dead}", f".out.old-{dead}", f".out.tmp-{os.getpid()}"]
    kept = [f".out.tmp-{live}", f".other.tmp-{dead}", f".out.tmp-{dead}x"]
    for name in left + kept:
        (tmp_path / name).mkdir()
        (tmp_path / name / "half.txt").write_text("half")
    with atomic_dir(final) as scratch:
        (scratch / "new.txt").write_text("new")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["out", *kept])
    assert [p.name for p in final.iterdir()] == ["new.txt"]


def test_a_swap_cut_short_puts_the_previous_output_back(tmp_path):
    """Killed between renaming the output away and the new one in: the previous output is
    the retired dir, and it goes back into place."""
    final, dead = tmp_path / "out", dead_pid()
    for name, text in ((f".out.old-{dead}", "previous"), (f".out.tmp-{dead}", "half")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "file.txt").write_text(text)
    remove_stale_scratch(final)
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (final / "file.txt").read_text() == "previous"
