"""The agent's `mcenv` subcommands: `train bc|discover|internal-rl|es|disco|sb3`, `eval` and
`analyze` (imported only when they run). The training stages' flags are generated from
their config dataclasses, so each field's docstring is its flag's help."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

from metacontroller_agents.bc import BCConfig, train_bc
from metacontroller_agents.checkpoint import load_checkpoint
from metacontroller_agents.configs import add_config_flags, given_flags
from metacontroller_agents.controllers import add_controller_flag
from metacontroller_agents.disco_agent import KIND as DISCO_KIND
from metacontroller_agents.disco_agent import DiscoConfig, train_disco
from metacontroller_agents.discovery import DiscoveryConfig, train_discovery
from metacontroller_agents.evolution import EvolutionConfig, train_evolution
from metacontroller_agents.internal_rl import InternalRLConfig, train_internal_rl
from metacontroller_agents.pretrained import add_pretrained_flag, pretrained_checkpoint
from metacontroller_agents.runs import load_config

#: The config fields each `train` stage exposes as flags (see metacontroller_agents.configs).
BC_FLAGS = ("dataset", "preset", "steps", "batch_size", "lr", "eval_every", "eval_episodes",
            "checkpoint_every", "snapshot_every", "compile", "seed", "device")  # fmt: skip
DISCOVER_FLAGS = ("base", "dataset", "alpha", "kl_warmup_steps", "layer", "force_switch",
                  "switch_noise", "cotrain", "steps", "batch_size", "lr", "seed",
                  "device")  # fmt: skip
INTERNAL_RL_FLAGS = ("checkpoint", "env", "env_kwargs", "episodes", "batch_episodes", "num_envs",
                     "lr", "std_lr", "advantage", "force_switch", "raw_actions", "init_policy",
                     "init_std", "seed", "device")  # fmt: skip
ES_FLAGS = ("checkpoint", "env", "env_kwargs", "episodes", "population", "episodes_per_member",
            "sigma", "lr", "force_switch", "init_policy", "seed", "device")  # fmt: skip
DISCO_FLAGS = ("env", "env_kwargs", "episodes", "steps", "until_success", "num_envs",
               "rollout_len", "batch_size", "lr", "seed", "device")  # fmt: skip


def add_command(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    """`mcenv train`, `eval` or `analyze`: added by metacontroller_envs.cli only when it runs."""
    {"train": add_train, "eval": add_eval, "analyze": add_analyze}[name](commands, name, help)


def add_stage(
    stages: argparse._SubParsersAction,
    name: str,
    help: str,
    config_class: type,
    flags: tuple[str, ...],
    out: str,
) -> argparse.ArgumentParser:
    """A checkpointed training stage: --config, its config's flags, and where the run goes."""
    parser = stages.add_parser(name, help=help)
    parser.add_argument("--config", default=None,
                        help=f"JSON file of {config_class.__name__} fields")  # fmt: skip
    add_config_flags(parser, config_class, flags)
    parser.add_argument("--out", default=out, help="checkpoint path")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace the checkpoint in --out")
    parser.set_defaults(config_class=config_class, config_flags=flags)
    return parser


