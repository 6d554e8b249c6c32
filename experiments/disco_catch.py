"""Does our Disco103 port learn where DeepMind's does? Catch, with their colab's settings.

    DISCO103_WEIGHTS=... python -m experiments.disco_catch [--steps 1000] [--lr 0.01]

DeepMind's Disco103 colab (google-deepmind/disco_rl, colabs/eval.ipynb) trains an MLP agent
on Catch: a 10 x 5 board, a ball falling one row per step from a random column of the top
row, a paddle on the bottom row moved left, kept or right; +1 if the paddle is under the
ball when it lands, -1 if not (9 steps per episode). Their settings: lr 1e-2, batches of
64 trajectories of 29 steps, 2 envs, a replay of 1,024 trajectories, 1,000 learner steps.
Prints the success rate (caught balls) per logged block of episodes.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np

from metacontroller_agents.checkpoint import load_checkpoint
from metacontroller_agents.disco_agent import DiscoConfig, train_disco
from metacontroller_envs.checks import check_count

ROWS, COLUMNS = 10, 5


class Catch(gym.Env):
    """bsuite's Catch: catch the falling ball with the paddle."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (ROWS * COLUMNS,), np.float32)
        self.action_space = gym.spaces.Discrete(3)  # left, stay, right

    def _obs(self) -> np.ndarray:
        board = np.zeros((ROWS, COLUMNS), np.float32)
        board[self.ball_row, self.ball_column] = 1.0
        board[ROWS - 1, self.paddle] = 1.0
        return board.ravel()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.ball_row, self.ball_column = 0, int(self.np_random.integers(COLUMNS))
        self.paddle = COLUMNS // 2
        return self._obs(), {}

    def step(self, action: int):
        if not self.action_space.contains(action):
            raise ValueError(f"Catch takes actions 0, 1, 2 (left, stay, right), got {action!r}")
        self.paddle = int(np.clip(self.paddle + int(action) - 1, 0, COLUMNS - 1))
        self.ball_row += 1
        landed = self.ball_row == ROWS - 1
        caught = landed and self.paddle == self.ball_column
        reward = (1.0 if caught else -1.0) if landed else 0.0
        return self._obs(), reward, landed, False, {"success": caught} if landed else {}


def train_on_catch(
    steps: int, lr: float = 1e-2, seed: int = 0, weights: str | Path | None = None
) -> list[dict]:
    """Disco103 on Catch with the colab's settings; the logged history (success per block
    of 200 episodes)."""
    check_count("steps", steps)  # 0 would mean no limit: an endless run here
    if "DiscoCatch-v0" not in gym.registry:
        gym.register("DiscoCatch-v0", entry_point="experiments.disco_catch:Catch")
    config = DiscoConfig(env="DiscoCatch-v0", episodes=10**9, steps=steps, num_envs=2,
                         rollout_len=29, batch_size=64, replay_capacity=1024, lr=lr,
                         log_every=200, seed=seed, device="cpu")  # fmt: skip
    with tempfile.TemporaryDirectory() as folder:
        path = train_disco(config, Path(folder) / "catch.pt", weights)
        return load_checkpoint(path, "disco")["history"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="learner steps")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default=None, help="disco_103.npz ($DISCO103_WEIGHTS)")
    args = parser.parse_args()
    for point in train_on_catch(args.steps, args.lr, args.seed, args.weights):
        print(f"episodes {point['episodes']:6d}  learner steps {point['updates']:5d}  "
              f"success {point['success']:.3f}  return {point['return']:+.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
