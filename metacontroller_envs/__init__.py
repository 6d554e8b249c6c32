"""metacontroller-envs: Gymnasium environments with compositional subgoals.

Importing the package registers every environment, so `gym.make("PinPad-v0")` works after
`import metacontroller_envs`. This package never imports torch.
"""

from __future__ import annotations

from importlib.metadata import version as _version

from metacontroller_envs.pinpad import PinPadEnv, PinPadExpert, PinPadVectorEnv
from metacontroller_envs.registry import ENTRIES, register_all

__version__ = _version("metacontroller-envs")

register_all()

#: Every env id this package registers (the table is metacontroller_envs.registry).
ENV_IDS: tuple[str, ...] = tuple(entry.id for entry in ENTRIES)

__all__ = ["ENV_IDS", "PinPadEnv", "PinPadExpert", "PinPadVectorEnv", "__version__"]
