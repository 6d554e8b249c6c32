"""The held-out ladder: internal RL against its baselines on compositions of 2, 3, 4 and 6
pairs whose every pair-to-pair transition is absent from pretraining.

    python -m experiments.ladder run --checkpoint DISC.pt --method internal-rl --seed 0 \
        --episodes 12800 [--rungs PinPad-Ladder2-v0 ...] [--no-curriculum] --out ladder/
    python -m experiments.ladder evaluate --checkpoint DISC.pt --out ladder/
    python -m experiments.ladder report --out ladder/ [--plot curves.png]

`run` trains one method on each rung in turn; with the curriculum (the default) each rung
starts from the policy the method ended the previous rung with, the same help for every
method (internal RL and beta = 1: the z-policy; raw-action RL: the fine-tuned base model;
ES: the evolved policy; PPO: SB3's whole model). Each rung's run is a checkpoint under
OUT/<method>/seed<S>/, resumed after an interruption; a rung whose result file exists is
skipped. The result holds the training curve (success of each batch against episodes)
and a separate evaluation of the final policy on layouts no training used.

Each finished rung is evaluated twice on the same layouts: as trained (sampled codes or
actions) and greedily (mean codes, argmax actions; SB3's deterministic=True); `evaluate`
adds the greedy one to results written before it existed. `report` prints a markdown table
per evaluation, rung x method: success, mean over seeds with a 95% t-interval when there
are several, else the Wilson interval of its episodes.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

import metacontroller_envs  # noqa: F401
from metacontroller_agents.checkpoint import load_checkpoint
from metacontroller_agents.evolution import EvolutionConfig, train_evolution
from metacontroller_agents.internal_rl import InternalRLConfig, train_internal_rl
from metacontroller_agents.policies import EVAL_SEED, evaluate_policy
from metacontroller_agents.runs import POLICY_KINDS
from metacontroller_agents.sb3_baselines import ALGORITHMS, make_env, train_sb3
from metacontroller_envs.evaluate import seed_interval, wilson_interval
from metacontroller_envs.files import write_atomically, write_json_atomically
from metacontroller_envs.registry import ladder_ids

#: The methods, as the internal-RL config fields (or SB3 setting) that make each; "-stdlr":
#: with the log std's own learning rate (InternalRLConfig.std_lr), reopened to the prior's
#: 1 at the start of every rung (init_std), beyond the paper; "-b64": 64 episodes per
#: update instead of 128 (twice the updates for the same episodes), beyond the paper;
#: "-std2": the policy's exploration scale starts at 2 instead of the prior's 1 (at every
#: rung; with "-stdlr" it then narrows at its own rate); "-t2", "-t4": raw actions sampled
#: at temperature 2 or 4 (InternalRLConfig.temperature), the raw-action counterpart of a
#: wider exploration scale.
METHODS = {
    "internal-rl": {},
    "internal-rl-stdlr": {"std_lr": 3e-3, "init_std": 1.0},
    "internal-rl-std2": {"init_std": 2.0},
    "internal-rl-std2-stdlr": {"init_std": 2.0, "std_lr": 3e-3},
    "raw-actions-t2": {"raw_actions": True, "temperature": 2.0},
    "raw-actions-t4": {"raw_actions": True, "temperature": 4.0},
    "internal-rl-b64": {"batch_episodes": 64},
    "raw-actions-b64": {"raw_actions": True, "batch_episodes": 64},
    "beta1": {"force_switch": True},
    "beta1-stdlr": {"force_switch": True, "std_lr": 3e-3, "init_std": 1.0},
    "raw-actions": {"raw_actions": True},
    "es": "es",
    "ppo-raw": "sb3",
    "ppo-latent": "sb3",
    "sac-latent": "sb3",
    "sac-latent-beta1": "sb3",
}

#: The SB3 methods: the algorithm, whether it drives the latent wrapper of the base, and
#: the wrapper's switch threshold (None: its default 0.5; 0: a new code every step).
SB3_METHODS = {
    "ppo-raw": ("ppo", False, None),
    "ppo-latent": ("ppo", True, None),
    "sac-latent": ("sac", True, None),
    "sac-latent-beta1": ("sac", True, 0.0),
}


def evaluate_rung(method: str, trained: Path, disc: str, env_id: str, episodes: int,
                  device: str, greedy: bool) -> dict[str, Any]:  # fmt: skip
    """Success of a finished rung's policy on `episodes` fresh layouts, played as trained
    or greedily (mean codes, argmax actions)."""
    if METHODS[method] == "sb3":
        algo, latent, threshold = SB3_METHODS[method]
        return evaluate_sb3(algo, trained, disc if latent else None, env_id, episodes, device,
                            greedy, threshold)  # fmt: skip
    report = evaluate_policy(trained, episodes, EVAL_SEED, device, env=env_id, greedy=greedy)
    return {"episodes": report.episodes, "successes": report.successes,
            "success": report.success_rate,
            "interval": wilson_interval(report.successes, report.episodes)}  # fmt: skip


def evaluate_sb3(algo: str, model_path: Path, disc: str | None, env_id: str, episodes: int,
                 device: str, greedy: bool, threshold: float | None) -> dict[str, Any]:  # fmt: skip
    """An SB3 model's success (deterministic=greedy), one episode per seed from EVAL_SEED."""
    env = make_env(env_id, disc, device, EVAL_SEED, threshold=threshold)
    model = ALGORITHMS[algo].load(model_path, device=device)
    wins = 0
    for i in range(episodes):
        obs, _ = env.reset(seed=EVAL_SEED + i)
        done, total = False, 0.0
        while not done:
            action, _ = model.predict(obs, deterministic=greedy)
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        wins += total > 0
    env.close()
    return {"episodes": episodes, "successes": wins, "success": wins / episodes,
            "interval": wilson_interval(wins, episodes)}  # fmt: skip


