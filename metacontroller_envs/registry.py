"""THE table of registered environments: id, entry points, keyword arguments, family and
horizon. Every other place that needs an env's family or episode limit asks this table (or
the gymnasium spec it registers), never the id's prefix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

from metacontroller_envs.pinpad.tasks import LADDER, POSTTRAIN_TASK, format_task
from metacontroller_envs.pinpad.visual import LAYOUTS

_PINPAD = "metacontroller_envs.pinpad.env:PinPadEnv"
_PINPAD_VECTOR = "metacontroller_envs.pinpad.vector:PinPadVectorEnv"
_VISUAL = "metacontroller_envs.pinpad.visual:VisualPinPadEnv"
_BABYAI = "metacontroller_envs.babyai.env:SubgoalBabyAIEnv"

#: The families, each with the env whose expert data pretrains a model for all its envs.
FAMILIES: dict[str, str | None] = {
    "pinpad": "PinPad-v0",
    "visual-pinpad": None,
    "babyai": "SubgoalBabyAI-Pretrain-v0",
}
#: The BabyAI levels registered as `SubgoalBabyAI-<level>-v0`, and the longest episode each
#: allows (minigrid's max_steps: 64 steps a subgoal in our levels; minigrid's own levels
#: set theirs per episode, so they have no fixed limit here).
BABYAI_LEVELS: dict[str, int | None] = {
    "Pretrain": 192,
    "Posttrain": 384,
    "GoToSeq": None,
    "MiniBossLevel": None,
    "BossLevel": None,
}


@dataclass(frozen=True)
class EnvEntry:
    """One registered env."""

    id: str
    """The registered id, e.g. "PinPad-v0"."""
    family: str
    """A key of FAMILIES: envs of one family share observation and action spaces."""
    entry_point: str
    """module:class of the single env."""
    vector_entry_point: str | None = None
    """module:class of a native vector env (gym.make_vec's "vector_entry_point" mode)."""
    max_episode_steps: int | None = None
    """The env's own horizon, registered as the spec's max_episode_steps (the env truncates
    there itself; None where it varies per episode)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments the id fixes."""


def _entries() -> tuple[EnvEntry, ...]:
    pinpad = dict(family="pinpad", entry_point=_PINPAD, vector_entry_point=_PINPAD_VECTOR,
                  max_episode_steps=100)  # fmt: skip
    entries = [
        EnvEntry("PinPad-v0", **pinpad),
        # the task as a string: JSON-stable in specs and datasets
        EnvEntry("PinPad-Posttrain-v0", **pinpad, kwargs={"task": format_task(POSTTRAIN_TASK)}),
    ]
    for pairs, task in LADDER.items():  # the 6-pair rung is PinPad-Posttrain-v0 itself
        if task != POSTTRAIN_TASK:
            entries.append(
                EnvEntry(f"PinPad-Ladder{pairs}-v0", **pinpad, kwargs={"task": format_task(task)})
            )
    for layout in LAYOUTS:
        entries.append(
            EnvEntry(f"VisualPinPad-{layout.capitalize()}-v0", "visual-pinpad", _VISUAL,
                     max_episode_steps=2000, kwargs={"layout": layout})  # fmt: skip
        )
    for level, horizon in BABYAI_LEVELS.items():  # minigrid's own ids are BabyAI-*
        entries.append(
            EnvEntry(f"SubgoalBabyAI-{level}-v0", "babyai", _BABYAI,
                     max_episode_steps=horizon, kwargs={"level": level})  # fmt: skip
        )
    return tuple(entries)


#: Every env this package registers, in the order of the docs' table.
ENTRIES: tuple[EnvEntry, ...] = _entries()
_BY_ID = {entry.id: entry for entry in ENTRIES}


def register_all() -> None:
    """Register every entry with gymnasium (once; an id already there is left alone)."""
    for entry in ENTRIES:
        if entry.id not in gym.registry:
            gym.register(
                entry.id,
                entry_point=entry.entry_point,
                vector_entry_point=entry.vector_entry_point,
                max_episode_steps=entry.max_episode_steps,
                kwargs=dict(entry.kwargs),
            )


def entry(env_id: str | EnvSpec) -> EnvEntry:
    """The table's entry of an id (or a spec of one), or a ValueError naming the ids."""
    key = env_id.id if isinstance(env_id, EnvSpec) else env_id
    if key not in _BY_ID:
        raise ValueError(f"unknown env id {key!r}: use one of {', '.join(_BY_ID)}")
    return _BY_ID[key]


def family(env_id: str | EnvSpec) -> str:
    """The family of a registered env ("pinpad", "visual-pinpad" or "babyai")."""
    return entry(env_id).family


def in_family(env_id: str | EnvSpec, family_name: str) -> bool:
    """Whether `env_id` is one of this package's envs of `family_name` (False for others)."""
    key = env_id.id if isinstance(env_id, EnvSpec) else env_id
    return key in _BY_ID and _BY_ID[key].family == family_name


def ladder_ids() -> dict[int, str]:
    """Rung (pairs) -> registered id of the held-out ladder, shortest first."""
    by_task = {e.kwargs.get("task"): e.id for e in ENTRIES if e.family == "pinpad"}
    return {pairs: by_task[format_task(task)] for pairs, task in LADDER.items()}


def ids_of(family_name: str) -> tuple[str, ...]:
    """Every registered id of a family."""
    if family_name not in FAMILIES:
        raise ValueError(f"unknown family {family_name!r}: use one of {list(FAMILIES)}")
    return tuple(e.id for e in ENTRIES if e.family == family_name)
