"""benchmarks/disco_catch.py's Catch follows bsuite's rules."""

import numpy as np
import pytest

from benchmarks.disco_catch import COLUMNS, ROWS, Catch


def play(env: Catch, policy) -> tuple[float, int]:
    obs, _ = env.reset(seed=3)
    steps, done = 0, False
    while not done:
        obs, reward, done, truncated, info = env.step(policy(env))
        steps += 1
        assert obs.shape == (ROWS * COLUMNS,) and obs.sum() in (1.0, 2.0)
    return reward, steps


def test_catch_rewards_the_paddle_under_the_ball_after_nine_steps():
    env = Catch()
    follow = lambda e: int(np.sign(e.ball_column - e.paddle)) + 1  # noqa: E731
    assert play(env, follow) == (1.0, ROWS - 1)
    away = lambda e: 0 if e.ball_column >= COLUMNS // 2 else 2  # noqa: E731
    assert play(env, away) == (-1.0, ROWS - 1)
    with pytest.raises(ValueError, match="left, stay, right"):
        env.step(3)
