"""`mcenv collect`: expert episodes of any registered env into a Minari dataset (hdf5).

Episode k is the first episode after `reset(seed=seed + k)`, the seed Minari records with
it, so any episode can be replayed from the dataset alone. PinPad uses the batched vector
env and expert. The dataset is written through Minari's public API
(`minari.create_dataset_from_buffers`) into a hidden staging directory beside its final
place and renamed into place when complete, so an interrupted run leaves no half dataset
and never touches a previous dataset of the same id.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

import metacontroller_envs
from metacontroller_envs import registry
from metacontroller_envs.checks import check_count, check_env_id, check_epsilon
from metacontroller_envs.data.episodes import FORMAT_VERSION
from metacontroller_envs.experts import make_expert

#: Vector envs used to collect PinPad episodes in parallel.
PINPAD_BATCH = 256
#: Episodes that measure the reference scores: at most this many, and no more than the
#: dataset holds, so a small dataset stays cheap to collect...
REFERENCE_EPISODES = 100
#: ...and no more once the random policy has played this many steps (long BabyAI levels).
REFERENCE_STEPS = 20_000
#: Episodes handed to Minari at a time: the dataset is written as it is played, never held
#: whole in memory.
WRITE_CHUNK = 1000


def default_dataset_id(
    env_id: str, epsilon: float = 0.0, env_kwargs: dict[str, Any] | None = None
) -> str:
    """`pinpad/PinPad-v0/expert-v0`, `babyai/SubgoalBabyAI-Pretrain-v0/expert-eps0p1-v0`,
    `pinpad/PinPad-v0/expert-task_in_obs_True-v0`."""
    check_env_id(env_id, env_kwargs)
    family = registry.family(env_id)
    name = "expert" if epsilon == 0 else f"expert-eps{epsilon:g}"
    for key, value in sorted((env_kwargs or {}).items()):
        name += f"-{key}_{value}"
    name = re.sub(r"[^-\w]", "p", name)  # Minari ids allow letters, digits, _ and -
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


class _Trace:
    """One episode as it is played: Minari's columns, observations and infos from reset on."""

    def __init__(self, seed: int, obs: np.ndarray, info: dict[str, Any]) -> None:
        self.seed = seed
        self.observations, self.infos = [obs], [info]
        self.actions: list[int] = []
        self.rewards: list[float] = []
        self.terminations: list[bool] = []
        self.truncations: list[bool] = []

    def add(self, obs: np.ndarray, action: int, reward: float, terminated: bool,
            truncated: bool, info: dict[str, Any]) -> None:  # fmt: skip
        self.observations.append(obs)
        self.actions.append(int(action))
        self.rewards.append(float(reward))
        self.terminations.append(bool(terminated))
        self.truncations.append(bool(truncated))
        self.infos.append(info)

    def episode(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "observations": np.stack(self.observations),
            "actions": np.asarray(self.actions, dtype=np.int64),
            "rewards": np.asarray(self.rewards, dtype=np.float64),
            "terminations": np.asarray(self.terminations, dtype=bool),
            "truncations": np.asarray(self.truncations, dtype=bool),
            "infos": _info_arrays(self.infos),
        }


def _single_env_episodes(
    env_id: str, episodes: int, epsilon: float, seed: int, env_kwargs: dict[str, Any]
) -> Iterator[dict]:
    env = gym.make(env_id, **env_kwargs)
    expert = make_expert(env, epsilon=epsilon, seed=seed)
    for k in range(episodes):
        trace = _Trace(seed + k, *env.reset(seed=seed + k))
        done = False
        while not done:
            action = expert.act()
            obs, reward, terminated, truncated, info = env.step(action)
            trace.add(obs, action, reward, terminated, truncated, info)
            done = terminated or truncated
        yield trace.episode()


