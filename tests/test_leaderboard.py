"""The leaderboard (issue 7, part 1): a tiny run gives a well-formed table, JSON and curves;
a re-run skips finished cells; a cell that fails or is interrupted keeps the finished ones."""

import dataclasses
import json
from pathlib import Path

import gymnasium as gym
import matplotlib.image
import pytest
import torch

from benchmarks import leaderboard as checkout_script
from metacontroller_agents.evaluate import RolloutReport
from metacontroller_agents.leaderboard import cli, pretraining
from metacontroller_agents.leaderboard.pretraining import Bench
from metacontroller_agents.leaderboard.protocol import (
    ENVS,
    PROFILES,
    Cell,
    Profile,
    finished,
    max_len,
)
from metacontroller_agents.leaderboard.report import COLUMNS, write_leaderboard
from metacontroller_agents.leaderboard.rows import ALGOS, Algo, Trained
from metacontroller_agents.leaderboard.runner import run_benchmark, run_cell
from metacontroller_envs import registry
from metacontroller_envs.cli import build_parser, main

torch.set_num_threads(1)

TINY = Profile(name="tiny", seeds=3, train_episodes=8, log_every=4, num_envs=4,
               eval_episodes=8, data_episodes=16, bc_steps=2, batch_size=4,
               discovery_steps=2)  # fmt: skip


def parse_table(text):
    """The leaderboard's main table: its header and its rows, as lists of cells."""
    split = table_lines(text)
    start = split.index(list(COLUMNS))
    rows = [row for row in split[start + 1 :] if len(row) == len(COLUMNS)]
    return [dict(zip(COLUMNS, row, strict=True)) for row in rows if row[0] != "field"]


def table_lines(text):
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def mean_and_std(cell):
    mean, std = cell.split(" (n=")[0].split(" ± ")
    return float(mean), float(std)


def stub_algo(calls, fail_seed=None, error=RuntimeError, not_for=lambda env_id: None):
    """A fast row with a learning curve whose train records its calls and can fail."""

    def train(bench, cell, pretrained):
        calls.append(cell.seed)
        if cell.seed == fail_seed:
            raise error("simulated failure")
        history = [{"episodes": 4, "success": 0.1 * cell.seed, "env_steps": 40},
                   {"episodes": 8, "success": 0.2 * cell.seed, "env_steps": 80}]  # fmt: skip
        return Trained(episodes=8, env_steps=80, history=history)

    def evaluate(bench, cell, trained):
        return RolloutReport(cell.env_id, episodes=8, successes=cell.seed, mean_return=0.5,
                             mean_length=10.0, seconds=0.01)  # fmt: skip

    return Algo(train, evaluate, "a test row", not_for=not_for)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    failures = run_benchmark(TINY, out, algos=["random", "expert", "bc"], envs=["PinPad-v0"],
                             device="cpu", progress=False)  # fmt: skip
    return out, failures


def test_tiny_run_writes_a_well_formed_table_and_json(tiny_run):
    out, failures = tiny_run
    assert failures == []
    rows = parse_table((out / "leaderboard.md").read_text())
    assert [(r["algo"], r["env"]) for r in rows] == [
        ("random", "PinPad-v0"), ("expert", "PinPad-v0"), ("bc", "PinPad-v0")
    ]  # fmt: skip
    for row in rows:
        mean, std = mean_and_std(row["success mean ± std"])
        assert 0 <= mean <= 1 and std >= 0
        float(row["return"])
        float(row["steps/s"].replace(",", ""))
        assert row["wall-clock"].endswith((" s", " min"))
    by_algo = {r["algo"]: r for r in rows}
    assert mean_and_std(by_algo["expert"]["success mean ± std"]) == (1.0, 0.0)
    assert by_algo["bc"]["episodes"] == "16"  # the expert episodes it learned from
    cells = sorted((out / "cells").glob("*.json"))
    assert len(cells) == 9
    for path in cells:
        result = json.loads(path.read_text())
        assert result["protocol"] == TINY.protocol()
        assert result["eval"]["episodes"] == TINY.eval_episodes
        assert result["eval"]["first_seed"] == 10**9 + 10**6 * result["seed"]
        assert 0 <= result["eval"]["success"] <= 1 and result["wall_clock_s"] >= 0
        assert path.name == f"{result['algo']}--{result['env']}--seed{result['seed']}.json"
    bc = json.loads((out / "cells" / "bc--PinPad-v0--seed1.json").read_text())
    assert bc["pretraining"]["data"]["episodes"] == 16 and "discovery" not in bc["pretraining"]
    assert "## Shared pretraining" in (out / "leaderboard.md").read_text()


