"""`check_controller`: the LatentController's counterpart of gymnasium's `check_env`.

It drives a controller through real episodes of a suite env and checks the whole
contract of `LatentController`, each broken part with its own message:

- the three sizes are positive integers;
- `observe` returns e_t as float32 (rows, observation_size), finite, and beta_t (rows,),
  finite and in [0, 1], equal to 1 at an episode's first step;
- `act` returns one action per row, of the env's action space, with a new code z or
  with None (keep the code);
- rows are independent: a row played alone, or beside others in either order, returns
  the same actions, and e_t and beta_t equal up to float rounding;
- `reset(rows)` starts those rows' episodes afresh, and the same seed gives the same
  actions;
- a controller whose observe takes `infos` gets them, as the wrappers hand them.

Torch-free, like the wrappers: it sees the controller only through the Protocol.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from metacontroller_envs.checks import check_env_id
from metacontroller_envs.wrappers.latent import LatentController, observe

#: Primitive steps each check plays.
STEPS = 12


class ControllerError(AssertionError):
    """A controller that breaks the LatentController contract (the message says where)."""


def check_controller(
    controller: Any, env_id: str = "PinPad-v0", seed: int = 0, **env_kwargs: Any
) -> None:
    """Raise ControllerError at the first broken part of the contract; return None if the
    controller keeps all of it. Needs num_envs >= 2 (rows must be independent); the
    controller's observations are those of `env_id` (with `env_kwargs`)."""
    if not isinstance(controller, LatentController):
        fail("it does not implement LatentController (num_envs, latent_dim, "
             f"observation_size, reset, observe, act): {type(controller).__name__}")  # fmt: skip
    for name in ("num_envs", "latent_dim", "observation_size"):
        value = getattr(controller, name)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            fail(f"{name} must be a positive integer, got {value!r}")
    if controller.num_envs < 2:
        fail(f"check_controller needs num_envs >= 2 to check the rows, got {controller.num_envs}")
    check_env_id(env_id, env_kwargs)
    envs = [gym.make(env_id, **env_kwargs) for _ in range(2)]
    codes = np.random.default_rng(seed).standard_normal((STEPS, 2, controller.latent_dim))
    codes = codes.astype(np.float32)
    together = play(controller, envs, [0, 1], codes, seed)
    again = play(controller, envs, [0, 1], codes, seed)
    for row in (0, 1):
        if not np.array_equal(again[row]["actions"], together[row]["actions"]):
            fail("the same seed gave other actions: seed the controller's sampling in "
                 "reset(rows, seed)")  # fmt: skip
    for order in ([1], [0], [1, 0]):
        alone = play(controller, envs, order, codes, seed)
        for row in order:
            for name in ("e", "beta", "actions"):
                if not same(alone[row][name], together[row][name], exact=name == "actions"):
                    fail(f"rows are not independent: row {row}'s {name} differs when rows "
                         f"{order} are played instead of [0, 1] (keep state per row)")  # fmt: skip
    check_reset(controller, envs[0], codes, seed)


#: e_t and beta_t may differ by float rounding between batch sizes (BLAS blocks them).
TOLERANCE = {"rtol": 1e-4, "atol": 1e-5}


def same(a: np.ndarray, b: np.ndarray, exact: bool) -> bool:
    if a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b) if exact else np.allclose(a, b, **TOLERANCE))


def fail(message: str) -> None:
    raise ControllerError(f"check_controller: {message}")


