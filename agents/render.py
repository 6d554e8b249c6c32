"""`mcenv render`: an agent playing an env, drawn into an mp4 or a gif.

    mcenv render --env PinPad-v0 --agent expert --episodes 3 --out videos/pinpad-expert.gif

The frames are drawn by metacontroller_envs.video; the agents are
metacontroller_agents.players (expert and random need no torch).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from metacontroller_agents.controllers import add_controller_flag
from metacontroller_agents.players import AGENTS, make_player
from metacontroller_agents.pretrained import add_pretrained_flag, pretrained_checkpoint
from metacontroller_envs.checks import check_count, check_env_id
from metacontroller_envs.video import RenderResult, check_suffix, film, make_env


def render_video(
    env_id: str | None,
    agent: str,
    out: str | Path,
    episodes: int = 1,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    fps: int = 10,
    hold: int = 4,
    device: str = "cpu",
    env_kwargs: dict[str, Any] | None = None,
    greedy: bool = False,
    solved_only: bool = False,
) -> RenderResult:
    """Film `agent` for `episodes` episodes of `env_id` (default: its checkpoint's env)
    into `out` (.mp4 or .gif); `solved_only`: its successful episodes only. Bad input raises a
    ValueError before anything is played."""
    out = check_suffix(out)
    check_count("episodes", episodes)
    check_count("fps", fps)
    check_count("hold", hold, minimum=0)
    if env_id is not None:
        check_env_id(env_id)  # before loading a checkpoint
    player, trained_on = make_player(agent, checkpoint, device, greedy)
    env = make_env(env_id, env_kwargs, trained_on)
    model = getattr(player, "agent", None)
    if getattr(model, "base", None) is not None:  # our model: its input shape is known
        shape = tuple(env.observation_space.shape)
        if shape != tuple(model.base.config.obs_shape):
            raise ValueError(
                f"{env.spec.id} observations have shape {shape}, the checkpoint's model reads "
                f"{tuple(model.base.config.obs_shape)}: render it on the env it was trained on"
            )
    try:
        return film(env, player, out, episodes, seed, fps, hold, f"{env.spec.id}  {agent}",
                    solved_only)  # fmt: skip
    finally:
        env.close()


def add_command(commands: argparse._SubParsersAction, name: str, help: str) -> None:
    """`mcenv render`: added by metacontroller_envs.cli only when it runs."""
    render = commands.add_parser(name, help=help)
    render.add_argument("--env", default=None, help="registered id; default: the checkpoint's")
    render.add_argument("--agent", required=True, help=" | ".join(AGENTS))
    render.add_argument("--checkpoint", default=None,
                        help="bc: a BC checkpoint; metacontroller: a discovery checkpoint; "
                             "internal-rl: an internal-RL checkpoint")  # fmt: skip
    add_pretrained_flag(render, "a shipped agent NAME (instead of --checkpoint)")
    add_controller_flag(render, "--checkpoint")
    render.add_argument("--episodes", type=int, default=1)
    render.add_argument("--out", required=True, help="videos/NAME.mp4 or videos/NAME.gif")
    render.add_argument("--seed", type=int, default=0, help="episode k: reset(seed=seed + k)")
    render.add_argument("--fps", type=int, default=10)
    render.add_argument("--hold", type=int, default=4, help="extra copies of an episode's end")
    render.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    render.add_argument("--env-kwargs", default="{}", help='JSON, e.g. \'{"task": "0-1"}\'')
    render.add_argument("--greedy", action="store_true",
                        help="bc: argmax actions; internal-rl: mean codes")  # fmt: skip
    render.add_argument("--solved-only", action="store_true",
                        help="film only episodes that succeed (seeds from --seed on)")  # fmt: skip
    render.set_defaults(run=render_command)


def render_command(args: argparse.Namespace) -> int:
    from metacontroller_envs.cli import env_kwargs_from_json

    result = render_video(args.env, args.agent, args.out, args.episodes,
                          pretrained_checkpoint(args),
                          args.seed, args.fps, args.hold, args.device,
                          env_kwargs_from_json(args.env_kwargs), args.greedy,
                          args.solved_only)  # fmt: skip
    print(result.line())
    return 0
