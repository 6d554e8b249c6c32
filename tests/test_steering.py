"""The steering experiment (experiments/steering.py, the paper's App. B.3.2)."""

import gymnasium as gym
import numpy as np
import pytest

from experiments.steering import SteeringReport, first_pair, pair_codes, steering_experiment
from metacontroller_agents.analysis import load_metacontroller


def test_steering_runs_on_a_trained_metacontroller(discovery_checkpoint):
    base, meta, _ = load_metacontroller(discovery_checkpoint)
    spec = gym.spec("PinPad-v0")
    steering = steering_experiment(base, meta, spec, collect_episodes=64, trials_per_pair=4)
    assert sum(steering.trials.values()) == 4 * len(steering.codes)
    assert 0 <= steering.hit_rate <= 1 and 0 <= steering.mean_code_rate <= 1
    assert "steering" in steering.line()


def test_steering_rejects_bad_input(discovery_checkpoint):
    base, meta, _ = load_metacontroller(discovery_checkpoint)
    spec = gym.spec("PinPad-v0")
    with pytest.raises(ValueError, match="trials_per_pair must be a positive integer"):
        steering_experiment(base, meta, spec, collect_episodes=4, trials_per_pair=0)
    with pytest.raises(ValueError, match="steering is measured on PinPad"):
        steering_experiment(base, meta, gym.spec("CartPole-v1"), collect_episodes=4)
    with pytest.raises(ValueError, match="steering is measured on PinPad"):
        steering_experiment(base, meta, gym.spec("SubgoalBabyAI-Pretrain-v0"),
                            collect_episodes=4)  # fmt: skip


def test_pair_codes_keeps_codes_that_carried_the_whole_pair():
    colours = np.array([[2, 3, 0], [2, 3, -1], [4, 5, 6], [1, 0, -1]])
    codes = np.zeros((4, 3, 2), np.float32)
    codes[0, :2] = [1.0, 2.0]  # one code over both visits of pair 1: kept
    codes[1, 0], codes[1, 1] = [1.0, 2.0], [3.0, 4.0]  # switched between the visits
    codes[2, :2] = [5.0, 6.0]  # pair 2, one code: kept
    codes[3, :2] = [7.0, 8.0]  # 1 then 0 makes no pair
    collected = pair_codes({"colours": colours, "codes": codes})
    assert sorted(collected) == [1, 2]
    np.testing.assert_array_equal(collected[1], [[1.0, 2.0]])
    np.testing.assert_array_equal(collected[2], [[5.0, 6.0]])
    empty = SteeringReport({}, {}, {}, {}, {})
    assert empty.hit_rate == 0.0 and "no code to inject" in empty.line()


def test_first_pair_reads_the_first_two_visits():
    colours = np.array([[2, 3, 0], [3, 2, -1], [6, 7, 1], [4, -1, -1], [1, 0, 6]])
    assert first_pair(colours).tolist() == [1, -1, 3, -1, -1]


