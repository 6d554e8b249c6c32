"""The agent's `mcenv` subcommands: `train bc|discover|internal-rl|es|sb3`, `eval` and `analyze`
(imported only when they run)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec


def add_run_options(parser: argparse.ArgumentParser, out: str) -> None:
    """The options every checkpointed training command shares."""
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default=None, help="cpu, cuda or auto")
    parser.add_argument("--out", default=out, help="checkpoint path")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the checkpoint in --out")


def add_command(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    """`mcenv train`, `eval` or `analyze`: added by metacontroller_envs.cli only when it runs."""
    {"train": add_train, "eval": add_eval, "analyze": add_analyze}[name](commands, name, help)


def add_train(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    train = commands.add_parser(name, help=help)
    stages = train.add_subparsers(dest="stage", required=True)
    bc = stages.add_parser("bc", help="behaviour cloning of the base transformer")
    bc.add_argument("--dataset", help="Minari dataset id, e.g. pinpad/PinPad-v0/expert-v0")
    bc.add_argument("--config", default=None, help="JSON file of BCConfig fields")
    bc.add_argument("--preset", default=None, choices=["small", "paper"])
    bc.add_argument("--steps", type=int, default=None)
    bc.add_argument("--batch-size", type=int, default=None)
    bc.add_argument("--lr", type=float, default=None)
    bc.add_argument("--eval-every", type=int, default=None)
    bc.add_argument("--eval-episodes", type=int, default=None)
    add_run_options(bc, "checkpoints/bc.pt")
    bc.set_defaults(run=train_bc_command)
    discover = stages.add_parser("discover", help="a MetaController on a frozen base model")
    discover.add_argument("--base", help="base model checkpoint (from train bc)")
    discover.add_argument("--dataset", help="Minari dataset id of clean expert data")
    discover.add_argument("--config", default=None, help="JSON file of DiscoveryConfig fields")
    discover.add_argument("--alpha", type=float, default=None, help="KL weight")
    discover.add_argument("--kl-warmup-steps", type=int, default=None,
                          help="steps over which the KL weight rises from 0 to alpha")  # fmt: skip
    discover.add_argument("--layer", type=int, default=None, help="default: depth // 2")
    discover.add_argument("--force-switch", action="store_true", default=None,
                          help="ablation: beta = 1 at every step")  # fmt: skip
    discover.add_argument("--switch-noise", action=argparse.BooleanOptionalAction,
                          default=None, help="Gumbel-Sigmoid switch in training")  # fmt: skip
    discover.add_argument("--cotrain", action="store_true", default=None,
                          help="ablation: train the base model too")  # fmt: skip
    discover.add_argument("--steps", type=int, default=None)
    discover.add_argument("--batch-size", type=int, default=None)
    discover.add_argument("--lr", type=float, default=None)
    add_run_options(discover, "checkpoints/discover.pt")
    discover.set_defaults(run=train_discover_command)
    rl = stages.add_parser("internal-rl", help="RL on the MetaController's codes (or a baseline)")
    rl.add_argument("--checkpoint", help="discovery checkpoint (from train discover)")
    rl.add_argument("--config", default=None, help="JSON file of InternalRLConfig fields")
    rl.add_argument("--env", default=None, help="default: PinPad-Posttrain-v0")
    rl.add_argument("--episodes", type=int, default=None, help="budget in episodes")
    rl.add_argument("--batch-episodes", type=int, default=None, help="episodes per update")
    rl.add_argument("--num-envs", type=int, default=None, help="episodes side by side")
    rl.add_argument("--lr", type=float, default=None)
    rl.add_argument("--advantage", default=None, choices=["batch", "group"],
                    help="normalise returns over the batch or per layout group (GRPO)")  # fmt: skip
    rl.add_argument("--force-switch", action="store_true", default=None,
                    help="ablation: beta = 1, a new code every step")  # fmt: skip
    rl.add_argument("--raw-actions", action="store_true", default=None,
                    help="baseline: the same RL on the base model's actions")  # fmt: skip
    add_run_options(rl, "checkpoints/internal_rl.pt")
    rl.set_defaults(run=train_internal_rl_command)
    es = stages.add_parser("es", help="evolution strategies on the MetaController's codes")
    es.add_argument("--checkpoint", help="discovery checkpoint (from train discover)")
    es.add_argument("--config", default=None, help="JSON file of EvolutionConfig fields")
    es.add_argument("--env", default=None, help="default: PinPad-Posttrain-v0")
    es.add_argument("--episodes", type=int, default=None, help="budget in episodes")
    es.add_argument("--population", type=int, default=None, help="perturbations per update")
    es.add_argument("--episodes-per-member", type=int, default=None)
    es.add_argument("--sigma", type=float, default=None, help="perturbation scale")
    es.add_argument("--lr", type=float, default=None)
    es.add_argument("--force-switch", action="store_true", default=None,
                    help="ablation: beta = 1, a new code every step")  # fmt: skip
    add_run_options(es, "checkpoints/es.pt")
    es.set_defaults(run=train_evolution_command)
    sb3 = stages.add_parser("sb3", help="Stable-Baselines3 on the raw env or on the codes")
    sb3.add_argument("--algo", default="ppo", choices=["ppo", "sac"])
    sb3.add_argument("--env", default="PinPad-Posttrain-v0")
    sb3.add_argument("--latent", default=None, metavar="CHECKPOINT",
                     help="discovery checkpoint: act on its codes")  # fmt: skip
    sb3.add_argument("--env-kwargs", default=None, help="JSON, e.g. '{\"task_in_obs\": true}'")
    sb3.add_argument("--episodes", type=int, default=20000, help="budget in episodes")
    sb3.add_argument("--every", type=int, default=100, help="episodes per logged point")
    sb3.add_argument("--seed", type=int, default=0)
    sb3.add_argument("--device", default="auto")
    sb3.add_argument("--out", default="checkpoints/sb3.json", help="success history (JSON)")
    sb3.set_defaults(run=train_sb3_command)
    disco = stages.add_parser("disco", help="an agent trained with DeepMind's Disco103 rule")
    disco.add_argument("--env", default=None, help="default: PinPad-v0")
    disco.add_argument("--env-kwargs", default=None, help="JSON, e.g. '{\"task_in_obs\": true}'")
    disco.add_argument("--config", default=None, help="JSON file of DiscoConfig fields")
    disco.add_argument("--weights", default=None,
                       help="disco_103.npz (default: $DISCO103_WEIGHTS)")  # fmt: skip
    disco.add_argument("--episodes", type=int, default=None, help="budget in episodes")
    disco.add_argument("--steps", type=int, default=None, help="also stop after N updates")
    disco.add_argument("--until-success", type=float, default=None,
                       help="also stop once a success point of this stage reaches it")  # fmt: skip
    disco.add_argument("--num-envs", type=int, default=None)
    disco.add_argument("--rollout-len", type=int, default=None)
    disco.add_argument("--batch-size", type=int, default=None)
    disco.add_argument("--lr", type=float, default=None)
    disco.add_argument("--start-from", default=None,
                       help="a train disco checkpoint to go on from under this config (a "
                            "curriculum stage; its step and episode counts go on)")  # fmt: skip
    add_run_options(disco, "checkpoints/disco.pt")
    disco.set_defaults(run=train_disco_command)


def add_eval(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    evaluate = commands.add_parser(name, help=help)
    evaluate.add_argument("--checkpoint", required=True, help="from train bc or train disco")
    evaluate.add_argument("--env", default=None, help="default: the env it was trained on")
    evaluate.add_argument(
        "--env-kwargs",
        default=None,
        help="JSON keyword arguments for the env, over those of --env's",
    )
    evaluate.add_argument("--episodes", type=int, default=1000)
    evaluate.add_argument("--num-envs", type=int, default=256)
    evaluate.add_argument("--seed", type=int, default=10**6, help="episode k: seed + k")
    evaluate.add_argument("--greedy", action="store_true", help="argmax instead of sampling")
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(run=eval_command)


def add_analyze(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    analyze = commands.add_parser(name, help=help)
    analyze.add_argument("--checkpoint", required=True, help="from train discover")
    analyze.add_argument("--dataset", default=None, help="default: the one it trained on")
    analyze.add_argument("--episodes", type=int, default=1000, help="episodes scored")
    analyze.add_argument("--figure", default=None, help="PNG of beta over the subgoals")
    analyze.add_argument("--device", default="auto")
    analyze.set_defaults(run=analyze_command)


def train_bc_command(args: argparse.Namespace) -> int:
    from metacontroller_agents.config import BCConfig, load_config
    from metacontroller_agents.train import train_bc

    config = load_config(
        BCConfig,
        args.config,
        dataset=args.dataset,
        preset=args.preset,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        seed=args.seed,
        device=args.device,
    )
    path = train_bc(config, Path(args.out), resume=args.resume, overwrite=args.overwrite)
    print(f"checkpoint: {path}")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from metacontroller_agents.checkpoint import load_checkpoint, model_from_checkpoint
    from metacontroller_agents.data import resolve_device
    from metacontroller_agents.disco_agent import KIND as DISCO_KIND
    from metacontroller_agents.disco_agent import actor_from_checkpoint
    from metacontroller_agents.evaluate import evaluate_model
    from metacontroller_envs.checks import check_env_id, check_env_kwargs
    from metacontroller_envs.cli import env_kwargs_from_json

    device = resolve_device(args.device)
    payload = load_checkpoint(args.checkpoint, ("bc", DISCO_KIND), device)
    if payload["kind"] == DISCO_KIND:  # the file is read once, above
        model = actor_from_checkpoint(payload, args.checkpoint, device)
        config = model.model_config
    else:
        model = model_from_checkpoint(payload, args.checkpoint, device)
        config = model.config
    if args.env is None:
        spec = EnvSpec.from_json(payload["env_spec"])
    else:
        check_env_id(args.env)
        spec = gym.spec(args.env)
    if args.env_kwargs is not None:
        spec = dataclasses.replace(
            spec, kwargs={**spec.kwargs, **env_kwargs_from_json(args.env_kwargs)}
        )
        check_env_kwargs(spec.id, spec.kwargs)
    shape = gym.make(spec).observation_space.shape
    if tuple(shape) != config.obs_shape:
        raise ValueError(
            f"{spec.id} observations have shape {tuple(shape)}, the checkpoint's model reads "
            f"{config.obs_shape}: evaluate it on the env it was trained on"
        )
    report = evaluate_model(
        model, spec, args.episodes, device, args.num_envs, args.seed, args.greedy
    )
    print(report.line())
    return 0


def train_discover_command(args: argparse.Namespace) -> int:
    from metacontroller_agents.config import DiscoveryConfig, load_config
    from metacontroller_agents.train import train_discovery

    config = load_config(
        DiscoveryConfig,
        args.config,
        base=args.base,
        dataset=args.dataset,
        alpha=args.alpha,
        kl_warmup_steps=args.kl_warmup_steps,
        layer=args.layer,
        force_switch=args.force_switch,
        switch_noise=args.switch_noise,
        cotrain=args.cotrain,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
    )
    path = train_discovery(config, Path(args.out), resume=args.resume, overwrite=args.overwrite)
    print(f"checkpoint: {path}")
    return 0


def train_internal_rl_command(args: argparse.Namespace) -> int:
    from metacontroller_agents.config import InternalRLConfig, load_config
    from metacontroller_agents.internal_rl import train_internal_rl

    config = load_config(
        InternalRLConfig,
        args.config,
        checkpoint=args.checkpoint,
        env=args.env,
        episodes=args.episodes,
        batch_episodes=args.batch_episodes,
        num_envs=args.num_envs,
        lr=args.lr,
        advantage=args.advantage,
        force_switch=args.force_switch,
        raw_actions=args.raw_actions,
        seed=args.seed,
        device=args.device,
    )
    path = train_internal_rl(config, Path(args.out), resume=args.resume, overwrite=args.overwrite)
    print(f"checkpoint: {path}")
    return 0


def train_evolution_command(args: argparse.Namespace) -> int:
    from metacontroller_agents.config import EvolutionConfig, load_config
    from metacontroller_agents.evolution import train_evolution

    config = load_config(
        EvolutionConfig,
        args.config,
        checkpoint=args.checkpoint,
        env=args.env,
        episodes=args.episodes,
        population=args.population,
        episodes_per_member=args.episodes_per_member,
        sigma=args.sigma,
        lr=args.lr,
        force_switch=args.force_switch,
        seed=args.seed,
        device=args.device,
    )
    path = train_evolution(config, Path(args.out), resume=args.resume, overwrite=args.overwrite)
    print(f"checkpoint: {path}")
    return 0


def train_sb3_command(args: argparse.Namespace) -> int:
    from metacontroller_agents.sb3_baselines import train_sb3
    from metacontroller_envs.cli import env_kwargs_from_json

    env_kwargs = None if args.env_kwargs is None else env_kwargs_from_json(args.env_kwargs)
    history = train_sb3(args.algo, args.env, args.episodes, args.latent, args.seed,
                        args.device, args.every, args.out, env_kwargs=env_kwargs)  # fmt: skip
    for point in history:
        print(json.dumps(point))
    print(f"history: {args.out}")
    return 0


def train_disco_command(args: argparse.Namespace) -> int:
    from metacontroller_agents.checkpoint import load_checkpoint
    from metacontroller_agents.config import load_config
    from metacontroller_agents.disco_agent import DiscoConfig, train_disco
    from metacontroller_envs.cli import env_kwargs_from_json

    env_kwargs = None if args.env_kwargs is None else env_kwargs_from_json(args.env_kwargs)
    config = load_config(
        DiscoConfig,
        args.config,
        env=args.env,
        env_kwargs=env_kwargs,
        episodes=args.episodes,
        steps=args.steps,
        until_success=args.until_success,
        num_envs=args.num_envs,
        rollout_len=args.rollout_len,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        device=args.device,
    )
    path = train_disco(config, Path(args.out), args.weights, args.resume, args.overwrite,
                       start_from=args.start_from)  # fmt: skip
    for point in load_checkpoint(path, "disco")["history"][-5:]:
        print(json.dumps(point))
    print(f"checkpoint: {path}")
    return 0


def analyze_command(args: argparse.Namespace) -> int:
    import numpy as np

    from metacontroller_agents.analysis import (
        infer_switches,
        load_metacontroller,
        plot_switches,
        switch_report,
    )
    from metacontroller_agents.data import check_dataset_fits, resolve_device
    from metacontroller_envs.checks import check_count
    from metacontroller_envs.data import load_episodes

    device = resolve_device(args.device)
    base, meta, payload = load_metacontroller(args.checkpoint, device)
    dataset = args.dataset or payload["train_config"]["dataset"]
    data = load_episodes(dataset)
    check_dataset_fits(data, dataset, base.config)
    episodes = np.arange(min(check_count("--episodes", args.episodes), data.num_episodes))
    result = infer_switches(base, meta, data, episodes, device)
    print(switch_report(**result).line())
    if args.figure:
        print(f"figure: {plot_switches(**result, path=args.figure)}")
    return 0
