"""The causal transformer: causality, KV cache, residual hook, encoders, bad input."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import metacontroller_envs  # noqa: F401
from metacontroller_agents.transformer import CausalTransformer, ModelConfig

ENVS = ["PinPad-v0", "VisualPinPad-Three-v0", "SubgoalBabyAI-Pretrain-v0"]


def tiny(env_id, **overrides):
    env = gym.make(env_id)
    config = ModelConfig.for_env(env, "small", width=32, depth=4, heads=2, mlp=64, max_len=16)
    torch.manual_seed(0)
    return CausalTransformer(ModelConfig(**{**config.__dict__, **overrides})).eval(), env


def sequences(env, batch=2, steps=9, seed=0):
    env.observation_space.seed(seed)
    obs = np.stack([[env.observation_space.sample() for _ in range(steps)] for _ in range(batch)])
    actions = np.random.default_rng(seed).integers(env.action_space.n, size=(batch, steps))
    return torch.as_tensor(obs), torch.as_tensor(actions)


def model_and_inputs(env_id):
    model, env = tiny(env_id)
    obs, actions = sequences(env)
    return model, env, obs, model.previous_actions(actions)


@pytest.mark.parametrize("env_id", ENVS)
def test_changing_the_future_never_changes_the_past(env_id):
    model, env, obs, prev = model_and_inputs(env_id)
    with torch.no_grad():
        before = model(obs, prev)
        obs[:, 5:] = sequences(env, seed=1)[0][:, 5:]
        prev[:, 6:] = (prev[:, 6:] + 1) % env.action_space.n
        after = model(obs, prev)
    torch.testing.assert_close(after.action[:, :5], before.action[:, :5])
    torch.testing.assert_close(after.next_obs[:, :5], before.next_obs[:, :5])
    assert not torch.allclose(after.action[:, 5:], before.action[:, 5:])


@pytest.mark.parametrize("env_id", ENVS)
def test_kv_cache_decoding_equals_the_full_sequence(env_id):
    model, _, obs, prev = model_and_inputs(env_id)
    with torch.no_grad():
        full = model(obs, prev, layer=2)
        cache = model.new_cache(obs.shape[0])
        steps = [model.step(obs[:, t], prev[:, t], cache, layer=2) for t in range(obs.shape[1])]
    torch.testing.assert_close(
        torch.cat([s.action for s in steps], 1), full.action, atol=1e-5, rtol=1e-4
    )
    torch.testing.assert_close(
        torch.cat([s.stream for s in steps], 1), full.stream, atol=1e-5, rtol=1e-4
    )


def test_residual_hook():
    model, _, obs, prev = model_and_inputs("PinPad-v0")
    with torch.no_grad():
        plain = model(obs, prev)
        unchanged = model(obs, prev, layer=2, intervene=lambda e: e + 0 * e)
        change = torch.randn(32, 32, generator=torch.Generator().manual_seed(0)) * 0.3
        steered = model(obs, prev, layer=2, intervene=lambda e: e + e @ change.T)
        at_end = model(obs, prev, layer=4, intervene=lambda e: e)
    torch.testing.assert_close(unchanged.action, plain.action)
    torch.testing.assert_close(at_end.action, plain.action)
    assert unchanged.stream.shape == (2, 9, 32)
    assert not torch.allclose(steered.action, plain.action)
    torch.testing.assert_close(steered.stream, unchanged.stream)  # read before the change


def test_continuous_actions_use_a_gaussian_head():
    config = ModelConfig(obs_shape=(5,), obs_high=1.0, num_actions=0, action_dim=3, width=16,
                         depth=1, heads=2, mlp=16, max_len=8)  # fmt: skip
    model = CausalTransformer(config)
    actions = torch.randn(2, 4, 3)
    out = model(torch.rand(2, 4, 5), model.previous_actions(actions))
    assert out.action.shape == (2, 4, 3)
    assert model.action_distribution(out.action).log_prob(actions).shape == (2, 4)


def test_bad_input():
    model, env = tiny("PinPad-v0")
    with pytest.raises(
        ValueError, match=r"observations of shape \(10,\) given to a model built for \(637,\)"
    ):
        model(torch.zeros(1, 3, 10), torch.zeros(1, 3, dtype=torch.long))
    obs, actions = sequences(env)
    with pytest.raises(ValueError, match="layer must be in 0..4"):
        model(obs, actions, layer=5)
    with pytest.raises(ValueError, match="intervene needs the layer"):
        model(obs, actions, intervene=lambda e: e)
    cache = model.new_cache(2)
    for _ in range(16):
        model.step(obs[:, 0], actions[:, 0], cache)
    with pytest.raises(ValueError, match="KV cache holds 16 steps"):
        model.step(obs[:, 0], actions[:, 0], cache)
    with pytest.raises(ValueError, match="split into 3 heads"):
        ModelConfig(obs_shape=(4,), obs_high=1, num_actions=2, width=32, heads=3)
    with pytest.raises(ValueError, match="exactly one of num_actions"):
        ModelConfig(obs_shape=(4,), obs_high=1, num_actions=2, action_dim=2)
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        ModelConfig.for_env(env, "huge")


def test_pinpad_encoder_sees_the_grid_from_the_agent():
    env = gym.make("PinPad-v0")
    model, _ = tiny("PinPad-v0")
    encoder = model.encoder
    captured = {}
    encoder.net.register_forward_hook(lambda module, inputs, output: captured.update(x=inputs[0]))
    obs, _ = env.reset(seed=4)
    with torch.no_grad():
        encoder(torch.as_tensor(obs)[None, None])
    view = captured["x"][0, : 13**3].view(13, 13, 13)  # (2G-1, 2G-1, 12 objects + inside)
    grid = obs.reshape(7, 7, 13)
    row, col = np.argwhere(grid[..., 12])[0]
    for r in range(7):
        for c in range(7):
            seen = view[r - row + 6, c - col + 6]
            assert seen[-1] == 1  # inside the grid
            np.testing.assert_array_equal(seen[:12].numpy(), grid[r, c, :12])
    assert view[..., -1].sum() == 49  # everything else is outside


def expert_episodes(num_envs=4, steps=8, seed=0, **env_kwargs):
    """Observations and actions of the PinPad expert: real layouts that stay put (no task
    is done in 8 steps, so no env resets)."""
    from metacontroller_envs.pinpad.expert import PinPadExpert

    envs = gym.make_vec("PinPad-v0", num_envs=num_envs, **env_kwargs)
    expert = PinPadExpert(envs, seed=seed)
    obs, _ = envs.reset(seed=seed)
    observations, actions, optimal = [], [], []
    for _ in range(steps):
        observations.append(obs)
        optimal.append(expert.action_masks()[0])
        actions.append(expert.act())
        obs, *_ = envs.step(actions[-1])
    return envs, np.stack(observations, 1), np.stack(actions, 1), np.stack(optimal, 1)


def test_planner_starts_out_finding_every_shortest_path():
    """Its initial passability is the expert's rule (walls and colours other than the goal
    block the way): the moves it rates 0 steps longer are exactly the expert's optimal
    moves."""
    model, _ = tiny("PinPad-v0", plan_steps=24)
    planner = model.encoder.planner
    colours = 8
    envs, obs, _, optimal = expert_episodes(num_envs=16, steps=1)
    batch = envs.unwrapped.batch
    next_colour = batch.next_colour
    grid = torch.as_tensor(obs[:, 0]).float().view(-1, 7, 7, 13)
    agent = grid[..., 12].flatten(1).argmax(1)
    cells = grid[..., :12].permute(0, 3, 1, 2)
    with torch.no_grad():
        features = planner(cells, (agent // 7)[:, None], (agent % 7)[:, None])[:, 0]
    longer = features[:, : 4 * colours].view(-1, 4, colours)
    best = longer[torch.arange(16), :, torch.as_tensor(next_colour)] > -0.5
    np.testing.assert_array_equal(best.numpy(), optimal[:, 0])
    assert not optimal.all()  # the check can fail: some moves are not optimal


def test_plan_next_gives_the_planner_s_way_to_the_colour_the_observation_names():
    """With task_in_obs the encoder also reads the plan toward the named next colour: its
    0-steps-longer moves are the expert's optimal moves, for whichever colour is named."""
    envs, obs, _, optimal = expert_episodes(num_envs=16, steps=1, task_in_obs=True)
    config = ModelConfig.for_env(gym.make("PinPad-v0", task_in_obs=True), width=32)
    assert config.plan_next and config.plan_steps > 0
    encoder = CausalTransformer(config).encoder
    captured = {}
    encoder.net.register_forward_hook(lambda module, inputs, output: captured.update(x=inputs[0]))
    with torch.no_grad():
        encoder(torch.as_tensor(obs))
    named = captured["x"][:, -8:]  # 4 moves' "steps longer", then their values
    np.testing.assert_array_equal((named[:, :4] > -0.5).numpy(), optimal[:, 0])
    assert len(set(envs.unwrapped.batch.next_colour)) > 1  # several colours are named
    with pytest.raises(ValueError, match="plan_next needs"):
        ModelConfig(**{**tiny("PinPad-v0")[0].config.__dict__, "plan_next": True})
    with pytest.raises(ValueError, match="plan_next needs"):
        ModelConfig(**{**config.__dict__, "encoder": "flat", "goal_head": False})


