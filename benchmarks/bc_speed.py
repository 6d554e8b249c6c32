"""Behaviour-cloning speed on CPU: eager float32 against bfloat16 autocast and torch.compile,
side by side in one run (same batches, same model, same thread count).

    python -m benchmarks.bc_speed --dataset pinpad/PinPad-v0/expert-v0 [--steps 12]

Each mode trains a fresh small-preset model (seed 0) for --steps optimiser steps on the
same batches of 64 episodes; tokens/s counts real (unpadded) steps after --warmup steps, so
compile time is reported apart ("first step"). Prints one line per mode and the ratios to
eager. Run it on an idle machine: other jobs on the cores skew every mode alike only if they
run the whole time.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import metacontroller_envs  # noqa: F401  (registers the envs)
from metacontroller_agents.bc import bc_loss
from metacontroller_agents.data import to_torch
from metacontroller_agents.transformer import CausalTransformer, ModelConfig
from metacontroller_envs.data import load_episodes

MODES = ("eager", "bf16", "compile")


def time_mode(mode: str, config: ModelConfig, batches: list[dict], warmup: int) -> dict:
    """Train a fresh model on `batches` in `mode`; tokens/s after `warmup` steps."""
    torch.manual_seed(0)
    model = CausalTransformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    forward = torch.compile(model) if mode == "compile" else model
    seconds = []
    for batch in batches:
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=mode == "bf16"):
            out = forward(batch["observations"][:, :-1], model.previous_actions(batch["actions"]))
            loss, _ = bc_loss(model, out, batch, 0.01, 1.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    tokens = sum(int(batch["mask"].sum()) for batch in batches[warmup:])
    return {"tokens_per_s": tokens / sum(seconds[warmup:]), "first_step_s": seconds[0],
            "loss": float(loss)}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="pinpad/PinPad-v0/expert-v0")
    parser.add_argument("--steps", type=int, default=12, help="optimiser steps per mode")
    parser.add_argument("--warmup", type=int, default=4, help="steps not counted")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.steps:
        parser.error("--warmup must be in [0, --steps)")
    torch.set_num_threads(args.threads)
    data = load_episodes(args.dataset)
    config = ModelConfig.for_env(gym.make(data.env_id), "small")
    rng = np.random.default_rng(0)
    batches = [
        to_torch(data.padded(rng.choice(data.num_episodes, args.batch_size, replace=False)), "cpu")
        for _ in range(args.steps)
    ]
    print(f"torch {torch.__version__}, {args.threads} thread(s), batch {args.batch_size}, "
          f"{args.steps} steps ({args.warmup} not counted)")  # fmt: skip
    results = {}
    for mode in args.modes:
        results[mode] = result = time_mode(mode, config, batches, args.warmup)
        ratio = ""
        if "eager" in results and mode != "eager":
            ratio = f", {result['tokens_per_s'] / results['eager']['tokens_per_s']:.2f}x eager"
        print(f"{mode:>8}: {result['tokens_per_s']:8.0f} tokens/s, first step "
              f"{result['first_step_s']:6.1f} s, last loss {result['loss']:.4f}{ratio}",
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
