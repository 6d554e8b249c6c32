"""The BabyAI expert: minigrid's BabyAIBot behind the same interface as PinPad's expert."""

from __future__ import annotations

from typing import Any

import numpy as np
from minigrid.core.actions import Actions
from minigrid.utils.baby_ai_bot import BabyAIBot

from metacontroller_envs.babyai.env import SubgoalBabyAIEnv
from metacontroller_envs.checks import check_epsilon, unwrapped_as

#: Random actions for epsilon > 0: moves only. A random toggle could open (and so destroy) a
#: box the mission needs, and a random pickup or drop could strand an object.
WANDER_ACTIONS = (Actions.left, Actions.right, Actions.forward)


class BabyAIExpert:
    """minigrid's BabyAIBot for a `SubgoalBabyAIEnv`: `act()` returns the action to take.

    A new bot plans each episode; every step it replans from the action the env actually
    took, so the expert can follow any policy (DAgger style) and recover. With probability
    `epsilon` it returns a uniformly random move (left, right, forward) instead.
    """

    def __init__(self, env: Any, epsilon: float = 0.0, seed: int | None = None) -> None:
        self.env = unwrapped_as(env, SubgoalBabyAIEnv, "BabyAIExpert", "a SubgoalBabyAI env")
        self.epsilon = check_epsilon(epsilon)
        self.rng = np.random.default_rng(seed)
        self._bot: BabyAIBot | None = None
        self._episode = -1

    def act(self) -> int:
        env = self.env
        if self._bot is None or self._episode != env.episodes:
            self._bot = BabyAIBot(env.level)
            self._episode = env.episodes
        action = int(self._bot.replan(env.last_action))
        if self.epsilon and self.rng.random() < self.epsilon:
            action = int(self.rng.choice(WANDER_ACTIONS))
        return action
