"""PinPad's rules, expert, observation and bad-input errors."""

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import metacontroller_envs  # noqa: F401
from metacontroller_envs.pinpad import (
    POSTTRAIN_TASK,
    PRETRAIN_TASKS,
    PinPadEnv,
    PinPadExpert,
    PinPadVectorEnv,
)
from metacontroller_envs.pinpad.core import (
    _UNREACHED,
    Layouts,
    PinPadConfig,
    sample_layouts,
    shortest_legs,
)

UP, RIGHT, DOWN, LEFT = range(4)


def cell(row, col, g=7):
    return row * g + col


def env_with_layout(task, walls, colours, agent, **kwargs):
    """A PinPad env whose current episode has exactly this layout."""
    env = PinPadEnv(task=task, **kwargs)
    env.reset(seed=0)
    env.batch.load(
        np.array([env.row]),
        Layouts(np.array([walls]), np.array([colours]), np.array([agent]), np.array([0])),
    )
    return env


# agent in the middle; colour 0 to its right, 1 to its left, 2 above, a wall below and
# above colour 0; colours 3..7 along the bottom row.
WALLS = [cell(4, 3), cell(2, 4), cell(0, 0), cell(0, 6)]
COLOURS = [cell(3, 4), cell(3, 2), cell(2, 3)] + [cell(6, c) for c in range(2, 7)]
START = cell(3, 3)


def test_paper_sizes():
    env = gym.make("PinPad-v0")
    assert env.observation_space.shape == (637,) and env.action_space.n == 4
    config = env.unwrapped.config
    assert (config.grid_size, config.num_colours, config.num_walls, config.horizon) == (
        7,
        8,
        4,
        100,
    )
    assert config.tasks == PRETRAIN_TASKS and len(PRETRAIN_TASKS) == 16
    assert gym.make("PinPad-Posttrain-v0").unwrapped.config.tasks == (POSTTRAIN_TASK,)


def test_tasks_are_drawn_from_table_a1():
    env = gym.make("PinPad-v0")
    seen = {env.reset(seed=s)[1]["task"] for s in range(400)}
    assert seen == set(PRETRAIN_TASKS)


def test_wrong_colour_ends_the_episode_with_reward_0():
    env = env_with_layout("0-1", WALLS, COLOURS, START)
    _, reward, terminated, truncated, info = env.step(UP)  # colour 2
    assert (reward, terminated, truncated, info["success"]) == (0.0, True, False, False)
    assert info["colours_visited"] == 0


def test_success_gives_1():
    env = env_with_layout("0-1", WALLS, COLOURS, START)
    _, reward, terminated, _, info = env.step(RIGHT)
    assert (reward, terminated, info["colours_visited"], info["next_colour"]) == (0, False, 1, 1)
    env.step(LEFT)
    _, reward, terminated, _, info = env.step(LEFT)
    assert (reward, terminated, info["success"], info["next_colour"]) == (1.0, True, True, -1)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(LEFT)


def test_bumps_are_no_ops():
    env = env_with_layout("0-1", WALLS, COLOURS, START)
    before = env.batch.obs[env.row].copy()
    obs, reward, terminated, truncated, info = env.step(DOWN)  # the wall
    np.testing.assert_array_equal(obs, before)
    assert (reward, terminated, truncated, info["colours_visited"]) == (0.0, False, False, 0)
    edge = env_with_layout("0-1", WALLS, COLOURS, cell(0, 3))
    obs, *_ = edge.step(UP)  # off the grid
    assert edge.batch.agent[env.row] == cell(0, 3)


def test_free_play_lets_the_agent_choose_the_task():
    env = env_with_layout("1-0", WALLS, COLOURS, START, free_play=True)
    assert env._info()["next_colour"] == -1
    steps = [env.step(a) for a in (LEFT, RIGHT, RIGHT)]  # visit 1, back, visit 0
    assert [s[1:4] for s in steps] == [(0.0, False, False)] * 2 + [(1.0, True, False)]
    assert steps[-1][4]["task"] == (1, 0) and steps[-1][4]["success"]
    env = env_with_layout("1-0", WALLS, COLOURS, START, free_play=True)
    steps = [env.step(a) for a in (UP, DOWN, LEFT)]  # visit 2 (no failure), back, visit 1
    assert [s[1:4] for s in steps] == [(0.0, False, False)] * 2 + [(0.0, True, False)]
    assert steps[-1][4]["task"] == (2, 1) and not steps[-1][4]["success"]


