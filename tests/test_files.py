"""metacontroller_envs.files.write_atomically: a crash leaves the previous file, and the new
file is as readable as one written by open()."""

import os
import stat

import pytest

from metacontroller_envs.files import write_atomically


def test_a_crash_mid_write_leaves_the_previous_file(tmp_path):
    path = tmp_path / "run.json"
    path.write_text("previous")

    def crash(temp):
        with open(temp, "w") as file:
            file.write("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        write_atomically(path, crash)
    assert path.read_text() == "previous"
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]  # no temp file left


def test_the_file_gets_the_permissions_of_open(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_atomically(tmp_path / "a" / "b.txt", lambda temp: open(temp, "w").close())
        plain = tmp_path / "plain.txt"
        plain.touch()
    finally:
        os.umask(old)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode) == 0o644
