"""PinPad's rules, once, on batches of numpy arrays.

`PinPadEnv` plays one row of a batch (stepped with an integer row, at Python-scalar cost)
and `PinPadVectorEnv` all N rows, through the same `PinPadBatch.step`, so the two cannot
drift apart. Every episode's layout and task are a pure function of a 64-bit
episode key (a counter-based generator), which is what lets a vector env of N and N single
envs with the same seeds play identical episodes while layouts are drawn in batches.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from metacontroller_envs.pinpad.tasks import PRETRAIN_TASKS, SUBGOAL_SIZE, Task, parse_tasks

#: Discrete(4) actions: index -> (row change, column change). Row 0 is the top of the grid.
ACTION_NAMES: tuple[str, ...] = ("up", "right", "down", "left")
MOVES: tuple[tuple[int, int], ...] = ((-1, 0), (0, 1), (1, 0), (0, -1))

#: A layout whose required colours stay unreachable after this many redraws is an error.
MAX_LAYOUT_ATTEMPTS = 1000
REDRAWS_PER_PASS = 3

_UNREACHED = 1 << 20  # "infinite" distance / blocked label in the grid sweeps
_EMPTY = -2  # cell code of an empty cell, and of a move that visits no colour (unequal to
# every colour and to the -1 task padding)
_BLOCKED = -3  # cell code of a wall and of the spare off-grid cell

#: Env rows of a batch: an int (one env, scalar cost) or an index array.
Rows = int | np.ndarray


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
    """Append the task (one-hot per slot), the progress through it (a flag per visited slot)
    and the next colour (one-hot, zeros once done) to the observation."""
    free_play: bool = False
    """No task is imposed: every colour visit fills the next task slot, and after
    task_slots visits the episode ends, with reward 1 if the visits spell one of `tasks`.
    For evaluating an agent that must infer the task: here it chooses one."""
    start_midway: bool = False
    """Each episode starts at a uniformly drawn slot of its task, as if the colours before it
    had just been visited: their progress flags are set and the agent stands on the last
    one. A reverse curriculum for goal-conditioned training: short episodes that show the
    observations of long tasks, in the states the full task passes through."""

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
        if not 2 <= self.grid_size <= 63:
            raise ValueError(f"grid_size must be in 2..63, got {self.grid_size}")
        if self.num_colours < 1:
            raise ValueError(f"num_colours must be >= 1, got {self.num_colours}")
        if self.num_walls < 0:
            raise ValueError(f"num_walls must be >= 0, got {self.num_walls}")
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        if self.start_midway and self.free_play:
            raise ValueError("start_midway needs a task to start in: it excludes free_play")
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
            obs_size += slots * self.num_colours + slots + self.num_colours
        object.__setattr__(self, "num_cells", cells)
        object.__setattr__(self, "num_channels", channels)
        object.__setattr__(self, "task_slots", slots)
        object.__setattr__(self, "obs_size", obs_size)

    @property
    def agent_channel(self) -> int:
        return self.num_channels - 1

    @property
    def next_colour_obs(self) -> slice:
        """With task_in_obs: where the next colour's one-hot lies, at the observation's end."""
        return slice(self.obs_size - self.num_colours, self.obs_size)

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
_START_STREAM = np.uint64(0x9FB21C651E98DF25)


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
    progress: np.ndarray | None = None  # (k,) task slots counted as visited; None: none


def neighbour_table(grid_size: int, off_grid: int) -> np.ndarray:
    """(G*G, 4) the cell each action leads to from each cell, `off_grid` where it leaves."""
    rows, cols = np.divmod(np.arange(grid_size * grid_size), grid_size)
    table = np.empty((grid_size * grid_size, len(MOVES)), dtype=np.intp)
    for a, (dr, dc) in enumerate(MOVES):
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < grid_size) & (c >= 0) & (c < grid_size)
        table[:, a] = np.where(inside, r * grid_size + c, off_grid)
    return table


def sweep_grid(distances: np.ndarray, blocked: np.ndarray) -> np.ndarray:
    """Turn `distances` (G, G, *batch), 0 at the sources and _UNREACHED elsewhere, into BFS
    distances over the open cells, in place.

    Full-length sweeps in the four directions reach the fixed point in a few rounds (about
    one per turn of the longest shortest path). The batch axes come last so that every
    operation works on contiguous memory.
    """
    floor = np.where(blocked, _UNREACHED, 0).astype(distances.dtype)
    size = distances.shape[0]
    forward, backward = range(1, size), range(size - 2, -1, -1)
    by_col = np.swapaxes(distances, 0, 1)
    floor_col = np.swapaxes(floor, 0, 1)
    while True:
        before = distances.copy()
        for grid, grid_floor in ((distances, floor), (by_col, floor_col)):
            for lines, delta in ((forward, -1), (backward, 1)):
                for i in lines:
                    reach = np.maximum(grid[i + delta] + 1, grid_floor[i])
                    np.minimum(grid[i], reach, out=grid[i])
        if np.array_equal(before, distances):
            return distances


@functools.lru_cache
def _bitboard_cells(grid_size: int) -> tuple[int, np.ndarray, np.ndarray]:
    """Words per bitboard, and the word and bit of each cell: whole rows of grid_size + 1
    bits (a padding bit after each row absorbs moves off its ends) packed into uint64s."""
    stride = grid_size + 1
    rows_per_word = 64 // stride
    r, c = np.divmod(np.arange(grid_size * grid_size), grid_size)
    word, row_in_word = np.divmod(r, rows_per_word)
    bit = np.uint64(1) << (row_in_word * stride + c).astype(np.uint64)
    for table in (word, bit):
        table.flags.writeable = False
    return -(-grid_size // rows_per_word), word, bit


def shortest_legs(config: PinPadConfig, layouts: Layouts) -> np.ndarray:
    """(k, task_slots) steps of the shortest walk for each leg of the task, -1 past its end.

    Leg i goes from where the agent stands (its start, then the colour just visited) to the
    next colour through empty cells only: walls block, and any other colour would end the
    episode. Unreachable legs get _UNREACHED. Breadth-first search on bitboards for all legs
    of all layouts at once (a 7 x 7 grid fits one uint64 word).
    """
    g = config.grid_size
    k = len(layouts.agent)
    tasks = config.task_table()[layouts.task_index][:, :-1]  # (k, L)
    length = tasks.shape[1]
    valid = tasks >= 0
    target = layouts.colours[np.arange(k)[:, None], np.maximum(tasks, 0)]  # (k, L)
    source = np.concatenate([layouts.agent[:, None], target[:, :-1]], axis=1)

    words, cell_word, cell_bit = _bitboard_cells(g)
    stride_bits = np.uint64(g + 1)  # bits per row, padding included
    carry_bits = np.uint64((64 // (g + 1) - 1) * (g + 1))  # offset of a word's last row
    row_mask = np.uint64((1 << g) - 1)  # the real cells of a word's first row
    one = np.uint64(1)

    def bitboards(cells: np.ndarray) -> np.ndarray:
        """(..., words) the bitboard of each row of cells."""
        word, bit = cell_word[cells], cell_bit[cells]
        if words == 1:
            return bit.sum(axis=-1, keepdims=True)  # distinct cells: sum = or
        return np.stack(
            [np.where(word == w, bit, np.uint64(0)).sum(axis=-1) for w in range(words)], -1
        )

    def per_leg_any(flat: np.ndarray) -> np.ndarray:
        return flat != 0 if words == 1 else flat.reshape(legs, words).any(axis=1)

    inside = bitboards(np.arange(g * g))  # every real cell
    occupied = bitboards(np.concatenate([layouts.walls, layouts.colours], axis=1))
    legs = k * length
    leg_start = np.arange(legs) * words  # index of each leg's first word in the flat arrays
    target_cell = target.reshape(-1)
    target_mask = np.zeros(legs * words, dtype=np.uint64)
    target_mask[leg_start + cell_word[target_cell]] = cell_bit[target_cell]
    # The source is not excluded: a leg back to the same colour steps off and returns.
    unseen = (inside & ~occupied[np.arange(legs) // length]).reshape(-1) | target_mask
    frontier = np.zeros(legs * words, dtype=np.uint64)
    source_cell = source.reshape(-1)
    frontier[leg_start + cell_word[source_cell]] = np.where(
        valid.reshape(-1), cell_bit[source_cell], 0
    )
    # Every leg floods on to the end; a leg's distance is one more than the number of
    # rounds after which its target was still unseen. Fewer operations than stopping legs.
    rounds_pending = np.zeros(legs, dtype=np.int64)
    for _ in range(config.num_cells):
        grown = frontier << one
        grown |= frontier >> one
        grown |= frontier << stride_bits
        grown |= frontier >> stride_bits
        if words > 1:  # rows that cross into the neighbouring word of the same leg
            grown_by_leg, frontier_by_leg = (
                grown.reshape(legs, words),
                frontier.reshape(legs, words),
            )
            grown_by_leg[:, 1:] |= frontier_by_leg[:, :-1] >> carry_bits
            grown_by_leg[:, :-1] |= (frontier_by_leg[:, 1:] & row_mask) << carry_bits
        grown &= unseen
        unseen ^= grown
        pending = per_leg_any(unseen & target_mask)
        rounds_pending += pending
        if not (pending & per_leg_any(grown)).any():  # no unreached leg can grow further
            break
        frontier = grown
    steps = np.where(pending, _UNREACHED, rounds_pending + 1)
    steps[~valid.reshape(-1)] = -1
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
    # Keeping the first solvable attempt of each key makes the result independent of how
    # many attempts a pass tries: one first (most draws are solvable), then several.
    first = 0
    while first < MAX_LAYOUT_ATTEMPTS:
        per_pass = 1 if first == 0 else min(REDRAWS_PER_PASS, MAX_LAYOUT_ATTEMPTS - first)
        attempts = np.arange(first, first + per_pass, dtype=np.uint64)
        first += per_pass
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
            layouts = Layouts(walls, colours, agent, task_index)
            return midway(config, keys, layouts) if config.start_midway else layouts
    raise RuntimeError(
        f"no solvable layout in {MAX_LAYOUT_ATTEMPTS} draws for {config}: the walls and "
        "colours nearly always cut the task's colours off; use fewer walls or colours or a "
        "larger grid"
    )


def midway(config: PinPadConfig, keys: np.ndarray, layouts: Layouts) -> Layouts:
    """`layouts` started at a slot drawn uniformly from each task, the agent moved onto the
    colour visited last. Solvability holds: every leg from a colour to the next was checked."""
    lengths = np.array([len(t) for t in config.tasks], dtype=np.uint64)[layouts.task_index]
    progress = (_mix64(keys ^ _START_STREAM) % lengths).astype(np.int64)
    last = config.task_table()[layouts.task_index, np.maximum(progress - 1, 0)]
    on_last = layouts.colours[np.arange(len(keys)), last]
    agent = np.where(progress > 0, on_last, layouts.agent)
    return layouts._replace(agent=agent, progress=progress)


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
        self._neighbours = neighbour_table(c.grid_size, c.num_cells)  # off grid -> spare cell
        self._task_obs_start = c.num_cells * c.num_channels
        self._progress_obs_start = self._task_obs_start + c.task_slots * c.num_colours
        self._next_obs_start = c.next_colour_obs.start
        # layout
        self.walls = np.zeros((n, c.num_walls), dtype=np.intp)
        self.colours = np.zeros((n, c.num_colours), dtype=np.intp)
        self.cell_code = np.full((n, c.num_cells + 1), _BLOCKED, dtype=np.int16)
        """Per cell: its colour, _EMPTY or _BLOCKED (a wall); the spare last cell is off grid."""
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
        code = np.full((k, c.num_cells + 1), _EMPTY, dtype=np.int16)
        code[:, -1] = _BLOCKED
        code[rows, layouts.walls] = _BLOCKED
        code[rows, layouts.colours] = np.arange(c.num_colours)
        self.cell_code[ids] = code
        if c.free_play:  # the agent's visits write the task
            self.task_index[ids] = -1
            self.task[ids] = -1
            self.task_length[ids] = c.task_slots
        else:
            self.task_index[ids] = layouts.task_index
            self.task[ids] = self._tasks[layouts.task_index]
            self.task_length[ids] = self._task_lengths[layouts.task_index]
        self.agent[ids] = layouts.agent
        self.progress[ids] = 0 if layouts.progress is None else layouts.progress
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
            progress = self.progress[ids]
            obs[rows, self._progress_obs_start + np.arange(c.task_slots)] = (
                np.arange(c.task_slots) < progress[:, None]
            )
            following = self.task[ids, progress]
            has_next = np.flatnonzero(following >= 0)
            obs[has_next, self._next_obs_start + following[has_next]] = 1
        self.obs[ids] = obs

    def moves(self, rows: Rows, actions: Any) -> tuple[Any, Any]:
        """Where `actions` take the agents of envs `rows`, and the colour each move visits.

        The movement rule: a move into a wall or off the grid is a bump (the agent stays and
        visits nothing); a move onto a coloured cell visits that colour, otherwise _EMPTY.
        Broadcasts like numpy indexing; plain ints work too, at Python-scalar cost.
        """
        agent = self.agent[rows]
        target = self._neighbours[agent, actions]
        code = self.cell_code[rows, target]
        bump = code == _BLOCKED
        return target + (agent - target) * bump, code + (_EMPTY - code) * bump

    def step(self, actions: Any, rows: Rows | None = None) -> tuple[Any, Any, Any]:
        """Apply one action per env of `rows` (default all); returns (reward, terminated,
        truncated). An int `rows` with an int action steps that one env with scalar cost,
        which is how the single env uses this, the one implementation of the rules."""
        c = self.config
        rows = self.rows if rows is None else rows
        agent, progress = self.agent[rows], self.progress[rows]
        new, entered = self.moves(rows, actions)
        length = self.task_length[rows]
        if c.free_play:  # any visit is right: it fills the next slot of the task
            expected = np.where((entered >= 0) & (progress < length), entered, -1)
            self.task[rows, progress] = expected
        else:
            expected = self.task[rows, progress]  # -1 once done: never visited
        correct = entered == expected
        progress = progress + correct
        failure = (entered >= 0) ^ correct
        finished = progress == length
        success = finished & self._is_task(self.task[rows, :-1]) if c.free_play else finished
        terminated = failure | finished
        steps = self.steps[rows] + 1
        truncated = (steps >= c.horizon) & ~terminated
        self.agent[rows], self.progress[rows], self.steps[rows] = new, progress, steps
        self.success[rows], self.failure[rows] = success, failure

        self.obs[rows, agent * c.num_channels + c.agent_channel] = 0
        self.obs[rows, new * c.num_channels + c.agent_channel] = 1
        if c.task_in_obs:  # writes that change nothing unless the visit was correct
            self.obs[rows, self._progress_obs_start + progress - 1] |= correct
            before, after = self.task[rows, progress - correct], self.task[rows, progress]
            self.obs[rows, self._next_obs_start + np.maximum(before, 0)] &= ~correct
            self.obs[rows, self._next_obs_start + np.maximum(after, 0)] |= correct & (after >= 0)
        return success.astype(np.float32), terminated, truncated

    def _is_task(self, sequences: np.ndarray) -> np.ndarray:
        """Whether each colour sequence (..., task_slots) is one of the config's tasks."""
        return (sequences[..., None, :] == self._tasks[:, :-1]).all(axis=-1).any(axis=-1)

    @property
    def next_colour(self) -> np.ndarray:
        """(n,) the colour each env must visit next, -1 once its task is complete."""
        return self.task[self.rows, self.progress]

    @property
    def subgoal_index(self) -> np.ndarray:
        """(n,) which pair of the task is being pursued (= number of pairs completed)."""
        return self.progress // SUBGOAL_SIZE
