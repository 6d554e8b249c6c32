"""The MetaController: its parts, discovery training, checkpoints and the switch analysis."""

import dataclasses

import numpy as np
import pytest
import torch

from metacontroller_agents.analysis import (
    infer_switches,
    load_metacontroller,
    plot_switches,
    switch_report,
)
from metacontroller_agents.bc import BCConfig, train_bc
from metacontroller_agents.checkpoint import load_checkpoint, load_model
from metacontroller_agents.data import to_torch
from metacontroller_agents.discovery import DiscoveryConfig, discovery_loss, train_discovery
from metacontroller_agents.metacontroller import Controller, MetaController, MetaControllerConfig
from metacontroller_agents.transformer import CausalTransformer, ModelConfig
from metacontroller_envs.cli import main
from metacontroller_envs.data import collect, load_episodes

TINY = {"width": 32, "depth": 2, "heads": 2, "mlp": 64}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny base model and dataset, shared by the discovery tests."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        dataset = collect("PinPad-v0", 16, progress=False)
        base = train_bc(
            BCConfig(dataset=dataset, model_overrides=TINY, steps=3, batch_size=4,
                     eval_every=0, eval_episodes=2, device="cpu", warmup_steps=1),
            root / "bc.pt", progress=False,
        )  # fmt: skip
        yield dataset, base


def discovery(trained, **overrides):
    dataset, base = trained
    values = dict(base=str(base), dataset=dataset, steps=3, batch_size=4, device="cpu",
                  warmup_steps=1)  # fmt: skip
    return DiscoveryConfig(**{**values, **overrides})


def meta_for(width=16, **overrides):
    torch.manual_seed(0)
    return MetaController(MetaControllerConfig(width=width, layer=1, **overrides))


def randomise_decoder(meta):
    with torch.no_grad():
        meta.decoder[-1].weight.normal_(0, 0.5)


def test_shapes_and_padding_never_leak():
    meta = meta_for()
    stream = torch.randn(3, 7, 16)
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3, [1] * 2 + [0] * 5], dtype=torch.bool)
    out = meta(stream, mask, sample=False)
    assert out.stream.shape == (3, 7, 16) and out.z.shape == (3, 7, 8)
    assert out.beta.shape == (3, 7) and out.mu.shape == out.log_var.shape == (3, 7, 8)
    assert torch.all(out.beta[:, 0] == 1) and torch.all((out.beta >= 0) & (out.beta <= 1))
    changed = stream.clone()
    changed[1, 4:] = 100.0  # padding of episode 1
    again = meta(changed, mask, sample=False)
    torch.testing.assert_close(again.mu[1, :4], out.mu[1, :4])
    torch.testing.assert_close(again.beta[1, :4], out.beta[1, :4])
    with pytest.raises(ValueError, match="stream must be"):
        meta(torch.randn(3, 7, 15), mask)
    with pytest.raises(ValueError, match="mask"):
        meta(stream, mask[:, :5])


def test_the_encoder_sees_the_future_and_the_history_does_not():
    meta = meta_for()
    stream, mask = torch.randn(1, 6, 16), torch.ones(1, 6, dtype=torch.bool)
    later = stream.clone()
    later[0, 5] = torch.randn(16)
    e, e_later = meta.read_norm(stream), meta.read_norm(later)
    embedding, embedding_later = (meta.sequence_embedding(x, mask) for x in (e, e_later))
    assert not torch.allclose(embedding[0, 0], embedding_later[0, 0])  # non-causal
    history, history_later = meta.history(e)[0], meta.history(e_later)[0]
    torch.testing.assert_close(history[0, :5], history_later[0, :5])  # causal


def test_kl_is_zero_when_the_encoder_outputs_the_prior():
    meta = meta_for()
    with torch.no_grad():
        meta.encoder[-1].weight.zero_()
        meta.encoder[-1].bias.zero_()
    out = meta(torch.randn(2, 5, 16), torch.ones(2, 5, dtype=torch.bool))
    torch.testing.assert_close(out.kl(), torch.zeros(2, 5))
    out.mu = out.mu + 1.0  # KL of N(1, I) against N(0, I) is n_z / 2
    torch.testing.assert_close(out.kl(), torch.full((2, 5), 4.0))


