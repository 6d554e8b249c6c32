"""Dataclass configs of the bundled agent, their presets, and how they are read and checked."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from metacontroller_envs.checks import check_count

ENCODERS = ("flat", "pinpad", "image", "babyai")

#: Model sizes: the paper's base model, and one that trains on a 2-core CPU in minutes.
PRESETS: dict[str, dict[str, int]] = {
    "paper": {"width": 256, "depth": 6, "heads": 4, "mlp": 512},
    "small": {"width": 128, "depth": 4, "heads": 4, "mlp": 256},
}
#: Training defaults per preset: the paper's learning rate, and a faster schedule for small.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"lr": 3e-4, "steps": 20000},
    "small": {"lr": 2e-3, "steps": 6000},
}


@dataclass
class ModelConfig:
    """The causal transformer: what it reads, what it predicts, and its size."""

    obs_shape: tuple[int, ...]
    """Shape of one observation."""
    obs_high: float
    """Largest observation value: inputs are scaled by 1 / obs_high."""
    num_actions: int
    """Discrete actions; 0 for a continuous Box action space (see action_dim)."""
    action_dim: int = 0
    """Size of a continuous action (diagonal Gaussian head); 0 for discrete actions."""
    encoder: str = "flat"
    """Observation encoder: "flat" (any vector), "pinpad" (its grid seen from the agent),
    "image" (H x W x C pixels) or "babyai" (symbolic grid, carried object, mission)."""
    obs_layout: dict[str, Any] | None = None
    """For the pinpad and babyai encoders: the env's obs_layout, slices as [start, stop]."""
    width: int = 256
    """Residual stream width."""
    depth: int = 6
    """Transformer blocks."""
    heads: int = 4
    """Attention heads (width must divide by heads)."""
    mlp: int = 512
    """Hidden units of each block's MLP."""
    max_len: int = 256
    """Longest sequence the KV cache holds (episode length + 1)."""
    previous_action: bool = True
    """Add an embedding of a_{t-1} to each token. The paper's base model conditions on
    observations only, p(a_t | o_1..t); experts often repeat their last action, so this
    input offers a copycat shortcut that slows learning the observation-to-action map."""
    binary_obs: bool = False
    """Observations are 0/1: the next-observation head uses a Bernoulli loss, else MSE."""
    plan_steps: int = 0
    """pinpad encoder: value-iteration rounds of its planner (0: no planner; for_env
    turns it on for PinPad with 16 rounds, enough for any shortest path on 7 x 7)."""
    plan_next: bool = False
    """With the planner, on observations that name the next colour (PinPad's task_in_obs):
    add the planner's move scores toward that colour, so a value or a choice that depends
    on which colour is named is linear in the encoder's input. for_env turns it on there."""
    goal_head: bool = False
    """With the planner: p(a) = sum_c p(c | history) pi_c(a), a mixture over the colours c
    to head for, each pi_c a softmax of the action logits + scale * (how much longer move a
    makes the way to c), and p(c | history) a softmax read from the last layer. The
    expert's own structure (pick a subgoal, walk there): the subgoal becomes one choice in
    the residual stream."""

    def __post_init__(self) -> None:
        self.obs_shape = tuple(int(s) for s in self.obs_shape)
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}: use one of {list(ENCODERS)}")
        for name in ("width", "depth", "heads", "mlp", "max_len"):
            check_count(name, getattr(self, name))
        if self.width % self.heads or (self.width // self.heads) % 2:
            raise ValueError(
                f"width {self.width} must split into {self.heads} heads of an even size "
                "(rotary positions rotate pairs of channels)"
            )
        if (self.num_actions > 0) == (self.action_dim > 0):
            raise ValueError(
                "give exactly one of num_actions (discrete) and action_dim (continuous), got "
                f"num_actions={self.num_actions}, action_dim={self.action_dim}"
            )
        if self.encoder == "image" and len(self.obs_shape) != 3:
            raise ValueError(
                f"the image encoder needs (H, W, C) observations, got {self.obs_shape}"
            )
        if self.goal_head and not (self.encoder == "pinpad" and self.plan_steps > 0):
            raise ValueError("goal_head needs the pinpad encoder with a planner (plan_steps > 0)")
        if self.encoder in ("pinpad", "babyai") and not self.obs_layout:
            raise ValueError(f"the {self.encoder} encoder needs obs_layout (the env's)")
        if self.plan_next and not (
            self.encoder == "pinpad"
            and self.plan_steps > 0
            and "next_colour" in (self.obs_layout or {})
        ):
            raise ValueError(
                "plan_next needs the pinpad encoder with a planner (plan_steps > 0) and "
                "observations that name the next colour (PinPad with task_in_obs=True)"
            )

    @property
    def obs_size(self) -> int:
        return int(np.prod(self.obs_shape))

    @classmethod
    def for_env(cls, env: gym.Env, preset: str = "small", **overrides: Any) -> ModelConfig:
        """The config that fits `env`'s spaces, at a preset size."""
        if preset not in PRESETS:
            raise ValueError(f"unknown preset {preset!r}: use one of {list(PRESETS)}")
        obs_space, action_space = env.observation_space, env.action_space
        if not isinstance(obs_space, gym.spaces.Box):
            raise ValueError(f"observations must be a Box, got {obs_space}")
        try:  # the env's public description of its observation
            layout = env.get_wrapper_attr("obs_layout")
        except AttributeError:
            layout = None
        kwargs: dict[str, Any] = {
            "obs_shape": obs_space.shape,
            "obs_high": float(np.max(obs_space.high)),
            "binary_obs": bool(np.all(obs_space.low == 0) and np.all(obs_space.high == 1)),
        }
        if layout is not None:
            kwargs["encoder"] = layout["kind"]
            if layout["kind"] == "pinpad":  # measured: 0.99 vs 0.48 success at step 500
                kwargs.update(plan_steps=16, goal_head=True, plan_next="next_colour" in layout)
            kwargs["obs_layout"] = {  # JSON-friendly: slices as [start, stop]
                key: [value.start, value.stop] if isinstance(value, slice) else value
                for key, value in layout.items()
            }
        elif len(obs_space.shape) == 3:
            kwargs["encoder"] = "image"
        if isinstance(action_space, gym.spaces.Discrete):
            kwargs["num_actions"] = int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box) and len(action_space.shape) == 1:
            kwargs["num_actions"], kwargs["action_dim"] = 0, int(action_space.shape[0])
        else:
            raise ValueError(f"actions must be Discrete or a 1-D Box, got {action_space}")
        spec = getattr(env, "spec", None)
        if spec is not None and spec.max_episode_steps:  # the registry's horizon
            kwargs["max_len"] = int(spec.max_episode_steps) + 1
        return cls(**{**kwargs, **PRESETS[preset], **overrides})


