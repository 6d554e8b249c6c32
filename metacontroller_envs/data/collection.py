"""`mcenv collect`: expert episodes of any registered env into a Minari dataset (hdf5).

Episode k is the first episode after `reset(seed=seed + k)`, the seed Minari records with
it, so any episode can be replayed from the dataset alone. PinPad uses the batched vector
env and expert. The dataset is written in a hidden directory beside its final place and
renamed into place when complete, so an interrupted run leaves no half dataset.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

import metacontroller_envs
from metacontroller_envs.experts import make_expert

FORMAT_VERSION = 1
#: Vector envs used to collect PinPad episodes in parallel.
PINPAD_BATCH = 256


def check_env_id(env_id: str) -> None:
    if env_id not in metacontroller_envs.ENV_IDS:
        raise ValueError(
            f"unknown env id {env_id!r}: use one of {', '.join(metacontroller_envs.ENV_IDS)}"
        )


def default_dataset_id(env_id: str, epsilon: float = 0.0) -> str:
    """`pinpad/PinPad-v0/expert-v0`, `babyai/SubgoalBabyAI-Pretrain-v0/expert-eps0p1-v0`."""
    check_env_id(env_id)
    family = "babyai" if env_id.startswith("SubgoalBabyAI-") else "pinpad"
    name = "expert" if epsilon == 0 else f"expert-eps{epsilon:g}".replace(".", "p")
    return f"{family}/{env_id}/{name}-v0"


def _info_arrays(infos: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-step infos as arrays: numbers as they are, tuples padded with -1, text dropped."""
    out = {}
    for key, first in infos[0].items():
        if isinstance(first, str):
            continue
        if isinstance(first, tuple):
            width = max(1, *(len(info[key]) for info in infos))
            rows = np.full((len(infos), width), -1, dtype=np.int64)
            for row, info in zip(rows, infos, strict=True):
                row[: len(info[key])] = info[key]
            out[key] = rows
        else:
            out[key] = np.asarray([info[key] for info in infos])
    return out


def _episode(seed: int, obs: list, actions: list, rewards: list, terms: list, truncs: list,
             infos: list) -> dict[str, Any]:  # fmt: skip
    return {
        "seed": seed,
        "observations": np.stack(obs),
        "actions": np.asarray(actions, dtype=np.int64),
        "rewards": np.asarray(rewards, dtype=np.float64),
        "terminations": np.asarray(terms, dtype=bool),
        "truncations": np.asarray(truncs, dtype=bool),
        "infos": _info_arrays(infos),
    }


def _single_env_episodes(env_id: str, episodes: int, epsilon: float, seed: int) -> Iterator[dict]:
    env = gym.make(env_id)
    expert = make_expert(env, epsilon=epsilon, seed=seed)
    for k in range(episodes):
        obs, info = env.reset(seed=seed + k)
        trace: tuple[list, ...] = ([obs], [], [], [], [], [info])
        done = False
        while not done:
            action = expert.act()
            obs, reward, terminated, truncated, info = env.step(action)
            for column, value in zip(trace, (obs, action, reward, terminated, truncated, info),
                                     strict=True):  # fmt: skip
                column.append(value)
            done = terminated or truncated
        yield _episode(seed + k, *trace)


def _pinpad_episodes(env_id: str, episodes: int, epsilon: float, seed: int) -> Iterator[dict]:
    """Episodes in seed order from a vector env whose sub-envs each play one seed at a time."""
    n = min(PINPAD_BATCH, episodes)
    envs = gym.make_vec(
        env_id,
        num_envs=n,
        vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.DISABLED,
    )
    expert = make_expert(envs, epsilon=epsilon, seed=seed)
    obs, infos = envs.reset(seed=seed)
    keys = [key for key in infos if not key.startswith("_")]

    def info_row(infos: dict, i: int) -> dict[str, Any]:
        return {key: infos[key][i] for key in keys}  # task: padded with -1 to task_slots

    playing = list(range(n))  # the episode number each sub-env plays
    traces = {k: ([obs[k]], [], [], [], [], [info_row(infos, k)]) for k in range(n)}
    finished: dict[int, dict] = {}
    next_episode, emitted = n, 0
    while emitted < episodes:
        actions = expert.act()
        obs, rewards, terms, truncs, infos = envs.step(actions)
        restart = np.zeros(n, dtype=bool)
        seeds: list[int | None] = [None] * n
        for i, k in enumerate(playing):
            if k is None:
                continue
            trace = traces[k]
            row = (obs[i], int(actions[i]), float(rewards[i]), bool(terms[i]), bool(truncs[i]))
            for column, value in zip(trace, (*row, info_row(infos, i)), strict=True):
                column.append(value)
            if terms[i] or truncs[i]:
                finished[k] = _episode(seed + k, *traces.pop(k))
                playing[i] = None
                if next_episode < episodes:
                    playing[i], seeds[i] = next_episode, seed + next_episode
                    restart[i] = True
                    next_episode += 1
        if restart.any():
            obs, infos = envs.reset(seed=seeds, options={"reset_mask": restart})
            for i in np.flatnonzero(restart):
                traces[playing[i]] = ([obs[i]], [], [], [], [], [info_row(infos, i)])
        while emitted in finished:
            yield finished.pop(emitted)
            emitted += 1
    envs.close()


