"""The metacontroller's latent code z as a Gymnasium action space.

One step of `LatentActionWrapper` hands a code z to a frozen base model whose residual
stream a MetaController rewrites (e <- e + U(z) e). The controlled model then acts in the
wrapped env primitive step by primitive step until the MetaController's switching unit
fires (beta_t > threshold) or the episode ends: the temporally abstract action of the
paper's internal RL (Kobayashi et al. 2025). The reward is summed over the primitive
steps; `info["primitive_steps"]` counts them.

The suite never imports torch: the wrappers talk to the agent through `LatentController`,
a small Protocol over numpy arrays, which metacontroller_agents.latent.LatentAgent implements.

Timing of one primitive step t, split in two because the policy chooses z_t after seeing
e_t (pi(z_t | e_1..t)) and z_t already acts at step t:

    observe(o_t)  -> e_t (residual stream at the controlled layer), beta_t = f(e_t, h, z_t-1)
    [if beta_t > threshold or the episode starts: stop; the caller picks z_t]
    act(z_t)      -> a_t from the rest of the model on e_t + U(z_t) e_t;  env.step(a_t)

The rule lives once, in `_LatentEpisodes`, for N episodes in lock-step: the single-env
wrapper is its N = 1 case; `LatentActionVectorWrapper` runs N episodes with one batched
model call per primitive step.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

OBSERVATIONS = ("residual", "env")

#: The default bound of each coordinate of z: the prior N(0, I) puts 99.7% of its mass
#: inside +-3, and SB3 needs a finite Box.
Z_BOUND = 3.0


@runtime_checkable
class LatentController(Protocol):
    """What the latent-action wrappers need from an agent, for N parallel episodes (rows).

    A row's step is split in two calls, `observe` then `act`, so that a new code can be
    chosen between them. `rows` are integer arrays of distinct row indices; arrays in and
    out follow their order. Implemented by metacontroller_agents.latent.LatentAgent (torch
    stays there).
    """

    @property
    def num_envs(self) -> int:
        """N: the episodes it runs side by side."""
        ...

    @property
    def latent_dim(self) -> int:
        """n_z: the size of a code z."""
        ...

    @property
    def observation_size(self) -> int:
        """Width of the residual embedding e_t that `observe` returns."""
        ...

    def reset(self, rows: np.ndarray, seed: int | None = None) -> None:
        """Forget the episodes of `rows` (history, cache, code): their next `observe`
        starts a new episode. A seed reseeds any sampling the controller does."""
        ...

    def observe(self, observations: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Read o_t (len(rows), *obs_shape), the observations the env returned, at reset and
        after every primitive step, the terminal one included; returns e_t (len(rows),
        observation_size) float32 and beta_t (len(rows),) float, a probability in [0, 1]
        that is 1 at an episode's first step. Rows sit at different time steps: all state
        is per row. A controller whose observe also takes an `infos` keyword receives the
        envs' infos there (a list of dicts, in the order of `rows`: reset's info at the
        first step), e.g. the task of a task-conditioned model; one without it never
        does."""
        ...

    def act(self, rows: np.ndarray, z: np.ndarray | None) -> np.ndarray:
        """Finish the step last observed: with z (len(rows), n_z) float32, these rows take
        the new codes; with None they keep theirs. Returns the primitive actions a_t, an
        array of len(rows) actions of the env's action space (for a Discrete space,
        integers)."""
        ...


