"""Padded torch batches from an expert dataset: the one input pipeline of all training code."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import fields

import numpy as np
import torch

from metacontroller_agents.transformer import ModelConfig
from metacontroller_envs.checks import check_count
from metacontroller_envs.data import EpisodeArrays, PaddedBatch, load_episodes


def resolve_device(device: str | torch.device) -> torch.device:
    """`"auto"` picks CUDA when available; anything else is passed to torch.device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def to_torch(batch: PaddedBatch, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Every array of the batch as a tensor on `device` (observations keep their dtype)."""
    device = resolve_device(device)
    return {
        f.name: torch.from_numpy(np.ascontiguousarray(getattr(batch, f.name))).to(device)
        for f in fields(batch)
    }


def check_dataset_fits(data: EpisodeArrays, dataset_id: str, config: ModelConfig) -> None:
    """A ValueError unless the model reads the dataset's observations and holds its
    longest episode."""
    shape = tuple(data.observations.shape[1:])
    if shape != config.obs_shape:
        raise ValueError(
            f"dataset {dataset_id} holds observations of shape {shape}; the model reads "
            f"{config.obs_shape}"
        )
    longest = int(data.lengths.max())
    if longest + 1 > config.max_len:
        raise ValueError(
            f"dataset {dataset_id} has episodes of {longest} steps; the model holds at most "
            f"{config.max_len - 1}"
        )


def iterate_batches(
    data: EpisodeArrays | str,
    batch_size: int,
    device: str | torch.device = "cpu",
    seed: int = 0,
    shuffle: bool = True,
    drop_last: bool = False,
) -> Iterator[dict[str, torch.Tensor]]:
    """One pass over the episodes in padded batches; the order depends only on `seed`."""
    if isinstance(data, str):
        data = load_episodes(data)
    check_count("batch_size", batch_size)
    order = np.arange(data.num_episodes)
    if shuffle:
        np.random.default_rng(seed).shuffle(order)
    stop = len(order) - len(order) % batch_size if drop_last else len(order)
    for start in range(0, stop, batch_size):
        yield to_torch(data.padded(order[start : start + batch_size]), device)
