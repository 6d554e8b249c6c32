"""The agent behind metacontroller_envs.wrappers.LatentActionWrapper: a frozen base model
whose residual stream a MetaController rewrites with codes z chosen from outside.

`LatentAgent` implements the wrappers' `LatentController` Protocol for N episodes at once.
Each primitive step costs one token: the base model runs against a key/value cache and the
MetaController carries its GRU history, both per episode (row). Rows start and end at
different times (a vector env resets each env when its episode ends), so the cache here
keeps one length per row and masks each row's attention to its own episode; the
transformer's own `KVCache` holds one length for the whole batch. The blocks' weights and
the rotary `rotate` are the base model's; only the per-row cache bookkeeping is new.

A step is split at the controlled layer (`observe`: layers below it, then the switch
gate; `act`: the code z, the layers above and the action head) so that a policy can choose
z_t after seeing e_t, as internal RL does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from metacontroller_agents.data import resolve_device
from metacontroller_agents.metacontroller import MetaController, MetaControllerConfig
from metacontroller_agents.transformer import (
    CausalTransformer,
    ModelConfig,
    SelfAttention,
    empty_keys_values,
    rotate,
)
from metacontroller_envs.checks import check_count


class RowCache:
    """Keys and values of every layer for N episodes with one length each: row i holds the
    steps of its current episode in slots 0..lengths[i]-1."""

    def __init__(
        self, config: ModelConfig, rows: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.keys, self.values = empty_keys_values(config, rows, device, dtype)
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)
        self.max_len = config.max_len

    def span(self, positions: torch.Tensor) -> int:
        """Slots the rows at `positions` attend over; a ValueError when the episode is
        longer than the model holds."""
        span = int(positions.max()) + 1
        if span > self.max_len:
            raise ValueError(
                f"an episode reached step {span - 1}; the base model holds {self.max_len} "
                "steps (its max_len): use a model with a larger max_len or an env with a "
                "shorter horizon"
            )
        return span

    def write(
        self,
        layer: int,
        rows: torch.Tensor,
        positions: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
        span: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one step's keys and values (n, heads, 1, head_dim) of `rows` at their
        positions; returns every row's keys and values over the first `span` slots (views)."""
        self.keys[layer, rows, :, positions] = keys[:, :, 0]
        self.values[layer, rows, :, positions] = values[:, :, 0]
        return self.keys[layer, :, :, :span], self.values[layer, :, :, :span]


