"""PinPad's rules, once, on batches of numpy arrays.

`PinPadEnv` is a batch of one over this module and `PinPadVectorEnv` a batch of N, so the
two cannot drift apart. Every episode's layout and task are a pure function of a 64-bit
episode key (a counter-based generator), which is what lets a vector env of N and N single
envs with the same seeds play identical episodes while layouts are drawn in batches.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from metacontroller_envs.pinpad.tasks import PRETRAIN_TASKS, Task, parse_tasks

#: Discrete(4) actions: index -> (row change, column change). Row 0 is the top of the grid.
ACTION_NAMES: tuple[str, ...] = ("up", "right", "down", "left")
MOVES: tuple[tuple[int, int], ...] = ((-1, 0), (0, 1), (1, 0), (0, -1))

#: A layout whose required colours stay unreachable after this many redraws is an error.
MAX_LAYOUT_ATTEMPTS = 1000

_UNREACHED = 1 << 20  # "infinite" distance / blocked label in the grid sweeps
_NO_COLOUR = -2  # a move that visits no colour; unequal to every colour and to the -1 padding


@dataclass(frozen=True)
class PinPadConfig:
    """The parameters of a PinPad world; the defaults are the paper's PinPad-v0."""

    grid_size: int = 7
    """G: the world is G x G cells."""
    num_colours: int = 8
    """O: uniquely coloured cells, colours 0..O-1."""
    num_walls: int = 4
    """W: wall cells, each with its own observation channel."""
    horizon: int = 100
    """T: steps before truncation."""
    tasks: tuple[Task, ...] = PRETRAIN_TASKS
    """Colour sequences; each reset draws one uniformly."""
    task_in_obs: bool = False
    """Append the task (one-hot per slot) and the progress through it to the observation."""

    # derived sizes, filled in __post_init__
    num_cells: int = field(init=False)
    num_channels: int = field(init=False)
    task_slots: int = field(init=False)
    obs_size: int = field(init=False)

    def __post_init__(self) -> None:
        for name in ("grid_size", "num_colours", "num_walls", "horizon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        if not 2 <= self.grid_size <= 64:
            raise ValueError(f"grid_size must be in 2..64, got {self.grid_size}")
        if self.num_colours < 1:
            raise ValueError(f"num_colours must be >= 1, got {self.num_colours}")
        if self.num_walls < 0:
            raise ValueError(f"num_walls must be >= 0, got {self.num_walls}")
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        needed = self.num_walls + self.num_colours + 1
        if self.grid_size**2 < needed:
            smallest = int(np.ceil(np.sqrt(needed)))
            raise ValueError(
                f"grid_size={self.grid_size} has {self.grid_size**2} cells, but "
                f"{self.num_walls} walls + {self.num_colours} colours + the agent need "
                f"{needed}: use grid_size >= {smallest}"
            )
        tasks = parse_tasks(self.tasks, self.num_colours)
        object.__setattr__(self, "tasks", tasks)
        cells = self.grid_size**2
        channels = self.num_walls + self.num_colours + 1
        slots = max(len(t) for t in tasks)
        obs_size = cells * channels
        if self.task_in_obs:
            obs_size += slots * self.num_colours + slots
        object.__setattr__(self, "num_cells", cells)
        object.__setattr__(self, "num_channels", channels)
        object.__setattr__(self, "task_slots", slots)
        object.__setattr__(self, "obs_size", obs_size)

    @property
    def agent_channel(self) -> int:
        return self.num_channels - 1

    def task_table(self) -> np.ndarray:
        """(num_tasks, task_slots + 1) colours, padded with -1 (one spare slot past the end)."""
        table = np.full((len(self.tasks), self.task_slots + 1), -1, dtype=np.int64)
        for i, task in enumerate(self.tasks):
            table[i, : len(task)] = task
        return table


# ---------------------------------------------------------------------------------------
# Counter-based randomness: splitmix64 on uint64 arrays.

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_TASK_STREAM = np.uint64(0xD1B54A32D192ED03)
_ATTEMPT_STREAM = np.uint64(0x8CB92BA72F3D8DD7)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijective scramble of uint64 values."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def base_key_from_rng(rng: np.random.Generator) -> np.uint64:
    """The one draw an env takes from its seeded `np_random` to key all its episodes."""
    return rng.integers(0, 2**64, dtype=np.uint64)


def episode_keys(base_keys: np.ndarray, episode_index: np.ndarray) -> np.ndarray:
    """Key of episode `episode_index` of the envs keyed `base_keys`."""
    base = np.asarray(base_keys, dtype=np.uint64)
    index = np.asarray(episode_index, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix64(base + index * _GOLDEN)


def _draws(keys: np.ndarray, count: int) -> np.ndarray:
    """(len(keys), count) independent uint64 values per key."""
    with np.errstate(over="ignore"):
        offsets = (np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN)[None, :]
        return _mix64(keys[:, None] + offsets)


# ---------------------------------------------------------------------------------------
# Layouts


class Layouts(NamedTuple):
    """k sampled episodes: cell indices (row * G + column) of everything on the grid."""

    walls: np.ndarray  # (k, W)
    colours: np.ndarray  # (k, O); colours[:, c] is the cell of colour c
    agent: np.ndarray  # (k,)
    task_index: np.ndarray  # (k,)


def neighbour_table(grid_size: int, off_grid: int) -> np.ndarray:
    """(G*G, 4) the cell each action leads to from each cell, `off_grid` where it leaves."""
    rows, cols = np.divmod(np.arange(grid_size * grid_size), grid_size)
    table = np.empty((grid_size * grid_size, len(MOVES)), dtype=np.intp)
    for a, (dr, dc) in enumerate(MOVES):
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < grid_size) & (c >= 0) & (c < grid_size)
        table[:, a] = np.where(inside, r * grid_size + c, off_grid)
    return table


def sweep_grid(values: np.ndarray, blocked: np.ndarray, step: int) -> np.ndarray:
    """Relax `values` (G, G, *batch) in place: v = min(v, neighbour + step) over open cells.

    step=1 turns sources set to 0 into BFS distances; step=0 spreads the smallest label over
    each connected region. Full-length sweeps in the four directions reach the fixed point in
    a few rounds (about one per turn of the longest shortest path). The batch axes come last
    so that every operation works on contiguous memory.
    """
    floor = np.where(blocked, _UNREACHED, 0).astype(values.dtype)
    size = values.shape[0]
    forward, backward = range(1, size), range(size - 2, -1, -1)
    by_col = np.swapaxes(values, 0, 1)
    floor_col = np.swapaxes(floor, 0, 1)
    while True:
        before = values.copy()
        for grid, grid_floor in ((values, floor), (by_col, floor_col)):
            for lines, delta in ((forward, -1), (backward, 1)):
                for i in lines:
                    reach = grid[i + delta] + step if step else grid[i + delta]
                    np.minimum(grid[i], np.maximum(reach, grid_floor[i]), out=grid[i])
        if np.array_equal(before, values):
            return values


def shortest_legs(config: PinPadConfig, layouts: Layouts) -> np.ndarray:
    """(k, task_slots) steps of the shortest walk for each leg of the task, -1 past its end.

    Leg i goes from where the agent stands (its start, then the colour just visited) to the
    next colour through empty cells only: walls block, and any other colour would end the
    episode. Unreachable legs get _UNREACHED. Breadth-first search on bitboards, one uint64
    per grid row (hence grid_size <= 64), for all legs of all layouts at once.
    """
    g = config.grid_size
    k = len(layouts.agent)
    tasks = config.task_table()[layouts.task_index][:, :-1]  # (k, L)
    length = tasks.shape[1]
    valid = tasks >= 0
    target = layouts.colours[np.arange(k)[:, None], np.maximum(tasks, 0)]  # (k, L)
    source = np.concatenate([layouts.agent[:, None], target[:, :-1]], axis=1)

    one = np.uint64(1)
    occupied = np.zeros((k, g), dtype=np.uint64)  # bit c of word r: cell (r, c)
    for cells in (layouts.walls, layouts.colours):
        r, c = np.divmod(cells, g)
        np.bitwise_or.at(
            occupied,
            (np.arange(k)[:, None].repeat(cells.shape[1], 1), r),
            one << c.astype(np.uint64),
        )
    legs = k * length
    leg_layout = np.repeat(np.arange(k), length)
    target_row, target_col = np.divmod(target.reshape(-1), g)
    target_bit = one << target_col.astype(np.uint64)
    passable = ~occupied[leg_layout]
    passable[np.arange(legs), target_row] |= target_bit
    passable &= np.uint64((1 << g) - 1)
    frontier = np.zeros((legs, g), dtype=np.uint64)
    source_row, source_col = np.divmod(source.reshape(-1), g)
    frontier[np.arange(legs), source_row] = one << source_col.astype(np.uint64)
    frontier[~valid.reshape(-1)] = 0
    unseen = passable & ~frontier
    at_target = (np.arange(legs), target_row)
    unseen[at_target] |= target_bit  # a leg back to the same colour must step off and return
    steps = np.where(valid.reshape(-1), _UNREACHED, -1)
    for distance in range(1, config.num_cells):
        grown = frontier | (frontier << one) | (frontier >> one)
        grown[:, 1:] |= frontier[:, :-1]
        grown[:, :-1] |= frontier[:, 1:]
        grown &= unseen
        unseen ^= grown
        arrived = (grown[at_target] & target_bit) != 0
        steps[arrived] = distance
        grown[arrived] = 0  # this leg is done
        if not grown.any():
            break
        frontier = grown
    return steps.reshape(k, length)


def solvable(config: PinPadConfig, layouts: Layouts) -> np.ndarray:
    """(k,) whether the task can be completed, in order, within the horizon."""
    legs = shortest_legs(config, layouts)
    return (legs < _UNREACHED).all(axis=1) & (np.maximum(legs, 0).sum(axis=1) <= config.horizon)


def sample_layouts(config: PinPadConfig, keys: np.ndarray) -> Layouts:
    """The solvable layout and task of each episode key; redraws unsolvable layouts."""
    keys = np.asarray(keys, dtype=np.uint64).reshape(-1)
    k = len(keys)
    task_index = (_mix64(keys ^ _TASK_STREAM) % np.uint64(len(config.tasks))).astype(np.intp)
    placed = config.num_walls + config.num_colours + 1
    walls = np.empty((k, config.num_walls), dtype=np.intp)
    colours = np.empty((k, config.num_colours), dtype=np.intp)
    agent = np.empty(k, dtype=np.intp)
    todo = np.arange(k)
    # Attempts could be tried several at a time per key (keeping the first solvable one gives
    # the same result); one at a time is fastest, as few layouts need a redraw.
    per_pass = 1
    for first in range(0, MAX_LAYOUT_ATTEMPTS, per_pass):
        attempts = np.arange(first, first + per_pass, dtype=np.uint64)
        with np.errstate(over="ignore"):
            attempt_keys = _mix64(keys[todo, None] + attempts * _ATTEMPT_STREAM).reshape(-1)
        cells = np.argsort(_draws(attempt_keys, config.num_cells), axis=1)[:, :placed]
        candidate = Layouts(
            cells[:, : config.num_walls],
            cells[:, config.num_walls : placed - 1],
            cells[:, placed - 1],
            np.repeat(task_index[todo], per_pass),
        )
        ok = solvable(config, candidate).reshape(-1, per_pass)
        found = ok.any(axis=1)
        pick = np.nonzero(found)[0] * per_pass + ok[found].argmax(axis=1)
        done = todo[found]
        walls[done] = candidate.walls[pick]
        colours[done] = candidate.colours[pick]
        agent[done] = candidate.agent[pick]
        todo = todo[~found]
        if len(todo) == 0:
            return Layouts(walls, colours, agent, task_index)
    raise RuntimeError(
        f"no solvable layout in {MAX_LAYOUT_ATTEMPTS} draws for {config}: the walls and "
        "colours nearly always cut the task's colours off; use fewer walls or colours or a "
        "larger grid"
    )


# ---------------------------------------------------------------------------------------
# The batch


class PinPadBatch:
    """The state of `num_envs` PinPad episodes, stepped together.

    Step results for an env whose episode already ended are meaningless: shells reset such
    envs (`load`) before or right after the next step.
    """

    def __init__(self, config: PinPadConfig, num_envs: int) -> None:
        self.config = config
        n, c = num_envs, config
        self.num_envs = n
        self.rows = np.arange(n)
        self._tasks = c.task_table()
        self._task_lengths = np.array([len(t) for t in c.tasks], dtype=np.int64)
        self._neighbours = neighbour_table(c.grid_size, c.num_cells)  # off grid -> spare
        self._task_obs_start = c.num_cells * c.num_channels
        self._progress_obs_start = self._task_obs_start + c.task_slots * c.num_colours
        # layout
        self.walls = np.zeros((n, c.num_walls), dtype=np.intp)
        self.colours = np.zeros((n, c.num_colours), dtype=np.intp)
        self.cell_colour = np.full((n, c.num_cells), -1, dtype=np.int64)
        self.moves = np.zeros((n, c.num_cells, len(MOVES)), dtype=np.intp)
        self.enters = np.zeros((n, c.num_cells, len(MOVES)), dtype=np.int64)  # _NO_COLOUR or c
        self.task_index = np.zeros(n, dtype=np.int64)
        self.task = np.full((n, c.task_slots + 1), -1, dtype=np.int64)
        self.task_length = np.ones(n, dtype=np.int64)
        # dynamic state
        self.agent = np.zeros(n, dtype=np.intp)
        self.progress = np.zeros(n, dtype=np.int64)
        self.steps = np.zeros(n, dtype=np.int64)
        self.success = np.zeros(n, dtype=bool)
        self.failure = np.zeros(n, dtype=bool)
        self.loads = np.zeros(n, dtype=np.int64)  # episodes started per env
        self.obs = np.zeros((n, c.obs_size), dtype=np.uint8)

    def load(self, env_ids: np.ndarray, layouts: Layouts) -> None:
        """Start a new episode in each of `env_ids` from the matching row of `layouts`."""
        c = self.config
        ids = np.asarray(env_ids, dtype=np.intp)
        k = len(ids)
        if k == 0:
            return
        rows = np.arange(k)[:, None]
        self.walls[ids] = layouts.walls
        self.colours[ids] = layouts.colours
        cell_colour = np.full((k, c.num_cells + 1), _NO_COLOUR, dtype=np.int64)
        cell_colour[rows, layouts.colours] = np.arange(c.num_colours)
        self.cell_colour[ids] = np.maximum(cell_colour[:, :-1], -1)
        is_wall = np.zeros((k, c.num_cells + 1), dtype=bool)
        is_wall[rows, layouts.walls] = True
        is_wall[:, -1] = True  # leaving the grid is a bump too
        stay = np.arange(c.num_cells)[:, None]
        moves = np.where(is_wall[:, self._neighbours], stay, self._neighbours)
        self.moves[ids] = moves
        # the colour each move visits; bumps and empty cells visit none
        self.enters[ids] = np.where(moves != stay, cell_colour[rows[:, :, None], moves], _NO_COLOUR)
        self.task_index[ids] = layouts.task_index
        self.task[ids] = self._tasks[layouts.task_index]
        self.task_length[ids] = self._task_lengths[layouts.task_index]
        self.agent[ids] = layouts.agent
        self.progress[ids] = 0
        self.steps[ids] = 0
        self.success[ids] = False
        self.failure[ids] = False
        self.loads[ids] += 1

        obs = np.zeros((k, c.obs_size), dtype=np.uint8)
        channels = c.num_channels
        obs[rows, layouts.walls * channels + np.arange(c.num_walls)] = 1
        obs[rows, layouts.colours * channels + c.num_walls + np.arange(c.num_colours)] = 1
        obs[np.arange(k), layouts.agent * channels + c.agent_channel] = 1
        if c.task_in_obs:
            slots = self.task[ids, :-1]
            slot_index = self._task_obs_start + np.arange(c.task_slots) * c.num_colours
            r, s = np.nonzero(slots >= 0)
            obs[r, slot_index[s] + slots[r, s]] = 1
        self.obs[ids] = obs

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Apply one action per env; returns (reward, terminated, truncated)."""
        c, rows = self.config, self.rows
        new = self.moves[rows, self.agent, actions]
        entered = self.enters[rows, self.agent, actions]
        correct = entered == self.task[rows, self.progress]  # never true once done (-1)
        self.progress += correct
        self.failure = (entered >= 0) ^ correct
        self.success = self.progress == self.task_length
        terminated = self.failure | self.success
        self.steps += 1
        truncated = (self.steps >= c.horizon) & ~terminated

        agent_channel = c.agent_channel
        self.obs[rows, self.agent * c.num_channels + agent_channel] = 0
        self.obs[rows, new * c.num_channels + agent_channel] = 1
        if c.task_in_obs and correct.any():
            hit = np.nonzero(correct)[0]
            self.obs[hit, self._progress_obs_start + self.progress[hit] - 1] = 1
        self.agent = new
        return self.success.astype(np.float32), terminated, truncated

    @property
    def next_colour(self) -> np.ndarray:
        """(n,) the colour each env must visit next, -1 once its task is complete."""
        return self.task[self.rows, self.progress]

    @property
    def subgoal_index(self) -> np.ndarray:
        """(n,) which pair of the task is being pursued (= number of pairs completed)."""
        return self.progress // 2
