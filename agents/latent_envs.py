"""Latent envs by id: the latent wrapper around a suite env with a named controller,
registered by the agent package (the suite never imports it) so that any library that
takes a Gymnasium id can train on the metacontroller's codes.

    import gymnasium as gym
    env = gym.make("metacontroller_agents.latent_envs:Latent-PinPad-Ladder2-v0")
    python -m rl_zoo3.train --algo ppo --env Latent-PinPad-Ladder2-v0 \
        --gym-packages metacontroller_agents.latent_envs

`Latent-<id>` is registered for every env of the PinPad family with the shipped
`PinPad-v0` base model and MetaController as its controller; `controller=` takes a
discovery checkpoint, `pretrained:NAME`, or `module:factory` (a function that returns a
LatentController: metacontroller_agents.controllers), and `env_kwargs=` the wrapped env's
keyword arguments (e.g. {"task": "0-1-4-5"}). Because the env is built from its id and
plain arguments, gymnasium's check_env can rebuild it from its spec: it passes with no
skip flag.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

import metacontroller_envs  # noqa: F401  (registers the wrapped envs)
from metacontroller_agents.controllers import load_controller
from metacontroller_envs.registry import ids_of
from metacontroller_envs.wrappers import LatentActionWrapper

#: The controller of every registered latent env: the shipped base model and MetaController.
DEFAULT_CONTROLLER = "pretrained:PinPad-v0"

class LatentEnv(gym.Env):
    """A suite env whose action is the metacontroller's code z (LatentActionWrapper), built
    from plain arguments so that its spec rebuilds it.

    ## Arguments
    env_id: the wrapped env; controller: see controllers.load_controller; env_kwargs: the wrapped
    env's keyword arguments; threshold, observation: LatentActionWrapper's; device: where
    a checkpoint's model runs.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        env_id: str,
        controller: str = DEFAULT_CONTROLLER,
        env_kwargs: dict[str, Any] | None = None,
        threshold: float = 0.5,
        observation: str = "residual",
        device: str = "cpu",
        render_mode: str | None = None,
    ) -> None:
        inner = gym.make(env_id, render_mode=render_mode, **(env_kwargs or {}))
        self.wrapped = LatentActionWrapper(inner, load_controller(controller, device=device),
                                           threshold, observation)  # fmt: skip
        self.action_space = self.wrapped.action_space
        self.observation_space = self.wrapped.observation_space
        self.render_mode = render_mode

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        return self.wrapped.reset(seed=seed, options=options)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        return self.wrapped.step(action)

    def render(self) -> Any:
        return self.wrapped.render()

    def close(self) -> None:
        self.wrapped.close()


def latent_id(env_id: str) -> str:
    return f"Latent-{env_id}"


def register_latent_envs() -> None:
    """Register Latent-<id> for every env of the PinPad family (the shipped controller's)."""
    for env_id in ids_of("pinpad"):
        if latent_id(env_id) not in gym.registry:
            gym.register(latent_id(env_id), entry_point=f"{__name__}:LatentEnv",
                         kwargs={"env_id": env_id})  # fmt: skip


register_latent_envs()