def rotate_rows(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """The base model's rotary embedding of one step x (n, heads, 1, head_dim), each row at
    its own position (n,): the rows are laid along `rotate`'s time axis."""
    return rotate(x.transpose(0, 2), positions, inv_freq).transpose(0, 2)


class LatentAgent:
    """A frozen base model + MetaController for N parallel episodes, driven by codes z.

    Implements metacontroller_envs.wrappers.LatentController. Actions are the base model's
    greedy choice (argmax, or the Gaussian mean), or with `sample` drawn from its action
    distribution with a torch.Generator seeded by `seed` (and reseeded by `reset(seed=)`),
    at `temperature` (discrete logits divided by it, a Gaussian's std multiplied by it).
    The modules are moved to `device`, put in eval mode and run under torch.no_grad.
    With `meta=None` the base model acts alone (codes are ignored, beta is always 1): the
    raw-action baseline of internal RL. `last_log_prob` holds log p(a_t) of the last `act`.
    """

    def __init__(
        self,
        base: CausalTransformer,
        meta: MetaController | None,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        sample: bool = False,
        seed: int = 0,
        temperature: float = 1.0,
    ) -> None:
        check_count("num_envs", num_envs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        if meta is None:  # the base model alone (raw-action RL): no codes, no switch
            meta = MetaController(MetaControllerConfig.for_base(base.config))
            self.control = False
        else:
            self.control = True
        if meta.config.width != base.config.width:
            raise ValueError(
                f"the MetaController reads width {meta.config.width}, the base model's "
                f"stream is {base.config.width} wide"
            )
        if not 0 <= meta.config.layer <= base.config.depth:
            raise ValueError(
                f"the MetaController acts at layer {meta.config.layer}; the base model has "
                f"layers 0..{base.config.depth}"
            )
        self.device = resolve_device(device)
        self.base = base.to(self.device).eval()
        self.meta = meta.to(self.device).eval()
        self.sample = sample
        self.temperature = float(temperature)
        self.layer = meta.config.layer
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        c, n = base.config, num_envs
        dtype = next(base.parameters()).dtype
        self._num_envs = n
        self.cache = RowCache(c, n, self.device, dtype)
        if base.discrete:
            self.previous = torch.full((n,), base.start_action, device=self.device)
        else:
            self.previous = torch.zeros(n, c.action_dim, device=self.device)
        self.h = torch.zeros(n, meta.config.history_dim, device=self.device)
        self.z = torch.zeros(n, meta.config.latent_dim, device=self.device)
        self.started = torch.zeros(n, dtype=torch.bool, device=self.device)
        self.stream = torch.zeros(n, c.width, device=self.device, dtype=dtype)  # e_t raw
        self.e = torch.zeros(n, c.width, device=self.device)  # e_t normalised
        self.moves = None
        if base.goal_head is not None:
            planes = base.goal_head.out_features
            moves = len(c.obs_layout["moves"])  # the env's move table
            self.moves = torch.zeros(n, moves, planes, device=self.device, dtype=dtype)
        self._every = np.arange(n)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        sample: bool = False,
        seed: int = 0,
    ) -> LatentAgent:
        """The agent of a discovery checkpoint (`mcenv train discover`)."""
        from metacontroller_agents.analysis import load_metacontroller

        base, meta, _ = load_metacontroller(path, resolve_device(device))
        return cls(base, meta, num_envs, device, sample, seed)

    @classmethod
    def pretrained(
        cls, name: str = "PinPad-v0", num_envs: int = 1, device: str | torch.device = "cpu",
        sample: bool = False, seed: int = 0,
    ) -> LatentAgent:  # fmt: skip
        """A shipped base model and MetaController by name (metacontroller_agents.pretrained:
        `names()` lists them), e.g. to drive LatentActionWrapper without training."""
        from metacontroller_agents.pretrained import PREFIX

        return cls.from_checkpoint(PREFIX + name, num_envs, device, sample, seed)

    # -- the LatentController protocol ----------------------------------------------------

    @property
    def num_envs(self) -> int:
        return self._num_envs

    @property
    def latent_dim(self) -> int:
        return self.meta.config.latent_dim

    @property
    def observation_size(self) -> int:
        return self.base.config.width

    @torch.no_grad()
    def reset(self, rows: np.ndarray, seed: int | None = None) -> None:
        """Restart the episodes of `rows`: empty cache, start action, zero history and code."""
        index = self._index(rows)
        self.cache.lengths[index] = 0
        self.previous[index] = self.base.start_action if self.base.discrete else 0
        self.h[index] = 0
        self.z[index] = 0
        self.started[index] = False
        if seed is not None:
            self.generator.manual_seed(int(seed))

    @torch.no_grad()
    def observe(self, observations: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The layers below the controlled one on o_t, then the switch gate: (e_t, beta_t)."""
        index = self._index(rows)
        obs = torch.as_tensor(np.asarray(observations), device=self.device)
        x, moves = self.base.embed(obs[:, None], self.previous[index][:, None])
        if moves is not None:  # the goal head's input, kept for act()
            self.moves[index] = moves[:, 0]
        x = self._blocks(range(self.layer), x, rows, index)
        if self.control:
            e, beta = self.meta.gate_step(x, self.h[index], self.z[index], self.started[index])
        else:
            e, beta = x[:, 0].float(), torch.ones(len(index), device=self.device)
        self.stream[index], self.e[index] = x[:, 0], e
        return x[:, 0].float().cpu().numpy(), beta.float().cpu().numpy()

    @torch.no_grad()
    def act(self, rows: np.ndarray, z: np.ndarray | None) -> np.ndarray:
        """New codes z for `rows` (or None: keep theirs), then e + U(z) e through the layers
        above and the action head; returns a_t and moves the rows one step on."""
        index = self._index(rows)
        if z is not None:
            self.z[index] = torch.as_tensor(np.asarray(z, dtype=np.float32), device=self.device)
        x = self.stream[index][:, None]
        if self.control:
            x, self.h[index] = self.meta.control_step(
                x, self.e[index], self.h[index], self.z[index]
            )
        self.started[index] = True
        x = self._blocks(range(self.layer, self.base.config.depth), x, rows, index)
        moves = None if self.moves is None else self.moves[index][:, None]
        logits = self.base.heads(x, None, moves).action[:, 0]
        action = self._choose(logits)
        self.last_log_prob = self.action_distribution(logits).log_prob(action)
        self.previous[index] = action
        self.cache.lengths[index] += 1
        return action.cpu().numpy()

    # -- the base model, one step per row -------------------------------------------------

    def _index(self, rows: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(rows, dtype=np.int64), device=self.device)

    def _blocks(
        self, layers: range, x: torch.Tensor, rows: np.ndarray, index: torch.Tensor
    ) -> torch.Tensor:
        """The residual stream x (n, 1, width) of `rows` after blocks `layers`, as the base
        model's Block computes it, attending over each row's own episode.

        When at least half the rows move, attention runs over every row's cache in place
        (the others' results are dropped): cheaper than copying the moving rows' keys."""
        if not len(layers):
            return x
        positions = self.cache.lengths[index]
        if len(rows) == self._num_envs and np.array_equal(rows, self._every):
            mode, lengths = "whole", positions
        elif 2 * len(rows) >= self._num_envs:
            mode, lengths = "dense", self.cache.lengths
        else:
            mode, lengths = "sparse", positions
        span = self.cache.span(lengths)
        slots = torch.arange(span, device=self.device)
        mask = (slots[None] <= lengths[:, None])[:, None, None, :]  # (rows, 1, 1, span)
        for layer in layers:
            block = self.base.blocks[layer]
            normed = block.attention_norm(x)
            x = x + self._attention(
                layer, block.attention, normed, index, mode, positions, span, mask
            )
            x = x + block.mlp(block.mlp_norm(x))
        return x

    def _attention(
        self,
        layer: int,
        module: SelfAttention,
        x: torch.Tensor,
        index: torch.Tensor,
        mode: str,
        positions: torch.Tensor,
        span: int,
        mask: torch.Tensor,
    ) -> torch.Tensor:
        qkv = rearrange(module.qkv(x), "b t (three h d) -> three b h t d", three=3, h=module.heads)
        q, k, v = qkv
        q = rotate_rows(q, positions, module.inv_freq)
        k = rotate_rows(k, positions, module.inv_freq)
        keys, values = self.cache.write(layer, index, positions, k, v, span)
        if mode == "whole":
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        elif mode == "dense":
            every = q.new_zeros((self._num_envs, *q.shape[1:])).index_copy_(0, index, q)
            y = F.scaled_dot_product_attention(every, keys, values, attn_mask=mask)
            y = y.index_select(0, index)
        else:  # index_select: 5x faster than keys[index] here
            keys, values = keys.index_select(0, index), values.index_select(0, index)
            y = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask)
        return module.out(rearrange(y, "b h t d -> b t (h d)"))

    def action_distribution(self, action: torch.Tensor) -> torch.distributions.Distribution:
        """The base model's action distribution at the agent's temperature."""
        return self.base.action_distribution(action, self.temperature)

    def _choose(self, action: torch.Tensor) -> torch.Tensor:
        if self.base.discrete:
            if not self.sample:
                return action.argmax(-1)
            probs = torch.softmax(action.float() / self.temperature, -1)
            return torch.multinomial(probs, 1, generator=self.generator)[:, 0]
        if not self.sample:
            return action.float()
        noise = torch.randn(action.shape, generator=self.generator, device=self.device)
        return action.float() + self.temperature * self.base.log_std.exp() * noise
