"""Expert datasets: collection into Minari datasets, and loading them as flat numpy arrays."""

from metacontroller_envs.data.collection import collect, default_dataset_id
from metacontroller_envs.data.episodes import EpisodeArrays, PaddedBatch, load_episodes

__all__ = ["EpisodeArrays", "PaddedBatch", "collect", "default_dataset_id", "load_episodes"]
