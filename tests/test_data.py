"""Expert datasets: collect -> Minari -> flat arrays, replayable from their seeds."""

import json

import gymnasium as gym
import minari
import numpy as np
import pytest

import metacontroller_envs  # noqa: F401
from metacontroller_envs.cli import main
from metacontroller_envs.data import collect, default_dataset_id, load_episodes
from metacontroller_envs.data import collection as collect_module
from metacontroller_envs.data.collection import dataset_path


@pytest.fixture(autouse=True)
def datasets_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    return tmp_path


def replay(env_id, data, i):
    """Observations, rewards and subgoal labels of episode i, replayed from its seed."""
    env = gym.make(env_id)
    obs, info = env.reset(seed=int(data.seeds[i]))
    observations, rewards, labels = [obs], [], [info["subgoal_index"]]
    for action in data.episode(i)["actions"]:
        obs, reward, terminated, truncated, info = env.step(int(action))
        observations.append(obs)
        rewards.append(reward)
        labels.append(info["subgoal_index"])
    assert terminated or truncated
    return np.stack(observations), np.array(rewards), np.array(labels)


@pytest.mark.parametrize(
    ("env_id", "episodes"),
    [("PinPad-v0", 300), ("SubgoalBabyAI-Pretrain-v0", 6), ("VisualPinPad-Three-v0", 1)],
)
def test_collect_then_load_equals_a_replay(env_id, episodes):
    dataset_id = collect(env_id, episodes, epsilon=0.1, seed=5, progress=False)
    assert dataset_id == default_dataset_id(env_id, 0.1)
    data = load_episodes(dataset_id, env_id)
    assert data.num_episodes == episodes and data.env_id == env_id
    assert list(data.seeds) == list(range(5, 5 + episodes))
    for i in sorted({0, episodes // 2, episodes - 1}):
        observations, rewards, labels = replay(env_id, data, i)
        episode = data.episode(i)
        np.testing.assert_array_equal(episode["observations"], observations)
        np.testing.assert_array_equal(episode["rewards"], rewards)
        np.testing.assert_array_equal(episode["subgoal_index"], labels)


def test_pinpad_labels_and_tasks():
    data = load_episodes(collect("PinPad-v0", 40, progress=False))
    assert (data.returns == 1.0).all()  # the expert solves every episode
    assert set(data.task_index) <= set(range(16)) and len(set(data.task_index)) > 4
    ends = data.subgoal_index[data.step_start[1:] + np.arange(40)]
    assert (ends == 3).all()  # three pairs completed at each episode's last observation


def test_minari_opens_our_datasets():
    dataset_id = collect("SubgoalBabyAI-Posttrain-v0", 3, progress=False)
    dataset = minari.load_dataset(dataset_id)
    assert dataset.total_episodes == 3
    episode = next(dataset.iterate_episodes())
    assert episode.observations.shape[0] == len(episode.actions) + 1
    assert set(episode.infos) >= {"subgoal_index", "task", "success"}
    assert episode.infos["task"].shape == (len(episode.actions) + 1, 6)
    assert dataset_id in minari.list_local_datasets()
    assert dataset.recover_environment().spec.id == "SubgoalBabyAI-Posttrain-v0"


def test_same_seed_same_dataset():
    a = load_episodes(collect("PinPad-v0", 30, epsilon=0.2, seed=1, progress=False))
    b_id = collect("PinPad-v0", 30, epsilon=0.2, seed=1, dataset_id="test/again-v0", progress=False)
    b = load_episodes(b_id)
    for name in ("observations", "actions", "rewards", "subgoal_index", "step_start"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_refuses_to_overwrite_unless_asked():
    dataset_id = collect("PinPad-v0", 5, progress=False)
    with pytest.raises(ValueError, match="already exists"):
        collect("PinPad-v0", 5, progress=False)
    collect("PinPad-v0", 7, overwrite=True, progress=False)
    assert load_episodes(dataset_id).num_episodes == 7


def test_interrupted_collect_leaves_nothing(monkeypatch, datasets_root):
    real = collect_module._pinpad_episodes

    def crash_midway(*args):
        for k, episode in enumerate(real(*args)):
            if k == 10:
                raise KeyboardInterrupt
            yield episode

    monkeypatch.setattr(collect_module, "_pinpad_episodes", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        collect("PinPad-v0", 20, progress=False)
    folder = datasets_root / "pinpad" / "PinPad-v0"
    assert list(folder.iterdir()) == [folder / "namespace_metadata.json"]


def test_padded_batches():
    data = load_episodes(collect("SubgoalBabyAI-Pretrain-v0", 5, progress=False))
    batch = data.padded(np.array([3, 0, 4]))
    lengths = data.lengths[[3, 0, 4]]
    longest = lengths.max()
    assert batch.observations.shape == (3, longest + 1, 242)
    assert batch.actions.shape == batch.mask.shape == batch.subgoal_index.shape == (3, longest)
    assert (batch.mask.sum(axis=1) == lengths).all()
    assert (batch.actions[~batch.mask] == 0).all()
    np.testing.assert_array_equal(
        batch.observations[1, : lengths[1] + 1], data.episode(0)["observations"]
    )
    np.testing.assert_allclose(batch.returns, batch.rewards.sum(axis=1))


def test_bad_input(datasets_root):
    with pytest.raises(ValueError, match="unknown env id 'PinPad-v9'"):
        collect("PinPad-v9", 5)
    with pytest.raises(ValueError, match="episodes must be a positive integer"):
        collect("PinPad-v0", 0)
    with pytest.raises(ValueError, match="PinPad-v0 takes no keyword argument 'colours'"):
        collect("PinPad-v0", 3, env_kwargs={"colours": 3})
    with pytest.raises(ValueError, match="epsilon must be in"):
        collect("PinPad-v0", 3, epsilon=2.0)
    with pytest.raises(ValueError, match="unknown dataset 'pinpad/nothing-v0'"):
        load_episodes("pinpad/nothing-v0")
    dataset_id = collect("PinPad-v0", 3, progress=False)
    with pytest.raises(ValueError, match="does not match PinPad-Posttrain-v0|does not match"):
        load_episodes(dataset_id, "SubgoalBabyAI-Pretrain-v0")
    data_file = dataset_path(dataset_id) / "data" / "main_data.hdf5"
    data_file.write_bytes(data_file.read_bytes()[:5000])  # truncated
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_episodes(dataset_id)
    metadata = dataset_path(dataset_id) / "data" / "metadata.json"
    metadata.write_text("{not json")
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_episodes(dataset_id)


def test_cli_collect(capsys, datasets_root):
    assert main(["collect", "--env", "PinPad-v0", "--episodes", "4", "--seed", "3"]) == 0
    assert "wrote pinpad/PinPad-v0/expert-v0 (4 episodes)" in capsys.readouterr().out
    metadata = json.loads(
        (datasets_root / "pinpad/PinPad-v0/expert-v0/data/metadata.json").read_text()
    )
    assert metadata["metacontroller_envs"]["seed"] == 3
    assert main(["collect", "--env", "PinPad-v0", "--episodes", "4"]) == 2
    assert "already exists" in capsys.readouterr().err
    two = ["collect", "--env", "PinPad-v0", "PinPad-Posttrain-v0", "--dataset-id", "a/b-v0"]
    assert main(two) == 2 and "give a single --env" in capsys.readouterr().err
    assert main(["collect", "--env", "PinPad-v0", "--env-kwargs", "[1]"]) == 2
    assert "must be a JSON object" in capsys.readouterr().err


def test_fast_hdf5_reader_equals_minari_decoding(monkeypatch):
    from metacontroller_envs.data import episodes

    dataset_id = collect("SubgoalBabyAI-Pretrain-v0", 4, progress=False)
    fast = load_episodes(dataset_id)
    monkeypatch.setattr(episodes, "_plain_hdf5", lambda dataset: False)
    slow = load_episodes(dataset_id)
    for name in ("observations", "actions", "rewards", "subgoal_index", "step_start", "seeds"):
        np.testing.assert_array_equal(getattr(fast, name), getattr(slow, name), err_msg=name)
    np.testing.assert_array_equal(fast.task_index, slow.task_index)
