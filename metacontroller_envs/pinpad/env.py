"""PinPadEnv: a Gymnasium env that plays one row of a batch of the PinPad core."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from metacontroller_envs.checks import check_discrete_action, check_render_mode
from metacontroller_envs.pinpad import core
from metacontroller_envs.pinpad.core import ACTION_NAMES, MOVES, PinPadBatch, PinPadConfig
from metacontroller_envs.pinpad.render import PinPadFrame, PygameWindow, draw_pinpad
from metacontroller_envs.pinpad.tasks import PRETRAIN_TASKS

RENDER_MODES = ("rgb_array", "human")

#: How many upcoming episodes' layouts are drawn in one batch; episodes do not depend on it.
LAYOUT_BLOCK = 64


def pinpad_config(
    grid_size: int,
    num_colours: int,
    num_walls: int,
    horizon: int,
    task: str | Iterable[int] | None,
    tasks: Sequence[str | Iterable[int]] | None,
    task_in_obs: bool,
    free_play: bool = False,
    start_midway: bool = False,
) -> PinPadConfig:
    """The config for the keyword arguments shared by the single and the vector env."""
    if task is not None and tasks is not None:
        raise ValueError("pass either task (one task) or tasks (a list), not both")
    chosen = [task] if task is not None else (PRETRAIN_TASKS if tasks is None else tasks)
    return PinPadConfig(
        grid_size=grid_size,
        num_colours=num_colours,
        num_walls=num_walls,
        horizon=horizon,
        tasks=tuple(chosen),
        task_in_obs=bool(task_in_obs),
        free_play=bool(free_play),
        start_midway=bool(start_midway),
    )


def pinpad_obs_layout(config: PinPadConfig) -> dict[str, Any]:
    """Where things are in the flat observation, for encoders that use the grid's shape."""
    grid = config.num_cells * config.num_channels
    layout = {
        "kind": "pinpad",
        "grid_shape": (config.grid_size, config.grid_size, config.num_channels),
        "agent_channel": config.agent_channel,
        "colour_channels": slice(config.num_walls, config.num_walls + config.num_colours),
        "grid": slice(0, grid),
        "extra": slice(grid, config.obs_size),  # the task and progress with task_in_obs
        "moves": MOVES,  # (row change, column change) of each action, in action order
    }
    if config.task_in_obs:
        layout["next_colour"] = config.next_colour_obs
    return layout


def pinpad_spaces(config: PinPadConfig) -> tuple[gym.spaces.Box, gym.spaces.Discrete]:
    observation = gym.spaces.Box(0, 1, shape=(config.obs_size,), dtype=np.uint8)
    return observation, gym.spaces.Discrete(len(ACTION_NAMES))


