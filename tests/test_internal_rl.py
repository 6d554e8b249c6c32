"""Internal RL (issue 6, part 2): the objective by hand, the rollouts, the baselines, resume."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

import metacontroller_envs  # noqa: F401
from metacontroller_agents.checkpoint import load_checkpoint
from metacontroller_agents.internal_rl import (
    InternalRL,
    InternalRLConfig,
    LatentPolicy,
    clipped_policy_loss,
    normalised_advantages,
    train_internal_rl,
)

torch.set_num_threads(1)


def small_run(checkpoint, **overrides):
    values = dict(checkpoint=checkpoint, env="PinPad-Posttrain-v0", episodes=16,
                  batch_episodes=8, num_envs=4, epochs=2, hidden=16, device="cpu")  # fmt: skip
    return InternalRLConfig(**{**values, **overrides})


def test_advantages_are_returns_normalised_over_the_batch_or_the_group():
    returns = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0])
    expected = (returns - 2 / 3) / (np.std(returns) + 1e-3)
    np.testing.assert_allclose(normalised_advantages(returns), expected)
    grouped = normalised_advantages(returns, groups=np.array([0, 0, 0, 1, 1, 1]))
    first = (returns[:3] - 1 / 3) / (np.std(returns[:3]) + 1e-3)
    np.testing.assert_allclose(grouped, np.concatenate([first, np.zeros(3)]))


def test_policy_loss_matches_a_hand_computation():
    log_prob = torch.tensor([[0.0, np.log(1.5)], [np.log(0.5), 0.3]])
    old = torch.zeros(2, 2)
    advantages = torch.tensor([2.0, -1.0])
    mask = torch.tensor([[True, True], [True, False]])
    # ratios 1, 1.5 (episode 0, A = 2) and 0.5 (episode 1, A = -1); the masked one is ignored
    # min(1 * 2, 1 * 2) = 2; min(1.5 * 2, 1.2 * 2) = 2.4; min(0.5 * -1, 0.8 * -1) = -0.8
    expected = -(2.0 + 2.4 - 0.8) / 3
    loss = clipped_policy_loss(log_prob, old, advantages, mask, clip=0.2)
    assert loss.item() == pytest.approx(expected)


def test_policy_starts_at_the_prior_and_steps_like_it_reads_sequences():
    torch.manual_seed(0)
    policy = LatentPolicy(width=12, latent_dim=3, hidden=5)
    e, z = torch.randn(2, 4, 12), torch.randn(2, 4, 3)
    prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(policy.log_prob(e, z), prior)
    with torch.no_grad():
        policy.mean.weight.normal_()
        whole, _ = policy.distribution(e)
        h, means = None, []
        for k in range(4):
            dist, h = policy.distribution(e[:, k : k + 1], h)
            means.append(dist.mean)
    torch.testing.assert_close(torch.cat(means, 1), whole.mean)


@pytest.mark.parametrize("mode", ["internal", "force_switch", "raw_actions", "raw_actions_hot"])
def test_rollouts_play_every_episode_of_the_batch(discovery_checkpoint, mode):
    extra = {"force_switch": True} if mode == "force_switch" else {}
    if mode.startswith("raw_actions"):
        extra = {"raw_actions": True, "temperature": 3.0 if mode.endswith("hot") else 1.0}
    run = InternalRL(small_run(discovery_checkpoint, **extra))
    episodes = run.collect(iteration=0)
    assert len(episodes.returns) == 8
    choices = episodes.mask.sum(1).numpy()
    assert (choices >= 1).all() and (choices <= episodes.lengths).all()
    if mode == "internal":
        assert (choices < episodes.lengths).any()  # codes last several steps
    else:  # a choice every step
        np.testing.assert_array_equal(choices, episodes.lengths)
    # the stored log-probabilities are those of the policy that played
    with torch.no_grad():
        replay = run.log_prob(episodes)
    torch.testing.assert_close(replay[episodes.mask], episodes.log_prob[episodes.mask],
                               atol=1e-4, rtol=1e-4)  # fmt: skip
    again = InternalRL(small_run(discovery_checkpoint, **extra)).collect(iteration=0)
    np.testing.assert_array_equal(again.lengths, episodes.lengths)  # same seed, same result


def test_group_advantage_plays_each_group_on_one_layout(discovery_checkpoint):
    run = InternalRL(small_run(discovery_checkpoint, advantage="group", group_size=2))
    run.collect(iteration=0)
    walls = run.envs.unwrapped.batch.walls  # the layouts of the last episodes played
    np.testing.assert_array_equal(walls[0], walls[1])
    assert not np.array_equal(walls[0], walls[2])


def test_training_updates_the_policy_logs_success_and_resumes(
    discovery_checkpoint, tmp_path, check_resume
):
    # one colour to visit: random codes succeed now and then, so the returns differ
    config = small_run(discovery_checkpoint, checkpoint_every=1, env="PinPad-v0",
                       env_kwargs={"task": "0"})  # fmt: skip
    log = []
    path = train_internal_rl(config, tmp_path / "a.pt", progress=False, log=log)
    assert [m["episodes"] for m in log] == [8, 16]
    assert 0 < sum(m["success"] for m in log) < 2
    trained = load_checkpoint(path, "internal_rl")
    assert trained["policy"]["mean.weight"].abs().sum() > 0  # it moved from the prior
    check_resume(train_internal_rl, "internal_rl", config, trained["policy"], 8)


def test_bad_configs_are_clear_errors(discovery_checkpoint):
    with pytest.raises(ValueError, match="must divide batch_episodes"):
        small_run(discovery_checkpoint, num_envs=3)
    with pytest.raises(ValueError, match="advantage must be one of"):
        small_run(discovery_checkpoint, advantage="critic")
    with pytest.raises(ValueError, match="threshold must be in"):
        small_run(discovery_checkpoint, threshold=2.0)
    with pytest.raises(ValueError, match="corrupt or not a torch file"):
        InternalRL(small_run(__file__))


def test_commands_run_internal_rl_and_the_sb3_rows(discovery_checkpoint, tmp_path, capsys):
    from metacontroller_envs.cli import main

    rl = ["train", "internal-rl", "--checkpoint", discovery_checkpoint, "--env", "PinPad-v0",
          "--episodes", "8", "--batch-episodes", "8", "--num-envs", "4", "--device", "cpu",
          "--out", str(tmp_path / "rl.pt")]  # fmt: skip
    assert main(rl) == 0
    (point,) = load_checkpoint(tmp_path / "rl.pt", "internal_rl")["history"]
    assert point["episodes"] == 8  # and steps/s logged, as BC's tokens/s
    assert point["env_steps_per_s"] == pytest.approx(point["env_steps"] / point["seconds"])
    task_in_obs = ["--env-kwargs", '{"task_in_obs": true}']
    for algo, latent in [("ppo", task_in_obs), ("sac", ["--latent", discovery_checkpoint])]:
        out = tmp_path / f"{algo}.json"
        sb3 = ["train", "sb3", "--algo", algo, "--env", "PinPad-v0", "--episodes", "4",
               "--every", "2", "--device", "cpu", "--out", str(out), *latent]  # fmt: skip
        assert main(sb3) == 0
        history = json.loads(out.read_text())
        assert [point["episodes"] for point in history] == [2, 4]
        assert all(point["env_steps"] >= point["episodes"] for point in history)
    from metacontroller_agents.sb3_baselines import make_env

    plain, with_task = (make_env("PinPad-v0", None, "cpu", 0, kwargs) for kwargs in
                        (None, {"task_in_obs": True}))  # fmt: skip
    assert with_task.observation_space.shape[0] > plain.observation_space.shape[0]
    capsys.readouterr()
    assert main(["train", "sb3", "--algo", "sac", "--env", "PinPad-v0", "--episodes", "2"]) == 2
    assert "SAC needs a continuous (Box) action space" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [{}, {"raw_actions": True}])
def test_a_curriculum_starts_from_the_previous_runs_policy(discovery_checkpoint, tmp_path, extra):
    first = small_run(discovery_checkpoint, env="PinPad-v0", env_kwargs={"task": "0"}, **extra)
    path = train_internal_rl(first, tmp_path / "rung1.pt", progress=False)
    trained = load_checkpoint(path, "internal_rl")["policy"]
    # the next rung: any task string, the policy taken over from the first
    second = small_run(discovery_checkpoint, env="PinPad-v0", env_kwargs={"task": "0-1-2"},
                       init_policy=str(path), **extra)  # fmt: skip
    run = InternalRL(second)
    for name, value in run.trained.state_dict().items():
        torch.testing.assert_close(value, trained[name])
    fresh = InternalRL(small_run(discovery_checkpoint, **extra)).trained.state_dict()
    assert any(not torch.equal(fresh[name], trained[name]) for name in trained)


def test_a_curriculum_refuses_a_policy_of_another_shape(discovery_checkpoint, tmp_path):
    path = train_internal_rl(small_run(discovery_checkpoint), tmp_path / "z.pt", progress=False)
    with pytest.raises(ValueError, match="does not hold a policy of this run's shape"):
        InternalRL(small_run(discovery_checkpoint, raw_actions=True, init_policy=str(path)))
    with pytest.raises(ValueError, match="holds a 'discovery' run"):
        InternalRL(small_run(discovery_checkpoint, init_policy=discovery_checkpoint))


def test_the_ladder_script_runs_rung_by_rung_and_resumes(discovery_checkpoint, tmp_path,
                                                         monkeypatch, capsys):  # fmt: skip
    import sys

    from experiments import ladder

    out = tmp_path / "ladder"
    argv = ["ladder", "run", "--checkpoint", discovery_checkpoint, "--method", "internal-rl",
            "--rungs", "PinPad-Ladder2-v0", "PinPad-Ladder3-v0", "--episodes", "128",
            "--eval-episodes", "64", "--out", str(out)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    ladder.main()
    folder = out / "internal-rl" / "seed0"
    results = [json.loads((folder / f"{rung}.json").read_text())
               for rung in ("PinPad-Ladder2-v0", "PinPad-Ladder3-v0")]  # fmt: skip
    assert results[0]["started_from"] is None
    assert results[1]["started_from"] == str(folder / "PinPad-Ladder2-v0.pt")
    assert all(r["eval"]["episodes"] == 64 and len(r["history"]) == 1 for r in results)
    capsys.readouterr()
    ladder.main()  # finished rungs are skipped
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(sys, "argv", ["ladder", "report", "--out", str(out)])
    ladder.main()
    table = capsys.readouterr().out
    assert table.count("| PinPad-Ladder2-v0 |") == table.count("| PinPad-Ladder3-v0 |") == 2


def test_std_lr_gives_the_log_std_its_own_learning_rate(discovery_checkpoint, tmp_path):
    from metacontroller_agents.internal_rl import parameter_groups

    config = small_run(discovery_checkpoint, std_lr=0.05)
    run = InternalRL(config)
    groups = torch.optim.Adam(parameter_groups(run.trained, config), lr=config.lr).param_groups
    assert [g["lr"] for g in groups] == [config.lr, 0.05]
    assert groups[1]["params"] == [run.trained.log_std]
    assert sum(len(g["params"]) for g in groups) == len(list(run.trained.parameters()))
    one_colour = {"env": "PinPad-v0", "env_kwargs": {"task": "0"}}
    moved = {}
    for std_lr in (None, 0.05):
        path = train_internal_rl(small_run(discovery_checkpoint, std_lr=std_lr, **one_colour),
                                 tmp_path / f"{std_lr}.pt", progress=False)  # fmt: skip
        moved[std_lr] = load_checkpoint(path, "internal_rl")["policy"]["log_std"].abs().max()
    assert moved[0.05] > 10 * moved[None]  # Adam moves each parameter by about its lr
    with pytest.raises(ValueError, match="std_lr must be > 0 and only with a latent policy"):
        small_run(discovery_checkpoint, std_lr=0.05, raw_actions=True)


@pytest.mark.parametrize("extra", [{}, {"raw_actions": True}])
def test_a_policy_is_evaluated_sampled_or_greedy(discovery_checkpoint, tmp_path, extra):
    from metacontroller_agents.policies import evaluate_policy

    config = small_run(discovery_checkpoint, env="PinPad-v0", env_kwargs={"task": "0"}, **extra)
    path = train_internal_rl(config, tmp_path / "p.pt", progress=False)
    lengths = {}
    for greedy in (False, True):
        reports = [evaluate_policy(path, 32, 5, "cpu", num_envs=8, greedy=greedy)
                   for _ in range(2)]  # fmt: skip
        assert reports[0] == dataclasses.replace(reports[1], seconds=reports[0].seconds)
        assert reports[0].episodes == 32 and reports[0].env_id == "PinPad-v0"
        lengths[greedy] = reports[0].mean_length
    assert lengths[True] != lengths[False]  # the tiny random policy plays differently


def test_init_std_reopens_the_exploration_of_a_taken_over_policy(discovery_checkpoint, tmp_path):
    one_colour = {"env": "PinPad-v0", "env_kwargs": {"task": "0"}}
    first = small_run(discovery_checkpoint, std_lr=0.05, **one_colour)
    path = train_internal_rl(first, tmp_path / "rung1.pt", progress=False)
    trained = load_checkpoint(path, "internal_rl")["policy"]
    run = InternalRL(small_run(discovery_checkpoint, init_policy=str(path), init_std=2.0))
    torch.testing.assert_close(run.trained.log_std.detach(), torch.full_like(trained["log_std"],
                               math.log(2.0)))  # fmt: skip
    torch.testing.assert_close(run.trained.mean.weight.detach(), trained["mean.weight"])
    with pytest.raises(ValueError, match="init_std must be > 0"):
        small_run(discovery_checkpoint, init_std=0.0)


def test_any_task_string_runs_through_every_command(discovery_checkpoint, tmp_path, capsys):
    from metacontroller_envs.cli import main

    task = ["--env", "PinPad-v0", "--env-kwargs", '{"task": "2-3-6-7"}']  # no registered id
    rl = ["train", "internal-rl", "--checkpoint", discovery_checkpoint, *task, "--episodes",
          "8", "--batch-episodes", "8", "--num-envs", "4", "--device", "cpu",
          "--out", str(tmp_path / "rl.pt")]  # fmt: skip
    assert main(rl) == 0
    saved = load_checkpoint(tmp_path / "rl.pt", "internal_rl")["train_config"]
    assert saved["env_kwargs"] == {"task": "2-3-6-7"}
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "rl.pt"), "--episodes", "8"]) == 0
    assert "PinPad-v0: success" in capsys.readouterr().out
    for extra in (["--raw-actions"], ["--force-switch"]):
        assert main([*rl[:-1], str(tmp_path / f"{extra[0]}.pt"), *extra]) == 0
    sb3 = ["train", "sb3", "--algo", "ppo", *task, "--episodes", "2", "--every", "1",
           "--device", "cpu", "--latent", discovery_checkpoint, "--out", str(tmp_path / "s.json")]
    assert main(sb3) == 0
    video = tmp_path / "v.gif"
    assert main(["render", "--agent", "internal-rl", "--checkpoint", str(tmp_path / "rl.pt"),
                 "--out", str(video)]) == 0  # fmt: skip
    assert video.exists()
    from metacontroller_agents.players import make_player

    _, trained_on = make_player("internal-rl", str(tmp_path / "rl.pt"))
    assert trained_on == ("PinPad-v0", {"task": "2-3-6-7"})  # render plays the run's task


@pytest.mark.parametrize("method", ["ppo-raw", "es", "sac-latent"])
def test_the_ladder_script_runs_the_other_baselines(discovery_checkpoint, tmp_path, method,
                                                    monkeypatch):  # fmt: skip
    import sys

    from experiments import ladder

    argv = ["ladder", "run", "--checkpoint", discovery_checkpoint, "--method", method,
            "--rungs", "PinPad-Ladder2-v0", "--episodes", "128", "--eval-episodes", "8",
            "--out", str(tmp_path)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    ladder.main()
    result = json.loads((tmp_path / method / "seed0" / "PinPad-Ladder2-v0.json").read_text())
    assert result["history"] and result["history"][-1]["episodes"] == 128
    assert result["eval"]["episodes"] == result["eval_greedy"]["episodes"] == 8


def test_raw_action_temperature_spreads_the_sampled_actions(discovery_checkpoint):
    entropy = {}
    for temperature in (0.25, 1.0, 4.0):
        run = InternalRL(small_run(discovery_checkpoint, raw_actions=True, temperature=temperature))
        episodes = run.collect(iteration=0)
        # -log p of the played actions estimates the entropy of the sampling distribution
        entropy[temperature] = -episodes.log_prob[episodes.mask].mean().item()
    assert entropy[0.25] + 0.1 < entropy[1.0] < entropy[4.0]
    assert entropy[4.0] <= np.log(4) + 0.1  # PinPad's 4 moves: at most uniform
    with pytest.raises(ValueError, match="temperature must be > 0 and only with raw_actions"):
        small_run(discovery_checkpoint, temperature=2.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        small_run(discovery_checkpoint, raw_actions=True, temperature=0.0)


def test_exploration_probe_counts_first_successes_reproducibly(discovery_checkpoint, tmp_path):
    from experiments import exploration

    rung = "PinPad-Ladder2-v0"
    first = exploration.explore(discovery_checkpoint, rung, "raw actions, T = 2", 128, 0,
                                "cpu")  # fmt: skip
    assert first["episodes"] == 128 and 0 <= first["successes"] <= 128
    assert first["success"] == first["successes"] / 128 and first["mean_length"] >= 1
    again = exploration.explore(discovery_checkpoint, rung, "raw actions, T = 2", 128, 0,
                                "cpu")  # fmt: skip
    kept = ("successes", "mean_length")
    assert [again[k] for k in kept] == [first[k] for k in kept]  # same seed, same episodes
    path = exploration.file_of(tmp_path, rung, "raw actions, T = 2", 0)
    assert path.name == "raw-actions-T-2.seed0.json"
