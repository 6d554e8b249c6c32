"""What a trained MetaController discovered: switch statistics against the ground-truth
subgoals, the paper's Fig. A3 (beta over the colour-coded subgoal), and steering with
collected codes (App. B.3.2)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode

from agents.checkpoint import load_model, write_atomically
from agents.config import MetaControllerConfig
from agents.data import to_torch
from agents.metacontroller import (
    SWITCH_THRESHOLD,
    Controller,
    MetaController,
    controlled_forward,
)
from agents.transformer import CausalTransformer
from metacontroller_envs.checks import check_count
from metacontroller_envs.data import EpisodeArrays
from metacontroller_envs.evaluate import wilson_interval
from metacontroller_envs.pinpad import NUM_PAIRS


class StreamControl(Protocol):
    """What rewrites the base model's stream in `play_controlled`: the layer it acts at,
    the `intervene` hook of `CausalTransformer.step`, and the codes in force (N, n_z)."""

    layer: int
    z: torch.Tensor

    def intervene(self, stream: torch.Tensor) -> torch.Tensor: ...


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


# -- steering (App. B.3.2) ---------------------------------------------------------------


@dataclass(frozen=True)
class SteeringReport:
    codes: dict[int, int]
    """Codes collected per pair (see `pair_codes`)."""
    trials: dict[int, int]
    hits: dict[int, int]
    """Trials, each holding one collected code drawn at random, whose first two colour
    visits were that code's pair."""
    mean_hits: dict[int, int]
    """The same layouts holding the pair's mean collected code."""
    baseline_hits: dict[int, int]
    """The same layouts with codes sampled from the prior: how often that pair came first."""

    @property
    def hit_rate(self) -> float:
        return sum(self.hits.values()) / max(1, sum(self.trials.values()))

    @property
    def mean_code_rate(self) -> float:
        return sum(self.mean_hits.values()) / max(1, sum(self.trials.values()))

    @property
    def baseline_rate(self) -> float:
        return sum(self.baseline_hits.values()) / max(1, sum(self.trials.values()))

    def line(self) -> str:
        total, hits = sum(self.trials.values()), sum(self.hits.values())
        if not total:
            return ("steering: no code stayed in force over both visits of a pair in free "
                    "play, so there is no code to inject")  # fmt: skip
        low, high = wilson_interval(hits, total)
        per_pair = ", ".join(
            f"pair {p}: {self.hits[p]}/{self.trials[p]}" for p in sorted(self.trials)
        )
        return (
            f"steering: an injected code sends the agent to its pair in {self.hit_rate:.3f} "
            f"of {total} trials (95% CI [{low:.3f}, {high:.3f}]; {per_pair}); the pair's "
            f"mean code in {self.mean_code_rate:.3f}; with codes from the prior that pair "
            f"comes first in {self.baseline_rate:.3f}"
        )

    def to_dict(self) -> dict:
        rates = {"hit_rate": self.hit_rate, "mean_code_rate": self.mean_code_rate,
                 "baseline_rate": self.baseline_rate}  # fmt: skip
        return {**asdict(self), **rates}


def pinpad_episode_envs(env_id: str, n: int, **kwargs: object) -> gym.vector.VectorEnv:
    """n copies of a PinPad env that play one episode each (no autoreset), the vector env
    `play_controlled` steps."""
    return gym.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point",
                        autoreset_mode=AutoresetMode.DISABLED, **kwargs)  # fmt: skip


def _pinpad_free_play(spec: EnvSpec, n: int) -> gym.vector.VectorEnv:
    if not spec.id.startswith("PinPad-"):
        raise ValueError(f"steering is measured on PinPad envs, not {spec.id}")
    return pinpad_episode_envs(spec.id, n, **{**spec.kwargs, "free_play": True})


