import pytest

from whisper_npu.fsutil import atomic_dir, sha256_tree

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
