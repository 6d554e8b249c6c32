"""A bridge to metacontroller-pytorch (`from metacontroller import Transformer,
MetaController`, 0.3.x), the reference implementation of Kobayashi et al. 2025: a user's
own trained pair drives our envs through our latent wrapper and our internal RL.

- `MCPController(transformer, meta_controller, num_envs)`: a `LatentController`
  (metacontroller_envs.wrappers.latent) over the library's Transformer (lower body,
  MetaController, upper body) for N rows at different time steps.
- `library_batch(batch)` / `library_batches(data, ...)`: our Minari datasets
  (metacontroller_envs.data.load_episodes(...).padded(idx)) as the library's
  `Transformer.forward(state, actions, episode_lens=...)` inputs, for its BC phase
  (`force_behavior_cloning=True`) and its discovery phase (`discovery_phase=True`).
- `save_pair` / `load_pair`: the trained pair in one file (state dicts and constructor
  arguments, read back with torch.load(weights_only=True)); `factory` reads that file from
  $MCP_BRIDGE_CHECKPOINT, for `--controller metacontroller_agents.mcp_bridge:factory`.

What of the library this uses. Public: the classes, `Transformer.forward` for training and
for checking, and the Transformer's submodules by attribute (`state_embed`, `action_embed`,
`lower_body`, `upper_body`, `action_readout`). Internals, where there is no public way:

- the MetaController's step. `MetaController.forward` cannot take a code from outside: it
  draws z from its own action proposer (a second transformer, on the global torch RNG) and
  binarises beta outside discovery. So a step here runs the submodules its forward runs on
  one token, in its order (metacontroller.py, `MetaController.forward`, the `seq_len == 1`
  branch): `summary_gru`, `model_to_meta`, `switching_unit`, `to_switching_unit_beta` with
  `switch_temperature` (beta unbinarised, as with hard_switch=False, and 1 at an episode's
  first step), then the code: z_t = the new code where one is given, else z_t-1 (its hard
  switch at 0.5), bounded by `latent_action_barrier_scale` as it bounds its samples,
  through `decoder`, `to_hyper_network_weights` and its einsum ('... d1, ... d1 d2 -> ...
  d1', as written there) into the control signal added to the stream.
  tests/test_mcp_bridge.py checks beta and the control signal against
  `MetaController.forward` itself, and e_t against `Transformer.forward`.
- `save_pair` reads the constructor arguments from `_config`, where the library's
  `save_load` decorator records them. Its own `save` stores them as a pickle inside the
  checkpoint, unpickled on load; this file keeps them as plain values, for weights_only.
- the per-row caches below are built from x_transformers' cache dataclasses.

The binary-mapper variant (`MetaControllerWithBinaryMapper`) is not bridged.

Rows are batched. The library's caches (x_transformers' `LayerIntermediates`) hold one
length for the whole batch, so each row's keys and values are kept here, one length per
row, and every call assembles the moving rows' caches right-aligned to the longest, with
x_transformers' own left-padding argument (`seq_start_pos`) masking the slots in front of a
shorter row: one call per step for all the moving rows. A row's results equal its results
alone up to float rounding because the library's positions are relative (polar, as
`Transformer` builds its bodies; rotary and the relative biases are too): a row sees its
own steps at the same distances wherever they sit. The cache object is built from
x_transformers' `LayerIntermediates` and `Intermediates` dataclasses (`cached_kv`,
`cache_length`); a body whose layers cache anything else (hybrid RNN layers, latent
attention) is refused at its first step.

Torch and the library stay in metacontroller_agents; the library is imported on first use
(it imports JAX and sets JAX's x64 flag), so nothing imports it but this module.
"""

from __future__ import annotations

import copy
import importlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from metacontroller_agents.checkpoint import read_weights_only
from metacontroller_envs.checks import check_count

if TYPE_CHECKING:
    from metacontroller import MetaController, Transformer

    from metacontroller_envs.data.episodes import EpisodeArrays, PaddedBatch

#: The environment variable `factory` reads the checkpoint path from.
ENV_VAR = "MCP_BRIDGE_CHECKPOINT"
#: Optional: the torch device `factory` puts the pair on (default "cpu").
DEVICE_VAR = "MCP_BRIDGE_DEVICE"
#: What `save_pair` writes under "format" (and `load_pair` checks).
FORMAT = "metacontroller-envs/mcp-bridge"
FORMAT_VERSION = 1
INSTALL = 'pip install "metacontroller-envs[mcp]"'