@dataclass
class BCConfig:
    """Behaviour cloning: the data, the optimiser and the schedule."""

    dataset: str
    """Minari dataset id, e.g. pinpad/PinPad-v0/expert-v0."""
    preset: str = "small"
    """Model size: "small" or "paper"."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """ModelConfig fields that replace the preset's (e.g. {"depth": 2})."""
    steps: int | None = None
    """Optimiser steps (default: the preset's, TRAIN_PRESETS)."""
    batch_size: int = 64
    """Episodes per batch."""
    lr: float | None = None
    """AdamW peak learning rate (default: the preset's; the paper's is 3e-4)."""
    weight_decay: float = 0.03
    """AdamW weight decay (the paper's 0.03)."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up; then cosine decay to 10%."""
    grad_clip: float = 1.0
    """Gradient norm clipping."""
    obs_loss_weight: float = 0.01
    """lambda: weight of the next-observation loss (the paper uses 0 or 0.01)."""
    token_loss_weight: float = 1.0
    """Weight of an auxiliary loss: a_t predicted from o_t's token alone (see the model's
    token_action_head). 0 turns it off."""
    eval_every: int = 1000
    """Steps between evaluation rollouts (0: only at the end)."""
    eval_episodes: int = 256
    """Episodes per evaluation rollout."""
    checkpoint_every: int = 1000
    """Steps between checkpoints."""
    seed: int = 0
    """Seeds the initialisation and the data order."""
    device: str = "auto"
    """"cpu", "cuda" or "auto"."""
    amp: bool = True
    """bfloat16 autocast on CUDA (ignored on CPU)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}: use one of {list(PRESETS)}")
        for name, value in TRAIN_PRESETS[self.preset].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name in ("steps", "batch_size", "eval_episodes", "checkpoint_every"):
            check_count(name, getattr(self, name))
        unknown = set(self.model_overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
        if unknown:
            raise ValueError(f"unknown model fields in model_overrides: {sorted(unknown)}")


@dataclass
class MetaControllerConfig:
    """The MetaController's sizes (the paper's, Table A9) and where it acts."""

    width: int
    """The base model's residual width (set from the base model)."""
    layer: int
    """The base model layer whose input stream it reads and rewrites (the paper: depth / 2)."""
    latent_dim: int = 8
    """n_z: size of a controller code z."""
    rank: int = 16
    """Rank of the linear controller U = A B^T."""
    history_dim: int = 32
    """n_h: the GRU history of the stream."""
    embed_dim: int = 32
    """n_s: the non-causal sequence embedding (per direction of its bidirectional GRU)."""
    encoder_hidden: int = 64
    """Hidden units of the encoder f_enc that proposes z~_t ~ N(mu_t, Sigma_t)."""
    decoder_hidden: int = 32
    """Hidden units of the hypernetwork f_hyp: z -> (A, B)."""
    switch_hidden: int = 32
    """Hidden units of the switching unit f_switch (not given in the paper)."""
    force_switch: bool = False
    """Ablation: beta_t = 1 at every step (a new code each step, no temporal abstraction)."""
    switch_noise: bool = False
    """Sample beta in training by the Gumbel-Sigmoid trick, sigmoid(logit + logistic
    noise), a relaxed Bernoulli switch: the paper's rate-distortion runs on the grid world
    (App. C.6, E.1). Off, beta is the switch's probability (the paper's main runs). Acting
    and analysis always use the noiseless sigmoid(logit)."""

    def __post_init__(self) -> None:
        for name in ("width", "latent_dim", "rank", "history_dim", "embed_dim",
                     "encoder_hidden", "decoder_hidden", "switch_hidden"):  # fmt: skip
            check_count(name, getattr(self, name))

    @classmethod
    def for_base(
        cls, base: ModelConfig, layer: int | None = None, **overrides: Any
    ) -> MetaControllerConfig:
        """Sized for `base`, acting at `layer` (default: mid-depth)."""
        layer = base.depth // 2 if layer is None else layer
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= base.depth:
            raise ValueError(
                f"layer must be an integer in 0..{base.depth} (the base model's depth), "
                f"got {layer!r}"
            )
        return cls(width=base.width, layer=layer, **overrides)


