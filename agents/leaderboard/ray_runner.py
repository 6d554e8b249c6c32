"""The Ray runner: `mcenv bench --ray [ADDRESS]`, the same cells as the sequential runner,
each a Ray task, on a local Ray started for the run or on a cluster.

    mcenv bench --profile standard --ray --workers 2     # a local Ray with 2 CPUs
    ray start --head                                     # on a cluster: the head node,
    ray start --address HEAD:6379                        # each worker node,
    mcenv bench --profile full --ray auto --device cuda  # then the run joins it

The shared pretraining of a family and seed is a task of its own; the cells that need it
take its result as an argument, so Ray runs them after it, on any node: the result carries
the pretraining's files (bytes), and a cell writes them into its node's cache before it
starts (nodes need not share a disk). A cell task returns its record (run_cell's JSON);
the driver alone writes it, atomically, as each finishes. A task that raises runs once
more (Ray's retry_exceptions); if it raises again the cell is reported and the others go
on. Ctrl-C cancels what is still running and writes the table from the finished cells; a
re-run skips them. Needs `pip install "metacontroller-envs[ray]"`.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import torch

from metacontroller_agents.data import resolve_device
from metacontroller_agents.leaderboard.pretraining import Bench
from metacontroller_agents.leaderboard.protocol import Cell, Profile
from metacontroller_agents.leaderboard.report import write_leaderboard
from metacontroller_agents.leaderboard.rows import ALGOS, Algo
from metacontroller_agents.leaderboard.runner import (
    log_invocation,
    run_cell,
    select_cells,
    summary,
    unfinished,
)
from metacontroller_envs import registry
from metacontroller_envs.checks import check_count
from metacontroller_envs.files import write_json_atomically

#: --ray without an address: start a local Ray for this run.
LOCAL = "local"
#: Runs of a task that raises: the first and one retry.
RETRIES = 1
#: The pretraining stages, from least to most: a task builds the most any of its cells need.
STAGES = ("bc", "discovery")


def import_ray() -> Any:
    """Ray, or an ImportError that names the extra to install."""
    try:
        import ray
    except ImportError:
        raise ImportError(
            '--ray needs Ray, an optional extra: pip install "metacontroller-envs[ray]" '
            "(without --ray the cells run one after another in this process)"
        ) from None
    return ray


def pretrain(bench: Bench, family: str, seed: int, stage: str, threads: int) -> dict[str, bytes]:
    """Ray task: build (or find in this node's cache) the pretraining of `family` for `seed`
    up to `stage`, and return its files for the cells that depend on it."""
    torch.set_num_threads(threads)
    bench.pretrained(family, seed, stage)
    return bench.pretraining_files(family, seed)


def cell_task(
    bench: Bench, cell: Cell, algo: Algo, files: dict[str, bytes] | None, threads: int
) -> dict[str, Any]:
    """Ray task: install the pretraining the cell depends on, then run the cell."""
    torch.set_num_threads(threads)
    if files is not None:
        bench.install_pretraining(registry.family(cell.env_id), cell.seed, files)
    return run_cell(bench, cell, algo)


def run_benchmark_ray(
    profile: Profile,
    out: str | Path,
    algos: list[str] | None = None,
    envs: list[str] | None = None,
    seeds: list[int] | None = None,
    device: str = "auto",
    address: str = LOCAL,
    workers: int | None = None,
    threads: int = 1,
    gpus_per_cell: float = 0.0,
    progress: bool = True,
) -> list[tuple[Cell, str]]:
    """run_benchmark's cells as Ray tasks. `address`: LOCAL starts a Ray with `workers`
    CPUs (default: all) for this run and stops it after; "auto" or HOST:PORT joins a
    running cluster (`workers` is then the cluster's business). Each task asks for
    `threads` CPUs (and its torch uses that many) and `gpus_per_cell` GPUs. Returns the
    failures, as run_benchmark does."""
    check_count("threads", threads)
    if workers is not None:
        check_count("workers", workers)
    if not gpus_per_cell >= 0:
        raise ValueError(f"gpus_per_cell must be >= 0, got {gpus_per_cell!r}")
    ray = import_ray()
    bench = Bench(profile, Path(out), str(resolve_device(device)))
    cells = select_cells(profile, algos, envs, seeds)
    say = print if progress else (lambda line: None)
    failures: list[tuple[Cell, str]] = []
    start, ran = time.perf_counter(), 0
    started = False
    tasks: dict[Any, Cell] = {}
    try:
        todo = unfinished(bench, cells, say)
        if todo and not ray.is_initialized():
            if address == LOCAL:
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            else:
                ray.init(address=address, log_to_driver=False)
            started = True
        resources = {"num_cpus": threads, "num_gpus": gpus_per_cell, "max_retries": RETRIES,
                     "retry_exceptions": True}  # fmt: skip
        needs: dict[tuple[str, int], str] = {}  # (family, pretraining seed) -> stage
        for cell in todo:
            stage = ALGOS[cell.algo].pretraining
            if stage is not None:
                key = (registry.family(cell.env_id), bench.pretraining_seed(cell.seed))
                needs[key] = max(stage, needs.get(key, stage), key=STAGES.index)
        remote_pretrain = ray.remote(pretrain).options(**resources)
        pretrainings = {key: remote_pretrain.remote(bench, *key, stage, threads)
                        for key, stage in needs.items()}  # fmt: skip
        remote_cell = ray.remote(cell_task).options(**resources)
        for cell in todo:
            algo = ALGOS[cell.algo]  # resolved here: the task runs the driver's row
            key = (registry.family(cell.env_id), bench.pretraining_seed(cell.seed))
            files = pretrainings[key] if algo.pretraining is not None else None
            tasks[remote_cell.remote(bench, cell, algo, files, threads)] = cell
        while tasks:
            (ref,), _ = ray.wait(list(tasks), num_returns=1)
            cell = tasks.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as error:  # reported after its retry; the others go on
                cause = getattr(error, "cause", None) or error
                failures.append((cell, f"{type(cause).__name__}: {cause}"))
                say(f"{cell.name}: FAILED\n{''.join(traceback.format_exception(error))}")
                continue
            write_json_atomically(bench.cell_path(cell), result)
            ran += 1
            say(summary(cell, result))
    finally:  # also on Ctrl-C: stop what runs, keep every finished cell, write the table
        for ref in tasks:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
        log_invocation(bench, ran, len(cells), len(failures), time.perf_counter() - start,
                       runner=f"ray ({address}, {workers or 'all'} workers)")  # fmt: skip
        write_leaderboard(bench)
    return failures
