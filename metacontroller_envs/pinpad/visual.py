"""Director's Visual Pin Pad (Hafner et al. 2022), the original that PinPad-v0 builds on."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

from metacontroller_envs.checks import (
    check_discrete_action,
    check_epsilon,
    check_render_mode,
    unwrapped_as,
)
from metacontroller_envs.pinpad.render import PygameWindow

ACTION_NAMES: tuple[str, ...] = ("noop", "down", "up", "right", "left")
_MOVES = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))  # (row change, column change)

#: Director's pad colours for pads 1..8.
PAD_COLOURS = np.array(
    [
        (255, 0, 0),
        (0, 255, 0),
        (0, 0, 255),
        (255, 255, 0),
        (255, 0, 255),
        (0, 255, 255),
        (128, 0, 128),
        (0, 128, 128),
    ],
    dtype=np.uint8,
)
REWARD = 10.0
PAUSE_STEPS = 10

# The six maps, 14 rows x 16 columns: '#' wall, ' ' floor, digits the pads (1-based).
_MAPS = {
    "three": [
        "################",
        "#1111      3333#",
        "#1111      3333#",
        "#1111      3333#",
        "#1111      3333#",
        "#              #",
        "#              #",
        "#              #",
        "#              #",
        "#     2222     #",
        "#     2222     #",
        "#     2222     #",
        "#     2222     #",
        "################",
    ],
    "four": [
        "################",
        "#1111      4444#",
        "#1111      4444#",
        "#1111      4444#",
        "#1111      4444#",
        "#              #",
        "#              #",
        "#              #",
        "#              #",
        "#3333      2222#",
        "#3333      2222#",
        "#3333      2222#",
        "#3333      2222#",
        "################",
    ],
    "five": [
        "################",
        "#          4444#",
        "#111       4444#",
        "#111       4444#",
        "#111           #",
        "#111        555#",
        "#           555#",
        "#           555#",
        "#333        555#",
        "#333           #",
        "#333       2222#",
        "#333       2222#",
        "#          2222#",
        "################",
    ],
    "six": [
        "################",
        "#111        555#",
        "#111        555#",
        "#111        555#",
        "#              #",
        "#33          66#",
        "#33          66#",
        "#33          66#",
        "#33          66#",
        "#              #",
        "#444        222#",
        "#444        222#",
        "#444        222#",
        "################",
    ],
    "seven": [
        "################",
        "#111        444#",
        "#111        444#",
        "#11          44#",
        "#              #",
        "#33          55#",
        "#33          55#",
        "#33          55#",
        "#33          55#",
        "#              #",
        "#66          22#",
        "#666  7777  222#",
        "#666  7777  222#",
        "################",
    ],
    "eight": [
        "################",
        "#111  8888  444#",
        "#111  8888  444#",
        "#11          44#",
        "#              #",
        "#33          55#",
        "#33          55#",
        "#33          55#",
        "#33          55#",
        "#              #",
        "#66          22#",
        "#666  7777  222#",
        "#666  7777  222#",
        "################",
    ],
}
LAYOUTS: tuple[str, ...] = tuple(_MAPS)


def parse_map(rows: list[str]) -> np.ndarray:
    """(14, 16) int8: -1 wall, 0 floor, k pad k."""
    cell = {"#": -1, " ": 0}
    return np.array([[cell[ch] if ch in cell else int(ch) for ch in row] for row in rows], np.int8)


class VisualPinPadEnv(gym.Env):
    """Director's Visual Pin Pad: walk over coloured pads in the order 1..N, from pixels.

    ## Description
    Visual Pin Pad of Hafner et al. (2022), "Deep Hierarchical Planning from Pixels"
    (Director). A 14 x 16 map with a wall border holds N coloured pads (blocks of cells),
    N = 3..8 by layout. A pad enters a sliding window of the last N distinct consecutive pads
    the player stepped on. When the window reads 1, 2, ..., N the player earns the reward;
    after a 10-step pause the player respawns on a random free cell and the window is
    cleared. Keyword arguments: `layout` ("three" ... "eight"), `max_steps` (2000) and
    `render_mode` ("rgb_array" or "human").

    ## Action Space
    Discrete(5): 0 no-op, 1 down, 2 up, 3 right, 4 left. Walls block.

    ## Observation
    `Box(0, 255, (64, 64, 3), uint8)`: the map as 16 x 16 cells of 4 x 4 pixels. Pads are
    tinted at 10% and in full colour while the player stands on them, the player is black,
    walls are grey, the last two rows show the window, and the floor turns pale green
    during the pause.

    `info` holds subgoal_index (target pads done: the longest end of the window that starts
    the target), window (pads in the window, 1-based), target, pause (steps left) and
    successes.

    ## Rewards
    +10 each time the window equals the target sequence.

    ## Termination
    Never terminates; truncated after `max_steps` steps (2000 by default).

    ## Registered Configurations
    - `VisualPinPad-Three-v0` ... `VisualPinPad-Eight-v0`: the layouts with 3 to 8 pads.

    ## Version History
    - v0: initial release, following Director's rules.
    """

    metadata = {"render_modes": ["rgb_array", "human"], "render_fps": 15}
    action_names = ACTION_NAMES

    def __init__(
        self, layout: str = "three", max_steps: int = 2000, render_mode: str | None = None
    ) -> None:
        if layout not in _MAPS:
            raise ValueError(f"unknown layout {layout!r}: use one of {list(LAYOUTS)}")
        if (
            isinstance(max_steps, bool)
            or not isinstance(max_steps, (int, np.integer))
            or max_steps < 1
        ):
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        self.layout = layout
        self.max_steps = int(max_steps)
        self.render_mode = check_render_mode(render_mode, self.metadata["render_modes"])
        self.map = parse_map(_MAPS[layout])
        self.num_pads = int(self.map.max())
        self.target = tuple(range(1, self.num_pads + 1))
        self.spawns = np.argwhere(self.map >= 0)
        self.action_space = gym.spaces.Discrete(len(ACTION_NAMES))
        self.observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
        self._background = self._draw_background()
        self.player = (1, 1)
        self.window: list[int] = []
        self.pause = 0
        self.steps = 0
        self.successes = 0
        self._window_display: PygameWindow | None = None

    def _draw_background(self) -> np.ndarray:
        grid = np.full((16, 16, 3), 255, np.uint8)
        grid[:14][self.map == -1] = 192
        pads = self.map > 0
        tinted = (PAD_COLOURS.astype(np.float32) * 0.1 + 255 * 0.9).astype(np.uint8)
        grid[:14][pads] = tinted[self.map[pads] - 1]
        grid[14:] = 192
        return grid

    def _respawn(self) -> None:
        row, col = self.spawns[self.np_random.integers(len(self.spawns))]
        self.player = (int(row), int(col))
        self.window = []

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._respawn()
        self.pause = 0
        self.steps = 0
        self.successes = 0
        if self.render_mode == "human":
            self.render()
        return self._observation(), self._info()

    def step(self, action: Any):
        action = check_discrete_action(action, len(ACTION_NAMES), ACTION_NAMES)
        if self.pause:
            self.pause -= 1
            if self.pause == 0:
                self._respawn()
        dr, dc = _MOVES[action]
        row, col = self.player[0] + dr, self.player[1] + dc
        if self.map[row, col] >= 0:  # the border is wall, so the move never leaves the map
            self.player = (row, col)
        pad = int(self.map[self.player])
        if pad > 0 and (not self.window or self.window[-1] != pad):
            self.window = (self.window + [pad])[-self.num_pads :]
        reward = 0.0
        if tuple(self.window) == self.target and not self.pause:
            reward = REWARD
            self.pause = PAUSE_STEPS
            self.successes += 1
        self.steps += 1
        truncated = self.steps >= self.max_steps
        if self.render_mode == "human":
            self.render()
        return self._observation(), reward, False, truncated, self._info()

    @property
    def progress(self) -> int:
        """Target pads done: the longest end of the window that starts the target."""
        window, target = tuple(self.window), self.target
        for done in range(min(len(window), len(target)), 0, -1):
            if window[len(window) - done :] == target[:done]:
                return done
        return 0

    def _info(self) -> dict[str, Any]:
        return {
            "subgoal_index": self.progress,
            "window": tuple(self.window),
            "target": self.target,
            "pause": self.pause,
            "successes": self.successes,
        }

    def _observation(self) -> np.ndarray:
        grid = self._background.copy()
        if self.pause:
            grid[:14][self.map == 0] = (223, 255, 223)
        pad = int(self.map[self.player])
        if pad > 0:
            grid[:14][self.map == pad] = PAD_COLOURS[pad - 1]
        grid[self.player] = 0
        for i, entry in enumerate(self.window):
            grid[14, 2 * i + 1] = PAD_COLOURS[entry - 1]
        return np.repeat(np.repeat(grid, 4, axis=0), 4, axis=1)

    def render(self) -> np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode: pass render_mode to make()")
            return None
        image = np.repeat(np.repeat(self._observation(), 4, axis=0), 4, axis=1)
        if self.render_mode == "rgb_array":
            return image
        if self._window_display is None:
            self._window_display = PygameWindow("Visual Pin Pad", image.shape[:2], scale=1)
        self._window_display.show(image, self.metadata["render_fps"])
        return None

    def close(self) -> None:
        if self._window_display is not None:
            self._window_display.close()
            self._window_display = None


def _pad_distances(map_: np.ndarray, pad: int) -> np.ndarray:
    """(14, 16) steps from each cell to pad `pad` without crossing onto another pad.

    Floor and the pad itself are searched first; cells of other pads come after, so a
    player standing on another pad walks off it the shortest way. Walls stay at -1.
    """
    distance = np.full(map_.shape, -1, dtype=np.int32)
    distance[map_ == pad] = 0
    _spread(distance, (map_ == 0) | (map_ == pad))
    _spread(distance, map_ > 0)
    return distance


def _spread(distance: np.ndarray, passable: np.ndarray) -> None:
    """Breadth-first from every cell with a distance, into unreached `passable` cells."""
    queue = sorted((tuple(cell) for cell in np.argwhere(distance >= 0)), key=lambda c: distance[c])
    head = 0
    while head < len(queue):
        row, col = queue[head]
        head += 1
        for dr, dc in _MOVES[1:]:
            r, c = row + dr, col + dc
            if passable[r, c] and distance[r, c] < 0:
                distance[r, c] = distance[row, col] + 1
                queue.append((r, c))


class VisualPinPadExpert:
    """Walks to the pads in order by shortest paths that never step onto another pad.

    The next pad extends the env's progress (the longest end of the window that starts the
    target). With probability `epsilon` it takes a uniformly random action instead.
    """

    def __init__(self, env: Any, epsilon: float = 0.0, seed: int | None = None) -> None:
        self.env = unwrapped_as(env, VisualPinPadEnv, "VisualPinPadExpert", "a VisualPinPad env")
        self.epsilon = check_epsilon(epsilon)
        self.rng = np.random.default_rng(seed)
        self._distances = {pad: _pad_distances(self.env.map, pad) for pad in self.env.target}

    def next_pad(self) -> int | None:
        """The pad to walk to, None when the window already equals the target."""
        done = self.env.progress
        return None if done == len(self.env.target) else self.env.target[done]

    def act(self) -> int:
        pad = self.next_pad()
        if pad is None or (self.epsilon and self.rng.random() < self.epsilon):
            return int(self.rng.integers(len(ACTION_NAMES))) if pad is not None else 0
        distance = self._distances[pad]
        row, col = self.env.player
        costs = []
        for dr, dc in _MOVES[1:]:
            value = distance[row + dr, col + dc]
            costs.append(value if value >= 0 else np.iinfo(np.int32).max)
        costs = np.array(costs)
        best = np.flatnonzero(costs == costs.min())
        return int(self.rng.choice(best)) + 1  # +1: skip the no-op