@dataclass
class DiscoveryConfig:
    """Discovery: training a MetaController on a frozen base model (App. C.4)."""

    base: str
    """Path of the base model's checkpoint (from `mcenv train bc`)."""
    dataset: str
    """Minari dataset id of clean expert data (the paper's D*, epsilon = 0)."""
    alpha: float = 0.05
    """Weight of KL(N(mu, Sigma) || N(0, I)) against the action NLL (one of the paper's
    swept values; 0.3 and above collapsed the codes onto the prior on our base models)."""
    kl_warmup_steps: int = 300
    """Steps over which the KL weight rises linearly from 0 to alpha (0: alpha from the
    start). Without it the codes can collapse onto the prior before the controller has
    learned to use them."""
    layer: int | None = None
    """The base model layer it controls (default: depth // 2)."""
    controller_overrides: dict[str, Any] = field(default_factory=dict)
    """MetaControllerConfig fields that replace the paper's sizes (e.g. {"latent_dim": 4})."""
    force_switch: bool = False
    """Ablation: beta = 1 at every step."""
    switch_noise: bool = True
    """Sample the switch by the Gumbel-Sigmoid trick in training (MetaControllerConfig's
    switch_noise, the paper's grid-world setting): measured on PinPad, it makes the gate
    binary at depth L/2. False: the switch's probability."""
    cotrain: bool = False
    """Ablation: train the base model too (from its checkpoint's weights)."""
    steps: int = 1500
    """Optimiser steps."""
    batch_size: int = 64
    """Episodes per batch."""
    lr: float = 1e-3
    """AdamW learning rate (the paper's 1e-3; constant after warm-up)."""
    weight_decay: float = 0.03
    """AdamW weight decay (the paper's 0.03)."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up."""
    grad_clip: float = 1.0
    """Gradient norm clipping."""
    checkpoint_every: int = 1000
    """Steps between checkpoints."""
    seed: int = 0
    """Seeds the initialisation, the data order and the sampled codes."""
    device: str = "auto"
    """"cpu", "cuda" or "auto"."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            check_count(name, getattr(self, name))
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha!r}")
        check_count("kl_warmup_steps", self.kl_warmup_steps, minimum=0)
        known = {f.name for f in dataclasses.fields(MetaControllerConfig)}
        known -= {"width", "layer", "force_switch", "switch_noise"}  # set from the base and here
        unknown = set(self.controller_overrides) - known
        if unknown:
            raise ValueError(
                f"unknown fields in controller_overrides: {sorted(unknown)}; "
                f"known are {sorted(known)} (layer, force_switch and switch_noise are "
                "DiscoveryConfig's own fields)"
            )


ADVANTAGES = ("batch", "group")


@dataclass
class InternalRLConfig:
    """Internal RL (the paper's App. C.5): RL on the MetaController's codes z, with the base
    model, the switching unit and the decoder counted as the environment."""

    checkpoint: str
    """Discovery checkpoint (from `mcenv train discover`): the base model and MetaController."""
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
    clip: float = 0.2
    """PPO's ratio clipping."""
    hidden: int = 64
    """Units of the policy's recurrent layer."""
    advantage: str = "batch"
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


@dataclass
class EvolutionConfig:
    """Evolution strategies (Salimans et al. 2017) over internal RL's latent policy: the
    policy's weights are perturbed, each perturbation plays whole episodes with its mean
    codes, and the weights move towards the perturbations that scored well."""

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
            seed=self.seed, device=self.device,
        )  # fmt: skip


def load_config(cls: type, path: str | Path | None, **overrides: Any) -> Any:
    """A config from a JSON file of its fields (unknown keys are an error), then overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read config {path}: {error}") from None
        if not isinstance(values, dict):
            raise ValueError(f"config {path} must hold a JSON object of {cls.__name__} fields")
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}: known are {sorted(names)}")
    try:
        return cls(**values)
    except TypeError as error:
        raise ValueError(f"bad {cls.__name__}: {error}") from None
