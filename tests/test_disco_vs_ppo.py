"""Disco103 against PPO (experiments/disco_vs_ppo.py): PPO on the Disco103 agent's own
network, and on the Disco103 run's stages with its budget of env steps."""

import dataclasses
import json
from pathlib import Path

import gymnasium as gym
import pytest
import torch
from stable_baselines3 import PPO

import experiments.disco_vs_ppo as comparison
from metacontroller_agents.disco_agent import DiscoActor, DiscoConfig, train_disco
from metacontroller_agents.sb3_baselines import GoalMixturePolicy, PolicyLogits, make_env
from metacontroller_agents.transformer import ModelConfig

torch.set_num_threads(1)

WEIGHTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "disco_103.npz"
needs_weights = pytest.mark.skipif(not WEIGHTS.is_file(), reason=f"no weights at {WEIGHTS}")
TASKS = {"task_in_obs": True}


def tiny_model_config() -> dict:
    probe = gym.make("PinPad-v0", **TASKS)
    return dataclasses.asdict(ModelConfig.for_env(probe, "small", width=32))


def test_goal_mixture_policy_is_the_disco_actor_with_its_planner_fixed(tmp_path):
    config = tiny_model_config()
    env = make_env("PinPad-v0", None, "cpu", 0, TASKS)
    model = PPO(GoalMixturePolicy, env, n_steps=32, batch_size=16, n_epochs=2, seed=0,
                device="cpu", policy_kwargs={"model_config": config})  # fmt: skip
    obs = torch.as_tensor(gym.make("PinPad-v0", **TASKS).reset(seed=3)[0])[None]
    actor = DiscoActor(ModelConfig(**config))
    actor.load_state_dict(model.policy.actor.state_dict())
    assert torch.allclose(PolicyLogits(model.policy).logits(obs), actor.logits(obs))
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(64)
    after = model.policy.state_dict()
    fixed = [k for k in before if "planner" in k or k.endswith("goal_scale")]
    assert fixed and all(torch.equal(before[k], after[k]) for k in fixed)
    for trained in ("actor.goal.weight", "actor.policy.weight", "value_net.weight"):
        assert not torch.equal(before[trained], after[trained]), trained
    model.save(tmp_path / "ppo.zip")
    loaded = PPO.load(tmp_path / "ppo.zip", device="cpu")
    assert torch.equal(PolicyLogits(loaded.policy).logits(obs),
                       PolicyLogits(model.policy).logits(obs))  # fmt: skip
    without = {"model_config": {**config, "goal_head": False}}
    with pytest.raises(ValueError, match="goal_head"):
        PPO(GoalMixturePolicy, env, policy_kwargs=without)


def disco_stages(tmp_path: Path) -> list[Path]:
    """Two tiny Disco103 stages: single colours, then PinPad-v0's tasks started midway."""
    tiny = dict(num_envs=4, rollout_len=4, batch_size=4, width=32, model_width=16,
                log_every=2, discount=0.9, device="cpu")  # fmt: skip
    colours = DiscoConfig(env_kwargs={**TASKS, "tasks": ["0", "1", "0-1-4-5-0-1"]}, steps=2,
                          **tiny)  # fmt: skip
    midway = DiscoConfig(env_kwargs={**TASKS, "start_midway": True}, steps=4, **tiny)
    paths = [tmp_path / "colours.pt", tmp_path / "midway.pt"]
    train_disco(colours, paths[0], WEIGHTS, progress=False)
    train_disco(midway, paths[1], WEIGHTS, progress=False, start_from=paths[0])
    return paths


@needs_weights
def test_ppo_gets_the_disco_run_s_stages_and_env_steps(tmp_path, monkeypatch, capsys):
    paths = disco_stages(tmp_path)
    stages, _ = comparison.read_stages(paths)
    assert [s.env_steps for s in stages] == [32, 32]  # a rollout of 4 envs x 4 steps per update
    assert stages[1].env_kwargs == {**TASKS, "start_midway": True}
    monkeypatch.setattr(comparison, "EVERY", 1)
    out = tmp_path / "out"
    argv = ["--disco", *map(str, paths), "--episodes", "6", "--out", str(out)]
    assert comparison.main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert [run["name"] for run in results["runs"]] == [
        "disco103", "ppo-mlp-seed0", "ppo-goal-mixture-seed0"]  # fmt: skip
    for run in results["runs"][1:]:
        for took, stage in zip(run["env_steps"], stages, strict=True):  # 4 envs per step
            assert stage.env_steps <= took < stage.env_steps + stage.num_envs
        assert run["history"] and {p["stage"] for p in run["history"]} <= {0, 1}
        assert run["eval"]["episodes"] == 6 and 0 <= run["eval"]["success"] <= 1
    table = (out / "table.md").read_text()
    assert table.count("\n| ") == 3 and "32 + 32" in table
    assert (out / "curves.png").stat().st_size > 0

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(comparison, "train_ppo", no_training)
    assert comparison.main(argv) == 0  # the finished runs are loaded
    with pytest.raises(ValueError, match="in training order"):
        comparison.read_stages(paths[::-1])
