"""Success rate of an env's expert over a range of seeds (one episode per seed)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import gymnasium as gym

from metacontroller_envs.checks import check_env_id
from metacontroller_envs.experts import make_expert


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval of a success rate (Wilson score)."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


#: Student's t 97.5% quantile by degrees of freedom (runs - 1), for intervals over seeds.
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228}  # fmt: skip


def seed_interval(rates: Sequence[float]) -> tuple[float, float] | None:
    """95% t-interval of the mean of success rates over seeds (runs), clipped to [0, 1];
    None for fewer than two runs (their spread is unknown)."""
    n = len(rates)
    if n < 2:
        return None
    mean = sum(rates) / n
    std = math.sqrt(sum((r - mean) ** 2 for r in rates) / (n - 1))
    half = T_975.get(n - 1, 1.96) * std / math.sqrt(n)
    return max(0.0, mean - half), min(1.0, mean + half)


def episode_success(info: dict) -> bool:
    """Success as an env's last info reports it; Visual Pin Pad never terminates, so there
    an episode succeeds if it scored at least once."""
    return bool(info["success"] if "success" in info else info["successes"] > 0)


@dataclass(frozen=True)
class ExpertReport:
    env_id: str
    episodes: int
    successes: int
    mean_length: float
    mean_return: float
    seconds: float

    @property
    def success_rate(self) -> float:
        return self.successes / self.episodes

    def line(self) -> str:
        low, high = wilson_interval(self.successes, self.episodes)
        return (
            f"{self.env_id}: expert success {self.success_rate:.4f} "
            f"({self.successes}/{self.episodes}, 95% CI [{low:.4f}, {high:.4f}]), "
            f"mean length {self.mean_length:.1f} steps, mean return {self.mean_return:.3f}, "
            f"{self.seconds:.1f} s"
        )


def evaluate_expert(
    env_id: str, episodes: int, epsilon: float = 0.0, first_seed: int = 0
) -> ExpertReport:
    check_env_id(env_id)
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    env = gym.make(env_id)
    expert = make_expert(env, epsilon=epsilon, seed=first_seed)
    successes = steps = 0
    total_return = 0.0
    start = time.perf_counter()
    for seed in range(first_seed, first_seed + episodes):
        env.reset(seed=seed)
        done = False
        while not done:
            _, reward, terminated, truncated, info = env.step(expert.act())
            steps += 1
            total_return += reward
            done = terminated or truncated
        successes += episode_success(info)
    return ExpertReport(
        env_id,
        episodes,
        successes,
        steps / episodes,
        total_return / episodes,
        time.perf_counter() - start,
    )
