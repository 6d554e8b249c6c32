"""check_controller (issue 35): it passes on a correct controller and on LatentAgent, and
each broken controller fails with its own message."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import metacontroller_envs  # noqa: F401
from metacontroller_envs.wrappers import ControllerError, LatentActionWrapper, check_controller

OBS = gym.make("PinPad-v0").observation_space.shape[0]


class Toy:
    """A correct numpy controller: e = W o, beta from e and the step, state per row."""

    def __init__(self, num_envs=3, width=8, n_z=2):
        self.num_envs, self.latent_dim, self.observation_size = num_envs, n_z, width
        self.w = np.random.default_rng(0).standard_normal((width, OBS)).astype(np.float32)
        self.steps = np.zeros(num_envs, np.int64)
        self.z = np.zeros((num_envs, n_z), np.float32)
        self.rng = [np.random.default_rng(r) for r in range(num_envs)]
        self.e = np.zeros((num_envs, width), np.float32)

    def reset(self, rows, seed=None):
        self.steps[rows] = 0
        self.z[rows] = 0
        for r in rows:
            self.rng[r] = np.random.default_rng(None if seed is None else [seed, int(r)])

    def observe(self, observations, rows):
        e = (np.asarray(observations, np.float32) @ self.w.T).astype(np.float32)
        self.e[rows] = e
        beta = np.where(self.steps[rows] == 0, 1.0, 1 / (1 + np.exp(-e[:, 0] / 10)))
        return e, beta

    def act(self, rows, z):
        if z is not None:
            self.z[rows] = z
        self.steps[rows] += 1
        noise = np.stack([self.rng[r].random(4) for r in rows])  # seeded per row
        scores = 0.01 * self.e[rows][:, :4] + self.z[rows].sum(1, keepdims=True) + noise
        return scores.argmax(1)


class WideE(Toy):
    def observe(self, observations, rows):
        e, beta = super().observe(observations, rows)
        return np.concatenate([e, e[:, :1]], 1), beta


class DoubleE(Toy):
    def observe(self, observations, rows):
        e, beta = super().observe(observations, rows)
        return e.astype(np.float64), beta


class BetaAboveOne(Toy):
    def observe(self, observations, rows):
        e, beta = super().observe(observations, rows)
        return e, beta * 1.5


class NoSwitchAtStart(Toy):
    def observe(self, observations, rows):
        e, beta = super().observe(observations, rows)
        return e, np.full(len(rows), 0.25)


class SharedStep(Toy):
    """beta reads a step count summed over rows: a row's beta depends on the others."""

    def observe(self, observations, rows):
        e, beta = super().observe(observations, rows)
        return e, np.where(self.steps[rows] == 0, 1.0, min(1.0, self.steps.sum() / 50))


class ForgetsNothing(Toy):
    """Resets only when every row is reset: a row reset alone keeps its history."""

    def reset(self, rows, seed=None):
        if len(rows) == self.num_envs:
            super().reset(rows, seed)


class Unseeded(Toy):
    def reset(self, rows, seed=None):
        super().reset(rows, None)


class BadAction(Toy):
    def act(self, rows, z):
        return super().act(rows, z) + 4  # PinPad has Discrete(4)


class OneRow(Toy):
    def __init__(self):
        super().__init__(num_envs=1)


@pytest.mark.parametrize("broken, message", [
    (WideE, r"e must be float32 of shape \(2, 8\)"),
    (DoubleE, "e must be float32"),
    (BetaAboveOne, r"beta must be a probability in \[0, 1\]"),
    (NoSwitchAtStart, "beta must be 1 at an episode's first step"),
    (SharedStep, "rows are not independent"),
    (ForgetsNothing, r"after reset\(rows\) beta must be 1"),
    (Unseeded, "the same seed gave other actions"),
    (BadAction, "not an action of Discrete"),
    (OneRow, "needs num_envs >= 2"),
])  # fmt: skip
def test_each_broken_controller_fails_with_its_own_message(broken, message):
    with pytest.raises(ControllerError, match=message):
        check_controller(broken())


def test_a_correct_controller_and_the_latent_agent_pass():
    check_controller(Toy())
    check_controller(Toy(), "PinPad-Ladder2-v0")
    with pytest.raises(ControllerError, match="does not implement LatentController"):
        check_controller(object())
    from metacontroller_agents.latent import LatentAgent
    from metacontroller_agents.metacontroller import MetaController, MetaControllerConfig
    from metacontroller_agents.transformer import CausalTransformer, ModelConfig

    torch.manual_seed(0)
    config = ModelConfig.for_env(gym.make("PinPad-v0"), "small", width=32, depth=2, heads=2,
                                 mlp=64)  # fmt: skip
    base = CausalTransformer(config).eval()
    meta = MetaController(MetaControllerConfig.for_base(config)).eval()
    check_controller(LatentAgent(base, meta, 2))  # greedy actions under the codes
    # (sample=True draws every row's action from one generator: rows are independent in
    # distribution but not draw by draw, and check_controller says so)
    with pytest.raises(ControllerError, match="rows are not independent"):
        check_controller(LatentAgent(base, meta, 2, sample=True))
    env = LatentActionWrapper(gym.make("PinPad-v0"), Toy(num_envs=1))  # the wrapper takes it
    env.reset(seed=0)
    assert env.step(np.zeros(2, np.float32))[0].shape == (8,)


class TaskReader(Toy):
    """A task-conditioned controller: observe takes the envs' infos and keeps them."""

    def __init__(self, num_envs=3):
        super().__init__(num_envs=num_envs)
        self.infos = []

    def observe(self, observations, rows, infos=None):
        assert infos is not None and len(infos) == len(rows), "infos must come, one per row"
        self.infos.extend(infos)
        return super().observe(observations, rows)


def test_observe_receives_the_envs_infos_where_it_takes_them():
    check_controller(TaskReader())  # the checker hands them, as the wrappers do
    controller = TaskReader(num_envs=1)
    env = LatentActionWrapper(gym.make("PinPad-v0"), controller, threshold=0.0)
    _, reset_info = env.reset(seed=0)
    assert controller.infos == [reset_info]  # reset's info at the first step
    done, steps = False, 0
    while not done:
        _, _, terminated, truncated, info = env.step(np.zeros(2, np.float32))
        done, steps = terminated or truncated, steps + 1
        assert controller.infos[-1].keys() == info.keys() - {"primitive_steps"}
    assert len(controller.infos) == 1 + steps  # the terminal observation's info too
