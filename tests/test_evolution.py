"""Evolution strategies (issue 6, part 3): fitness shaping, the gradient estimate, the
population's codes, antithetic layouts, training, resume and the command."""

import numpy as np
import pytest
import torch

from metacontroller_agents.checkpoint import load_checkpoint
from metacontroller_agents.evolution import (
    EvolutionConfig,
    Population,
    centred_ranks,
    es_gradient,
    train_evolution,
)
from metacontroller_agents.internal_rl import InternalRL, LatentPolicy

torch.set_num_threads(1)


def small_es(checkpoint, **overrides):
    values = dict(checkpoint=checkpoint, env="PinPad-v0", env_kwargs={"task": "0"}, episodes=16,
                  population=4, episodes_per_member=2, hidden=16, checkpoint_every=1,
                  device="cpu")  # fmt: skip
    return EvolutionConfig(**{**values, **overrides})


def test_centred_ranks_span_minus_to_plus_half_and_share_ties():
    np.testing.assert_allclose(centred_ranks([3.0, -1.0, 10.0]), [0.0, -0.5, 0.5])
    np.testing.assert_allclose(centred_ranks([0.0, 1.0, 0.0, 0.0]), [-1 / 6, 0.5, -1 / 6, -1 / 6])
    np.testing.assert_allclose(centred_ranks([2.0, 2.0]), [0.0, 0.0])


def test_es_gradient_climbs_a_quadratic():
    """The estimator, with Adam, finds the top of -|theta - target|^2 from returns alone."""
    generator = torch.Generator().manual_seed(0)
    target = torch.tensor([1.0, -2.0, 0.5])
    theta = torch.zeros(3, requires_grad=True)
    optimizer = torch.optim.Adam([theta], lr=0.05)
    sigma = 0.1
    for _ in range(300):
        half = torch.randn(8, 3, generator=generator)
        noise = torch.cat([half, -half])
        members = theta.detach() + sigma * noise
        fitness = -((members - target) ** 2).sum(1).numpy()
        theta.grad = -es_gradient(fitness, noise, sigma)
        optimizer.step()
    torch.testing.assert_close(theta.detach(), target, atol=0.1, rtol=0)


def test_population_members_are_the_centre_plus_their_noise_and_act_with_their_mean():
    torch.manual_seed(0)
    centre = LatentPolicy(width=6, latent_dim=3, hidden=5)
    population = Population(centre, size=4, episodes_per_member=2)
    dimension = len(population.vector())
    assert dimension == sum(p.numel() for p in centre.parameters()) - 3  # log_std stays out
    noise = torch.randn(4, dimension)
    population.perturb(noise, sigma=0.5)
    for member, direction in zip(population.members, noise, strict=True):
        moved = torch.cat([p.flatten() for p in Population.evolved(member)])
        torch.testing.assert_close(moved, population.vector() + 0.5 * direction)
    e, h = torch.randn(3, 1, 6), torch.randn(1, 3, 5)
    rows = np.array([0, 3, 7])  # members 0, 1 and 3
    z, log_p, h_new = population.choose(e, h, rows)
    for k, member in enumerate([0, 1, 3]):
        dist, h_m = population.members[member].distribution(e[k : k + 1], h[:, k : k + 1])
        torch.testing.assert_close(z[k], dist.mean[0, 0])
        torch.testing.assert_close(h_new[:, k], h_m[:, 0])
    assert torch.all(log_p == 0)


def test_antithetic_twins_play_the_same_layouts(discovery_checkpoint):
    config = small_es(discovery_checkpoint)
    run = InternalRL(config.rollouts())
    population = Population(run.trained, config.population, config.episodes_per_member)
    population.perturb(torch.zeros(4, len(population.vector())), sigma=0.1)
    first_obs = {}
    original_reset = run.envs.reset

    def spy(**kwargs):
        first_obs["seeds"] = kwargs["seed"]
        return original_reset(**kwargs)

    run.envs.reset = spy
    # member m and m + 2 are twins; each plays 2 episodes, one per env row
    run.collect(0, population.choose, np.array([0, 1, 2, 3, 0, 1, 2, 3]))
    seeds = first_obs["seeds"]
    assert seeds[:4] == seeds[4:] and len(set(seeds[:4])) == 4


def test_training_moves_the_policy_logs_success_and_resumes(
    discovery_checkpoint, tmp_path, check_resume
):
    config = small_es(discovery_checkpoint)
    log = []
    path = train_evolution(config, tmp_path / "a.pt", progress=False, log=log)
    assert [m["episodes"] for m in log] == [8, 16]
    assert all(0 <= m["success"] <= 1 and m["env_steps"] >= 8 for m in log)
    trained = load_checkpoint(path, "evolution")
    assert trained["policy"]["mean.weight"].abs().sum() > 0  # it moved from the prior
    check_resume(train_evolution, "evolution", config, trained["policy"], 8)


def test_bad_configs_are_clear_errors(discovery_checkpoint):
    with pytest.raises(ValueError, match="population must be even"):
        small_es(discovery_checkpoint, population=3)
    with pytest.raises(ValueError, match="need sigma > 0"):
        small_es(discovery_checkpoint, sigma=0.0)
    with pytest.raises(ValueError, match="episodes_per_member must be a positive integer"):
        small_es(discovery_checkpoint, episodes_per_member=0)


def test_command_runs_es(discovery_checkpoint, tmp_path):
    from metacontroller_envs.cli import main

    args = ["train", "es", "--checkpoint", discovery_checkpoint, "--env", "PinPad-v0",
            "--episodes", "8", "--population", "4", "--episodes-per-member", "2",
            "--device", "cpu", "--out", str(tmp_path / "es.pt")]  # fmt: skip
    assert main(args) == 0
    (point,) = load_checkpoint(tmp_path / "es.pt", "evolution")["history"]
    assert point["episodes"] == 8
    assert point["env_steps_per_s"] == pytest.approx(point["env_steps"] / point["seconds"])
    assert main(args) == 2  # the checkpoint exists: neither --resume nor --overwrite
