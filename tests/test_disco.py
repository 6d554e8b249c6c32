"""Disco103: the port against DeepMind's own JAX outputs, the weights' checks, the loss's
gradient, the meta state in checkpoints, and a tiny training run through the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import CrashAfter

from metacontroller_agents.checkpoint import load_checkpoint, save_checkpoint
from metacontroller_agents.disco import (
    HAIKU_MODULES,
    WEIGHTS_ENV,
    WEIGHTS_SHA256,
    AgentOutputs,
    Disco103,
    MetaState,
    RuleInputs,
    load_meta_network,
    read_weights,
    retrace,
)

HEADER = ("format", "format_version", "kind")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WEIGHTS = DATA / "disco_103.npz"
REFERENCE = DATA / "disco103_reference"
needs_weights = pytest.mark.skipif(
    not WEIGHTS.is_file(), reason=f"Disco103 weights not found at {WEIGHTS}"
)
needs_reference = pytest.mark.skipif(
    not (WEIGHTS.is_file() and (REFERENCE / "jax_out.npz").is_file()),
    reason=f"Disco103 reference outputs not found in {REFERENCE}",
)
OUTPUT_NAMES = ("logits", "y", "z", "q", "aux_pi")
#: The meta-network's targets and the losses match the reference to this.
TOLERANCE = 1e-4
#: q_target, adv and q_td: DeepMind's float32 Q values carry rounding noise of up to
#: ~5e-4 (signed_parabolic subtracts two numbers near 500), which a port can follow only
#: where its float32 roundings are the same; measured worst differences 1.9e-4, 6.7e-5
#: and 6.5e-4 at steps 0, 1, 2, about 1e-5 of the Q values' scale (tens). JAX itself
#: spreads as far: jax 0.10.2 on our CPU, decoding the same logits with rlax's formulas op
#: by op, gives all 144 reference Q values to 1.5e-6, but under one jax.jit only 16 to
#: 1e-5 (worst 7.5e-4): the roundings follow how XLA compiles the float32 sum and sqrt.
Q_TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def rule() -> Disco103:
    return Disco103.from_weights(WEIGHTS)


def reference_inputs(step: int, dtype: torch.dtype = torch.float32) -> RuleInputs:
    data = np.load(REFERENCE / "inputs.npz")

    def tensor(name: str) -> torch.Tensor:
        return torch.tensor(data[f"s{step}_{name}"], dtype=dtype)

    def outputs(prefix: str) -> AgentOutputs:
        return AgentOutputs(*(tensor(f"{prefix}_{name}") for name in OUTPUT_NAMES))

    return RuleInputs(
        actions=torch.tensor(data[f"s{step}_actions"]),
        rewards=tensor("rewards"),
        is_terminal=tensor("is_terminal"),
        agent=outputs("agent"),
        behaviour_logits=tensor("beh_logits"),
        target=outputs("tgt"),
    )


def rule_outputs(rule: Disco103, batch: RuleInputs, state: MetaState):
    targets, state = rule.targets(batch, state)
    loss, value_loss, _ = rule.loss(batch, targets)
    values = targets.values
    out = {
        "pi": targets.pi, "y": targets.y, "z": targets.z, "q_target": values.q_target,
        "adv": values.adv, "normalized_adv": values.normalized_adv, "q_td": values.q_td,
        "loss": loss, "vloss": value_loss,
    }  # fmt: skip
    return {k: v.detach().double().numpy() for k, v in out.items()}, state


@needs_reference
def test_matches_deepmind_jax_outputs_over_three_learner_steps(rule):
    reference = np.load(REFERENCE / "jax_out.npz")
    state = rule.initial_state()
    for step in range(3):  # the meta state is carried from step to step
        got, state = rule_outputs(rule, reference_inputs(step), state)
        for name, value in got.items():
            expected = reference[f"s{step}_{name}"]
            assert value.shape == expected.shape, name
            error = np.abs(value - expected).max()
            limit = Q_TOLERANCE if name in ("q_target", "adv", "q_td") else TOLERANCE
            assert error <= limit, f"step {step} {name}: max abs difference {error:.2e}"


@needs_reference
def test_q_values_follow_deepmind_float32_roundings():
    """The reference's Q(s_t, a_t) is q_target - q_td. Ours equal it to 1e-5 (the same
    float32 roundings) at all but a few of the 144 steps, where one rounding of
    sqrt(...) / (2 eps) in signed_parabolic went the other way: the rest of the Q-derived
    differences above 1e-4 come from these."""
    from metacontroller_agents.disco import pick, q_scalars

    reference = np.load(REFERENCE / "jax_out.npz")
    same = total = 0
    for step in range(3):
        batch = reference_inputs(step)
        ours = pick(q_scalars(batch.agent.q)[:-1], batch.actions[:-1]).double().numpy()
        theirs = reference[f"s{step}_q_target"].astype(np.float64) - reference[f"s{step}_q_td"]
        same += int((np.abs(ours - theirs) <= 1e-5).sum())
        total += ours.size
    assert total == 144 and same >= 140, f"{same}/{total}"


@needs_reference
def test_retrace_ends_episodes_and_reads_the_next_steps_trace():
    """At a terminal step the target is the reward, exactly as DeepMind's; a trace index
    shifted by one (another port's bug) gives targets off by tens."""
    batch = reference_inputs(0)
    reference = np.load(REFERENCE / "jax_out.npz")["s0_q_target"]
    terminal = batch.is_terminal.bool().numpy()
    rule = Disco103.from_weights(WEIGHTS)
    targets, _ = rule.targets(batch, rule.initial_state())
    assert np.array_equal(targets.values.q_target.numpy()[terminal], reference[terminal])
    assert np.array_equal(batch.rewards.numpy()[terminal], reference[terminal])
    q = torch.randn(5, 2)
    v, r, d, c = torch.randn(6, 2), torch.randn(5, 2), torch.rand(5, 2), torch.rand(5, 2)
    g = retrace(q, v, r, d, c)
    assert torch.allclose(g[-1], r[-1] + d[-1] * v[-1])
    assert torch.allclose(g[2], r[2] + d[2] * (v[3] + c[3] * (g[3] - q[3])))


@needs_reference
def test_the_configured_discount_reaches_the_retrace_targets(rule):
    """DiscoConfig.discount sets gamma of the Q targets: terminal steps still get their
    reward, the others a different target than Disco103's 0.997 gives."""
    from metacontroller_agents.disco_agent import DiscoConfig, DiscoRun

    with pytest.raises(ValueError, match=r"discount must be in \(0, 1\]"):
        DiscoConfig(env="CartPole-v1", discount=0.0)
    config = DiscoConfig(env="CartPole-v1", num_envs=2, width=16, model_width=16,
                         discount=0.5, device="cpu")  # fmt: skip
    run = DiscoRun(config, WEIGHTS)
    run.envs.close()
    assert run.rule.hyper.discount == 0.5 and rule.hyper.discount == 0.997
    batch = reference_inputs(0)
    ours, _ = run.rule.targets(batch, run.rule.initial_state())
    default, _ = rule.targets(batch, rule.initial_state())
    terminal = batch.is_terminal.bool()
    assert terminal.any() and (~terminal).any()
    assert torch.equal(ours.values.q_target[terminal], default.values.q_target[terminal])
    assert not torch.allclose(ours.values.q_target[~terminal], default.values.q_target[~terminal])


@needs_weights
def test_weights_use_all_42_arrays_with_their_shapes():
    arrays = read_weights(WEIGHTS)
    assert len(arrays) == 42 == 2 * len(HAIKU_MODULES)
    network = load_meta_network(WEIGHTS)
    params = dict(network.named_parameters())
    assert len(params) == 42
    assert sum(p.numel() for p in params.values()) == sum(a.size for a in arrays.values())
    assert sum(a.size for a in arrays.values()) == 754_778
    for haiku, ours in HAIKU_MODULES.items():  # each array lands in its own parameter
        weight = arrays[f"{haiku}/w"]
        weight = weight[0] if weight.ndim == 3 else weight
        assert np.array_equal(params[f"{ours}.weight"].numpy(), weight.T)
        assert np.array_equal(params[f"{ours}.bias"].numpy(), arrays[f"{haiku}/b"])


@needs_weights
def test_corrupted_truncated_and_partial_files_are_rejected(tmp_path):
    data = WEIGHTS.read_bytes()
    assert hashlib.sha256(data).hexdigest() == WEIGHTS_SHA256
    corrupt = bytearray(data)
    for i in range(len(data) // 2, len(data) // 2 + 64):
        corrupt[i] ^= 0xFF
    (tmp_path / "corrupt.npz").write_bytes(bytes(corrupt))
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    arrays = dict(np.load(WEIGHTS, allow_pickle=False))
    name = sorted(arrays)[0]
    np.savez(tmp_path / "partial.npz", **{k: v for k, v in arrays.items() if k != name})
    np.savez(tmp_path / "reshaped.npz", **{**arrays, name: arrays[name][:1]})
    np.savez(tmp_path / "retrained.npz", **{**arrays, name: arrays[name] + 1})
    cases = {
        "corrupt.npz": "corrupt",
        "truncated.npz": "not a readable .npz",
        "partial.npz": "missing",
        "reshaped.npz": "expected float32",
        "retrained.npz": "sha256",
        "absent.npz": "do not exist",
    }
    for file, words in cases.items():
        with pytest.raises(ValueError, match=words) as error:
            read_weights(tmp_path / file)
        assert str(tmp_path / file) in str(error.value)
    load_meta_network(tmp_path / "retrained.npz", sha256=None)  # same shapes, own checksum


def test_weights_path_comes_from_argument_or_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    with pytest.raises(ValueError, match=WEIGHTS_ENV):
        read_weights()
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "elsewhere.npz"))
    with pytest.raises(ValueError, match="elsewhere.npz"):
        read_weights()


