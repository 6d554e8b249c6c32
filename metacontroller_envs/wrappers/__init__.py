"""Wrappers of the suite's envs. `LatentActionWrapper` turns the metacontroller's latent code
into the action space; it reaches the agent only through the `LatentController` Protocol,
so importing this package never loads torch."""

from metacontroller_envs.wrappers.check_controller import ControllerError, check_controller
from metacontroller_envs.wrappers.latent import (
    LatentActionVectorWrapper,
    LatentActionWrapper,
    LatentController,
    check_codes,
    switch_fires,
)

__all__ = [
    "ControllerError",
    "LatentActionVectorWrapper",
    "LatentActionWrapper",
    "LatentController",
    "check_codes",
    "check_controller",
    "switch_fires",
]
