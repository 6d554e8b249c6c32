"""Padded torch batches from a collected dataset."""

import numpy as np
import pytest
import torch

from metacontroller_agents.data import iterate_batches, resolve_device
from metacontroller_envs.data import collect, load_episodes


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        return load_episodes(collect("PinPad-v0", 10, progress=False))


def test_one_pass_covers_every_episode_once(data):
    batches = list(iterate_batches(data, 4, seed=3))
    assert [len(b["lengths"]) for b in batches] == [4, 4, 2]
    assert sorted(torch.cat([b["lengths"] for b in batches]).tolist()) == sorted(data.lengths)
    first = batches[0]
    assert first["observations"].dtype == torch.uint8
    assert first["mask"].dtype == torch.bool and first["actions"].dtype == torch.int64
    assert first["observations"].shape[:2] == (4, first["mask"].shape[1] + 1)
    assert torch.equal(first["mask"].sum(1), first["lengths"])


def test_same_seed_same_order(data):
    def order(seed):
        return torch.cat([b["episode_index"] for b in iterate_batches(data, 3, seed=seed)])

    assert torch.equal(order(1), order(1))
    assert not torch.equal(order(1), order(2))
    assert sorted(order(1).tolist()) == list(range(10))
    assert len(list(iterate_batches(data, 4, drop_last=True))) == 2


def test_device_and_bad_batch_size(data):
    assert resolve_device("auto").type in ("cpu", "cuda")
    batch = next(iterate_batches(data, 2, device="cpu", shuffle=False))
    np.testing.assert_array_equal(
        batch["actions"][0, : data.lengths[0]].numpy(), data.episode(0)["actions"]
    )
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        next(iterate_batches(data, 0))