def takes_infos(controller: LatentController) -> bool:
    """Whether the controller's observe takes the envs' infos (an `infos` keyword)."""
    try:
        parameters = inspect.signature(controller.observe).parameters
    except (TypeError, ValueError):  # no signature to read: call it the plain way
        return False
    return "infos" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def observe(
    controller: LatentController,
    observations: np.ndarray,
    rows: np.ndarray,
    infos: list[dict[str, Any]] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """controller.observe, with the envs' infos where it takes them (the one place that
    decides)."""
    if infos is not None and takes_infos(controller):
        return controller.observe(observations, rows, infos=infos)
    return controller.observe(observations, rows)


def switch_fires(beta: np.ndarray, threshold: float) -> np.ndarray:
    """The switch rule: beta > threshold; threshold 0 fires at every step."""
    if threshold == 0.0:
        return np.ones(len(beta), dtype=bool)
    return np.asarray(beta) > threshold


def check_codes(z: Any, shape: tuple[int, ...], bound: float | None) -> np.ndarray:
    """z as float32 of `shape`, clipped to +-bound; a ValueError for anything else."""
    try:
        array = np.asarray(z, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            f"z must be a float array of shape {shape}, got {type(z).__name__} {z!r:.80}"
        ) from None
    if array.shape != shape:
        raise ValueError(
            f"z must be a float array of shape {shape} (the code size n_z is {shape[-1]}), "
            f"got shape {array.shape}"
        )
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[:4].tolist()
        raise ValueError(
            f"z must be finite, got NaN or inf at index {bad}: {array.tolist()!r:.200}"
        )
    if bound is not None:
        array = np.clip(array, -bound, bound)
    return array.astype(np.float32)


def _check_options(
    controller: Any, num_envs: int, threshold: float, observation: str, z_bound: float | None
) -> None:
    if not isinstance(controller, LatentController):
        raise TypeError(
            "controller must implement metacontroller_envs.wrappers.LatentController "
            f"(num_envs, latent_dim, observation_size, reset, observe, act), got {controller!r}"
        )
    if controller.num_envs != num_envs:
        raise ValueError(
            f"the controller runs {controller.num_envs} episodes side by side; these wrappers "
            f"need one per env ({num_envs})"
        )
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold!r}")
    if observation not in OBSERVATIONS:
        raise ValueError(f"observation must be one of {list(OBSERVATIONS)}, got {observation!r}")
    if z_bound is not None and not (np.isfinite(z_bound) and z_bound > 0):
        raise ValueError(f"z_bound must be a positive number or None, got {z_bound!r}")