def run_rung(method: str, disc: str, env_id: str, episodes: int, seed: int, out: Path,
             previous: Path | None, device: str) -> Path:  # fmt: skip
    """Train `method` on one rung (resuming its checkpoint), starting from `previous`."""
    if METHODS[method] == "sb3":
        model = out.with_suffix(".zip")
        if not model.exists():  # (SB3 runs do not resume: a finished model is kept)
            algo, latent, threshold = SB3_METHODS[method]
            train_sb3(algo, env_id, episodes, latent=disc if latent else None,
                      seed=seed, device=device, every=128, out=out.with_suffix(".history.json"),
                      save=model, init=previous, threshold=threshold)  # fmt: skip
        return model
    if METHODS[method] == "es":
        config: Any = EvolutionConfig(
            checkpoint=disc,
            env=env_id,
            episodes=episodes,
            seed=seed,
            init_policy=previous and str(previous),
            device=device,
        )
        train_evolution(config, out, resume=out.exists(), progress=False)
        return out
    config = InternalRLConfig(checkpoint=disc, env=env_id, episodes=episodes, seed=seed,
                              init_policy=previous and str(previous), device=device,
                              **METHODS[method])  # fmt: skip
    train_internal_rl(config, out, resume=out.exists(), progress=False)
    return out


def history_of(method: str, trained: Path) -> list[dict[str, Any]]:
    """The training curve of a finished rung: success per logged batch against episodes."""
    if METHODS[method] == "sb3":
        return json.loads(trained.with_suffix(".history.json").read_text())
    saved = load_checkpoint(trained, POLICY_KINDS)
    return [{"episodes": h["episodes"], "success": h["success"], "seconds": h["seconds"],
             "env_steps": h["env_steps"]} for h in saved["history"]]  # fmt: skip