@pytest.mark.parametrize("goal_head", [False, True])
def test_planner_kv_cache_decoding_equals_the_full_sequence(goal_head):
    model, _ = tiny("PinPad-v0", plan_steps=8, goal_head=goal_head)
    _, obs, actions, _ = expert_episodes()
    obs, prev = torch.as_tensor(obs), model.previous_actions(torch.as_tensor(actions))
    with torch.no_grad():
        full = model(obs, prev)
        cache = model.new_cache(obs.shape[0])
        steps = [model.step(obs[:, t], prev[:, t], cache) for t in range(obs.shape[1])]
    torch.testing.assert_close(
        torch.cat([s.action for s in steps], 1), full.action, atol=1e-5, rtol=1e-4
    )


def test_goal_head_is_a_mixture_of_walks_to_each_colour():
    """p(a) = sum_c p(c) pi_c(a): normalised, and with p on one colour and a strong planner
    term, the likeliest moves are the shortest ways to that colour."""
    model, _ = tiny("PinPad-v0", plan_steps=24, goal_head=True)
    envs, obs, actions, optimal = expert_episodes(num_envs=16, steps=1)
    batch = envs.unwrapped.batch
    next_colour = torch.as_tensor(batch.next_colour)
    with torch.no_grad():
        model.action_head.weight.zero_()
        model.action_head.bias.zero_()
        model.goal_scale.fill_(20.0)
        out = model(torch.as_tensor(obs), model.previous_actions(torch.as_tensor(actions)))
        torch.testing.assert_close(out.action.logsumexp(-1), torch.zeros(16, 1))
        # every colour equally likely: the mixture puts weight on all colours' best moves
        assert (out.action.exp() > 0.01).sum(-1).float().mean() > 1.5
        model.goal_head.weight.zero_()
        for row, colour in enumerate(next_colour):
            bias = torch.full((8,), -1e4)
            bias[colour] = 0.0
            model.goal_head.bias.copy_(bias)
            previous = model.previous_actions(torch.as_tensor(actions[row : row + 1]))
            out = model(torch.as_tensor(obs[row : row + 1]), previous)
            likely = (out.action[0, 0].exp() > 0.2).numpy()
            np.testing.assert_array_equal(likely, optimal[row, 0])


def test_planner_plans_once_per_sequence_through_zero_padding():
    """A batch's all-zero padding steps keep one plan per sequence (not one per step), the
    real steps' outputs equal the unpadded sequences', and a layout that really changes
    mid-sequence is planned step by step."""
    model, _ = tiny("PinPad-v0", plan_steps=8, goal_head=True)
    _, obs, actions, _ = expert_episodes(num_envs=2, steps=5)
    obs, prev = torch.as_tensor(obs), model.previous_actions(torch.as_tensor(actions))
    padded_obs = torch.cat([obs, torch.zeros_like(obs[:, :3])], 1)
    padded_prev = torch.cat([prev, torch.zeros_like(prev[:, :3])], 1)
    mixed = torch.cat([obs[:1, :3], obs[1:, 3:]], 1)  # sequence 0's layout, then 1's
    planned = []
    model.encoder.planner.register_forward_hook(lambda m, i, o: planned.append(len(i[0])))
    with torch.no_grad():
        alone = model(obs, prev)
        padded = model(padded_obs, padded_prev)
        model(mixed, prev[:1])
    assert planned == [2, 2, 5]
    torch.testing.assert_close(padded.action[:, :5], alone.action, atol=1e-5, rtol=1e-4)
