"""Evaluating the policy an internal-RL or ES run trained, on layouts no training used.

Played as it was trained: internal RL samples its codes (raw-action runs their actions),
ES plays its mean codes, as its members were scored; or greedily: every policy its mean
code (raw-action runs the argmax action), as SB3's `deterministic=True`. `mcenv eval`, the
ladder experiment and the shipped agents' stored evaluations all go through
`evaluate_policy`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from metacontroller_agents.checkpoint import load_checkpoint
from metacontroller_agents.evaluate import RolloutReport
from metacontroller_agents.evolution import EvolutionConfig, mean_codes
from metacontroller_agents.internal_rl import InternalRL, InternalRLConfig
from metacontroller_agents.runs import POLICY_KINDS
from metacontroller_envs.checks import check_count

#: Default first layout seed of an evaluation: far above the seeds training draws.
EVAL_SEED = 10**9


def evaluate_policy(
    checkpoint: str | Path,
    episodes: int = 256,
    seed: int = EVAL_SEED,
    device: str = "cpu",
    env: str | None = None,
    env_kwargs: dict[str, Any] | None = None,
    num_envs: int = 64,
    greedy: bool = False,
) -> RolloutReport:
    """Success over `episodes` episodes of `env` (default: the one it trained on), played
    by the largest number of env rows <= num_envs that divides `episodes`, row r's layouts
    seeded from seed + r."""
    check_count("episodes", episodes)
    payload = load_checkpoint(checkpoint, POLICY_KINDS, device)
    try:
        if payload["kind"] == "evolution":
            trained = EvolutionConfig(**payload["train_config"]).rollouts()
        else:
            trained = InternalRLConfig(**payload["train_config"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError(f"checkpoint {checkpoint} holds no usable run config: {error}") from None
    num_envs = max(n for n in range(1, min(num_envs, episodes) + 1) if episodes % n == 0)
    config = dataclasses.replace(
        trained, env=env or trained.env,
        env_kwargs=trained.env_kwargs if env_kwargs is None else env_kwargs,
        episodes=episodes, batch_episodes=episodes, num_envs=num_envs, advantage="batch",
        init_policy=str(checkpoint), init_std=None, device=device,
    )  # fmt: skip
    run = InternalRL(config)
    choose = None  # sample the policy, as internal RL trains
    if greedy or payload["kind"] == "evolution":
        choose = mean_codes(run.trained)  # type: ignore[arg-type]
        run.agent.sample = False  # raw actions: the argmax

    clock = time.perf_counter()
    try:
        played = run.collect(0, choose=choose, seed=seed)
    finally:
        run.envs.close()
    return RolloutReport(
        env_id=config.env,
        episodes=len(played.success),
        successes=int(played.success.sum()),
        mean_return=float(played.returns.mean()),
        mean_length=float(played.lengths.mean()),
        seconds=time.perf_counter() - clock,
    )