def test_the_glance_table_holds_each_rows_success(tiny_run):
    out, _ = tiny_run
    text = (out / "leaderboard.md").read_text()
    header, *rows = table_lines(text)[: 1 + 3]
    assert header == ["algo", "PinPad-v0"]
    success = {r["algo"]: r["success mean ± std"] for r in parse_table(text)}
    assert rows == [[algo, success[algo]] for algo in ("random", "expert", "bc")]


def test_curves_png_is_readable(tiny_run):
    out, _ = tiny_run
    image = matplotlib.image.imread(out / "curves.png")
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_rerun_skips_finished_cells(tiny_run, monkeypatch):
    out, _ = tiny_run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")}
    calls = []
    for name in ("random", "expert", "bc"):
        monkeypatch.setitem(ALGOS, name, stub_algo(calls, fail_seed=-1))
    monkeypatch.setattr(pretraining, "collect", lambda *a, **k: pytest.fail("collected again"))
    assert run_benchmark(TINY, out, algos=["random", "expert", "bc"], envs=["PinPad-v0"],
                         device="cpu", progress=False) == []  # fmt: skip
    assert calls == []
    assert {p.name: p.stat().st_mtime_ns for p in (out / "cells").glob("*.json")} == before
    other = Profile(**{**TINY.protocol(), "eval_episodes": 16})  # another protocol: not done
    assert finished(out / "cells" / "random--PinPad-v0--seed0.json", other) is None