@torch.no_grad()
def play_with_codes(
    base: CausalTransformer,
    meta: MetaController,
    spec: EnvSpec,
    seeds: list[int],
    device: str | torch.device,
    generator: torch.Generator,
    codes: torch.Tensor | None = None,
    max_steps: int | None = None,
) -> dict[str, np.ndarray]:
    """Free-play episodes of the controlled base model. Codes come from the prior N(0, I) at
    each binarised switch, or are held fixed to `codes` (N, n_z). Returns play_controlled's
    record."""
    n = len(seeds)
    envs = _pinpad_free_play(spec, n)
    latent = meta.config.latent_dim

    def prior(e: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.randn(len(e), latent, generator=generator, device=device)

    control = Controller(meta, n, prior)
    if codes is not None:
        control.force(codes.to(device))
    return play_controlled(base, control, envs, seeds, device, generator, max_steps)


@torch.no_grad()
def play_controlled(
    base: CausalTransformer,
    control: StreamControl,
    envs: gym.vector.VectorEnv,
    seeds: list[int],
    device: str | torch.device,
    generator: torch.Generator,
    max_steps: int | None = None,
) -> dict[str, np.ndarray]:
    """One episode per env of a PinPad vector env without autoreset (closed after), the
    base model acting (sampled) under `control` (a MetaController's `Controller`, or any
    other `StreamControl`). Returns the colours visited in order until the episode ended
    (N, slots; -1 after the last), the code in force at each visit (N, slots, n_z) and
    success (N,)."""
    n = len(seeds)
    batch = envs.unwrapped.batch
    slots = batch.task.shape[1] - 1
    obs, _ = envs.reset(seed=seeds)
    cache = base.new_cache(n)
    previous = torch.full((n,), base.start_action, device=device)
    alive, success = np.ones(n, bool), np.zeros(n, bool)
    # without autoreset an ended env still steps (and may visit more colours): its
    # progress is read while it is alive only
    progress = batch.progress.copy()
    visit_codes = np.zeros((n, slots, control.z.shape[1]), np.float32)
    steps = max_steps or base.config.max_len - 1
    try:
        for _ in range(steps):
            before = batch.progress.copy()
            out = base.step(torch.as_tensor(obs, device=device), previous, cache,
                            layer=control.layer,
                            intervene=control.intervene)  # fmt: skip
            probs = torch.softmax(out.action[:, 0].float(), -1)
            action = torch.multinomial(probs, 1, generator=generator)[:, 0]
            obs, reward, terminated, truncated, _ = envs.step(action.cpu().numpy())
            visited = alive & (batch.progress > before)
            rows = np.flatnonzero(visited)
            visit_codes[rows, before[rows]] = control.z[rows].float().cpu().numpy()
            success |= alive & (reward > 0)
            progress = np.where(alive, batch.progress, progress)
            alive &= ~(terminated | truncated)
            previous = action
            if not alive.any():
                break
        colours = np.where(np.arange(slots) < progress[:, None], batch.task[:, :slots], -1)
    finally:
        envs.close()
    return {"colours": colours, "codes": visit_codes, "success": success}


def completed_pairs(colours: np.ndarray) -> np.ndarray:
    """(N, slots // 2): the pair (0..3) that visits 2k and 2k + 1 made, in order, or -1
    from the first two visits that make no pair."""
    n = colours.shape[1] // 2
    first, second = colours[:, 0 : 2 * n : 2], colours[:, 1 : 2 * n : 2]
    made = (first >= 0) & (first % 2 == 0) & (second == first + 1)
    return np.where(np.cumprod(made, axis=1).astype(bool), first // 2, -1)


def first_pair(colours: np.ndarray) -> np.ndarray:
    """The pair (0..3) an episode's first two visits make, or -1 if they make none."""
    return completed_pairs(colours)[:, 0]


def pair_codes(played: dict[str, np.ndarray]) -> dict[int, np.ndarray]:
    """Per pair p, the codes (K, n_z) with which free play (`play_with_codes`) made p its
    first two visits, kept only where one code was in force at both visits: a code drawn
    between them was chosen after the first colour and leads to the second alone."""
    codes = played["codes"]
    one_code = np.all(codes[:, 0] == codes[:, 1], axis=-1)
    pairs = np.where(one_code, first_pair(played["colours"]), -1)
    return {p: codes[pairs == p, 1] for p in range(NUM_PAIRS) if (pairs == p).any()}


def steering_experiment(
    base: CausalTransformer,
    meta: MetaController,
    spec: EnvSpec,
    collect_episodes: int = 1024,
    trials_per_pair: int = 256,
    device: str | torch.device = "cpu",
    seed: int = 0,
) -> SteeringReport:
    """1. Play with codes from the prior and collect, per pair, the codes that carried the
    agent through that pair as its first visits (`pair_codes`). 2. In new layouts, hold one
    collected code from the start and count the trials whose first two visits are that
    pair; then the same layouts with the pair's mean code, and with codes from the prior."""
    check_count("collect_episodes", collect_episodes)
    check_count("trials_per_pair", trials_per_pair)
    generator = torch.Generator(device=device).manual_seed(seed)
    played = play_with_codes(base, meta, spec, [seed + i for i in range(collect_episodes)],
                             device, generator)  # fmt: skip
    collected = pair_codes(played)
    trials, hits, mean_hits, baseline = {}, {}, {}, {}
    trial_seed = seed + 10**6
    rng = np.random.default_rng(seed)

    def hits_with(seeds: list[int], pair: int, codes: torch.Tensor | None) -> int:
        steered = play_with_codes(base, meta, spec, seeds, device, generator, codes)
        return int((first_pair(steered["colours"]) == pair).sum())

    for p, codes in collected.items():
        seeds = [trial_seed + i for i in range(trials_per_pair)]
        chosen = torch.as_tensor(codes[rng.integers(len(codes), size=trials_per_pair)])
        mean = torch.as_tensor(codes.mean(0)).expand(trials_per_pair, -1)
        trials[p] = trials_per_pair
        hits[p] = hits_with(seeds, p, chosen)
        mean_hits[p] = hits_with(seeds, p, mean)
        baseline[p] = hits_with(seeds, p, None)
        trial_seed += trials_per_pair
    return SteeringReport({p: len(c) for p, c in collected.items()}, trials, hits, mean_hits,
                          baseline)  # fmt: skip