class PinPadEnv(gym.Env):
    """The grid world of Kobayashi et al. (2025), "gridworld-pinpad".

    ## Description
    A G x G grid holds O uniquely coloured cells, W walls and the agent, placed uniformly at
    random without overlap every episode. The task is a sequence of colours to visit in
    order; colours come in abstract pairs (0-1, 2-3, 4-5, 6-7), the subgoals. A coloured cell
    counts as visited when the agent moves onto it from a different cell. Layouts where the
    task cannot be completed within the horizon (a colour cut off by walls or by other
    colours, or the shortest solution longer than T) are redrawn at reset, so the expert
    solves every episode.

    Keyword arguments: `grid_size` (G, 7), `num_colours` (O, 8), `num_walls` (W, 4),
    `horizon` (T, 100), `task` (one task, e.g. "0-1-2-3") or `tasks` (a list of them; by
    default the 16 pretraining tasks of Table A1), `task_in_obs` (see Observation),
    `free_play`, `start_midway` and `render_mode` ("rgb_array" or "human").
    `free_play=True` imposes no task: any colour visit fills the next task slot, the episode
    ends after task_slots visits, and succeeds if they spell one of the tasks (for
    evaluating agents that must infer the task: here they choose it).
    `start_midway=True` starts each episode at a uniformly drawn slot of its task, the
    colours before it counted as visited and the agent on the last one (a reverse
    curriculum for training goal-conditioned agents).

    ## Action Space
    Discrete(4): 0 up, 1 right, 2 down, 3 left. Moving into a wall or off the grid is a no-op.

    ## Observation
    `Box(0, 1, (G*G*(W+O+1),), uint8)`: per cell (row-major), a one-hot over
    {wall 0..W-1, colour 0..O-1, agent}; an empty cell is all zeros, and the agent channel is
    set on top of a colour it stands on. 637 values for the paper's G=7, O=8, W=4. The task is
    hidden, as in the paper; `task_in_obs=True` appends one-hot colours per task slot
    (task_slots x O), one flag per slot that is set once that colour was visited, and the
    next colour one-hot (O values, zeros once done): 699 values for PinPad-v0.
    `obs_layout` gives the grid's shape and the slices.

    `info` holds task (tuple of colours), task_index (into the env's task list),
    subgoal_index (pairs completed, i.e. which pair is pursued), next_colour (-1 when done),
    colours_visited and success.

    ## Rewards
    1 when the last colour of the task is visited, 0 otherwise.

    ## Termination
    Terminated on success, or on visiting any colour that is not the next one (reward 0).
    Truncated after `horizon` steps (T = 100).

    ## Registered Configurations
    - `PinPad-v0`: the 16 pretraining tasks of Table A1, one drawn per episode.
    - `PinPad-Posttrain-v0`: the held-out task 0-1-2-3-4-5-6-7-0-1-2-3, whose pair-to-pair
      transitions never occur in pretraining.

    ## Version History
    - v0: initial release.
    """

    metadata = {"render_modes": list(RENDER_MODES), "render_fps": 8}
    action_names = ACTION_NAMES

    def __init__(
        self,
        grid_size: int = 7,
        num_colours: int = 8,
        num_walls: int = 4,
        horizon: int = 100,
        task: str | Iterable[int] | None = None,
        tasks: Sequence[str | Iterable[int]] | None = None,
        task_in_obs: bool = False,
        free_play: bool = False,
        start_midway: bool = False,
        render_mode: str | None = None,
    ) -> None:
        self.config = pinpad_config(
            grid_size,
            num_colours,
            num_walls,
            horizon,
            task,
            tasks,
            task_in_obs,
            free_play,
            start_midway,
        )
        self.render_mode = check_render_mode(render_mode, RENDER_MODES)
        self.observation_space, self.action_space = pinpad_spaces(self.config)
        self.obs_layout = pinpad_obs_layout(self.config)
        # The batch holds the next LAYOUT_BLOCK episodes, loaded together; `row` is the one
        # being played. Episodes do not depend on the block size.
        self.batch = PinPadBatch(self.config, LAYOUT_BLOCK)
        self.row = LAYOUT_BLOCK - 1
        self._episode = -1  # index of the current episode under the current base key
        self._base_key: np.uint64 | None = None
        self._task = ()
        self._done = True
        self._window: PygameWindow | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        if seed is not None or self._base_key is None:
            self._base_key = core.base_key_from_rng(self.np_random)
            self._episode = -1
            self.row = LAYOUT_BLOCK - 1
        self._episode += 1
        self.row += 1
        if self.row == LAYOUT_BLOCK:
            self.row = 0
            keys = core.episode_keys(
                np.full(LAYOUT_BLOCK, self._base_key),
                np.arange(self._episode, self._episode + LAYOUT_BLOCK),
            )
            self.batch.load(self.batch.rows, core.sample_layouts(self.config, keys))
        index = int(self.batch.task_index[self.row])
        self._task = () if self.config.free_play else self.config.tasks[index]
        self._done = False
        if self.render_mode == "human":
            self.render()
        return self.batch.obs[self.row].copy(), self._info()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("step() called after the episode ended: call reset() first")
        action = check_discrete_action(action, len(ACTION_NAMES), ACTION_NAMES)
        reward, terminated, truncated = self.batch.step(action, self.row)
        terminated, truncated = bool(terminated), bool(truncated)
        self._done = terminated or truncated
        if self.render_mode == "human":
            self.render()
        return self.batch.obs[self.row].copy(), float(reward), terminated, truncated, self._info()

    def _info(self) -> dict[str, Any]:
        b, row = self.batch, self.row
        progress = int(b.progress[row])
        task = self._task
        if self.config.free_play:  # the colours visited so far
            task = tuple(int(c) for c in b.task[row, :progress])
        return {
            "task": task,
            "task_index": int(b.task_index[row]),
            "subgoal_index": int(b.subgoal_index[row]),
            "next_colour": int(b.next_colour[row]),
            "colours_visited": progress,
            "success": bool(b.success[row]),
        }

    def frame(self) -> PinPadFrame:
        """What the renderer draws: the current state of the grid and the task."""
        return PinPadFrame.from_batch(self.batch, self.row)

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode: pass render_mode to make()")
            return None
        image = draw_pinpad(self.frame())
        if self.render_mode == "rgb_array":
            return image
        if self._window is None:
            self._window = PygameWindow("PinPad", image.shape[:2])
        self._window.show(image, self.metadata["render_fps"])
        return None

    def close(self) -> None:
        if self._window is not None:
            self._window.close()
            self._window = None