def play(
    controller: Any, envs: list[gym.Env], rows: list[int], codes: np.ndarray, seed: int
) -> dict[int, dict[str, np.ndarray]]:
    """Up to STEPS primitive steps of `rows` (env r plays row r, from reset(seed=seed + r)),
    new codes every 3rd step (the same for every row, so no row's choice hangs on
    another's beta); what each row returned, per step."""
    controller.reset(np.arange(controller.num_envs, dtype=np.int64), seed=seed)
    started = {r: envs[r].reset(seed=seed + r) for r in rows}
    observations = {r: started[r][0] for r in rows}
    infos = {r: started[r][1] for r in rows}
    seen: dict[int, dict[str, list]] = {r: {"e": [], "beta": [], "actions": []} for r in rows}
    live = list(rows)
    for t in range(STEPS):
        if not live:
            break
        live_array = np.array(live, dtype=np.int64)
        stacked = np.stack([observations[r] for r in live])
        e, beta = check_observed(controller, stacked, live_array, first=t == 0,
                                 infos=[infos[r] for r in live])  # fmt: skip
        z = codes[t][live_array] if t % 3 == 0 else None
        actions = check_actions(controller, live_array, z, envs[0].action_space)
        for k, r in enumerate(list(live)):
            seen[r]["e"].append(e[k])
            seen[r]["beta"].append(beta[k])
            seen[r]["actions"].append(actions[k])
            observations[r], _, terminated, truncated, infos[r] = envs[r].step(actions[k])
            if terminated or truncated:
                live.remove(r)
    return {r: {name: np.array(values) for name, values in seen[r].items()} for r in rows}


def check_observed(
    controller: Any,
    observations: np.ndarray,
    rows: np.ndarray,
    first: bool,
    infos: list[dict[str, Any]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """observe's outputs, checked; the infos go to a controller that takes them, as the
    wrappers hand them."""
    out = observe(controller, observations, rows, infos)
    if not (isinstance(out, tuple) and len(out) == 2):
        fail(f"observe must return (e, beta), got {type(out).__name__}")
    e, beta = (np.asarray(x) for x in out)
    shape = (len(rows), controller.observation_size)
    if e.shape != shape or e.dtype != np.float32:
        fail(f"observe's e must be float32 of shape {shape} (rows, observation_size), got "
             f"{e.dtype} {e.shape}")  # fmt: skip
    if not np.all(np.isfinite(e)):
        fail("observe's e holds NaN or inf")
    if beta.shape != (len(rows),) or not np.issubdtype(beta.dtype, np.floating):
        fail(f"observe's beta must be floats of shape ({len(rows)},), got {beta.dtype} "
             f"{beta.shape}")  # fmt: skip
    if not (np.all(np.isfinite(beta)) and np.all((beta >= 0) & (beta <= 1))):
        fail(f"beta must be a probability in [0, 1], got {beta.tolist()}")
    if first and not np.all(beta == 1):
        fail(f"beta must be 1 at an episode's first step (a code is chosen there), got "
             f"{beta.tolist()}")  # fmt: skip
    return e, beta


def check_actions(
    controller: Any, rows: np.ndarray, z: np.ndarray | None, space: gym.Space
) -> np.ndarray:
    actions = np.asarray(controller.act(rows, z))
    if len(actions) != len(rows):
        fail(f"act must return one action per row ({len(rows)}), got shape {actions.shape}")
    for action in actions:
        if action not in space:
            fail(f"act returned {action!r} ({actions.dtype}), not an action of {space}")
    return actions


def check_reset(controller: Any, env: gym.Env, codes: np.ndarray, seed: int) -> None:
    """A row reset mid-episode starts afresh: beta 1 and the first e_t of a new episode."""
    fresh = play(controller, [env, env], [0], codes, seed)[0]
    rows = np.array([0], dtype=np.int64)
    controller.reset(np.arange(controller.num_envs, dtype=np.int64), seed=seed)
    observation, info = env.reset(seed=seed)
    for t in range(3):  # a few steps into an episode, then reset the row
        check_observed(controller, observation[None], rows, first=t == 0, infos=[info])
        action = check_actions(controller, rows, codes[t][:1], env.action_space)[0]
        observation, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    controller.reset(rows, seed=seed)
    observation, info = env.reset(seed=seed)
    out = observe(controller, observation[None], rows, [info])
    e, beta = np.asarray(out[0]), np.asarray(out[1])
    if beta[0] != 1:
        fail(f"after reset(rows) beta must be 1 (a new episode), got {beta[0]}")
    if not same(e[0], fresh["e"][0], exact=False):
        fail("after reset(rows) e_t differs from a new episode's: reset must forget the "
             "rows' history")  # fmt: skip
