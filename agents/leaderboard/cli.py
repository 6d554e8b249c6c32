"""The leaderboard's command line: `mcenv bench`, and `python -m benchmarks.leaderboard`
from a checkout (the same options, another default results folder)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from metacontroller_agents.leaderboard.protocol import PROFILES
from metacontroller_agents.leaderboard.ray_runner import LOCAL, run_benchmark_ray
from metacontroller_agents.leaderboard.rows import ALGOS
from metacontroller_agents.leaderboard.runner import run_benchmark

#: Every env some profile runs (--only-env takes those of the chosen profile).
ALL_ENVS = list(dict.fromkeys(env_id for p in PROFILES.values() for env_id in p.envs))
#: GPUs a cell asks Ray for when --device is cuda and --gpus-per-cell is not given.
GPU_SHARE = 0.25

DESCRIPTION = "The leaderboard: every agent on every environment under one fixed protocol."
#: Where results go by default, one folder per profile: under the working directory, never
#: beside the installed code.
RESULTS = Path("leaderboard")


def add_arguments(
    parser: argparse.ArgumentParser, results: Path = RESULTS
) -> argparse.ArgumentParser:
    """The options of `mcenv bench` and `python -m benchmarks.leaderboard` (one list);
    without --out, results go to `results`/<profile>."""
    parser.add_argument("--profile", default="quick", choices=list(PROFILES))
    parser.add_argument("--quick", action="store_const", const="quick", dest="profile",
                        help="the quick profile (the default): a smoke-level table")  # fmt: skip
    parser.add_argument("--only-algo", nargs="+", default=None, choices=list(ALGOS),
                        metavar="ALGO", help=f"rows to run, of {list(ALGOS)}")  # fmt: skip
    parser.add_argument("--only-env", nargs="+", default=None, choices=ALL_ENVS,
                        metavar="ENV", help="envs to run, of the profile's")  # fmt: skip
    parser.add_argument("--seeds", nargs="+", type=int, default=None,
                        help="seeds to run (default: 0 .. the profile's seeds - 1)")  # fmt: skip
    parser.add_argument("--out", default=None,
                        help=f"results folder (default: {results}/<profile>)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (0: torch's default). One by default: on a shared "
                             "2-core CPU, two threads ran BC 6x slower")  # fmt: skip
    parser.add_argument("--ray", nargs="?", const=LOCAL, default=None, metavar="ADDRESS",
                        help="run the cells as Ray tasks: alone, on a local Ray started with "
                             "--workers CPUs; with an address (or auto), on that cluster. "
                             "Needs the [ray] extra")  # fmt: skip
    parser.add_argument("--workers", type=int, default=None,
                        help="CPUs of the local Ray (--ray without an address; default: "
                             "all)")  # fmt: skip
    parser.add_argument("--gpus-per-cell", type=float, default=None,
                        help=f"GPUs each Ray task asks for (default: {GPU_SHARE} with --device "
                             "cuda, else 0)")  # fmt: skip
    parser.set_defaults(run=bench_command, results=results)
    return parser


def add_command(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    """`mcenv bench`: added by metacontroller_envs.cli only when it runs."""
    add_arguments(commands.add_parser(name, help=help))


def results_folder(args: argparse.Namespace) -> Path:
    """The folder a parsed command writes to: --out, else the default for its profile."""
    return Path(args.out) if args.out else Path(args.results) / args.profile


def bench_command(args: argparse.Namespace) -> int:
    profile = PROFILES[args.profile]
    threads = max(args.threads, 1)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    out = results_folder(args)
    if args.ray is None:
        if args.workers is not None or args.gpus_per_cell is not None:
            raise SystemExit("--workers and --gpus-per-cell go with --ray")
        failures = run_benchmark(profile, out, args.only_algo, args.only_env, args.seeds,
                                 args.device)  # fmt: skip
    else:
        gpus = args.gpus_per_cell
        if gpus is None:
            gpus = GPU_SHARE if str(args.device).startswith("cuda") else 0.0
        try:
            failures = run_benchmark_ray(profile, out, args.only_algo, args.only_env,
                                         args.seeds, args.device, args.ray, args.workers,
                                         threads, gpus)  # fmt: skip
        except ImportError as error:
            raise SystemExit(str(error)) from None
    print(f"table: {out / 'leaderboard.md'}; curves: {out / 'curves.png'}")
    for cell, error in failures:
        print(f"failed: {cell.name}: {error}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None, results: Path = RESULTS) -> int:
    """Parse `argv` and run the benchmark; `results`: the default folder of the profiles."""
    parser = add_arguments(argparse.ArgumentParser(description=DESCRIPTION), results)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