def evaluations(method: str, trained: Path, disc: str, env_id: str, episodes: int,
                device: str) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Both evaluations of a finished rung: "eval" (played as trained), "eval_greedy"."""
    return {key: evaluate_rung(method, trained, disc, env_id, episodes, device, greedy)
            for key, greedy in (("eval", False), ("eval_greedy", True))}  # fmt: skip


def run_command(args: argparse.Namespace) -> None:
    folder = Path(args.out) / args.method / f"seed{args.seed}"
    folder.mkdir(parents=True, exist_ok=True)
    previous: Path | None = Path(args.start_from) if args.start_from else None
    for env_id in args.rungs:
        result_path = folder / f"{env_id}.json"
        stem = folder / env_id
        trained = stem.with_suffix(".zip" if METHODS[args.method] == "sb3" else ".pt")
        if not result_path.exists():
            clock = time.perf_counter()
            trained = run_rung(args.method, args.checkpoint, env_id, args.episodes, args.seed,
                               stem.with_suffix(".pt"), previous, args.device)  # fmt: skip
            seconds = time.perf_counter() - clock
            result = {"method": args.method, "env": env_id, "seed": args.seed,
                      "episodes": args.episodes, "curriculum": args.curriculum,
                      "checkpoint": args.checkpoint, "started_from": previous and str(previous),
                      "train_seconds": seconds,
                      **evaluations(args.method, trained, args.checkpoint, env_id,
                                    args.eval_episodes, args.device),
                      "history": history_of(args.method, trained)}  # fmt: skip
            write_json_atomically(result_path, result)
            tail = np.mean([h["success"] for h in result["history"][-10:]])
            print(f"{args.method} seed {args.seed} {env_id}: eval {result['eval']['success']:.3f},"
                  f" greedy {result['eval_greedy']['success']:.3f}, last batches {tail:.3f}, "
                  f"{seconds:.0f} s", flush=True)  # fmt: skip
        previous = trained if args.curriculum else None


def evaluate_command(args: argparse.Namespace) -> None:
    """Add the greedy evaluation to finished rungs that lack it (results of older runs)."""
    for path in result_files(Path(args.out)):
        result = json.loads(path.read_text())
        if "eval_greedy" in result:
            continue
        stem = path.with_suffix("")
        trained = stem.with_suffix(".zip" if METHODS[result["method"]] == "sb3" else ".pt")
        result["eval_greedy"] = evaluate_rung(result["method"], trained, args.checkpoint,
                                              result["env"], result["eval"]["episodes"],
                                              args.device, greedy=True)  # fmt: skip
        write_json_atomically(path, result)
        print(f"{path}: greedy {result['eval_greedy']['success']:.3f}", flush=True)


def result_files(out: Path) -> list[Path]:
    return [p for p in sorted(out.glob("*/seed*/*.json")) if not p.name.endswith(".history.json")]


def cell(evaluations: list[dict[str, Any]]) -> str:
    """One seed: success [Wilson 95%]; several: mean [t 95%] over seeds; none: -."""
    if not evaluations:
        return "-"
    if len(evaluations) == 1:
        low, high = evaluations[0]["interval"]
        return f"{evaluations[0]['success']:.3f} [{low:.3f}, {high:.3f}]"
    return seed_summary([e["success"] for e in evaluations]) + f" ({len(evaluations)} seeds)"


def seed_summary(values: list[float]) -> str:
    """mean [95% t-interval] over seeds."""
    mean = float(np.mean(values))
    interval = seed_interval(values)
    if interval is None:
        return f"{mean:.3f}"
    return f"{mean:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def report_command(args: argparse.Namespace) -> None:
    results: dict[tuple[str, str], list[dict]] = {}
    for path in result_files(Path(args.out)):
        result = json.loads(path.read_text())
        results.setdefault((result["env"], result["method"]), []).append(result)
    rungs = [r for r in ladder_ids().values() if any(env == r for env, _ in results)]
    rungs += sorted({env for env, _ in results} - set(rungs))
    methods = [m for m in METHODS if any(method == m for _, method in results)]
    for key, title in (("eval_greedy", "greedy (mean codes, argmax actions)"),
                       ("eval", "as trained (sampled codes or actions)")):  # fmt: skip
        print(f"\nEvaluation success, {title}:\n")
        print("| rung | " + " | ".join(methods) + " |")
        print("|---|" + "---|" * len(methods))
        for env_id in rungs:
            cells = [cell([r[key] for r in results.get((env_id, m), []) if key in r])
                     for m in methods]  # fmt: skip
            print(f"| {env_id} | " + " | ".join(cells) + " |")
    if args.plot:
        plot_curves(results, rungs, methods, args.plot)


def plot_curves(results: dict, rungs: list[str], methods: list[str], path: str) -> None:
    """Success of each training batch against episodes, one panel per rung."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(rungs), figsize=(4 * len(rungs), 3.2), squeeze=False)
    for axis, env_id in zip(axes[0], rungs, strict=True):
        for index, method in enumerate(methods):
            for k, run in enumerate(results.get((env_id, method), [])):
                history = run["history"]
                axis.plot(
                    [h["episodes"] for h in history],
                    [h["success"] for h in history],
                    color=f"C{index}",
                    alpha=0.8,
                    label=method if k == 0 else None,
                )
        axis.set_title(env_id)
        axis.set_xlabel("episodes on this rung")
        axis.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("success (training batch)")
    labelled = {}
    for axis in axes[0]:  # one legend entry per method, from whichever panel drew it
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            labelled.setdefault(label, handle)
    axes[0][-1].legend(labelled.values(), labelled.keys(), fontsize=7)
    figure.tight_layout()
    write_atomically(path, lambda temp: figure.savefig(temp, format="png", dpi=110))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train one method on the rungs in turn")
    run.add_argument("--checkpoint", required=True, help="discovery checkpoint")
    run.add_argument("--method", required=True, choices=list(METHODS))
    run.add_argument("--rungs", nargs="+", default=None,
                     help="env ids in order (default: the registry's ladder)")  # fmt: skip
    run.add_argument("--episodes", type=int, default=12800, help="budget per rung")
    run.add_argument("--eval-episodes", type=int, default=256)
    run.add_argument("--curriculum", action=argparse.BooleanOptionalAction, default=True,
                     help="start each rung from the previous rung's policy")  # fmt: skip
    run.add_argument(
        "--start-from",
        default=None,
        help="the first rung starts from this run's policy (default: the prior)",
    )
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="cpu")
    run.add_argument("--out", required=True)
    evaluate = commands.add_parser("evaluate", help="add missing greedy evaluations")
    evaluate.add_argument("--checkpoint", required=True, help="discovery checkpoint")
    evaluate.add_argument("--device", default="cpu")
    evaluate.add_argument("--out", required=True)
    report = commands.add_parser("report", help="the table of finished rungs")
    report.add_argument("--out", required=True)
    report.add_argument("--plot", default=None, help="also write the curves to this PNG")
    args = parser.parse_args()
    if args.command == "run":
        args.rungs = args.rungs or list(ladder_ids().values())
        for env_id in args.rungs:
            gym.spec(env_id)  # an unknown id fails here, before any training
        run_command(args)
    elif args.command == "evaluate":
        evaluate_command(args)
    else:
        report_command(args)


if __name__ == "__main__":
    main()
