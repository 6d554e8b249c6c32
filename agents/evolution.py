"""Evolution strategies over internal RL's latent policy (Salimans et al. 2017).

The policy is internal RL's pi(z | e_1..t) (metacontroller_agents.internal_rl.LatentPolicy), but ES
explores in weight space instead of in z: each update draws `population / 2` Gaussian
directions eps, plays `episodes_per_member` whole episodes with the weights theta + sigma
eps and as many with theta - sigma eps (antithetic pairs, on the same layouts), each
member choosing its policy's mean code at every switch. The members' mean returns,
replaced by their centred ranks, weight the directions:

    g = sum_m rank_m eps_m / (population * sigma),

and Adam moves theta along g. No gradient flows through the episodes, so nothing here
needs the returns to be differentiable or dense. The success logged per update is that of
the population's episodes: ES never plays theta itself.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from tqdm import tqdm

from metacontroller_agents.internal_rl import (
    CodeChooser,
    InternalRL,
    InternalRLConfig,
    LatentPolicy,
    episode_metrics,
)
from metacontroller_agents.runs import PolicyCheckpoint, RunOptions, start_job
from metacontroller_envs.checks import check_count

if TYPE_CHECKING:
    from typing_extensions import Unpack


@dataclass
class EvolutionConfig:
    """Evolution strategies (Salimans et al. 2017) over internal RL's latent policy: the
    policy's weights are perturbed, each perturbation plays whole episodes with its mean
    codes, and the weights move towards the perturbations that scored well."""

    RESUME_FREE: ClassVar[frozenset[str]] = frozenset({"device", "checkpoint_every", "episodes"})
    """Fields a resumed run may change: where it computes, how often it saves, and its
    budget (nothing is scheduled over the episodes: more simply go on)."""

    checkpoint: str
    """Discovery checkpoint (from `mcenv train discover`): the base model and MetaController."""
    env: str = "PinPad-Posttrain-v0"
    """The task to learn (a registered env id; its vector entry point is used where it has
    one, else a SyncVectorEnv)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of gym.make_vec for `env`."""
    episodes: int = 20000
    """Budget: episodes played in all."""
    population: int = 32
    """Perturbations per update, in antithetic pairs (+eps, -eps): an even number."""
    episodes_per_member: int = 4
    """Episodes each perturbation plays per update; a pair plays the same layouts."""
    sigma: float = 0.1
    """Standard deviation of the weight perturbations."""
    lr: float = 0.03
    """Adam learning rate on the ES gradient estimate."""
    weight_decay: float = 0.005
    """L2 pull of the weights towards 0 (keeps them in the perturbations' scale)."""
    hidden: int = 64
    """Units of the policy's recurrent layer."""
    threshold: float = 0.5
    """A new code is chosen where beta_t > threshold."""
    force_switch: bool = False
    """Ablation: beta = 1 at every step."""
    init_policy: str | None = None
    """Curriculum (as internal RL's): start from the policy of an earlier ES or internal-RL
    checkpoint, e.g. the previous ladder rung's; None: the prior's (mean code 0)."""
    checkpoint_every: int = 20
    """Updates between checkpoints."""
    seed: int = 0
    """Seeds the initial weights, the perturbations and the layouts."""
    device: str = "auto"
    """"cpu", "cuda" or "auto"."""

    def __post_init__(self) -> None:
        for name in ("episodes", "population", "episodes_per_member", "hidden",
                     "checkpoint_every"):  # fmt: skip
            check_count(name, getattr(self, name))
        if self.population % 2:
            raise ValueError(f"population must be even (antithetic pairs), got {self.population}")
        if not (self.sigma > 0 and self.lr > 0 and self.weight_decay >= 0):
            raise ValueError(
                f"need sigma > 0, lr > 0 and weight_decay >= 0, got sigma={self.sigma}, "
                f"lr={self.lr}, weight_decay={self.weight_decay}"
            )
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold!r}")

    def rollouts(self) -> InternalRLConfig:
        """The internal-RL config whose rollout machinery plays one update's episodes:
        one env per (member, episode), so each env plays one episode."""
        members = self.population * self.episodes_per_member
        return InternalRLConfig(
            checkpoint=self.checkpoint, env=self.env, env_kwargs=self.env_kwargs,
            episodes=self.episodes, batch_episodes=members, num_envs=members,
            hidden=self.hidden, threshold=self.threshold, force_switch=self.force_switch,
            init_policy=self.init_policy, seed=self.seed, device=self.device,
        )  # fmt: skip


def centred_ranks(fitness: np.ndarray) -> np.ndarray:
    """Ranks scaled to [-0.5, 0.5], ties sharing their mean rank: ES's fitness shaping,
    which makes the update blind to the scale of the returns."""
    fitness = np.asarray(fitness, dtype=np.float64)
    if len(fitness) < 2:
        return np.zeros_like(fitness)
    order = fitness.argsort(kind="stable")
    ranks = np.empty(len(fitness))
    ranks[order] = np.arange(len(fitness), dtype=np.float64)
    for value in np.unique(fitness):  # equal returns (common with 0/1 rewards) tie
        tied = fitness == value
        ranks[tied] = ranks[tied].mean()
    return ranks / (len(fitness) - 1) - 0.5


def es_gradient(fitness: np.ndarray, noise: torch.Tensor, sigma: float) -> torch.Tensor:
    """The ascent direction sum_m rank_m eps_m / (P sigma) for members with directions
    noise (P, D) and returns `fitness` (P,)."""
    weights = torch.as_tensor(centred_ranks(fitness), dtype=noise.dtype, device=noise.device)
    return weights @ noise / (len(fitness) * sigma)


