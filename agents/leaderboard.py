"""The leaderboard: every agent on every environment under one fixed protocol.

    python benchmarks/leaderboard.py --quick        # or: mcenv bench --quick
    mcenv bench --profile full [--only-algo internal-rl ppo] [--only-env PinPad-v0]
                [--seeds 0 1 2] [--out DIR] [--device cpu|cuda|auto] [--threads N]

A cell is (algo, env, seed k). Each trains under its profile's budget (below), then plays
`eval_episodes` evaluation episodes, episode i from reset(seed=eval_seed(k) + i) =
10^9 + 10^6 k + i: seeds that no training uses (expert data for seed k starts at 10^6 k,
internal RL's training layouts at 1,000,003 k + 7919 x update, SB3 resets its env from k).
Every learned policy acts as it was trained: sampled, not argmax. An episode succeeds when
the env reports it (PinPad and BabyAI: the whole task done).

Rows (ALGOS; one entry each, an adapter that trains and evaluates):
  random, expert              no training
  bc                          the small preset cloned from the family's pretraining data
  raw-rl                      internal RL's algorithm on the base model's own actions
  internal-rl-beta1           internal RL with beta = 1 (a new code every step)
  internal-rl                 internal RL on the MetaController's codes
  es                          evolution strategies over internal RL's policy weights
  disco103                    Disco103's meta-learned update rule, from scratch (needs
                              $DISCO103_WEIGHTS; n/a without it)
  ppo                         SB3 PPO on the raw env
  ppo-latent, sac-latent      SB3 PPO / SAC on LatentActionWrapper (codes as actions)
The internal-RL rows, the latent rows and bc use the pretraining of the env's family
(PinPad-v0 for the PinPad envs, SubgoalBabyAI-Pretrain-v0 for BabyAI): for each seed,
expert episodes (`mcenv collect`'s collector) -> behaviour cloning -> MetaController
discovery, built once under <out>/cache/ and reused by every cell that needs it. A row
that cannot run on an env (Disco103 without its weights) is shown as n/a with the reason
as a footnote; finished cells are shown whatever a later invocation lacks.

Outputs under --out (default benchmarks/results/<profile>/): cells/<algo>--<env>--seed<k>.json
(one per cell, written atomically: an interrupted run keeps every finished cell, and a
re-run skips the cells whose JSON exists with the same protocol), leaderboard.md (the
table: success mean +- std over seeds and the cost of each row), curves.png (training
success against episodes, median and 25-75% band over seeds, one panel per env) and
runs.json (each invocation: cells run, wall-clock, machine). Datasets and checkpoints stay
in <out>/cache/ (not committed).

Profiles (PROFILES):
  quick  3 seeds, 4 training episodes per RL cell, 8 evaluation episodes, pretraining of
         200 expert episodes, 40 BC and 40 discovery steps: a smoke test that every row
         runs end to end; its numbers say nothing about what the agents can learn.
         Measured: 13.1 minutes from the command to the table (9.6 CPU-minutes) on the
         2-core development CPU, one torch thread, with other jobs running.
  full   5 seeds, 20,000 training episodes per RL cell (the paper's internal-RL budget),
         1,000 evaluation episodes, pretraining of 20,000 expert episodes, 6,000 BC steps
         (the small preset's schedule) and 2,000 discovery steps (alpha 0.05). Estimated
         from the quick run's throughput per row and env (and its episode lengths, those of
         agents that fail): about 730 single-core CPU-hours for the cells (30 days), 60%
         of it SB3 on the latent wrapper in BabyAI (one transformer step per env step),
         plus about 4 hours of pretraining. Run it on a GPU, or a row at a time with --only-algo.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import io
import json
import os
import platform
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm import tqdm

import metacontroller_envs  # noqa: F401  (registers the envs)
from metacontroller_agents.checkpoint import load_checkpoint, load_model, write_atomically
from metacontroller_agents.config import (
    BCConfig,
    DiscoveryConfig,
    EvolutionConfig,
    InternalRLConfig,
)
from metacontroller_agents.data import resolve_device
from metacontroller_agents.disco import WEIGHTS_ENV
from metacontroller_agents.disco_agent import DiscoConfig, load_actor, train_disco
from metacontroller_agents.evaluate import RolloutReport, rollout
from metacontroller_agents.evolution import mean_codes, train_evolution
from metacontroller_agents.internal_rl import InternalRL, train_internal_rl
from metacontroller_agents.sb3_baselines import ALGORITHMS, make_env, train_sb3
from metacontroller_agents.train import train_bc, train_discovery
from metacontroller_envs.data.collection import collect
from metacontroller_envs.data.episodes import open_dataset
from metacontroller_envs.evaluate import episode_success
from metacontroller_envs.evaluate import evaluate_expert as evaluate_expert_episodes

RESULTS = Path(__file__).resolve().parent / "results"
#: Version of the cell JSON layout: a cell written by another version is run again.
FORMAT_VERSION = 1


# -- the protocol ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """One fixed protocol: every cell of a profile trains and evaluates under these numbers."""

    name: str
    """The profile's name (results go to benchmarks/results/<name>/ by default)."""
    seeds: int
    """Cells per (algo, env): seeds 0 .. seeds - 1."""
    train_episodes: int
    """Budget of every RL row, in episodes (the env steps they took are reported)."""
    log_every: int
    """Episodes per point of a learning curve; also internal RL's episodes per update."""
    num_envs: int
    """Episodes internal RL plays side by side (it must divide log_every)."""
    eval_episodes: int
    """Evaluation episodes per cell, from seeds no training uses (see eval_seed)."""
    data_episodes: int
    """Expert episodes of the family's pretraining env, per seed, for BC and discovery."""
    bc_steps: int
    """Behaviour-cloning optimiser steps (the small preset's schedule is 6,000)."""
    batch_size: int
    """Episodes per batch of BC and of discovery."""
    discovery_steps: int
    """MetaController discovery optimiser steps."""
    alpha: float = 0.3
    """Discovery's KL weight. The full profile uses 0.05, the README's measured setting on
    the planning base model (0.3 collapses the codes onto the prior there)."""
    kl_warmup_steps: int = 0
    """Steps over which discovery's KL weight rises from 0 to alpha."""
    preset: str = "small"
    """Base model size (metacontroller_agents.config.PRESETS)."""
    cost: str = field(default="", compare=False)
    """What running the whole table costs, for leaderboard.md (not part of the protocol)."""

    def protocol(self) -> dict[str, Any]:
        """The numbers a finished cell must have been run with (cost excluded)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}

    def pretraining(self) -> dict[str, Any]:
        """The numbers the shared pretraining depends on."""
        names = ("data_episodes", "bc_steps", "batch_size", "discovery_steps", "alpha",
                 "kl_warmup_steps", "preset")  # fmt: skip
        return {name: getattr(self, name) for name in names}


# fmt: off
PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick", seeds=3, train_episodes=4, log_every=2, num_envs=2, eval_episodes=8,
        data_episodes=200, bc_steps=40, batch_size=16, discovery_steps=40, kl_warmup_steps=20,
        cost="measured: 13.1 minutes (9.6 CPU-minutes) on the 2-core development CPU with "
             "one torch thread, other jobs running"),
    "full": Profile(
        name="full", seeds=5, train_episodes=20000, log_every=128, num_envs=64,
        eval_episodes=1000, data_episodes=20000, bc_steps=6000, batch_size=64,
        discovery_steps=2000, alpha=0.05, kl_warmup_steps=800,
        cost="estimated from the quick run's throughput: about 730 single-core CPU-hours "
             "for the cells (60% of it SB3 on the latent wrapper in BabyAI) and 4 hours of "
             "pretraining; run it on a GPU, or a row at a time with --only-algo"),
}
# fmt: on


@dataclass(frozen=True)
class Family:
    """Envs that share observations, and so one pretrained base model and MetaController."""

    pretrain_env: str
    """The env whose expert episodes train the base model and the MetaController."""
    max_len: int
    """Longest episode of any env of the family + 1 (the base model's KV cache)."""


FAMILIES: dict[str, Family] = {
    "pinpad": Family("PinPad-v0", max_len=101),  # horizon 100
    "babyai": Family("SubgoalBabyAI-Pretrain-v0", max_len=385),  # 64 steps x 6 subgoals
}
#: The columns of the table: each env and its family.
ENVS: dict[str, str] = {
    "PinPad-v0": "pinpad",
    "PinPad-Posttrain-v0": "pinpad",
    "SubgoalBabyAI-Pretrain-v0": "babyai",
    "SubgoalBabyAI-Posttrain-v0": "babyai",
}


def data_seed(seed: int) -> int:
    """Expert episode i of seed k's pretraining starts from reset(seed=10^6 k + i)."""
    return seed * 10**6


def eval_seed(seed: int) -> int:
    """Evaluation episode i of seed k's cells starts from reset(seed=10^9 + 10^6 k + i)."""
    return 10**9 + seed * 10**6


# -- the shared pretraining: expert data -> BC -> discovery, once per (family, seed) --------


@contextlib.contextmanager
def minari_root(path: Path) -> Iterator[None]:
    """Point Minari at `path`, so the benchmark's datasets stay in its cache folder."""
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(path)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None if it is missing or unreadable (then it is rebuilt)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: Path, value: Any) -> Path:
    text = json.dumps(value, indent=1)
    return write_atomically(path, lambda temp: Path(temp).write_text(text))


