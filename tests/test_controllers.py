"""Any controller drives the latent space (issue 35, part 4): `module:factory` on train
internal-rl, es and sb3, on eval of what they trained, and on analyze (closed loop) and
render, through the Protocol alone."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

from metacontroller_agents.analysis import SwitchRecorder, play_switches, switch_report
from metacontroller_agents.checkpoint import load_checkpoint
from metacontroller_agents.controllers import is_factory, load_controller, shipped_controller
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


class SubgoalOracle:
    """The shipped model's moves, with a switch that fires exactly where the env's subgoal
    index changes (it reads the infos)."""

    def __init__(self, num_envs=1):
        self.model = shipped_controller(num_envs)
        self.num_envs, self.latent_dim = num_envs, self.model.latent_dim
        self.observation_size = self.model.observation_size
        self.last = np.full(num_envs, -1)

    def reset(self, rows, seed=None):
        self.model.reset(rows, seed)
        self.last[rows] = -1

    def observe(self, observations, rows, infos=None):
        e, _ = self.model.observe(observations, rows)
        index = np.array([info["subgoal_index"] for info in infos])
        beta = (index != self.last[rows]).astype(np.float64)
        self.last[rows] = index
        return e, beta

    def act(self, rows, z):
        return self.model.act(rows, z)


def test_closed_loop_switches_are_scored_against_the_envs_subgoals():
    result = play_switches(SubgoalOracle(num_envs=8), "PinPad-v0", episodes=20, seed=3)
    assert result["beta"].shape[0] == 20 and result["mask"][:, 0].all()
    report = switch_report(**result, tolerance=0)
    assert report.subgoal_changes_per_episode >= 0.25  # the model reaches pads
    assert report.f1 == 1.0 and report.switches_per_episode == report.subgoal_changes_per_episode
    same = play_switches(SubgoalOracle(num_envs=8), "PinPad-v0", episodes=20, seed=3)
    assert all(np.array_equal(same[key], result[key]) for key in result)


def test_the_recorder_keeps_the_steps_acted_on_not_the_last_observation():
    recorder = SwitchRecorder(SubgoalOracle(num_envs=2))
    env = gym.make("PinPad-v0")
    obs, info = env.reset(seed=0)
    rows = np.array([1])
    recorder.reset(rows)
    recorder.observe(obs[None], rows, [info])
    recorder.act(rows, np.zeros((1, recorder.latent_dim), np.float32))
    recorder.observe(obs[None], rows, [{**info, "subgoal_index": 1}])  # a terminal observation
    assert recorder.steps == [[], [(1.0, 0)]]
    with pytest.raises(ValueError, match="no info\\['subgoal_index'\\]"):
        recorder.observe(obs[None], rows, [{}])


def test_analyze_and_render_take_controller_factories(tmp_path, capsys):
    shipped = "metacontroller_agents.controllers:shipped_controller"
    common = ["--env", "PinPad-v0", "--episodes", "16", "--num-envs", "8", "--device", "cpu"]
    assert main(["analyze", "--controller", shipped, *common]) == 0
    assert main(["analyze", "--pretrained", "PinPad-v0", *common]) == 0
    by_factory, by_name = capsys.readouterr().out.splitlines()
    assert by_factory == by_name and "closed loop" in by_factory and "switch F1" in by_factory
    assert main(["analyze", "--controller", TOY, "--episodes", "4"]) == 2
    assert "give --env ID" in capsys.readouterr().err
    video = tmp_path / "toy.gif"
    render = ["render", "--agent", "metacontroller", "--controller", TOY, "--env", "PinPad-v0",
              "--episodes", "2", "--out", str(video)]  # fmt: skip
    assert main(render) == 0 and video.stat().st_size > 0
    assert "2 episodes" in capsys.readouterr().out
    render[2] = "bc"
    assert main(render) == 2
    assert "film it with --agent metacontroller" in capsys.readouterr().err