@needs_weights
def test_loss_is_finite_and_its_gradient_reaches_the_agent_only(rule):
    from metacontroller_agents.disco_agent import DiscoActor
    from metacontroller_agents.transformer import ModelConfig

    env = gym.make("PinPad-v0", task_in_obs=True)
    actor = DiscoActor(ModelConfig.for_env(env, "small", width=32), model_width=16)
    target = DiscoActor(actor.model_config, model_width=16).requires_grad_(False)
    steps, batch = 6, 3
    obs = torch.randint(0, 2, (steps + 1, batch, *env.observation_space.shape))
    agent_out = actor(obs)
    inputs = RuleInputs(
        actions=torch.randint(0, 4, (steps + 1, batch)),
        rewards=torch.rand(steps, batch),
        is_terminal=(torch.rand(steps, batch) < 0.2).float(),
        agent=agent_out,
        behaviour_logits=agent_out.logits.detach() + 0.1 * torch.randn(steps + 1, batch, 4),
        target=target(obs),
    )
    targets, _ = rule.targets(inputs, rule.initial_state())
    loss, value_loss, _ = rule.loss(inputs, targets)
    total = (loss + value_loss).mean()
    assert torch.isfinite(total)
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in actor.parameters())
    assert all(not p.requires_grad and p.grad is None for p in rule.network.parameters())
    assert all(p.grad is None for p in target.parameters())
    assert not targets.pi.requires_grad and not targets.values.q_td.requires_grad


