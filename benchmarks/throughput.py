"""Environment throughput, measured side by side in one run (random actions, observations on).

    python -m benchmarks.throughput [--seconds 3]

Prints single-env steps/s of gym.make("PinPad-v0") and of minigrid's BabyAI-GoToLocal-v0 and
their ratio, then PinPadVectorEnv env-steps/s at N = 1, 64 and 4096.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import gymnasium as gym
import minigrid  # noqa: F401  (registers BabyAI-*)
import numpy as np

import metacontroller_envs  # noqa: F401


def single_env_steps_per_second(env_id: str, seconds: float) -> float:
    env = gym.make(env_id)
    actions = np.random.default_rng(0).integers(env.action_space.n, size=1 << 16).tolist()
    with contextlib.redirect_stdout(io.StringIO()):  # minigrid prints rejected samplings
        env.reset(seed=0)
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for action in actions[:1000]:
                _, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    env.reset()
            steps += 1000
            actions = actions[1000:] + actions[:1000]
        return steps / (time.perf_counter() - start)


def vector_env_steps_per_second(num_envs: int, seconds: float) -> float:
    envs = gym.make_vec("PinPad-v0", num_envs=num_envs, vectorization_mode="vector_entry_point")
    rng = np.random.default_rng(0)
    batches = [rng.integers(4, size=num_envs) for _ in range(64)]
    envs.reset(seed=0)
    for actions in batches[:8]:  # warm up
        envs.step(actions)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        envs.step(batches[calls % len(batches)])
        calls += 1
    return calls * num_envs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()
    pinpad = single_env_steps_per_second("PinPad-v0", args.seconds)
    babyai = single_env_steps_per_second("BabyAI-GoToLocal-v0", args.seconds)
    print("single env, gym.make, random actions")
    print(f"  PinPad-v0            {pinpad:>12,.0f} steps/s")
    print(f"  BabyAI-GoToLocal-v0  {babyai:>12,.0f} steps/s")
    print(f"  ratio                {pinpad / babyai:>12.1f}x   (goal >= 10x)")
    print("PinPadVectorEnv (vector_entry_point), random actions, observations included")
    for n in (1, 64, 4096):
        rate = vector_env_steps_per_second(n, args.seconds)
        print(f"  N = {n:<5}            {rate:>12,.0f} env-steps/s")
    print("  (goal at N = 4096: >= 2,000,000 env-steps/s)")


if __name__ == "__main__":
    main()
