"""Is the base model linearly steerable to a pair, whatever came before? (The paper's Fig. 4.)

    python -m experiments.subgoal_controllers --base BC.pt --dataset pinpad/PinPad-v0/expert-v0 \
        [--layers 0 1 2 3 4] [--envs PinPad-v0 PinPad-Ladder2-v0 ...] [--steps 300] \
        [--episodes 256]

Before any metacontroller: one low-rank linear controller per pair, e <- e + A_g (B_g^T e)
at one layer, trained with the ground-truth pair labels of the expert data (action NLL,
base model frozen), then switched in by the ground truth: on the pretraining tasks
(PinPad-v0, task hidden) and on the held-out post-training task, whose pair-to-pair
transitions the data never shows. High post-training success says the base model holds
a "go to pair g" that composes; low success says no metacontroller on that layer can
find one, since its decoder emits controllers of this same form.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import gymnasium as gym
import numpy as np
import torch
from torch import nn

import metacontroller_envs  # noqa: F401
from experiments.steering import pinpad_episode_envs, play_controlled
from metacontroller_agents.checkpoint import load_model
from metacontroller_agents.data import check_dataset_fits, resolve_device, to_torch
from metacontroller_agents.metacontroller import MetaController
from metacontroller_agents.runs import dataset_env_spec
from metacontroller_agents.transformer import CausalTransformer
from metacontroller_envs.checks import check_count
from metacontroller_envs.data import EpisodeArrays, load_episodes
from metacontroller_envs.pinpad import NUM_PAIRS


class PairControllers(nn.Module):
    """One controller U_g = A_g B_g^T per pair g, applied as e + A_g (B_g^T e)."""

    def __init__(self, width: int, rank: int = 16) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.zeros(NUM_PAIRS, width, rank))  # U = 0 at the start
        self.b = nn.Parameter(torch.randn(NUM_PAIRS, width, rank) / width**0.5)

    def forward(self, stream: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
        """stream (B, T, width), pair (B, T) in 0..3 -> the controlled stream."""
        low = torch.einsum("btw,gwr->btgr", stream, self.b)
        every = torch.einsum("btgr,gwr->btgw", low, self.a)  # (B, T, pairs, width)
        index = pair.long()[..., None, None].expand(-1, -1, 1, stream.shape[-1])
        return stream + every.gather(2, index).squeeze(2)


def pair_labels(tasks: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The pair (0..3) each step of a padded batch pursues: its task's pair at subgoal_index.
    tasks (k, colours) is the env's task list, which the batch's task_index points into."""
    colours = tasks[batch["task_index"]]
    index = (2 * batch["subgoal_index"].long()).clamp(max=colours.shape[1] - 1)
    return colours.gather(1, index) // 2


def task_list(data: EpisodeArrays) -> np.ndarray:
    """The colours of each task of the dataset's env, in task_index order."""
    if (data.task_index < 0).any():
        raise SystemExit(f"dataset {data.dataset_id} has episodes without a task_index")
    env = gym.make(data.env_id)
    try:
        return np.asarray(env.get_wrapper_attr("config").task_table(), np.int64)
    finally:
        env.close()


