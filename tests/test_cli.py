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


def flat(text: str) -> str:
    """Text without whitespace: argparse re-wraps help to the terminal's width."""
    return "".join(text.split())


def test_train_flags_take_their_help_from_the_config_docstrings(capsys):
    from metacontroller_agents.bc import BCConfig
    from metacontroller_agents.cli import BC_FLAGS
    from metacontroller_agents.configs import field_docs

    with pytest.raises(SystemExit) as exit:
        main(["train", "bc", "--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    docs = field_docs(BCConfig)
    assert docs["eval_every"] == "Steps between evaluation rollouts (0: only at the end)."
    for name in BC_FLAGS:
        assert "--" + name.replace("_", "-") in out
        assert flat(docs[name]) in flat(out)
    assert "--preset {paper,small}" in out


@pytest.mark.parametrize("module", ["bc", "discovery", "internal_rl", "evolution", "disco_agent"])
def test_every_config_field_has_a_docstring(module):
    import dataclasses
    import importlib

    from metacontroller_agents.configs import field_docs

    configs = [
        value for value in vars(importlib.import_module(f"metacontroller_agents.{module}")).values()
        if dataclasses.is_dataclass(value) and value.__name__.endswith("Config")
    ]  # fmt: skip
    assert configs
    for cls in configs:
        assert set(field_docs(cls)) >= {f.name for f in dataclasses.fields(cls)}, cls


def test_a_flag_overrides_the_json_config(tmp_path):
    from metacontroller_agents.configs import given_flags
    from metacontroller_agents.runs import load_config
    from metacontroller_envs.cli import build_parser

    path = tmp_path / "config.json"
    path.write_text('{"base": "b.pt", "dataset": "d", "steps": 5, "lr": 0.01, "switch_noise": 1}')
    argv = ["train", "discover", "--config", str(path), "--steps", "2", "--no-switch-noise",
            "--device", "cpu"]  # fmt: skip
    args = build_parser(argv).parse_args(argv)  # what `mcenv train discover` does with them
    given = given_flags(args, args.config_flags)
    assert given == {"steps": 2, "switch_noise": False, "device": "cpu"}
    config = load_config(args.config_class, args.config, **given)
    assert (config.steps, config.switch_noise, config.device) == (2, False, "cpu")
    assert (config.lr, config.base) == (0.01, "b.pt")  # not given as flags: the file's


def test_an_unknown_field_in_a_json_config_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "config.json"
    path.write_text('{"dataset": "pinpad/PinPad-v0/expert-v0", "stepz": 3}')
    assert main(["train", "bc", "--config", str(path), "--out", str(tmp_path / "bc.pt")]) == 2
    assert "unknown BCConfig fields ['stepz']" in capsys.readouterr().err
    assert not (tmp_path / "bc.pt").exists()
