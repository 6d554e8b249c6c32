"""Rate-distortion sweep of discovery over the KL weight alpha (the paper's Fig. 7).

    python -m experiments.rate_distortion --base checkpoints/bc.pt \\
        --dataset pinpad/PinPad-v0/expert-v0 [--alphas 0 .05 .1 .17 .3 .5 1] [--steps 2000]

For each alpha: train a MetaController on the frozen base model (add --cotrain for the
co-trained ablation), then on the dataset's last N episodes (--scored) measure the
distortion (action NLL per step, codes sampled from the posterior), the rate (KL to the
prior per episode), the binarised switches per episode and their F1 against the
ground-truth subgoal changes.
Writes docs/results/rate-distortion/rate_distortion[-cotrain].json and .png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

from metacontroller_agents.analysis import infer_switches, load_metacontroller, switch_report
from metacontroller_agents.checkpoint import write_atomically
from metacontroller_agents.data import to_torch
from metacontroller_agents.discovery import DiscoveryConfig, train_discovery
from metacontroller_agents.metacontroller import controlled_forward
from metacontroller_envs.data import load_episodes
from metacontroller_envs.files import write_json_atomically

RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "rate-distortion"


@torch.no_grad()
def scored_rate_distortion(checkpoint: Path, dataset: str, episodes: np.ndarray) -> dict:
    base, meta, _ = load_metacontroller(checkpoint)
    data = load_episodes(dataset)
    nll = kl = steps = 0.0
    generator = torch.Generator().manual_seed(0)
    for start in range(0, len(episodes), 256):
        batch = to_torch(data.padded(episodes[start : start + 256]))
        out, meta_out = controlled_forward(base, meta, batch, generator)
        mask = batch["mask"].float()
        step_nll = -base.action_distribution(out.action).log_prob(batch["actions"])
        nll += float((step_nll * mask).sum())
        kl += float((meta_out.kl() * mask).sum())
        steps += float(mask.sum())
    report = switch_report(**infer_switches(base, meta, data, episodes))
    return {
        "distortion_nll_per_step": nll / steps,
        "rate_kl_per_episode": kl / len(episodes),
        "switches_per_episode": report.switches_per_episode,
        "subgoal_changes_per_episode": report.subgoal_changes_per_episode,
        "switch_f1": report.f1,
        "beta_binary_fraction": 1 - report.ambiguous_fraction,
    }


def plot(results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 4))
    x = [r["distortion_nll_per_step"] for r in results]
    y = [r["rate_kl_per_episode"] for r in results]
    axis.plot(x, y, marker="o", color="black")
    for r, xi, yi in zip(results, x, y, strict=True):
        mark = "*" if r["switch_f1"] >= 0.8 else ""
        axis.annotate(f"a={r['alpha']:g} F1={r['switch_f1']:.2f}{mark}", (xi, yi), fontsize=7,
                      textcoords="offset points", xytext=(4, 4))  # fmt: skip
    axis.set_xlabel("distortion: action NLL per step")
    axis.set_ylabel("rate: KL per episode (nats)")
    axis.set_title(title, fontsize=9)
    figure.tight_layout()
    write_atomically(path, lambda temp: figure.savefig(temp, dpi=120, format="png"))
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--alphas", type=float, nargs="+",
                        default=[0.0, 0.05, 0.1, 0.17, 0.3, 0.5, 1.0])  # fmt: skip
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--kl-warmup-steps", type=int, default=500)
    parser.add_argument("--scored", type=int, default=1000, help="last N episodes scored")
    parser.add_argument("--cotrain", action="store_true")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workdir", default=None, help="where checkpoints go (default: temp)")
    args = parser.parse_args()
    data = load_episodes(args.dataset)
    scored = np.arange(max(0, data.num_episodes - args.scored), data.num_episodes)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="rate-distortion-"))
    results = []
    for alpha in args.alphas:
        config = DiscoveryConfig(base=args.base, dataset=args.dataset, alpha=alpha,
                                 steps=args.steps, kl_warmup_steps=args.kl_warmup_steps,
                                 cotrain=args.cotrain, device=args.device)  # fmt: skip
        checkpoint = train_discovery(config, workdir / f"alpha-{alpha:g}.pt", overwrite=True)
        row = {"alpha": alpha, **scored_rate_distortion(checkpoint, args.dataset, scored)}
        results.append(row)
        print(json.dumps(row), flush=True)
    name = "rate_distortion-cotrain" if args.cotrain else "rate_distortion"
    RESULTS.mkdir(exist_ok=True)
    record = {"config": dataclasses.asdict(config) | {"alpha": args.alphas}, "results": results}
    write_json_atomically(RESULTS / f"{name}.json", record, indent=2)
    title = f"{'co-trained' if args.cotrain else 'frozen'} base, {args.steps} steps per alpha"
    plot(results, RESULTS / f"{name}.png", title)
    print(f"wrote {RESULTS / name}.json and .png")


if __name__ == "__main__":
    main()
