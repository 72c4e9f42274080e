"""Tests for undo_lib.io: atomic writes and the temporaries an interrupted write leaves behind."""

import os

import pytest

from undo_lib import io


class Interrupted(Exception):
    """Stands in for a kill in the middle of a write."""


def test_atomic_dir_keeps_old_on_failure(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "weights").write_text("old")

    with pytest.raises(Interrupted):
        with io.atomic_dir(target) as tmp:
            (tmp / "weights").write_text("half")
            raise Interrupted()

    assert (target / "weights").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_dir_replaces_whole_folder(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "stale").write_text("old")

    with io.atomic_dir(target) as tmp:
        (tmp / "weights").write_text("new")

    assert sorted(p.name for p in target.iterdir()) == ["weights"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


@pytest.mark.parametrize("writer", ["text", "json", "csv", "dir"])
def test_killed_write_leftovers_removed(tmp_path, writer):
    # A SIGKILL skips the cleanup in `finally`, so earlier runs may have left these behind.
    name = {"text": "notes.txt", "json": "metrics.json", "csv": "history.csv", "dir": "model"}[writer]
    leftovers = [tmp_path / f".{name}.tmp-abc123", tmp_path / f".{name}.old-4242"]
    leftovers[0].mkdir() if writer == "dir" else leftovers[0].write_text("partial")
    leftovers[1].mkdir()
    unrelated = tmp_path / ".other.json.tmp-abc123"
    unrelated.write_text("another output's temporary")

    if writer == "text":
        io.atomic_write_text(tmp_path / name, "done")
    elif writer == "json":
        io.write_json(tmp_path / name, {"done": True})
    elif writer == "csv":
        io.write_csv(tmp_path / name, [{"step": 1}])
    else:
        with io.atomic_dir(tmp_path / name) as tmp:
            (tmp / "weights").write_text("done")

    assert not any(p.exists() for p in leftovers)
    assert unrelated.exists(), "only temporaries of the written path may be removed"
    assert (tmp_path / name).exists()


def test_written_file_mode(tmp_path):
    io.write_json(tmp_path / "metrics.json", {"a": 1})

    assert os.stat(tmp_path / "metrics.json").st_mode & 0o777 == 0o644