@dataclass(frozen=True)
class Pretrained:
    """A family's pretraining for one seed: its checkpoints and what each stage cost."""

    folder: Path
    record: dict[str, Any]

    @property
    def bc(self) -> Path:
        return self.folder / "bc.pt"

    @property
    def discovery(self) -> Path:
        return self.folder / "discovery.pt"


@dataclass
class Bench:
    """One invocation: the profile, where results and the cache go, and the device."""

    profile: Profile
    out: Path
    device: str = "auto"

    @property
    def cache(self) -> Path:
        return self.out / "cache"

    def cell_path(self, cell: Cell) -> Path:
        return self.out / "cells" / f"{cell.name}.json"

    def work(self, cell: Cell) -> Path:
        """Where a cell keeps its checkpoints (in the cache, not committed)."""
        return self.cache / "cells" / cell.name

    def pretrained(self, family: str, seed: int, stage: str) -> Pretrained:
        """The pretraining of `family` for `seed` up to `stage` ("bc" or "discovery"), built
        on first use and cached; a cache made under other pretraining numbers is rebuilt."""
        folder = self.cache / "pretrain" / f"{family}-seed{seed}"
        record_path = folder / "pretrain.json"
        wanted = self.profile.pretraining()
        record = read_json(record_path)
        if not isinstance(record, dict) or record.get("protocol") != wanted:
            shutil.rmtree(folder, ignore_errors=True)
            record = {"protocol": wanted, "family": family, "seed": seed}
        p, env_id = self.profile, FAMILIES[family].pretrain_env
        dataset = f"{family}/{env_id}/bench-seed{seed}-v0"
        with minari_root(self.cache / "minari"):
            if "bc" not in record:
                start = time.perf_counter()
                collect(env_id, p.data_episodes, seed=data_seed(seed), dataset_id=dataset,
                        overwrite=True, progress=False)  # fmt: skip
                collected = time.perf_counter()
                config = BCConfig(
                    dataset=dataset, preset=p.preset, steps=p.bc_steps, batch_size=p.batch_size,
                    model_overrides={"max_len": FAMILIES[family].max_len}, eval_every=0,
                    eval_episodes=1, checkpoint_every=p.bc_steps, seed=seed, device=self.device,
                )  # fmt: skip
                log: list[dict] = []
                with contextlib.redirect_stdout(io.StringIO()):  # its 1-episode check's line
                    train_bc(config, folder / "bc.pt", progress=False, log=log, overwrite=True)
                record["data"] = {"dataset": dataset, "episodes": p.data_episodes,
                                  "env_steps": int(open_dataset(dataset).total_steps),
                                  "seconds": collected - start}  # fmt: skip
                record["bc"] = {"steps": p.bc_steps, "seconds": time.perf_counter() - collected,
                                "action_nll": log[-1]["action_nll"]}  # fmt: skip
                write_json(record_path, record)
            if stage == "discovery" and "discovery" not in record:
                start = time.perf_counter()
                config = DiscoveryConfig(
                    base=str(folder / "bc.pt"), dataset=dataset, alpha=p.alpha,
                    kl_warmup_steps=p.kl_warmup_steps, steps=p.discovery_steps,
                    batch_size=p.batch_size, checkpoint_every=p.discovery_steps, seed=seed,
                    device=self.device,
                )  # fmt: skip
                log = []
                train_discovery(config, folder / "discovery.pt", progress=False, log=log,
                                overwrite=True)  # fmt: skip
                record["discovery"] = {
                    "steps": p.discovery_steps, "seconds": time.perf_counter() - start,
                    **{k: log[-1][k] for k in ("action_nll", "kl", "switches_per_episode")},
                }  # fmt: skip
                write_json(record_path, record)
        return Pretrained(folder, record)


