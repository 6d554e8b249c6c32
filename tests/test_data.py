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
    monkeypatch.setattr(collect_module, "_pinpad_episodes", real)
    dataset_id = collect("PinPad-v0", 5, progress=False)
    monkeypatch.setattr(collect_module, "_pinpad_episodes", crash_midway)
    with pytest.raises(KeyboardInterrupt):  # an interrupted overwrite keeps the old dataset
        collect("PinPad-v0", 20, overwrite=True, progress=False)
    assert load_episodes(dataset_id).num_episodes == 5
    assert sorted(folder.iterdir()) == [folder / "expert-v0", folder / "namespace_metadata.json"]


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


def test_fast_hdf5_reader_equals_minari_public_api():
    from metacontroller_envs.data import episodes

    for env_id, count in (("SubgoalBabyAI-Pretrain-v0", 4), ("PinPad-v0", 30)):
        dataset = episodes.open_dataset(collect(env_id, count, seed=2, progress=False))
        fast, public = episodes._empty_columns(dataset.spec), episodes._empty_columns(dataset.spec)
        assert episodes._read_hdf5_directly(dataset, fast) == dataset.spec.total_steps
        assert episodes._read_through_minari(dataset, public) == dataset.spec.total_steps
        for name in fast:
            np.testing.assert_array_equal(fast[name], public[name], err_msg=f"{env_id} {name}")
        assert list(fast["seeds"]) == list(range(2, 2 + count))


def test_reference_scores_through_minari():
    dataset_id = collect("PinPad-v0", 12, epsilon=0.3, seed=4, progress=False)
    dataset = minari.load_dataset(dataset_id)
    metadata = dataset.storage.metadata
    ref_min, ref_max = metadata["ref_min_score"], metadata["ref_max_score"]
    assert metadata["num_episodes_average_score"] == 12  # min(REFERENCE_EPISODES, episodes)
    ours = metadata["metacontroller_envs"]
    assert ours["reference_seed"] == 4 + 12  # after the dataset's own seeds 4..15
    assert (ref_min, ref_max, 12) == collect_module.reference_scores("PinPad-v0", 12, 16)
    assert ref_max == 1.0 and 0.0 <= ref_min < 0.5  # the expert solves every episode
    np.testing.assert_allclose(minari.get_normalized_score(dataset, np.array([ref_min, ref_max])),
                               [0.0, 1.0])  # fmt: skip
    # the random policy stops at a step budget (episodes of at most 192 steps: 3 or more)
    scores = collect_module.reference_scores("SubgoalBabyAI-Pretrain-v0", 10, 0, max_steps=400)
    played = scores[2]
    assert 3 <= played < 10


def test_refuses_other_format_versions(datasets_root):
    dataset_id = collect("PinPad-v0", 3, progress=False)
    metadata_file = dataset_path(dataset_id) / "data" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    assert metadata["metacontroller_envs"]["format_version"] == 1
    metadata["metacontroller_envs"]["format_version"] = 99
    metadata_file.write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=f"dataset {dataset_id} has format version 99; this "
                       "version of metacontroller-envs reads format version 1"):  # fmt: skip
        load_episodes(dataset_id)
    del metadata["metacontroller_envs"]  # a Minari dataset that this package did not write
    metadata_file.write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=f"dataset {dataset_id} has no metacontroller_envs "):
        load_episodes(dataset_id)
