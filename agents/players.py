"""Model players for the renderer: a trained agent acting one episode at a time.

Model agents act as they are evaluated elsewhere: `bc` samples from the base model (as
`mcenv eval`; `greedy` takes the argmax); `metacontroller` (a discovery checkpoint acting
alone) draws each new code from the prior N(0, I) where the switch fires; `internal-rl`
draws it from the trained latent policy (`greedy`: its mean code). Both run the base model
greedily under the code, as internal RL does. All three step the model one token per step
with a KV cache through LatentAgent (the base model alone for bc). torch loads only when a
model player is made, so `mcenv render --agent expert` runs without the agent extra.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from metacontroller_envs.video import ExpertPlayer, Player, RandomPlayer
from metacontroller_envs.wrappers import switch_fires

AGENTS = ("expert", "random", "bc", "metacontroller", "internal-rl")
CHECKPOINT_KINDS = {"bc": "bc", "metacontroller": "discovery", "internal-rl": "internal_rl"}
_ROW = np.zeros(1, dtype=np.int64)  # the one row of a LatentAgent that plays the video


class ModelPlayer:
    """A base model driven through metacontroller_agents.latent.LatentAgent, one row.
    Subclasses that set `threshold` pick a new code z where the switch fires (`new_code`)."""

    threshold: float | None = None

    def __init__(self, agent: Any) -> None:
        self.agent = agent
        base = getattr(agent, "base", None)  # None: a user's controller, cut by the env alone
        self.max_steps = None if base is None else base.config.max_len - 1  # as rollout cuts

    def start(self, env: gym.Env, seed: int) -> None:
        self.agent.reset(_ROW, seed=seed)
        self.start_codes(seed)

    def start_codes(self, seed: int) -> None:
        """Seed whatever picks the codes for a new episode."""

    def new_code(self, e: np.ndarray) -> np.ndarray:
        """A code z (1, n_z) for the residual embedding e_t (1, width) at a switch."""
        raise NotImplementedError

    def act(self, observation: np.ndarray) -> tuple[int, float | None]:
        e, beta = self.agent.observe(np.asarray(observation)[None], _ROW)
        z = None
        if self.threshold is not None and switch_fires(beta, self.threshold)[0]:
            z = self.new_code(e)
        action = self.agent.act(_ROW, z)
        return int(action[0]), None if self.threshold is None else float(beta[0])


class PriorPlayer(ModelPlayer):
    """The MetaController acting alone: each new code from its prior N(0, I)."""

    def __init__(self, agent: Any, threshold: float) -> None:
        super().__init__(agent)
        self.threshold = threshold

    def start_codes(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def new_code(self, e: np.ndarray) -> np.ndarray:
        return self.rng.standard_normal((1, self.agent.latent_dim)).astype(np.float32)


class PolicyPlayer(ModelPlayer):
    """Internal RL's latent policy pi(z | e_1..t), sampled as its training rollouts do, or
    its mean code with `greedy` (as `mcenv eval --greedy`)."""

    def __init__(
        self, agent: Any, policy: Any, threshold: float, hidden: int, greedy: bool = False
    ) -> None:
        import torch

        super().__init__(agent)
        self.policy, self.threshold, self.hidden = policy.eval(), threshold, hidden
        self.greedy = greedy
        self.generator = torch.Generator(device=agent.device)

    def start_codes(self, seed: int) -> None:
        import torch

        self.h = torch.zeros(1, 1, self.hidden, device=self.agent.device)
        self.generator.manual_seed(seed)

    def new_code(self, e: np.ndarray) -> np.ndarray:
        import torch

        with torch.no_grad():
            e_t = torch.as_tensor(e, device=self.agent.device)[:, None]
            dist, self.h = self.policy.distribution(e_t, self.h)
            noise = torch.randn(dist.mean.shape, generator=self.generator, device=self.agent.device)
            z = dist.mean if self.greedy else dist.mean + dist.stddev * noise
        return z[:, 0].cpu().numpy()


def make_player(
    agent: str,
    checkpoint: str | Path | None = None,
    device: str = "cpu",
    greedy: bool = False,
) -> tuple[Player, tuple[str, dict[str, Any]] | None]:
    """The player for `agent`, and the (env id, env kwargs) its checkpoint was trained on
    (None for expert and random). A ValueError for an unknown agent or a missing, wrong or
    corrupt checkpoint."""
    if agent not in AGENTS:
        raise ValueError(f"unknown agent {agent!r}: use one of {', '.join(AGENTS)}")
    if agent in ("expert", "random"):
        if checkpoint is not None:
            raise ValueError(f"--agent {agent} takes no --checkpoint")
        return (ExpertPlayer() if agent == "expert" else RandomPlayer()), None
    if checkpoint is None:
        raise ValueError(
            f"--agent {agent} needs --checkpoint (a {CHECKPOINT_KINDS[agent]!r} checkpoint)"
        )
    from gymnasium.envs.registration import EnvSpec

    from metacontroller_agents.controllers import is_factory, load_controller
    from metacontroller_agents.internal_rl import InternalRLConfig

    if is_factory(checkpoint):  # a user's LatentController: its switches, prior codes
        if agent != "metacontroller":
            raise ValueError(
                f"--controller {checkpoint} is a LatentController: film it with --agent "
                "metacontroller (codes from the prior), or film an internal-RL checkpoint "
                "trained on it with --agent internal-rl"
            )
        controller = load_controller(checkpoint, 1, device)
        return PriorPlayer(controller, InternalRLConfig.threshold), None

    from metacontroller_agents.latent import LatentAgent

    if agent == "bc":
        from metacontroller_agents.checkpoint import load_model

        model, payload = load_model(checkpoint, device, kind="bc")
        player: Player = ModelPlayer(LatentAgent(model, None, 1, device, sample=not greedy))
    elif agent == "metacontroller":
        from metacontroller_agents.analysis import load_metacontroller

        base, meta, payload = load_metacontroller(checkpoint, device)
        # the switch threshold internal RL uses by default (the paper's 0.5)
        player = PriorPlayer(LatentAgent(base, meta, 1, device), InternalRLConfig.threshold)
    else:
        return _internal_rl_player(checkpoint, device, greedy)
    if "env_spec" not in payload:
        return player, None
    spec = EnvSpec.from_json(payload["env_spec"])
    return player, (spec.id, dict(spec.kwargs))


def _internal_rl_player(
    checkpoint: str | Path, device: str, greedy: bool
) -> tuple[Player, tuple[str, dict[str, Any]]]:
    """The trained policy of an internal-RL checkpoint on the agent it was trained with,
    built by InternalRL itself (raw-action and beta = 1 runs too)."""
    from metacontroller_agents.checkpoint import load_checkpoint
    from metacontroller_agents.internal_rl import InternalRL, InternalRLConfig

    payload = load_checkpoint(checkpoint, "internal_rl", device)
    try:
        config = InternalRLConfig(**payload["train_config"])
    except (KeyError, TypeError) as error:
        message = f"checkpoint {checkpoint} holds no usable internal-RL config: {error}"
        raise ValueError(message) from None
    # one episode at a time: a batch of one (group advantages need groups of envs)
    # InternalRL starts from the checkpoint's trained policy, as evaluate_policy does (not
    # from the policy the run started from, nor at its start std)
    config = dataclasses.replace(config, num_envs=1, batch_episodes=1, advantage="batch",
                                 init_policy=str(checkpoint), init_std=None,
                                 device=device)  # fmt: skip
    run = InternalRL(config)
    run.envs.close()  # its own training envs are not used here
    env = (config.env, dict(config.env_kwargs))
    if config.raw_actions:  # the fine-tuned base model samples its own actions (or argmax)
        run.agent.sample = not greedy
        return ModelPlayer(run.agent), env
    return PolicyPlayer(run.agent, run.trained, config.threshold, config.hidden, greedy), env