def add_train(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    train = commands.add_parser(name, help=help)
    stages = train.add_subparsers(dest="stage", required=True)
    for stage, (text, config_class, flags, out, trainer) in {
        "bc": ("behaviour cloning of the base transformer", BCConfig, BC_FLAGS,
               "checkpoints/bc.pt", train_bc),
        "discover": ("a MetaController on a frozen base model", DiscoveryConfig, DISCOVER_FLAGS,
                     "checkpoints/discover.pt", train_discovery),
        "internal-rl": ("RL on the MetaController's codes (or a baseline)", InternalRLConfig,
                        INTERNAL_RL_FLAGS, "checkpoints/internal_rl.pt", train_internal_rl),
        "es": ("evolution strategies on the MetaController's codes", EvolutionConfig,
               ES_FLAGS, "checkpoints/es.pt", train_evolution),
    }.items():  # fmt: skip
        parser = add_stage(stages, stage, text, config_class, flags, out)
        parser.set_defaults(run=train_command, trainer=trainer)
        if "checkpoint" in flags:
            add_pretrained_flag(parser, "the shipped base model and MetaController NAME "
                                "(instead of --checkpoint)")  # fmt: skip
        if stage in ("internal-rl", "es"):
            add_controller_flag(parser, "--checkpoint")
    sb3 = stages.add_parser("sb3", help="Stable-Baselines3 on the raw env or on the codes")
    sb3.add_argument("--algo", default="ppo", choices=["ppo", "sac"])
    sb3.add_argument("--env", default="PinPad-Posttrain-v0")
    sb3.add_argument("--latent", default=None, metavar="CHECKPOINT",
                     help="discovery checkpoint, pretrained:NAME or module:factory: act on "
                          "its codes")  # fmt: skip
    add_controller_flag(sb3, "--latent", dest="latent")
    sb3.add_argument("--env-kwargs", default=None, help="JSON, e.g. '{\"task_in_obs\": true}'")
    sb3.add_argument("--episodes", type=int, default=20000, help="budget in episodes")
    sb3.add_argument("--every", type=int, default=100, help="episodes per logged point")
    sb3.add_argument("--seed", type=int, default=0)
    sb3.add_argument("--device", default="auto")
    sb3.add_argument("--out", default="checkpoints/sb3.json", help="success history (JSON)")
    sb3.set_defaults(run=train_sb3_command)
    disco = add_stage(stages, "disco", "an agent trained with DeepMind's Disco103 rule",
                      DiscoConfig, DISCO_FLAGS, "checkpoints/disco.pt")  # fmt: skip
    disco.add_argument("--weights", default=None,
                       help="disco_103.npz (default: $DISCO103_WEIGHTS)")  # fmt: skip
    disco.add_argument("--start-from", default=None,
                       help="a train disco checkpoint to go on from under this config (a "
                            "curriculum stage; its step and episode counts go on)")  # fmt: skip
    disco.set_defaults(run=train_disco_command)


def add_eval(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    evaluate = commands.add_parser(name, help=help)
    evaluate.add_argument("--checkpoint", default=None,
                          help="from train bc, discover (its base model alone), disco, "
                          "internal-rl or es")  # fmt: skip
    add_pretrained_flag(evaluate, "a shipped agent NAME (instead of --checkpoint)")
    evaluate.add_argument("--env", default=None, help="default: the env it was trained on")
    evaluate.add_argument(
        "--env-kwargs",
        default=None,
        help="JSON keyword arguments for the env, over those of --env's",
    )
    evaluate.add_argument("--episodes", type=int, default=1000)
    evaluate.add_argument("--num-envs", type=int, default=256)
    evaluate.add_argument("--seed", type=int, default=None,
                          help="episode k: seed + k (default: 10**6; for an internal-RL or ES "
                          "policy, row r's layouts from seed + r, default 10**9)")  # fmt: skip
    evaluate.add_argument(
        "--greedy",
        action="store_true",
        help="argmax actions (a policy: its mean codes) instead of sampling",
    )
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(run=eval_command)


def add_analyze(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    analyze = commands.add_parser(name, help=help)
    analyze.add_argument("--checkpoint", default=None, help="from train discover")
    add_pretrained_flag(analyze, "the shipped MetaController NAME (instead of --checkpoint)")
    add_controller_flag(analyze, "--checkpoint")
    analyze.add_argument("--dataset", default=None, help="default: the one it trained on")
    analyze.add_argument("--env", default=None,
                         help="play this env in closed loop on codes from the prior instead "
                              "of reading expert data (needed for --controller)")  # fmt: skip
    analyze.add_argument("--env-kwargs", default=None, help="JSON keyword arguments of --env")
    analyze.add_argument("--num-envs", type=int, default=64, help="--env: episodes side by side")
    analyze.add_argument("--seed", type=int, default=0, help="--env: episode k is seed + k")
    analyze.add_argument("--episodes", type=int, default=1000, help="episodes scored")
    analyze.add_argument("--figure", default=None, help="PNG of beta over the subgoals")
    analyze.add_argument("--device", default="auto")
    analyze.set_defaults(run=analyze_command)


def train_command(args: argparse.Namespace) -> int:
    """`train bc|discover|internal-rl|es`: the config from --config and the flags, then train."""
    flags = given_flags(args, args.config_flags)
    if getattr(args, "pretrained", None) is not None:
        flags["checkpoint"] = pretrained_checkpoint(args)
    config = load_config(args.config_class, args.config, **flags)
    path = args.trainer(config, Path(args.out), resume=args.resume, overwrite=args.overwrite)
    print(f"checkpoint: {path}")
    return 0


def eval_command(args: argparse.Namespace) -> int:
    from metacontroller_agents.checkpoint import model_from_checkpoint
    from metacontroller_agents.data import resolve_device
    from metacontroller_agents.disco_agent import actor_from_checkpoint
    from metacontroller_agents.evaluate import evaluate_model
    from metacontroller_agents.policies import EVAL_SEED, evaluate_policy
    from metacontroller_agents.runs import POLICY_KINDS
    from metacontroller_envs.checks import check_env_id, check_env_kwargs
    from metacontroller_envs.cli import env_kwargs_from_json

    checkpoint = pretrained_checkpoint(args)
    if checkpoint is None:
        raise ValueError("give --checkpoint PATH or --pretrained NAME")
    device = resolve_device(args.device)
    # a discovery checkpoint is evaluated by its base model alone
    payload = load_checkpoint(checkpoint, ("bc", "discovery", DISCO_KIND, *POLICY_KINDS), device)
    if payload["kind"] in POLICY_KINDS:  # internal RL or ES: its policy on fresh layouts
        kwargs = None if args.env_kwargs is None else env_kwargs_from_json(args.env_kwargs)
        if args.env is not None:
            check_env_id(args.env, kwargs)
        seed = EVAL_SEED if args.seed is None else args.seed
        print(evaluate_policy(checkpoint, args.episodes, seed, str(device), args.env, kwargs,
                              min(args.num_envs, 64), args.greedy).line())  # fmt: skip
        return 0
    if payload["kind"] == DISCO_KIND:  # the file is read once, above
        model = actor_from_checkpoint(payload, checkpoint, device)
        config = model.model_config
    else:
        model = model_from_checkpoint(payload, checkpoint, device)
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
    seed = 10**6 if args.seed is None else args.seed
    report = evaluate_model(model, spec, args.episodes, device, args.num_envs, seed, args.greedy)
    print(report.line())
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
    config = load_config(DiscoConfig, args.config, **given_flags(args, DISCO_FLAGS))
    path = train_disco(config, Path(args.out), args.weights, args.resume, args.overwrite,
                       start_from=args.start_from)  # fmt: skip
    for point in load_checkpoint(path, DISCO_KIND)["history"][-5:]:
        print(json.dumps(point))
    print(f"checkpoint: {path}")
    return 0


def analyze_command(args: argparse.Namespace) -> int:
    """Switches against the ground-truth subgoals: on expert data through a discovery
    checkpoint's posterior, or (--env) in closed loop for any controller."""
    import numpy as np

    from metacontroller_agents.analysis import (
        infer_switches,
        load_metacontroller,
        play_switches,
        plot_switches,
        switch_report,
    )
    from metacontroller_agents.controllers import is_factory, load_controller
    from metacontroller_agents.data import check_dataset_fits, resolve_device
    from metacontroller_envs.checks import check_count, check_env_id
    from metacontroller_envs.cli import env_kwargs_from_json
    from metacontroller_envs.data import load_episodes

    checkpoint = pretrained_checkpoint(args)
    if checkpoint is None:
        raise ValueError("give --checkpoint PATH, --pretrained NAME or --controller MODULE:FACTORY")
    check_count("--episodes", args.episodes)
    device = resolve_device(args.device)
    if args.env is not None:  # closed loop, any LatentController
        if args.dataset is not None:
            raise ValueError("give --dataset (expert data) or --env (closed loop), not both")
        kwargs = {} if args.env_kwargs is None else env_kwargs_from_json(args.env_kwargs)
        check_env_id(args.env, kwargs)
        rows = min(check_count("--num-envs", args.num_envs), args.episodes)
        controller = load_controller(checkpoint, rows, str(device), args.seed)
        result = play_switches(controller, args.env, args.episodes, args.seed, kwargs)
        print(f"{args.env}, closed loop on codes from the prior: {switch_report(**result).line()}")
    else:
        if is_factory(checkpoint):
            raise ValueError(
                "a --controller MODULE:FACTORY is analysed in closed loop: give --env ID"
            )
        base, meta, payload = load_metacontroller(checkpoint, device)
        dataset = args.dataset or payload["train_config"]["dataset"]
        data = load_episodes(dataset)
        check_dataset_fits(data, dataset, base.config)
        episodes = np.arange(min(args.episodes, data.num_episodes))
        result = infer_switches(base, meta, data, episodes, device)
        print(switch_report(**result).line())
    if args.figure:
        print(f"figure: {plot_switches(**result, path=args.figure)}")
    return 0
