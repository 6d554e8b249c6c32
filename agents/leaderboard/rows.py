"""The rows of the table: one adapter per algorithm, which trains on a cell's env under the
profile's budget and then plays the evaluation episodes. A new row is one entry of ALGOS.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metacontroller_agents.checkpoint import load_checkpoint, model_from_checkpoint
from metacontroller_agents.disco import WEIGHTS_ENV
from metacontroller_agents.disco_agent import DiscoConfig, load_actor, train_disco
from metacontroller_agents.evaluate import RolloutReport, rollout
from metacontroller_agents.evolution import EvolutionConfig, mean_codes, train_evolution
from metacontroller_agents.internal_rl import InternalRL, InternalRLConfig, train_internal_rl
from metacontroller_agents.leaderboard.pretraining import Bench, Pretrained
from metacontroller_agents.leaderboard.protocol import Cell, eval_seed
from metacontroller_agents.sb3_baselines import ALGORITHMS, make_env, train_sb3
from metacontroller_envs.evaluate import episode_success
from metacontroller_envs.evaluate import evaluate_expert as evaluate_expert_episodes


@dataclass
class Trained:
    """What a row's training produced (for its evaluate) and what the training cost."""

    agent: Any = None
    episodes: int = 0
    """Training episodes (BC: the expert episodes it learned from)."""
    env_steps: int = 0
    """Env steps of those episodes (primitive steps for latent actions)."""
    seconds: float | None = None
    """Training wall-clock (None: timed by run_cell)."""
    history: list[dict[str, Any]] = field(default_factory=list)
    """Learning curve: {"episodes", "success", "env_steps"} per logged point."""


@dataclass(frozen=True)
class Algo:
    """A row of the table: train on a cell's env under the profile's budget, then evaluate."""

    train: Callable[[Bench, Cell, Pretrained | None], Trained]
    evaluate: Callable[[Bench, Cell, Trained], RolloutReport]
    about: str
    """One line for leaderboard.md: what the row is."""
    pretraining: str | None = None
    """The pretraining stage it needs: None, "bc" or "discovery"."""
    not_for: Callable[[str], str | None] = lambda env_id: None
    """Why the row does not apply to an env (shown as a footnote), or None."""


def rollout_report(
    env_id: str, returns: Any, lengths: Any, successes: Any, seconds: float
) -> RolloutReport:
    """Per-episode returns, lengths and successes as the one report every row evaluates to."""
    return RolloutReport(
        env_id=env_id,
        episodes=len(returns),
        successes=int(np.sum(successes)),
        mean_return=float(np.mean(returns)),
        mean_length=float(np.mean(lengths)),
        seconds=seconds,
    )


def play(
    env: gym.Env, env_id: str, act: Callable[[Any], Any], episodes: int, seed: int
) -> RolloutReport:
    """Episode i from env.reset(seed=seed + i), actions from act(obs); lengths count
    primitive env steps (a latent action runs several)."""
    returns, lengths, successes = [], [], []
    start = time.perf_counter()
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        done, total, steps = False, 0.0, 0
        while not done:
            obs, reward, terminated, truncated, info = env.step(act(obs))
            total += float(reward)
            steps += int(info.get("primitive_steps", 1))
            done = terminated or truncated
        returns.append(total)
        lengths.append(steps)
        successes.append(episode_success(info))
    env.close()
    return rollout_report(env_id, returns, lengths, successes, time.perf_counter() - start)


#: Evaluation episodes the batched rollouts (bc, internal RL) play side by side.
EVAL_WAVE = 64


def wave_size(bench: Bench) -> int:
    return min(EVAL_WAVE, bench.profile.eval_episodes)


def no_training(bench: Bench, cell: Cell, pretrained: Pretrained | None) -> Trained:
    return Trained(seconds=0.0)


def evaluate_random(bench: Bench, cell: Cell, trained: Trained) -> RolloutReport:
    env = gym.make(cell.env_id)
    env.action_space.seed(eval_seed(cell.seed))
    return play(env, cell.env_id, lambda obs: env.action_space.sample(),
                bench.profile.eval_episodes, eval_seed(cell.seed))  # fmt: skip


def evaluate_expert(bench: Bench, cell: Cell, trained: Trained) -> RolloutReport:
    """One episode per seed, as `mcenv expert` measures it."""
    r = evaluate_expert_episodes(cell.env_id, bench.profile.eval_episodes, 0.0,
                                 eval_seed(cell.seed))  # fmt: skip
    return RolloutReport(r.env_id, r.episodes, r.successes, r.mean_return, r.mean_length,
                         r.seconds)  # fmt: skip


def train_bc_row(bench: Bench, cell: Cell, pretrained: Pretrained | None) -> Trained:
    """BC is the pretraining's base model: its cost is the BC stage's (none for a shipped
    agent, whose provenance the table's pretraining section gives)."""
    if "shipped" in pretrained.record:
        return Trained(agent=pretrained.bc, seconds=0.0)
    data, bc = pretrained.record["data"], pretrained.record["bc"]
    return Trained(agent=pretrained.bc, episodes=data["episodes"], env_steps=data["env_steps"],
                   seconds=bc["seconds"])  # fmt: skip