def library() -> Any:
    """The `metacontroller` module, imported on first use; an ImportError that says how to
    install it."""
    try:
        return importlib.import_module("metacontroller")
    except ImportError as error:
        raise ImportError(
            f"the bridge needs metacontroller-pytorch 0.3 ({INSTALL}): {error}"
        ) from None


def library_version() -> str | None:
    """metacontroller-pytorch's installed version (None if unknown)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("metacontroller-pytorch")
    except PackageNotFoundError:
        return None


# -- the data bridge ------------------------------------------------------------------------


def library_batch(
    batch: PaddedBatch, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """A padded batch of our episodes as `Transformer.forward`'s keyword inputs:
    state (B, L, obs_dim) float32 (the observation before each step, flattened), actions
    (B, L) int64 (discrete) and episode_lens (B,) int64. The library shifts the actions
    itself (the action before step t is embedded at t) and masks past each episode's
    length, so: `transformer(**inputs, force_behavior_cloning=True)` for BC,
    `transformer(**inputs, meta_controller=meta, discovery_phase=True)` for discovery."""
    observations = np.asarray(batch.observations)
    actions = np.asarray(batch.actions)
    lengths = np.asarray(batch.lengths)
    if observations.ndim < 3 or actions.ndim != 2:
        raise ValueError(
            "batch must be a PaddedBatch of discrete actions: observations (B, L + 1, ...) "
            f"and actions (B, L), got {observations.shape} and {actions.shape}"
        )
    b, steps = actions.shape
    if observations.shape[:2] != (b, steps + 1) or lengths.shape != (b,):
        raise ValueError(
            f"observations {observations.shape}, actions {actions.shape} and lengths "
            f"{lengths.shape} do not match: a PaddedBatch has (B, L + 1, ...), (B, L), (B,)"
        )
    if not np.issubdtype(actions.dtype, np.integer):
        raise ValueError(f"the bridge takes discrete actions (integers), got {actions.dtype}")
    if lengths.min(initial=1) < 1 or lengths.max(initial=0) > steps:
        raise ValueError(f"episode lengths must be in [1, {steps}], got {lengths.tolist()}")
    state = observations[:, :steps].reshape(b, steps, -1)
    return {
        "state": torch.as_tensor(state, dtype=torch.float32, device=device),
        "actions": torch.as_tensor(actions, dtype=torch.long, device=device),
        "episode_lens": torch.as_tensor(lengths, dtype=torch.long, device=device),
    }


def library_batches(
    data: EpisodeArrays,
    batch_size: int,
    steps: int,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Iterator[dict[str, torch.Tensor]]:
    """`steps` batches of `batch_size` episodes drawn at random (numpy seeded by `seed`,
    so the same seed gives the same batches) from a dataset loaded with
    metacontroller_envs.data.load_episodes, each as `library_batch` makes it."""
    check_count("batch_size", batch_size)
    check_count("steps", steps)
    if data.num_episodes < 1:
        raise ValueError(f"dataset {data.dataset_id} holds no episodes")
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        indices = rng.choice(data.num_episodes, batch_size, replace=data.num_episodes < batch_size)
        yield library_batch(data.padded(indices), device)


# -- saving a pair ---------------------------------------------------------------------------


def _plain(value: Any, where: str) -> Any:
    """`value` if it is made of what torch.load(weights_only=True) reads back (None, bool,
    int, float, str, lists, tuples, str-keyed dicts), else a ValueError naming `where`."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError(f"{where} has non-string keys")
        return {k: _plain(v, f"{where}.{k}") for k, v in value.items()}
    raise ValueError(
        f"{where} is a {type(value).__name__}, which a weights_only checkpoint cannot hold: "
        "build the module from plain arguments (dicts of numbers and strings) or pass "
        "transformer_kwargs / meta_kwargs to save_pair"
    )


def _recorded_arguments(module: torch.nn.Module, name: str) -> dict[str, Any]:
    """The constructor arguments the library's save_load decorator recorded on `module`."""
    config = getattr(module, "_config", None)
    if not (isinstance(config, tuple) and len(config) == 2):
        raise ValueError(
            f"the {name} carries no recorded constructor arguments (metacontroller's "
            f"save_load `_config`): pass {name}_kwargs to save_pair"
        )
    args, kwargs = config
    return {"args": list(args), "kwargs": dict(kwargs)}