def _pinpad_episodes(
    env_id: str, episodes: int, epsilon: float, seed: int, env_kwargs: dict[str, Any]
) -> Iterator[dict]:
    """Episodes in seed order from a vector env whose sub-envs each play one seed at a time."""
    n = min(PINPAD_BATCH, episodes)
    envs = gym.make_vec(
        env_id,
        num_envs=n,
        vectorization_mode="vector_entry_point",
        autoreset_mode=AutoresetMode.DISABLED,
        **env_kwargs,
    )
    expert = make_expert(envs, epsilon=epsilon, seed=seed)
    obs, infos = envs.reset(seed=seed)  # sub-env i plays episode i: seed + i
    keys = [key for key in infos if not key.startswith("_")]

    def info_row(infos: dict, i: int) -> dict[str, Any]:
        return {key: infos[key][i] for key in keys}  # task: padded with -1 to task_slots

    playing: list[_Trace | None] = [_Trace(seed + i, obs[i], info_row(infos, i)) for i in range(n)]
    finished: dict[int, dict] = {}  # episodes done but not yet yielded, by number
    started, emitted = n, 0
    while emitted < episodes:
        actions = expert.act()
        obs, rewards, terms, truncs, infos = envs.step(actions)
        seeds: list[int | None] = [None] * n
        for i, trace in enumerate(playing):
            if trace is None:
                continue
            trace.add(obs[i], actions[i], rewards[i], terms[i], truncs[i], info_row(infos, i))
            if terms[i] or truncs[i]:
                finished[trace.seed - seed] = trace.episode()
                playing[i] = None
                if started < episodes:
                    seeds[i] = seed + started
                    started += 1
        restart = np.array([s is not None for s in seeds])
        if restart.any():
            obs, infos = envs.reset(seed=seeds, options={"reset_mask": restart})
            for i in np.flatnonzero(restart):
                playing[i] = _Trace(seeds[i], obs[i], info_row(infos, i))
        while emitted in finished:
            yield finished.pop(emitted)
            emitted += 1
    envs.close()


def generate(
    env_id: str,
    episodes: int,
    epsilon: float = 0.0,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
) -> Iterator[dict]:
    """Expert episodes in seed order, each a dict of numpy arrays (Minari's layout)."""
    check_env_id(env_id, env_kwargs)
    check_count("episodes", episodes)
    check_epsilon(epsilon)
    env_kwargs = dict(env_kwargs or {})
    if gym.spec(env_id).vector_entry_point is not None:  # a native vector env: batched
        return _pinpad_episodes(env_id, episodes, epsilon, seed, env_kwargs)
    return _single_env_episodes(env_id, episodes, epsilon, seed, env_kwargs)


def reference_scores(
    env_id: str,
    episodes: int,
    first_seed: int,
    env_kwargs: dict[str, Any] | None = None,
    max_steps: int = REFERENCE_STEPS,
) -> tuple[float, float, int]:
    """(ref_min_score, ref_max_score, n): mean returns of a uniformly random policy (the
    action space sampled, seeded with `first_seed`) and of the expert at epsilon 0, both on
    the n episodes after `reset(seed=first_seed + k)`. n is `episodes`, or fewer once the
    random policy has played `max_steps` steps (at least one): a random episode runs to
    the env's limit, up to 2,304 steps in SubgoalBabyAI-GoToSeq-v0."""
    check_count("episodes", episodes)
    env_kwargs = dict(env_kwargs or {})
    env = gym.make(env_id, **env_kwargs)
    env.action_space.seed(first_seed)
    random_returns, steps = [], 0
    while len(random_returns) < episodes and (not random_returns or steps < max_steps):
        env.reset(seed=first_seed + len(random_returns))
        total, done = 0.0, False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            steps += 1
            done = terminated or truncated
        random_returns.append(total)
    env.close()
    n = len(random_returns)
    expert = generate(env_id, n, 0.0, first_seed, env_kwargs)
    expert_returns = [episode["rewards"].sum() for episode in expert]
    return float(np.mean(random_returns)), float(np.mean(expert_returns)), n