def test_reentering_counts_only_from_a_different_cell():
    env = env_with_layout("0-0", WALLS, COLOURS, START)
    _, _, _, _, info = env.step(RIGHT)
    assert info["colours_visited"] == 1
    _, _, terminated, _, info = env.step(UP)  # bump while standing on colour 0
    assert not terminated and info["colours_visited"] == 1
    env.step(LEFT)
    _, reward, terminated, _, info = env.step(RIGHT)
    assert (reward, terminated, info["colours_visited"]) == (1.0, True, 2)


def test_subgoal_index_counts_pairs():
    env = gym.make("PinPad-v0")
    expert = PinPadExpert(env, seed=0)
    _, info = env.reset(seed=5)
    indices = [info["subgoal_index"]]
    done = False
    while not done:
        _, _, terminated, truncated, info = env.step(expert.act())
        indices.append(info["subgoal_index"])
        assert info["subgoal_index"] == info["colours_visited"] // 2
        done = terminated or truncated
    assert indices[0] == 0 and indices[-1] == 3 and sorted(indices) == indices


def test_task_in_obs():
    env = gym.make("PinPad-v0", task_in_obs=True)
    assert env.observation_space.shape == (637 + 6 * 8 + 6 + 8,)
    expert = PinPadExpert(env, seed=0)
    obs, info = env.reset(seed=2)
    task_part = obs[637 : 637 + 48].reshape(6, 8)
    assert tuple(task_part.argmax(axis=1)) == info["task"] and task_part.sum() == 6
    named = env.unwrapped.obs_layout["next_colour"]
    assert named == slice(637 + 54, 637 + 62)
    assert "next_colour" not in gym.make("PinPad-v0").unwrapped.obs_layout
    for _ in range(200):
        progress, next_colour = obs[637 + 48 : 637 + 54], obs[named]
        assert progress.sum() == info["colours_visited"]
        assert next_colour.sum() == (info["next_colour"] >= 0)
        assert info["next_colour"] < 0 or next_colour[info["next_colour"]] == 1
        obs, _, terminated, truncated, info = env.step(expert.act())
        if terminated or truncated:
            break
    assert info["success"] and obs[637 + 54 :].sum() == 0


def test_start_midway_shows_the_full_task_after_its_first_visits():
    """A midway start is exactly the state the full task reaches when the expert has
    visited the colours before its slot on the same layout; the expert then succeeds."""
    tasks, n = ["0-1-4-5-0-1", "2-3-6-7-4-5", "6-7"], 300
    full = PinPadVectorEnv(num_envs=n, tasks=tasks, task_in_obs=True)
    midway = PinPadVectorEnv(num_envs=n, tasks=tasks, task_in_obs=True, start_midway=True)
    seen, _ = full.reset(seed=0)
    start, info = midway.reset(seed=0)
    progress = info["colours_visited"]
    assert set(progress.tolist()) == set(range(6))  # every slot of the six-colour tasks
    assert (progress < midway.batch.task_length).all()
    assert (midway.batch.walls == full.batch.walls).all()
    expert, reached = PinPadExpert(full, seed=0), progress == 0
    while not reached.all():
        obs, _, _, _, info = full.step(expert.act())
        now = ~reached & (info["colours_visited"] == progress)
        seen[now], reached = obs[now], reached | now
    assert (seen == start).all()

    expert, outcome = PinPadExpert(midway, seed=0), np.full(n, -1.0)
    while (outcome < 0).any():
        _, reward, terminated, truncated, _ = midway.step(expert.act())
        first = (outcome < 0) & (terminated | truncated)
        outcome[first] = reward[first]
    assert (outcome == 1.0).all()