def save_pair(
    path: str | Path,
    transformer: Transformer,
    meta_controller: MetaController,
    transformer_kwargs: dict[str, Any] | None = None,
    meta_kwargs: dict[str, Any] | None = None,
) -> Path:
    """Write a trained pair to `path`: both state dicts and the constructor arguments
    (by default those the library recorded when the modules were built; a module given
    as an argument, e.g. the Transformer's own meta_controller, is left out). One file, so
    one path (in $MCP_BRIDGE_CHECKPOINT) names the whole controller."""
    lib = library()
    if not isinstance(transformer, lib.Transformer):
        raise TypeError(
            f"transformer must be a metacontroller.Transformer, got {transformer!r:.80}"
        )
    if not isinstance(meta_controller, lib.MetaController):
        raise TypeError(
            f"meta_controller must be a metacontroller.MetaController, got {meta_controller!r:.80}"
        )
    arguments = {}
    for name, module, given in (("transformer", transformer, transformer_kwargs),
                                ("meta", meta_controller, meta_kwargs)):  # fmt: skip
        recorded = (
            _recorded_arguments(module, name)
            if given is None
            else {"args": [], "kwargs": dict(given)}
        )
        recorded["kwargs"].pop("meta_controller", None)  # saved on its own
        arguments[name] = _plain(copy.deepcopy(recorded), f"{name} arguments")
    state = {
        k: v for k, v in transformer.state_dict().items() if not k.startswith("meta_controller.")
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "library_version": library_version(),
            "transformer": {"arguments": arguments["transformer"], "state_dict": state},
            "meta": {"arguments": arguments["meta"], "state_dict": meta_controller.state_dict()},
        },
        path,
    )
    return path


def load_pair(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[Transformer, MetaController]:
    """The (Transformer, MetaController) that `save_pair` wrote, in eval mode on `device`;
    a ValueError that says what is wrong with a missing, corrupt or foreign file."""
    path = Path(path)
    saved = read_weights_only(path, device)
    if not isinstance(saved, dict) or saved.get("format") != FORMAT:
        raise ValueError(f"{path} is not a pair written by metacontroller_agents.mcp_bridge."
                         "save_pair")  # fmt: skip
    if saved.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {saved.get('format_version')!r}; this "
                         f"bridge reads {FORMAT_VERSION}")  # fmt: skip
    lib = library()
    modules = []
    for name, klass in (("transformer", lib.Transformer), ("meta", lib.MetaController)):
        part = saved.get(name)
        try:
            arguments = part["arguments"]
            module = klass(*arguments["args"], **arguments["kwargs"])
            module.load_state_dict(part["state_dict"])
        except (KeyError, TypeError, RuntimeError, AssertionError, ValueError) as error:
            raise ValueError(
                f"cannot rebuild the {name} from {path} (saved with metacontroller-pytorch "
                f"{saved.get('library_version')}, installed {library_version()}): "
                f"{type(error).__name__}: {error}"
            ) from None
        modules.append(module.to(device).eval())
    return modules[0], modules[1]


def factory(num_envs: int = 1) -> MCPController:
    """`module:factory` for our command line (`--controller
    metacontroller_agents.mcp_bridge:factory`): the pair in the file $MCP_BRIDGE_CHECKPOINT
    names (a factory string carries no path), on $MCP_BRIDGE_DEVICE (default cpu)."""
    path = os.environ.get(ENV_VAR, "").strip()
    if not path:
        raise ValueError(
            f"metacontroller_agents.mcp_bridge:factory reads the pair from ${ENV_VAR}, which "
            f"is not set: export {ENV_VAR}=path/to/pair.pt (written by mcp_bridge.save_pair)"
        )
    if not Path(path).is_file():
        raise ValueError(f"${ENV_VAR} names {path}, which does not exist (write it with "
                         "metacontroller_agents.mcp_bridge.save_pair)")  # fmt: skip
    device = os.environ.get(DEVICE_VAR, "cpu")
    transformer, meta = load_pair(path, device)
    return MCPController(transformer, meta, num_envs, device=device)


