"""Argument checks shared by every env and expert: one wording for each kind of bad input."""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import load_env_creator


def check_render_mode(render_mode: str | None, allowed: Sequence[str]) -> str | None:
    if render_mode is not None and render_mode not in allowed:
        raise ValueError(f"unknown render_mode {render_mode!r}: use one of {list(allowed)} or None")
    return render_mode


def check_discrete_action(action: Any, n: int, names: Sequence[str]) -> int:
    """The action as an int in [0, n), or a ValueError that lists the actions."""
    if isinstance(action, np.ndarray) and action.shape == ():
        action = action.item()
    if isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer)):
        raise ValueError(f"invalid action {action!r}: {_describe(n, names)}")
    if not 0 <= action < n:
        raise ValueError(f"invalid action {action}: {_describe(n, names)}")
    return int(action)


def _describe(n: int, names: Sequence[str]) -> str:
    listed = ", ".join(f"{i} {name}" for i, name in enumerate(names))
    return f"actions are integers 0..{n - 1} ({listed})"


def check_env_id(env_id: str, env_kwargs: Mapping[str, Any] | None = None) -> None:
    """A ValueError unless `env_id` is one this package registers and takes `env_kwargs`."""
    import metacontroller_envs  # here, not at import: the package imports this module

    if env_id not in metacontroller_envs.ENV_IDS:
        raise ValueError(
            f"unknown env id {env_id!r}: use one of {', '.join(metacontroller_envs.ENV_IDS)}"
        )
    check_env_kwargs(env_id, env_kwargs or {})


def check_env_kwargs(env_id: str, env_kwargs: Mapping[str, Any]) -> None:
    """A ValueError naming the allowed keywords for any key of `env_kwargs` that neither the
    registered env's constructor nor gym.make takes (gym.make's TypeError names only one)."""
    spec = gym.spec(env_id)
    creator = spec.entry_point
    if isinstance(creator, str):
        creator = load_env_creator(creator)
    parameters = inspect.signature(creator).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    allowed = set(parameters) | set(inspect.signature(gym.make).parameters) - {"id", "kwargs"}
    unknown = sorted(set(env_kwargs) - allowed)
    if unknown:
        raise ValueError(
            f"{env_id} takes no keyword argument {', '.join(map(repr, unknown))}: "
            f"it takes {', '.join(sorted(allowed))}"
        )


def check_count(name: str, value: Any, minimum: int = 1) -> int:
    """`value` as an int >= minimum (booleans refused), or a ValueError naming `name`."""
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not is_int or value < minimum:
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {wanted}, got {value!r}")
    return int(value)


def check_epsilon(epsilon: float) -> float:
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    return float(epsilon)


def unwrapped_as(env: Any, kind: type, expert: str, wanted: str) -> Any:
    """`env.unwrapped` if it is a `kind`, else a ValueError saying which envs `expert` needs."""
    unwrapped = getattr(env, "unwrapped", env)
    if not isinstance(unwrapped, kind):
        raise ValueError(f"{expert} needs {wanted}, got {env!r}")
    return unwrapped