def test_start_midway_is_reproducible_and_excludes_free_play():
    draws = []
    for _ in range(2):
        env = PinPadEnv(task_in_obs=True, start_midway=True)
        env.reset(seed=3)
        draws.append([env.reset()[1]["colours_visited"] for _ in range(50)])
    assert draws[0] == draws[1] and len(set(draws[0])) == 6
    with pytest.raises(ValueError, match="start_midway .* excludes free_play"):
        PinPadEnv(start_midway=True, free_play=True)


def test_layouts_are_solvable_within_the_horizon():
    config = PinPadConfig(tasks=(POSTTRAIN_TASK,))
    keys = np.arange(2000, dtype=np.uint64)
    layouts = sample_layouts(config, keys)
    legs = shortest_legs(config, layouts)
    assert legs.min() >= 1 and legs.sum(axis=1).max() <= config.horizon
    # the sampler really redraws: without it some raw draws are unsolvable
    occupied = np.concatenate([layouts.walls, layouts.colours, layouts.agent[:, None]], axis=1)
    assert all(len(set(row)) == 13 for row in occupied)


def reference_leg(g, blocked, source, target):
    """Plain breadth-first search over (row, col) cells: steps from source onto target."""
    frontier, seen = {divmod(source, g)}, set()
    for distance in range(1, g * g + 1):
        nxt = set()
        for r, c in frontier:
            for dr, dc in ((-1, 0), (0, 1), (1, 0), (0, -1)):
                rr, cc = r + dr, c + dc
                if 0 <= rr < g and 0 <= cc < g and (rr, cc) not in seen:
                    if rr * g + cc == target:
                        return distance
                    if rr * g + cc not in blocked:
                        nxt.add((rr, cc))
        seen |= nxt
        frontier = nxt
    return None


@pytest.mark.parametrize(
    "grid_size, num_walls, tasks",
    [
        (7, 4, PRETRAIN_TASKS),
        (3, 2, ("0-1-2", "1-1-0-0")),  # a colour twice in a row: step off and back
        (10, 25, PRETRAIN_TASKS),  # rows spread over two bitboard words
        (40, 700, PRETRAIN_TASKS),  # one row per word
    ],
)
def test_shortest_legs_match_a_plain_bfs(grid_size, num_walls, tasks):
    config = PinPadConfig(
        grid_size=grid_size,
        num_walls=num_walls,
        num_colours=3 if grid_size == 3 else 8,
        tasks=tasks,
    )
    rng = np.random.default_rng(grid_size)
    k, w, o = 150, config.num_walls, config.num_colours
    cells = np.argsort(rng.random((k, config.num_cells)), axis=1)[:, : w + o + 1]
    layouts = Layouts(
        cells[:, :w], cells[:, w : w + o], cells[:, -1], rng.integers(len(tasks), size=k)
    )
    legs = shortest_legs(config, layouts)
    unreached = 0
    for i in range(k):
        task = config.tasks[layouts.task_index[i]]
        blocked = set(layouts.walls[i]) | set(layouts.colours[i])
        source = layouts.agent[i]
        for leg, colour in enumerate(task):
            target = layouts.colours[i, colour]
            expected = reference_leg(grid_size, blocked - {target}, source, target)
            unreached += expected is None
            assert legs[i, leg] == (_UNREACHED if expected is None else expected), (i, leg)
            source = target
        assert (legs[i, len(task) :] == -1).all()
    assert unreached > 0  # the cases include cut-off colours


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        ("PinPad-v0", {}),
        ("PinPad-Posttrain-v0", {}),
        ("PinPad-v0", {"tasks": ["0-0-1", "2-3-3-2"]}),  # a colour twice in a row
    ],
)
def test_expert_solves_every_episode(env_id, kwargs):
    env = gym.make(env_id, **kwargs)
    expert = PinPadExpert(env, seed=1)
    for seed in range(150):
        env.reset(seed=seed)
        done = False
        while not done:
            _, reward, terminated, truncated, info = env.step(expert.act())
            done = terminated or truncated
        assert info["success"] and reward == 1.0, seed


