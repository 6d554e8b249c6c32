"""Roll a base model (or a memoryless actor) out in its env: success rate with a confidence
interval, return, length.

Episodes run in waves of `num_envs` that start together, so one KV cache per wave serves
every env (one token per step). PinPad waves use the batched vector env; other envs are
stepped one by one. Episode k of an evaluation starts from reset(seed=seed + k).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode
from torch import nn

from metacontroller_agents.transformer import CausalTransformer
from metacontroller_envs.checks import check_count
from metacontroller_envs.evaluate import episode_success, wilson_interval
from metacontroller_envs.registry import in_family


@dataclass(frozen=True)
class RolloutReport:
    env_id: str
    episodes: int
    successes: int
    mean_return: float
    mean_length: float
    seconds: float
    free_play_successes: int | None = None
    """PinPad with the task hidden: episodes of free play whose colour visits spell one of
    the env's tasks (the agent chose a task and completed it)."""

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes

    def line(self) -> str:
        low, high = wilson_interval(self.successes, self.episodes)
        text = (
            f"{self.env_id}: success {self.success_rate:.4f} ({self.successes}/{self.episodes}, "
            f"95% CI [{low:.4f}, {high:.4f}]), mean return {self.mean_return:.3f}, mean "
            f"length {self.mean_length:.1f} steps, {self.episodes / self.seconds:.0f} episodes/s"
        )
        if self.free_play_successes is not None:
            low, high = wilson_interval(self.free_play_successes, self.episodes)
            text += (
                f"; free play: {self.free_play_successes / self.episodes:.4f} of episodes "
                f"complete one of the tasks (95% CI [{low:.4f}, {high:.4f}])"
            )
        return text


class EnvBatch:
    """`n` copies of an env that play one episode each per `reset` (no autoreset)."""

    def __init__(self, spec: EnvSpec, n: int) -> None:
        self.n = n
        self.vector = spec.vector_entry_point is not None
        if self.vector:
            self.envs: Any = gym.make_vec(
                spec.id,
                num_envs=n,
                vectorization_mode="vector_entry_point",
                autoreset_mode=AutoresetMode.DISABLED,
                **spec.kwargs,
            )
        else:
            self.envs = [gym.make(spec) for _ in range(n)]
        self._obs: np.ndarray | None = None

    def reset(self, seeds: list[int]) -> np.ndarray:
        if self.vector:
            self._obs, _ = self.envs.reset(seed=seeds)
        else:
            self._obs = np.stack(
                [env.reset(seed=s)[0] for env, s in zip(self.envs, seeds, strict=True)]
            )
        return self._obs

    def step(self, actions: np.ndarray, alive: np.ndarray) -> tuple[np.ndarray, ...]:
        """(obs, reward, done, success); envs not alive are left alone (reward 0)."""
        if self.vector:
            obs, reward, terminated, truncated, info = self.envs.step(actions)
            return obs, reward * alive, terminated | truncated, info["success"]
        reward, done, success = np.zeros(self.n), np.zeros(self.n, bool), np.zeros(self.n, bool)
        obs = self._obs.copy()
        for i in np.flatnonzero(alive):
            obs[i], reward[i], terminated, truncated, info = self.envs[i].step(actions[i])
            done[i] = terminated or truncated
            success[i] = episode_success(info)
        self._obs = obs
        return obs, reward, done, success

    def close(self) -> None:
        for env in [self.envs] if self.vector else self.envs:
            env.close()


#: Steps after which an episode of a memoryless actor is cut and counts as a failure.
ACTOR_STEP_LIMIT = 10_000


@torch.no_grad()
def rollout(
    model: CausalTransformer | nn.Module,
    spec: EnvSpec,
    episodes: int,
    device: str | torch.device = "cpu",
    num_envs: int = 256,
    seed: int = 0,
    greedy: bool = False,
) -> dict[str, np.ndarray]:
    """Per-episode return, length and success. `model` is a base model, whose episodes
    longer than its max_len - 1 steps are cut there and count as failures, or a memoryless
    actor with discrete `logits(obs)` (a Disco103 actor)."""
    n = min(num_envs, episodes)
    envs = EnvBatch(spec, n)
    generator = torch.Generator(device=device).manual_seed(seed)
    returns, lengths, successes = [], [], []
    model.eval()
    sequence = isinstance(model, CausalTransformer)
    discrete = model.discrete if sequence else True
    limit = model.config.max_len - 1 if sequence else ACTOR_STEP_LIMIT
    try:
        for wave_start in range(0, episodes, n):
            obs = envs.reset([seed + wave_start + i for i in range(n)])
            if sequence:
                cache = model.new_cache(n)
                prev = torch.full((n,), model.start_action, device=device)
                if not discrete:
                    prev = torch.zeros(n, model.config.action_dim, device=device)
            alive = np.ones(n, bool)
            wave_return, wave_length = np.zeros(n), np.zeros(n, int)
            wave_success = np.zeros(n, bool)
            for _ in range(limit):
                observed = torch.as_tensor(obs, device=device)
                if sequence:
                    action = model.step(observed, prev, cache).action[:, 0]
                else:
                    action = model.logits(observed)
                if greedy:
                    chosen = action.argmax(-1) if discrete else action
                elif discrete:
                    probs = torch.softmax(action.float(), -1)
                    chosen = torch.multinomial(probs, 1, generator=generator)[:, 0]
                else:
                    chosen = model.action_distribution(action).sample()
                obs, reward, done, success = envs.step(chosen.cpu().numpy(), alive)
                wave_return += reward * alive
                wave_length += alive
                wave_success |= success & alive
                alive &= ~done
                prev = chosen
                if not alive.any():
                    break
            keep = min(n, episodes - wave_start)
            returns.append(wave_return[:keep])
            lengths.append(wave_length[:keep])
            successes.append(wave_success[:keep])
    finally:
        envs.close()
    return {
        "returns": np.concatenate(returns),
        "lengths": np.concatenate(lengths),
        "successes": np.concatenate(successes),
    }


def evaluate_model(
    model: CausalTransformer | nn.Module,
    spec: EnvSpec | str,
    episodes: int,
    device: str | torch.device = "cpu",
    num_envs: int = 256,
    seed: int = 0,
    greedy: bool = False,
) -> RolloutReport:
    """Success, return and length over `episodes`; for PinPad with the task hidden, also
    how often the agent completes some task of the env in free play."""
    if isinstance(spec, str):
        spec = gym.spec(spec)
    check_count("episodes", episodes)
    start = time.perf_counter()
    result = rollout(model, spec, episodes, device, num_envs, seed, greedy)
    seconds = time.perf_counter() - start
    free_play = None
    if in_family(spec, "pinpad") and not spec.kwargs.get("task_in_obs", False):
        free_spec = EnvSpec.from_json(spec.to_json())
        free_spec.kwargs = {**spec.kwargs, "free_play": True}
        played = rollout(model, free_spec, episodes, device, num_envs, seed, greedy)
        free_play = int(played["successes"].sum())
    return RolloutReport(
        env_id=spec.id,
        episodes=episodes,
        successes=int(result["successes"].sum()),
        mean_return=float(result["returns"].mean()),
        mean_length=float(result["lengths"].mean()),
        seconds=seconds,
        free_play_successes=free_play,
    )
