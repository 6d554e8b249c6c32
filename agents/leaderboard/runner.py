"""The sequential runner: each unfinished cell in turn, then the table.

run_cell is a pure function of (bench, cell) that returns the cell's record; a runner
alone writes it (atomically, on the machine that holds the results), so the Ray runner
(ray_runner) farms the same cells out and writes the same files.
"""

from __future__ import annotations

import datetime
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from metacontroller_agents.data import resolve_device
from metacontroller_agents.leaderboard.pretraining import Bench
from metacontroller_agents.leaderboard.protocol import (
    FORMAT_VERSION,
    Cell,
    Profile,
    eval_seed,
    finished,
    read_json,
)
from metacontroller_agents.leaderboard.report import machine, write_leaderboard
from metacontroller_agents.leaderboard.rows import ALGOS, Algo
from metacontroller_envs import registry
from metacontroller_envs.files import write_json_atomically


def run_cell(bench: Bench, cell: Cell, algo: Algo | None = None) -> dict[str, Any]:
    """Train and evaluate one cell (with `algo`, by default its row in ALGOS); returns its
    result (the cell JSON)."""
    algo = ALGOS[cell.algo] if algo is None else algo
    pretrained = None
    if algo.pretraining is not None:
        pretrained = bench.pretrained(registry.family(cell.env_id), cell.seed, algo.pretraining)
    torch.manual_seed(cell.seed)
    start = time.perf_counter()
    trained = algo.train(bench, cell, pretrained)
    if trained.seconds is None:
        trained.seconds = time.perf_counter() - start
    evaluation = algo.evaluate(bench, cell, trained)
    eval_steps = evaluation.episodes * evaluation.mean_length
    wall_clock = trained.seconds + evaluation.seconds
    return {
        "format_version": FORMAT_VERSION,
        "algo": cell.algo,
        "env": cell.env_id,
        "seed": cell.seed,
        "profile": bench.profile.name,
        "protocol": bench.profile.protocol(),
        "train": {
            "episodes": trained.episodes,
            "env_steps": trained.env_steps,
            "seconds": trained.seconds,
        },  # fmt: skip
        "eval": {
            "episodes": evaluation.episodes,
            "first_seed": eval_seed(cell.seed),
            "successes": evaluation.successes,
            "success": evaluation.success_rate,
            "return": evaluation.mean_return,
            "length": evaluation.mean_length,
            "env_steps": int(round(eval_steps)),
            "seconds": evaluation.seconds,
        },
        "history": trained.history,
        "pretraining": None if pretrained is None else stages(pretrained.record, algo),
        "wall_clock_s": wall_clock,
        "steps_per_s": (trained.env_steps + eval_steps) / max(wall_clock, 1e-9),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": machine(),
        "device": bench.device,
    }


def stages(record: dict[str, Any], algo: Algo) -> dict[str, Any]:
    """The pretraining record as far as the row uses it: a bc cell's omits discovery, which
    another cell may have built first (so a cell's record does not depend on the order in
    which a runner ran the cells)."""
    return {k: v for k, v in record.items() if k != "discovery" or algo.pretraining == k}


def select_cells(
    profile: Profile,
    algos: list[str] | None = None,
    envs: list[str] | None = None,
    seeds: list[int] | None = None,
) -> list[Cell]:
    """The cells of algos x envs x seeds (default: every row, the profile's envs and seeds)
    that apply, seed-major; an unknown algo or env is a ValueError that lists the known."""
    algos = list(ALGOS) if algos is None else algos
    envs = list(profile.envs) if envs is None else envs
    seeds = list(range(profile.seeds)) if seeds is None else seeds
    for name in algos:
        if name not in ALGOS:
            raise ValueError(f"unknown algo {name!r}: use one of {list(ALGOS)}")
    for env_id in envs:
        if env_id not in profile.envs:
            raise ValueError(f"unknown env {env_id!r} for the {profile.name} profile: use one "
                             f"of {list(profile.envs)}")  # fmt: skip
    return [Cell(a, e, s) for s in seeds for e in envs for a in algos
            if ALGOS[a].not_for(e) is None]  # fmt: skip


def unfinished(bench: Bench, cells: list[Cell], say: Callable[[str], None]) -> list[Cell]:
    """The cells without a finished JSON under this profile (a re-run skips the others)."""
    todo = []
    for cell in cells:
        if finished(bench.cell_path(cell), bench.profile) is not None:
            say(f"{cell.name}: finished before, skipped")
        else:
            todo.append(cell)
    return todo


def summary(cell: Cell, result: dict[str, Any]) -> str:
    """One line per finished cell."""
    return (f"{cell.name}: success {result['eval']['success']:.3f}, "
            f"{result['train']['episodes']} episodes, {result['wall_clock_s']:.1f} s, "
            f"{result['steps_per_s']:.0f} steps/s")  # fmt: skip


def run_benchmark(
    profile: Profile,
    out: str | Path,
    algos: list[str] | None = None,
    envs: list[str] | None = None,
    seeds: list[int] | None = None,
    device: str = "auto",
    progress: bool = True,
) -> list[tuple[Cell, str]]:
    """Run every unfinished cell (algos x envs x seeds) in this process, then write
    leaderboard.md and curves.png from every finished cell in `out`. A cell that raises is
    reported and left unfinished; the others go on. Returns the failures."""
    bench = Bench(profile, Path(out), str(resolve_device(device)))
    cells = select_cells(profile, algos, envs, seeds)
    failures: list[tuple[Cell, str]] = []
    start = time.perf_counter()
    ran = 0
    bar = tqdm(total=len(cells), desc=f"bench {profile.name}", unit="cell",
               disable=not progress)  # fmt: skip
    try:
        todo = unfinished(bench, cells, bar.write)
        bar.update(len(cells) - len(todo))
        for cell in todo:
            try:
                result = run_cell(bench, cell)
            except Exception as error:  # one broken cell must not cost the others
                failures.append((cell, f"{type(error).__name__}: {error}"))
                bar.write(f"{cell.name}: FAILED\n{traceback.format_exc()}")
                continue
            finally:
                bar.update()
            write_json_atomically(bench.cell_path(cell), result)
            ran += 1
            bar.write(summary(cell, result))
    finally:  # also when interrupted: the table shows every finished cell
        bar.close()
        log_invocation(bench, ran, len(cells), len(failures), time.perf_counter() - start)
        write_leaderboard(bench)
    return failures


def log_invocation(
    bench: Bench, ran: int, selected: int, failed: int, seconds: float, runner: str = "sequential"
) -> None:
    """Append this invocation to <out>/runs.json: what the table's wall-clock claims rest on."""
    path = bench.out / "runs.json"
    runs = read_json(path)
    runs = runs if isinstance(runs, list) else []
    runs.append({
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "profile": bench.profile.name, "cells_run": ran, "cells_selected": selected,
        "cells_failed": failed, "seconds": seconds, "machine": machine(),
        "device": bench.device, "torch_threads": torch.get_num_threads(), "runner": runner,
    })  # fmt: skip
    write_json_atomically(path, runs)