def dataset_path(dataset_id: str) -> Path:
    """Where Minari keeps `dataset_id` (under MINARI_DATASETS_PATH, else ~/.minari/datasets)."""
    from minari.storage import get_dataset_path

    return Path(get_dataset_path(dataset_id))


@contextmanager
def minari_root(root: str | Path) -> Iterator[None]:
    """Point Minari at another datasets root for a while: its public API writes and finds
    datasets under MINARI_DATASETS_PATH and takes no path of its own. Not thread-safe (it
    sets an environment variable)."""
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if before is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def collect(
    env_id: str,
    episodes: int,
    epsilon: float = 0.0,
    seed: int = 0,
    dataset_id: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    env_kwargs: dict[str, Any] | None = None,
) -> str:
    """Write `episodes` expert episodes of `env_id` (made with `env_kwargs`) as a Minari
    dataset; returns its id.

    Episode k is played after `reset(seed=seed + k)`. The dataset's reference scores
    (`ref_min_score`: a uniformly random policy, `ref_max_score`: the expert at epsilon 0;
    see `reference_scores`) are measured on at most min(REFERENCE_EPISODES, episodes)
    episodes from the seeds right after the dataset's own (seed + episodes, ...), which
    none of its episodes uses."""
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_dataset import parse_dataset_id
    from minari.namespace import create_namespace, list_local_namespaces
    from tqdm import tqdm

    episodes_iter = generate(env_id, episodes, epsilon, seed, env_kwargs)  # checks arguments
    dataset_id = dataset_id or default_dataset_id(env_id, epsilon, env_kwargs)
    namespace, _, _ = parse_dataset_id(dataset_id)
    final = dataset_path(dataset_id)
    if final.exists() and not overwrite:
        raise ValueError(
            f"dataset {dataset_id} already exists at {final}: pass overwrite=True "
            "(--overwrite) to replace it, or choose another --dataset-id"
        )
    if namespace is not None and namespace not in list_local_namespaces():
        create_namespace(namespace)
    try:
        env = gym.make(env_id, **(env_kwargs or {}))
    except TypeError as error:
        raise ValueError(f"bad env_kwargs for {env_id}: {error}") from None
    reference_seed = seed + episodes  # the seeds after the dataset's own
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = final.parent / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"  # a datasets root
    try:
        ref_min, ref_max, reference_episodes = reference_scores(
            env_id, min(REFERENCE_EPISODES, episodes), reference_seed, env_kwargs
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
        chunks = _chunks(buffers, WRITE_CHUNK)
        with minari_root(staging), warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"`(code_permalink|author_email)` is set to None")
            dataset = minari.create_dataset_from_buffers(
                dataset_id,
                next(chunks),
                env=env,
                eval_env=env.spec,
                algorithm_name=f"{type(make_expert(env)).__name__} (epsilon={epsilon})",
                author="metacontroller-envs",
                ref_min_score=ref_min,
                ref_max_score=ref_max,
                num_episodes_average_score=reference_episodes,
                description=(
                    f"{episodes} expert episodes of {env_id}; episode k was played after "
                    f"reset(seed={seed} + k); epsilon={epsilon}. Reference scores: means over "
                    f"{reference_episodes} episodes from seeds {reference_seed} on."
                ),
                data_format="hdf5",
                jpeg_encoding=False,  # exact observations, images included
            )
            for chunk in chunks:
                dataset.update_dataset_from_buffer(chunk)
            dataset.storage.update_metadata(
                {
                    "metacontroller_envs": {
                        "format_version": FORMAT_VERSION,
                        "package_version": metacontroller_envs.__version__,
                        "env_id": env_id,
                        "episodes": episodes,
                        "epsilon": epsilon,
                        "seed": seed,
                        "env_kwargs": env_kwargs or {},
                        "reference_seed": reference_seed,
                        "reference_episodes": reference_episodes,
                    }
                }
            )
        written = staging / dataset_id
        if final.exists():  # overwrite: swap, then delete the old one
            old = final.parent / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(written, final)
            shutil.rmtree(old)
        else:
            os.rename(written, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
        env.close()
    return dataset_id
