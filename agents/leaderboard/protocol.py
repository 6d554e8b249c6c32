"""The leaderboard: every agent on every environment under one fixed protocol.

    python -m benchmarks.leaderboard --quick        # from a checkout; or: mcenv bench --quick
    mcenv bench --profile standard --ray --workers 2   # cells as Ray tasks (ray_runner)
    mcenv bench --profile full [--only-algo internal-rl ppo] [--only-env PinPad-v0]
                [--seeds 0 1 2] [--out DIR] [--device cpu|cuda|auto] [--threads N]

A cell is (algo, env, seed k). Each trains under its profile's budget (below), then plays
`eval_episodes` evaluation episodes, episode i from reset(seed=eval_seed(k) + i) =
10^9 + 10^6 k + i: seeds that no training uses (expert data for seed k starts at 10^6 k,
internal RL's training layouts at 1,000,003 k + 7919 x update, SB3 resets its env from k).
Every learned policy acts as it was trained: sampled, not argmax. An episode succeeds when
the env reports it (PinPad and BabyAI: the whole task done).

Rows (rows.ALGOS; one entry each, an adapter that trains and evaluates):
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
The internal-RL rows, the latent rows and bc use the pretraining of the env's family (the
registry's family and its pretraining env: PinPad-v0 for the PinPad envs,
SubgoalBabyAI-Pretrain-v0 for BabyAI), a base model long enough for the longest episode of
the family's envs here (their registered max_episode_steps + 1): for each seed (or the
profile's pretrain_seed), expert episodes (`mcenv collect`'s collector) -> behaviour
cloning -> MetaController discovery, built once under <out>/cache/ and reused by every cell
that needs it; or a shipped pretrained agent, where the profile names one for the family
(Profile.shipped). A row that cannot
run on an env (Disco103 without its weights) is shown as n/a with the reason as a
footnote; finished cells are shown whatever a later invocation lacks.

Outputs under --out (`mcenv bench`: ./leaderboard/<profile>/ under the working directory;
`python -m benchmarks.leaderboard`: the checkout's docs/results/leaderboard/<profile>/,
where the committed tables live): cells/<algo>--<env>--seed<k>.json (one per cell, written
atomically: an interrupted run keeps every finished cell, and a re-run skips the cells
whose JSON exists with the same protocol), leaderboard.md (the table: success mean +- std
over seeds and the cost of each row), curves.png (training success against episodes,
median and 25-75% band over seeds, one panel per env) and runs.json (each invocation:
cells run, wall-clock, machine). Datasets and checkpoints stay in <out>/cache/ (not
committed).

Profiles (PROFILES):
  quick  3 seeds, 4 training episodes per RL cell, 8 evaluation episodes, pretraining of
         200 expert episodes, 40 BC and 40 discovery steps: a smoke test that every row
         runs end to end; its numbers say nothing about what the agents can learn.
         Measured: 13.1 minutes from the command to the table (9.6 CPU-minutes) on the
         2-core development CPU, one torch thread, with other jobs running.
  standard  the table to read, sized for one afternoon on 2 cores: 3 seeds, the shipped
         PinPad-v0 agent as the PinPad pretraining, PinPad-v0 and the held-out ladder
         (STANDARD_ENVS), 2,560 training episodes per PinPad RL cell and 64 per BabyAI
         cell, 200 evaluation episodes (its Profile's caveat says what it can show).
  full   5 seeds, 20,000 training episodes per RL cell (the paper's internal-RL budget),
         1,000 evaluation episodes, pretraining of 20,000 expert episodes, 6,000 BC steps
         (the small preset's schedule) and 2,000 discovery steps (alpha 0.05). Estimated
         from the quick run's throughput per row and env (and its episode lengths, those of
         agents that fail): about 730 single-core CPU-hours for the cells (30 days), 60%
         of it SB3 on the latent wrapper in BabyAI (one transformer step per env step),
         plus about 4 hours of pretraining. Run it on a GPU, or a row at a time with --only-algo.

This module holds what a cell is and what it must have been run with; it needs no torch.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym

from metacontroller_envs import registry  # importing the package registers the envs

#: Version of the cell JSON layout: a cell written by another version is run again.
FORMAT_VERSION = 1

#: The quick and full profiles' columns, in order.
ENVS: tuple[str, ...] = (
    "PinPad-v0",
    "PinPad-Posttrain-v0",
    "SubgoalBabyAI-Pretrain-v0",
    "SubgoalBabyAI-Posttrain-v0",
)
#: The standard profile's columns: the pretraining task, the held-out ladder (2, 3, 4 and
#: 6 pairs; issue 32) and BabyAI's pretrain and post-train envs.
STANDARD_ENVS: tuple[str, ...] = (
    "PinPad-v0",
    "PinPad-Ladder2-v0",
    "PinPad-Ladder3-v0",
    "PinPad-Ladder4-v0",
    "PinPad-Posttrain-v0",
    "SubgoalBabyAI-Pretrain-v0",
    "SubgoalBabyAI-Posttrain-v0",
)


@dataclass(frozen=True)
class Profile:
    """One fixed protocol: every cell of a profile trains and evaluates under these numbers."""

    name: str
    """The profile's name (results go to ./leaderboard/<name>/ by default)."""
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
    """Base model size (metacontroller_agents.transformer.PRESETS)."""
    family_episodes: tuple[tuple[str, int], ...] = ()
    """(family, episodes) pairs: that family's RL budget, instead of train_episodes (its
    episodes cost more: BabyAI's run up to 384 steps where PinPad's end at a wrong pad)."""
    shipped: tuple[tuple[str, str], ...] = ()
    """(family, name) pairs: that family's base model and MetaController are the shipped
    pretrained agent `name` (metacontroller_agents.pretrained), not trained in the run."""
    pretrain_seed: int | None = None
    """If set, every seed's cells share the pretraining of this seed (one base model per
    family, as a shipped agent is); None: each seed pretrains its own."""
    envs: tuple[str, ...] = field(default=ENVS, compare=False)
    """The table's columns: the envs this profile runs (a cell's protocol does not depend
    on which other envs run beside it)."""
    cost: str = field(default="", compare=False)
    """What running the whole table costs, for leaderboard.md (not part of the protocol)."""
    caveat: str = field(default="", compare=False)
    """What the profile can and cannot show: the line under its table."""

    def protocol(self) -> dict[str, Any]:
        """The numbers a finished cell must have been run with (cost excluded), as its JSON
        holds them (tuples as lists)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.compare}
        return json.loads(json.dumps(fields))

    def pretraining(self) -> dict[str, Any]:
        """The numbers the shared pretraining depends on."""
        names = ("data_episodes", "bc_steps", "batch_size", "discovery_steps", "alpha",
                 "kl_warmup_steps", "preset")  # fmt: skip
        return {name: getattr(self, name) for name in names}

    def budget(self, env_id: str) -> int:
        """The RL rows' training episodes on `env_id` (its family's, else train_episodes)."""
        return dict(self.family_episodes).get(registry.family(env_id), self.train_episodes)

    def shipped_agent(self, family: str) -> str | None:
        """The shipped pretrained agent that stands for `family`'s pretraining, if any."""
        return dict(self.shipped).get(family)



