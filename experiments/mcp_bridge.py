"""metacontroller-pytorch's Transformer and MetaController end to end on our envs.

Through metacontroller_agents.mcp_bridge: collect PinPad-v0 expert data, train the library's
Transformer by BC and its MetaController by its discovery phase, save the pair, then measure
free play from the prior, internal RL through the bridge's factory, and the controller's
rows/s batched against one row at a time.

    python -m experiments.mcp_bridge --out checkpoints/mcp-bridge

Every stage leaves a file in --out and is skipped when it is there (the dataset, bc.pt,
pair.pt, internal-rl.pt, which resumes), so a stopped run goes on where it stopped; the
figures are measured again each run. Seeded: the same seed gives the same figures (the
rows/s aside). Needs metacontroller-pytorch (`pip install "metacontroller-envs[mcp]"`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

import metacontroller_envs  # noqa: F401  (registers the envs)
from metacontroller_agents import mcp_bridge
from metacontroller_agents.mcp_bridge import MCPController, library_batches, load_pair, save_pair
from metacontroller_envs.checks import check_count
from metacontroller_envs.data import load_episodes
from metacontroller_envs.data.collection import collect, dataset_path, minari_root
from metacontroller_envs.evaluate import wilson_interval
from metacontroller_envs.files import write_json_atomically
from metacontroller_envs.wrappers import LatentActionVectorWrapper

DATASET = "mcpbridge/PinPad-v0/expert-v0"
FACTORY = "metacontroller_agents.mcp_bridge:factory"


def build_pair(obs_dim: int, num_actions: int, width: int, depth: int, seed: int) -> tuple:
    """The library's Transformer and MetaController at the sizes of this experiment (small
    enough for a CPU in minutes)."""
    from metacontroller import MetaController, Transformer

    torch.manual_seed(seed)
    body = dict(depth=depth, heads=4, attn_dim_head=width // 4)
    transformer = Transformer(
        dim=width,
        state_embed_readout=dict(num_continuous=obs_dim),
        action_embed_readout=dict(num_discrete=num_actions),
        lower_body=dict(body),
        upper_body=dict(body),
        dynamics_hidden_dim=width,
        dynamics_num_layers=2,
    )
    meta = MetaController(
        width,
        dim_meta_controller=32,
        dim_latent=8,
        hypernetwork_low_rank=4,
        internal_sequence_embedder=dict(attn_dim_head=16, heads=2, depth=1),
        action_proposer=dict(depth=1, attn_dim_head=16, heads=2),
        dim_sequence_summary_embed=8,
        target_temporal_segment_len=6,
    )
    return transformer, meta


def stage_data(out: Path, episodes: int, seed: int) -> object:
    """Our expert episodes of PinPad-v0 (collected once into out/datasets)."""
    with minari_root(out / "datasets"):
        if not dataset_path(DATASET).exists():
            start = time.perf_counter()
            collect("PinPad-v0", episodes, seed=seed, dataset_id=DATASET, progress=False)
            print(f"collect: {episodes} PinPad-v0 expert episodes in "
                  f"{time.perf_counter() - start:.1f} s")  # fmt: skip
        data = load_episodes(DATASET, env_id="PinPad-v0")
    print(f"data: {data.num_episodes} episodes, {int(data.lengths.sum())} steps, mean length "
          f"{data.lengths.mean():.1f}")  # fmt: skip
    return data


def stage_bc(
    out: Path, data: object, transformer: torch.nn.Module, args: argparse.Namespace
) -> None:
    """The library's BC phase (force_behavior_cloning=True) on our batches; once."""
    path = out / "bc.pt"
    if path.exists():
        transformer.load_state_dict(torch.load(path, weights_only=True))
        print(f"bc: loaded {path}")
        return
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=args.lr, weight_decay=0.0)
    start, losses = time.perf_counter(), []
    transformer.train()
    for step, inputs in enumerate(
        library_batches(data, args.batch, args.bc_steps, seed=args.seed), start=1
    ):
        state_loss, action_loss = transformer(**inputs, force_behavior_cloning=True)
        loss = 0.1 * state_loss + action_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), 1.0)
        optimizer.step()
        losses.append(action_loss.item())
        if step % max(1, args.bc_steps // 5) == 0 or step == args.bc_steps:
            print(f"bc: step {step}: action loss {np.mean(losses[-20:]):.4f}")
    transformer.eval()
    torch.save(transformer.state_dict(), path)
    print(f"bc: {args.bc_steps} steps in {time.perf_counter() - start:.1f} s")


def stage_discovery(out: Path, data: object, transformer: torch.nn.Module, meta: torch.nn.Module,
                    args: argparse.Namespace) -> Path:  # fmt: skip
    """The library's discovery phase (discovery_phase=True, the Transformer frozen) for the
    MetaController; saves the pair; once."""
    path = out / "pair.pt"
    if path.exists():
        print(f"discovery: {path} exists")
        return path
    optimizer = torch.optim.AdamW(meta.discovery_parameters(), lr=args.discovery_lr,
                                  weight_decay=0.0)  # fmt: skip
    start, log = time.perf_counter(), []
    transformer.eval()
    meta.train()
    for step, inputs in enumerate(
        library_batches(data, args.batch, args.discovery_steps, seed=args.seed + 1), start=1
    ):
        losses, output = transformer(**inputs, meta_controller=meta, discovery_phase=True,
                                     return_meta_controller_output=True)  # fmt: skip
        loss = losses.action_recon + args.kl_weight * losses.kl + args.ratio_weight * losses.ratio
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(meta.discovery_parameters(), 1.0)
        optimizer.step()
        mask = torch.arange(inputs["state"].shape[1])[None] < inputs["episode_lens"][:, None]
        log.append((losses.action_recon.item(), losses.kl.item(),
                    output.switch_beta[mask].mean().item()))  # fmt: skip
        if step % max(1, args.discovery_steps // 5) == 0 or step == args.discovery_steps:
            recon, kl, beta = np.mean(log[-20:], axis=0)
            print(f"discovery: step {step}: action recon {recon:.4f}, kl {kl:.4f}, "
                  f"mean beta {beta:.3f}")  # fmt: skip
    meta.eval()
    save_pair(path, transformer, meta)
    print(f"discovery: {args.discovery_steps} steps in {time.perf_counter() - start:.1f} s; "
          f"pair saved to {path}")  # fmt: skip
    return path


def free_play(pair: tuple, env_id: str, episodes: int, num_envs: int, seed: int,
              **env_kwargs: object) -> dict[str, float]:  # fmt: skip
    """Success of the bridged pair on `env_id` through our LatentActionVectorWrapper, a new
    code from the prior N(0, I) at each switch; also codes and task pairs completed (the
    env's subgoal_index at the end) per episode."""
    controller = MCPController(*pair, num_envs=num_envs, seed=seed)
    envs = LatentActionVectorWrapper([gym.make(env_id, **env_kwargs) for _ in range(num_envs)],
                                     controller)  # fmt: skip
    rng = np.random.default_rng(seed)
    envs.reset(seed=seed)
    done, successes, codes, reached = 0, 0, 0, 0
    in_episode = np.zeros(num_envs, dtype=np.int64)
    while done < episodes:
        z = rng.standard_normal((num_envs, controller.latent_dim)).astype(np.float32)
        _, reward, terminated, truncated, info = envs.step(z)
        in_episode += 1
        for row in np.flatnonzero(terminated | truncated):
            if done < episodes:
                done += 1
                successes += int(reward[row] > 0)  # PinPad's reward: 1 for success only
                codes += int(in_episode[row])
                reached += int(info["subgoal_index"][row])  # pairs completed
            in_episode[row] = -1  # the next step restarts the row (counted as no code)
    low, high = wilson_interval(successes, episodes)
    return {"success": successes / episodes, "low": low, "high": high,
            "codes_per_episode": codes / episodes, "successes": successes,
            "pairs": reached / episodes}  # fmt: skip


@torch.no_grad()
def control_ratio(transformer: torch.nn.Module, meta: torch.nn.Module, data: object,
                  seed: int) -> tuple[float, float, float]:  # fmt: skip
    """|U(z) e| / |e| of the MetaController's control signal on the residual stream of 32
    dataset episodes, one code z ~ N(0, I) per step: (5th percentile, median, 95th). How
    strongly a code moves the stream: the untrained hypernetwork's is large, a collapsed
    posterior's near 0."""
    inputs = next(library_batches(data, 32, 1, seed=seed))
    _, stream = transformer(**inputs, force_behavior_cloning=True, return_residual_stream=True)
    mask = torch.arange(stream.shape[1])[None] < inputs["episode_lens"][:, None]
    e = stream[mask][:, None]  # (steps, 1, width)
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(len(e), meta.dim_latent, generator=generator)
    controller = MCPController(transformer, meta, num_envs=1)
    ratio = controller.control_signal(e, z).norm(dim=-1) / e.norm(dim=-1).clamp(min=1e-12)
    low, mid, high = np.percentile(ratio.flatten().numpy(), [5, 50, 95])
    return float(low), float(mid), float(high)


@torch.no_grad()
def base_success(transformer: torch.nn.Module, env_id: str, episodes: int, seed: int) -> float:
    """Success of the BC Transformer alone (no MetaController), greedy, through the
    library's own public inference path (forward with return_cache, one row, one step at a
    time): the baseline the bridged pair starts from."""
    env, successes = gym.make(env_id), 0
    for k in range(episodes):
        obs, _ = env.reset(seed=seed + k)
        cache, previous, done, reward = None, None, False, 0.0
        while not done:
            state = torch.as_tensor(obs, dtype=torch.float32).reshape(1, 1, -1)
            logits, cache = transformer(state, previous, cache=cache, return_cache=True,
                                        force_behavior_cloning=True)  # fmt: skip
            action = int(logits[0, -1].argmax())
            previous = torch.tensor([[action]])
            obs, reward, terminated, truncated, _ = env.step(action)
            done = terminated or truncated
        successes += int(reward > 0)
    return successes / episodes


def rows_per_second(pair: tuple, num_envs: int, steps: int, mode: str, seed: int) -> float:
    """Rows/s of one primitive step (env time excluded) on PinPad-v0 episodes of `num_envs`
    rows that reset when they end (so rows drift to different steps). mode "batched": the
    bridge, all rows in one observe + act; "loop": the bridge, one row per call; "library":
    the library's own cached forward (Transformer.forward with meta_controller and
    return_cache, its action proposer choosing the codes), one row per call, as a user
    without the bridge steps rows of different lengths."""
    transformer, meta = pair
    controller = MCPController(transformer, meta, num_envs=num_envs, seed=seed)
    envs = [gym.make("PinPad-v0") for _ in range(num_envs)]
    obs = np.stack([env.reset(seed=seed + r)[0] for r, env in enumerate(envs)])
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)  # the library's proposer samples from torch's global generator
    rows = np.arange(num_envs)
    controller.reset(rows, seed=seed)
    caches: list = [None] * num_envs
    previous: list = [None] * num_envs
    groups = [rows] if mode == "batched" else [rows[r : r + 1] for r in rows]
    spent = 0.0
    for _ in range(steps):
        actions = np.zeros(num_envs, dtype=np.int64)
        start = time.perf_counter()
        if mode == "library":
            with torch.no_grad():
                for r in rows:
                    state = torch.as_tensor(obs[r], dtype=torch.float32).reshape(1, 1, -1)
                    logits, caches[r] = transformer(state, previous[r], meta_controller=meta,
                                                    cache=caches[r], return_cache=True)  # fmt: skip
                    actions[r] = int(logits[0, -1].argmax())
                    previous[r] = torch.tensor([[actions[r]]])
        else:
            for group in groups:
                controller.observe(obs[group], group)
                z = rng.standard_normal((len(group), controller.latent_dim)).astype(np.float32)
                actions[group] = controller.act(group, z)
        spent += time.perf_counter() - start
        for r, env in enumerate(envs):
            obs[r], _, terminated, truncated, _ = env.step(actions[r])
            if terminated or truncated:
                obs[r] = env.reset()[0]
                controller.reset(rows[r : r + 1])
                caches[r], previous[r] = None, None
    return num_envs * steps / spent


def stage_internal_rl(out: Path, pair_path: Path, args: argparse.Namespace) -> list[dict]:
    """Internal RL over the bridge's factory (MCP_BRIDGE_CHECKPOINT -> the saved pair);
    resumes its checkpoint."""
    from metacontroller_agents.internal_rl import InternalRLConfig, train_internal_rl

    os.environ[mcp_bridge.ENV_VAR] = str(pair_path)
    config = InternalRLConfig(checkpoint=FACTORY, env=args.rl_env, env_kwargs=args.rl_env_kwargs,
                              episodes=args.rl_episodes,
                              batch_episodes=args.rl_batch, num_envs=args.rl_envs,
                              std_lr=args.rl_std_lr, seed=args.seed, device="cpu")  # fmt: skip
    path = out / "internal-rl.pt"
    start = time.perf_counter()
    train_internal_rl(config, path, resume=True, progress=False)
    history = torch.load(path, weights_only=True)["history"]
    print(f"internal rl: {args.rl_env}, {args.rl_episodes} episodes "
          f"({time.perf_counter() - start:.1f} s this run)")  # fmt: skip
    return history


#: The arguments that make the dataset, bc.pt and pair.pt (a resumed run must keep them).
TRAINING = ("episodes", "width", "depth", "batch", "lr", "bc_steps", "discovery_steps",
            "discovery_lr", "kl_weight", "ratio_weight", "seed")  # fmt: skip


def check_same_run(args: argparse.Namespace) -> None:
    """Record the training arguments in out/run.json; a ValueError if the files there were
    made with others (the stages would load them as if they were this run's)."""
    path, ours = args.out / "run.json", {name: getattr(args, name) for name in TRAINING}
    if path.exists():
        theirs = json.loads(path.read_text())
        differ = [f"{k}: {theirs.get(k)!r} there, {v!r} now" for k, v in ours.items()
                  if theirs.get(k) != v]  # fmt: skip
        if differ:
            raise ValueError(f"{args.out} holds a run with other arguments ({'; '.join(differ)})"
                             ": use another --out")  # fmt: skip
    else:
        write_json_atomically(path, ours)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("checkpoints/mcp-bridge"))
    parser.add_argument("--episodes", type=int, default=8000, help="expert episodes to collect")
    parser.add_argument("--width", type=int, default=128, help="the Transformer's dim")
    parser.add_argument("--depth", type=int, default=1, help="layers of each body (lower, upper)")
    parser.add_argument("--batch", type=int, default=32, help="episodes per training batch")
    parser.add_argument("--lr", type=float, default=3e-3, help="BC's learning rate")
    parser.add_argument("--bc-steps", type=int, default=2000)
    parser.add_argument("--discovery-steps", type=int, default=300)
    parser.add_argument("--discovery-lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=0.01)
    parser.add_argument("--ratio-weight", type=float, default=1.0)
    parser.add_argument("--eval-episodes", type=int, default=256)
    parser.add_argument("--eval-envs", type=int, default=16)
    parser.add_argument("--rl-env", default="PinPad-Ladder2-v0")
    parser.add_argument("--rl-env-kwargs", type=json.loads, default={},
                        help='the RL env\'s keyword arguments as JSON, e.g. \'{"task": "0-1"}\'')
    parser.add_argument("--rl-episodes", type=int, default=2048)
    parser.add_argument("--rl-batch", type=int, default=128)
    parser.add_argument("--rl-envs", type=int, default=64)
    parser.add_argument("--rl-std-lr", type=float, default=3e-3)
    parser.add_argument("--speed-rows", type=int, nargs="*", default=[16, 64])
    parser.add_argument("--speed-steps", type=int, default=60)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: "
                        "torch's own)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in ("episodes", "width", "depth", "batch", "bc_steps", "discovery_steps",
                 "eval_episodes", "eval_envs", "rl_episodes", "rl_batch", "rl_envs",
                 "speed_steps"):  # fmt: skip
        check_count(name, getattr(args, name))
    if args.width % 4:
        raise ValueError(f"--width must be a multiple of 4 (4 heads), got {args.width}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    check_same_run(args)
    print(f"metacontroller-pytorch {mcp_bridge.library_version()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads, seed {args.seed}")  # fmt: skip

    data = stage_data(args.out, args.episodes, args.seed)
    sizes = int(np.prod(data.observation_space.shape)), int(data.action_space.n)
    transformer, meta = build_pair(*sizes, args.width, args.depth, args.seed)
    print(f"model: Transformer {sum(p.numel() for p in transformer.parameters()):,} "
          f"parameters, MetaController {sum(p.numel() for p in meta.parameters()):,}")  # fmt: skip
    stage_bc(args.out, data, transformer, args)
    pair_path = stage_discovery(args.out, data, transformer, meta, args)
    pair = load_pair(pair_path)
    untrained = build_pair(*sizes, args.width, args.depth, args.seed)[1]
    for name, controller_meta in (("untrained", untrained), ("after discovery", pair[1])):
        low, mid, high = control_ratio(pair[0], controller_meta, data, args.seed + 2)
        print(f"control signal |U(z) e| / |e|, z from the prior, {name}: median {mid:.3f} "
              f"(5-95%: {low:.3f}-{high:.3f})")  # fmt: skip

    for env_id in ("PinPad-v0", "PinPad-Posttrain-v0"):
        base = base_success(pair[0], env_id, args.eval_episodes, 10**6 + args.seed)
        print(f"BC Transformer alone (greedy, no MetaController): {env_id}: success {base:.4f}")

    plays = [("PinPad-v0", {}), ("PinPad-v0", {"free_play": True}), ("PinPad-Posttrain-v0", {})]
    for env_id, kwargs in plays:
        r = free_play(pair, env_id, args.eval_episodes, args.eval_envs, 10**6 + args.seed,
                      **kwargs)  # fmt: skip
        name = env_id + (" free_play=True" if kwargs else "")
        print(f"free play from the prior: {name}: success {r['success']:.4f} "
              f"({r['successes']}/{args.eval_episodes}, 95% CI [{r['low']:.4f}, "
              f"{r['high']:.4f}]), {r['codes_per_episode']:.2f} codes and "
              f"{r['pairs']:.2f} task pairs completed per episode")  # fmt: skip

    history = stage_internal_rl(args.out, pair_path, args)
    for h in history:
        print(f"internal rl: episodes {h['episodes']}: success {h['success']:.4f}, return "
              f"{h['return']:.4f}, codes "
              f"per episode {h['choices_per_episode']:.2f}, "
              f"{h['env_steps_per_s']:.0f} env steps/s")  # fmt: skip

    for rows in args.speed_rows:
        check_count("speed rows", rows)
        speed = {mode: rows_per_second(pair, rows, args.speed_steps, mode, args.seed)
                 for mode in ("batched", "loop", "library")}  # fmt: skip
        print(f"controller rows/s, {rows} rows: batched {speed['batched']:.0f}, one row at a "
              f"time {speed['loop']:.0f} ({speed['batched'] / speed['loop']:.1f}x); the "
              f"library's own cached forward, one row at a time: "
              f"{speed['library']:.0f}")  # fmt: skip
    print(f"total: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