def evaluate_bc(bench: Bench, cell: Cell, trained: Trained) -> RolloutReport:
    payload = load_checkpoint(trained.agent, ("bc", "discovery"), bench.device)
    model = model_from_checkpoint(payload, trained.agent, bench.device)
    start = time.perf_counter()
    result = rollout(model, gym.spec(cell.env_id), bench.profile.eval_episodes, bench.device,
                     wave_size(bench), eval_seed(cell.seed))  # fmt: skip
    return rollout_report(cell.env_id, result["returns"], result["lengths"],
                          result["successes"], time.perf_counter() - start)  # fmt: skip


@dataclass(frozen=True)
class PolicyRun:
    """A trained latent policy (or raw-action base model) and the rollouts that play it."""

    checkpoint: Path
    kind: str
    """The checkpoint's kind ("internal_rl"; "evolution" for ES)."""
    rollouts: InternalRLConfig
    """The internal-RL config whose rollout machinery plays the policy."""


def trained_policy(trainer: Callable[..., Path], config: Any, run: PolicyRun) -> Trained:
    """Run `trainer(config, checkpoint)` (internal RL, or a trainer with the same signature
    and checkpoint layout) and read the learning curve from its checkpoint."""
    start = time.perf_counter()
    trainer(config, run.checkpoint, progress=False, overwrite=True)
    seconds = time.perf_counter() - start
    history = load_checkpoint(run.checkpoint, run.kind)["history"]
    env_steps = np.cumsum([point["env_steps"] for point in history])
    curve = [{"episodes": point["episodes"], "success": point["success"], "env_steps": int(s)}
             for point, s in zip(history, env_steps, strict=True)]  # fmt: skip
    return Trained(agent=run, episodes=curve[-1]["episodes"], env_steps=curve[-1]["env_steps"],
                   seconds=seconds, history=curve)  # fmt: skip


def train_internal_rl_row(
    bench: Bench, cell: Cell, pretrained: Pretrained | None, **options: Any
) -> Trained:
    p = bench.profile
    config = InternalRLConfig(
        checkpoint=str(pretrained.discovery), env=cell.env_id, episodes=p.budget(cell.env_id),
        batch_episodes=p.log_every, num_envs=p.num_envs, seed=cell.seed, device=bench.device,
        **options,
    )  # fmt: skip
    run = PolicyRun(bench.work(cell) / "policy.pt", "internal_rl", config)
    return trained_policy(train_internal_rl, config, run)


def evaluate_policy(bench: Bench, cell: Cell, trained: Trained) -> RolloutReport:
    """The trained policy as it was trained (internal RL: sampled; ES: its mean codes), in
    waves of num_envs envs that each play one episode."""
    run: PolicyRun = trained.agent
    episodes, n = bench.profile.eval_episodes, wave_size(bench)
    config = dataclasses.replace(run.rollouts, num_envs=n, batch_episodes=n, advantage="batch")
    player = InternalRL(config)
    player.trained.load_state_dict(load_checkpoint(run.checkpoint, run.kind)["policy"])
    player.trained.eval()
    choose = mean_codes(player.trained) if run.kind == "evolution" else None
    start = time.perf_counter()
    returns, lengths, successes = [], [], []
    for first in range(0, episodes, n):  # row r of a wave plays episode first + r
        wave = player.collect(0, choose, seed=eval_seed(cell.seed) + first)
        order = np.argsort(wave.rows, kind="stable")
        returns.append(wave.returns[order])
        lengths.append(wave.lengths[order])
        successes.append(wave.success[order])
    player.envs.close()
    return rollout_report(cell.env_id, np.concatenate(returns)[:episodes],
                          np.concatenate(lengths)[:episodes],
                          np.concatenate(successes)[:episodes],
                          time.perf_counter() - start)  # fmt: skip


def train_sb3_row(bench: Bench, cell: Cell, pretrained: Pretrained | None, algo: str) -> Trained:
    latent = None if pretrained is None else str(pretrained.discovery)
    path = bench.work(cell) / "model.zip"
    start = time.perf_counter()
    history = train_sb3(algo, cell.env_id, bench.profile.budget(cell.env_id), latent, cell.seed,
                        bench.device, bench.profile.log_every, save=path)  # fmt: skip
    last = history[-1]
    return Trained(agent=(algo, path, latent), episodes=last["episodes"],
                   env_steps=last["env_steps"], seconds=time.perf_counter() - start,
                   history=history)  # fmt: skip


def evaluate_sb3(bench: Bench, cell: Cell, trained: Trained) -> RolloutReport:
    """The SB3 policy, sampled, on the env as train_sb3 made it (raw or latent). One env:
    LatentActionVectorWrapper waits at each step for its slowest switch, which made a
    batch of 16 slower than one env for codes that seldom switch (measured: SAC's)."""
    algo, path, latent = trained.agent
    model = ALGORITHMS[algo].load(path, device=bench.device)
    model.set_random_seed(eval_seed(cell.seed))
    env = make_env(cell.env_id, latent, bench.device, eval_seed(cell.seed))
    return play(env, cell.env_id, lambda obs: model.predict(obs, deterministic=False)[0],
                bench.profile.eval_episodes, eval_seed(cell.seed))  # fmt: skip


