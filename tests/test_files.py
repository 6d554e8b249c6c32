"""metacontroller_envs.files: a crash leaves the previous file, and the new file is as
readable as one written by open()."""

import json
import os
import stat

import pytest

from metacontroller_envs.files import write_atomically, write_json_atomically


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


def test_json_round_trips_and_a_value_json_cannot_hold_leaves_the_previous_file(tmp_path):
    path = write_json_atomically(tmp_path / "result.json", {"success": 0.5, "seeds": [0, 1]})
    assert json.loads(path.read_text()) == {"success": 0.5, "seeds": [0, 1]}
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json_atomically(path, {"model": object()})
    assert json.loads(path.read_text()) == {"success": 0.5, "seeds": [0, 1]}