class PairControl:
    """`StreamControl` for `play_controlled`: the controller of the pair each env needs next."""

    def __init__(
        self, controllers: PairControllers | PairCodes, layer: int, envs: gym.vector.VectorEnv
    ) -> None:
        self.controllers, self.layer = controllers, layer
        self.next_colour = np.zeros(envs.num_envs, np.int64)
        self.z = torch.zeros(envs.num_envs, NUM_PAIRS)

    def observe(self, infos: dict) -> None:
        """play_controlled's infos hook: the colour each env needs next."""
        self.next_colour = infos["next_colour"]

    def intervene(self, stream: torch.Tensor) -> torch.Tensor:
        colour = np.maximum(self.next_colour, 0)  # -1 once the task is done
        pair = torch.as_tensor(colour // 2, device=stream.device)
        self.z = nn.functional.one_hot(pair, NUM_PAIRS).float()
        return self.controllers(stream, pair[:, None])


class PairCodes(nn.Module):
    """One code z_g per pair through a frozen MetaController's decoder, applied as
    e + U(z_g) e: the controllers of `PairControllers`' form that its latent space holds."""

    def __init__(self, metacontroller: MetaController) -> None:
        super().__init__()
        self.metacontroller = metacontroller.requires_grad_(False)
        self.codes = nn.Parameter(torch.zeros(NUM_PAIRS, metacontroller.config.latent_dim))

    def forward(self, stream: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
        """stream (B, T, width), pair (B, T) in 0..3 -> the controlled stream."""
        return self.metacontroller.control(stream, self.codes[pair.long()].to(stream.dtype))


def fit_to_pairs(
    base: CausalTransformer, controllers: PairControllers | PairCodes, data: EpisodeArrays,
    layer: int, steps: int, batch_size: int, lr: float, seed: int, device: torch.device,
) -> float:  # fmt: skip
    """Fits `controllers` (in place) to the expert's actions given the true pair; the last NLL."""
    check_dataset_fits(data, data.dataset_id, base.config)
    trainable = [p for p in controllers.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.03)
    rng = np.random.default_rng(seed)
    tasks = torch.as_tensor(task_list(data), device=device)
    nll = float("nan")
    for _ in range(steps):
        batch = to_torch(data.padded(rng.choice(data.num_episodes, batch_size, False)), device)
        pair = pair_labels(tasks, batch)
        out = base(batch["observations"][:, :-1], base.previous_actions(batch["actions"]),
                   layer=layer, intervene=partial(controllers, pair=pair))  # fmt: skip
        weights = batch["mask"].float()
        step_nll = -base.action_distribution(out.action).log_prob(batch["actions"])
        loss = (step_nll * weights).sum() / weights.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        nll = loss.item()
    controllers.eval()
    return nll


def train_controllers(
    base: CausalTransformer, data: EpisodeArrays, layer: int, steps: int, batch_size: int,
    seed: int, device: torch.device,
) -> tuple[PairControllers, float]:  # fmt: skip
    """Controllers fitted to the expert's actions given the true pair; their last NLL."""
    torch.manual_seed(seed)
    controllers = PairControllers(base.config.width).to(device)
    nll = fit_to_pairs(base, controllers, data, layer, steps, batch_size, 1e-3, seed, device)
    return controllers, nll


def success_rate(
    base: CausalTransformer, controllers: PairControllers | PairCodes | None, layer: int,
    env_id: str, episodes: int, seed: int, device: torch.device,
) -> tuple[float, float]:  # fmt: skip
    """Success and mean colours visited in order, with the true pair's controller (or none)."""
    envs = pinpad_episode_envs(env_id, episodes)
    control = PairControl(controllers or PairControllers(base.config.width).to(device), layer,
                          envs)  # fmt: skip
    generator = torch.Generator(device=device).manual_seed(seed)
    played = play_controlled(base, control, envs, [seed + i for i in range(episodes)], device,
                             generator)  # fmt: skip
    return float(played["success"].mean()), float((played["colours"] >= 0).sum(1).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="a base model from mcenv train bc")
    parser.add_argument("--dataset", required=True, help="PinPad-v0 expert data")
    parser.add_argument("--layers", type=int, nargs="+", default=None,
                        help="layers to control (default: every one, 0..depth)")  # fmt: skip
    parser.add_argument("--envs", nargs="+", default=["PinPad-v0", "PinPad-Posttrain-v0"],
                        help="PinPad env ids to play (e.g. the ladder's rungs)")  # fmt: skip
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    for name in ("steps", "batch_size", "episodes"):
        check_count(name, getattr(args, name))
    device = resolve_device(args.device)
    base, _ = load_model(args.base, device)
    base.requires_grad_(False).eval()
    depth = base.config.depth
    layers = args.layers if args.layers is not None else list(range(depth + 1))
    bad = [layer for layer in layers if not 0 <= layer <= depth]
    if bad:
        raise SystemExit(f"--layers {bad} out of range: this base model has layers 0..{depth}")
    spec = dataset_env_spec(args.dataset)
    data = load_episodes(args.dataset, spec)
    print(f"base {args.base} (depth {depth}), {args.steps} steps of {args.batch_size} episodes "
          f"per layer, {args.episodes} evaluation episodes per env")  # fmt: skip
    print("| layer | NLL | " + " | ".join(f"{env} success (colours)" for env in args.envs) + " |")
    print("|---|---|" + "---|" * len(args.envs))
    eval_seed = args.seed + 10**7
    rows = [("none", None, float("nan"), 0)]
    for layer in layers:
        clock = time.perf_counter()
        controllers, nll = train_controllers(base, data, layer, args.steps, args.batch_size,
                                             args.seed, device)  # fmt: skip
        rows.append((str(layer), controllers, nll, layer))
        print(f"  (layer {layer} trained in {time.perf_counter() - clock:.0f} s)", flush=True)
    for name, controllers, nll, layer in rows:
        cells = [success_rate(base, controllers, layer, env, args.episodes, eval_seed, device)
                 for env in args.envs]  # fmt: skip
        print(f"| {name} | {nll:.3f} | " + " | ".join(f"{s:.3f} ({c:.2f})" for s, c in cells)
              + " |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
