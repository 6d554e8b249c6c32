"""Shared fixtures: headless pygame, and a tiny discovery checkpoint for the latent agents."""

import os
from dataclasses import asdict

import pytest

os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
os.environ.setdefault("SDL_AUDIODRIVER", "dummy")


@pytest.fixture(scope="session")
def discovery_checkpoint(tmp_path_factory):
    """A tiny random base model and MetaController, saved as `mcenv train discover` does;
    its switch bias 0.5 fires every few steps."""
    import gymnasium as gym
    import torch

    import metacontroller_envs  # noqa: F401
    from agents.checkpoint import model_state, save_checkpoint
    from agents.config import MetaControllerConfig, ModelConfig
    from agents.metacontroller import MetaController
    from agents.transformer import CausalTransformer

    torch.manual_seed(0)
    # no planner: random weights then walk into colours often, so short RL runs see both
    # successes and failures
    config = ModelConfig.for_env(gym.make("PinPad-v0"), "small", width=32, depth=2, heads=2,
                                 mlp=64, plan_steps=0, goal_head=False)  # fmt: skip
    base = CausalTransformer(config).eval()
    meta = MetaController(MetaControllerConfig.for_base(config)).eval()
    with torch.no_grad():
        meta.decoder[-1].weight.normal_(0, 0.5)
        meta.switch_output.bias.fill_(0.5)
    path = tmp_path_factory.mktemp("ck") / "discover.pt"
    save_checkpoint(path, "discovery", **model_state(base), controller_config=asdict(meta.config),
                    controller=meta.state_dict())  # fmt: skip
    return str(path)