# -- the rows: one adapter each, trained and then evaluated --------------------------------


@dataclass(frozen=True)
class Cell:
    algo: str
    env_id: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.algo}--{self.env_id}--seed{self.seed}"


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


def report(
    env_id: str, returns: Any, lengths: Any, successes: Any, seconds: float
) -> RolloutReport:
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
    return report(env_id, returns, lengths, successes, time.perf_counter() - start)


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
    """BC is the pretraining's base model: its cost is the BC stage's."""
    data, bc = pretrained.record["data"], pretrained.record["bc"]
    return Trained(agent=pretrained.bc, episodes=data["episodes"], env_steps=data["env_steps"],
                   seconds=bc["seconds"])  # fmt: skip


def evaluate_bc(bench: Bench, cell: Cell, trained: Trained) -> RolloutReport:
    model, _ = load_model(trained.agent, bench.device)
    start = time.perf_counter()
    result = rollout(model, gym.spec(cell.env_id), bench.profile.eval_episodes, bench.device,
                     wave_size(bench), eval_seed(cell.seed))  # fmt: skip
    return report(cell.env_id, result["returns"], result["lengths"], result["successes"],
                  time.perf_counter() - start)  # fmt: skip


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
        checkpoint=str(pretrained.discovery), env=cell.env_id, episodes=p.train_episodes,
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
    return report(cell.env_id, np.concatenate(returns)[:episodes],
                  np.concatenate(lengths)[:episodes], np.concatenate(successes)[:episodes],
                  time.perf_counter() - start)  # fmt: skip


