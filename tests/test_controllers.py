"""Any controller drives the latent space (issue 35, part 4): `module:factory` on train
internal-rl, es and sb3 and on eval of what they trained, through the Protocol alone."""

import json

import numpy as np
import pytest
import torch

from metacontroller_agents.checkpoint import load_checkpoint
from metacontroller_agents.controllers import is_factory, load_controller
from metacontroller_agents.internal_rl import InternalRL, InternalRLConfig
from metacontroller_envs.cli import main

torch.set_num_threads(1)

#: A numpy controller of the checker's tests (not our model): its factory takes num_envs.
TOY = "tests.test_check_controller:Toy"


def not_a_controller(num_envs: int = 1) -> object:
    return object()


def test_a_factory_is_told_from_checkpoints_and_makes_controllers_of_its_rows():
    assert is_factory(TOY) and is_factory("metacontroller_agents.controllers:shipped_controller")
    assert not is_factory("pretrained:PinPad-v0") and not is_factory("checkpoints/disc.pt")
    toy = load_controller(TOY, num_envs=5)
    assert (toy.num_envs, toy.latent_dim, toy.observation_size) == (5, 2, 8)
    assert load_controller("tests.test_check_controller:OneRow").num_envs == 1  # no num_envs
    with pytest.raises(ValueError, match="returned a controller for 1 rows"):
        load_controller("tests.test_check_controller:OneRow", num_envs=4)
    with pytest.raises(ValueError, match="cannot load controller factory"):
        load_controller("tests.nothing_here:make", num_envs=2)
    with pytest.raises(ValueError, match="not a LatentController"):
        load_controller("tests.test_controllers:not_a_controller", num_envs=2)
    with pytest.raises(ValueError, match="cannot call controller factory numpy:zeros"):
        load_controller("numpy:zeros", num_envs=2)


def test_internal_rl_learns_in_a_foreign_controllers_codes(tmp_path):
    config = InternalRLConfig(checkpoint=TOY, env="PinPad-Ladder2-v0", episodes=16,
                              batch_episodes=8, num_envs=4, device="cpu")  # fmt: skip
    run = InternalRL(config)
    assert type(run.agent).__name__ == "Toy"  # the Protocol alone, no base model
    episodes = run.collect(0)
    assert episodes.inputs.shape[-1] == 8 and episodes.choices.shape[-1] == 2
    with pytest.raises(ValueError, match="need a discovery checkpoint"):
        InternalRL(InternalRLConfig(checkpoint=TOY, raw_actions=True, batch_episodes=8,
                                    num_envs=4, device="cpu"))  # fmt: skip


def test_the_commands_take_controller_factories(tmp_path, capsys):
    common = ["--env", "PinPad-Ladder2-v0", "--episodes", "8", "--device", "cpu"]
    rl = ["train", "internal-rl", "--controller", TOY, *common, "--batch-episodes", "8",
          "--num-envs", "4", "--out", str(tmp_path / "rl.pt")]  # fmt: skip
    assert main(rl) == 0
    assert load_checkpoint(tmp_path / "rl.pt", "internal_rl")["train_config"]["checkpoint"] == TOY
    es = ["train", "es", "--controller", TOY, *common, "--population", "4",
          "--episodes-per-member", "2", "--out", str(tmp_path / "es.pt")]  # fmt: skip
    assert main(es) == 0
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "rl.pt"), "--episodes", "8",
                 "--device", "cpu"]) == 0  # fmt: skip
    assert "success" in capsys.readouterr().out
    sb3 = ["train", "sb3", "--algo", "ppo", "--controller", TOY, "--env", "PinPad-Ladder2-v0",
           "--episodes", "4", "--every", "2", "--device", "cpu", "--out",
           str(tmp_path / "sb3.json")]  # fmt: skip
    assert main(sb3) == 0
    history = json.loads((tmp_path / "sb3.json").read_text())
    assert [point["episodes"] for point in history] == [2, 4]
    assert np.all([point["env_steps"] >= point["episodes"] for point in history])
