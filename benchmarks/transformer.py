"""Speed of the base transformer, measured side by side in one run (a script, not a test).

    python -m benchmarks.transformer [--width 256] [--depth 6] [--batch 32] [--seconds 10]
                                     [--threads N] [--bf16]

1. Training tokens/s (forward + backward + AdamW step) of our CausalTransformer against
   metacontroller-pytorch's Transformer at the same width and depth on the same PinPad
   batch, in float32, and with `--bf16` also both under CPU bfloat16 autocast. Ours is the
   transformer with PinPad's re-centred grid encoder, without the planner and goal head
   (which the reference has no counterpart of; this batch's layouts also change after
   resets, where the planner would plan every step).
   metacontroller-pytorch is an optional benchmark dependency
   (`pip install metacontroller-pytorch==0.3.3`, which pulls JAX); without it those rows
   are skipped. Goal: ours >= 2x. Also printed: each step's multiply-accumulates (torch's
   FlopCounterMode) and the float32 matrix-product rate of this machine, which give the
   tokens/s a step could reach if it were nothing but matrix products at that rate.
2. Rollout steps/s in the PinPad vector env with the KV cache (one token per step) against
   without it (the whole history re-encoded every step).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

import metacontroller_envs  # noqa: F401
from metacontroller_agents.transformer import CausalTransformer, ModelConfig


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
    config = dataclasses.replace(config, plan_steps=0, goal_head=False)
    model = CausalTransformer(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)

    def step() -> None:
        out = model(obs, model.previous_actions(actions))
        loss = torch.nn.functional.cross_entropy(out.action.transpose(1, 2), actions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def reference_transformer(
    transformer: type, width: int, depth: int, obs_dim: int, **extra: object
) -> object:
    """metacontroller-pytorch's Transformer at our size: 4 heads, its two bodies each half of
    `depth`, continuous observations, PinPad's 4 discrete actions."""
    heads = 4
    body = {"heads": heads, "attn_dim_head": width // heads}
    return transformer(
        width,
        state_embed_readout={"num_continuous": obs_dim},
        action_embed_readout={"num_discrete": 4},
        lower_body={"depth": depth // 2, **body},
        upper_body={"depth": depth - depth // 2, **body},
        **extra,
    )


def reference_train_step(width: int, depth: int, obs: torch.Tensor, actions: torch.Tensor):
    """metacontroller-pytorch 0.3.3's Transformer in behaviour-cloning mode, or None."""
    try:
        from metacontroller import Transformer
    except ImportError:
        return None
    model = reference_transformer(Transformer, width, depth, obs.shape[-1])
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


def bf16_autocast(step: Callable[[], None]) -> Callable[[], None]:
    def autocast_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            step()

    return autocast_step


def macs_per_call(step: Callable[[], None]) -> float:
    """Multiply-accumulates of one call (matrix products and attention, as torch counts)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops() / 2


def matmul_macs_per_second(rows: int, inner: int, cols: int, seconds: float) -> float:
    """Multiply-accumulates/s of one float32 product (rows x inner) @ (inner x cols)."""
    a, b = torch.randn(rows, inner), torch.randn(inner, cols)
    return timed(lambda: a @ b, seconds) * rows * inner * cols


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--batch", type=int, default=32, help="sequences per training batch")
    parser.add_argument("--steps", type=int, default=64, help="tokens per sequence")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--bf16", action="store_true", help="also time bfloat16 autocast")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    obs, actions = pinpad_batch(args.batch, args.steps)
    tokens = args.batch * args.steps
    print(
        f"training, width {args.width}, depth {args.depth}, batch {args.batch} x {args.steps}, "
        f"{torch.get_num_threads()} threads"
    )
    same = (args.width, args.depth, obs, actions)
    rows = {
        "ours": lambda: ours_train_step(*same),
        "metacontroller-pytorch": lambda: reference_train_step(*same),
    }
    gemm_rate = matmul_macs_per_second(tokens, args.width, 3 * args.width, args.seconds / 2)
    for precision in ["float32"] + (["bf16"] if args.bf16 else []):
        speeds: dict[str, float] = {}
        for name, build in rows.items():
            step = build()
            if step is None:
                print(f"  {name:<24} not installed (pip install metacontroller-pytorch==0.3.3)")
                continue
            if precision == "bf16":
                step = bf16_autocast(step)
            speeds[name] = timed(step, args.seconds) * tokens
            line = f"  {name:<24} {precision:<8} {speeds[name]:>8,.0f} tokens/s"
            if precision == "float32":
                macs = macs_per_call(step)
                ceiling = gemm_rate / macs * tokens
                line += f"  ({macs / 1e9:.1f} GMAC/step; all-matmul ceiling {ceiling:,.0f})"
            print(line)
        reference = speeds.get("metacontroller-pytorch")
        if reference:
            ratio = speeds["ours"] / reference
            print(f"  {'ratio':<24} {precision:<8} {ratio:>8.2f}x  (goal >= 2x)")
    print(
        f"  float32 matmul ({tokens} x {args.width}) @ ({args.width} x {3 * args.width}): "
        f"{gemm_rate / 1e9:.1f} GMAC/s"
    )
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
