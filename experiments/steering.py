"""Steering with collected codes (the paper's App. B.3.2): hold a code that carried free
play through a pair, and count how often new layouts then visit that pair first.

    python -m experiments.steering --checkpoint checkpoints/discover.pt --trials 256

Also `play_controlled`, the PinPad rollout under any stream control, which the other
experiments (oracle codes, subgoal controllers) use.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import AutoresetMode

import metacontroller_envs
from metacontroller_agents.analysis import load_metacontroller
from metacontroller_agents.data import resolve_device
from metacontroller_agents.metacontroller import Controller, MetaController
from metacontroller_agents.transformer import CausalTransformer
from metacontroller_envs.checks import check_count
from metacontroller_envs.evaluate import wilson_interval
from metacontroller_envs.pinpad import NUM_PAIRS
from metacontroller_envs.registry import family


class StreamControl(Protocol):
    """What rewrites the base model's stream in `play_controlled`: the layer it acts at,
    the `intervene` hook of `CausalTransformer.step`, and the codes in force (N, n_z). A
    control with an `observe(infos)` method also sees the env's infos after each reset and
    step (e.g. the colour each env needs next)."""

    layer: int
    z: torch.Tensor

    def intervene(self, stream: torch.Tensor) -> torch.Tensor: ...


def _observe(control: StreamControl, infos: dict) -> None:
    observe = getattr(control, "observe", None)
    if observe is not None:
        observe(infos)



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
    if spec.id not in metacontroller_envs.ENV_IDS or family(spec.id) != "pinpad":
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
    obs, infos = envs.reset(seed=seeds)
    _observe(control, infos)
    task = infos["task"]  # (N, slots): the colours to visit, in order
    slots = task.shape[1]
    cache = base.new_cache(n)
    previous = torch.full((n,), base.start_action, device=device)
    alive, success = np.ones(n, bool), np.zeros(n, bool)
    # without autoreset an ended env still steps (and may visit more colours): its
    # progress is read while it is alive only
    progress = infos["colours_visited"].copy()
    visit_codes = np.zeros((n, slots, control.z.shape[1]), np.float32)
    steps = max_steps or base.config.max_len - 1
    try:
        for _ in range(steps):
            before = progress
            out = base.step(torch.as_tensor(obs, device=device), previous, cache,
                            layer=control.layer,
                            intervene=control.intervene)  # fmt: skip
            probs = torch.softmax(out.action[:, 0].float(), -1)
            action = torch.multinomial(probs, 1, generator=generator)[:, 0]
            obs, reward, terminated, truncated, infos = envs.step(action.cpu().numpy())
            _observe(control, infos)
            now = infos["colours_visited"]
            visited = alive & (now > before)
            rows = np.flatnonzero(visited)
            visit_codes[rows, before[rows]] = control.z[rows].float().cpu().numpy()
            success |= alive & (reward > 0)
            progress = np.where(alive, now, before)
            alive &= ~(terminated | truncated)
            previous = action
            if not alive.any():
                break
        colours = np.where(np.arange(slots) < progress[:, None], task, -1)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="from mcenv train discover")
    parser.add_argument("--trials", type=int, default=256, help="trials per pair")
    parser.add_argument("--collect", type=int, default=1024, help="free-play episodes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    base, meta, payload = load_metacontroller(args.checkpoint, device)
    spec = EnvSpec.from_json(payload["env_spec"])
    report = steering_experiment(base, meta, spec, args.collect, args.trials, device, args.seed)
    print(report.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
