"""Primitive env-steps/s through the LatentActionWrapper (a script, not a test).

    python -m benchmarks.latent_wrapper [--envs 1 256] [--seconds 10] [--checkpoint d.pt]
                                        [--device cpu] [--threads 1]

Each wrapper step hands a random code z ~ N(0, I) to the frozen base model + MetaController,
which act in PinPad until the switch fires or the episode ends; the figure counts the
primitive env steps taken. 1 env: `LatentActionWrapper`. N envs: `LatentActionVectorWrapper`
over N `gym.make("PinPad-v0")` envs, with one batched model call per primitive step for
every episode still moving (rows whose switch fired wait for the others: a Gymnasium vector
env cannot hold some envs still, so the envs are stepped one by one). Without --checkpoint
the models are random at the small preset (width 128, depth 4); "rows per model call"
then shows how much of the batch the stragglers leave idle.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import metacontroller_envs  # noqa: F401
from metacontroller_agents.data import resolve_device
from metacontroller_agents.latent import LatentAgent
from metacontroller_agents.metacontroller import MetaController, MetaControllerConfig
from metacontroller_agents.transformer import CausalTransformer, ModelConfig
from metacontroller_envs.wrappers import LatentActionVectorWrapper, LatentActionWrapper


class CountingAgent(LatentAgent):
    """Counts model calls and the rows they moved."""

    calls = rows = 0

    def act(self, rows: np.ndarray, z: np.ndarray | None) -> np.ndarray:
        self.calls += 1
        self.rows += len(rows)
        return super().act(rows, z)


def models(
    env_id: str, checkpoint: str | None, device: torch.device
) -> tuple[CausalTransformer, MetaController]:
    if checkpoint is not None:
        from metacontroller_agents.analysis import load_metacontroller

        base, meta, _ = load_metacontroller(checkpoint, device)
        return base, meta
    torch.manual_seed(0)
    config = ModelConfig.for_env(gym.make(env_id), "small")
    return CausalTransformer(config), MetaController(MetaControllerConfig.for_base(config))


def measure(
    env_id: str,
    base: CausalTransformer,
    meta: MetaController,
    num_envs: int,
    seconds: float,
    device: torch.device,
    threshold: float,
) -> dict[str, float]:
    """Primitive env steps/s, wrapper steps/s and rows per model call over `seconds`."""
    agent = CountingAgent(base, meta, num_envs, device)
    if num_envs == 1:
        env = LatentActionWrapper(gym.make(env_id), agent, threshold)
    else:
        envs = [gym.make(env_id) for _ in range(num_envs)]
        env = LatentActionVectorWrapper(envs, agent, threshold)
    rng = np.random.default_rng(0)
    bound = float(env.action_space.high.max())
    env.reset(seed=0)
    primitive = decisions = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        z = np.clip(rng.standard_normal(env.action_space.shape), -bound, bound)
        _, _, terminated, truncated, info = env.step(z.astype(np.float32))
        primitive += int(np.sum(info["primitive_steps"]))
        decisions += num_envs
        if num_envs == 1 and (terminated or truncated):
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return {
        "primitive_per_s": primitive / elapsed,
        "decisions_per_s": decisions / elapsed,
        "primitive_per_decision": primitive / max(decisions, 1),
        "rows_per_call": agent.rows / max(agent.calls, 1),
        "ms_per_call": 1e3 * elapsed / max(agent.calls, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="PinPad-v0")
    parser.add_argument("--envs", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--checkpoint", default=None, help="a discovery checkpoint")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    base, meta = models(args.env, args.checkpoint, device)
    c = base.config
    print(
        f"{args.env}, base width {c.width} depth {c.depth}, controller at layer "
        f"{meta.config.layer}, n_z {meta.config.latent_dim}, threshold {args.threshold}, "
        f"{device}, {torch.get_num_threads()} thread(s), "
        f"{'checkpoint ' + args.checkpoint if args.checkpoint else 'random weights'}"
    )
    for n in args.envs:
        r = measure(args.env, base, meta, n, args.seconds, device, args.threshold)
        print(
            f"  {n:>4} env(s): {r['primitive_per_s']:>9,.0f} primitive env-steps/s, "
            f"{r['decisions_per_s']:>8,.0f} codes/s ({r['primitive_per_decision']:.1f} "
            f"primitive steps per code), {r['ms_per_call']:.2f} ms per primitive step of "
            f"the batch, {r['rows_per_call']:.1f} rows per model call"
        )


if __name__ == "__main__":
    main()
