"""Writes the shipped agents (agents/weights/, package data) from finished runs.

    python -m experiments.pretrained_agents discovery --checkpoint DISC.pt --name PinPad-v0 \
        --command "the commands that made it"
    python -m experiments.pretrained_agents policy --checkpoint RL.pt --name NAME \
        --command "..."

A shipped file is the run's checkpoint without its optimiser state (the weights and
configs that loading needs) plus `provenance`: the command, commit, date and machine
given here, and a short evaluation of the file itself, played from fixed seeds, which
tests/test_pretrained.py reproduces exactly. A policy's run must name its base as
`pretrained:NAME`, so the shipped policy finds its shipped base wherever it is installed.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
from pathlib import Path

import torch
from gymnasium.envs.registration import EnvSpec

from metacontroller_agents.checkpoint import load_checkpoint, load_model, save_checkpoint
from metacontroller_agents.evaluate import evaluate_model
from metacontroller_agents.policies import EVAL_SEED, evaluate_policy
from metacontroller_agents.pretrained import PREFIX, WEIGHTS

#: What a shipped file keeps of a run's checkpoint, by kind.
KEPT = {
    "discovery": ("model_config", "model", "controller_config", "controller", "train_config",
                  "env_spec", "metrics"),
    "internal_rl": ("train_config", "policy", "history"),
}  # fmt: skip

#: The stored evaluation: this many episodes from these seeds.
STORED_EPISODES = 64
BASE_SEED = 10**6


def stored_evaluation(kind: str, path: Path) -> dict:
    """The short evaluation a shipped file records and the tests reproduce."""
    if kind == "discovery":
        base, payload = load_model(path, "cpu", kind="discovery")
        env = EnvSpec.from_json(payload["env_spec"]).id
        report = evaluate_model(base, env, STORED_EPISODES, "cpu", 64, BASE_SEED)
        return {"what": "the base model alone, sampled actions (mcenv eval)", "env": env,
                "episodes": STORED_EPISODES, "seed": BASE_SEED, "successes": report.successes,
                "free_play_successes": report.free_play_successes}  # fmt: skip
    report, greedy = (evaluate_policy(path, STORED_EPISODES, EVAL_SEED, "cpu", greedy=greedy)
                      for greedy in (False, True))  # fmt: skip
    return {"what": "the trained policy, sampled codes and mean codes (mcenv eval [--greedy])",
            "env": report.env_id, "episodes": STORED_EPISODES, "seed": EVAL_SEED,
            "successes": report.successes, "greedy_successes": greedy.successes}  # fmt: skip


def commit() -> str:
    return subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["discovery", "policy"])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--name", required=True, help="the shipped name (the file's stem)")
    parser.add_argument("--command", required=True, help="the commands that made the run")
    parser.add_argument("--evaluation", default="", help="a longer evaluation to record")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the stored figures do not depend on the thread count
    kind = "discovery" if args.kind == "discovery" else "internal_rl"
    payload = load_checkpoint(args.checkpoint, kind)
    if kind == "internal_rl" and not str(payload["train_config"]["checkpoint"]).startswith(PREFIX):
        raise SystemExit(f"train the policy from a shipped base ({PREFIX}NAME), not "
                         f"{payload['train_config']['checkpoint']}")  # fmt: skip
    kept = {key: payload[key] for key in KEPT[kind] if key in payload}
    out = WEIGHTS / f"{args.name}.pt"
    WEIGHTS.mkdir(exist_ok=True)
    provenance = {"command": args.command, "commit": commit(),
                  "date": datetime.date.today().isoformat(),
                  "machine": f"{platform.machine()} CPU, torch {torch.__version__}",
                  "evaluation": args.evaluation}  # fmt: skip
    save_checkpoint(out, kind, **kept, provenance=provenance)
    provenance["stored_evaluation"] = stored_evaluation(kind, out)
    save_checkpoint(out, kind, **kept, provenance=provenance)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {provenance['stored_evaluation']}")


if __name__ == "__main__":
    main()
