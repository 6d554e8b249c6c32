"""One way to get the expert of any env this package registers."""

from __future__ import annotations

from typing import Any, Protocol

from metacontroller_envs.babyai.env import SubgoalBabyAIEnv
from metacontroller_envs.pinpad.core import PinPadBatch
from metacontroller_envs.pinpad.visual import VisualPinPadEnv


class Expert(Protocol):
    """Reads its env's state; `act()` gives an int for a single env, an array for a batch."""

    def act(self) -> Any: ...


def make_expert(env: Any, epsilon: float = 0.0, seed: int | None = None) -> Expert:
    """The expert for `env` (single or PinPad vector env), acting epsilon-randomly."""
    unwrapped = getattr(env, "unwrapped", env)
    if isinstance(getattr(unwrapped, "batch", None), PinPadBatch):
        from metacontroller_envs.pinpad.expert import PinPadExpert

        return PinPadExpert(env, epsilon=epsilon, seed=seed)
    if isinstance(unwrapped, SubgoalBabyAIEnv):
        from metacontroller_envs.babyai.expert import BabyAIExpert

        return BabyAIExpert(env, epsilon=epsilon, seed=seed)
    if isinstance(unwrapped, VisualPinPadEnv):
        from metacontroller_envs.pinpad.visual import VisualPinPadExpert

        return VisualPinPadExpert(env, epsilon=epsilon, seed=seed)
    raise ValueError(
        f"no expert for {env!r}: experts exist for PinPad-*, VisualPinPad-* and "
        "SubgoalBabyAI-* envs"
    )
