"""The compositional BabyAI family, its observation, subgoal labels and expert."""

import gymnasium as gym
import numpy as np
import pytest

import metacontroller_envs  # noqa: F401
from metacontroller_envs.babyai import POSTTRAIN_TASK, PRETRAIN_TASKS, SUBGOALS, SubgoalBabyAIEnv
from metacontroller_envs.babyai.expert import BabyAIExpert
from metacontroller_envs.babyai.levels import transitions
from metacontroller_envs.babyai.vocab import detokenize, tokenize
from metacontroller_envs.evaluate import evaluate_expert
from metacontroller_envs.experts import make_expert

BABYAI_IDS = [i for i in metacontroller_envs.ENV_IDS if i.startswith("SubgoalBabyAI-")]


def test_posttrain_transitions_never_occur_in_pretraining():
    assert len(PRETRAIN_TASKS) == len(set(PRETRAIN_TASKS)) == 24
    seen = set().union(*(transitions(task) for task in PRETRAIN_TASKS))
    assert transitions(POSTTRAIN_TASK).isdisjoint(seen)
    assert sorted(POSTTRAIN_TASK) == list(range(len(SUBGOALS)))  # every subgoal once


def test_mission_text_spells_the_task():
    env = gym.make("SubgoalBabyAI-Posttrain-v0")
    _, info = env.reset(seed=0)
    clauses = info["mission"].split(", then ")
    assert len(clauses) == info["num_subgoals"] == 6
    for clause, subgoal in zip(clauses, info["task"], strict=True):
        verb, kind, colour = SUBGOALS[subgoal]
        assert clause == f"{verb} the {colour} {kind}"


@pytest.mark.parametrize("env_id", BABYAI_IDS)
def test_observation_layout(env_id):
    env = gym.make(env_id)
    obs, info = env.reset(seed=1)
    level, layout = env.unwrapped.level, env.unwrapped.obs_layout
    grid = obs[layout["grid"]].reshape(layout["grid_shape"])
    x, y = level.agent_pos
    assert grid[y, x, 0] == 10 and grid[y, x, 2] == level.agent_dir  # the agent, row-major
    assert (grid[..., 0] == 10).sum() == 1
    assert detokenize(obs[layout["mission"]]) == info["mission"]
    assert tuple(obs[layout["carrying"]]) == (1, 0)  # empty-handed at the start


@pytest.mark.parametrize("env_id", BABYAI_IDS)
def test_bot_completes_subgoals_one_by_one(env_id):
    env = gym.make(env_id)
    expert = make_expert(env, seed=0)
    assert isinstance(expert, BabyAIExpert)
    seeds = range(4) if "Boss" in env_id or "GoToSeq" in env_id else range(10)
    for seed in seeds:
        _, info = env.reset(seed=seed)
        labels, done = [info["subgoal_index"]], False
        while not done:
            _, reward, terminated, truncated, info = env.step(expert.act())
            labels.append(info["subgoal_index"])
            done = terminated or truncated
        assert info["success"] and reward > 0, seed
        assert labels[0] == 0 and labels[-1] == info["num_subgoals"]
        steps = np.diff(labels)
        assert (steps >= 0).all()
        if info["task"]:  # the family: one subgoal at a time ("and" may finish two at once)
            assert (steps <= 1).all()


def test_noisy_expert_recovers():
    report = evaluate_expert("SubgoalBabyAI-Pretrain-v0", 10, epsilon=0.2)
    assert report.successes >= 9


def test_resets_print_nothing(capfd):
    env = gym.make("SubgoalBabyAI-BossLevel-v0")
    for seed in range(30):
        env.reset(seed=seed)
    assert capfd.readouterr().out == ""


def test_bad_input():
    with pytest.raises(ValueError, match="unknown BabyAI level 'Nope'"):
        SubgoalBabyAIEnv("Nope")
    with pytest.raises(ValueError, match="outside BabyAI's vocabulary"):
        tokenize("go to the pink ball", 10)
    with pytest.raises(ValueError, match="tokens; the observation holds 3"):
        tokenize("go to the red ball", 3)
    with pytest.raises(ValueError, match="needs a SubgoalBabyAI env"):
        BabyAIExpert(gym.make("PinPad-v0"))
    with pytest.raises(ValueError, match="no expert for"):
        make_expert(gym.make("CartPole-v1"))


def test_tokens_round_trip():
    mission = "pick up a red ball on your left, then open the door behind you"
    assert detokenize(tokenize(mission, 48)) == mission
    assert np.array_equal(tokenize(mission, 20)[-3:], [0, 0, 0])
