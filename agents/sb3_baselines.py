"""Stable-Baselines3 rows of the internal-RL comparison: PPO from scratch on the raw env,
and PPO or SAC driving the metacontroller's codes through `LatentActionWrapper`.

Each run stops after a budget of episodes, like internal RL, and logs success against
episodes (an episode succeeds when it earns any reward: the suite's tasks are sparse).
`GoalMixturePolicy` gives PPO the Disco103 agent's network, to compare the two update rules
on one network (experiments/disco_vs_ppo.py).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.distributions import Distribution
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from metacontroller_agents.checkpoint import write_atomically
from metacontroller_agents.data import resolve_device
from metacontroller_agents.disco_agent import DiscoActor
from metacontroller_agents.transformer import ModelConfig
from metacontroller_envs.checks import check_count, check_env_id
from metacontroller_envs.files import write_json_atomically

ALGORITHMS = {"ppo": PPO, "sac": SAC}


class EpisodeBudget(BaseCallback):
    """Counts finished episodes (from Monitor's info), logs success per `every` episodes
    (to `out` as it goes, if given) and stops training at `episodes`, or at `env_steps`
    env steps if that is set (0: no step limit)."""

    def __init__(
        self, episodes: int, every: int, out: str | Path | None = None, env_steps: int = 0
    ) -> None:
        super().__init__()
        self.episodes, self.every, self.out = episodes, every, out
        self.max_env_steps = env_steps
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
        steps_left = not self.max_env_steps or self.env_steps < self.max_env_steps
        return len(self.returns) < self.episodes and steps_left

    def write(self) -> None:
        """The history so far, as JSON, atomically: an interrupted run keeps its points."""
        if self.out is not None:
            write_json_atomically(self.out, self.history)


class GoalMixturePolicy(ActorCriticPolicy):
    """PPO's policy on the Disco103 agent's network (`DiscoActor` of `model_config`, a
    ModelConfig as a dict): its PinPad encoder and goal-mixture policy, the planner and its
    weight fixed as `fixed_planner` keeps them, and a linear value head on its features.
    The actor's heads for the rule (y, z, q, aux_pi) are built but unused."""

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        lr_schedule: Schedule,
        model_config: dict[str, Any],
        **kwargs: Any,
    ) -> None:
        self.model_config = ModelConfig(**model_config)  # _build, called by __init__, needs it
        if not self.model_config.goal_head:
            raise ValueError("GoalMixturePolicy needs a model_config with goal_head (PinPad)")
        kwargs["ortho_init"] = False  # keep the actor's own initialisation
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule: Schedule) -> None:
        self.actor = DiscoActor(self.model_config)
        self.actor.encoder.planner.requires_grad_(False)
        self.actor.goal_scale.requires_grad_(False)
        self.value_net = nn.Linear(self.model_config.width, 1)
        trained = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = self.optimizer_class(trained, lr=lr_schedule(1), **self.optimizer_kwargs)

    def heads(self, obs: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        """The action distribution and the values [N, 1] of observations [N, ...]."""
        features, logits = self.actor.features(obs.float().unsqueeze(0))
        return self.action_dist.proba_distribution(action_logits=logits[0]), self.value_net(
            features[0]
        )

    def forward(
        self, obs: torch.Tensor, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        distribution, values = self.heads(obs)
        actions = distribution.get_actions(deterministic=deterministic)
        return actions, values, distribution.log_prob(actions)

    def evaluate_actions(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        distribution, values = self.heads(obs)
        return values, distribution.log_prob(actions), distribution.entropy()

    def get_distribution(self, obs: torch.Tensor) -> Distribution:
        return self.heads(obs)[0]

    def predict_values(self, obs: torch.Tensor) -> torch.Tensor:
        return self.heads(obs)[1]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(),
                "model_config": dataclasses.asdict(self.model_config)}  # fmt: skip


class PolicyLogits(nn.Module):
    """An SB3 policy over discrete actions as the memoryless actor that
    `metacontroller_agents.evaluate.rollout` plays: `logits(obs)`."""

    def __init__(self, policy: ActorCriticPolicy) -> None:
        super().__init__()
        self.policy = policy

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        return self.policy.get_distribution(obs).distribution.logits


def make_env(
    env_id: str,
    latent: str | None,
    device: str,
    seed: int,
    env_kwargs: dict | None = None,
    threshold: float | None = None,
) -> gym.Env:
    """The raw env (gym.make(env_id, **env_kwargs)), or with `latent` (a discovery
    checkpoint, pretrained:NAME or module:factory: controllers.load_controller), its
    LatentActionWrapper (switch `threshold`, default the wrapper's; 0: a new code every
    step, the beta = 1 ablation)."""
    check_env_id(env_id, env_kwargs)
    env = gym.make(env_id, **(env_kwargs or {}))
    if latent is not None:
        from metacontroller_agents.controllers import load_controller
        from metacontroller_envs.wrappers import LatentActionWrapper

        controller = load_controller(latent, 1, device, seed)
        options = {} if threshold is None else {"threshold": threshold}
        env = LatentActionWrapper(env, controller, **options)
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
    init: str | Path | None = None,
    threshold: float | None = None,
) -> list[dict[str, Any]]:
    """Train SB3's `algo` on `env_id` (or on its latent wrapper) for `episodes` episodes;
    returns (and writes to `out` as JSON) the success history. `save`: also write the
    trained model there (SB3's zip, atomically), to evaluate it later. `env_kwargs`: keyword
    arguments of gym.make (e.g. {"task_in_obs": True}). `init`: continue the SB3 model saved
    there (a curriculum: the previous rung's) instead of a new one. `threshold`: the latent
    wrapper's switch threshold (make_env)."""
    if algo not in ALGORITHMS:
        raise ValueError(f"unknown algo {algo!r}: use one of {list(ALGORITHMS)}")
    check_count("episodes", episodes)
    check_count("every", every)
    torch_device = str(resolve_device(device))
    env = make_env(env_id, latent, torch_device, seed, env_kwargs, threshold)
    if algo == "sac" and not isinstance(env.action_space, gym.spaces.Box):
        raise ValueError(
            f"SAC needs a continuous (Box) action space; {env_id} has {env.action_space}: "
            "drive it through the latent wrapper (--latent CHECKPOINT) or use ppo"
        )
    if init is not None:
        model = ALGORITHMS[algo].load(init, env=env, device=torch_device)
        model.set_random_seed(seed)
    else:
        model = ALGORITHMS[algo]("MlpPolicy", env, seed=seed, device=torch_device, verbose=0)
    budget = EpisodeBudget(episodes, every, out)
    model.learn(total_timesteps=10**12, callback=budget)
    if save is not None:
        write_atomically(save, model.save)
    return budget.history
