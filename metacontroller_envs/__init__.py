"""metacontroller-envs: Gymnasium environments with compositional subgoals.

Importing the package registers every environment, so `gym.make("PinPad-v0")` works after
`import metacontroller_envs`. This package never imports torch.
"""

from __future__ import annotations

import gymnasium as gym

from metacontroller_envs.pinpad import (
    POSTTRAIN_TASK,
    PinPadEnv,
    PinPadExpert,
    PinPadVectorEnv,
    format_task,
)

__version__ = "0.1.0"

_PINPAD = "metacontroller_envs.pinpad.env:PinPadEnv"
_PINPAD_VECTOR = "metacontroller_envs.pinpad.vector:PinPadVectorEnv"
_VISUAL = "metacontroller_envs.pinpad.visual:VisualPinPadEnv"
_BABYAI = "metacontroller_envs.babyai.env:SubgoalBabyAIEnv"
#: The BabyAI levels this package registers as `SubgoalBabyAI-<level>-v0`.
BABYAI_LEVELS = ("Pretrain", "Posttrain", "GoToSeq", "MiniBossLevel", "BossLevel")


def _register() -> list[str]:
    ids = []

    def add(env_id: str, entry_point: str, vector_entry_point: str | None = None, **kwargs) -> None:
        if env_id not in gym.registry:
            gym.register(
                env_id,
                entry_point=entry_point,
                vector_entry_point=vector_entry_point,
                kwargs=kwargs,
            )
        ids.append(env_id)

    add("PinPad-v0", _PINPAD, _PINPAD_VECTOR)
    add(
        "PinPad-Posttrain-v0", _PINPAD, _PINPAD_VECTOR, task=format_task(POSTTRAIN_TASK)
    )  # a string: JSON-stable
    for layout in ("three", "four", "five", "six", "seven", "eight"):
        add(f"VisualPinPad-{layout.capitalize()}-v0", _VISUAL, layout=layout)
    for level in BABYAI_LEVELS:  # minigrid's own ids are BabyAI-*: no collision
        add(f"SubgoalBabyAI-{level}-v0", _BABYAI, level=level)
    return ids


#: Every env id this package registers.
ENV_IDS: tuple[str, ...] = tuple(_register())

__all__ = ["ENV_IDS", "PinPadEnv", "PinPadExpert", "PinPadVectorEnv", "__version__"]