def test_beta_one_gives_a_new_code_every_step():
    meta = meta_for(force_switch=True)
    out = meta(torch.randn(2, 6, 16), torch.ones(2, 6, dtype=torch.bool), sample=False)
    assert torch.all(out.beta == 1)
    torch.testing.assert_close(out.z, out.mu)


def test_temporal_integration_follows_the_gate():
    meta = meta_for()
    proposal = torch.randn(2, 5, 8)
    switch_in = torch.randn(2, 5, meta.config.switch_hidden)
    z, beta = meta.integrate(switch_in, proposal)
    torch.testing.assert_close(z[:, 0], proposal[:, 0])
    for t in range(1, 5):
        expected = beta[:, t, None] * proposal[:, t] + (1 - beta[:, t, None]) * z[:, t - 1]
        torch.testing.assert_close(z[:, t], expected)
        # the fused loop computes the same gate as the step-wise switch of `Controller`
        torch.testing.assert_close(beta[:, t], meta.switch_gate(switch_in[:, t], z[:, t - 1]))


def test_switch_noise_adds_logistic_noise_to_the_gate_in_training_only():
    meta = meta_for(switch_noise=True)
    plain = meta_for()
    stream, mask = torch.randn(2, 6, 16), torch.ones(2, 6, dtype=torch.bool)
    # without sampling it is the plain gate; sampled, a relaxed Bernoulli of that gate
    torch.testing.assert_close(meta(stream, mask, sample=False).beta,
                               plain(stream, mask, sample=False).beta)  # fmt: skip
    noisy = [meta(stream, mask, torch.Generator().manual_seed(s)).beta for s in (0, 0, 1)]
    torch.testing.assert_close(noisy[0], noisy[1])  # seeded
    assert not torch.allclose(noisy[0][:, 1:], noisy[2][:, 1:])
    assert torch.all(noisy[0][:, 0] == 1)
    # the noise is logistic: at a zero logit, beta ~ U(0, 1)
    switch_in = torch.zeros(4000, 2, meta.config.switch_hidden)
    with torch.no_grad():
        meta.switch_output.bias.zero_()
        meta.switch_output.weight.zero_()
        u = torch.rand(4000, 2).clamp(1e-6, 1 - 1e-6)
        _, beta = meta.integrate(switch_in, torch.randn(4000, 2, 8), u.log() - (-u).log1p())
    torch.testing.assert_close(beta[:, 1], u[:, 1])


def test_the_controller_is_a_low_rank_matrix_not_a_channel_gain():
    meta = meta_for()
    randomise_decoder(meta)
    z, e = torch.randn(8), torch.randn(16)
    a, b = meta.controller(z)
    u = a @ b.T
    torch.testing.assert_close(meta.control(e, z), e + u @ e)
    assert torch.linalg.matrix_rank(u) <= meta.config.rank
    off_diagonal = u - torch.diag(torch.diagonal(u))
    assert off_diagonal.abs().max() > 1e-3  # channels mix: not e * gain


def test_zero_controller_leaves_the_base_model_unchanged():
    base = CausalTransformer(ModelConfig((6,), 1.0, 3, **TINY)).eval()
    meta = MetaController(MetaControllerConfig.for_base(base.config))  # U = 0 at init
    a, _ = meta.controller(torch.randn(4, 8))
    assert torch.all(a == 0)
    obs, prev = torch.rand(2, 5, 6), torch.randint(0, 3, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.bool)
    plain = base(obs, prev)
    controlled = base(obs, prev, layer=1, intervene=lambda s: meta(s, mask).stream)
    torch.testing.assert_close(controlled.action, plain.action)


def test_layer_must_be_inside_the_base_model():
    base = ModelConfig((6,), 1.0, 3, **TINY)
    assert MetaControllerConfig.for_base(base).layer == 1
    with pytest.raises(ValueError, match="layer must be an integer in 0..2"):
        MetaControllerConfig.for_base(base, layer=3)