class _LatentEpisodes:
    """N episodes of `envs` (one env per row) driven by one controller: the stepping rule.

    Rows that reach their next decision point wait for the others, so the envs are
    stepped one by one (a Gymnasium VectorEnv cannot hold some envs still) while the
    controller serves all the moving rows in one call.
    """

    def __init__(
        self,
        envs: Sequence[gym.Env],
        controller: LatentController,
        threshold: float,
        observation: str,
        z_bound: float | None,
    ) -> None:
        self.envs = list(envs)
        self.controller = controller
        self.threshold = float(threshold)
        self.residual = observation == "residual"
        self.z_bound = z_bound
        n = len(self.envs)
        self.embedding = np.zeros((n, controller.observation_size), dtype=np.float32)
        self.env_obs: list[Any] = [None] * n
        self.live = np.zeros(n, dtype=bool)  # in an episode, at a decision point

    def action_space(self) -> gym.spaces.Box:
        bound = np.inf if self.z_bound is None else self.z_bound
        return gym.spaces.Box(-bound, bound, (self.controller.latent_dim,), np.float32)

    def observation_space(self) -> gym.spaces.Space:
        if not self.residual:
            return self.envs[0].observation_space
        width = self.controller.observation_size
        return gym.spaces.Box(-np.inf, np.inf, (width,), np.float32)

    def observation(self, row: int) -> Any:
        return self.embedding[row].copy() if self.residual else self.env_obs[row]

    def reset(
        self,
        rows: np.ndarray,
        seeds: Sequence[int | None],
        options: dict[str, Any] | None,
        controller_seed: int | None,
    ) -> list[dict[str, Any]]:
        """Start new episodes in `rows`; returns their infos (primitive_steps 0, so every
        info of a vector env of these wrappers has the key)."""
        infos = []
        for row, seed in zip(rows, seeds, strict=True):
            self.env_obs[row], info = self.envs[row].reset(seed=seed, options=options)
            infos.append({**info, "primitive_steps": 0})
        self.controller.reset(rows, seed=controller_seed)
        observations = np.stack([self.env_obs[row] for row in rows])
        self.embedding[rows], _ = observe(self.controller, observations, rows, infos)
        self.live[rows] = True
        return infos

    def step(self, rows: np.ndarray, z: np.ndarray) -> dict[str, Any]:
        """Apply codes z (len(rows), n_z) to `rows` and play each until its switch fires or
        its episode ends. Returns per-row arrays (in the order of `rows`): reward,
        terminated, truncated, primitive_steps, and the envs' last infos."""
        if not self.live[rows].all():
            raise RuntimeError(
                "step() on an episode that has not started or is over: call reset() first"
            )
        n = len(rows)
        reward = np.zeros(n)
        terminated, truncated = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        steps = np.zeros(n, dtype=np.int64)
        infos: list[dict[str, Any]] = [{} for _ in range(n)]
        moving = np.arange(n)  # positions in `rows` still inside this step
        codes: np.ndarray | None = z
        while moving.size:
            actions = self.controller.act(rows[moving], codes)
            codes = None  # rows that go on keep their code
            for k, j in enumerate(moving):
                row = rows[j]
                obs, r, terminated[j], truncated[j], infos[j] = self.envs[row].step(actions[k])
                self.env_obs[row] = obs
                reward[j] += float(r)
                steps[j] += 1
            ended = terminated[moving] | truncated[moving]
            # the last observation of an ended episode is read too, for its embedding
            seen = moving if self.residual else moving[~ended]
            stop = ended.copy()
            if seen.size:
                observations = np.stack([self.env_obs[rows[j]] for j in seen])
                embedding, beta = observe(self.controller, observations, rows[seen],
                                          [infos[j] for j in seen])  # fmt: skip
                self.embedding[rows[seen]] = embedding
                fired = np.zeros(len(moving), dtype=bool)
                fired[np.searchsorted(moving, seen)] = switch_fires(beta, self.threshold)
                stop |= fired
            moving = moving[~stop]
        self.live[rows[terminated | truncated]] = False
        return {
            "reward": reward,
            "terminated": terminated,
            "truncated": truncated,
            "primitive_steps": steps,
            "infos": infos,
        }


class LatentActionWrapper(gym.Wrapper):
    """The metacontroller's code z as the action of one env.

    ## Action Space
    Box(-z_bound, z_bound, (n_z,), float32): a code z, clipped to the box (z_bound=None:
    an unbounded Box, z as given; SB3's check_env then fails, as SB3 needs finite bounds).
    A z of the wrong shape or with NaN/inf raises a ValueError.

    ## Observation
    observation="residual" (default): the base model's residual stream e_t entering the
    controlled layer, Box(-inf, inf, (width,), float32), at the step where the switch fired
    (at episode end: e of the final observation). observation="env": the env's own
    observation at that step.

    ## Step
    z acts until the switching unit fires (beta_t > threshold) or the episode ends; the
    reward is the sum over those primitive steps; info is the env's last info plus
    `primitive_steps`. threshold=0 gives one primitive step per step. There is no cap on
    primitive steps other than the env's own truncation.

    ## Seeding
    reset(seed=s) seeds the env with s and reseeds the controller's sampling with s.

    The controller is a live object, so `env.spec` cannot rebuild this wrapper: gymnasium's
    check_env passes with skip_render_check=True and skip_close_check=True (the two checks
    that rebuild from the spec). The agent package's latent env ids
    (metacontroller_agents.latent_envs) are built from plain arguments and pass with none.
    """

    def __init__(
        self,
        env: gym.Env,
        controller: LatentController,
        threshold: float = 0.5,
        observation: str = "residual",
        z_bound: float | None = Z_BOUND,
    ) -> None:
        _check_options(controller, 1, threshold, observation, z_bound)
        super().__init__(env)
        self._episodes = _LatentEpisodes([env], controller, threshold, observation, z_bound)
        self.action_space = self._episodes.action_space()
        self.observation_space = self._episodes.observation_space()
        self._row = np.zeros(1, dtype=np.int64)

    @property
    def controller(self) -> LatentController:
        return self._episodes.controller

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        (info,) = self._episodes.reset(self._row, [seed], options, seed)
        return self._episodes.observation(0), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        z = check_codes(action, self.action_space.shape, self._episodes.z_bound)
        out = self._episodes.step(self._row, z[None])
        info = {**out["infos"][0], "primitive_steps": int(out["primitive_steps"][0])}
        return (
            self._episodes.observation(0),
            float(out["reward"][0]),
            bool(out["terminated"][0]),
            bool(out["truncated"][0]),
            info,
        )