def test_pinpad_actor_acts_through_the_goal_mixture():
    """On PinPad the policy is p(c) over colours, then the planner's way to c: with p on
    the task's next colour, the likely moves are exactly the expert's. goal_head=False
    gives the plain linear policy head."""
    from metacontroller_agents.disco_agent import DiscoActor
    from metacontroller_agents.transformer import ModelConfig
    from metacontroller_envs.pinpad.expert import PinPadExpert

    envs = gym.make_vec("PinPad-v0", num_envs=16, task_in_obs=True)
    expert = PinPadExpert(envs, seed=0)
    obs, _ = envs.reset(seed=0)
    optimal = expert.action_masks()[0]
    batch = envs.unwrapped.batch
    next_colour = torch.as_tensor(batch.next_colour)
    config = dataclasses.replace(
        ModelConfig.for_env(gym.make("PinPad-v0", task_in_obs=True), "small", width=32),
        plan_steps=24,
    )
    actor = DiscoActor(config, model_width=16)
    with torch.no_grad():
        actor.policy.weight.zero_()
        actor.goal.weight.zero_()
        actor.goal_scale.fill_(20.0)
    for row in range(16):  # the goal bias puts p(c) on this env's next colour
        with torch.no_grad():
            actor.goal.bias.copy_(torch.where(torch.arange(8) == next_colour[row], 0.0, -1e4))
            logits = actor.logits(torch.as_tensor(obs[row : row + 1]))
        likely = (torch.softmax(logits[0], -1) > 0.2).numpy()
        np.testing.assert_array_equal(likely, optimal[row])
    plain = DiscoActor(dataclasses.replace(config, goal_head=False), model_width=16)
    assert plain.goal is None
    x = torch.as_tensor(obs[None])
    torch.testing.assert_close(plain(x).logits, plain.policy(plain.encoder(x)))


