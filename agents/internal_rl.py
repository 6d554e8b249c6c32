"""Internal RL (Kobayashi et al. 2025, App. C.5): reinforcement learning on the
MetaController's codes z, with the frozen base model, the switching unit and the decoder
counted as the environment.

A causal policy pi(z | e_1..t) (one GRU layer over the residual embeddings e at the
steps where it chose a code) draws a new code only where the switch fires (beta_t >
threshold); in between the code in force keeps steering the base model. The objective is
PPO's clipped one with no critic: the advantage of every choice in an episode is the
episode's return normalised over the batch, (R - mean) / (std + 1e-3), or over groups of
episodes played on the same layout (GRPO, `advantage="group"`).

Baselines through the same loop: `force_switch` (beta = 1: a new code every step, no
temporal abstraction) and `raw_actions` (the same algorithm on the base model's own
action distribution, the whole base model trained, the MetaController off).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import nn
from tqdm import tqdm

from metacontroller_agents.analysis import load_metacontroller
from metacontroller_agents.controllers import is_factory, load_controller
from metacontroller_agents.data import resolve_device
from metacontroller_agents.latent import LatentAgent
from metacontroller_agents.runs import PolicyCheckpoint, RunOptions, load_initial_policy, start_job
from metacontroller_envs.checks import check_count, check_env_kwargs
from metacontroller_envs.wrappers import switch_fires

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: How returns become advantages (InternalRLConfig.advantage).
ADVANTAGES = ("batch", "group")


@dataclass
class InternalRLConfig:
    """Internal RL (the paper's App. C.5): RL on the MetaController's codes z, with the base
    model, the switching unit and the decoder counted as the environment."""

    RESUME_FREE: ClassVar[frozenset[str]] = frozenset({"device", "checkpoint_every", "episodes"})
    """Fields a resumed run may change: where it computes, how often it saves, and its
    budget (nothing is scheduled over the episodes: more simply go on)."""

    checkpoint: str
    """Discovery checkpoint (from `mcenv train discover`): the base model and MetaController;
    or any LatentController as `module:factory` (metacontroller_agents.controllers), whose
    codes the policy then chooses through the Protocol alone (not with raw_actions or
    force_switch, which need our base model and MetaController)."""
    env: str = "PinPad-Posttrain-v0"
    """The task to learn (a registered env id; its vector entry point is used where it has
    one, else a SyncVectorEnv)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of gym.make_vec for `env` (e.g. {"task": "0-1"})."""
    episodes: int = 20000
    """Budget: episodes played in all."""
    batch_episodes: int = 128
    """Episodes per policy update."""
    num_envs: int = 64
    """Episodes played side by side (at most batch_episodes; it must divide it)."""
    epochs: int = 4
    """Passes of the clipped objective over each batch."""
    lr: float = 3e-4
    """Adam learning rate of the policy (the paper picks from 3e-6 .. 3e-4)."""
    std_lr: float | None = None
    """Adam learning rate of the policy's log standard deviation (beyond the paper; None:
    `lr`). Adam moves a parameter by about lr per step, so at lr = 3e-4 the exploration
    scale barely leaves the prior's 1 in a few hundred updates; a larger std_lr lets the
    policy narrow it as it learns. Internal RL and beta = 1 only (raw actions have none)."""
    clip: float = 0.2
    """PPO's ratio clipping."""
    hidden: int = 64
    """Units of the policy's recurrent layer."""
    advantage: str = field(default="batch", metadata={"choices": ADVANTAGES})
    """"batch": (R - mean) / (std + 1e-3) over the batch (the paper's); "group": the same
    within groups of `group_size` episodes played on one layout (GRPO)."""
    group_size: int = 8
    """Episodes per layout with advantage="group"."""
    threshold: float = 0.5
    """A new code is drawn where beta_t > threshold (the paper's 0.5)."""
    force_switch: bool = False
    """Ablation: beta = 1 at every step, so a new code every step (no temporal abstraction)."""
    raw_actions: bool = False
    """Baseline: the same algorithm on the base model's own action distribution (the
    MetaController off), fine-tuning the whole base model."""
    temperature: float = 1.0
    """Exploration of raw-action RL (beyond the paper): the base model's logits are
    divided by it, in sampling and in the policy being trained, so > 1 spreads the actions
    towards uniform (the raw-action counterpart of init_std). raw_actions only."""
    init_policy: str | None = None
    """Curriculum (beyond the paper): start from the trained policy of an earlier run's
    checkpoint (internal RL or ES, same policy shape), e.g. the previous ladder rung's;
    None: from the prior (the paper's), or the base model itself with raw_actions."""
    init_std: float | None = None
    """Exploration scale (beyond the paper): the policy's standard deviation at the start,
    set over the prior's 1 or over init_policy's own (a previous rung trained with std_lr
    leaves it too narrow to find the next pair); None: leave it. Latent policies only."""
    checkpoint_every: int = 20
    """Updates between checkpoints."""
    seed: int = 0
    """Seeds the policy's initialisation, the layouts and the sampled codes."""
    device: str = "auto"
    """"cpu", "cuda" or "auto"."""

    def __post_init__(self) -> None:
        for name in ("episodes", "batch_episodes", "num_envs", "epochs", "hidden",
                     "group_size", "checkpoint_every"):  # fmt: skip
            check_count(name, getattr(self, name))
        if self.batch_episodes % self.num_envs:
            raise ValueError(
                f"num_envs ({self.num_envs}) must divide batch_episodes "
                f"({self.batch_episodes}): each env plays the same number of episodes"
            )
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage must be one of {list(ADVANTAGES)}, got {self.advantage!r}")
        if self.advantage == "group" and self.num_envs % self.group_size:
            raise ValueError(
                f"group_size ({self.group_size}) must divide num_envs ({self.num_envs})"
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")
        if not (self.lr > 0 and 0 < self.clip < 1):
            raise ValueError(f"need lr > 0 and 0 < clip < 1, got lr={self.lr}, clip={self.clip}")
        if not self.temperature > 0 or (self.temperature != 1.0 and not self.raw_actions):
            raise ValueError(
                f"temperature must be > 0 and only with raw_actions (latent policies set "
                f"init_std), got temperature={self.temperature!r}, raw_actions={self.raw_actions}"
            )
        for name in ("std_lr", "init_std"):
            value = getattr(self, name)
            if value is not None and (value <= 0 or self.raw_actions):
                raise ValueError(
                    f"{name} must be > 0 and only with a latent policy (not raw_actions), got "
                    f"{name}={value}, raw_actions={self.raw_actions}"
                )


#: Added to the return's standard deviation when normalising (the paper's 1e-3).
ADVANTAGE_EPS = 1e-3


class LatentPolicy(nn.Module):
    """pi(z_t | e_1..t): a GRU over the embeddings at the choice points, then a Gaussian.

    The mean starts at 0 and the standard deviation at 1: before any update the policy is
    the MetaController's prior N(0, I), which is how the paper explores at first.
    """

    def __init__(self, width: int, latent_dim: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.gru = nn.GRU(width, hidden, batch_first=True)
        self.mean = nn.Linear(hidden, latent_dim)
        nn.init.zeros_(self.mean.weight)
        nn.init.zeros_(self.mean.bias)
        self.log_std = nn.Parameter(torch.zeros(latent_dim))

    def distribution(self, e: torch.Tensor, h: torch.Tensor | None = None):
        """e (B, K, width) in choice order -> (Normal over z (B, K, n_z), last h)."""
        out, h = self.gru(self.norm(e), h)
        return torch.distributions.Normal(self.mean(out), self.log_std.exp()), h

    def log_prob(self, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """(B, K) log pi(z_k | e_1..k) of whole episodes' choices (padding gives garbage)."""
        dist, _ = self.distribution(e)
        return dist.log_prob(z).sum(-1)


@dataclass
class Episodes:
    """A batch of finished episodes, padded to the longest: the choices and what came of
    them. For internal RL a choice is a code z at a switch; for raw actions it is a_t."""

    inputs: torch.Tensor  # (B, K, ...) e at each choice, or the observations
    choices: torch.Tensor  # (B, K, ...) z, or the actions
    log_prob: torch.Tensor  # (B, K) log-probability when played
    mask: torch.Tensor  # (B, K) real choices
    returns: np.ndarray  # (B,)
    success: np.ndarray  # (B,) bool
    lengths: np.ndarray  # (B,) primitive steps
    groups: np.ndarray  # (B,) the layout group of each episode (for GRPO)
    rows: np.ndarray  # (B,) the env row that played it (ES: which population member)


#: Picks codes at the switches: (e (k, 1, width), GRU state (1, k, hidden), the k env rows)
#: -> (z (k, n_z), log pi(z) (k,), new GRU state (1, k, hidden)).
CodeChooser = Callable[[torch.Tensor, torch.Tensor, np.ndarray], tuple[torch.Tensor, ...]]


def normalised_advantages(returns: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """(R - mean) / (std + 1e-3), over the batch, or within each group when given."""
    returns = np.asarray(returns, dtype=np.float64)
    if groups is None:
        return (returns - returns.mean()) / (returns.std() + ADVANTAGE_EPS)
    advantages = np.empty_like(returns)
    for group in np.unique(groups):
        members = groups == group
        r = returns[members]
        advantages[members] = (r - r.mean()) / (r.std() + ADVANTAGE_EPS)
    return advantages


def clipped_policy_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float,
) -> torch.Tensor:
    """PPO's clipped surrogate, negated, averaged over real choices; no critic: each
    choice (B, K) takes its episode's advantage (B,)."""
    ratio = (log_prob - old_log_prob).exp()
    advantage = advantages[:, None]
    surrogate = torch.minimum(ratio * advantage, ratio.clamp(1 - clip, 1 + clip) * advantage)
    weights = mask.to(surrogate.dtype)
    return -(surrogate * weights).sum() / weights.sum().clamp(min=1)


def pad(sequences: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad (K_i, ...) tensors to (B, K, ...), with the mask of real entries."""
    longest = max(len(s) for s in sequences)
    out = sequences[0].new_zeros((len(sequences), longest, *sequences[0].shape[1:]))
    mask = torch.zeros(len(sequences), longest, dtype=torch.bool)
    for i, s in enumerate(sequences):
        out[i, : len(s)], mask[i, : len(s)] = s, True
    return out, mask


def same_step_vector_env(env_id: str, num_envs: int, kwargs: dict) -> gym.vector.VectorEnv:
    """num_envs copies of env_id that reset in the step an episode ends: the env's own
    vector entry point where it has one (PinPad), else a SyncVectorEnv (BabyAI)."""
    check_env_kwargs(env_id, kwargs)
    if gym.spec(env_id).vector_entry_point is not None:
        return gym.make_vec(env_id, num_envs=num_envs, autoreset_mode="SameStep", **kwargs)
    return gym.vector.SyncVectorEnv(
        [partial(gym.make, env_id, **kwargs) for _ in range(num_envs)],
        autoreset_mode=AutoresetMode.SAME_STEP,
    )


class InternalRL:
    """The agent, its trained part and the rollouts of one run (internal RL or a baseline)."""

    def __init__(self, config: InternalRLConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.raw = config.raw_actions
        if is_factory(config.checkpoint):  # a user's controller, through the Protocol
            if self.raw or config.force_switch:
                raise ValueError(
                    "raw_actions and force_switch need a discovery checkpoint (our base "
                    f"model), not the factory {config.checkpoint}"
                )
            self.agent = load_controller(config.checkpoint, config.num_envs, str(self.device))
            base = None
        else:
            base, meta, _ = load_metacontroller(config.checkpoint, self.device)
            if config.force_switch:
                meta.config = dataclasses.replace(meta.config, force_switch=True)
            self.agent = LatentAgent(base, None if self.raw else meta, config.num_envs,
                                     self.device, sample=self.raw,
                                     temperature=config.temperature)  # fmt: skip
        self.envs = same_step_vector_env(config.env, config.num_envs, config.env_kwargs)
        if not isinstance(self.envs.single_action_space, gym.spaces.Discrete):
            raise ValueError(f"internal RL here needs discrete actions, got {self.envs}")
        torch.manual_seed(config.seed)
        if self.raw:
            self.trained: nn.Module = base
        else:
            self.trained = LatentPolicy(self.agent.observation_size, self.agent.latent_dim,
                                        config.hidden)  # fmt: skip
        if config.init_policy is not None:
            load_initial_policy(self.trained, config.init_policy, self.device)
        if config.init_std is not None:
            with torch.no_grad():
                self.trained.log_std.fill_(math.log(config.init_std))
        self.trained.to(self.device)
        self.generator = torch.Generator(device=self.device)

    def sample_codes(
        self, e: torch.Tensor, h: torch.Tensor, rows: np.ndarray
    ) -> tuple[torch.Tensor, ...]:
        """z ~ pi(. | e_1..t): the CodeChooser of internal RL."""
        dist, h = self.trained.distribution(e, h)
        noise = torch.randn(dist.mean.shape, generator=self.generator, device=self.device)
        z = dist.mean + dist.stddev * noise
        return z[:, 0], dist.log_prob(z).sum(-1)[:, 0], h

    @torch.no_grad()
    def collect(
        self,
        iteration: int,
        choose: CodeChooser | None = None,
        layout_of_row: np.ndarray | None = None,
        seed: int | None = None,
    ) -> Episodes:
        """batch_episodes episodes, num_envs at a time, each env playing the same number.
        Rows with the same `layout_of_row` entry play the same layouts (default: one per
        row, or per group of rows for GRPO); `choose` picks the codes (default: sampling
        the trained policy). Row r's first episode starts from reset(seed=seed + its
        layout entry); the default seed is a function of the run's seed and `iteration`."""
        c, n = self.config, self.config.num_envs
        rows = np.arange(n)
        choose = self.sample_codes if choose is None else choose
        if seed is None:
            seed = c.seed * 1_000_003 + iteration * 7919
        group_of_row = rows // c.group_size if c.advantage == "group" else rows
        if layout_of_row is not None:
            group_of_row = np.asarray(layout_of_row)
        obs, _ = self.envs.reset(seed=[int(seed + g) for g in group_of_row])
        self.generator.manual_seed(seed)
        self.agent.reset(rows, seed=seed)
        quota = np.full(n, c.batch_episodes // n)
        h = torch.zeros(1, n, c.hidden, device=self.device)
        codes = torch.zeros(n, self.agent.latent_dim, device=self.device)
        inputs, choices, log_probs = ([[] for _ in rows] for _ in range(3))
        reward = np.zeros(n)
        steps = np.zeros(n, dtype=np.int64)
        finished: list[tuple] = []
        active = quota > 0
        while active.any():
            live = np.flatnonzero(active)
            e, beta = self.agent.observe(obs[live], live)
            if self.raw:
                actions = self.agent.act(live, None)
                for k, row in enumerate(live):
                    inputs[row].append(torch.as_tensor(obs[row]))
                    choices[row].append(torch.as_tensor(actions[k]))
                    log_probs[row].append(float(self.agent.last_log_prob[k]))
            else:
                fire = np.flatnonzero(switch_fires(beta, c.threshold))
                if fire.size:
                    chosen = live[fire]
                    e_t = torch.as_tensor(e[fire], device=self.device)[:, None]
                    z, log_p, h_new = choose(e_t, h[:, chosen].contiguous(), chosen)
                    h[:, chosen], codes[chosen] = h_new, z
                    for k, row in enumerate(chosen):
                        inputs[row].append(e_t[k, 0].cpu())
                        choices[row].append(z[k].cpu())
                        log_probs[row].append(float(log_p[k]))
                actions = self.agent.act(live, codes[live].cpu().numpy())
            all_actions = np.zeros(n, dtype=np.int64)
            all_actions[live] = actions
            obs, r, terminated, truncated, _ = self.envs.step(all_actions)
            reward[live] += r[live]
            steps[live] += 1
            ended = live[(terminated | truncated)[live]]
            for row in ended:  # sparse rewards: an episode succeeds when it earns any
                finished.append(
                    (torch.stack(inputs[row]), torch.stack(choices[row]),
                     torch.tensor(log_probs[row]), reward[row], reward[row] > 0, steps[row],
                     group_of_row[row], row)
                )  # fmt: skip
                inputs[row], choices[row], log_probs[row] = [], [], []
                reward[row], steps[row] = 0.0, 0
                quota[row] -= 1
                h[:, row] = 0.0
            if ended.size:
                self.agent.reset(ended)
            active = quota > 0
        columns = list(zip(*finished, strict=True))
        inputs_padded, mask = pad(list(columns[0]))
        return Episodes(
            inputs=inputs_padded.to(self.device),
            choices=pad(list(columns[1]))[0].to(self.device),
            log_prob=pad(list(columns[2]))[0].to(self.device),
            mask=mask.to(self.device),
            returns=np.array(columns[3], dtype=np.float64),
            success=np.array(columns[4], dtype=bool),
            lengths=np.array(columns[5], dtype=np.int64),
            groups=np.array(columns[6], dtype=np.int64),
            rows=np.array(columns[7], dtype=np.int64),
        )

    def log_prob(self, episodes: Episodes) -> torch.Tensor:
        """(B, K) log-probabilities of the played choices under the current parameters."""
        if not self.raw:
            return self.trained.log_prob(episodes.inputs, episodes.choices)
        base = self.trained
        logits = base(episodes.inputs, base.previous_actions(episodes.choices)).action
        return self.agent.action_distribution(logits).log_prob(episodes.choices)


def episode_metrics(episodes: Episodes) -> dict[str, float]:
    """What both trainers log of an iteration's episodes."""
    return {
        "success": float(episodes.success.mean()),
        "return": float(episodes.returns.mean()),
        "length": float(episodes.lengths.mean()),
        "choices_per_episode": float(episodes.mask.sum(1).float().mean()),
        "env_steps": int(episodes.lengths.sum()),
    }


def parameter_groups(trained: nn.Module, config: InternalRLConfig) -> list[dict]:
    """The optimiser's groups: everything at `lr`, the log std at `std_lr` where set."""
    if config.std_lr is None:
        return [{"params": list(trained.parameters())}]
    rest = [p for name, p in trained.named_parameters() if name != "log_std"]
    return [{"params": rest}, {"params": [trained.log_std], "lr": config.std_lr}]


def train_internal_rl(
    config: InternalRLConfig, checkpoint: str | Path, **options: Unpack[RunOptions]
) -> Path:
    """Run internal RL (or a baseline) for `config.episodes` episodes; the checkpoint holds
    the trained policy and `log`-style history of success against episodes."""
    job = start_job(checkpoint, options)
    checkpoint = job.checkpoint
    run = InternalRL(config)
    optimizer = torch.optim.Adam(parameter_groups(run.trained, config), lr=config.lr)
    saved = PolicyCheckpoint(checkpoint, "internal_rl", config, run.trained, optimizer,
                             run.device, job.resume)  # fmt: skip
    start = saved.start
    iterations = -(-config.episodes // config.batch_episodes)
    bar = tqdm(range(start, iterations), initial=start, total=iterations,
               desc="internal rl", disable=not job.progress)  # fmt: skip
    clock, env_steps = time.perf_counter(), 0
    for iteration in bar:
        episodes = run.collect(iteration)
        groups = episodes.groups if config.advantage == "group" else None
        advantages = torch.as_tensor(
            normalised_advantages(episodes.returns, groups), dtype=torch.float32,
            device=run.device,
        )  # fmt: skip
        run.trained.train()
        for _ in range(config.epochs):
            loss = clipped_policy_loss(
                run.log_prob(episodes), episodes.log_prob, advantages, episodes.mask, config.clip
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        run.trained.eval()
        metrics = {
            "iteration": iteration + 1,
            "episodes": (iteration + 1) * config.batch_episodes,
            **episode_metrics(episodes),
            "loss": loss.item(),
            "seconds": time.perf_counter() - clock,
        }
        env_steps += metrics["env_steps"]  # primitive steps, as BC's tokens/s and Disco's
        metrics["env_steps_per_s"] = env_steps / max(metrics["seconds"], 1e-9)
        saved.history.append(metrics)
        job.record(metrics)
        bar.set_postfix(success=f"{metrics['success']:.3f}",
                        choices=f"{metrics['choices_per_episode']:.1f}",
                        sps=f"{metrics['env_steps_per_s']:.0f}")  # fmt: skip
        if (iteration + 1) % config.checkpoint_every == 0 or iteration + 1 == iterations:
            saved.save(iteration + 1)
    return checkpoint