def test_discovery_trains_the_controller_and_never_the_base(trained, tmp_path):
    log = []
    path = train_discovery(discovery(trained, steps=6, lr=1e-2), tmp_path / "d.pt",
                           progress=False, log=log)  # fmt: skip
    assert {"action_nll", "kl", "switches_per_episode", "tokens_per_s"} <= set(log[-1])
    original, _ = load_model(trained[1])
    base, meta, payload = load_metacontroller(path)
    for name, value in original.state_dict().items():
        torch.testing.assert_close(base.state_dict()[name], value, msg=name)
    torch.manual_seed(0)  # the run's seed: the controller it started from
    fresh = MetaController(MetaControllerConfig(**payload["controller_config"]))
    assert any(
        not torch.equal(p, q) for p, q in zip(fresh.parameters(), meta.parameters(), strict=True)
    )


def test_cotraining_changes_the_base(trained, tmp_path):
    path = train_discovery(discovery(trained, cotrain=True, lr=1e-2), tmp_path / "c.pt",
                           progress=False)  # fmt: skip
    original, _ = load_model(trained[1])
    base, _, _ = load_metacontroller(path)
    assert any(not torch.equal(base.state_dict()[k], v) for k, v in original.state_dict().items())


def test_discovery_checkpoint_round_trip_and_resume(trained, tmp_path):
    full = train_discovery(discovery(trained, steps=4, checkpoint_every=2), tmp_path / "full.pt",
                           progress=False)  # fmt: skip
    half = discovery(trained, steps=4, checkpoint_every=2)
    train_discovery(dataclasses.replace(half, steps=2), tmp_path / "half.pt", progress=False)
    payload = load_checkpoint(tmp_path / "half.pt", "discovery")
    payload["train_config"]["steps"] = 4  # continue the same run to its end
    torch.save(payload, tmp_path / "half.pt")
    train_discovery(half, tmp_path / "half.pt", resume=True, progress=False)
    a, b = load_checkpoint(full, "discovery"), load_checkpoint(tmp_path / "half.pt", "discovery")
    for name, value in a["controller"].items():
        torch.testing.assert_close(b["controller"][name], value, msg=name)
    base, meta, _ = load_metacontroller(full)
    dataset, _ = trained
    batch = to_torch(load_episodes(dataset).padded(np.arange(4)))
    first = discovery_loss(base, meta, batch, 0.1, torch.Generator().manual_seed(1))[0]
    base, meta, _ = load_metacontroller(full)
    second = discovery_loss(base, meta, batch, 0.1, torch.Generator().manual_seed(1))[0]
    assert first.item() == second.item()
    with pytest.raises(ValueError, match="exists"):
        train_discovery(half, tmp_path / "half.pt", progress=False)


def test_clear_errors_for_a_wrong_base_or_layer(trained, tmp_path):
    path = train_discovery(discovery(trained, steps=1), tmp_path / "d.pt", progress=False)
    with pytest.raises(ValueError, match="holds a 'discovery' run, not 'bc'"):
        train_discovery(discovery(trained, base=str(path)), tmp_path / "x.pt", progress=False)
    with pytest.raises(ValueError, match="layer must be an integer in 0..2"):
        train_discovery(discovery(trained, layer=5), tmp_path / "y.pt", progress=False)
    with pytest.raises(ValueError, match="unknown fields in controller_overrides"):
        discovery(trained, controller_overrides={"widht": 3})
    with pytest.raises(ValueError, match="switch_noise are DiscoveryConfig's own fields"):
        discovery(trained, controller_overrides={"switch_noise": True})
    with pytest.raises(ValueError, match="alpha"):
        discovery(trained, alpha=-1.0)
    with pytest.raises(ValueError, match="kl_warmup_steps"):
        discovery(trained, kl_warmup_steps=-1)
    with pytest.raises(ValueError, match="holds a 'bc' run"):
        load_metacontroller(trained[1])


def test_switch_report_scores_switches_against_subgoal_changes():
    subgoal = np.array([[0, 0, 0, 1, 1, 1, 2, 2], [0, 0, 1, 1, 1, 1, 1, 1]])
    mask = np.ones_like(subgoal, bool)
    mask[1, 6:] = False
    perfect = np.zeros(subgoal.shape)
    perfect[0, [0, 3, 6]] = perfect[1, [0, 2]] = 1.0
    report = switch_report(perfect, mask, subgoal)
    assert report.f1 == 1.0 and report.ambiguous_fraction == 0.0
    assert report.switches_per_episode == 1.5 and report.subgoal_changes_per_episode == 1.5
    late = np.zeros(subgoal.shape)
    late[0, [4, 7]] = late[1, 3] = 1.0  # one step late: still hits
    assert switch_report(late, mask, subgoal).f1 == 1.0
    noisy = perfect.copy()
    noisy[0, 1] = 0.95  # an extra switch, and a vague gate
    noisy[1, 4] = 0.5
    report = switch_report(noisy, mask, subgoal)
    assert report.recall == 1.0 and report.precision == 3 / 4
    assert report.ambiguous_fraction == pytest.approx(1 / 12)
    assert switch_report(np.zeros(subgoal.shape), mask, subgoal).recall == 0.0
    with pytest.raises(ValueError, match="one shape"):
        switch_report(perfect[:, :4], mask, subgoal)


