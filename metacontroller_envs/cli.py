"""`mcenv`: one command line for the suite. It only dispatches; each subcommand's module is
imported when that subcommand runs, so `mcenv play` never loads torch."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _play(args: argparse.Namespace) -> int:
    from metacontroller_envs.play import play

    play(args.env_id, seed=args.seed)
    return 0


def _expert(args: argparse.Namespace) -> int:
    from metacontroller_envs.evaluate import evaluate_expert

    for env_id in args.env:
        print(evaluate_expert(env_id, args.episodes, args.epsilon, args.seed).line())
    return 0


def env_kwargs_from_json(text: str) -> dict[str, Any]:
    """An --env-kwargs option's JSON object (keyword arguments of gym.make), or a ValueError."""
    try:
        env_kwargs = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"--env-kwargs must be a JSON object: {error}") from None
    if not isinstance(env_kwargs, dict):
        raise ValueError(f"--env-kwargs must be a JSON object, got {text}")
    return env_kwargs


def _collect(args: argparse.Namespace) -> int:
    from metacontroller_envs.data.collection import collect, dataset_path

    env_kwargs = env_kwargs_from_json(args.env_kwargs)
    if args.dataset_id is not None and len(args.env) > 1:
        raise ValueError("--dataset-id names one dataset: give a single --env with it")
    for env_id in args.env:
        dataset_id = collect(
            env_id,
            args.episodes,
            epsilon=args.epsilon,
            seed=args.seed,
            dataset_id=args.dataset_id,
            overwrite=args.overwrite,
            env_kwargs=env_kwargs,
        )
        print(f"wrote {dataset_id} ({args.episodes} episodes) to {dataset_path(dataset_id)}")
    return 0


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcenv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    play = commands.add_parser("play", help="play an environment with the arrow keys")
    play.add_argument("env_id", help="a registered id, e.g. PinPad-v0")
    play.add_argument("--seed", type=int, default=None)
    play.set_defaults(run=_play)
    expert = commands.add_parser("expert", help="measure an env's expert over many seeds")
    expert.add_argument("--env", nargs="+", default=["PinPad-v0"], help="registered ids")
    expert.add_argument("--episodes", type=int, default=1000, help="one episode per seed")
    expert.add_argument("--epsilon", type=float, default=0.0)
    expert.add_argument("--seed", type=int, default=0, help="first seed")
    expert.set_defaults(run=_expert)
    collect = commands.add_parser("collect", help="write expert episodes as a Minari dataset")
    collect.add_argument("--env", nargs="+", required=True, help="registered ids")
    collect.add_argument("--episodes", type=int, default=1000)
    collect.add_argument("--epsilon", type=float, default=0.0, help="random-action rate")
    collect.add_argument("--seed", type=int, default=0, help="episode k uses seed + k")
    collect.add_argument(
        "--dataset-id", default=None, help="default: pinpad/<env>/expert-v0 or babyai/..."
    )
    collect.add_argument("--overwrite", action="store_true", help="replace an existing one")
    collect.add_argument(
        "--env-kwargs", default="{}", help="JSON keyword arguments, e.g. '{\"task_in_obs\": true}'"
    )
    collect.set_defaults(run=_collect)
    argv = sys.argv[1:] if argv is None else argv
    agent_commands = {
        "train": "train the bundled agent",
        "eval": "evaluate an agent",
        "analyze": "what a trained MetaController discovered",
    }
    if argv and argv[0] in agent_commands:  # torch loads only for the agent's commands
        from agents.cli import add_commands

        add_commands(commands)
    else:
        for name, text in agent_commands.items():
            commands.add_parser(name, help=text, add_help=False)
    if argv and argv[0] == "render":  # benchmarks.render (and torch) load only when it runs
        from benchmarks.render import add_command as add_render

        add_render(commands)
    else:
        commands.add_parser("render", help="draw an agent's episodes into an mp4 or gif",
                            add_help=False)  # fmt: skip
    if argv and argv[0] == "bench":  # benchmarks.leaderboard (and torch) load only when it runs
        from benchmarks.leaderboard import add_command as add_bench

        add_bench(commands)
    else:
        commands.add_parser("bench", help="run the leaderboard (benchmarks/)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:  # bad input: say what was wrong, no traceback
        print(f"mcenv {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