@needs_reference
def test_meta_state_round_trips_through_a_checkpoint(rule, tmp_path):
    _, state = rule.targets(reference_inputs(0), rule.initial_state())
    path = save_checkpoint(tmp_path / "meta.pt", "disco", meta_state=state.state_dict())
    loaded = MetaState.from_state_dict(load_checkpoint(path, "disco")["meta_state"])
    for key, value in state.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    after, _ = rule_outputs(rule, reference_inputs(1), state)
    after_loaded, _ = rule_outputs(rule, reference_inputs(1), loaded)
    for name in after:
        assert np.array_equal(after[name], after_loaded[name]), name
    with pytest.raises(ValueError, match="meta state"):
        MetaState.from_state_dict({"hidden": torch.zeros(128)})


def test_shipped_pinpad_configs_load_and_keep_pinpad_v0_s_observations():
    """The README's Disco103 runs start from these files; an agent trained with one must
    read PinPad-v0's observations (task_in_obs) to be evaluated there, and have the shape
    of the others' so that the midway stage can start from the colours stage."""
    from metacontroller_agents.disco_agent import DiscoConfig
    from metacontroller_agents.runs import load_config

    paths = sorted((Path(__file__).resolve().parents[1] / "benchmarks" / "configs").glob("*.json"))
    assert [p.name for p in paths] == ["disco-pinpad-colours.json", "disco-pinpad-midway.json"]
    evaluated_on = gym.make("PinPad-v0", task_in_obs=True).observation_space
    shapes = set()
    for path in paths:
        config = load_config(DiscoConfig, path)
        assert gym.make(config.env, **config.env_kwargs).observation_space == evaluated_on
        shapes.add((config.width, config.model_width, config.goal_head, config.fixed_planner))
    assert len(shapes) == 1


def test_continuous_actions_are_refused(tmp_path):
    from metacontroller_agents.disco_agent import DiscoConfig, check_discrete, train_disco

    with pytest.raises(ValueError, match="Disco103 is a discrete-action update rule"):
        train_disco(DiscoConfig(env="Pendulum-v1", num_envs=2), tmp_path / "x.pt", WEIGHTS)
    assert not (tmp_path / "x.pt").exists()
    assert check_discrete(gym.spaces.Discrete(4), "PinPad-v0") == 4


