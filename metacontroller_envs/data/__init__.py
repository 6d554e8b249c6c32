"""Expert datasets: collection into Minari datasets, and loading them as flat numpy arrays."""

from metacontroller_envs.data.collection import collect, dataset_path, default_dataset_id, generate
from metacontroller_envs.data.episodes import (
    EpisodeArrays,
    PaddedBatch,
    load_episodes,
    open_dataset,
)

__all__ = [
    "EpisodeArrays",
    "PaddedBatch",
    "collect",
    "dataset_path",
    "default_dataset_id",
    "generate",
    "load_episodes",
    "open_dataset",
]