def train_es_row(bench: Bench, cell: Cell, pretrained: Pretrained | None) -> Trained:
    """ES with log_every episodes per update, like internal RL: up to 32 members in
    antithetic pairs, each playing log_every / population of them."""
    p = bench.profile
    population = max(2, min(32, p.log_every // 4 // 2 * 2))
    config = EvolutionConfig(
        checkpoint=str(pretrained.discovery), env=cell.env_id, episodes=p.budget(cell.env_id),
        population=population, episodes_per_member=max(1, p.log_every // population),
        seed=cell.seed, device=bench.device,
    )  # fmt: skip
    run = PolicyRun(bench.work(cell) / "policy.pt", "evolution", config.rollouts())
    return trained_policy(train_evolution, config, run)


def no_disco_weights(env_id: str) -> str | None:
    if not os.environ.get(WEIGHTS_ENV):
        return f"Disco103's weights are not bundled: set ${WEIGHTS_ENV} to disco_103.npz"
    return None


def train_disco_row(bench: Bench, cell: Cell, pretrained: Pretrained | None) -> Trained:
    """Disco103 from scratch, learning curve every log_every episodes."""
    p = bench.profile
    config = DiscoConfig(env=cell.env_id, episodes=p.budget(cell.env_id), num_envs=p.num_envs,
                         log_every=p.log_every, seed=cell.seed, device=bench.device)  # fmt: skip
    path = bench.work(cell) / "disco.pt"
    start = time.perf_counter()
    train_disco(config, path, progress=False, overwrite=True)
    seconds = time.perf_counter() - start
    saved = load_checkpoint(path, "disco")
    curve = [{k: point[k] for k in ("episodes", "success", "env_steps")}
             for point in saved["history"]]  # fmt: skip
    return Trained(agent=path, episodes=saved["episodes"], env_steps=saved["env_steps"],
                   seconds=seconds, history=curve)  # fmt: skip


def evaluate_disco(bench: Bench, cell: Cell, trained: Trained) -> RolloutReport:
    """The actor's policy, sampled, one env."""
    actor = load_actor(trained.agent, bench.device)
    generator = torch.Generator(device=bench.device).manual_seed(eval_seed(cell.seed))

    @torch.no_grad()
    def act(obs: Any) -> int:
        logits = actor.logits(torch.as_tensor(obs, device=bench.device)[None])
        return int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))

    return play(gym.make(cell.env_id), cell.env_id, act, bench.profile.eval_episodes,
                eval_seed(cell.seed))  # fmt: skip


#: What the rows built on internal RL's rollouts share.
ON_INTERNAL_RL: dict[str, Any] = {"pretraining": "discovery"}
#: The rows, in table order. A new row is one entry: an Algo whose train returns a Trained
#: and whose evaluate plays it.
ALGOS: dict[str, Algo] = {
    "random": Algo(no_training, evaluate_random, "uniform random actions"),
    "expert": Algo(no_training, evaluate_expert,
                   "the env's scripted expert (PinPad: shortest paths; BabyAI: BabyAIBot)"),
    "bc": Algo(train_bc_row, evaluate_bc,
               "the pretraining's base model (behaviour cloning of the family's pretraining "
               "expert data; zero-shot on the post-training envs); its episodes and env "
               "steps are the expert data's", pretraining="bc"),
    "raw-rl": Algo(partial(train_internal_rl_row, raw_actions=True), evaluate_policy,
                   "internal RL's algorithm on the base model's own actions (the whole base "
                   "model trained)", **ON_INTERNAL_RL),
    "internal-rl-beta1": Algo(partial(train_internal_rl_row, force_switch=True),
                              evaluate_policy, "internal RL with beta = 1 (a new code every "
                              "step: no temporal abstraction)", **ON_INTERNAL_RL),
    "internal-rl": Algo(train_internal_rl_row, evaluate_policy,
                        "internal RL: a policy over the MetaController's codes, a new code "
                        "where the switch fires", **ON_INTERNAL_RL),
    "es": Algo(train_es_row, evaluate_policy,
               "evolution strategies over internal RL's policy weights (antithetic pairs, "
               "mean codes at the switches)", **ON_INTERNAL_RL),
    "disco103": Algo(train_disco_row, evaluate_disco,
                     "an agent trained from scratch with DeepMind's meta-learned Disco103 "
                     "update rule", not_for=no_disco_weights),
    "ppo": Algo(partial(train_sb3_row, algo="ppo"), evaluate_sb3,
                "SB3 PPO (MlpPolicy, SB3's defaults) on the raw env"),
    "ppo-latent": Algo(partial(train_sb3_row, algo="ppo"), evaluate_sb3,
                       "SB3 PPO on LatentActionWrapper (codes as actions)",
                       pretraining="discovery"),
    "sac-latent": Algo(partial(train_sb3_row, algo="sac"), evaluate_sb3,
                       "SB3 SAC on LatentActionWrapper (codes as actions)",
                       pretraining="discovery"),
}  # fmt: skip