def split_like(vector: torch.Tensor, parameters: list[torch.Tensor]) -> list[torch.Tensor]:
    """A flat vector cut into pieces shaped like `parameters`, in their order."""
    pieces = vector.split([p.numel() for p in parameters])
    return [piece.view_as(p) for piece, p in zip(pieces, parameters, strict=True)]


class Population:
    """The perturbed copies of a policy, and the CodeChooser that lets each env row act
    with its member's weights (row r belongs to member r // episodes_per_member)."""

    def __init__(self, centre: LatentPolicy, size: int, episodes_per_member: int) -> None:
        self.centre = centre
        self.members = [copy.deepcopy(centre) for _ in range(size)]
        self.episodes_per_member = episodes_per_member

    @staticmethod
    def evolved(policy: LatentPolicy) -> list[torch.nn.Parameter]:
        """The weights ES moves: all but log_std, which mean codes never use."""
        return [p for name, p in policy.named_parameters() if name != "log_std"]

    def vector(self) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in self.evolved(self.centre)])

    @torch.no_grad()
    def perturb(self, noise: torch.Tensor, sigma: float) -> None:
        """Member m gets the centre's weights + sigma * noise[m]."""
        theta = self.vector()
        for member, direction in zip(self.members, noise, strict=True):
            weights = self.evolved(member)
            values = split_like(theta + sigma * direction, weights)
            for parameter, value in zip(weights, values, strict=True):
                parameter.copy_(value)

    @torch.no_grad()
    def choose(
        self, e: torch.Tensor, h: torch.Tensor, rows: np.ndarray
    ) -> tuple[torch.Tensor, ...]:
        """Each row's member picks its mean code (log-probabilities are not used: 0)."""
        members = rows // self.episodes_per_member
        z = e.new_zeros(len(rows), self.centre.mean.out_features)
        h_new = torch.empty_like(h)
        for m in np.unique(members):
            at = np.flatnonzero(members == m)
            z[at], _, h_new[:, at] = mean_codes(self.members[m])(e[at], h[:, at].contiguous(),
                                                                 rows[at])  # fmt: skip
        return z, e.new_zeros(len(rows)), h_new


def mean_codes(policy: LatentPolicy) -> CodeChooser:
    """The CodeChooser of a policy that ES trained: its mean code at every switch (ES
    evolves and plays mean codes; sampling would play a policy it never scored)."""

    @torch.no_grad()
    def choose(e: torch.Tensor, h: torch.Tensor, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
        dist, h_new = policy.distribution(e, h)
        return dist.mean[:, 0], e.new_zeros(len(rows)), h_new

    return choose


def train_evolution(
    config: EvolutionConfig, checkpoint: str | Path, **options: Unpack[RunOptions]
) -> Path:
    """Run ES for `config.episodes` episodes; the checkpoint holds the centre policy, the
    optimiser and the history of success against episodes."""
    job = start_job(checkpoint, options)
    checkpoint = job.checkpoint
    run = InternalRL(config.rollouts())
    centre: LatentPolicy = run.trained  # type: ignore[assignment]
    population = Population(centre, config.population, config.episodes_per_member)
    evolved = population.evolved(centre)
    dimension = sum(p.numel() for p in evolved)
    optimizer = torch.optim.Adam(evolved, lr=config.lr, weight_decay=config.weight_decay)
    saved = PolicyCheckpoint(checkpoint, "evolution", config, centre, optimizer, run.device,
                             job.resume)  # fmt: skip
    start = saved.start
    per_update = config.population * config.episodes_per_member
    iterations = -(-config.episodes // per_update)
    pairs = config.population // 2
    rows = np.arange(per_update)
    member, slot = np.divmod(rows, config.episodes_per_member)
    # a member and its antithetic twin (member + pairs) play the same layouts
    layout_of_row = (member % pairs) * config.episodes_per_member + slot
    generator = torch.Generator(device=run.device)
    bar = tqdm(range(start, iterations), initial=start, total=iterations, desc="evolution",
               disable=not job.progress)  # fmt: skip
    clock, env_steps = time.perf_counter(), 0
    for iteration in bar:
        generator.manual_seed(config.seed * 1_000_003 + iteration)
        half = torch.randn(pairs, dimension, generator=generator, device=run.device)
        noise = torch.cat([half, -half])
        population.perturb(noise, config.sigma)
        episodes = run.collect(iteration, population.choose, layout_of_row)
        of_member = episodes.rows // config.episodes_per_member
        fitness = np.array([episodes.returns[of_member == m].mean() for m in range(len(noise))])
        ascent = es_gradient(fitness, noise, config.sigma)
        for parameter, step in zip(evolved, split_like(ascent, evolved), strict=True):
            parameter.grad = -step  # Adam minimises: hand it the negated ascent direction
        optimizer.step()
        metrics = {
            "iteration": iteration + 1,
            "episodes": (iteration + 1) * per_update,
            **episode_metrics(episodes),
            "best_member_return": float(fitness.max()),
            "seconds": time.perf_counter() - clock,
        }
        env_steps += metrics["env_steps"]  # primitive steps, as BC's tokens/s and Disco's
        metrics["env_steps_per_s"] = env_steps / max(metrics["seconds"], 1e-9)
        saved.history.append(metrics)
        job.record(metrics)
        bar.set_postfix(success=f"{metrics['success']:.3f}",
                        sps=f"{metrics['env_steps_per_s']:.0f}")  # fmt: skip
        if (iteration + 1) % config.checkpoint_every == 0 or iteration + 1 == iterations:
            saved.save(iteration + 1)
    return checkpoint