def generate(env_id: str, episodes: int, epsilon: float = 0.0, seed: int = 0) -> Iterator[dict]:
    """Expert episodes in seed order, each a dict of numpy arrays (Minari's layout)."""
    check_env_id(env_id)
    if isinstance(episodes, bool) or not isinstance(episodes, int) or episodes < 1:
        raise ValueError(f"episodes must be a positive integer, got {episodes!r}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
    if env_id.startswith("PinPad-"):
        return _pinpad_episodes(env_id, episodes, epsilon, seed)
    return _single_env_episodes(env_id, episodes, epsilon, seed)


def dataset_path(dataset_id: str) -> Path:
    from minari.storage import get_dataset_path

    return Path(get_dataset_path(dataset_id))


def collect(
    env_id: str,
    episodes: int,
    epsilon: float = 0.0,
    seed: int = 0,
    dataset_id: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> str:
    """Write `episodes` expert episodes of `env_id` as a Minari dataset; returns its id."""
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.dataset.minari_storage import MinariStorage
    from minari.namespace import create_namespace, list_local_namespaces
    from tqdm import tqdm

    episodes_iter = generate(env_id, episodes, epsilon, seed)  # checks the arguments
    dataset_id = dataset_id or default_dataset_id(env_id, epsilon)
    namespace, _, _ = parse_dataset_id(dataset_id)
    final = dataset_path(dataset_id)
    if final.exists() and not overwrite:
        raise ValueError(
            f"dataset {dataset_id} already exists at {final}: pass overwrite=True "
            "(--overwrite) to replace it, or choose another --dataset-id"
        )
    if namespace is not None and namespace not in list_local_namespaces():
        create_namespace(namespace)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    env = gym.make(env_id)
    try:
        staging.mkdir()
        storage = MinariStorage.new(
            staging / "data",
            observation_space=env.observation_space,
            action_space=env.action_space,
            env_spec=env.spec,
            data_format="hdf5",
            jpeg_encoding=False,  # exact observations, images included
        )
        storage.update_metadata(
            {
                "dataset_id": dataset_id,
                "algorithm_name": f"{type(make_expert(env)).__name__} (epsilon={epsilon})",
                "author": {"metacontroller-envs"},
                "description": (
                    f"{episodes} expert episodes of {env_id}; episode k was played after "
                    f"reset(seed={seed} + k); epsilon={epsilon}."
                ),
                "minari_version": _minari_version(),
                "metacontroller_envs": {
                    "format_version": FORMAT_VERSION,
                    "package_version": metacontroller_envs.__version__,
                    "env_id": env_id,
                    "episodes": episodes,
                    "epsilon": epsilon,
                    "seed": seed,
                },
            }
        )
        buffers = (
            EpisodeBuffer(
                id=k,
                seed=episode["seed"],
                observations=episode["observations"],
                actions=episode["actions"],
                rewards=episode["rewards"],
                terminations=episode["terminations"],
                truncations=episode["truncations"],
                infos=episode["infos"],
            )
            for k, episode in enumerate(
                tqdm(episodes_iter, total=episodes, desc=f"collect {env_id}", unit="episode",
                     disable=not progress)
            )
        )  # fmt: skip
        storage.update_episodes(buffers)
        if final.exists():  # overwrite: swap, then delete the old one
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(staging, final)
            shutil.rmtree(old)
        else:
            os.rename(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
        env.close()
    return dataset_id


def _minari_version() -> str:
    import minari

    return minari.__version__
