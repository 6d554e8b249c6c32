"""Disco103 against PPO on one curriculum, one budget of env steps and one evaluation.

    python -m experiments.disco_vs_ppo --disco checkpoints/disco-colours.pt checkpoints/disco.pt
        [--policies mlp goal-mixture] [--seeds 0 1 2] [--episodes 1000] [--out DIR] [--device D]

The Disco103 run is given as the checkpoints of its stages, in order (the README's
`mcenv train disco` commands). PPO (SB3's defaults, with each stage's gamma and number of
envs) trains on the same stages: each stage's env and env_kwargs, for as many env steps as
Disco103 took in it. Once per policy and seed:
  mlp            SB3's MlpPolicy (two tanh layers of 64)
  goal-mixture   the Disco103 agent's own network (sb3_baselines.GoalMixturePolicy:
                 its encoder and goal-mixture policy, the planner fixed, a value head)
Then every final agent plays the same evaluation episodes, actions sampled (default: 1,000
of PinPad-v0 with task_in_obs, from `mcenv eval`'s seeds), and an episode succeeds when the
env reports it. Success during training is per 200 training episodes of the stage then run.

Writes to --out (default docs/results/disco-vs-ppo/): runs/ppo-<policy>-seed<k>.json
(the curve and the time of each PPO run, atomically; a re-run with the same stages skips
it), results.json, table.md and curves.png. The PPO models stay in <out>/cache/.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

import metacontroller_envs  # noqa: F401  (registers the envs)
from metacontroller_agents.checkpoint import load_checkpoint, write_atomically
from metacontroller_agents.data import resolve_device
from metacontroller_agents.disco_agent import KIND, actor_from_checkpoint
from metacontroller_agents.evaluate import RolloutReport, evaluate_model
from metacontroller_agents.sb3_baselines import (
    EpisodeBudget,
    GoalMixturePolicy,
    PolicyLogits,
    make_env,
)
from metacontroller_envs.checks import check_count, check_env_kwargs
from metacontroller_envs.evaluate import wilson_interval
from metacontroller_envs.files import write_json_atomically, write_text_atomically

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "disco-vs-ppo"
POLICIES = ("mlp", "goal-mixture")
#: Training episodes per point of a PPO curve (the shipped Disco103 configs' log_every).
EVERY = 200


@dataclass(frozen=True)
class Stage:
    """One stage of the curriculum, as the Disco103 run trained it."""

    env: str
    env_kwargs: dict[str, Any]
    num_envs: int
    discount: float
    env_steps: int
    """Env steps Disco103 took in this stage (its checkpoint's count minus the last one's)."""


def read_stages(paths: list[Path]) -> tuple[list[Stage], dict[str, Any]]:
    """The stages of a Disco103 run from its stage checkpoints, and the last checkpoint."""
    stages, before, saved = [], 0, {}
    for path in paths:
        saved = load_checkpoint(path, KIND)
        config = saved["train_config"]
        if saved["env_steps"] <= before:
            raise ValueError(
                f"{path} took no env steps after the stage before it ({saved['env_steps']:,} "
                f"in all, {before:,} before): give the stage checkpoints in training order"
            )
        stages.append(Stage(config["env"], config["env_kwargs"], config["num_envs"],
                            config["discount"], saved["env_steps"] - before))  # fmt: skip
        before = saved["env_steps"]
    for name in ("num_envs", "discount"):  # PPO keeps them from its first stage
        if len({getattr(stage, name) for stage in stages}) > 1:
            raise ValueError(f"the stages of {paths} differ in {name}: PPO needs one for all")
    return stages, saved


def train_ppo(
    stages: list[Stage], policy: str, model_config: dict, seed: int, device: str
) -> tuple[PPO, dict[str, Any]]:
    """PPO through the stages, each for its env steps; the curve across all of them, the
    env steps of each stage and the episodes in all."""
    model, history, stage_steps, episodes_before = None, [], [], 0
    for index, stage in enumerate(stages):
        make = partial(make_env, stage.env, None, device, seed, stage.env_kwargs)
        envs = DummyVecEnv([make] * stage.num_envs)
        if model is None:
            kind, kwargs = ("MlpPolicy", {}) if policy == "mlp" else (GoalMixturePolicy, {
                "model_config": model_config})  # fmt: skip
            model = PPO(kind, envs, gamma=stage.discount, seed=seed, device=device,
                        policy_kwargs=kwargs)  # fmt: skip
        else:
            model.set_env(envs)
        envs.seed(seed + 1000 * index)  # env i of stage s resets from seed + 1000 s + i
        budget = EpisodeBudget(10**12, EVERY, env_steps=stage.env_steps)
        # SB3 alone would finish its rollout; the budget stops at the env step. Resets the envs.
        model.learn(stage.env_steps, callback=budget, reset_num_timesteps=True)
        history += [{**point, "episodes": point["episodes"] + episodes_before,
                     "env_steps": point["env_steps"] + sum(stage_steps), "stage": index}
                    for point in budget.history]  # fmt: skip
        stage_steps.append(budget.env_steps)
        episodes_before += len(budget.returns)
        envs.close()
    return model, {"history": history, "env_steps": stage_steps, "episodes": episodes_before}


def evaluation(report: RolloutReport) -> dict[str, Any]:
    low, high = wilson_interval(report.successes, report.episodes)
    return {"success": report.success_rate, "ci95": [low, high],
            "mean_length": report.mean_length, "episodes": report.episodes}  # fmt: skip


def ppo_run(args: argparse.Namespace, stages: list[Stage], policy: str, seed: int,
            model_config: dict, spec: gym.envs.registration.EnvSpec) -> dict[str, Any]:  # fmt: skip
    """Train (or, when its record matches these stages, load) PPO with `policy`; evaluate it."""
    name = f"ppo-{policy}-seed{seed}"
    record_path = args.out / "runs" / f"{name}.json"
    model_path = args.out / "cache" / f"{name}.zip"
    protocol = {"policy": policy, "seed": seed, "stages": [asdict(s) for s in stages]}
    record = json.loads(record_path.read_text()) if record_path.is_file() else None
    if record is not None and record["protocol"] == protocol and model_path.is_file():
        model = PPO.load(model_path, device=args.device)
    else:
        print(f"training {name} on {len(stages)} stages ({sum(s.env_steps for s in stages):,} "
              "env steps)", flush=True)  # fmt: skip
        start = time.perf_counter()
        model, trained = train_ppo(stages, policy, model_config, seed, args.device)
        record = {"protocol": protocol, **trained, "minutes": (time.perf_counter() - start) / 60}
        write_atomically(model_path, model.save)
        write_json_atomically(record_path, record)
    report = evaluate_model(PolicyLogits(model.policy), spec, args.episodes, args.device,
                            seed=args.eval_seed)  # fmt: skip
    return {"name": name, "network": policy, **record, "eval": evaluation(report)}


def write_table(results: list[dict[str, Any]], spec_text: str, path: Path) -> None:
    lines = [
        "| run | network | env steps per stage | training episodes | last training block | "
        f"{spec_text} (95% CI) | minutes |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in results:
        evaluated = run["eval"]
        low, high = evaluated["ci95"]
        last = f"{run['history'][-1]['success']:.3f}" if run["history"] else "n/a"
        minutes = f"{run['minutes']:.0f}" if run["minutes"] is not None else "n/a"
        steps = " + ".join(f"{n:,}" for n in run["env_steps"])
        lines.append(
            f"| {run['name']} | {run['network']} | {steps} | {run['episodes']:,} | {last} | "
            f"**{evaluated['success']:.3f}** [{low:.3f}, {high:.3f}] | {minutes} |"
        )
    write_text_atomically(path, "\n".join(lines) + "\n")


def plot(results: list[dict[str, Any]], boundaries: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    for run in results:
        steps = [p["env_steps"] for p in run["history"]]
        axis.plot(steps, [p["success"] for p in run["history"]], label=run["name"])
    for boundary in boundaries:
        axis.axvline(boundary, color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("env steps")
    axis.set_ylabel(f"success per {EVERY} training episodes")
    axis.set_ylim(-0.05, 1.05)
    axis.legend(fontsize=8)
    axis.set_title("Disco103 and PPO on one curriculum (dotted: the next stage starts)",
                   fontsize=10)  # fmt: skip
    figure.tight_layout()
    write_atomically(path, lambda temp: figure.savefig(temp, dpi=100, format="png"))
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--disco", nargs="+", type=Path, required=True, metavar="CHECKPOINT",
                        help="the Disco103 run's stage checkpoints, in training order")  # fmt: skip
    parser.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="PPO's seeds")
    parser.add_argument("--env", default="PinPad-v0", help="evaluation env")
    parser.add_argument("--env-kwargs", default='{"task_in_obs": true}', type=json.loads)
    parser.add_argument("--episodes", type=int, default=1000, help="evaluation episodes")
    parser.add_argument("--eval-seed", type=int, default=10**6, help="episode k: seed + k")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    check_count("episodes", args.episodes)
    check_env_kwargs(args.env, args.env_kwargs)
    torch.set_num_threads(args.threads)
    args.device = str(resolve_device(args.device))
    spec = gym.spec(args.env)
    spec = gym.envs.registration.EnvSpec.from_json(spec.to_json())
    spec.kwargs = {**spec.kwargs, **args.env_kwargs}
    stages, last = read_stages(args.disco)
    actor = actor_from_checkpoint(last, args.disco[-1], args.device)
    disco = {"name": "disco103", "network": "goal-mixture", "history": last["history"],
             "env_steps": [s.env_steps for s in stages], "episodes": last["episodes"],
             "minutes": None,
             "eval": evaluation(evaluate_model(actor, spec, args.episodes, args.device,
                                               seed=args.eval_seed))}  # fmt: skip
    results = [disco] + [ppo_run(args, stages, policy, seed, last["model_config"], spec)
                         for policy in args.policies for seed in args.seeds]  # fmt: skip
    spec_text = f"{args.env} {json.dumps(args.env_kwargs)}, {args.episodes:,} episodes"
    record = {"evaluation": spec_text, "stages": [asdict(s) for s in stages], "runs": results}
    write_json_atomically(args.out / "results.json", record)
    write_table(results, spec_text, args.out / "table.md")
    plot(results, list(np.cumsum([s.env_steps for s in stages])[:-1]), args.out / "curves.png")
    print((args.out / "table.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