def train_sb3_row(bench: Bench, cell: Cell, pretrained: Pretrained | None, algo: str) -> Trained:
    latent = None if pretrained is None else str(pretrained.discovery)
    path = bench.work(cell) / "model.zip"
    start = time.perf_counter()
    history = train_sb3(algo, cell.env_id, bench.profile.train_episodes, latent, cell.seed,
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
        checkpoint=str(pretrained.discovery), env=cell.env_id, episodes=p.train_episodes,
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
    config = DiscoConfig(env=cell.env_id, episodes=p.train_episodes, num_envs=p.num_envs,
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


def run_cell(bench: Bench, cell: Cell) -> dict[str, Any]:
    """Train and evaluate one cell; returns its result (the cell JSON)."""
    algo = ALGOS[cell.algo]
    pretrained = None
    if algo.pretraining is not None:
        pretrained = bench.pretrained(ENVS[cell.env_id], cell.seed, algo.pretraining)
    torch.manual_seed(cell.seed)
    start = time.perf_counter()
    trained = algo.train(bench, cell, pretrained)
    if trained.seconds is None:
        trained.seconds = time.perf_counter() - start
    evaluation = algo.evaluate(bench, cell, trained)
    eval_steps = evaluation.episodes * evaluation.mean_length
    wall_clock = trained.seconds + evaluation.seconds
    return {
        "format_version": FORMAT_VERSION,
        "algo": cell.algo,
        "env": cell.env_id,
        "seed": cell.seed,
        "profile": bench.profile.name,
        "protocol": bench.profile.protocol(),
        "train": {
            "episodes": trained.episodes,
            "env_steps": trained.env_steps,
            "seconds": trained.seconds,
        },  # fmt: skip
        "eval": {
            "episodes": evaluation.episodes,
            "first_seed": eval_seed(cell.seed),
            "successes": evaluation.successes,
            "success": evaluation.success_rate,
            "return": evaluation.mean_return,
            "length": evaluation.mean_length,
            "env_steps": int(round(eval_steps)),
            "seconds": evaluation.seconds,
        },
        "history": trained.history,
        "pretraining": None if pretrained is None else pretrained.record,
        "wall_clock_s": wall_clock,
        "steps_per_s": (trained.env_steps + eval_steps) / max(wall_clock, 1e-9),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "device": bench.device,
    }


def finished(path: Path, profile: Profile) -> dict[str, Any] | None:
    """A cell's result if it is finished under this profile's protocol, else None."""
    result = read_json(path)
    if (
        isinstance(result, dict)
        and result.get("format_version") == FORMAT_VERSION
        and result.get("protocol") == profile.protocol()
    ):
        return result
    return None


def machine() -> str:
    """The CPU model and core count, and the torch build: the table's hardware line."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"


def run_benchmark(
    profile: Profile,
    out: str | Path,
    algos: list[str] | None = None,
    envs: list[str] | None = None,
    seeds: list[int] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[tuple[Cell, str]]:
    """Run every unfinished cell (algos x envs x seeds), then write leaderboard.md and
    curves.png from every finished cell in `out`. A cell that raises is reported and left
    unfinished; the others go on. Returns the failures."""
    bench = Bench(profile, Path(out), str(resolve_device(device)))
    algos = list(ALGOS) if algos is None else algos
    envs = list(ENVS) if envs is None else envs
    seeds = list(range(profile.seeds)) if seeds is None else seeds
    for name in algos:
        if name not in ALGOS:
            raise ValueError(f"unknown algo {name!r}: use one of {list(ALGOS)}")
    for env_id in envs:
        if env_id not in ENVS:
            raise ValueError(f"unknown env {env_id!r}: use one of {list(ENVS)}")
    cells = [Cell(a, e, s) for s in seeds for e in envs for a in algos
             if ALGOS[a].not_for(e) is None]  # fmt: skip
    failures: list[tuple[Cell, str]] = []
    start = time.perf_counter()
    ran = 0
    bar = tqdm(cells, desc=f"bench {profile.name}", unit="cell", disable=not progress)
    try:
        for cell in bar:
            path = bench.cell_path(cell)
            if finished(path, profile) is not None:
                bar.write(f"{cell.name}: finished before, skipped")
                continue
            try:
                result = run_cell(bench, cell)
            except Exception as error:  # one broken cell must not cost the others
                failures.append((cell, f"{type(error).__name__}: {error}"))
                bar.write(f"{cell.name}: FAILED\n{traceback.format_exc()}")
                continue
            write_json(path, result)
            ran += 1
            bar.write(
                f"{cell.name}: success {result['eval']['success']:.3f}, "
                f"{result['train']['episodes']} episodes, {result['wall_clock_s']:.1f} s, "
                f"{result['steps_per_s']:.0f} steps/s"
            )
    finally:  # also when interrupted: the table shows every finished cell
        log_invocation(bench, ran, len(cells), len(failures), time.perf_counter() - start)
        write_leaderboard(bench)
    return failures


def log_invocation(bench: Bench, ran: int, selected: int, failed: int, seconds: float) -> None:
    """Append this invocation to <out>/runs.json: what the table's wall-clock claims rest on."""
    path = bench.out / "runs.json"
    runs = read_json(path)
    runs = runs if isinstance(runs, list) else []
    runs.append({
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "profile": bench.profile.name, "cells_run": ran, "cells_selected": selected,
        "cells_failed": failed, "seconds": seconds, "machine": machine(),
        "device": bench.device, "torch_threads": torch.get_num_threads(),
    })  # fmt: skip
    write_json(path, runs)


# -- the table and the curves ---------------------------------------------------------------


def load_results(bench: Bench) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every finished cell of this profile in bench.out, by (algo, env), in seed order."""
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for path in sorted((bench.out / "cells").glob("*.json")):
        result = finished(path, bench.profile)
        if result is not None and result["algo"] in ALGOS and result["env"] in ENVS:
            results.setdefault((result["algo"], result["env"]), []).append(result)
    for cells in results.values():
        cells.sort(key=lambda r: r["seed"])
    return results


COLUMNS = ("algo", "env", "success mean ± std", "return", "env steps", "episodes",
           "wall-clock", "steps/s")  # fmt: skip


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds:.2f} s"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def table_rows(
    results: dict[tuple[str, str], list[dict[str, Any]]],
) -> tuple[list[list[str]], list[str]]:
    """One row per (algo, env) with results, and a not-applicable row (with its footnote)
    for each env a row with results does not apply to."""
    rows, notes = [], []
    for name, algo in ALGOS.items():
        if not any(key[0] == name for key in results):
            continue
        for env_id in ENVS:
            cells = results.get((name, env_id))
            reason = None if cells else algo.not_for(env_id)  # finished cells always show
            if reason is not None:
                if reason not in notes:
                    notes.append(reason)
                mark = f"n/a [{notes.index(reason) + 1}]"
                rows.append([name, env_id, mark] + ["-"] * 5)
            elif cells:
                success = np.array([c["eval"]["success"] for c in cells])
                std = success.std(ddof=1) if len(success) > 1 else 0.0
                seeds = "" if len(cells) >= 3 else f" (n={len(cells)})"

                def mean(get: Callable[[dict], float], cells: list = cells) -> float:
                    return float(np.mean([get(c) for c in cells]))

                rows.append([
                    name, env_id, f"{success.mean():.3f} ± {std:.3f}{seeds}",
                    f"{mean(lambda c: c['eval']['return']):.3f}",
                    f"{mean(lambda c: c['train']['env_steps']):,.0f}",
                    f"{mean(lambda c: c['train']['episodes']):,.0f}",
                    duration(mean(lambda c: c["wall_clock_s"])),
                    f"{mean(lambda c: c['steps_per_s']):,.0f}",
                ])  # fmt: skip
    return rows, notes


def success_by_env(rows: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """The table's success column at a glance: one row per algo, one column per env."""
    envs = [env_id for env_id in ENVS if any(row[1] == env_id for row in rows)]
    success = {(row[0], row[1]): row[2] for row in rows}
    algos = list(dict.fromkeys(row[0] for row in rows))
    return ["algo", *envs], [[a, *(success.get((a, e), "-") for e in envs)] for a in algos]


def markdown_table(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def pretraining_rows(results: dict[tuple[str, str], list[dict[str, Any]]]) -> list[dict]:
    """The pretraining records the cells carry, one per (family, seed), the most complete."""
    records: dict[tuple[str, int], dict] = {}
    for cells in results.values():
        for cell in cells:
            record = cell.get("pretraining")
            if record:
                key = (record["family"], record["seed"])
                if len(record) > len(records.get(key, {})):
                    records[key] = record
    return [records[key] for key in sorted(records)]


def write_leaderboard(bench: Bench) -> Path:
    """leaderboard.md and curves.png from every finished cell of this profile in bench.out."""
    p = bench.profile
    results = load_results(bench)
    rows, notes = table_rows(results)
    curves = plot_curves(results, bench.out / "curves.png", p.name)
    records = pretraining_rows(results)
    # the table's cost: every cell, and each pretraining once (BC's is in the bc cells)
    total = sum(
        c["wall_clock_s"] - (c["train"]["seconds"] if c["algo"] == "bc" else 0.0)
        for cells in results.values()
        for c in cells
    )
    total += sum(r[stage]["seconds"] for r in records for stage in ("data", "bc", "discovery")
                 if stage in r)  # fmt: skip
    command = "python benchmarks/leaderboard.py --" + ("quick" if p.name == "quick" else
                                                        f"profile {p.name}")  # fmt: skip
    lines = [
        f"# Leaderboard: the {p.name} profile",
        "",
        f"Generated on {datetime.date.today().isoformat()} by `{command}` on {machine()} "
        f"(device {bench.device}, {torch.get_num_threads()} torch thread(s)). Its cells and "
        f"their pretraining took {duration(total)} of wall-clock in all. The invocations "
        "that made it (runs.json; each from its first cell to this table, re-runs skip "
        "finished cells):",
        "",
    ]
    runs = read_json(bench.out / "runs.json") or []
    lines += [f"- {r['date']}: {r['cells_run']} of {r['cells_selected']} cells run "
              f"({r['cells_failed']} failed) in {duration(r['seconds'])}, device {r['device']}, "
              f"{r['torch_threads']} torch thread(s)"
              for r in runs if r.get("profile") == p.name] + [""]  # fmt: skip
    if p.name == "quick":
        lines += [
            "**This is the quick profile**: budgets so small that it only checks that every "
            "row runs end to end. Its numbers say nothing about what the agents can learn; "
            "the full profile (`--profile full`) is the benchmark.",
            "",
        ]
    lines += [
        "Success at a glance (evaluation success, mean ± std over seeds):",
        "",
        markdown_table(*success_by_env(rows)),
        "",
        markdown_table(COLUMNS, rows),
        "",
        f"success: the fraction of a cell's {p.eval_episodes} evaluation episodes (episode i "
        "of seed k from reset(seed=10^9 + 10^6 k + i), seeds no training uses) that succeed, "
        "mean ± sample standard deviation over seeds (n = the number of seeds, where below "
        "3); return: mean evaluation return; env steps and episodes: the training budget "
        "spent (mean over seeds; the latent rows count primitive env steps); wall-clock: "
        "training and evaluation of one seed, the shared pretraining excepted (below); "
        "steps/s: env steps of training and evaluation per second of that wall-clock.",
        "",
    ]
    lines += [f"[{i + 1}] {note}" for i, note in enumerate(notes)] + ([""] if notes else [])
    lines += [
        "## Learning curves", "", f"![learning curves]({curves.name})", "",
        "Training success (each point: the episodes since the previous point) against "
        "training episodes, median and 25-75% band over seeds. Dashed: the evaluation "
        "success of the rows that do not learn online (random, expert, bc).", "",
        "## Rows", "",
        *[f"- `{name}`: {algo.about}." for name, algo in ALGOS.items()], "",
        "## Protocol", "",
        markdown_table(["field", "value"], [[k, str(v)] for k, v in p.protocol().items()]), "",
    ]  # fmt: skip
    if records:
        table = [[r["family"], str(r["seed"]), f"{r['data']['episodes']:,}",
                  f"{r['data']['env_steps']:,}", duration(r["data"]["seconds"]),
                  duration(r["bc"]["seconds"]),
                  duration(r["discovery"]["seconds"]) if "discovery" in r else "-"]
                 for r in records]  # fmt: skip
        lines += [
            "## Shared pretraining (per family and seed)", "",
            markdown_table(["family", "seed", "expert episodes", "expert steps", "collect",
                            "bc", "discovery"], table), "",
            f"The {p.preset} preset cloned for {p.bc_steps} steps of {p.batch_size} "
            f"episodes, then a MetaController discovered for {p.discovery_steps} steps "
            f"(alpha {p.alpha}, KL warm-up {p.kl_warmup_steps} steps), once per (family, "
            "seed), shared by the bc, internal-RL and latent rows.", "",
        ]  # fmt: skip
    lines += ["## Profiles", ""]
    lines += [f"- `{q.name}`: {q.seeds} seeds, {q.train_episodes:,} training episodes per RL "
              f"cell, {q.eval_episodes:,} evaluation episodes, {q.data_episodes:,} expert "
              f"episodes, {q.bc_steps:,} BC and {q.discovery_steps:,} discovery steps; "
              f"{q.cost}." for q in PROFILES.values()]  # fmt: skip
    text = "\n".join(lines) + "\n"
    return write_atomically(bench.out / "leaderboard.md",
                            lambda temp: Path(temp).write_text(text))  # fmt: skip


def plot_curves(
    results: dict[tuple[str, str], list[dict[str, Any]]], path: Path, title: str
) -> Path:
    """Success against training episodes, median and 25-75% band over seeds, one panel per
    env (the paper's Fig. 8); rows without a curve appear as dashed evaluation levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = [env_id for env_id in ENVS if any(key[1] == env_id for key in results)]
    envs = envs or list(ENVS)
    columns = min(2, len(envs))
    rows = -(-len(envs) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.6 * rows + 0.8),
                                sharey=True, squeeze=False)  # fmt: skip
    colours = {name: plt.cm.tab10(i % 10) for i, name in enumerate(ALGOS)}
    for axis, env_id in zip(axes.flat, envs, strict=False):
        for name in ALGOS:
            cells = results.get((name, env_id), [])
            curves = [c["history"] for c in cells if c["history"]]
            if curves:
                grid = np.unique(np.concatenate([[p["episodes"] for p in h] for h in curves]))
                success = np.array([
                    np.interp(grid, [p["episodes"] for p in h], [p["success"] for p in h],
                              right=np.nan)
                    for h in curves
                ])  # fmt: skip
                low, mid, high = np.nanpercentile(success, [25, 50, 75], axis=0)
                axis.plot(grid, mid, marker=".", color=colours[name], label=name)
                axis.fill_between(grid, low, high, color=colours[name], alpha=0.2)
            elif cells:
                level = np.median([c["eval"]["success"] for c in cells])
                axis.axhline(level, linestyle="--", color=colours[name], label=name)
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_title(env_id, fontsize=10)
        axis.set_xlabel("training episodes")
        axis.set_ylabel("success")
        axis.set_ylim(-0.05, 1.05)
    for axis in list(axes.flat)[len(envs) :]:
        axis.set_visible(False)
    legend: dict[str, Any] = {}
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    if legend:
        figure.legend(list(legend.values()), list(legend), loc="lower center", ncol=6,
                      fontsize=8, frameon=False)  # fmt: skip
    figure.suptitle(f"{title} profile: success against training episodes (median, 25-75%)",
                    fontsize=10)  # fmt: skip
    figure.tight_layout(rect=(0, 0.7 / (3.6 * rows + 0.8), 1, 1))
    write_atomically(path, lambda temp: figure.savefig(temp, dpi=100, format="png"))
    plt.close(figure)
    return path


# -- command line ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The options of `python benchmarks/leaderboard.py` and `mcenv bench` (one list)."""
    parser.add_argument("--profile", default="quick", choices=list(PROFILES))
    parser.add_argument("--quick", action="store_const", const="quick", dest="profile",
                        help="the quick profile (the default): a smoke-level table")  # fmt: skip
    parser.add_argument("--only-algo", nargs="+", default=None, choices=list(ALGOS),
                        metavar="ALGO", help=f"rows to run, of {list(ALGOS)}")  # fmt: skip
    parser.add_argument("--only-env", nargs="+", default=None, choices=list(ENVS),
                        metavar="ENV", help=f"envs to run, of {list(ENVS)}")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="seeds to run (default: 0 .. the profile's seeds - 1)")  # fmt: skip
    parser.add_argument("--out", default=None,
                        help="results folder (default: benchmarks/results/<profile>)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's default). One by default: on a shared "
                             "2-core CPU, two threads ran BC 6x slower")  # fmt: skip
    parser.set_defaults(run=bench_command)
    return parser


def add_command(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    """`mcenv bench`: added by metacontroller_envs.cli only when it runs."""
    add_arguments(commands.add_parser(name, help=help))


def bench_command(args: argparse.Namespace) -> int:
    profile = PROFILES[args.profile]
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else RESULTS / profile.name
    failures = run_benchmark(profile, out, args.only_algo, args.only_env, args.seeds,
                             args.device)  # fmt: skip
    print(f"table: {out / 'leaderboard.md'}; curves: {out / 'curves.png'}")
    for cell, error in failures:
        print(f"failed: {cell.name}: {error}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
