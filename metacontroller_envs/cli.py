"""`mcenv`: one command line for the suite. It only dispatches; each subcommand's module is
imported when that subcommand runs, so `mcenv play` never loads torch."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from dataclasses import dataclass
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


def add_play(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    play = commands.add_parser(name, help=help)
    play.add_argument("env_id", help="a registered id, e.g. PinPad-v0")
    play.add_argument("--seed", type=int, default=None)
    play.set_defaults(run=_play)


def add_expert(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    expert = commands.add_parser(name, help=help)
    expert.add_argument("--env", nargs="+", default=["PinPad-v0"], help="registered ids")
    expert.add_argument("--episodes", type=int, default=1000, help="one episode per seed")
    expert.add_argument("--epsilon", type=float, default=0.0)
    expert.add_argument("--seed", type=int, default=0, help="first seed")
    expert.set_defaults(run=_expert)


def add_collect(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    collect = commands.add_parser(name, help=help)
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


@dataclass(frozen=True)
class Command:
    """One subcommand: where its parser is built, its one-line help, the extra it needs."""

    target: str
    """module:function(commands, name, help) that adds the subcommand's parser."""
    help: str
    extra: str | None
    """The pip extra whose packages it imports (None: the base install)."""


#: Every subcommand. Each module is imported only when its subcommand runs, so `mcenv play`
#: never loads torch, and this package names the agent's modules only as strings here.
COMMANDS: dict[str, Command] = {
    "play": Command("metacontroller_envs.cli:add_play", "play an environment with the arrow keys",
                    None),  # fmt: skip
    "expert": Command("metacontroller_envs.cli:add_expert",
                      "measure an env's expert over many seeds", None),  # fmt: skip
    "collect": Command("metacontroller_envs.cli:add_collect",
                       "write expert episodes as a Minari dataset", "data"),  # fmt: skip
    "train": Command("metacontroller_agents.cli:add_command", "train the bundled agent", "agent"),
    "eval": Command("metacontroller_agents.cli:add_command", "evaluate an agent", "agent"),
    "analyze": Command("metacontroller_agents.cli:add_command",
                       "what a trained MetaController discovered", "agent"),  # fmt: skip
    "render": Command("metacontroller_agents.render:add_command",
                      "draw an agent's episodes into an mp4 or gif", "video"),  # fmt: skip
    "bench": Command("metacontroller_agents.leaderboard:add_command", "run the leaderboard",
                     "bench"),  # fmt: skip
}


class MissingExtra(Exception):
    """A subcommand's packages are not installed: say which extra brings them."""


def _add(commands: argparse._SubParsersAction, name: str) -> None:
    command = COMMANDS[name]
    module_name, function = command.target.split(":")
    try:
        add = getattr(importlib.import_module(module_name), function)
    except ModuleNotFoundError as error:
        raise MissingExtra(_missing(name, error)) from None
    add(commands, name, command.help)


def _missing(name: str, error: ModuleNotFoundError) -> str:
    extra = COMMANDS[name].extra
    return (
        f"mcenv {name} needs the package {error.name!r}: "
        f"pip install 'metacontroller-envs[{extra or 'all'}]'"
    )


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand; only the one named in `argv` is fully built."""
    parser = argparse.ArgumentParser(prog="mcenv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    argv = sys.argv[1:] if argv is None else argv
    for name, command in COMMANDS.items():
        if argv and argv[0] == name:
            _add(commands, name)
        else:
            commands.add_parser(name, help=command.help, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser(argv).parse_args(argv)
    except MissingExtra as error:
        print(error, file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except ModuleNotFoundError as error:  # an optional package imported on the way
        print(_missing(args.command, error), file=sys.stderr)
        return 2
    except ValueError as error:  # bad input: say what was wrong, no traceback
        print(f"mcenv {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
