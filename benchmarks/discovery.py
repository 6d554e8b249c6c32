"""Speed of one discovery step, ours against metacontroller-pytorch 0.3.3, side by side.

    python -m benchmarks.discovery [--width 128] [--depth 4] [--batch 2] [--steps 128]

A discovery step is: the frozen base model with the MetaController in its residual stream
on a batch of sequences, action NLL + KL, backward, an AdamW step of the controller. Ours
runs at the paper's controller sizes (n_z 8, rank 16, GRU 32, embedder 32); the reference
runs its MetaController at its defaults, in the discovery phase. metacontroller-pytorch is
an optional benchmark dependency (`pip install metacontroller-pytorch==0.3.3`); without it
that row is skipped. Goal: ours >= 5x faster.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import torch

import metacontroller_envs  # noqa: F401
from benchmarks.transformer import pinpad_batch, reference_transformer, timed
from metacontroller_agents.discovery import discovery_loss
from metacontroller_agents.metacontroller import MetaController, MetaControllerConfig
from metacontroller_agents.transformer import CausalTransformer, ModelConfig


def ours_discovery_step(width: int, depth: int, obs: torch.Tensor, actions: torch.Tensor):
    env = gym.make("PinPad-v0")
    config = ModelConfig.for_env(env, "paper", width=width, depth=depth, mlp=2 * width,
                                 max_len=obs.shape[1] + 1)  # fmt: skip
    base = CausalTransformer(config).eval().requires_grad_(False)
    meta = MetaController(MetaControllerConfig.for_base(config))
    optimizer = torch.optim.AdamW(meta.parameters(), lr=1e-3)
    # a padded batch as the data pipeline makes it: T + 1 observations, T actions
    batch = {
        "observations": torch.cat([obs, obs[:, -1:]], 1),
        "actions": actions,
        "mask": torch.ones(actions.shape, dtype=torch.bool),
    }

    def step() -> None:
        loss, _, _ = discovery_loss(base, meta, batch, alpha=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def reference_discovery_step(width: int, depth: int, obs: torch.Tensor, actions: torch.Tensor):
    """metacontroller-pytorch 0.3.3's Transformer + MetaController in discovery, or None."""
    try:
        from metacontroller import MetaController as ReferenceMetaController
        from metacontroller import Transformer
    except ImportError:
        return None
    meta = ReferenceMetaController(width)
    model = reference_transformer(Transformer, width, depth, obs.shape[-1], meta_controller=meta)
    optimizer = torch.optim.AdamW(meta.discovery_parameters(), lr=1e-3)
    state = obs.float()
    model.train_discovery(eval_rest=True)

    def step() -> None:
        losses = model(state, actions, discovery_phase=True)
        loss = losses.action_recon + losses.kl + losses.ratio
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch", type=int, default=2, help="sequences per batch")
    parser.add_argument("--steps", type=int, default=128, help="tokens per sequence")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    obs, actions = pinpad_batch(args.batch, args.steps)
    print(f"discovery step, width {args.width}, depth {args.depth}, "
          f"batch {args.batch} x {args.steps} steps")  # fmt: skip
    ours = 1 / timed(ours_discovery_step(args.width, args.depth, obs, actions), args.seconds)
    print(f"  ours                      {ours * 1000:>8.1f} ms per step")
    reference = reference_discovery_step(args.width, args.depth, obs, actions)
    if reference is None:
        print(
            "  metacontroller-pytorch    not installed (pip install metacontroller-pytorch==0.3.3)"
        )
        return
    theirs = 1 / timed(reference, args.seconds)
    print(f"  metacontroller-pytorch    {theirs * 1000:>8.1f} ms per step")
    print(f"  ratio                     {theirs / ours:>8.2f}x   (goal >= 5x)")


if __name__ == "__main__":
    main()
