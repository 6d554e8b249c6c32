"""The report: leaderboard.md and curves.png from the finished cells in a results folder.

It reads only the cell JSON files (and runs.json), so it can be rebuilt at any time from
what any runner has written.
"""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from metacontroller_agents.leaderboard.pretraining import Bench
from metacontroller_agents.leaderboard.protocol import PROFILES, finished, read_json
from metacontroller_agents.leaderboard.rows import ALGOS
from metacontroller_envs.evaluate import seed_interval
from metacontroller_envs.files import write_atomically, write_text_atomically


def machine() -> str:
    """The CPU model and core count, and the torch build: the table's hardware line."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, torch {torch.__version__}"


def load_results(bench: Bench) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Every finished cell of this profile in bench.out, by (algo, env), in seed order."""
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for path in sorted((bench.out / "cells").glob("*.json")):
        result = finished(path, bench.profile)
        if result is not None and result["algo"] in ALGOS and result["env"] in bench.profile.envs:
            results.setdefault((result["algo"], result["env"]), []).append(result)
    for cells in results.values():
        cells.sort(key=lambda r: r["seed"])
    return results


COLUMNS = ("algo", "env", "success mean ± std", "95% CI", "return", "env steps", "episodes",
           "eval episodes", "wall-clock", "steps/s")  # fmt: skip

def interval_text(success: np.ndarray) -> str:
    """The 95% t-interval over seeds as the table shows it ("-" for one seed)."""
    interval = seed_interval([float(x) for x in success])
    return "-" if interval is None else f"[{interval[0]:.3f}, {interval[1]:.3f}]"


def duration(seconds: float) -> str:
    """Seconds as the table shows them: 0.05 s, 12.3 s, 4.5 min."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    return f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def table_rows(
    results: dict[tuple[str, str], list[dict[str, Any]]], envs: tuple[str, ...]
) -> tuple[list[list[str]], list[str]]:
    """One row per (algo, env) with results, and a not-applicable row (with its footnote)
    for each env a row with results does not apply to."""
    rows, notes = [], []
    for name, algo in ALGOS.items():
        if not any(key[0] == name for key in results):
            continue
        for env_id in envs:
            cells = results.get((name, env_id))
            reason = None if cells else algo.not_for(env_id)  # finished cells always show
            if reason is not None:
                if reason not in notes:
                    notes.append(reason)
                mark = f"n/a [{notes.index(reason) + 1}]"
                rows.append([name, env_id, mark] + ["-"] * (len(COLUMNS) - 3))
            elif cells:
                success = np.array([c["eval"]["success"] for c in cells])
                std = success.std(ddof=1) if len(success) > 1 else 0.0
                seeds = "" if len(cells) >= 3 else f" (n={len(cells)})"

                def mean(get: Callable[[dict], float], cells: list = cells) -> float:
                    return float(np.mean([get(c) for c in cells]))

                rows.append([
                    name, env_id, f"{success.mean():.3f} ± {std:.3f}{seeds}",
                    interval_text(success),
                    f"{mean(lambda c: c['eval']['return']):.3f}",
                    f"{mean(lambda c: c['train']['env_steps']):,.0f}",
                    f"{mean(lambda c: c['train']['episodes']):,.0f}",
                    f"{mean(lambda c: c['eval']['episodes']):,.0f}",
                    duration(mean(lambda c: c["wall_clock_s"])),
                    f"{mean(lambda c: c['steps_per_s']):,.0f}",
                ])  # fmt: skip
    return rows, notes


def success_by_env(
    rows: list[list[str]], envs: tuple[str, ...]
) -> tuple[list[str], list[list[str]]]:
    """The table's success column at a glance: one row per algo, one column per env."""
    envs = [env_id for env_id in envs if any(row[1] == env_id for row in rows)]
    success = {(row[0], row[1]): row[2] for row in rows}
    algos = list(dict.fromkeys(row[0] for row in rows))
    return ["algo", *envs], [[a, *(success.get((a, e), "-") for e in envs)] for a in algos]


