"""Speed of the base transformer, measured side by side in one run (a script, not a test).

    python benchmarks/transformer.py [--width 256] [--depth 6] [--batch 32] [--seconds 10]

1. Training tokens/s (forward + backward + AdamW step) of our CausalTransformer against
   metacontroller-pytorch's Transformer at the same width and depth on the same PinPad
   batch. metacontroller-pytorch is an optional benchmark dependency
   (`pip install metacontroller-pytorch==0.3.3`, which pulls JAX); without it that row is
   skipped. Goal: ours >= 2x.
2. Rollout steps/s in the PinPad vector env with the KV cache (one token per step) against
   without it (the whole history re-encoded every step).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

import metacontroller_envs  # noqa: F401
from agents.config import ModelConfig
from agents.transformer import CausalTransformer


def timed(step: Callable[[], None], seconds: float) -> float:
    """Calls per second of `step`, after two warm-up calls."""
    step()
    step()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        calls += 1
    return calls / (time.perf_counter() - start)


def pinpad_batch(batch: int, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    envs = gym.make_vec("PinPad-v0", num_envs=batch, vectorization_mode="vector_entry_point")
    obs, _ = envs.reset(seed=0)
    rng = np.random.default_rng(0)
    observations, actions = [obs], []
    for _ in range(steps - 1):
        action = rng.integers(4, size=batch)
        obs, *_ = envs.step(action)
        observations.append(obs)
        actions.append(action)
    actions.append(rng.integers(4, size=batch))
    return torch.as_tensor(np.stack(observations, 1)), torch.as_tensor(np.stack(actions, 1))


def ours_train_step(width: int, depth: int, obs: torch.Tensor, actions: torch.Tensor):
    env = gym.make("PinPad-v0")
    config = ModelConfig.for_env(env, "paper", width=width, depth=depth, mlp=2 * width)
    model = CausalTransformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)

    def step() -> None:
        out = model(obs, model.previous_actions(actions))
        loss = torch.nn.functional.cross_entropy(out.action.transpose(1, 2), actions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def reference_train_step(width: int, depth: int, obs: torch.Tensor, actions: torch.Tensor):
    """metacontroller-pytorch 0.3.3's Transformer in behaviour-cloning mode, or None."""
    try:
        from metacontroller import Transformer
    except ImportError:
        return None
    heads = 4
    model = Transformer(
        width,
        state_embed_readout={"num_continuous": obs.shape[-1]},
        action_embed_readout={"num_discrete": 4},
        lower_body={"depth": depth // 2, "heads": heads, "attn_dim_head": width // heads},
        upper_body={"depth": depth - depth // 2, "heads": heads, "attn_dim_head": width // heads},
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    state = obs.float()

    def step() -> None:
        losses = model(state, actions)  # behaviour cloning: (state_clone, action_clone) losses
        loss = losses.action + losses.state
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


@torch.no_grad()
def rollout_steps_per_second(
    model: CausalTransformer, envs: int, steps: int, cached: bool
) -> float:
    vec = gym.make_vec("PinPad-v0", num_envs=envs, vectorization_mode="vector_entry_point")
    obs, _ = vec.reset(seed=0)
    start = time.perf_counter()
    history, actions = [torch.as_tensor(obs)], [torch.full((envs,), model.start_action)]
    cache = model.new_cache(envs)
    for _ in range(steps):
        if cached:
            logits = model.step(history[-1], actions[-1], cache).action[:, 0]
        else:
            logits = model(torch.stack(history, 1), torch.stack(actions, 1)).action[:, -1]
        action = logits.argmax(-1)
        obs, *_ = vec.step(action.numpy())
        history.append(torch.as_tensor(obs))
        actions.append(action)
    return steps * envs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32, help="sequences per training batch")
    parser.add_argument("--steps", type=int, default=64, help="tokens per sequence")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    obs, actions = pinpad_batch(args.batch, args.steps)
    tokens = args.batch * args.steps
    print(f"training, width {args.width}, depth {args.depth}, batch {args.batch} x {args.steps}")
    ours = timed(ours_train_step(args.width, args.depth, obs, actions), args.seconds) * tokens
    print(f"  ours                      {ours:>10,.0f} tokens/s")
    reference = reference_train_step(args.width, args.depth, obs, actions)
    if reference is None:
        print(
            "  metacontroller-pytorch    not installed (pip install metacontroller-pytorch==0.3.3)"
        )
    else:
        theirs = timed(reference, args.seconds) * tokens
        print(f"  metacontroller-pytorch    {theirs:>10,.0f} tokens/s")
        print(f"  ratio                     {ours / theirs:>10.2f}x   (goal >= 2x)")
    env = gym.make("PinPad-v0")
    model = CausalTransformer(ModelConfig.for_env(env, "paper", width=args.width, depth=args.depth))
    model.eval()
    print("rollout in the PinPad vector env, 64 envs x 100 steps")
    cached = rollout_steps_per_second(model, 64, 100, cached=True)
    full = rollout_steps_per_second(model, 64, 100, cached=False)
    print(f"  with the KV cache         {cached:>10,.0f} env-steps/s")
    print(f"  without (full history)    {full:>10,.0f} env-steps/s")
    print(f"  ratio                     {cached / full:>10.2f}x")


if __name__ == "__main__":
    main()