def test_analysis_runs_on_a_trained_metacontroller(trained, tmp_path):
    path = train_discovery(discovery(trained), tmp_path / "d.pt", progress=False)
    base, meta, payload = load_metacontroller(path)
    dataset, _ = trained
    data = load_episodes(dataset)
    result = infer_switches(base, meta, data, np.arange(data.num_episodes), batch_size=5)
    assert result["beta"].shape == result["mask"].shape == (16, int(data.lengths.max()))
    report = switch_report(**result)
    assert 0 <= report.f1 <= 1 and report.episodes == 16
    figure = plot_switches(**result, path=tmp_path / "fig" / "switches.png")
    assert figure.stat().st_size > 1000 and figure.read_bytes()[:4] == b"\x89PNG"


def test_analysis_rejects_bad_counts(trained, tmp_path, capsys):
    path = train_discovery(discovery(trained, steps=1), tmp_path / "d.pt", progress=False)
    base, meta, _ = load_metacontroller(path)
    data = load_episodes(trained[0])
    with pytest.raises(ValueError, match="no episodes given"):
        infer_switches(base, meta, data, np.arange(0))
    assert main(["analyze", "--checkpoint", str(path), "--episodes", "0"]) == 2
    assert "--episodes must be a positive integer" in capsys.readouterr().err
    wide = collect("PinPad-v0", 2, progress=False, env_kwargs={"task_in_obs": True})
    assert main(["analyze", "--checkpoint", str(path), "--dataset", wide]) == 2
    assert "holds observations of shape (699,); the model reads (637,)" in capsys.readouterr().err


def test_controller_steps_hold_codes_until_a_switch():
    meta = meta_for()
    calls = []

    def propose(e, h):
        calls.append(len(e))
        return torch.randn(len(e), 8)

    control = Controller(meta, 3, propose)
    control.intervene(torch.randn(3, 1, 16))
    assert control.switched.all() and calls == [3]  # t = 0 always takes a code
    first = control.z.clone()
    with torch.no_grad():
        meta.switch_output.bias.fill_(-50.0)  # never switch again
    control.intervene(torch.randn(3, 1, 16))
    assert not control.switched.any()
    torch.testing.assert_close(control.z, first)
    held = torch.ones(3, 8)
    control.force(held)
    control.intervene(torch.randn(3, 1, 16))
    torch.testing.assert_close(control.z, held)


def test_discover_and_analyze_commands(trained, tmp_path, capsys):
    dataset, base = trained
    out = tmp_path / "d.pt"
    code = main(["train", "discover", "--base", str(base), "--dataset", dataset, "--steps", "2",
                 "--batch-size", "4", "--device", "cpu", "--out", str(out)])  # fmt: skip
    assert code == 0 and out.exists()
    figure = tmp_path / "beta.png"
    code = main(["analyze", "--checkpoint", str(out), "--episodes", "8", "--figure",
                 str(figure), "--device", "cpu"])  # fmt: skip
    assert code == 0 and figure.exists()
    assert "switch F1" in capsys.readouterr().out
    plain = tmp_path / "plain.pt"
    code = main(["train", "discover", "--base", str(base), "--dataset", dataset, "--steps", "2",
                 "--batch-size", "4", "--device", "cpu", "--no-switch-noise",
                 "--out", str(plain)])  # fmt: skip
    assert code == 0
    assert load_checkpoint(out, "discovery")["controller_config"]["switch_noise"] is True
    saved = load_checkpoint(plain, "discovery")
    assert saved["train_config"]["switch_noise"] is False
    assert saved["controller_config"]["switch_noise"] is False
