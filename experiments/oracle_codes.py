"""How far the MetaController's codes can carry the base model on the post-training task.

    python -m experiments.oracle_codes --checkpoint D.pt [--episodes 256] [--seed 0] \
        [--fit pinpad/PinPad-Posttrain-v0/expert-v0]

Internal RL learns only from whole successes of PinPad-Posttrain-v0, whose pair-to-pair
transitions never occur in pretraining. These measurements say whether that can work:

1. Exploration: free play on PinPad-v0 with a code from the prior N(0, I) at each switch
   (how internal RL's untrained policy explores). Printed: how often each pair follows each
   other pair, and the share of transitions absent from the pretraining tasks.
2. An oracle that knows the task picks, wherever the switch fires, the mean code with
   which free play completed the pair it needs next (`pair_codes`, as in the steering
   experiment). Printed: its success rate on PinPad-Posttrain-v0 and how many of the 6
   pairs its episodes completed.
3. With `--fit DATASET`: the same oracle with the best codes the latent space holds for
   that data, one code per pair fitted through the frozen decoder to the expert's actions
   given the true pair (`PairCodes`). Fitted to the held-out task's own expert data, this
   says whether any codes make its transitions, and how far from the prior they lie.
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
import torch

import metacontroller_envs  # noqa: F401
from experiments.steering import (
    completed_pairs,
    pair_codes,
    pinpad_episode_envs,
    play_controlled,
    play_with_codes,
)
from experiments.subgoal_controllers import PairCodes, fit_to_pairs
from metacontroller_agents.analysis import load_metacontroller
from metacontroller_agents.data import resolve_device
from metacontroller_agents.metacontroller import Controller, MetaController
from metacontroller_agents.runs import dataset_env_spec
from metacontroller_agents.transformer import CausalTransformer
from metacontroller_envs.checks import check_count
from metacontroller_envs.data import load_episodes
from metacontroller_envs.pinpad import NUM_PAIRS, PRETRAIN_TASKS


def pretraining_transitions() -> set[tuple[int, int]]:
    seen = set()
    for task in PRETRAIN_TASKS:
        pairs = [colour // 2 for colour in task[::2]]
        seen |= set(zip(pairs, pairs[1:], strict=False))
    return seen


def oracle_episodes(
    base: CausalTransformer, meta: MetaController, codes: torch.Tensor, episodes: int,
    seed: int, device: torch.device, generator: torch.Generator,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Success and progress (colours visited in order) of post-training episodes whose
    codes the oracle picks: codes[pair the task needs next] wherever the switch fires."""
    envs = pinpad_episode_envs("PinPad-Posttrain-v0", episodes)
    next_colour = np.zeros(episodes, np.int64)

    class OracleControl(Controller):
        def observe(self, infos: dict) -> None:  # play_controlled's infos hook
            next_colour[:] = infos["next_colour"]

    def needed(e: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return codes[torch.as_tensor(next_colour // 2, device=device)]

    played = play_controlled(base, OracleControl(meta, episodes, needed), envs,
                             [seed + i for i in range(episodes)], device, generator)  # fmt: skip
    return played["success"], (played["colours"] >= 0).sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="from mcenv train discover")
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--collect", type=int, default=1024, help="free-play episodes")
    parser.add_argument("--fit", metavar="DATASET", default=None,
                        help="also fit one code per pair to this PinPad expert data")  # fmt: skip
    parser.add_argument("--fit-steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    check_count("episodes", args.episodes)
    check_count("collect", args.collect)
    check_count("fit_steps", args.fit_steps)
    device = resolve_device(args.device)
    base, meta, _ = load_metacontroller(args.checkpoint, device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    played = play_with_codes(base, meta, gym.spec("PinPad-v0"),
                             [args.seed + i for i in range(args.collect)], device,
                             generator)  # fmt: skip

    counts = np.zeros((NUM_PAIRS, NUM_PAIRS), np.int64)
    for pairs in completed_pairs(played["colours"]):
        pairs = pairs[pairs >= 0]
        for before, after in zip(pairs, pairs[1:], strict=False):
            counts[before, after] += 1
    seen = pretraining_transitions()
    novel = sum(
        counts[a, b] for a in range(NUM_PAIRS) for b in range(NUM_PAIRS) if (a, b) not in seen
    )
    print(f"free play with prior codes, {args.collect} episodes of PinPad-v0 "
          f"(layer {meta.config.layer}): pair transitions (row: from, column: to)")  # fmt: skip
    for a in range(NUM_PAIRS):
        print("  ", " ".join(f"{counts[a, b]:5d}{'*' if (a, b) not in seen else ' '}"
                             for b in range(NUM_PAIRS)))  # fmt: skip
    print(f"   {novel} of {counts.sum()} ({novel / max(counts.sum(), 1):.3f}) are absent from "
          "the pretraining tasks (*)")  # fmt: skip

    collected = pair_codes(played)
    missing = [p for p in range(NUM_PAIRS) if p not in collected]
    if missing:
        raise SystemExit(f"free play never completed pairs {missing} first with one code: "
                         "no code to use")  # fmt: skip
    codes = torch.stack([torch.as_tensor(collected[p].mean(0)) for p in range(NUM_PAIRS)])
    codes = codes.to(device)
    print_oracle("collected codes", base, meta, codes, args, device, generator)
    if args.fit is not None:
        data = load_episodes(args.fit, dataset_env_spec(args.fit))
        fitted = PairCodes(meta).to(device)
        nll = fit_to_pairs(base, fitted, data, meta.config.layer, args.fit_steps, 64, 0.05,
                           args.seed, device)  # fmt: skip
        codes = fitted.codes.detach()
        print(f"codes fitted to {args.fit} ({args.fit_steps} steps, action NLL {nll:.3f}): "
              f"norms {np.round(codes.norm(dim=1).tolist(), 2).tolist()} (a draw from the "
              f"prior has norm about {meta.config.latent_dim**0.5:.1f})")  # fmt: skip
        print_oracle("fitted codes", base, meta, codes, args, device, generator)


def print_oracle(
    name: str, base: CausalTransformer, meta: MetaController, codes: torch.Tensor,
    args: argparse.Namespace, device: torch.device, generator: torch.Generator,
) -> None:  # fmt: skip
    success, progress = oracle_episodes(base, meta, codes, args.episodes, args.seed + 10**7,
                                        device, generator)  # fmt: skip
    done = progress // 2
    print(f"oracle with {name} on PinPad-Posttrain-v0, {args.episodes} episodes: success "
          f"{success.mean():.3f}; pairs completed (of 6): mean {done.mean():.2f}, "
          f"histogram {np.bincount(done, minlength=7).tolist()}")  # fmt: skip


if __name__ == "__main__":
    main()
