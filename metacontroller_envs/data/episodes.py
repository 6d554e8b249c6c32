"""Minari datasets as flat numpy arrays, and padded batches cut from them.

Episodes are stored end to end (no padding), so 100k PinPad episodes take their raw size
(about 2.5 GB of uint8 observations); padding happens per batch. agents/ turns batches into
torch tensors.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec

#: The layout this module reads and collect() writes (metadata "metacontroller_envs" ->
#: "format_version"): Minari hdf5, exact observations, per-step infos, each episode's reset
#: seed. The reference scores are optional extras (datasets without them read the same), so
#: adding them did not change the version.
FORMAT_VERSION = 1


@dataclass
class PaddedBatch:
    """B episodes padded to the longest, L steps. Padding is 0 (mask False)."""

    observations: np.ndarray  # (B, L + 1, *obs_shape): before each step, and the last one
    actions: np.ndarray  # (B, L)
    rewards: np.ndarray  # (B, L) float32
    mask: np.ndarray  # (B, L) bool: real steps
    subgoal_index: np.ndarray  # (B, L) the subgoal being pursued when the action was taken
    returns: np.ndarray  # (B,) float32 undiscounted episode returns
    lengths: np.ndarray  # (B,) steps per episode
    task_index: np.ndarray  # (B,) -1 where the env has no task list
    episode_index: np.ndarray  # (B,) which episodes of the dataset these are


@dataclass
class EpisodeArrays:
    """Every episode of a dataset, end to end. Episode i's steps are
    actions[step_start[i]:step_start[i+1]]; its observations (one more than steps) are
    observations[step_start[i] + i : step_start[i+1] + i + 1]."""

    dataset_id: str
    env_id: str | None
    observation_space: gym.Space
    action_space: gym.Space
    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    subgoal_index: np.ndarray  # aligned with observations
    step_start: np.ndarray  # (episodes + 1,)
    seeds: np.ndarray  # (episodes,) the reset seed of each episode, -1 if unknown
    task_index: np.ndarray  # (episodes,)

    @property
    def num_episodes(self) -> int:
        return len(self.step_start) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.step_start)

    @property
    def returns(self) -> np.ndarray:
        return np.add.reduceat(self.rewards, self.step_start[:-1]).astype(np.float32)

    def episode(self, i: int) -> dict[str, np.ndarray]:
        start, stop = self.step_start[i], self.step_start[i + 1]
        return {
            "observations": self.observations[start + i : stop + i + 1],
            "actions": self.actions[start:stop],
            "rewards": self.rewards[start:stop],
            "subgoal_index": self.subgoal_index[start + i : stop + i + 1],
        }

    def padded(self, indices: np.ndarray) -> PaddedBatch:
        indices = np.asarray(indices, dtype=np.intp)
        lengths = self.lengths[indices]
        batch, longest = len(indices), int(lengths.max())
        obs = np.zeros((batch, longest + 1, *self.observations.shape[1:]), self.observations.dtype)
        actions = np.zeros((batch, longest, *self.actions.shape[1:]), self.actions.dtype)
        rewards = np.zeros((batch, longest), np.float32)
        subgoal = np.zeros((batch, longest), np.int64)
        mask = np.arange(longest)[None, :] < lengths[:, None]
        for row, i in enumerate(indices):
            episode, n = self.episode(i), lengths[row]
            obs[row, : n + 1] = episode["observations"]
            actions[row, :n] = episode["actions"]
            rewards[row, :n] = episode["rewards"]
            subgoal[row, :n] = episode["subgoal_index"][:n]
        return PaddedBatch(
            observations=obs,
            actions=actions,
            rewards=rewards,
            mask=mask,
            subgoal_index=subgoal,
            returns=self.returns[indices],
            lengths=lengths,
            task_index=self.task_index[indices],
            episode_index=indices,
        )


def open_dataset(dataset_id: str) -> Any:
    """The Minari dataset, or a ValueError that says what is wrong with the id or file, or
    that the dataset is not one this package wrote in the format version it reads."""
    import minari
    from minari.dataset.minari_dataset import parse_dataset_id

    try:
        parse_dataset_id(dataset_id)
    except ValueError as error:
        raise ValueError(str(error)) from None
    try:
        dataset = minari.load_dataset(dataset_id)
        ours = dataset.storage.metadata.get("metacontroller_envs")
    except FileNotFoundError:
        local = sorted(minari.list_local_datasets())
        raise ValueError(
            f"unknown dataset {dataset_id!r}: local datasets are {local or 'none'}; "
            "write one with `mcenv collect --env ID`"
        ) from None
    except (OSError, KeyError, ValueError) as error:  # h5py/json failures
        raise ValueError(f"dataset {dataset_id} is corrupt or truncated: {error}") from None
    found = ours.get("format_version") if isinstance(ours, dict) else None
    if found != FORMAT_VERSION:
        what = "no metacontroller_envs metadata" if found is None else f"format version {found}"
        raise ValueError(
            f"dataset {dataset_id} has {what}; this version of metacontroller-envs reads "
            f"format version {FORMAT_VERSION}: write it again with `mcenv collect`"
        )
    return dataset


def load_episodes(dataset_id: str, env_id: str | EnvSpec | None = None) -> EpisodeArrays:
    """Every episode of a Minari dataset as flat arrays; `env_id` (an id, or a spec with
    keyword arguments) checks that the spaces match."""
    dataset = open_dataset(dataset_id)
    spec = dataset.spec
    if env_id is not None:
        env = gym.make(env_id)
        for name, ours, theirs in (
            ("observation", env.observation_space, spec.observation_space),
            ("action", env.action_space, spec.action_space),
        ):
            if ours != theirs:
                raise ValueError(
                    f"dataset {dataset_id} does not match {getattr(env_id, 'id', env_id)}: "
                    f"its {name} space is {theirs}, the env's is {ours}"
                )
    columns = _empty_columns(spec)
    storage = dataset.storage
    plain_hdf5 = storage.metadata.get("data_format") == "hdf5" and not storage.jpeg_encoding
    try:
        if plain_hdf5:  # what collect() writes
            at = _read_hdf5_directly(dataset, columns)
        else:
            at = _read_through_minari(dataset, columns)
    except (OSError, KeyError, ValueError) as error:  # h5py failures, episodes that do not fit
        raise ValueError(f"dataset {dataset_id} is corrupt or truncated: {error}") from None
    if at != spec.total_steps:
        raise ValueError(
            f"dataset {dataset_id} holds {at} steps, its metadata says {spec.total_steps}"
        )
    return EpisodeArrays(
        dataset_id=dataset_id,
        env_id=spec.env_spec.id if spec.env_spec is not None else None,
        observation_space=spec.observation_space,
        action_space=spec.action_space,
        **columns,
    )


def _empty_columns(spec: Any) -> dict[str, np.ndarray]:
    """EpisodeArrays' arrays, sized from the dataset's spec, for a reader to fill."""
    episodes, steps = spec.total_episodes, spec.total_steps
    obs_space, action_space = spec.observation_space, spec.action_space
    return {
        "observations": np.empty((steps + episodes, *obs_space.shape), obs_space.dtype),
        "actions": np.empty((steps, *action_space.shape), action_space.dtype),
        "rewards": np.empty(steps, np.float64),  # as recorded
        "subgoal_index": np.zeros(steps + episodes, np.int64),
        "step_start": np.zeros(episodes + 1, np.int64),
        "seeds": np.full(episodes, -1, np.int64),
        "task_index": np.full(episodes, -1, np.int64),
    }


def _read_through_minari(dataset: Any, columns: dict[str, np.ndarray]) -> int:
    """Fill `columns` episode by episode through Minari's public API (any backend; the seeds
    from the episode metadata, as EpisodeData has none); returns the steps read."""
    observations, actions, rewards = columns["observations"], columns["actions"], columns["rewards"]
    subgoal, step_start, seeds = columns["subgoal_index"], columns["step_start"], columns["seeds"]
    at = 0
    for i, episode in enumerate(dataset.iterate_episodes()):
        n = len(episode.actions)
        if at + n > len(actions) or len(episode.observations) != n + 1:
            raise ValueError(f"episode {i} does not match the recorded step counts")
        observations[at + i : at + i + n + 1] = episode.observations
        actions[at : at + n] = episode.actions
        rewards[at : at + n] = episode.rewards
        infos = episode.infos or {}
        if "subgoal_index" in infos:
            subgoal[at + i : at + i + n + 1] = infos["subgoal_index"]
        if "task_index" in infos:
            columns["task_index"][i] = infos["task_index"][0]
        at += n
        step_start[i + 1] = at
    for i, metadata in enumerate(dataset.storage.get_episode_metadata(dataset.episode_indices)):
        seeds[i] = metadata.get("seed", -1)
    return at


def _read_hdf5_directly(dataset: Any, columns: dict[str, np.ndarray]) -> int:
    """Fill `columns` straight from Minari's hdf5 file; returns the steps read.

    Why: speed. This is the one place that knows Minari's file layout (a group
    `episode_{i}` per episode holding observations, actions, rewards, infos/<key> and a
    `seed` attribute); everything else reads through Minari's public API. It reads only the
    arrays EpisodeArrays keeps, with h5py's low-level calls, into place. Measured on 10,000
    PinPad-v0 episodes (313,545 steps; 2-core machine; CPU seconds): this reader 7.4-8.5 s,
    the public API (`_read_through_minari`, which decodes every column of every episode)
    34-41 s, 4.4-5.0x slower (`python -m benchmarks.collect` prints the ratio); with h5py's
    high-level objects this reader took 18-21 s. A test checks that both readers give the
    same arrays. The info keys are those of episode 0 (collect() gives every episode the
    same keys)."""
    import h5py
    from h5py import h5a, h5d, h5g, h5s

    observations, actions, rewards = columns["observations"], columns["actions"], columns["rewards"]
    subgoal, step_start, seeds = columns["subgoal_index"], columns["step_start"], columns["seeds"]

    def read_into(group: Any, name: bytes, out: np.ndarray, i: int) -> None:
        stored = h5d.open(group, name)
        if stored.shape != out.shape:
            raise ValueError(f"episode {i} does not match the recorded step counts")
        stored.read(h5s.ALL, h5s.ALL, out)  # converts to out's dtype where they differ

    at = 0
    with h5py.File(Path(dataset.spec.data_path) / "main_data.hdf5", "r") as file:
        first = file["episode_0"]
        info_keys = set(first["infos"]) if "infos" in first else set()
        for i in range(len(seeds)):
            group = h5g.open(file.id, f"episode_{i}".encode())
            n = h5d.open(group, b"actions").shape[0]
            if at + n > len(actions):
                raise ValueError(f"episode {i} does not match the recorded step counts")
            read_into(group, b"actions", actions[at : at + n], i)
            read_into(group, b"observations", observations[at + i : at + i + n + 1], i)
            read_into(group, b"rewards", rewards[at : at + n], i)
            if "subgoal_index" in info_keys:
                read_into(group, b"infos/subgoal_index", subgoal[at + i : at + i + n + 1], i)
            if "task_index" in info_keys:
                task = np.empty(n + 1, np.int64)
                read_into(group, b"infos/task_index", task, i)
                columns["task_index"][i] = task[0]
            if h5a.exists(group, b"seed"):
                seed = h5a.open(group, b"seed")
                value = np.empty(seed.shape, np.int64)
                seed.read(value)
                seeds[i] = value
            at += n
            step_start[i + 1] = at
    return at
