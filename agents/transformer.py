"""The base model: a causal transformer over (observation, previous action) sequences.

One token per time step: the encoded observation o_t plus (unless `previous_action` is
off) an embedding of the action a_{t-1} (a start action at t = 0). Pre-norm blocks,
torch's scaled_dot_product_attention, rotary positions. Heads predict a_t (categorical,
or a diagonal Gaussian for continuous actions) and o_{t+1}.

The residual stream is open to the caller: `forward(..., layer=l, intervene=f)` returns the
stream entering block l and runs the rest of the model on f(stream); this is where the
MetaController writes e <- e + U e. `step` runs one token per call against a key/value
cache, so acting in an environment costs one token per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from metacontroller_envs.checks import check_count

#: Observation encoders (ENCODER_CLASSES below holds their modules).
ENCODERS = ("flat", "pinpad", "image", "babyai")

#: Model sizes: the paper's base model, and one that trains on a 2-core CPU in minutes.
PRESETS: dict[str, dict[str, int]] = {
    "paper": {"width": 256, "depth": 6, "heads": 4, "mlp": 512},
    "small": {"width": 128, "depth": 4, "heads": 4, "mlp": 256},
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


Intervention = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class ModelOutput:
    action: torch.Tensor  # (B, T, A) logits, or (B, T, D) Gaussian means
    next_obs: torch.Tensor  # (B, T, obs_size) predicted o_{t+1} (logits if binary)
    stream: torch.Tensor | None  # (B, T, width) residual stream entering `layer`, if asked
    token_action: torch.Tensor | None = None  # (B, T, A) a_t from o_t's token alone


def empty_keys_values(
    config: ModelConfig, rows: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Zeroed key and value buffers for `rows` sequences of up to max_len steps, every
    layer: (depth, rows, heads, max_len, head_dim) each."""
    shape = (config.depth, rows, config.heads, config.max_len, config.width // config.heads)
    return (torch.zeros(shape, device=device, dtype=dtype),
            torch.zeros(shape, device=device, dtype=dtype))  # fmt: skip


class KVCache:
    """Keys and values of every layer for up to `max_len` steps of a batch of sequences."""

    def __init__(self, config: ModelConfig, batch: int, device: torch.device, dtype: torch.dtype):
        self.keys, self.values = empty_keys_values(config, batch, device, dtype)
        self.length = 0  # steps held

    def write(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, ...]:
        """Store new keys/values at the end; returns all keys and values so far."""
        start, stop = self.length, self.length + keys.shape[2]
        if stop > self.keys.shape[3]:
            raise ValueError(
                f"the KV cache holds {self.keys.shape[3]} steps (max_len); step {stop} does "
                "not fit: raise max_len or start a new cache per episode"
            )
        self.keys[layer, :, :, start:stop] = keys
        self.values[layer, :, :, start:stop] = values
        return self.keys[layer, :, :, :stop], self.values[layer, :, :, :stop]


def rotate(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding of x (B, H, T, D) at `positions` (T,)."""
    angles = positions[:, None].to(inv_freq.dtype) * inv_freq[None, :]  # (T, D/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    first, second = x.chunk(2, dim=-1)
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


class SelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.heads = config.heads
        head_dim = config.width // config.heads
        self.qkv = nn.Linear(config.width, 3 * config.width, bias=False)
        self.out = nn.Linear(config.width, config.width, bias=False)
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None, layer: int
    ) -> torch.Tensor:
        q, k, v = rearrange(self.qkv(x), "b t (three h d) -> three b h t d", three=3, h=self.heads)
        q, k = rotate(q, positions, self.inv_freq), rotate(k, positions, self.inv_freq)
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            k, v = cache.write(layer, k, v)
            if q.shape[2] == 1:  # one new step attends to everything cached
                y = F.scaled_dot_product_attention(q, k, v)
            else:
                allowed = positions[:, None] >= torch.arange(k.shape[2], device=x.device)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        return self.out(rearrange(y, "b h t d -> b t (h d)"))


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.width)
        self.attention = SelfAttention(config)
        self.mlp_norm = nn.LayerNorm(config.width)
        self.mlp = nn.Sequential(
            nn.Linear(config.width, config.mlp), nn.GELU(), nn.Linear(config.mlp, config.width)
        )

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, cache: KVCache | None, layer: int
    ) -> torch.Tensor:
        x = x + self.attention(self.attention_norm(x), positions, cache, layer)
        return x + self.mlp(self.mlp_norm(x))


# -- observation encoders: (B, T, *obs_shape) -> (B, T, width) ---------------------------


class FlatEncoder(nn.Module):
    """Vectors (PinPad's one-hot grid): a two-layer MLP."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.scale = 1.0 / config.obs_high
        self.net = nn.Sequential(
            nn.Linear(config.obs_size, config.width),
            nn.GELU(),
            nn.Linear(config.width, config.width),
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs.flatten(2).float() * self.scale)


class ValueIteration(nn.Module):
    """A value-iteration network (Tamar et al. 2016) over a grid of cells.

    The goals are given: one plane per object channel (PinPad's colours), each holding
    the cells where that object lies. What is learned is each plane's passability, a 1x1
    conv over the cells. `steps` rounds of v <- max(goal, passable * discount * (max of v
    over the 4 neighbours)) follow, so with the right passability v = discount ** (the
    shortest-path distance to the object). The max-propagation is what an MLP over the
    grid struggles to learn from imitation alone (measured: a transformer with an MLP
    encoder leaves 20% of greedy PinPad steps off the shortest path). Returns, for each
    object and each of the agent's four neighbours (the env's action order), how many steps
    longer the path through that neighbour is than the best one (0 for the best, clamped
    at -limit), and the neighbour's value.
    """

    limit = 8.0

    def __init__(
        self,
        cell_channels: int,
        goal_channels: slice,
        steps: int,
        moves: Sequence[Sequence[int]],
        discount: float = 0.8,
    ) -> None:
        super().__init__()
        self.goal_channels, self.steps = goal_channels, steps
        self.discount, self.log_discount = discount, math.log(discount)
        self.planes = planes = goal_channels.stop - goal_channels.start
        self.passable = nn.Conv2d(cell_channels, planes, 1)
        # start from "free cells pass, any object other than the plane's goal blocks"
        # (PinPad's rule: walls block, and a wrong colour ends the episode); still learned
        nn.init.constant_(self.passable.bias, 6.0)
        with torch.no_grad():
            weight = torch.full((planes, cell_channels), -12.0)
            goals = torch.arange(planes)
            weight[goals, goals + goal_channels.start] = 0.0
            self.passable.weight.copy_(weight[..., None, None])
        self.num_moves = len(moves)
        self.features = 2 * self.num_moves * planes
        offsets = torch.tensor(moves)
        self.register_buffer("row_offset", offsets[:, 0], persistent=False)
        self.register_buffer("col_offset", offsets[:, 1], persistent=False)

    def values(self, cells: torch.Tensor) -> torch.Tensor:
        """cells (N, C, G, G), the agent left out -> v (N, planes, G, G)."""
        goal = cells[:, self.goal_channels]
        passable = torch.sigmoid(self.passable(cells)) * self.discount
        v = goal
        for _ in range(self.steps):
            p = F.pad(v, (1, 1, 1, 1))
            best = torch.maximum(
                torch.maximum(p[..., :-2, 1:-1], p[..., 2:, 1:-1]),
                torch.maximum(p[..., 1:-1, :-2], p[..., 1:-1, 2:]),
            )
            v = torch.maximum(goal, passable * best)
        return v

    def forward(self, cells: torch.Tensor, row: torch.Tensor, col: torch.Tensor) -> torch.Tensor:
        """cells (B, C, G, G) without the agent, the agent at (row, col) (B, T) ->
        (B, T, features): one plan per grid, read at each of the T places given."""
        padded = F.pad(self.values(cells), (1, 1, 1, 1))  # off the grid: value 0
        b = torch.arange(len(cells), device=cells.device)[:, None, None]
        rows = row[..., None] + 1 + self.row_offset  # (B, T, 4)
        cols = col[..., None] + 1 + self.col_offset
        values = padded.permute(0, 2, 3, 1)[b, rows, cols]  # (B, T, 4, planes)
        steps = values.clamp(min=1e-6).log() / -self.log_discount
        longer = (steps - steps.amax(2, keepdim=True)).clamp(min=-self.limit)
        return torch.cat([longer.flatten(2), values.flatten(2)], dim=2)


class PinPadEncoder(nn.Module):
    """PinPad's one-hot grid seen from the agent, then a two-layer MLP.

    The grid is re-centred on the agent in a (2G-1) x (2G-1) window, with a channel that
    marks cells inside the grid, so "the colour two cells to my right" is one fixed input
    wherever the agent stands. Anything after the grid (the task, with task_in_obs) is
    appended as it is. With `config.plan_steps` > 0, a ValueIteration module over the grid
    adds, for each colour, how much longer each move makes the way there.
    With `config.plan_next`, the plan toward the colour the observation names is added
    once more on its own.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        layout = config.obs_layout
        self.size, _, self.channels = layout["grid_shape"]
        self.agent_channel = layout["agent_channel"]
        self.grid, self.extra = slice(*layout["grid"]), slice(*layout["extra"])
        view = 2 * self.size - 1
        features = view * view * self.channels + (self.extra.stop - self.extra.start)
        self.planner, self.next_colour = None, None
        if config.plan_steps:
            goals = slice(*layout["colour_channels"])
            if "moves" not in layout:
                raise ValueError(
                    "the planner needs the env's move table (obs_layout['moves']); this "
                    "config's obs_layout predates it: rebuild the config with for_env"
                )
            self.planner = ValueIteration(self.channels - 1, goals, config.plan_steps,
                                          layout["moves"])  # fmt: skip
            features += self.planner.features
        if config.plan_next:
            self.next_colour = slice(*layout["next_colour"])
            features += self.planner.features // self.planner.planes
        self.register_buffer("window", torch.arange(view), persistent=False)
        self.net = nn.Sequential(
            nn.Linear(features, config.width), nn.GELU(), nn.Linear(config.width, config.width)
        )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.encode(obs)[0]

    def encode(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens (B, T, width) and, with a planner, its move scores (B, T, 4 moves, colours):
        how many steps longer each move makes the way to each colour (0 for the best)."""
        b, t = obs.shape[:2]
        x = obs.reshape(b * t, -1).float()
        g = self.size
        grid = x[:, self.grid].view(-1, g, g, self.channels)
        agent = grid[..., self.agent_channel].flatten(1).argmax(1)
        row, col = agent // g, agent % g
        cells = torch.cat(
            [
                grid[..., : self.agent_channel],
                grid[..., self.agent_channel + 1 :],
                torch.ones_like(grid[..., :1]),  # inside the grid
            ],
            dim=-1,
        )
        padded = F.pad(cells, (0, 0, g - 1, g - 1, g - 1, g - 1))
        rows = (row[:, None] + self.window)[:, :, None]
        cols = (col[:, None] + self.window)[:, None, :]
        view = padded[torch.arange(len(x), device=x.device)[:, None, None], rows, cols]
        parts, moves = [view.flatten(1), x[:, self.extra]], None
        if self.planner is not None:
            grids = rearrange(cells[..., :-1], "(b t) h w c -> b t c h w", b=b)
            # PinPad's layout stays for an episode; all-zero steps are a batch's padding
            same = (grids == grids[:, :1]).flatten(2).all(-1) | (grids == 0).flatten(2).all(-1)
            if bool(same.all()):  # one plan per sequence
                plan = self.planner(grids[:, 0], row.view(b, t), col.view(b, t))
            else:  # one plan per step
                plan = self.planner(grids.flatten(0, 1), row[:, None], col[:, None])
            plan = plan.reshape(b * t, -1)
            parts.append(plan)
            if self.next_colour is not None:  # the plan toward the colour the obs names
                named = x[:, self.next_colour, None]
                parts.append((plan.unflatten(1, (-1, self.planner.planes)) @ named).flatten(1))
            plan = plan.view(b, t, -1)
            moves = plan[..., : self.planner.features // 2]
            moves = moves.unflatten(-1, (self.planner.num_moves, -1))
        return self.net(torch.cat(parts, dim=1)).view(b, t, -1), moves


class ImageEncoder(nn.Module):
    """H x W x C pixels (Visual Pin Pad): a small strided CNN."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.scale = 1.0 / config.obs_high
        channels = config.obs_shape[2]
        self.net = nn.Sequential(
            nn.Conv2d(channels, 32, 4, stride=2), nn.GELU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.GELU(),
            nn.Conv2d(64, 64, 3, stride=2), nn.GELU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, config.width),
        )  # fmt: skip

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        b, t = obs.shape[:2]
        pixels = rearrange(obs.float() * self.scale, "b t h w c -> (b t) c h w")
        return self.net(pixels).view(b, t, -1)


class BabyAIEncoder(nn.Module):
    """BabyAI's symbolic grid (a CNN over embedded cells), carried object and mission."""

    CELL_VALUES = 16  # minigrid's type, colour and state ids are all below this
    EMBED = 32

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        layout = config.obs_layout
        self.grid = slice(*layout["grid"])
        self.carrying = slice(*layout["carrying"])
        self.mission = slice(*layout["mission"])
        self.grid_shape = tuple(layout["grid_shape"])
        self.cells = nn.Embedding(3 * self.CELL_VALUES, self.EMBED)  # one table per channel
        self.register_buffer("channel_offset", torch.arange(3) * self.CELL_VALUES, persistent=False)
        self.conv = nn.Sequential(
            nn.Conv2d(self.EMBED, 64, 3, padding=1), nn.GELU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.GELU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64 * 16, config.width),
        )  # fmt: skip
        self.held = nn.Embedding(2 * self.CELL_VALUES, config.width)
        self.words = nn.Embedding(layout["vocab_size"], config.width, padding_idx=0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        b, t = obs.shape[:2]
        obs = obs.long()
        grid = obs[..., self.grid].reshape(b * t, *self.grid_shape)
        cells = self.cells(grid + self.channel_offset).sum(dim=3)  # (bt, H, W, E)
        x = self.conv(rearrange(cells, "n h w e -> n e h w")).view(b, t, -1)
        held = obs[..., self.carrying] + self.channel_offset[:2]
        x = x + self.held(held).sum(dim=2)
        tokens = obs[..., self.mission]
        count = (tokens > 0).sum(dim=-1, keepdim=True).clamp(min=1)
        return x + self.words(tokens).sum(dim=2) / count


ENCODER_CLASSES = {
    "flat": FlatEncoder,
    "pinpad": PinPadEncoder,
    "image": ImageEncoder,
    "babyai": BabyAIEncoder,
}


def goal_mixture(
    goal_logits: torch.Tensor,
    action_logits: torch.Tensor,
    moves: torch.Tensor,
    scale: torch.Tensor,
) -> torch.Tensor:
    """log p(a) = log sum_c p(c) pi_c(a), with p(c) = softmax(goal_logits) over colours and
    pi_c = softmax(action_logits + scale * moves[..., c]): a choice of where to go, then the
    planner's way there, which is how PinPad's expert acts.

    goal_logits (..., colours), action_logits (..., A), moves (..., A, colours) -> (..., A).
    """
    goal = goal_logits.float().log_softmax(-1)
    per_goal = (action_logits[..., None] + scale * moves).float().log_softmax(-2)
    return torch.logsumexp(goal[..., None, :] + per_goal, dim=-1)


class CausalTransformer(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = ENCODER_CLASSES[config.encoder](config)
        self.discrete = config.num_actions > 0
        if not config.previous_action:
            self.action_embedding = None
        elif self.discrete:  # index num_actions is the start action of t = 0
            self.action_embedding = nn.Embedding(config.num_actions + 1, config.width)
        else:
            self.action_embedding = nn.Linear(config.action_dim, config.width)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.final_norm = nn.LayerNorm(config.width)
        if self.discrete:
            self.action_head = nn.Linear(config.width, config.num_actions)
        else:
            self.action_head = nn.Linear(config.width, config.action_dim)
            self.log_std = nn.Parameter(torch.zeros(config.action_dim))
        self.obs_head = nn.Linear(config.width, config.obs_size)
        self.goal_head = None
        if config.goal_head:  # which colour to head for, read from the residual stream
            planes = self.encoder.planner.planes
            self.goal_head = nn.Linear(config.width, planes)
            self.goal_scale = nn.Parameter(torch.tensor(2.0))
        # predicts a_t from o_t's token alone, for an auxiliary training loss: history lets
        # a model copy the expert's last move, a shortcut that delays learning to act
        # from the observation; this head makes the encoder learn that map directly
        out = config.num_actions if self.discrete else config.action_dim
        self.token_action_head = nn.Linear(config.width, out)

    @property
    def start_action(self) -> int:
        return self.config.num_actions

    def previous_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """a_{t-1} for each t: the actions shifted right, the start action (or 0) first."""
        first = torch.full_like(actions[:, :1], self.start_action if self.discrete else 0)
        return torch.cat([first, actions[:, :-1]], dim=1)

    def embed(
        self, obs: torch.Tensor, prev_actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens (B, T, width), and the planner's move scores for the goal head (or None)."""
        shape = tuple(obs.shape[2:])
        if shape != self.config.obs_shape:
            raise ValueError(
                f"observations of shape {shape} given to a model built for {self.config.obs_shape}"
            )
        tokens, moves = self.encoder.encode(obs) if self.goal_head else (self.encoder(obs), None)
        if self.action_embedding is not None:
            actions = prev_actions.long() if self.discrete else prev_actions.float()
            tokens = tokens + self.action_embedding(actions)
        return tokens, moves

    def run(
        self,
        h: torch.Tensor,
        start: int,
        stop: int,
        positions: torch.Tensor,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """The residual stream after blocks [start, stop)."""
        for layer in range(start, stop):
            h = self.blocks[layer](h, positions, cache, layer)
        return h

    def heads(
        self,
        h: torch.Tensor,
        stream: torch.Tensor | None = None,
        moves: torch.Tensor | None = None,
    ) -> ModelOutput:
        h = self.final_norm(h)
        action = self.action_head(h)
        if self.goal_head is not None:
            action = goal_mixture(self.goal_head(h), action, moves, self.goal_scale)
        return ModelOutput(action, self.obs_head(h), stream)

    def forward(
        self,
        obs: torch.Tensor,
        prev_actions: torch.Tensor,
        layer: int | None = None,
        intervene: Intervention | None = None,
    ) -> ModelOutput:
        """Whole sequences: obs (B, T, *obs_shape), prev_actions (B, T)."""
        positions = torch.arange(obs.shape[1], device=obs.device)
        tokens, moves = self.embed(obs, prev_actions)
        out = self._forward(tokens, moves, positions, None, layer, intervene)
        out.token_action = self.token_action_head(tokens)
        return out

    def step(
        self,
        obs: torch.Tensor,
        prev_action: torch.Tensor,
        cache: KVCache,
        layer: int | None = None,
        intervene: Intervention | None = None,
    ) -> ModelOutput:
        """One new step per sequence: obs (B, *obs_shape), prev_action (B,); outputs (B, 1, .)."""
        positions = torch.arange(cache.length, cache.length + 1, device=obs.device)
        h, moves = self.embed(obs[:, None], prev_action[:, None])
        out = self._forward(h, moves, positions, cache, layer, intervene)
        cache.length += 1
        return out

    def _forward(
        self,
        h: torch.Tensor,
        moves: torch.Tensor | None,
        positions: torch.Tensor,
        cache: KVCache | None,
        layer: int | None,
        intervene: Intervention | None,
    ) -> ModelOutput:
        if layer is None:
            if intervene is not None:
                raise ValueError("intervene needs the layer it applies at")
            return self.heads(self.run(h, 0, self.config.depth, positions, cache), None, moves)
        if not 0 <= layer <= self.config.depth:
            raise ValueError(f"layer must be in 0..{self.config.depth}, got {layer}")
        stream = self.run(h, 0, layer, positions, cache)
        changed = stream if intervene is None else intervene(stream)
        h = self.run(changed, layer, self.config.depth, positions, cache)
        return self.heads(h, stream, moves)

    def new_cache(self, batch: int) -> KVCache:
        parameter = next(self.parameters())
        return KVCache(self.config, batch, parameter.device, parameter.dtype)

    def action_distribution(
        self, action: torch.Tensor, temperature: float = 1.0
    ) -> torch.distributions.Distribution:
        """pi(a | head output): softmax(logits / temperature), or a Gaussian whose std is
        the learned one times temperature."""
        if self.discrete:
            return torch.distributions.Categorical(logits=action.float() / temperature)
        std = temperature * self.log_std.exp().expand_as(action)
        return torch.distributions.Independent(torch.distributions.Normal(action.float(), std), 1)
