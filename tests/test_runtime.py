"""The ground floor's writers: a file or a run directory is there completely or as it was, never half."""

from __future__ import annotations

from pathlib import Path

import pytest

from tsprune.errors import TsPruneError
from tsprune.runtime import atomic_dir, atomic_path, atomic_write


class Boom(Exception):
    pass


def test_atomic_write_replaces_and_a_failed_writer_leaves_the_old_file(tmp_path: Path) -> None:
    target = atomic_write(tmp_path / "a.json", "old")
    with pytest.raises(Boom), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise Boom
    assert target.read_text() == "old"
    atomic_write(target, b"new")
    assert target.read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a.json"]  # no temp file left


def test_atomic_dir_fills_a_new_folder(tmp_path: Path) -> None:
    with atomic_dir(tmp_path / "runs" / "r1") as staging:
        assert staging.parent == tmp_path / "runs" and staging.name.startswith(".r1.")
        (staging / "model.safetensors").write_bytes(b"w")
        assert not (tmp_path / "runs" / "r1").exists()  # invisible until the block ends
    assert (tmp_path / "runs" / "r1" / "model.safetensors").read_bytes() == b"w"
    assert [path.name for path in (tmp_path / "runs").iterdir()] == ["r1"]


def test_atomic_dir_replaces_an_old_folder_whole(tmp_path: Path) -> None:
    old = tmp_path / "r1"
    old.mkdir()
    (old / "stale.json").write_text("{}")
    with atomic_dir(old) as staging:
        (staging / "fresh.json").write_text("{}")
    assert sorted(path.name for path in old.iterdir()) == ["fresh.json"]  # nothing of the old folder survives
    assert [path.name for path in tmp_path.iterdir()] == ["r1"]  # nor the folder it was moved aside to


def test_atomic_dir_failure_keeps_the_old_folder(tmp_path: Path) -> None:
    old = tmp_path / "r1"
    old.mkdir()
    (old / "metrics.json").write_text("kept")
    with pytest.raises(Boom), atomic_dir(old) as staging:
        (staging / "metrics.json").write_text("half")
        raise Boom
    assert (old / "metrics.json").read_text() == "kept"
    assert [path.name for path in tmp_path.iterdir()] == ["r1"]


def test_atomic_dir_without_replace_refuses_an_existing_folder(tmp_path: Path) -> None:
    (tmp_path / "r1").mkdir()
    with pytest.raises(TsPruneError, match="exists"), atomic_dir(tmp_path / "r1", replace=False):
        pass