# -- the controller --------------------------------------------------------------------------


class _RowCache:
    """Keys and values of one x_transformers Decoder for N rows, one length each: row i's
    steps of its current episode in slots 0..lengths[i]-1 (allocated on first use, grown by
    doubling: the library's bodies have no maximum length)."""

    def __init__(self, rows: int, device: torch.device) -> None:
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)
        self.keys: list[torch.Tensor] = []  # per attention layer: (N, capacity, heads, dim)
        self.values: list[torch.Tensor] = []
        self.layer_types: list[str | None] = []

    def assemble(self, index: torch.Tensor) -> tuple[Any, torch.Tensor] | None:
        """The rows' caches right-aligned to the longest as one x_transformers cache, and
        each row's first real slot (seq_start_pos); None when every row starts afresh."""
        lengths = self.lengths[index]
        longest = int(lengths.max())
        if longest == 0:
            return None
        from x_transformers.attend import Intermediates
        from x_transformers.x_transformers import LayerIntermediates

        start = longest - lengths
        slots = (torch.arange(longest, device=index.device)[None] - start[:, None]).clamp(min=0)
        layers = []
        for keys, values, layer_type in zip(self.keys, self.values, self.layer_types,
                                            strict=True):  # fmt: skip
            k = keys[index[:, None], slots].transpose(1, 2)  # (n, heads, longest, dim)
            v = values[index[:, None], slots].transpose(1, 2)
            layers.append(Intermediates(cached_kv=(k, v), layer_type=layer_type))
        return LayerIntermediates(attn_intermediates=layers, cache_length=longest), start

    def store(self, index: torch.Tensor, intermediates: Any) -> None:
        """Keep the new step's keys and values (the last slot) at each row's length."""
        attention = intermediates.attn_intermediates or []
        positions = self.lengths[index]
        needed = int(positions.max()) + 1
        for layer, inter in enumerate(attention):
            kv = inter.cached_kv
            if not (isinstance(kv, tuple) and len(kv) == 2 and all(t.ndim == 4 for t in kv)):
                raise NotImplementedError(
                    "the bridge caches plain self-attention keys and values (batch, heads, "
                    f"time, dim); this body's layer {layer} caches {type(kv).__name__}"
                )
            k, v = kv[0][:, :, -1], kv[1][:, :, -1]  # (n, heads, dim)
            if layer == len(self.keys):
                shape = (len(self.lengths), max(64, needed), *k.shape[1:])
                self.keys.append(k.new_zeros(shape))
                self.values.append(v.new_zeros(shape))
                self.layer_types.append(inter.layer_type)
            if needed > self.keys[layer].shape[1]:
                grow = max(needed, 2 * self.keys[layer].shape[1])
                for store in (self.keys, self.values):
                    old = store[layer]
                    new = old.new_zeros((old.shape[0], grow, *old.shape[2:]))
                    new[:, : old.shape[1]] = old
                    store[layer] = new
            self.keys[layer][index, positions] = k
            self.values[layer][index, positions] = v