class LatentActionVectorWrapper(VectorEnv):
    """N envs driven through one batched controller: `LatentActionWrapper`'s rule, with one
    model call per primitive step for all the episodes still moving.

    Each step(z) with z (N, n_z) returns when every env has reached its next decision point
    (or ended its episode); infos are Gymnasium vector infos (arrays with `_key` masks)
    holding each env's last info and `primitive_steps`. Autoreset is NEXT_STEP: the step
    after an episode ends resets that env, ignores its z and returns its first
    observation with reward 0. reset(seed=s) seeds env i with s + i (a list: one seed per
    env) and the controller's sampling with s (a list: its first seed).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        envs: Sequence[gym.Env],
        controller: LatentController,
        threshold: float = 0.5,
        observation: str = "residual",
        z_bound: float | None = Z_BOUND,
    ) -> None:
        if len(envs) == 0:
            raise ValueError("give at least one env")
        _check_options(controller, len(envs), threshold, observation, z_bound)
        self._episodes = _LatentEpisodes(envs, controller, threshold, observation, z_bound)
        self.num_envs = len(envs)
        self.single_action_space = self._episodes.action_space()
        self.single_observation_space = self._episodes.observation_space()
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._needs_reset = np.zeros(self.num_envs, dtype=bool)
        self._all = np.arange(self.num_envs)

    @property
    def envs(self) -> list[gym.Env]:
        return self._episodes.envs

    @property
    def controller(self) -> LatentController:
        return self._episodes.controller

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[Any, dict[str, Any]]:
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
            controller_seed = seed
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"got {len(seeds)} seeds for {self.num_envs} envs")
            controller_seed = seeds[0]
        env_infos = self._episodes.reset(self._all, seeds, options, controller_seed)
        self._needs_reset[:] = False
        infos: dict[str, Any] = {}
        for row, info in enumerate(env_infos):
            infos = self._add_info(infos, info, row)
        return self._observations(), infos

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        z = check_codes(actions, self.action_space.shape, self._episodes.z_bound)
        reward = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: dict[str, Any] = {}
        restart = np.flatnonzero(self._needs_reset)
        if restart.size:
            started = self._episodes.reset(restart, [None] * len(restart), None, None)
            for row, info in zip(restart, started, strict=True):
                infos = self._add_info(infos, info, row)
        rows = np.flatnonzero(~self._needs_reset)
        if rows.size:
            out = self._episodes.step(rows, z[rows])
            reward[rows], terminated[rows] = out["reward"], out["terminated"]
            truncated[rows] = out["truncated"]
            for k, row in enumerate(rows):
                info = {**out["infos"][k], "primitive_steps": int(out["primitive_steps"][k])}
                infos = self._add_info(infos, info, row)
        self._needs_reset = terminated | truncated
        return self._observations(), reward, terminated, truncated, infos

    def _observations(self) -> Any:
        if self._episodes.residual:
            return self._episodes.embedding.copy()
        return np.stack([self._episodes.observation(row) for row in self._all])

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()