@needs_weights
def test_tiny_training_through_the_cli_writes_a_checkpoint(tmp_path, capsys):
    from metacontroller_envs.cli import main

    out = tmp_path / "disco.pt"
    (tmp_path / "config.json").write_text('{"width": 32, "model_width": 16, "log_every": 2}')
    args = ["train", "disco", "--env", "PinPad-v0", "--env-kwargs", '{"task_in_obs": true}',
            "--config", str(tmp_path / "config.json"), "--weights", str(WEIGHTS),
            "--steps", "3", "--num-envs", "4", "--rollout-len", "4", "--batch-size", "4",
            "--device", "cpu", "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    saved = load_checkpoint(out, "disco")
    assert saved["updates"] == 3 and saved["episodes"] > 0 and saved["history"]
    assert set(saved["meta_state"]) >= {"hidden", "cell", "adv_ema.moment1", "td_ema.moment2"}
    assert '"task_in_obs": true' in saved["env_spec"]
    assert main(args) == 2  # an existing checkpoint is not replaced unasked
    assert "exists" in capsys.readouterr().err
    evaluate = ["eval", "--checkpoint", str(out), "--episodes", "6", "--num-envs", "3",
                "--device", "cpu"]  # fmt: skip
    assert main(evaluate) == 0
    assert "PinPad-v0: success" in capsys.readouterr().out
    assert main([*evaluate, "--env-kwargs", '{"task_in_obs": false}']) == 2
    assert "the checkpoint's model reads (699,)" in capsys.readouterr().err
    assert main([*evaluate, "--env-kwargs", '{"task_in_ob": true}']) == 2
    assert "PinPad-v0 takes no keyword argument 'task_in_ob'" in capsys.readouterr().err
    assert main([*args[:-1], str(tmp_path / "x.pt"), "--until-success", "95"]) == 2
    assert "until_success must be in [0, 1], got 95.0" in capsys.readouterr().err
    args[args.index('{"task_in_obs": true}')] = '{"task_in_ob": true}'
    assert main([*args, "--overwrite"]) == 2
    assert "PinPad-v0 takes no keyword argument 'task_in_ob'" in capsys.readouterr().err


@needs_weights
def test_a_fixed_planner_keeps_its_way_while_the_choice_of_colour_learns():
    from metacontroller_agents.disco_agent import DiscoConfig, DiscoRun

    config = DiscoConfig(env="PinPad-v0", env_kwargs={"task_in_obs": True}, num_envs=4,
                         rollout_len=4, batch_size=4, width=32, model_width=16,
                         fixed_planner=True, lr=0.01, device="cpu")  # fmt: skip
    run = DiscoRun(config, WEIGHTS)
    run.start()
    run.replay.add(run.collect())
    planner = [p.clone() for p in run.actor.encoder.planner.parameters()]
    scale, goal = run.actor.goal_scale.clone(), run.actor.goal.weight.clone()
    run.learn()
    assert all(
        torch.equal(a, b)
        for a, b in zip(planner, run.actor.encoder.planner.parameters(), strict=True)
    )
    assert torch.equal(run.actor.goal_scale, scale)
    assert not torch.equal(run.actor.goal.weight, goal)
    run.envs.close()
    with pytest.raises(ValueError, match="fixed_planner needs the goal-mixture policy"):
        DiscoRun(DiscoConfig(env="CartPole-v1", fixed_planner=True, num_envs=2), WEIGHTS)



@needs_weights
def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    from metacontroller_agents.disco_agent import DiscoConfig, train_disco

    config = DiscoConfig(env="PinPad-v0", env_kwargs={"task_in_obs": True}, steps=4,
                         num_envs=4, rollout_len=4, batch_size=4, width=32, model_width=16,
                         checkpoint_every=2, log_every=2, device="cpu")  # fmt: skip
    out = tmp_path / "disco.pt"
    with pytest.raises(KeyboardInterrupt):
        train_disco(config, out, WEIGHTS, progress=False, log=CrashAfter(3))
    first = load_checkpoint(out, "disco")
    assert first["updates"] == 2
    # a checkpoint from before a config field existed resumes with that field's default
    del first["train_config"]["fixed_planner"]
    save_checkpoint(out, "disco", **{k: v for k, v in first.items() if k not in HEADER})
    train_disco(config, out, WEIGHTS, resume=True, progress=False)
    second = load_checkpoint(out, "disco")
    assert second["updates"] == 4 and second["episodes"] > first["episodes"]
    assert not torch.equal(second["meta_state"]["hidden"], first["meta_state"]["hidden"])
    assert second["history"][: len(first["history"])] == first["history"]
    with pytest.raises(ValueError, match="different config"):
        train_disco(DiscoConfig(**{**config.__dict__, "lr": 1e-3}), out, WEIGHTS, resume=True)
    # a larger budget continues the run (nothing is scheduled over it)
    train_disco(DiscoConfig(**{**config.__dict__, "steps": 6}), out, WEIGHTS, resume=True,
                progress=False)  # fmt: skip
    third = load_checkpoint(out, "disco")
    assert third["updates"] == 6 and third["history"][: len(second["history"])] == second["history"]


@needs_weights
def test_a_curriculum_stage_goes_on_from_the_last_one_under_its_own_config(tmp_path):
    from metacontroller_agents.disco_agent import DiscoConfig, train_disco

    tiny = dict(num_envs=4, rollout_len=4, batch_size=4, width=32, model_width=16,
                log_every=2, device="cpu")  # fmt: skip
    colours = DiscoConfig(env_kwargs={"task_in_obs": True, "tasks": ["0", "1", "0-1-4-5-0-1"]},
                          steps=2, **tiny)  # fmt: skip
    train_disco(colours, tmp_path / "one.pt", WEIGHTS, progress=False)
    first = load_checkpoint(tmp_path / "one.pt", "disco")
    midway = DiscoConfig(env_kwargs={"task_in_obs": True, "start_midway": True}, **tiny)
    for steps, name in ((2, "same.pt"), (4, "two.pt")):  # the budget counts stage one's steps
        train_disco(dataclasses.replace(midway, steps=steps, lr=1e-3), tmp_path / name, WEIGHTS,
                    progress=False, start_from=tmp_path / "one.pt")  # fmt: skip
    same, second = (load_checkpoint(tmp_path / n, "disco") for n in ("same.pt", "two.pt"))
    assert all(torch.equal(same["actor"][k], v) for k, v in first["actor"].items())
    assert second["updates"] == 4 and second["episodes"] > first["episodes"]
    assert second["history"][: len(first["history"])] == first["history"]
    assert '"start_midway": true' in second["env_spec"]
    # the optimiser's moments carry over, but the learning rate is this stage's own
    assert first["optimizer"]["param_groups"][0]["lr"] == colours.lr == 3e-4
    assert second["optimizer"]["param_groups"][0]["lr"] == 1e-3
    assert not all(torch.equal(second["actor"][k], v) for k, v in first["actor"].items())
    with pytest.raises(ValueError, match=r"another shape than this run's \(model_width: 16 "
                                         r"there, 32 here\)"):  # fmt: skip
        train_disco(dataclasses.replace(midway, model_width=32), tmp_path / "x.pt", WEIGHTS,
                    start_from=tmp_path / "one.pt")  # fmt: skip


@needs_weights
def test_a_stage_ends_at_its_own_first_success_point_that_reaches_until_success(tmp_path):
    from metacontroller_agents.disco_agent import DiscoConfig, train_disco

    tiny = dict(env_kwargs={"task_in_obs": True, "tasks": ["0"]}, num_envs=4, rollout_len=4,
                batch_size=4, width=32, model_width=16, log_every=2, device="cpu")  # fmt: skip
    config = DiscoConfig(steps=60, until_success=0.5, **tiny)
    train_disco(config, tmp_path / "one.pt", WEIGHTS, progress=False)
    first = load_checkpoint(tmp_path / "one.pt", "disco")
    reached = next(p for p in first["history"] if p["success"] >= 0.5)
    # it stops after the learner step of the rollout that logged the point, not at the cap
    assert first["updates"] == reached["updates"] + 1 < 60
    # the next stage counts only its own points: it does not stop on the first stage's
    train_disco(config, tmp_path / "two.pt", WEIGHTS, progress=False,
                start_from=tmp_path / "one.pt")  # fmt: skip
    second = load_checkpoint(tmp_path / "two.pt", "disco")
    assert second["stage_start"] == first["episodes"] and second["updates"] > first["updates"]
    with pytest.raises(ValueError, match=r"until_success must be in \[0, 1\], got 1.5"):
        DiscoConfig(until_success=1.5)
