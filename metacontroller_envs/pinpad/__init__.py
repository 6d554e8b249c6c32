"""PinPad: the paper's grid world (batched numpy rules) and Director's Visual Pin Pad."""

from metacontroller_envs.pinpad.core import ACTION_NAMES, PinPadConfig
from metacontroller_envs.pinpad.env import PinPadEnv
from metacontroller_envs.pinpad.expert import PinPadExpert
from metacontroller_envs.pinpad.tasks import (
    LADDER,
    NUM_PAIRS,
    POSTTRAIN_TASK,
    PRETRAIN_TASKS,
    SUBGOAL_SIZE,
    format_task,
    pair_transitions,
    parse_task,
)
from metacontroller_envs.pinpad.vector import PinPadVectorEnv
from metacontroller_envs.pinpad.visual import VisualPinPadEnv

__all__ = [
    "ACTION_NAMES",
    "LADDER",
    "NUM_PAIRS",
    "POSTTRAIN_TASK",
    "PRETRAIN_TASKS",
    "SUBGOAL_SIZE",
    "PinPadConfig",
    "PinPadEnv",
    "PinPadExpert",
    "PinPadVectorEnv",
    "VisualPinPadEnv",
    "format_task",
    "pair_transitions",
    "parse_task",
]
