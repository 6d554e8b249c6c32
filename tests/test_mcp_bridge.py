"""The bridge to metacontroller-pytorch (metacontroller_agents.mcp_bridge): the Protocol,
row batching, faithfulness to the library's own forward, the data bridge, the saved pair
and its factory, and internal RL through the factory. Skipped without the library."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("metacontroller")

import torch  # noqa: E402
from metacontroller import MetaController, Transformer  # noqa: E402
from metacontroller.metacontroller import MetaControllerOutput  # noqa: E402

import metacontroller_envs  # noqa: E402, F401
from metacontroller_agents import mcp_bridge  # noqa: E402
from metacontroller_agents.mcp_bridge import (  # noqa: E402
    MCPController,
    library_batch,
    load_pair,
    save_pair,
)
from metacontroller_envs.wrappers import check_controller  # noqa: E402

OBS = 637  # PinPad's one-hot observation
WIDTH = 8


def tiny_pair(seed: int = 0) -> tuple[Transformer, MetaController]:
    """An untrained pair, a few thousand parameters (most in the 637-wide state embed)."""
    torch.manual_seed(seed)
    body = dict(depth=1, heads=2, attn_dim_head=4)
    transformer = Transformer(
        dim=WIDTH,
        state_embed_readout=dict(num_continuous=OBS),
        action_embed_readout=dict(num_discrete=4),
        lower_body=dict(body),
        upper_body=dict(body),
        dynamics_hidden_dim=8,
        dynamics_num_layers=1,
    )
    meta = MetaController(
        WIDTH,
        dim_meta_controller=4,
        dim_latent=3,
        hypernetwork_low_rank=2,
        decoder_expansion_factor=1.0,
        internal_sequence_embedder=dict(attn_dim_head=4, heads=2, depth=1),
        action_proposer=dict(depth=1, attn_dim_head=4, heads=2),
        dim_sequence_summary_embed=2,
    )
    return transformer, meta


@pytest.fixture(scope="module")
def pair() -> tuple[Transformer, MetaController]:
    return tiny_pair()


@pytest.fixture(scope="module")
def saved(pair, tmp_path_factory) -> str:
    return str(save_pair(tmp_path_factory.mktemp("mcp") / "pair.pt", *pair))


def test_check_controller(pair) -> None:
    controller = MCPController(*pair, num_envs=2)
    check_controller(controller)
    assert (controller.latent_dim, controller.observation_size) == (3, WIDTH)


def play(controller: MCPController, rows_per_call: list[list[int]], steps: int) -> dict:
    """Rows 0..3 play PinPad-v0 from seeds 0..3, row r starting r steps late (so rows sit
    at different steps of their episodes); each step's rows are observed and acted on in
    the groups `rows_per_call`. Returns each row's actions, e and beta."""
    n = controller.num_envs
    envs = [gym.make("PinPad-v0") for _ in range(n)]
    controller.reset(np.arange(n), seed=0)
    obs: dict[int, np.ndarray] = {}
    seen = {r: {"actions": [], "e": [], "beta": [], "episode": []} for r in range(n)}
    episode = [0] * n
    codes = np.random.default_rng(1).standard_normal((steps, n, controller.latent_dim))
    for t in range(steps):
        for r in range(n):
            if t == r:
                obs[r] = envs[r].reset(seed=r)[0]
        for group in rows_per_call:
            live = [r for r in group if r in obs]
            if not live:
                continue
            rows = np.array(live)
            e, beta = controller.observe(np.stack([obs[r] for r in live]), rows)
            z = codes[t, rows].astype(np.float32) if t % 2 == 0 else None
            actions = controller.act(rows, z)
            for k, r in enumerate(live):
                seen[r]["actions"].append(int(actions[k]))
                seen[r]["e"].append(e[k])
                seen[r]["beta"].append(beta[k])
                seen[r]["episode"].append(episode[r])
                obs[r], _, terminated, truncated, _ = envs[r].step(actions[k])
                if terminated or truncated:
                    obs[r] = envs[r].reset(seed=100 + r)[0]
                    controller.reset(np.array([r]))
                    episode[r] += 1
    return seen


