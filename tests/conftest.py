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
    from metacontroller_agents.checkpoint import model_state, save_checkpoint
    from metacontroller_agents.metacontroller import MetaController, MetaControllerConfig
    from metacontroller_agents.transformer import CausalTransformer, ModelConfig

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


@pytest.fixture
def check_resume(tmp_path):
    """check(train, kind, config, whole_run_policy): a run stopped after its first update
    (saved with the whole run's config, as if interrupted) and resumed ends with the same
    policy weights as the uninterrupted run."""
    import torch

    from metacontroller_agents.checkpoint import load_checkpoint, save_checkpoint

    def check(train, kind, config, whole_run_policy, first_update_episodes):
        path = tmp_path / "interrupted.pt"
        train(type(config)(**{**asdict(config), "episodes": first_update_episodes}), path,
              progress=False)  # fmt: skip
        saved = load_checkpoint(path, kind)
        content = {k: v for k, v in saved.items() if k not in ("format", "format_version", "kind")}
        save_checkpoint(path, kind, **{**content, "train_config": asdict(config)})
        train(config, path, resume=True, progress=False)
        resumed = load_checkpoint(path, kind)["policy"]
        for name, value in whole_run_policy.items():
            torch.testing.assert_close(resumed[name], value)

    return check


class CrashAfter(list):
    """A log that fails on its n-th entry, as if the run were killed there."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def append(self, item: dict) -> None:
        super().append(item)
        if len(self) == self.n:
            raise KeyboardInterrupt
