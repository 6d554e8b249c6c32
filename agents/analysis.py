"""What a trained MetaController discovered: switch statistics against the ground-truth
subgoals and the paper's Fig. A3 (beta over the colour-coded subgoal), either on expert
data (`infer_switches`: our MetaController's posterior over recorded episodes) or in closed
loop (`play_switches`: any LatentController playing the env on codes from the prior,
scored against the env's own `info["subgoal_index"]`). The steering experiment (App.
B.3.2) is experiments/steering.py."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from metacontroller_agents.checkpoint import load_model, write_atomically
from metacontroller_agents.data import to_torch
from metacontroller_agents.metacontroller import (
    SWITCH_THRESHOLD,
    MetaController,
    MetaControllerConfig,
    controlled_forward,
)
from metacontroller_agents.transformer import CausalTransformer
from metacontroller_envs.data import EpisodeArrays
from metacontroller_envs.wrappers import LatentActionVectorWrapper, LatentController
from metacontroller_envs.wrappers.latent import observe


def load_metacontroller(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[CausalTransformer, MetaController, dict]:
    """The base model and the MetaController of a discovery checkpoint, in eval mode."""
    base, payload = load_model(path, device, kind="discovery")
    try:
        meta = MetaController(MetaControllerConfig(**payload["controller_config"]))
        meta.load_state_dict(payload["controller"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise ValueError(
            f"checkpoint {path} does not hold a usable MetaController: {error}"
        ) from None
    return base, meta.to(device).eval(), payload


@torch.no_grad()
def infer_switches(
    base: CausalTransformer,
    meta: MetaController,
    data: EpisodeArrays,
    episodes: np.ndarray,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """beta (N, L), the mask of real steps and the ground-truth subgoal index, for the given
    episodes, with the posterior's mean codes (no sampling)."""
    if len(episodes) == 0:
        raise ValueError("no episodes given: pass the indices of at least one episode")
    betas, masks, subgoals = [], [], []
    longest = int(data.lengths[episodes].max())
    for start in range(0, len(episodes), batch_size):
        batch = to_torch(data.padded(episodes[start : start + batch_size]), device)
        _, meta_out = controlled_forward(base, meta, batch, sample=False)
        pad = longest - batch["mask"].shape[1]
        betas.append(np.pad(meta_out.beta.float().cpu().numpy(), ((0, 0), (0, pad))))
        masks.append(np.pad(batch["mask"].cpu().numpy(), ((0, 0), (0, pad))))
        subgoals.append(np.pad(batch["subgoal_index"].cpu().numpy(), ((0, 0), (0, pad))))
    return {
        "beta": np.concatenate(betas),
        "mask": np.concatenate(masks),
        "subgoal_index": np.concatenate(subgoals),
    }


