"""The `mcenv` command line and the keyboard player."""

import subprocess
import sys

import pytest

from metacontroller_envs.cli import main
from metacontroller_envs.play import Player


def test_expert_command_reports_success(capsys):
    assert main(["expert", "--env", "PinPad-v0", "--episodes", "20"]) == 0
    assert "PinPad-v0: expert success 1.0000 (20/20" in capsys.readouterr().out


def test_unknown_env_is_a_clear_error(capsys):
    assert main(["expert", "--env", "PinPad-v9"]) == 2
    assert "unknown env id 'PinPad-v9'" in capsys.readouterr().err


def test_import_does_not_load_torch():
    code = "import sys, metacontroller_envs, metacontroller_envs.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("env_id", "moves"), [("PinPad-v0", 4), ("VisualPinPad-Four-v0", 5)])
def test_player_maps_keys_to_actions(env_id, moves):
    player = Player(env_id, seed=0)
    assert len(player.key_to_action) == moves
    before = player.frame().copy()
    for key in ("up", "left", "down", "right", "left", "left"):
        player.press(key)
    assert player.frame().shape == before.shape
    assert player.press("reset") == "new episode" and player.episode_return == 0.0
    with pytest.raises(ValueError, match="unknown env id"):
        Player("NoSuchEnv-v0")
