"""Latent envs by id (issue 35): registered by the agent package, made by name through
gym.make, gym.make_vec and SB3, and gymnasium's and SB3's check_env pass with no skip flag."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import metacontroller_agents.latent_envs  # noqa: F401  (registers Latent-<id>)
from metacontroller_envs.registry import ids_of

torch.set_num_threads(1)


def test_every_pinpad_env_has_a_latent_id():
    for env_id in ids_of("pinpad"):
        assert gym.spec(f"Latent-{env_id}").kwargs == {"env_id": env_id}


def test_checkers_pass_on_a_latent_id_with_no_skip_flag():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make("Latent-PinPad-Ladder2-v0")
    check_env(env.unwrapped)
    sb3_check_env(env.unwrapped)
    check_env(gym.make("Latent-PinPad-Ladder2-v0", render_mode="rgb_array"))
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape and env.action_space.shape == (8,)


def test_make_vec_sb3_and_other_controllers_take_it_by_name(tmp_path):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    vec = gym.make_vec("Latent-PinPad-v0", num_envs=2, env_kwargs={"task": "0"})
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (2, *vec.single_observation_space.shape)
    model = PPO("MlpPolicy", make_vec_env("Latent-PinPad-v0", n_envs=2, seed=0), n_steps=8,
                batch_size=16, n_epochs=1, device="cpu")  # fmt: skip
    model.learn(16)
    toy = gym.make("Latent-PinPad-v0", controller="tests.test_check_controller:OneRow")
    assert toy.action_space.shape == (2,)
    toy.reset(seed=0)
    assert toy.step(np.zeros(2, np.float32))[0].shape == (8,)
    with pytest.raises(ValueError, match="cannot load controller factory"):
        gym.make("Latent-PinPad-v0", controller="tests.nothing_here:make")


def test_rl_zoo3_trains_and_evaluates_on_a_latent_id(tmp_path):
    """rl-zoo3's own command lines, as the docs give them, shortened (64 steps)."""
    import subprocess
    import sys

    pytest.importorskip("rl_zoo3")
    common = ["--algo", "ppo", "--env", "Latent-PinPad-Ladder2-v0", "--gym-packages",
              "metacontroller_agents.latent_envs", "-f", str(tmp_path)]  # fmt: skip
    train = [sys.executable, "-m", "rl_zoo3.train", *common, "-conf",
             "benchmarks/configs/rl-zoo3-latent.yml", "-n", "64", "--eval-freq", "-1",
             "--seed", "0", "--device", "cpu", "--hyperparams", "n_steps:32",
             "batch_size:32"]  # fmt: skip
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(train, check=True, capture_output=True, env=env, timeout=300)
    assert list(tmp_path.glob("ppo/Latent-PinPad-Ladder2-v0_1/Latent-PinPad-Ladder2-v0.zip"))
    enjoy = [sys.executable, "-m", "rl_zoo3.enjoy", *common, "--exp-id", "1", "-n", "20",
             "--no-render", "--device", "cpu"]  # fmt: skip
    done = subprocess.run(enjoy, check=True, capture_output=True, text=True, env=env,
                          timeout=300)  # fmt: skip
    assert "Latent-PinPad-Ladder2-v0" in done.stdout + done.stderr
