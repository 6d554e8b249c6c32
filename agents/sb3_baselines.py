"""Stable-Baselines3 rows of the internal-RL comparison: PPO from scratch on the raw env,
and PPO or SAC driving the metacontroller's codes through `LatentActionWrapper`.

Each run stops after a budget of episodes, like internal RL, and logs success against
episodes (an episode succeeds when it earns any reward: the suite's tasks are sparse).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.monitor import Monitor

from agents.checkpoint import write_atomically
from agents.data import resolve_device
from metacontroller_envs.checks import check_count, check_env_id

ALGORITHMS = {"ppo": PPO, "sac": SAC}


class EpisodeBudget(BaseCallback):
    """Counts finished episodes (from Monitor's info), logs success per `every` episodes
    (to `out` as it goes, if given) and stops training at `episodes`."""

    def __init__(self, episodes: int, every: int, out: str | Path | None = None) -> None:
        super().__init__()
        self.episodes, self.every, self.out = episodes, every, out
        self.returns: list[float] = []
        self.env_steps = 0
        self.history: list[dict[str, Any]] = []
        self.clock = time.perf_counter()

    def _on_step(self) -> bool:
        for info in self.locals["infos"]:
            self.env_steps += int(info.get("primitive_steps", 1))
            if "episode" in info:
                self.returns.append(float(info["episode"]["r"]))
                if len(self.returns) % self.every == 0:
                    recent = np.array(self.returns[-self.every :])
                    self.history.append({
                        "episodes": len(self.returns),
                        "success": float((recent > 0).mean()),
                        "return": float(recent.mean()),
                        "env_steps": self.env_steps,
                        "seconds": time.perf_counter() - self.clock,
                    })  # fmt: skip
                    self.write()
        return len(self.returns) < self.episodes

    def write(self) -> None:
        """The history so far, as JSON, atomically: an interrupted run keeps its points."""
        if self.out is not None:
            text = json.dumps(self.history, indent=1)
            write_atomically(self.out, lambda temp: Path(temp).write_text(text))


def make_env(
    env_id: str, latent: str | None, device: str, seed: int, env_kwargs: dict | None = None
) -> gym.Env:
    """The raw env (gym.make(env_id, **env_kwargs)), or with a discovery checkpoint
    `latent`, its LatentActionWrapper."""
    check_env_id(env_id, env_kwargs)
    env = gym.make(env_id, **(env_kwargs or {}))
    if latent is not None:
        from agents.latent import LatentAgent
        from metacontroller_envs.wrappers import LatentActionWrapper

        agent = LatentAgent.from_checkpoint(latent, device=device, seed=seed)
        env = LatentActionWrapper(env, agent)
    return Monitor(env)


def train_sb3(
    algo: str,
    env_id: str,
    episodes: int,
    latent: str | None = None,
    seed: int = 0,
    device: str = "auto",
    every: int = 100,
    out: str | Path | None = None,
    save: str | Path | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train SB3's `algo` on `env_id` (or on its latent wrapper) for `episodes` episodes;
    returns (and writes to `out` as JSON) the success history. `save`: also write the
    trained model there (SB3's zip, atomically), to evaluate it later. `env_kwargs`: keyword
    arguments of gym.make (e.g. {"task_in_obs": True})."""
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algo {algo!r}: use one of {list(ALGORITHMS)}")
    check_count("episodes", episodes)
    check_count("every", every)
    torch_device = str(resolve_device(device))
    env = make_env(env_id, latent, torch_device, seed, env_kwargs)
    if algo == "sac" and not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(
            f"SAC needs a continuous (Box) action space; {env_id} has {env.action_space}: "
            "drive it through the latent wrapper (--latent CHECKPOINT) or use ppo"
        )
    model = ALGORITHMS[algo]("MlpPolicy", env, seed=seed, device=torch_device, verbose=0)
    budget = EpisodeBudget(episodes, every, out)
    model.learn(total_timesteps=10**12, callback=budget)
    if save is not None:
        write_atomically(save, model.save)
    return budget.history
