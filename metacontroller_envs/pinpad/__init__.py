"""PinPad: the paper's grid world (batched numpy rules) and Director's Visual Pin Pad."""

from metacontroller_envs.pinpad.core import ACTION_NAMES, PinPadConfig
from metacontroller_envs.pinpad.env import PinPadEnv
from metacontroller_envs.pinpad.expert import PinPadExpert
from metacontroller_envs.pinpad.tasks import (
    NUM_PAIRS,
    POSTTRAIN_TASK,
    PRETRAIN_TASKS,
    format_task,
    parse_task,
)
from metacontroller_envs.pinpad.vector import PinPadVectorEnv
from metacontroller_envs.pinpad.visual import VisualPinPadEnv

__all__ = [
    "ACTION_NAMES",
    "NUM_PAIRS",
    "POSTTRAIN_TASK",
    "PRETRAIN_TASKS",
    "PinPadConfig",
    "PinPadEnv",
    "PinPadExpert",
    "PinPadVectorEnv",
    "VisualPinPadEnv",
    "format_task",
    "parse_task",
]
