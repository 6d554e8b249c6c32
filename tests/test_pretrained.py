"""The shipped agents (issue 32): each loads with weights only, by name, reproduces the short
evaluation its file records, and drives the latent wrapper with SB3; bad files are refused."""

import shutil

import gymnasium as gym
import numpy as np
import pytest
import torch

import metacontroller_envs  # noqa: F401
from metacontroller_agents.checkpoint import load_checkpoint, load_model
from metacontroller_agents.evaluate import evaluate_model
from metacontroller_agents.latent import LatentAgent
from metacontroller_agents.policies import evaluate_policy
from metacontroller_agents.pretrained import PREFIX, names, pretrained_path, provenance
from metacontroller_envs.wrappers import LatentActionWrapper

torch.set_num_threads(1)  # as the stored evaluations were played

SHIPPED = names()


def test_the_package_ships_a_base_model_and_policies():
    assert "PinPad-v0" in SHIPPED
    kinds = {load_checkpoint(pretrained_path(name), ("discovery", "internal_rl"))["kind"]
             for name in SHIPPED}  # fmt: skip
    assert kinds == {"discovery", "internal_rl"}


@pytest.mark.parametrize("name", SHIPPED)
def test_each_shipped_agent_reproduces_its_stored_evaluation(name):
    record = provenance(name)
    assert record["command"] and record["commit"] and record["date"]
    stored = record["stored_evaluation"]
    payload = load_checkpoint(PREFIX + name, ("discovery", "internal_rl"))
    assert "optimizer" not in payload  # weights and configs only
    if payload["kind"] == "discovery":
        base, _ = load_model(PREFIX + name, "cpu", kind="discovery")
        report = evaluate_model(base, stored["env"], stored["episodes"], "cpu", 64, stored["seed"])
        assert report.free_play_successes == stored["free_play_successes"]
    else:
        assert payload["train_config"]["checkpoint"].startswith(PREFIX)
        report = evaluate_policy(PREFIX + name, stored["episodes"], stored["seed"], "cpu")
        greedy = evaluate_policy(PREFIX + name, stored["episodes"], stored["seed"], "cpu",
                                 greedy=True)  # fmt: skip
        assert greedy.successes == stored["greedy_successes"]
    assert (report.env_id, report.successes) == (stored["env"], stored["successes"])


def test_sb3_drives_the_shipped_agent_through_the_latent_wrapper():
    from stable_baselines3 import PPO

    env = LatentActionWrapper(gym.make("PinPad-v0"), LatentAgent.pretrained("PinPad-v0"))
    model = PPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=16)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs)
    assert env.step(action)[0].shape == env.observation_space.shape


def test_unknown_corrupt_and_foreign_files_are_refused(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="no pretrained agent 'nope': shipped are"):
        LatentAgent.pretrained("nope")
    corrupt = tmp_path / "PinPad-v0.pt"
    shutil.copy(pretrained_path("PinPad-v0"), corrupt)
    data = corrupt.read_bytes()
    corrupt.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or not a torch file"):
        load_checkpoint(corrupt, "discovery")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(ValueError, match="not a metacontroller-envs checkpoint"):
        load_checkpoint(foreign, "discovery")
    pickled = tmp_path / "code.pt"
    torch.save({"format": np.random.default_rng(0)}, pickled)  # an object: needs pickle code
    with pytest.raises(ValueError, match="corrupt or not a torch file"):
        load_checkpoint(pickled, "discovery")


def test_the_commands_take_a_shipped_agent_by_name(capsys):
    from metacontroller_envs.cli import main

    policy = next(name for name in SHIPPED if name != "PinPad-v0")
    assert main(["eval", "--pretrained", policy, "--episodes", "8", "--device", "cpu"]) == 0
    assert "success" in capsys.readouterr().out
    base = ["eval", "--pretrained", "PinPad-v0", "--env", "PinPad-Ladder2-v0", "--episodes", "8"]
    assert main([*base, "--num-envs", "8", "--device", "cpu"]) == 0  # its base model alone
    assert "PinPad-Ladder2-v0: success" in capsys.readouterr().out
    assert main(["eval", "--pretrained", "PinPad-v0", "--checkpoint", "x.pt"]) == 2
    assert "not both" in capsys.readouterr().err