class MCPController:
    """metacontroller-pytorch's Transformer and MetaController as a LatentController
    (metacontroller_envs.wrappers.latent) for `num_envs` rows.

    observe(o_t): the lower body on o_t (and the row's previous action), then the switching
    unit: e_t, the residual stream the MetaController reads, and beta_t, its switch
    probability (1 at an episode's first step). act(z_t): the code (new, or the row's
    last), the hypernetwork's control signal on e_t, the upper body and the action readout:
    greedy actions (argmax), or with `sample` drawn from the readout's softmax with a torch
    generator seeded by `seed` and by reset(seed=). Every row keeps its own caches, GRU
    states, code and previous action, so rows may sit at any step; the modules run in eval
    mode under torch.no_grad. Discrete actions and continuous observations (an Embed of
    num_continuous inputs) only; a conditioned Transformer (dim_condition) is refused.
    """

    def __init__(
        self,
        transformer: Transformer,
        meta_controller: MetaController,
        num_envs: int = 1,
        device: str | torch.device = "cpu",
        sample: bool = False,
        seed: int = 0,
    ) -> None:
        lib = library()
        check_count("num_envs", num_envs)
        if not isinstance(transformer, lib.Transformer):
            raise TypeError(f"transformer must be a metacontroller.Transformer, got "
                            f"{type(transformer).__name__}")  # fmt: skip
        if not isinstance(meta_controller, lib.MetaController):
            raise TypeError(f"meta_controller must be a metacontroller.MetaController, got "
                            f"{type(meta_controller).__name__}")  # fmt: skip
        width = transformer.lower_body.dim
        if meta_controller.dim_model != width:
            raise ValueError(f"the MetaController reads width {meta_controller.dim_model}; the "
                             f"Transformer's residual stream is {width} wide")  # fmt: skip
        for name in ("lower_body", "upper_body"):
            if getattr(transformer, name).need_condition:
                raise ValueError("the bridge does not condition the Transformer (its "
                                 f"{name} needs dim_condition inputs)")  # fmt: skip
        readout, embed = transformer.action_readout, transformer.state_embed
        sets = getattr(readout, "num_discrete_sets", 0)
        if readout is None or readout.num_continuous or sets != 1:
            raise ValueError("the bridge needs one discrete action set (action_embed_readout="
                             "dict(num_discrete=n)), as our envs' Discrete spaces")  # fmt: skip
        if not embed.num_continuous or getattr(embed, "has_discrete", False):
            raise ValueError("the bridge feeds observations as continuous vectors "
                             "(state_embed_readout=dict(num_continuous=obs_dim))")  # fmt: skip
        self.device = torch.device(device)
        self.transformer = transformer.to(self.device).eval()
        self.meta = meta_controller.to(self.device).eval()
        self.sample = sample
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.obs_dim = int(embed.num_continuous)
        n, meta = num_envs, self.meta
        self._num_envs = n
        self._latent_dim = int(meta.dim_latent)
        self.width = int(width)
        self.lower, self.upper = _RowCache(n, self.device), _RowCache(n, self.device)
        self.summary = torch.zeros(n, width, device=self.device)  # h_t-1 of summary_gru
        self.switch = torch.zeros(n, meta.switching_unit.hidden_size, device=self.device)
        self.z = torch.zeros(n, self._latent_dim, device=self.device)  # z_t-1, gated
        self.previous = torch.zeros(n, dtype=torch.long, device=self.device)
        self.started = torch.zeros(n, dtype=torch.bool, device=self.device)
        # what observe computed for act: e_t, and the GRU states after step t
        self.stream = torch.zeros(n, 1, width, device=self.device)
        self.next_summary = torch.zeros_like(self.summary)
        self.next_switch = torch.zeros_like(self.switch)
        self.observed = torch.zeros(n, dtype=torch.bool, device=self.device)

    # -- the LatentController protocol ------------------------------------------------------

    @property
    def num_envs(self) -> int:
        return self._num_envs

    @property
    def latent_dim(self) -> int:
        return self._latent_dim

    @property
    def observation_size(self) -> int:
        return self.width

    @torch.no_grad()
    def reset(self, rows: np.ndarray, seed: int | None = None) -> None:
        """Forget the rows' episodes (caches, GRU states, code, previous action)."""
        if np.asarray(rows).size == 0:
            return
        index = self._index(rows)
        for cache in (self.lower, self.upper):
            cache.lengths[index] = 0
        for state in (self.summary, self.switch, self.z, self.previous):
            state[index] = 0
        self.started[index] = False
        self.observed[index] = False
        if seed is not None:
            self.generator.manual_seed(int(seed))

    @torch.no_grad()
    def observe(self, observations: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The lower body on o_t, then the switching unit: (e_t float32 (n, width), beta_t
        (n,) in [0, 1])."""
        index = self._index(rows)
        obs = np.asarray(observations)
        if obs.shape[:1] != (len(index),) or int(np.prod(obs.shape[1:])) != self.obs_dim:
            raise ValueError(
                f"observations must be ({len(index)}, ...) with {self.obs_dim} values per "
                f"row (the state embed's inputs), got {obs.shape}"
            )
        t = self.transformer
        state = torch.as_tensor(obs.reshape(len(index), 1, -1), dtype=torch.float32,
                                device=self.device)  # fmt: skip
        embed = t.state_embed(state)
        started = self.started[index]
        if t.action_embed is not None and bool(started.any()):  # no action before step 0
            action = t.action_embed(self.previous[index][:, None])
            embed = embed + torch.where(started[:, None, None], action, torch.zeros_like(action))
        e = self._body(t.lower_body, self.lower, embed, index)  # (n, 1, width)
        meta, summary, switch = self.meta, self.summary[index], self.switch[index]
        _, next_summary = meta.summary_gru(e, summary[None].contiguous())
        meta_previous = meta.model_to_meta(summary)  # from h_t-1, as meta_embed_prev
        switch_in = torch.cat((e[:, 0], meta_previous, self.z[index]), -1)[:, None]
        out, next_switch = meta.switching_unit(switch_in, switch[None].contiguous())
        logit = meta.to_switching_unit_beta(out)[:, 0, 0]
        beta = (logit / meta.switch_temperature).sigmoid()
        beta = torch.where(started, beta, torch.ones_like(beta))
        self.stream[index] = e
        self.next_summary[index], self.next_switch[index] = next_summary[0], next_switch[0]
        self.observed[index] = True
        return e[:, 0].float().cpu().numpy(), beta.float().cpu().numpy()

    @torch.no_grad()
    def act(self, rows: np.ndarray, z: np.ndarray | None) -> np.ndarray:
        """New codes z (n, latent_dim) for the rows (None: keep theirs), the control signal
        on e_t, the upper body and the readout: the rows' actions (n,) int64."""
        index = self._index(rows)
        if not bool(self.observed[index].all()):
            raise RuntimeError("act() on a row whose step was not observed: call observe() "
                               "first")  # fmt: skip
        if z is not None:
            codes = np.asarray(z, dtype=np.float32)
            if codes.shape != (len(index), self._latent_dim) or not np.isfinite(codes).all():
                raise ValueError(f"z must be finite floats of shape ({len(index)}, "
                                 f"{self._latent_dim}), got {codes.shape}")  # fmt: skip
            self.z[index] = torch.as_tensor(codes, device=self.device)
        e = self.stream[index]
        x = e + self.control_signal(e, self.z[index])
        t = self.transformer
        attended = self._body(t.upper_body, self.upper, x, index)
        logits = t.action_readout(attended)[:, 0].float()  # (n, actions)
        if self.sample:
            probs = torch.softmax(logits, -1)
            action = torch.multinomial(probs, 1, generator=self.generator)[:, 0]
        else:
            action = logits.argmax(-1)
        self.summary[index], self.switch[index] = self.next_summary[index], self.next_switch[index]
        self.previous[index] = action
        self.started[index] = True
        self.observed[index] = False
        self.lower.lengths[index] += 1
        self.upper.lengths[index] += 1
        return action.cpu().numpy()

    # -- the library's pieces ---------------------------------------------------------------

    @torch.no_grad()
    def control_signal(self, e: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """The MetaController's control signal for stream e (n, 1, width) under codes z
        (n, latent_dim), as its forward computes it from the gated code."""
        from einops import einsum

        meta = self.meta
        if meta.latent_action_barrier_scale is not None:
            scale = meta.latent_action_barrier_scale
            z = scale * (z / scale).tanh()
        w1, w2 = meta.to_hyper_network_weights(meta.decoder(z[:, None]))
        weight = einsum(w1, w2, "... i r, ... j r -> ... i j")
        return einsum(e, weight, "... d1, ... d1 d2 -> ... d1")

    def _body(self, body: Any, cache: _RowCache, x: torch.Tensor, index: torch.Tensor) -> Any:
        """One step of an x_transformers Decoder for the rows, each over its own cache."""
        assembled = cache.assemble(index)
        if assembled is None:
            out, intermediates = body(x, return_hiddens=True)
        else:
            layers, start = assembled
            out, intermediates = body(x, cache=layers, seq_start_pos=start, return_hiddens=True)
        cache.store(index, intermediates)
        return out

    def _index(self, rows: np.ndarray) -> torch.Tensor:
        array = np.asarray(rows)
        if (array.ndim != 1 or not np.issubdtype(array.dtype, np.integer) or
                array.size == 0 or array.min() < 0 or array.max() >= self._num_envs or
                len(np.unique(array)) != array.size):  # fmt: skip
            raise ValueError(f"rows must be distinct integers in [0, {self._num_envs}), "
                             f"got {array.tolist()!r:.80}")  # fmt: skip
        return torch.as_tensor(array.astype(np.int64), device=self.device)