def markdown_table(header: list[str] | tuple[str, ...], rows: list[list[str]]) -> str:
    """A GitHub markdown table (every cell as given, no alignment)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def pretraining_rows(results: dict[tuple[str, str], list[dict[str, Any]]]) -> list[dict]:
    """The pretraining records the cells carry, one per (family, seed), the most complete
    (shipped agents are not among them: shipped_rows lists those)."""
    records: dict[tuple[str, int], dict] = {}
    for cells in results.values():
        for cell in cells:
            record = cell.get("pretraining")
            if record and "shipped" not in record:
                key = (record["family"], record["seed"])
                if len(record) > len(records.get(key, {})):
                    records[key] = record
    return [records[key] for key in sorted(records)]


def shipped_rows(results: dict[tuple[str, str], list[dict[str, Any]]]) -> list[dict]:
    """The shipped agents the cells used as their pretraining, one record per family."""
    records = {cell["pretraining"]["family"]: cell["pretraining"]
               for cells in results.values() for cell in cells
               if (cell.get("pretraining") or {}).get("shipped")}  # fmt: skip
    return [records[family] for family in sorted(records)]


def write_leaderboard(bench: Bench) -> Path:
    """leaderboard.md and curves.png from every finished cell of this profile in bench.out."""
    p = bench.profile
    results = load_results(bench)
    rows, notes = table_rows(results, p.envs)
    curves = plot_curves(results, bench.out / "curves.png", p.name, p.envs)
    records = pretraining_rows(results)
    # the table's cost: every cell, and each pretraining once (BC's is in the bc cells)
    total = sum(
        c["wall_clock_s"] - (c["train"]["seconds"] if c["algo"] == "bc" else 0.0)
        for cells in results.values()
        for c in cells
    )
    total += sum(r[stage]["seconds"] for r in records for stage in ("data", "bc", "discovery")
                 if stage in r)  # fmt: skip
    command = "python -m benchmarks.leaderboard --" + ("quick" if p.name == "quick" else
                                                        f"profile {p.name}")  # fmt: skip
    lines = [
        f"# Leaderboard: the {p.name} profile",
        "",
        f"Generated on {datetime.date.today().isoformat()} by `{command}` on {machine()} "
        f"(device {bench.device}, {torch.get_num_threads()} torch thread(s)). Its cells and "
        f"their pretraining add up to {duration(total)} of wall-clock (run side by side "
        "under --ray, they take less from end to end). The invocations that made it "
        "(runs.json; each from its first cell to this table, re-runs skip finished cells):",
        "",
    ]
    runs = read_json(bench.out / "runs.json") or []
    lines += [f"- {r['date']}: {r['cells_run']} of {r['cells_selected']} cells run "
              f"({r['cells_failed']} failed) in {duration(r['seconds'])}, device {r['device']}, "
              f"{r['torch_threads']} torch thread(s), {r.get('runner', 'sequential')} runner"
              for r in runs if r.get("profile") == p.name] + [""]  # fmt: skip
    if p.caveat:
        lines += [f"**What the {p.name} profile can and cannot show**: {p.caveat}", ""]
    lines += [
        "Success at a glance (evaluation success, mean ± std over seeds):",
        "",
        markdown_table(*success_by_env(rows, p.envs)),
        "",
        markdown_table(COLUMNS, rows),
        "",
        f"success: the fraction of a cell's {p.eval_episodes} evaluation episodes (episode i "
        "of seed k from reset(seed=10^9 + 10^6 k + i), seeds no training uses) that succeed, "
        "mean ± sample standard deviation over seeds (n = the number of seeds, where below "
        "3); 95% CI: Student's t-interval of that mean over seeds, clipped to [0, 1]; "
        "return: mean evaluation return; env steps and episodes: the training budget "
        "spent (mean over seeds; the latent rows count primitive env steps); eval episodes: "
        "per cell; wall-clock: "
        "training and evaluation of one seed, the shared pretraining excepted (below); "
        "steps/s: env steps of training and evaluation per second of that wall-clock.",
        "",
    ]
    lines += [f"[{i + 1}] {note}" for i, note in enumerate(notes)] + ([""] if notes else [])
    lines += [
        "## Learning curves", "", f"![learning curves]({curves.name})", "",
        "Training success (each point: the episodes since the previous point) against "
        "training episodes, median and 25-75% band over seeds. Dashed: the evaluation "
        "success of the rows that do not learn online (random, expert, bc).", "",
        "## Rows", "",
        *[f"- `{name}`: {algo.about}." for name, algo in ALGOS.items()], "",
        "## Protocol", "",
        markdown_table(["field", "value"], [[k, str(v)] for k, v in p.protocol().items()]), "",
    ]  # fmt: skip
    if records:
        table = [[r["family"], str(r["seed"]), f"{r['data']['episodes']:,}",
                  f"{r['data']['env_steps']:,}", duration(r["data"]["seconds"]),
                  duration(r["bc"]["seconds"]),
                  duration(r["discovery"]["seconds"]) if "discovery" in r else "-"]
                 for r in records]  # fmt: skip
        lines += [
            "## Shared pretraining (per family and seed)", "",
            markdown_table(["family", "seed", "expert episodes", "expert steps", "collect",
                            "bc", "discovery"], table), "",
            f"The {p.preset} preset cloned for {p.bc_steps} steps of {p.batch_size} "
            f"episodes, then a MetaController discovered for {p.discovery_steps} steps "
            f"(alpha {p.alpha}, KL warm-up {p.kl_warmup_steps} steps), once per "
            + ("(family, seed)" if p.pretrain_seed is None else
               f"family (seed {p.pretrain_seed}'s, for every seed)")
            + ", shared by the bc, internal-RL and latent rows.", "",
        ]  # fmt: skip
    shipped = shipped_rows(results)
    if shipped:
        lines += ["## Shipped pretraining", "",
                  *[f"- {r['family']}: the shipped agent `{r['shipped']}` (base model and "
                    "MetaController, not trained in this run), made by "
                    f"`{r['provenance']['command']}` "
                    f"at commit {r['provenance']['commit']} on {r['provenance']['date']}; shared "
                    "by every seed's bc, internal-RL and latent rows, whose seeds vary only the "
                    "RL and the evaluation. Its bc row costs nothing here."
                    for r in shipped], ""]  # fmt: skip
    lines += ["## Profiles", ""]
    lines += [f"- `{q.name}`: {q.seeds} seeds, {q.train_episodes:,} training episodes per RL "
              f"cell{''.join(f' ({f}: {n:,})' for f, n in q.family_episodes)}, "
              f"{q.eval_episodes:,} evaluation episodes, {q.data_episodes:,} expert "
              f"episodes, {q.bc_steps:,} BC and {q.discovery_steps:,} discovery steps; "
              f"{q.cost}." for q in PROFILES.values()]  # fmt: skip
    text = "\n".join(lines) + "\n"
    return write_text_atomically(bench.out / "leaderboard.md", text)


def plot_curves(
    results: dict[tuple[str, str], list[dict[str, Any]]],
    path: Path,
    title: str,
    envs: tuple[str, ...],
) -> Path:
    """Success against training episodes, median and 25-75% band over seeds, one panel per
    env (the paper's Fig. 8); rows without a curve appear as dashed evaluation levels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = [env_id for env_id in envs if any(key[1] == env_id for key in results)] or list(envs)
    columns = min(2, len(envs))
    rows = -(-len(envs) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(5.5 * columns, 3.6 * rows + 0.8),
                                sharey=True, squeeze=False)  # fmt: skip
    # tab20's dark shades first, then its light ones: 11 rows, 11 distinct colours
    colours = {name: plt.cm.tab20((2 * i) % 20 + (2 * i) // 20) for i, name in enumerate(ALGOS)}
    for axis, env_id in zip(axes.flat, envs, strict=False):
        for name in ALGOS:
            cells = results.get((name, env_id), [])
            curves = [c["history"] for c in cells if c["history"]]
            if curves:
                grid = np.unique(np.concatenate([[p["episodes"] for p in h] for h in curves]))
                success = np.array([
                    np.interp(grid, [p["episodes"] for p in h], [p["success"] for p in h],
                              right=np.nan)
                    for h in curves
                ])  # fmt: skip
                low, mid, high = np.nanpercentile(success, [25, 50, 75], axis=0)
                axis.plot(grid, mid, marker=".", color=colours[name], label=name)
                axis.fill_between(grid, low, high, color=colours[name], alpha=0.2)
            elif cells:
                level = np.median([c["eval"]["success"] for c in cells])
                axis.axhline(level, linestyle="--", color=colours[name], label=name)
        axis.xaxis.get_major_locator().set_params(integer=True)
        axis.set_title(env_id, fontsize=10)
        axis.set_xlabel("training episodes")
        axis.set_ylabel("success")
        axis.set_ylim(-0.05, 1.05)
    for axis in list(axes.flat)[len(envs) :]:
        axis.set_visible(False)
    legend: dict[str, Any] = {}
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    if legend:
        figure.legend(list(legend.values()), list(legend), loc="lower center", ncol=6,
                      fontsize=8, frameon=False)  # fmt: skip
    figure.suptitle(f"{title} profile: success against training episodes (median, 25-75%)",
                    fontsize=10)  # fmt: skip
    figure.tight_layout(rect=(0, 0.7 / (3.6 * rows + 0.8), 1, 1))
    write_atomically(path, lambda temp: figure.savefig(temp, dpi=100, format="png"))
    plt.close(figure)
    return path
