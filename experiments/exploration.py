"""First successes: how often each way of exploring completes a held-out rung before any
learning. RL from a sparse reward learns nothing until it meets a success, so an explorer
that meets none in a budget leaves every learner on it, on- or off-policy, at zero.

    python -m experiments.exploration run --checkpoint pretrained:PinPad-v0 \
        --rungs PinPad-Ladder3-v0 --episodes 12800 --out exploration/
    python -m experiments.exploration report --out exploration/

Each explorer is an untrained internal-RL run (metacontroller_agents.internal_rl) whose
batches are played and not learned from, with the layouts and seeds its training would
use: codes z from the prior N(0, I) at each switch (internal RL's start), the same at a
wider scale, a code every step (beta = 1), and the base model's own actions sampled at
temperatures up to uniform in effect (raw-action RL's start, and what a raw-action
learner could explore with). One JSON per explorer and rung under OUT/, skipped on a rerun.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from metacontroller_agents.internal_rl import InternalRL, InternalRLConfig
from metacontroller_envs.evaluate import wilson_interval
from metacontroller_envs.files import write_json_atomically

#: The explorers, as the InternalRLConfig fields that make each.
EXPLORERS: dict[str, dict[str, Any]] = {
    "codes, prior N(0, I)": {},
    "codes, std 2": {"init_std": 2.0},
    "codes, std 3": {"init_std": 3.0},
    "codes, std 4": {"init_std": 4.0},
    "codes every step (beta = 1)": {"force_switch": True},
    "raw actions, T = 1": {"raw_actions": True},
    "raw actions, T = 2": {"raw_actions": True, "temperature": 2.0},
    "raw actions, T = 3": {"raw_actions": True, "temperature": 3.0},
    "raw actions, T = 4": {"raw_actions": True, "temperature": 4.0},
    "raw actions, T = 6": {"raw_actions": True, "temperature": 6.0},
    "raw actions, T = 8": {"raw_actions": True, "temperature": 8.0},
    "raw actions, uniform (T = 1e6)": {"raw_actions": True, "temperature": 1e6},
}


def explore(checkpoint: str, env_id: str, explorer: str, episodes: int, seed: int,
            device: str) -> dict[str, Any]:  # fmt: skip
    """Play `episodes` episodes with one untrained explorer; count the successes."""
    config = InternalRLConfig(checkpoint=checkpoint, env=env_id, episodes=episodes, seed=seed,
                              device=device, **EXPLORERS[explorer])  # fmt: skip
    run = InternalRL(config)
    clock = time.perf_counter()
    successes, steps, played = 0, 0, 0
    for iteration in range(-(-episodes // config.batch_episodes)):
        batch = run.collect(iteration)
        successes += int(batch.success.sum())
        steps += int(batch.lengths.sum())
        played += len(batch.success)
    seconds = time.perf_counter() - clock
    return {"explorer": explorer, "env": env_id, "seed": seed, "checkpoint": checkpoint,
            "config": EXPLORERS[explorer], "episodes": played, "successes": successes,
            "success": successes / played, "interval": wilson_interval(successes, played),
            "mean_length": steps / played, "seconds": seconds}  # fmt: skip


def file_of(out: Path, env_id: str, explorer: str, seed: int) -> Path:
    slug = re.sub(r"[^0-9A-Za-z.]+", "-", explorer).strip("-")
    return out / env_id / f"{slug}.seed{seed}.json"


def run_command(args: argparse.Namespace) -> None:
    for env_id in args.rungs:
        for explorer in args.explorers:
            path = file_of(Path(args.out), env_id, explorer, args.seed)
            if path.exists():
                continue
            result = explore(args.checkpoint, env_id, explorer, args.episodes, args.seed,
                             args.device)  # fmt: skip
            write_json_atomically(path, result)
            print(
                f"{env_id} {explorer}: {result['successes']} / {result['episodes']}, "
                f"length {result['mean_length']:.1f}, {result['seconds']:.0f} s",
                flush=True,
            )


def report_command(args: argparse.Namespace) -> None:
    results = [json.loads(p.read_text()) for p in sorted(Path(args.out).rglob("*.json"))]
    rungs = sorted({r["env"] for r in results})
    print("| explorer | " + " | ".join(rungs) + " |")
    print("|---|" + "---|" * len(rungs))
    for explorer in EXPLORERS:
        cells = []
        for env_id in rungs:
            found = [r for r in results if r["explorer"] == explorer and r["env"] == env_id]
            wins, played = sum(r["successes"] for r in found), sum(r["episodes"] for r in found)
            if not played:
                cells.append("")
                continue
            low, high = wilson_interval(wins, played)
            length = np.mean([r["mean_length"] for r in found])
            cells.append(f"{wins} / {played} ({wins / played:.4f} [{low:.4f}, {high:.4f}]), "
                         f"length {length:.0f}")  # fmt: skip
        if any(cells):
            print(f"| {explorer} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="play each explorer on each rung")
    run.add_argument("--checkpoint", required=True, help="discovery checkpoint")
    run.add_argument("--rungs", nargs="+", required=True)
    run.add_argument("--explorers", nargs="+", choices=list(EXPLORERS), default=list(EXPLORERS))
    run.add_argument("--episodes", type=int, default=12800)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="cpu")
    run.add_argument("--out", required=True)
    report = commands.add_parser("report", help="a markdown table, explorer x rung")
    report.add_argument("--out", required=True)
    args = parser.parse_args()
    {"run": run_command, "report": report_command}[args.command](args)


if __name__ == "__main__":
    main()
