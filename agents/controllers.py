"""Any LatentController by name, for every command that drives the latent space: a
discovery checkpoint, `pretrained:NAME` (a shipped one), or `module:factory`, a function
that takes `num_envs` (or nothing, for one row) and returns a LatentController of the
user's own model:

    def make_controller(num_envs: int = 1) -> LatentController: ...
    mcenv train internal-rl --controller my_package.models:make_controller --env PinPad-Ladder2-v0
    gym.make("Latent-PinPad-v0", controller="my_package.models:make_controller")

`shipped_controller` below is such a factory (the shipped PinPad-v0 agent), a template.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path

from metacontroller_agents.pretrained import PREFIX
from metacontroller_envs.wrappers import LatentController

#: A controller given as `package.module:factory`.
FACTORY = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def is_factory(controller: str | Path) -> bool:
    """Whether `controller` names a `module:factory` (not a checkpoint file or a shipped
    agent)."""
    text = str(controller)
    return bool(FACTORY.fullmatch(text)) and not text.startswith(PREFIX) and not Path(text).exists()


def takes_num_envs(factory: Callable[..., object]) -> bool:
    """Whether a factory takes `num_envs` (one that takes nothing makes a one-row
    controller, enough for the latent env ids)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return True
    return "num_envs" in parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()
    )


def load_controller(
    controller: str | Path, num_envs: int = 1, device: str = "cpu", seed: int = 0
) -> LatentController:
    """The LatentController `controller` names, for `num_envs` rows: a factory's
    (factory(num_envs=num_envs), or factory() where it takes no num_envs), or the
    LatentAgent of a discovery checkpoint or pretrained:NAME on `device`. A ValueError
    says what was wrong."""
    if is_factory(controller):
        module, name = str(controller).split(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as error:
            raise ValueError(f"cannot load controller factory {controller}: {error}") from None
        try:
            made = factory(num_envs=num_envs) if takes_num_envs(factory) else factory()
        except TypeError as error:  # not a factory of this shape
            raise ValueError(f"cannot call controller factory {controller}: {error}") from None
        if not isinstance(made, LatentController):
            raise ValueError(f"{controller}(num_envs={num_envs}) returned "
                             f"{type(made).__name__}, not a LatentController")  # fmt: skip
        if made.num_envs != num_envs:
            raise ValueError(f"{controller}(num_envs={num_envs}) returned a controller for "
                             f"{made.num_envs} rows")  # fmt: skip
        return made
    from metacontroller_agents.latent import LatentAgent

    return LatentAgent.from_checkpoint(controller, num_envs, device=device, seed=seed)


def shipped_controller(num_envs: int = 1) -> LatentController:
    """A `module:factory` controller: the shipped PinPad-v0 base model and MetaController
    on the CPU (metacontroller_agents.controllers:shipped_controller)."""
    from metacontroller_agents.latent import LatentAgent

    return LatentAgent.pretrained("PinPad-v0", num_envs)


def add_controller_flag(
    parser: argparse.ArgumentParser, same_as: str, dest: str = "checkpoint"
) -> None:
    """--controller MODULE:FACTORY: any LatentController (metacontroller_agents.controllers),
    the same option as `same_as`, which also takes it."""
    parser.add_argument("--controller", dest=dest, default=None, metavar="MODULE:FACTORY",
                        help="a LatentController of your own model: a function that takes "
                             f"num_envs and returns one (the same as {same_as} "
                             "MODULE:FACTORY)")  # fmt: skip