# fmt: off
PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick", seeds=3, train_episodes=4, log_every=2, num_envs=2, eval_episodes=8,
        data_episodes=200, bc_steps=40, batch_size=16, discovery_steps=40, kl_warmup_steps=20,
        cost="measured: 13.1 minutes (9.6 CPU-minutes) on the 2-core development CPU with "
             "one torch thread, other jobs running",
        caveat="budgets so small that it only checks that every row runs end to end. Its "
               "numbers say nothing about what the agents can learn; the standard profile "
               "is the table to read."),
    "standard": Profile(
        name="standard", seeds=3, train_episodes=2560, family_episodes=(("babyai", 64),),
        log_every=64, num_envs=64, eval_episodes=200, data_episodes=2000, bc_steps=1000,
        batch_size=32, discovery_steps=500, alpha=0.05, kl_warmup_steps=200,
        shipped=(("pinpad", "PinPad-v0"),), pretrain_seed=0, envs=STANDARD_ENVS,
        cost="measured: 110.7 minutes with --ray --workers 2 on the 2-core development "
             "CPU, beside other jobs for part of it (its cells: 218 single-core minutes)",
        caveat="one afternoon on 2 cores. PinPad cells (PinPad-v0 and the held-out ladder "
               "rungs of 2, 3, 4 and 6 pairs) start from the shipped base model and "
               "MetaController and get 2,560 episodes each, without the rung-to-rung "
               "curriculum: in the 12,800-episode ladder runs (docs/results/ladder.md, "
               "batches of 128) raw-action RL passed 0.9 on 2 pairs by 2,700 episodes, "
               "internal RL 0.5 by 7,800, and internal RL learned no 3- or 4-pair rung "
               "without the curriculum. BabyAI cells get 64 episodes (one update) over a "
               "base model trained in the run (2,000 expert episodes, 1,000 BC steps): "
               "they show the zero-shot rows and that the RL rows run on BabyAI's "
               "384-step episodes, not what RL learns there. Seeds vary the RL and the "
               "evaluation layouts, not the pretraining (one per family)."),
    "full": Profile(
        name="full", seeds=5, train_episodes=20000, log_every=128, num_envs=64,
        eval_episodes=1000, data_episodes=20000, bc_steps=6000, batch_size=64,
        discovery_steps=2000, alpha=0.05, kl_warmup_steps=800,
        cost="estimated from the quick run's throughput: about 730 single-core CPU-hours "
             "for the cells (60% of it SB3 on the latent wrapper in BabyAI) and 4 hours of "
             "pretraining; run it on a GPU, or a row at a time with --only-algo",
        caveat="the paper-scale budget (20,000 episodes per cell, 5 seeds, each seed its "
               "own pretraining); a cluster's job (--ray auto)."),
}
# fmt: on


