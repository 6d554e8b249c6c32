"""The Ray runner (issue 33): cells as Ray tasks on a local Ray with 2 CPUs give the
sequential runner's results; a raising cell is retried once, then reported while the
others finish; a re-run skips finished cells."""

import builtins
import json

import pytest
import torch

from metacontroller_agents.evaluate import RolloutReport
from metacontroller_agents.leaderboard.protocol import Profile
from metacontroller_agents.leaderboard.ray_runner import LOCAL, run_benchmark_ray
from metacontroller_agents.leaderboard.rows import ALGOS, Algo, Trained
from metacontroller_agents.leaderboard.runner import run_benchmark
from metacontroller_envs.cli import main

ray = pytest.importorskip("ray")
torch.set_num_threads(1)  # as each Ray task's torch: float sums depend on the thread count

TINY = Profile(name="tiny", seeds=2, train_episodes=8, log_every=4, num_envs=4,
               eval_episodes=8, data_episodes=16, bc_steps=2, batch_size=4,
               discovery_steps=2)  # fmt: skip
ROWS = ["random", "bc", "internal-rl", "ppo"]
#: What differs between two runs of one cell: when, where and how fast it ran.
TIMINGS = ("seconds", "steps_per_s", "wall_clock_s", "date", "machine")


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def cells(out):
    return {p.name: json.loads(p.read_text()) for p in sorted((out / "cells").glob("*.json"))}


def test_ray_cells_equal_the_sequential_runners_and_a_rerun_skips_them(tmp_path):
    sequential, farmed = tmp_path / "sequential", tmp_path / "ray"
    assert run_benchmark(TINY, sequential, ROWS, ["PinPad-v0"], device="cpu", progress=False) == []
    assert run_benchmark_ray(TINY, farmed, ROWS, ["PinPad-v0"], device="cpu", address=LOCAL,
                             workers=2, progress=False) == []  # fmt: skip
    assert not ray.is_initialized()  # the Ray it started is stopped
    expected, got = cells(sequential), cells(farmed)
    assert sorted(got) == sorted(expected) and len(got) == len(ROWS) * TINY.seeds
    for name in expected:
        assert without_timings(got[name]) == without_timings(expected[name]), name
    assert got["internal-rl--PinPad-v0--seed1.json"]["history"]  # a learned row, compared
    runs = json.loads((farmed / "runs.json").read_text())
    assert runs[-1]["runner"].startswith("ray") and runs[-1]["cells_run"] == len(expected)
    assert "| internal-rl | PinPad-v0 |" in (farmed / "leaderboard.md").read_text()

    before = {p.name: p.stat().st_mtime_ns for p in (farmed / "cells").glob("*.json")}
    (farmed / "cells" / "bc--PinPad-v0--seed1.json").unlink()
    assert run_benchmark_ray(TINY, farmed, ROWS, ["PinPad-v0"], device="cpu", address=LOCAL,
                             workers=2, progress=False) == []  # fmt: skip
    after = {p.name: p.stat().st_mtime_ns for p in (farmed / "cells").glob("*.json")}
    changed = {name for name in after if after[name] != before.get(name)}
    assert changed == {"bc--PinPad-v0--seed1.json"}  # only the missing cell ran
    assert json.loads((farmed / "runs.json").read_text())[-1]["cells_run"] == 1
    assert without_timings(cells(farmed)["bc--PinPad-v0--seed1.json"]) == without_timings(
        expected["bc--PinPad-v0--seed1.json"])  # fmt: skip


def counting_row(marker_folder, fails: int) -> Algo:
    """A fast row whose cell raises on its first `fails` runs (counted in files: the runs
    happen in Ray's worker processes)."""

    def train(bench, cell, pretrained):
        runs = len(list(marker_folder.glob(f"{cell.name}.*")))
        (marker_folder / f"{cell.name}.{runs}").touch()
        if runs < fails:
            raise RuntimeError(f"simulated failure {runs}")
        return Trained(episodes=8, env_steps=80)

    def evaluate(bench, cell, trained):
        return RolloutReport(cell.env_id, episodes=8, successes=4, mean_return=0.5,
                             mean_length=10.0, seconds=0.01)  # fmt: skip

    return Algo(train, evaluate, "a test row")


def test_a_raising_cell_is_retried_once_then_reported_and_the_others_finish(
    tmp_path, monkeypatch
):
    markers = tmp_path / "markers"
    markers.mkdir()
    monkeypatch.setitem(ALGOS, "flaky", counting_row(markers, fails=1))
    monkeypatch.setitem(ALGOS, "broken", counting_row(markers, fails=99))
    monkeypatch.setitem(ALGOS, "fine", counting_row(markers, fails=0))
    out = tmp_path / "out"
    failures = run_benchmark_ray(TINY, out, ["flaky", "broken", "fine"], ["PinPad-v0"],
                                 seeds=[0], device="cpu", workers=2, progress=False)  # fmt: skip
    assert [(cell.name, error) for cell, error in failures] == [
        ("broken--PinPad-v0--seed0", "RuntimeError: simulated failure 1")
    ]  # its second run raised too, and was its last
    assert sorted(cells(out)) == ["fine--PinPad-v0--seed0.json", "flaky--PinPad-v0--seed0.json"]
    runs = sorted(p.name for p in markers.iterdir())
    assert runs == ["broken--PinPad-v0--seed0.0", "broken--PinPad-v0--seed0.1",
                    "fine--PinPad-v0--seed0.0", "flaky--PinPad-v0--seed0.0",
                    "flaky--PinPad-v0--seed0.1"]  # fmt: skip
    assert "| flaky | PinPad-v0 |" in (out / "leaderboard.md").read_text()


def test_ray_without_the_extra_says_which_to_install(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    argv = ["bench", "--quick", "--only-algo", "random", "--seeds", "0", "--out",
            str(tmp_path), "--ray", "--workers", "2"]  # fmt: skip
    with pytest.raises(SystemExit, match=r"metacontroller-envs\[ray\]"):
        main(argv)
    with pytest.raises(SystemExit, match="go with --ray"):
        main(["bench", "--quick", "--only-algo", "random", "--out", str(tmp_path),
              "--workers", "2"])  # fmt: skip


@pytest.mark.parametrize("options, message", [
    ({"workers": 0}, "workers must be a positive integer"),
    ({"threads": 0}, "threads must be a positive integer"),
    ({"gpus_per_cell": -1.0}, "gpus_per_cell must be >= 0"),
])  # fmt: skip
def test_ray_options_are_checked_before_ray_starts(tmp_path, options, message):
    with pytest.raises(ValueError, match=message):
        run_benchmark_ray(TINY, tmp_path, ["random"], ["PinPad-v0"], device="cpu", **options)
    assert not ray.is_initialized()
