"""SubgoalBabyAIEnv: BabyAI levels with a numeric observation and ground-truth subgoals."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import gymnasium as gym
import numpy as np
from minigrid.core.actions import Actions
from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX

from metacontroller_envs.babyai.levels import (
    MINIGRID_LEVELS,
    POSTTRAIN_TASK,
    PRETRAIN_TASKS,
    SubgoalSequenceLevel,
    count_subgoals,
    subgoals_done,
)
from metacontroller_envs.babyai.vocab import VOCAB, tokenize
from metacontroller_envs.checks import check_discrete_action, check_render_mode
from metacontroller_envs.registry import BABYAI_LEVELS

ACTION_NAMES: tuple[str, ...] = tuple(a.name for a in Actions)  # left right forward ...
#: Mission tokens in the observation; BossLevel's longest missions use about 30.
MISSION_TOKENS = 48
LEVELS = tuple(BABYAI_LEVELS)  # the registry table names them
_MAX_STATE = 3  # the largest state value of minigrid's encoding (an agent's direction)
_EMPTY_HAND = (OBJECT_TO_IDX["empty"], 0)


class SubgoalBabyAIEnv(gym.Env):
    """A BabyAI level that any RL library can use, and that reports its subgoals.

    ## Description
    `Pretrain` and `Posttrain` are the compositional family: one 8 x 8 room holds six
    objects (a red ball, green key, blue box, purple ball, yellow key, grey box), and the
    mission chains three (pretraining, 24 tasks) or six (post-training, one task) subgoals
    in BabyAI's language, such as "go to the red ball, then pick up the green key, then go
    to the blue box". The post-training task's subgoal-to-subgoal transitions never occur
    in pretraining. `GoToSeq`, `MiniBossLevel` and `BossLevel` are minigrid's levels of
    those names, with the same observation and subgoal labels. minigrid's verifier decides
    success; its "Sampling rejected" prints are silenced. Keyword arguments: `level` (one
    of the five above) and `render_mode` ("rgb_array" or "human").

    ## Action Space
    Discrete(7), minigrid's: 0 left, 1 right, 2 forward, 3 pickup, 4 drop, 5 toggle, 6 done.

    ## Observation
    `Box(uint8, (H*W*3 + 2 + 48,))`, numbers only (no mission string), fully observable:
    the grid as minigrid encodes it, (type, colour, state) per cell, row-major, with the
    agent drawn in its cell as (agent, 0, direction); then the carried object
    (type, colour), (empty, 0) for none; then the mission as 48 token ids of `VOCAB`
    (`metacontroller_envs.babyai.vocab`), 0 padded. `obs_layout` gives the slices. Being
    numbers only, it passes gymnasium's and SB3's `check_env` and works with
    `AsyncVectorEnv(shared_memory=True)`.

    `info` holds mission (text), subgoal_index (subgoals completed, from the verifier's
    state), num_subgoals, task (the family's subgoal ids; empty for minigrid levels),
    task_index (-1 for minigrid levels) and success.

    ## Rewards
    minigrid's: `1 - 0.9 * (steps / max_steps)` when the whole mission is done, else 0.

    ## Termination
    Terminated when the mission succeeds (or fails, for minigrid levels with strict
    instructions); truncated after minigrid's max_steps (64 per subgoal in the family).

    ## Registered Configurations
    - `SubgoalBabyAI-Pretrain-v0`: three-subgoal missions, one of the 24 pretraining tasks.
    - `SubgoalBabyAI-Posttrain-v0`: the held-out six-subgoal mission.
    - `SubgoalBabyAI-GoToSeq-v0`, `SubgoalBabyAI-MiniBossLevel-v0`,
      `SubgoalBabyAI-BossLevel-v0`: minigrid's levels.

    ## Version History
    - v0: initial release.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 10}
    action_names = ACTION_NAMES

    def __init__(self, level: str = "Pretrain", render_mode: str | None = None) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown BabyAI level {level!r}: use one of {list(LEVELS)}")
        self.level_name = level
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        if level == "Pretrain":
            self.level = SubgoalSequenceLevel(PRETRAIN_TASKS, render_mode=render_mode)
        elif level == "Posttrain":
            self.level = SubgoalSequenceLevel((POSTTRAIN_TASK,), render_mode=render_mode)
        else:
            self.level = MINIGRID_LEVELS[level](render_mode=render_mode)
        height, width = self.level.height, self.level.width
        grid_size = height * width * 3
        high = np.concatenate(
            [
                np.tile([max(OBJECT_TO_IDX.values()), max(COLOR_TO_IDX.values()), _MAX_STATE],
                        height * width),
                [max(OBJECT_TO_IDX.values()), max(COLOR_TO_IDX.values())],
                np.full(MISSION_TOKENS, len(VOCAB) - 1),
            ]
        ).astype(np.uint8)  # fmt: skip
        self.observation_space = gym.spaces.Box(0, high, dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(len(ACTION_NAMES))
        self.obs_layout = {
            "kind": "babyai",
            "grid": slice(0, grid_size),
            "grid_shape": (height, width, 3),
            "carrying": slice(grid_size, grid_size + 2),
            "mission": slice(grid_size + 2, grid_size + 2 + MISSION_TOKENS),
            "vocab_size": len(VOCAB),
        }
        self.episodes = 0  # resets so far: the expert starts a new plan on a change
        self.last_action: int | None = None  # what the expert replans from
        self._done = True

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        level_seed = int(self.np_random.integers(2**31))
        with contextlib.redirect_stdout(io.StringIO()):  # "Sampling rejected: ..."
            self.level.reset(seed=level_seed)
        self._mission = self.level.mission
        self._mission_tokens = tokenize(self._mission, MISSION_TOKENS)
        self._num_subgoals = count_subgoals(self.level.instrs)
        self._success = False
        self._done = False
        self.episodes += 1
        self.last_action = None
        return self._observation(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("step() called after the episode ended: call reset() first")
        action = check_discrete_action(action, len(ACTION_NAMES), ACTION_NAMES)
        _, reward, terminated, truncated, _ = self.level.step(action)
        self.last_action = action
        self._success = bool(terminated and reward > 0)
        self._done = bool(terminated or truncated)
        return self._observation(), float(reward), bool(terminated), bool(truncated), self._info()

    def _observation(self) -> np.ndarray:
        level = self.level
        grid = level.grid.encode()  # (width, height, 3), indexed [x, y]
        x, y = level.agent_pos
        grid[x, y] = (OBJECT_TO_IDX["agent"], 0, level.agent_dir)
        carried = level.carrying
        hand = (
            _EMPTY_HAND
            if carried is None
            else (OBJECT_TO_IDX[carried.type], COLOR_TO_IDX[carried.color])
        )
        return np.concatenate(
            [grid.transpose(1, 0, 2).reshape(-1), np.array(hand, np.uint8), self._mission_tokens]
        )

    def _info(self) -> dict[str, Any]:
        family = isinstance(self.level, SubgoalSequenceLevel)
        done = self._num_subgoals if self._success else subgoals_done(self.level.instrs)
        return {
            "mission": self._mission,
            "subgoal_index": done,
            "num_subgoals": self._num_subgoals,
            "task": self.level.tasks[self.level.task_index] if family else (),
            "task_index": int(self.level.task_index) if family else -1,
            "success": self._success,
        }

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode: pass render_mode to make()")
            return None
        return self.level.render()

    def close(self) -> None:
        self.level.close()