def test_batched_rows_match_one_at_a_time(pair) -> None:
    batched = play(MCPController(*pair, num_envs=4), [[0, 1, 2, 3]], 14)
    alone = play(MCPController(*pair, num_envs=4), [[0], [1], [2], [3]], 14)
    for r in range(4):
        assert batched[r]["actions"] == alone[r]["actions"]
        np.testing.assert_allclose(batched[r]["e"], alone[r]["e"], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(batched[r]["beta"], alone[r]["beta"], rtol=1e-4, atol=1e-5)


def test_stream_matches_the_library_forward(pair) -> None:
    """e_t stepped through the per-row caches equals the library's parallel forward on the
    same episode (its residual stream), for rows that started at different steps."""
    transformer, _ = pair
    controller = MCPController(*pair, num_envs=4)
    seen = play(controller, [[0, 1, 2, 3]], 10)
    env = gym.make("PinPad-v0")
    for r in (0, 3):
        first = np.array(seen[r]["episode"]) == 0  # the row's first episode
        obs, actions = [env.reset(seed=r)[0]], list(np.array(seen[r]["actions"])[first])
        for a in actions[:-1]:
            obs.append(env.step(a)[0])
        state = torch.as_tensor(np.stack(obs), dtype=torch.float32)[None]
        with torch.no_grad():
            _, stream = transformer(state, torch.tensor([actions]), force_behavior_cloning=True,
                                    return_residual_stream=True)  # fmt: skip
        np.testing.assert_allclose(np.stack(seen[r]["e"])[first], stream[0].numpy(), rtol=1e-4,
                                   atol=1e-5)  # fmt: skip


def test_beta_and_control_match_the_library_forward(pair) -> None:
    """Beta (hard_switch=False) and the control signal (its prev_hiddens' code overwritten,
    beta ablated to 0) equal MetaController.forward's on the same stream and states."""
    _, meta = pair
    controller = MCPController(*pair, num_envs=2)
    env = [gym.make("PinPad-v0") for _ in range(2)]
    obs = np.stack([env[r].reset(seed=r)[0] for r in range(2)])
    rows = np.arange(2)
    controller.reset(rows)
    codes = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    for t in range(4):
        summary, switch, z = (x.clone() for x in (controller.summary, controller.switch,
                                                  controller.z))  # fmt: skip
        e, beta = controller.observe(obs, rows)
        stream = torch.as_tensor(e)[:, None]
        cache = None
        if t > 0:
            hiddens = (summary[None], None, switch[None], z[:, None])
            cache = MetaControllerOutput(hiddens, *([None] * 7))
        with torch.no_grad():
            _, out = meta(stream, cache=cache, hard_switch=False)
        np.testing.assert_allclose(beta, out.switch_beta[:, 0].numpy(), rtol=1e-5, atol=1e-6)
        new = torch.as_tensor(codes)
        hiddens = (summary[None], None, switch[None], new[:, None])
        with torch.no_grad():
            control, _ = meta(stream, cache=MetaControllerOutput(hiddens, *([None] * 7)),
                              ablate_switch_beta=torch.zeros(2, 1))  # fmt: skip
        ours = controller.control_signal(stream, new)
        np.testing.assert_allclose(ours.numpy(), control.numpy(), rtol=1e-5, atol=1e-6)
        actions = controller.act(rows, codes)
        obs = np.stack([env[r].step(actions[r])[0] for r in range(2)])


def test_data_bridge_runs_one_bc_and_one_discovery_step(pair) -> None:
    from metacontroller_envs.data.episodes import PaddedBatch

    transformer, meta = tiny_pair(1)
    rng = np.random.default_rng(0)
    lengths = np.array([5, 3])
    batch = PaddedBatch(
        observations=rng.integers(0, 2, (2, 6, OBS)).astype(np.uint8),
        actions=rng.integers(0, 4, (2, 5)).astype(np.int64),
        rewards=np.zeros((2, 5), np.float32),
        mask=np.arange(5)[None] < lengths[:, None],
        subgoal_index=np.zeros((2, 5), np.int64),
        returns=np.zeros(2, np.float32),
        lengths=lengths,
        task_index=np.zeros(2, np.int64),
        episode_index=np.arange(2),
    )
    inputs = library_batch(batch)
    assert inputs["state"].shape == (2, 5, OBS) and inputs["state"].dtype == torch.float32
    assert inputs["actions"].shape == (2, 5) and inputs["actions"].dtype == torch.long
    assert inputs["episode_lens"].tolist() == [5, 3]
    optimizer = torch.optim.Adam(transformer.parameters(), lr=1e-3)
    state_loss, action_loss = transformer(**inputs, force_behavior_cloning=True)
    (state_loss + action_loss).backward()
    optimizer.step()
    losses = transformer(**inputs, meta_controller=meta, discovery_phase=True)
    (losses.action_recon + losses.kl + losses.ratio).backward()
    assert all(p.grad is not None for p in meta.decoder.parameters())
    with pytest.raises(ValueError, match="discrete actions"):
        library_batch(PaddedBatch(**{**batch.__dict__, "actions": batch.actions * 0.5}))


def test_save_load_roundtrip(pair, saved) -> None:
    transformer, meta = load_pair(saved)
    a = play(MCPController(*pair, num_envs=2), [[0, 1]], 6)
    b = play(MCPController(transformer, meta, num_envs=2), [[0, 1]], 6)
    assert [a[r]["actions"] for r in (0, 1)] == [b[r]["actions"] for r in (0, 1)]


def test_factory_refuses_unset_missing_and_corrupt(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv(mcp_bridge.ENV_VAR, raising=False)
    with pytest.raises(ValueError, match="MCP_BRIDGE_CHECKPOINT.*not set"):
        mcp_bridge.factory(2)
    monkeypatch.setenv(mcp_bridge.ENV_VAR, str(tmp_path / "missing.pt"))
    with pytest.raises(ValueError, match="does not exist"):
        mcp_bridge.factory(2)
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    monkeypatch.setenv(mcp_bridge.ENV_VAR, str(corrupt))
    with pytest.raises(ValueError, match="corrupt"):
        mcp_bridge.factory(2)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    monkeypatch.setenv(mcp_bridge.ENV_VAR, str(foreign))
    with pytest.raises(ValueError, match="not a pair"):
        mcp_bridge.factory(2)


def test_internal_rl_through_the_factory(saved, monkeypatch, tmp_path) -> None:
    from metacontroller_agents.internal_rl import InternalRLConfig, train_internal_rl

    monkeypatch.setenv(mcp_bridge.ENV_VAR, saved)
    config = InternalRLConfig(checkpoint="metacontroller_agents.mcp_bridge:factory",
                              env="PinPad-Ladder2-v0", episodes=8, batch_episodes=8, num_envs=4,
                              epochs=1, hidden=8, device="cpu")  # fmt: skip
    log: list[dict] = []
    train_internal_rl(config, tmp_path / "rl.pt", progress=False, log=log)
    assert len(log) == 1 and log[0]["episodes"] == 8 and 0.0 <= log[0]["success"] <= 1.0


def test_bad_input_is_refused(pair) -> None:
    transformer, _ = pair
    with pytest.raises(ValueError, match="width"):
        MCPController(transformer, MetaController(16, dim_latent=8, hypernetwork_low_rank=2))
    with pytest.raises(TypeError, match="MetaController"):
        MCPController(transformer, object())
    controller = MCPController(*pair, num_envs=2)
    obs = gym.make("PinPad-v0").reset(seed=0)[0][None]
    with pytest.raises(ValueError, match="rows"):
        controller.observe(obs, np.array([2]))
    with pytest.raises(ValueError, match="values per row"):
        controller.observe(obs[:, :10], np.array([0]))
    controller.observe(obs, np.array([0]))
    with pytest.raises(ValueError, match="z must be"):
        controller.act(np.array([0]), np.zeros((1, 5), np.float32))
    with pytest.raises(RuntimeError, match="observe"):
        controller.act(np.array([1]), None)
