"""BabyAI variants with compositional subgoals, over minigrid."""

from metacontroller_envs.babyai.env import ACTION_NAMES, LEVELS, SubgoalBabyAIEnv
from metacontroller_envs.babyai.levels import POSTTRAIN_TASK, PRETRAIN_TASKS, SUBGOALS

__all__ = [
    "ACTION_NAMES",
    "LEVELS",
    "POSTTRAIN_TASK",
    "PRETRAIN_TASKS",
    "SUBGOALS",
    "SubgoalBabyAIEnv",
]
