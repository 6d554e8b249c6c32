"""Checks every env id this package registers must pass (minigrid style)."""

import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import metacontroller_envs
from metacontroller_envs.checks import check_env_id
from metacontroller_envs.pinpad import PinPadEnv, PinPadExpert

ENV_IDS = metacontroller_envs.ENV_IDS
PINPAD_IDS = [i for i in ENV_IDS if isinstance(gym.make(i).unwrapped, PinPadEnv)]
BABYAI_IDS = [i for i in ENV_IDS if i.startswith("SubgoalBabyAI-")]
VISUAL_IDS = [i for i in ENV_IDS if i.startswith("VisualPinPad-")]


def rollout(env, seed, steps, action_seed=0):
    """Observations, rewards and flags of `steps` random actions, resetting on episode end."""
    rng = np.random.default_rng(action_seed)
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for _ in range(steps):
        obs, reward, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        out += [obs, reward, terminated, truncated]
        if terminated or truncated:
            obs, _ = env.reset()
            out.append(obs)
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_ids_are_registered_on_import():
    assert "PinPad-v0" in ENV_IDS and "PinPad-Posttrain-v0" in ENV_IDS
    assert VISUAL_IDS == [
        f"VisualPinPad-{n}-v0" for n in ("Three", "Four", "Five", "Six", "Seven", "Eight")
    ]
    assert BABYAI_IDS == [
        f"SubgoalBabyAI-{n}-v0"
        for n in ("Pretrain", "Posttrain", "GoToSeq", "MiniBossLevel", "BossLevel")
    ]
    for env_id in ENV_IDS:
        assert env_id in gym.registry


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_check_env(env_id):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(gym.make(env_id).unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_check_env(env_id):
    sb3_check_env(gym.make(env_id), warn=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_episode(env_id):
    assert_same(rollout(gym.make(env_id), 7, 300), rollout(gym.make(env_id), 7, 300))
    first_obs = [rollout(gym.make(env_id), seed, 0)[0] for seed in (7, 8, 9)]
    assert not all(np.array_equal(first_obs[0], obs) for obs in first_obs[1:])


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_pickle_round_trip(env_id):
    env = gym.make(env_id)
    env.reset(seed=3)
    env.step(0)
    clone = pickle.loads(pickle.dumps(env))
    for action in [1, 2, 3, 0, 1] * 4:
        a = env.step(action)
        b = clone.step(action)
        assert_same(a[:4], b[:4])
        assert a[4] == b[4]
        if a[2] or a[3]:
            break


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("mode", ["rgb_array", "human"])
def test_render_modes(env_id, mode):
    env = gym.make(env_id, render_mode=mode)
    assert mode in env.metadata["render_modes"] and env.metadata["render_fps"] > 0
    env.reset(seed=0)
    env.step(1)
    frame = env.render()
    if mode == "rgb_array":
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
        assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 3
    else:
        assert frame is None
    env.close()


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.filterwarnings("ignore:.*render_mode")
def test_unknown_render_mode(env_id):
    with pytest.raises(ValueError, match="render_mode"):
        gym.make(env_id, render_mode="ascii")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_unknown_keyword_arguments_are_named_with_the_allowed_ones(env_id):
    check_env_id(env_id, {**gym.spec(env_id).kwargs, "max_episode_steps": 10})
    with pytest.raises(ValueError, match=f"{env_id} takes no keyword argument 'colour': "
                                         "it takes .*render_mode"):  # fmt: skip
        check_env_id(env_id, {"colour": 3, "render_mode": None})


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_spec_json_round_trip(env_id):
    env = gym.make(env_id)
    spec = EnvSpec.from_json(env.spec.to_json())
    assert spec == env.spec
    assert_same(rollout(gym.make(spec), 1, 50), rollout(env, 1, 50))


@pytest.mark.parametrize("env_id", ENV_IDS)
@pytest.mark.parametrize("action", [0, 1, 2, 3, 99])
def test_invalid_action(env_id, action):
    env = gym.make(env_id)
    env.reset(seed=0)
    if action < env.action_space.n:
        env.step(action)
        return
    with pytest.raises(ValueError, match="actions are integers 0..") as error:
        env.step(action)
    assert str(action) in str(error.value)
    with pytest.raises(ValueError, match="invalid action"):
        env.step(1.5)


@pytest.mark.parametrize("env_id", PINPAD_IDS)
def test_pinpad_time_limit_is_exact(env_id):
    env = gym.make(env_id)
    horizon = env.unwrapped.config.horizon
    env.reset(seed=0)
    wanderer = PinPadExpert(env, epsilon=1.0, seed=0)  # random actions that never end it
    for step in range(1, horizon + 1):
        _, _, terminated, truncated, _ = env.step(wanderer.act())
        assert not terminated
        assert truncated == (step == horizon)


@pytest.mark.parametrize("env_id", VISUAL_IDS)
def test_visual_time_limit_is_exact(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    length = env.unwrapped.max_steps
    for step in range(1, length + 1):
        _, _, terminated, truncated, _ = env.step(step % 5)
        assert not terminated
        assert truncated == (step == length)


@pytest.mark.parametrize("env_id", BABYAI_IDS)
def test_babyai_time_limit_is_exact(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    length = env.unwrapped.level.max_steps
    for step in range(1, length + 1):
        _, _, terminated, truncated, _ = env.step(step % 2)  # turning never finishes a mission
        assert not terminated
        assert truncated == (step == length)


def vector_matches_singles(env_id, mode, num_envs=4, steps=120, seed=10):
    vec = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode=mode)
    singles = [gym.make(env_id) for _ in range(num_envs)]
    obs, infos = vec.reset(seed=seed)
    for i, env in enumerate(singles):
        o, info = env.reset(seed=seed + i)
        np.testing.assert_array_equal(obs[i], o)
    rng = np.random.default_rng(0)
    restart = np.zeros(num_envs, dtype=bool)
    for _ in range(steps):
        actions = rng.integers(vec.single_action_space.n, size=num_envs)
        obs, rewards, terms, truncs, infos = vec.step(actions)
        for i, env in enumerate(singles):
            if restart[i]:  # NEXT_STEP autoreset: this step is the reset
                o, info = env.reset()
                r, te, tr = 0.0, False, False
            else:
                o, r, te, tr, info = env.step(int(actions[i]))
            np.testing.assert_array_equal(obs[i], o)
            assert (rewards[i], terms[i], truncs[i]) == (r, te, tr)
            for key, value in info.items():
                if key == "task" and mode == "vector_entry_point":  # padded with -1
                    assert tuple(c for c in infos[key][i] if c >= 0) == value
                else:
                    assert infos[key][i] == value, key
        restart = terms | truncs


@pytest.mark.parametrize("env_id", PINPAD_IDS)
def test_vector_env_equals_single_envs(env_id):
    vector_matches_singles(env_id, "vector_entry_point")


@pytest.mark.parametrize("env_id", [i for i in ENV_IDS if i not in PINPAD_IDS])
def test_sync_vector_env_equals_single_envs(env_id):
    vector_matches_singles(env_id, "sync", num_envs=2, steps=40)


@pytest.mark.parametrize("env_id", BABYAI_IDS + VISUAL_IDS[:1])
def test_async_vector_env_with_shared_memory(env_id):
    envs = gym.make_vec(
        env_id, num_envs=2, vectorization_mode="async", vector_kwargs={"shared_memory": True}
    )
    try:
        obs, _ = envs.reset(seed=0)
        assert obs.shape == (2, *envs.single_observation_space.shape)
        for _ in range(5):
            obs, *_ = envs.step(envs.action_space.sample())
        assert envs.observation_space.contains(obs)
    finally:
        envs.close()


def test_the_ladder_rungs_are_registered_held_out_compositions():
    from metacontroller_envs.pinpad import LADDER, PRETRAIN_TASKS, pair_transitions
    from metacontroller_envs.registry import family, ladder_ids

    seen = set().union(*(pair_transitions(task) for task in PRETRAIN_TASKS))
    assert (0, 2) in seen and pair_transitions((0, 1, 4, 5)) == {(0, 2)}  # the check can fail
    ids = ladder_ids()
    assert list(ids) == [2, 3, 4, 6] and ids[6] == "PinPad-Posttrain-v0"
    for pairs, env_id in ids.items():
        task = LADDER[pairs]
        assert len(task) == 2 * pairs and not pair_transitions(task) & seen, env_id
        env = gym.make(env_id)
        assert family(env_id) == "pinpad" and env.spec.max_episode_steps == 100
        _, info = env.reset(seed=0)
        assert info["task"] == task