@pytest.mark.slow
@pytest.mark.parametrize("env_id", ["PinPad-v0", "PinPad-Posttrain-v0"])
def test_expert_success_over_1000_seeds(env_id):
    from metacontroller_envs.evaluate import evaluate_expert

    report = evaluate_expert(env_id, 1000)
    assert report.successes == 1000, report.line()


def test_expert_on_the_vector_env():
    envs = PinPadVectorEnv(num_envs=32, tasks=[POSTTRAIN_TASK])
    expert = PinPadExpert(envs, seed=0)
    envs.reset(seed=0)
    finished = successes = 0
    while finished < 100:
        actions = expert.act()
        assert actions.shape == (32,)
        _, rewards, terms, truncs, _ = envs.step(actions)
        finished += int((terms | truncs).sum())
        successes += int(rewards.sum())
    assert successes == finished


def test_epsilon_expert_never_ends_episodes_by_itself():
    env = gym.make("PinPad-v0")
    expert = PinPadExpert(env, epsilon=1.0, seed=0)
    env.reset(seed=0)
    for _ in range(100):
        _, _, terminated, _, _ = env.step(expert.act())
        assert not terminated


def test_same_step_autoreset_reports_final_obs():
    envs = PinPadVectorEnv(num_envs=8, autoreset_mode="SameStep")
    envs.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(50):
        obs, _, terms, truncs, infos = envs.step(rng.integers(4, size=8))
        done = terms | truncs
        if done.any():
            assert infos["_final_obs"].tolist() == done.tolist()
            i = int(np.nonzero(done)[0][0])
            assert infos["final_obs"][i].shape == (637,)
            assert infos["colours_visited"][i] == 0  # the new episode
            return
    pytest.fail("no episode ended")


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    actions=st.lists(st.integers(0, 3), min_size=1, max_size=80),
    task_in_obs=st.booleans(),
)
def test_random_actions_keep_invariants(seed, actions, task_in_obs):
    env = PinPadEnv(task_in_obs=task_in_obs)
    obs, info = env.reset(seed=seed)
    config, batch = env.config, env.batch
    progress = 0
    for action in actions:
        grid = obs[: config.num_cells * config.num_channels].reshape(config.num_cells, -1)
        assert (grid.sum(axis=0) == 1).all()  # each wall, colour and the agent exactly once
        assert grid[:, -1].argmax() == batch.agent[env.row]
        assert not grid[batch.agent[env.row], : config.num_walls].any()  # never on a wall
        assert info["colours_visited"] >= progress
        progress = info["colours_visited"]
        obs, reward, terminated, truncated, info = env.step(action)
        assert reward == float(info["success"])
        if terminated or truncated:
            obs, info = env.reset()
            progress = 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "0-9"}, "unknown colour"),
        ({"task": ""}, "empty task"),
        ({"tasks": []}, "non-empty list"),
        ({"task": [0, 1], "tasks": [[0, 1]]}, "not both"),
        ({"grid_size": 3}, "use grid_size >= 4"),
        ({"num_walls": -1}, "num_walls"),
        ({"horizon": 0}, "horizon"),
        ({"render_mode": "ascii"}, "render_mode"),
    ],
)
def test_bad_configuration(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PinPadEnv(**kwargs)
    with pytest.raises(ValueError, match=message):
        PinPadVectorEnv(num_envs=2, **kwargs)


def test_bad_vector_actions():
    envs = PinPadVectorEnv(num_envs=3)
    envs.reset(seed=0)
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        envs.step(np.zeros(2, dtype=int))
    with pytest.raises(ValueError, match="invalid action"):
        envs.step(np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="integer array"):
        envs.step(np.zeros(3))


def test_bad_expert_input():
    with pytest.raises(ValueError, match="needs a PinPad env"):
        PinPadExpert(gym.make("VisualPinPad-Three-v0"))
    with pytest.raises(ValueError, match="epsilon"):
        PinPadExpert(gym.make("PinPad-v0"), epsilon=1.5)
