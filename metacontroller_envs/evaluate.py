"""Success rate of an env's expert over a range of seeds (one episode per seed)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import gymnasium as gym

import metacontroller_envs
from metacontroller_envs.pinpad import PinPadEnv, PinPadExpert


@dataclass(frozen=True)
class ExpertReport:
    env_id: str
    episodes: int
    successes: int
    mean_length: float
    seconds: float

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes

    def wilson_interval(self, z: float = 1.96) -> tuple[float, float]:
        """95% confidence interval of the success rate (Wilson score)."""
        n, p = self.episodes, self.success_rate
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def line(self) -> str:
        low, high = self.wilson_interval()
        return (
            f"{self.env_id}: expert success {self.success_rate:.4f} "
            f"({self.successes}/{self.episodes}, 95% CI [{low:.4f}, {high:.4f}]), "
            f"mean length {self.mean_length:.1f} steps, {self.seconds:.1f} s"
        )


def evaluate_expert(
    env_id: str, episodes: int, epsilon: float = 0.0, first_seed: int = 0
) -> ExpertReport:
    if env_id not in gym.registry:
        raise ValueError(
            f"unknown env id {env_id!r}: "
            f"registered here are {', '.join(metacontroller_envs.ENV_IDS)}"
        )
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = gym.make(env_id)
    if not isinstance(env.unwrapped, PinPadEnv):
        raise ValueError(f"{env_id} has no expert yet: experts exist for the PinPad-* ids")
    expert = PinPadExpert(env, epsilon=epsilon, seed=first_seed)
    successes = steps = 0
    start = time.perf_counter()
    for seed in range(first_seed, first_seed + episodes):
        env.reset(seed=seed)
        done = False
        while not done:
            _, reward, terminated, truncated, info = env.step(expert.act())
            steps += 1
            done = terminated or truncated
        successes += int(info["success"])
    return ExpertReport(env_id, episodes, successes, steps / episodes, time.perf_counter() - start)