def test_a_failing_cell_keeps_the_finished_ones_and_runs_on_the_next_call(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setitem(ALGOS, "stub", stub_algo(calls, fail_seed=1))
    failures = run_benchmark(TINY, tmp_path, algos=["stub"], envs=["PinPad-v0"], device="cpu",
                             progress=False)  # fmt: skip
    assert [(cell.name, error) for cell, error in failures] == [
        ("stub--PinPad-v0--seed1", "RuntimeError: simulated failure")
    ]
    assert sorted(p.name for p in (tmp_path / "cells").glob("*.json")) == [
        "stub--PinPad-v0--seed0.json", "stub--PinPad-v0--seed2.json"
    ]  # fmt: skip
    (row,) = parse_table((tmp_path / "leaderboard.md").read_text())
    assert row["success mean ± std"].endswith("(n=2)")
    calls.clear()
    monkeypatch.setitem(ALGOS, "stub", stub_algo(calls))
    assert run_benchmark(TINY, tmp_path, algos=["stub"], envs=["PinPad-v0"], device="cpu",
                         progress=False) == []  # fmt: skip
    assert calls == [1]  # only the failed cell ran again
    (row,) = parse_table((tmp_path / "leaderboard.md").read_text())
    assert mean_and_std(row["success mean ± std"]) == (pytest.approx(1 / 8), pytest.approx(1 / 8))
    assert row["episodes"] == "8" and row["env steps"] == "80"
    assert matplotlib.image.imread(tmp_path / "curves.png").ndim == 3


def test_an_interrupted_run_keeps_finished_cells_and_writes_the_table(tmp_path, monkeypatch):
    monkeypatch.setitem(ALGOS, "stub", stub_algo([], fail_seed=1, error=KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(TINY, tmp_path, algos=["stub"], envs=["PinPad-v0"], device="cpu",
                      progress=False)  # fmt: skip
    assert [p.name for p in (tmp_path / "cells").glob("*.json")] == ["stub--PinPad-v0--seed0.json"]
    assert len(parse_table((tmp_path / "leaderboard.md").read_text())) == 1


def test_a_row_that_does_not_apply_shows_its_reason(tmp_path, monkeypatch):
    reason = "it needs something this env lacks"
    not_for = lambda env_id: reason if env_id == "PinPad-Posttrain-v0" else None  # noqa: E731
    monkeypatch.setitem(ALGOS, "stub", stub_algo([], not_for=not_for))
    envs = ["PinPad-v0", "PinPad-Posttrain-v0"]
    assert run_benchmark(TINY, tmp_path, algos=["stub"], envs=envs, seeds=[0], device="cpu",
                         progress=False) == []  # fmt: skip
    text = (tmp_path / "leaderboard.md").read_text()
    rows = {r["env"]: r for r in parse_table(text)}
    assert rows["PinPad-Posttrain-v0"]["success mean ± std"] == "n/a [1]"
    assert f"[1] {reason}" in text
    assert not (tmp_path / "cells" / "stub--PinPad-Posttrain-v0--seed0.json").exists()


def test_internal_rl_rows_run_on_an_env_without_a_vector_entry_point(tmp_path):
    """BabyAI has no vector entry point: internal RL and ES step a SyncVectorEnv there."""
    env_id = "SubgoalBabyAI-Pretrain-v0"
    assert gym.spec(env_id).vector_entry_point is None
    assert run_benchmark(TINY, tmp_path, algos=["internal-rl", "es"], envs=[env_id], seeds=[0],
                         device="cpu", progress=False) == []  # fmt: skip
    for algo in ("internal-rl", "es"):
        result = json.loads((tmp_path / "cells" / f"{algo}--{env_id}--seed0.json").read_text())
        assert result["train"]["episodes"] >= TINY.train_episodes
        assert result["eval"]["episodes"] == TINY.eval_episodes


def test_mcenv_bench_dispatches_to_the_leaderboard(tmp_path, capsys):
    argv = ["bench", "--quick", "--only-algo", "random", "--only-env", "PinPad-v0", "--seeds",
            "0", "--out", str(tmp_path), "--device", "cpu", "--threads", "0"]  # fmt: skip
    assert main(argv) == 0
    assert (tmp_path / "cells" / "random--PinPad-v0--seed0.json").exists()
    assert "Leaderboard: the quick profile" in (tmp_path / "leaderboard.md").read_text()
    assert "leaderboard.md" in capsys.readouterr().out


@pytest.mark.parametrize("env_id", list(ENVS))
def test_each_family_model_holds_its_longest_episode(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    unwrapped = env.unwrapped
    pinpad = registry.family(env_id) == "pinpad"
    limit = unwrapped.config.horizon if pinpad else unwrapped.level.max_steps
    assert max_len(registry.family(env_id)) >= limit + 1


def test_family_model_lengths_come_from_the_registered_horizons():
    """The longest registered max_episode_steps of a family's envs here, + 1."""
    assert (max_len("pinpad"), max_len("babyai")) == (101, 385)


def test_mcenv_bench_writes_under_the_working_directory_by_default(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["bench", "--profile", "full"]
    out = cli.results_folder(build_parser(argv).parse_args(argv))
    assert out.resolve() == tmp_path.resolve() / "leaderboard" / "full"
    # the checkout's entry script writes where the committed tables live
    committed = Path(__file__).resolve().parents[1] / "docs" / "results" / "leaderboard"
    assert checkout_script.RESULTS == committed and (committed / "quick").is_dir()


def test_pretrained_rows_run_end_to_end_and_a_cell_is_deterministic(tmp_path):
    """internal RL, ES and SB3 on the latent wrapper, on the shared pretraining (built once)."""
    algos = ["internal-rl", "es", "ppo-latent"]
    assert run_benchmark(TINY, tmp_path, algos=algos, envs=["PinPad-Posttrain-v0"], seeds=[0],
                         device="cpu", progress=False) == []  # fmt: skip
    for algo in algos:
        result = json.loads((tmp_path / "cells" / f"{algo}--PinPad-Posttrain-v0--seed0.json")
                            .read_text())  # fmt: skip
        assert result["train"]["episodes"] == TINY.train_episodes
        assert [p["episodes"] for p in result["history"]] == [4, 8]
        assert result["eval"]["episodes"] == TINY.eval_episodes
        assert "discovery" in result["pretraining"]
    assert len(list((tmp_path / "cache" / "pretrain").iterdir())) == 1
    bench = Bench(TINY, tmp_path, "cpu")
    cell = Cell("internal-rl", "PinPad-Posttrain-v0", 0)
    first, second = run_cell(bench, cell), run_cell(bench, cell)
    for key in ("successes", "return", "length", "env_steps"):
        assert first["eval"][key] == second["eval"][key]
    assert first["history"] == second["history"]


DISCO_WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "disco_103.npz"


@pytest.mark.skipif(not DISCO_WEIGHTS.is_file(), reason=f"no Disco103 weights at {DISCO_WEIGHTS}")
def test_disco103_row_trains_and_evaluates_and_needs_the_weights(tmp_path, monkeypatch):
    monkeypatch.delenv("DISCO103_WEIGHTS", raising=False)
    assert "DISCO103_WEIGHTS" in ALGOS["disco103"].not_for("PinPad-v0")
    monkeypatch.setenv("DISCO103_WEIGHTS", str(DISCO_WEIGHTS))
    assert ALGOS["disco103"].not_for("PinPad-v0") is None
    assert run_benchmark(TINY, tmp_path, algos=["disco103"], envs=["PinPad-v0"], seeds=[0],
                         device="cpu", progress=False) == []  # fmt: skip
    result = json.loads((tmp_path / "cells" / "disco103--PinPad-v0--seed0.json").read_text())
    assert result["train"]["episodes"] >= TINY.train_episodes
    episodes = [point["episodes"] for point in result["history"]]
    assert episodes == sorted(episodes) and episodes[0] >= TINY.log_every
    assert result["eval"]["episodes"] == TINY.eval_episodes
    assert result["pretraining"] is None
    # its finished cell stays in the table when a later invocation lacks the weights
    monkeypatch.delenv("DISCO103_WEIGHTS")
    write_leaderboard(Bench(TINY, tmp_path, "cpu"))
    row = parse_table((tmp_path / "leaderboard.md").read_text())[0]
    assert row["algo"] == "disco103" and not row["success mean ± std"].startswith("n/a")


def test_the_standard_profile_runs_on_the_shipped_agent(tmp_path):
    """The standard profile's PinPad pretraining is the shipped PinPad-v0 agent: no data,
    BC or discovery is run, and the table says where the base model came from."""
    standard = dataclasses.replace(PROFILES["standard"], eval_episodes=8)
    assert standard.budget("PinPad-Ladder4-v0") == standard.train_episodes
    assert standard.budget("SubgoalBabyAI-Posttrain-v0") < standard.train_episodes
    assert run_benchmark(standard, tmp_path, algos=["bc"], envs=["PinPad-Ladder2-v0"],
                         seeds=[0], device="cpu", progress=False) == []  # fmt: skip
    cell = json.loads((tmp_path / "cells" / "bc--PinPad-Ladder2-v0--seed0.json").read_text())
    assert cell["pretraining"]["shipped"] == "PinPad-v0" and cell["train"]["episodes"] == 0
    assert cell["pretraining"]["provenance"]["commit"]
    assert finished(tmp_path / "cells" / "bc--PinPad-Ladder2-v0--seed0.json", standard)
    assert not (tmp_path / "cache" / "pretrain").exists()
    text = (tmp_path / "leaderboard.md").read_text()
    assert "## Shipped pretraining" in text and "the shipped agent `PinPad-v0`" in text
    assert "What the standard profile can and cannot show" in text
    with pytest.raises(ValueError, match="unknown env 'PinPad-Ladder2-v0' for the quick"):
        run_benchmark(PROFILES["quick"], tmp_path, envs=["PinPad-Ladder2-v0"], device="cpu")


def test_a_pretrain_seed_shares_one_pretraining_across_seeds(tmp_path):
    shared = dataclasses.replace(TINY, pretrain_seed=0)
    assert run_benchmark(shared, tmp_path, algos=["bc"], envs=["PinPad-v0"], seeds=[0, 1],
                         device="cpu", progress=False) == []  # fmt: skip
    assert [p.name for p in (tmp_path / "cache" / "pretrain").iterdir()] == ["pinpad-seed0"]
    seeds = [json.loads((tmp_path / "cells" / f"bc--PinPad-v0--seed{k}.json").read_text())
             ["pretraining"]["seed"] for k in (0, 1)]  # fmt: skip
    assert seeds == [0, 0]


def test_the_interval_over_seeds_is_students_t_clipped_to_rates():
    from metacontroller_envs.evaluate import seed_interval

    assert seed_interval([0.5]) is None  # one seed: no spread to speak of
    low, high = seed_interval([0.2, 0.4, 0.6])  # mean 0.4, std 0.2, t(2) = 4.303
    half = 4.303 * 0.2 / 3**0.5
    assert (low, high) == (pytest.approx(0.0), pytest.approx(0.4 + half))  # clipped at 0
    assert seed_interval([0.9, 0.9]) == (pytest.approx(0.9), pytest.approx(0.9))