class SwitchRecorder:
    """A LatentController that hands every call to `inner` and keeps, per row, beta_t and
    the env's subgoal index at each step the row acts on (so an episode's last observation,
    read but never acted on, is left out, as expert data leaves it out)."""

    def __init__(self, inner: LatentController) -> None:
        self.inner = inner
        self.steps: list[list[tuple[float, int]]] = [[] for _ in range(inner.num_envs)]
        self._seen: list[tuple[float, int] | None] = [None] * inner.num_envs

    @property
    def num_envs(self) -> int:
        return self.inner.num_envs

    @property
    def latent_dim(self) -> int:
        return self.inner.latent_dim

    @property
    def observation_size(self) -> int:
        return self.inner.observation_size

    def reset(self, rows: np.ndarray, seed: int | None = None) -> None:
        self.inner.reset(rows, seed=seed)
        for row in rows:
            self.steps[row], self._seen[row] = [], None

    def observe(
        self, observations: np.ndarray, rows: np.ndarray, infos: list[dict[str, Any]] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if infos is None or any("subgoal_index" not in info for info in infos):
            raise ValueError(
                "the env gives no info['subgoal_index']: the closed-loop switch analysis "
                "scores switches against the env's ground-truth subgoal (PinPad and "
                "SubgoalBabyAI envs give it)"
            )
        e, beta = observe(self.inner, observations, rows, infos)
        for k, row in enumerate(rows):
            self._seen[row] = (float(beta[k]), int(infos[k]["subgoal_index"]))
        return e, beta

    def act(self, rows: np.ndarray, z: np.ndarray | None) -> np.ndarray:
        for row in rows:
            self.steps[row].append(self._seen[row])
        return self.inner.act(rows, z)


def play_switches(
    controller: LatentController,
    env_id: str,
    episodes: int,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    threshold: float = SWITCH_THRESHOLD,
) -> dict[str, np.ndarray]:
    """beta (N, L), the mask of real steps and the env's subgoal index, for `episodes`
    episodes played in closed loop: `controller` drives `env_id` through the latent wrapper
    on codes from the prior N(0, I) (clipped to the wrapper's bound), a new one where its
    switch fires. Episode k is env seed `seed + k`; the codes come from `seed`. The arrays
    are infer_switches' (for switch_report and plot_switches), for any controller."""
    if episodes < 1:
        raise ValueError(f"episodes must be at least 1, got {episodes}")
    recorder = SwitchRecorder(controller)
    rows = controller.num_envs
    envs = [gym.make(env_id, **(env_kwargs or {})) for _ in range(rows)]
    vector = LatentActionVectorWrapper(envs, recorder, threshold)
    rng = np.random.default_rng(seed)
    played: list[list[tuple[float, int]]] = []
    try:
        for first in range(0, episodes, rows):
            vector.reset(seed=seed + first)
            ended = np.zeros(rows, dtype=bool)
            taken: list[list[tuple[float, int]]] = [[] for _ in range(rows)]
            while not ended.all():
                z = rng.standard_normal(vector.action_space.shape).astype(np.float32)
                _, _, terminated, truncated, _ = vector.step(z)
                for row in np.flatnonzero((terminated | truncated) & ~ended):
                    taken[row], ended[row] = list(recorder.steps[row]), True
            played.extend(taken[: episodes - first])
    finally:
        vector.close()
    longest = max(len(steps) for steps in played)
    beta = np.zeros((len(played), longest), np.float32)
    mask = np.zeros((len(played), longest), bool)
    subgoal_index = np.zeros((len(played), longest), np.int64)
    for i, steps in enumerate(played):
        if steps:
            beta[i, : len(steps)], subgoal_index[i, : len(steps)] = zip(*steps, strict=True)
        mask[i, : len(steps)] = True
    return {"beta": beta, "mask": mask, "subgoal_index": subgoal_index}


@dataclass(frozen=True)
class SwitchReport:
    episodes: int
    switches_per_episode: float
    """Binarised switches (beta > 0.5) per episode, not counting t = 0."""
    subgoal_changes_per_episode: float
    ambiguous_fraction: float
    """Fraction of beta values (t >= 1) inside (0.1, 0.9): 0 for perfectly binary gates."""
    precision: float
    recall: float
    f1: float

    def line(self) -> str:
        return (
            f"switch F1 {self.f1:.3f} (precision {self.precision:.3f}, recall "
            f"{self.recall:.3f}, +-1 step); {self.switches_per_episode:.2f} switches per "
            f"episode against {self.subgoal_changes_per_episode:.2f} subgoal changes; "
            f"{1 - self.ambiguous_fraction:.3f} of beta values outside (0.1, 0.9) "
            f"({self.episodes} episodes)"
        )


def switch_report(
    beta: np.ndarray, mask: np.ndarray, subgoal_index: np.ndarray, tolerance: int = 1
) -> SwitchReport:
    """Switches (beta_t > 0.5, t >= 1) scored against the steps where the ground-truth
    subgoal changes; a switch within `tolerance` steps of an unmatched change is a hit
    (each change matches at most one switch)."""
    beta, mask = np.asarray(beta, float), np.asarray(mask, bool)
    subgoal_index = np.asarray(subgoal_index)
    if not beta.shape == mask.shape == subgoal_index.shape or beta.ndim != 2:
        raise ValueError(
            f"beta, mask and subgoal_index must be (episodes, steps) arrays of one shape, got "
            f"{beta.shape}, {mask.shape}, {subgoal_index.shape}"
        )
    real = mask[:, 1:]
    switches = (beta[:, 1:] > SWITCH_THRESHOLD) & real
    changes = (subgoal_index[:, 1:] != subgoal_index[:, :-1]) & real
    hits = 0
    for predicted, true in zip(switches, changes, strict=True):
        unmatched = list(np.flatnonzero(predicted))
        for t in np.flatnonzero(true):
            near = [p for p in unmatched if abs(p - t) <= tolerance]
            if near:
                unmatched.remove(min(near, key=lambda p: abs(p - t)))
                hits += 1
    n_switches, n_changes = int(switches.sum()), int(changes.sum())
    precision = hits / n_switches if n_switches else float(n_changes == 0)
    recall = hits / n_changes if n_changes else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    values = beta[:, 1:][real]
    return SwitchReport(
        episodes=len(beta),
        switches_per_episode=n_switches / len(beta),
        subgoal_changes_per_episode=n_changes / len(beta),
        ambiguous_fraction=float(((values > 0.1) & (values < 0.9)).mean()) if values.size else 0.0,
        precision=precision,
        recall=recall,
        f1=f1,
    )


def plot_switches(
    beta: np.ndarray, mask: np.ndarray, subgoal_index: np.ndarray, path: str | Path,
    rows: int = 3,
) -> Path:  # fmt: skip
    """The paper's Fig. A3: beta over time above the colour-coded ground-truth subgoal, for
    the first `rows` episodes, saved as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(rows, len(beta))
    figure, axes = plt.subplots(rows, 1, figsize=(8, 1.8 * rows), squeeze=False)
    palette = plt.get_cmap("tab10")
    for row, axis in enumerate(axes[:, 0]):
        length = int(mask[row].sum())
        steps = np.arange(length)
        for t in steps:
            axis.axvspan(t - 0.5, t + 0.5, ymin=0, ymax=0.12,
                         color=palette(int(subgoal_index[row, t]) % 10), linewidth=0)  # fmt: skip
        axis.plot(steps, beta[row, :length], color="black", marker=".", linewidth=1)
        axis.axhline(SWITCH_THRESHOLD, color="grey", linewidth=0.5, linestyle=":")
        axis.set_ylim(-0.2, 1.05)
        axis.set_xlim(-0.5, max(length, 2) - 0.5)
        axis.set_ylabel("switch gate")
    axes[-1, 0].set_xlabel("time step (bar: ground-truth subgoal)")
    figure.tight_layout()
    path = write_atomically(path, lambda temp: figure.savefig(temp, dpi=100, format="png"))
    plt.close(figure)
    return path
