"""experiments/subgoal_controllers.py: one controller per pair, its labels, and its use in play."""

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

import metacontroller_envs  # noqa: F401
from experiments.steering import play_controlled
from experiments.subgoal_controllers import (
    PairCodes,
    PairControl,
    PairControllers,
    fit_to_pairs,
    pair_labels,
    success_rate,
    task_list,
    train_controllers,
)
from metacontroller_agents.analysis import load_metacontroller
from metacontroller_agents.checkpoint import load_model
from metacontroller_envs.data import collect, load_episodes
from metacontroller_envs.pinpad import PRETRAIN_TASKS


def test_each_step_gets_the_controller_of_its_own_pair():
    torch.manual_seed(0)
    controllers = PairControllers(width=6, rank=2)
    with torch.no_grad():
        controllers.a.normal_()
    stream = torch.randn(2, 3, 6)
    pair = torch.tensor([[0, 0, 3], [2, 1, 1]])
    out = controllers(stream, pair)
    for b in range(2):
        for t in range(3):
            a, bt = controllers.a[pair[b, t]], controllers.b[pair[b, t]]
            expected = stream[b, t] + a @ (bt.T @ stream[b, t])  # e + A (B^T e)
            torch.testing.assert_close(out[b, t], expected)
    assert torch.equal(PairControllers(6, 2)(stream, pair), stream)  # A = 0: unchanged


def test_pair_codes_control_through_the_decoder_and_only_the_codes_train(
    discovery_checkpoint, tmp_path, monkeypatch
):
    base, meta, _ = load_metacontroller(discovery_checkpoint, "cpu")
    base.requires_grad_(False)
    meta_before = {k: v.clone() for k, v in meta.state_dict().items()}
    codes = PairCodes(meta)
    with torch.no_grad():
        codes.codes.normal_()
    stream = torch.randn(2, 3, base.config.width)
    pair = torch.tensor([[0, 0, 3], [2, 1, 1]])
    out = codes(stream, pair)
    for b in range(2):
        for t in range(3):
            expected = meta.control(stream[b, t], codes.codes[pair[b, t]])  # e + U(z_g) e
            torch.testing.assert_close(out[b, t], expected)

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    data = load_episodes(collect("PinPad-v0", 8, progress=False))
    start = codes.codes.detach().clone()
    nll = fit_to_pairs(base, codes, data, meta.config.layer, steps=3, batch_size=4, lr=0.05,
                       seed=0, device=torch.device("cpu"))  # fmt: skip
    assert np.isfinite(nll) and not torch.equal(codes.codes, start)
    for name, value in meta.state_dict().items():
        assert torch.equal(value, meta_before[name]), name  # the MetaController is frozen

    other = load_episodes(collect("PinPad-v0", 2, progress=False, dataset_id="pinpad/obs-v0",
                                  env_kwargs={"task_in_obs": True}))  # fmt: skip
    with pytest.raises(ValueError, match="observations of shape"):
        fit_to_pairs(base, codes, other, meta.config.layer, steps=1, batch_size=2, lr=0.05,
                     seed=0, device=torch.device("cpu"))  # fmt: skip


def test_pair_labels_follow_the_task_and_its_subgoal_index():
    tasks = torch.as_tensor(task_list_of(PRETRAIN_TASKS))
    batch = {
        "task_index": torch.tensor([0, 9]),
        "subgoal_index": torch.tensor([[0, 1, 2], [0, 1, 2]]),
    }
    # task 0 is 0-1-4-5-0-1 (pairs 0, 2, 0); task 9 is 6-7-2-3-0-1 (pairs 3, 1, 0)
    assert pair_labels(tasks, batch).tolist() == [[0, 2, 0], [3, 1, 0]]


def task_list_of(tasks) -> np.ndarray:
    table = np.full((len(tasks), 7), -1)
    for i, task in enumerate(tasks):
        table[i, : len(task)] = task
    return table


def test_controllers_train_and_play_on_a_tiny_model(discovery_checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    data = load_episodes(collect("PinPad-v0", 8, progress=False))
    base, _ = load_model(discovery_checkpoint, "cpu", kind="discovery")
    base.requires_grad_(False).eval()
    assert np.array_equal(task_list(data)[:, :6], np.array(PRETRAIN_TASKS))
    controllers, nll = train_controllers(base, data, layer=1, steps=3, batch_size=4, seed=0,
                                         device=torch.device("cpu"))  # fmt: skip
    assert np.isfinite(nll) and controllers.a.abs().sum() > 0  # A left zero
    success, colours = success_rate(base, controllers, 1, "PinPad-Posttrain-v0", 4, 0,
                                    torch.device("cpu"))  # fmt: skip
    assert 0.0 <= success <= 1.0 and 0.0 <= colours <= 12.0
    assert success_rate(base, controllers, 1, "PinPad-Posttrain-v0", 4, 0, torch.device("cpu")) == (
        success,
        colours,
    )  # same seed, same result


class EndRecorder(gym.vector.VectorWrapper):
    """Records each env's progress at the step its (first) episode ended."""

    def __init__(self, env):
        super().__init__(env)
        self.progress_at_end = np.full(env.num_envs, -1)

    def step(self, actions):
        out = self.env.step(actions)
        ended = (out[2] | out[3]) & (self.progress_at_end < 0)
        self.progress_at_end[ended] = self.env.unwrapped.batch.progress[ended]
        return out


def test_play_reads_the_colours_visited_before_the_episode_ended(discovery_checkpoint):
    """Without autoreset an ended env keeps stepping and may visit the task's next colour
    later; those visits are not the episode's."""
    base, _ = load_model(discovery_checkpoint, "cpu", kind="discovery")
    envs = EndRecorder(gym.make_vec("PinPad-Posttrain-v0", num_envs=64,
                                    vectorization_mode="vector_entry_point",
                                    autoreset_mode=AutoresetMode.DISABLED))  # fmt: skip
    control = PairControl(PairControllers(base.config.width), 1, envs)
    played = play_controlled(base, control, envs, list(range(64)), "cpu",
                             torch.Generator().manual_seed(0), max_steps=60)  # fmt: skip
    ended = envs.progress_at_end >= 0
    assert ended.sum() > 32
    counted = (played["colours"] >= 0).sum(1)
    assert np.array_equal(counted[ended], envs.progress_at_end[ended])
    assert (envs.unwrapped.batch.progress[ended] > counted[ended]).any()  # the case it guards
