"""Checkpoints: one file per run, written atomically, carrying their configs and a version."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from metacontroller_agents.pretrained import resolve_checkpoint
from metacontroller_agents.transformer import CausalTransformer, ModelConfig
from metacontroller_envs.files import write_atomically

FORMAT = "metacontroller-envs checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, kind: str, **content: Any) -> Path:
    """Write {format, version, kind, **content} to `path` atomically."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, **content}
    return write_atomically(path, lambda temp: torch.save(payload, temp))


def read_weights_only(path: str | Path, device: str | torch.device = "cpu") -> Any:
    """A torch file read with the weights-only loader (no pickled code runs), or a
    ValueError that names the file: missing, or corrupt / not a torch file."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many types for a damaged file
        raise ValueError(f"checkpoint {path} is corrupt or not a torch file: {error}") from None


def load_checkpoint(
    path: str | Path, kind: str | tuple[str, ...], device: str | torch.device = "cpu"
) -> dict:
    """The checkpoint's content, or a ValueError that names the file and what is wrong.
    `kind`: the kind of run it must hold, or a tuple of the kinds accepted. `path` may name
    a shipped agent as `pretrained:NAME` (metacontroller_agents.pretrained)."""
    path = resolve_checkpoint(path)
    payload = read_weights_only(path, device)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a metacontroller-envs checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path} has format version {payload.get('format_version')}; this "
            f"version of the package reads version {FORMAT_VERSION}"
        )
    kinds = (kind,) if isinstance(kind, str) else kind
    if payload.get("kind") not in kinds:
        wanted = " or ".join(repr(k) for k in kinds)
        raise ValueError(f"checkpoint {path} holds a {payload.get('kind')!r} run, not {wanted}")
    return payload


def model_state(model: CausalTransformer) -> dict[str, Any]:
    return {"model_config": dataclasses.asdict(model.config), "model": model.state_dict()}


def load_model(
    path: str | Path, device: str | torch.device = "cpu", kind: str = "bc"
) -> tuple[CausalTransformer, dict]:
    """The base model stored in a checkpoint, in eval mode on `device`, and the checkpoint."""
    payload = load_checkpoint(path, kind, device)
    return model_from_checkpoint(payload, path, device), payload


def model_from_checkpoint(
    payload: dict, path: str | Path, device: str | torch.device = "cpu"
) -> CausalTransformer:
    """The base model of an already loaded checkpoint (read from `path`), in eval mode."""
    try:
        model = CausalTransformer(ModelConfig(**payload["model_config"]))
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise ValueError(f"checkpoint {path} does not hold a usable model: {error}") from None
    return model.to(device).eval()
