"""The PinPad expert: exact shortest paths to the next colour, computed on the batch."""

from __future__ import annotations

from typing import Any

import numpy as np

from metacontroller_envs.checks import check_epsilon
from metacontroller_envs.pinpad.core import _UNREACHED, ACTION_NAMES, PinPadBatch, sweep_grid


class PinPadExpert:
    """Shortest-path policy of the paper, for `PinPadEnv` and `PinPadVectorEnv` alike.

    It reads the env's state (a privileged expert, like minigrid's BabyAIBot). Among the
    actions that shorten the walk to the next colour of the task, avoiding every other colour,
    it picks one uniformly; with probability `epsilon` it instead takes a uniformly random
    action that does not end the episode. `act()` returns an int for a single env and an
    (N,) array for a vector env.
    """

    def __init__(self, env: Any, epsilon: float = 0.0, seed: int | None = None) -> None:
        unwrapped = getattr(env, "unwrapped", env)
        batch = getattr(unwrapped, "batch", None)
        if not isinstance(batch, PinPadBatch):
            raise ValueError(
                f"PinPadExpert needs a PinPad env (PinPadEnv or PinPadVectorEnv), got {env!r}"
            )
        self.env = unwrapped
        self.batch = batch
        self.epsilon = check_epsilon(epsilon)
        self.single = not hasattr(unwrapped, "num_envs")  # a single env plays one batch row
        self.rng = np.random.default_rng(seed)
        c = batch.config
        self._distances = np.zeros((batch.num_envs, c.num_colours, c.num_cells), dtype=np.int32)
        self._loads = np.zeros(batch.num_envs, dtype=np.int64)

    def _refresh(self) -> None:
        """Distances from every cell to every colour, for envs that started a new episode."""
        b, c = self.batch, self.batch.config
        stale = np.nonzero(b.loads != self._loads)[0]
        if len(stale) == 0:
            return
        g, cells, k, colours = c.grid_size, c.num_cells, len(stale), c.num_colours
        blocked = np.zeros((k, cells), dtype=bool)
        blocked[np.arange(k)[:, None], b.walls[stale]] = True
        blocked[np.arange(k)[:, None], b.colours[stale]] = True
        # per (env, target colour): everything blocked but the target itself
        blocked = np.repeat(blocked[:, None, :], colours, axis=1)
        targets = b.colours[stale]  # (k, O)
        env_index, colour_index = np.meshgrid(np.arange(k), np.arange(colours), indexing="ij")
        blocked[env_index, colour_index, targets] = False
        distance = np.full((k, colours, cells), _UNREACHED, dtype=np.int32)
        distance[env_index, colour_index, targets] = 0
        to_grid = (cells, k * colours)
        distance = sweep_grid(
            distance.reshape(k * colours, cells).T.reshape(g, g, k * colours).copy(),
            blocked.reshape(k * colours, cells).T.reshape(g, g, k * colours),
        )
        self._distances[stale] = distance.reshape(to_grid).T.reshape(k, colours, cells)
        self._loads[stale] = b.loads[stale]

    def action_masks(self) -> tuple[np.ndarray, np.ndarray]:
        """(N, 4) bool each: the optimal actions, and the actions that do not end the episode."""
        self._refresh()
        b = self.batch
        rows = np.array([self.env.row]) if self.single else b.rows
        next_colour, last = (
            b.task[rows, b.progress[rows]],
            b.progress[rows] + 1 >= b.task_length[rows],
        )
        after, entered = b.moves(rows[:, None], np.arange(len(ACTION_NAMES)))  # (N, 4) each
        distance = self._distances[rows[:, None], np.maximum(next_colour, 0)[:, None], after]
        # standing on the next colour (it repeats) is not visiting it: bumps never help
        distance[after == b.agent[rows, None]] = _UNREACHED
        optimal = distance == distance.min(axis=1, keepdims=True)
        safe = (entered < 0) | ((entered == next_colour[:, None]) & ~last[:, None])
        return optimal, safe

    def act(self) -> int | np.ndarray:
        optimal, safe = self.action_masks()
        n = len(optimal)
        explore = self.rng.random(n) < self.epsilon
        explore &= safe.any(axis=1)  # nowhere safe to wander: follow the shortest path
        allowed = np.where(explore[:, None], safe, optimal)
        scores = np.where(allowed, self.rng.random((n, allowed.shape[1])), -1.0)
        actions = scores.argmax(axis=1)
        return int(actions[0]) if self.single else actions