def pretrain_env(family: str) -> str:
    """The env whose expert episodes train the family's base model and MetaController."""
    env_id = registry.FAMILIES.get(family)
    if env_id is None:
        raise ValueError(f"family {family!r} has no pretraining env in the registry")
    return env_id


def max_len(family: str, envs: tuple[str, ...] = ENVS) -> int:
    """The base model's KV cache for a family: its longest episode here + 1, from the
    registered max_episode_steps of the family's envs among `envs`."""
    horizons = {env_id: gym.spec(env_id).max_episode_steps
                for env_id in envs if registry.family(env_id) == family}  # fmt: skip
    if not horizons or None in horizons.values():
        raise ValueError(f"family {family!r}: every env needs a max_episode_steps: {horizons}")
    return max(horizons.values()) + 1


def data_seed(seed: int) -> int:
    """Expert episode i of seed k's pretraining starts from reset(seed=10^6 k + i)."""
    return seed * 10**6


def eval_seed(seed: int) -> int:
    """Evaluation episode i of seed k's cells starts from reset(seed=10^9 + 10^6 k + i)."""
    return 10**9 + seed * 10**6


@dataclass(frozen=True)
class Cell:
    """One entry of the table for one seed: what a runner runs and a JSON file records."""

    algo: str
    env_id: str
    seed: int

    @property
    def name(self) -> str:
        return f"{self.algo}--{self.env_id}--seed{self.seed}"


def read_json(path: Path) -> Any:
    """The JSON in `path`, or None if it is missing or unreadable (then it is rebuilt)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


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
