"""Discovery (the paper's App. C.4): a MetaController trained on a frozen base model.

loss = sum_t -log p(a_t | o_1..t, controlled stream) + alpha * KL(N(mu_t, Sigma_t) || N(0, I))
per real step (Eq. 3), the KL weight rising from 0 over `kl_warmup_steps`. AdamW with a
linear warm-up, then a constant learning rate. The data order and the sampled codes are
functions of (seed, step), so a resumed run replays an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from tqdm import tqdm

from metacontroller_agents.checkpoint import load_model, model_state
from metacontroller_agents.data import check_dataset_fits, resolve_device, to_torch
from metacontroller_agents.metacontroller import (
    SWITCH_THRESHOLD,
    MetaController,
    MetaControllerConfig,
    MetaOutput,
    controlled_forward,
)
from metacontroller_agents.runs import (
    RunOptions,
    batch_indices,
    dataset_env_spec,
    load_run,
    make_optimizer,
    save_run,
    start_job,
)
from metacontroller_agents.transformer import CausalTransformer
from metacontroller_envs.checks import check_count
from metacontroller_envs.data import load_episodes

if TYPE_CHECKING:
    from typing_extensions import Unpack


@dataclass
class DiscoveryConfig:
    """Discovery: training a MetaController on a frozen base model (App. C.4)."""

    RESUME_FREE: ClassVar[frozenset[str]] = frozenset({"device", "checkpoint_every", "steps"})
    """Fields a resumed run may change: where it computes, how often it saves, and its
    budget (the learning rate is constant after warm-up: more steps simply go on)."""

    base: str
    """Path of the base model's checkpoint (from `mcenv train bc`)."""
    dataset: str
    """Minari dataset id of clean expert data (the paper's D*, epsilon = 0)."""
    alpha: float = 0.05
    """Weight of KL(N(mu, Sigma) || N(0, I)) against the action NLL (one of the paper's
    swept values; 0.3 and above collapsed the codes onto the prior on our base models)."""
    kl_warmup_steps: int = 300
    """Steps over which the KL weight rises linearly from 0 to alpha (0: alpha from the
    start). Without it the codes can collapse onto the prior before the controller has
    learned to use them."""
    layer: int | None = None
    """The base model layer it controls (default: depth // 2)."""
    controller_overrides: dict[str, Any] = field(default_factory=dict)
    """MetaControllerConfig fields that replace the paper's sizes (e.g. {"latent_dim": 4})."""
    force_switch: bool = False
    """Ablation: beta = 1 at every step."""
    switch_noise: bool = True
    """Sample the switch by the Gumbel-Sigmoid trick in training (MetaControllerConfig's
    switch_noise, the paper's grid-world setting): measured on PinPad, it makes the gate
    binary at depth L/2. False: the switch's probability."""
    cotrain: bool = False
    """Ablation: train the base model too (from its checkpoint's weights)."""
    steps: int = 1500
    """Optimiser steps."""
    batch_size: int = 64
    """Episodes per batch."""
    lr: float = 1e-3
    """AdamW learning rate (the paper's 1e-3; constant after warm-up)."""
    weight_decay: float = 0.03
    """AdamW weight decay (the paper's 0.03)."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up."""
    grad_clip: float = 1.0
    """Gradient norm clipping."""
    checkpoint_every: int = 1000
    """Steps between checkpoints."""
    seed: int = 0
    """Seeds the initialisation, the data order and the sampled codes."""
    device: str = "auto"
    """"cpu", "cuda" or "auto"."""

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "checkpoint_every"):
            check_count(name, getattr(self, name))
        if not self.alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha!r}")
        check_count("kl_warmup_steps", self.kl_warmup_steps, minimum=0)
        known = {f.name for f in dataclasses.fields(MetaControllerConfig)}
        known -= {"width", "layer", "force_switch", "switch_noise"}  # set from the base and here
        unknown = set(self.controller_overrides) - known
        if unknown:
            raise ValueError(
                f"unknown fields in controller_overrides: {sorted(unknown)}; "
                f"known are {sorted(known)} (layer, force_switch and switch_noise are "
                "DiscoveryConfig's own fields)"
            )


def discovery_loss(
    base: CausalTransformer,
    meta: MetaController,
    batch: dict[str, torch.Tensor],
    alpha: float,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, dict[str, float], MetaOutput]:
    """Action NLL of the controlled base model + alpha x KL(N(mu, Sigma) || N(0, I)), both
    per real step (Eq. 3 of the paper)."""
    out, meta_out = controlled_forward(base, meta, batch, generator)
    mask = batch["mask"]
    weights = mask.float()
    steps = weights.sum().clamp(min=1)
    nll = -base.action_distribution(out.action).log_prob(batch["actions"])
    action_loss = (nll * weights).sum() / steps
    kl = (meta_out.kl() * weights).sum() / steps
    switches = ((meta_out.beta[:, 1:] > SWITCH_THRESHOLD) & mask[:, 1:]).sum(1).float()
    metrics = {
        "action_nll": action_loss.item(),
        "kl": kl.item(),
        "switches_per_episode": switches.mean().item(),
    }
    return action_loss + alpha * kl, metrics, meta_out


def train_discovery(
    config: DiscoveryConfig, checkpoint: str | Path, **options: Unpack[RunOptions]
) -> Path:
    """Train a MetaController on `config.base` (frozen unless `cotrain`) and return the
    checkpoint, which also holds the base model so it stands on its own."""
    job = start_job(checkpoint, options)
    checkpoint = job.checkpoint
    device = resolve_device(config.device)
    base, _ = load_model(config.base, device)
    spec = dataset_env_spec(config.dataset)
    data = load_episodes(config.dataset, spec)
    check_dataset_fits(data, config.dataset, base.config)
    meta_config = MetaControllerConfig.for_base(
        base.config, config.layer, force_switch=config.force_switch,
        switch_noise=config.switch_noise, **config.controller_overrides,
    )  # fmt: skip
    torch.manual_seed(config.seed)
    meta = MetaController(meta_config).to(device)
    base.requires_grad_(config.cotrain)
    trained = list(meta.parameters()) + (list(base.parameters()) if config.cotrain else [])
    optimizer = make_optimizer(trained, config.lr, config.weight_decay)  # the paper's betas
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / config.warmup_steps)
    )
    start_step = 0
    if job.resume and checkpoint.exists():
        saved = load_run(checkpoint, "discovery", config, device)
        meta.load_state_dict(saved["controller"])
        base.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        start_step = saved["step"]

    def save(step: int, metrics: dict) -> None:
        save_run(checkpoint, "discovery", config, spec, optimizer, scheduler, step, metrics,
                 **model_state(base), controller_config=dataclasses.asdict(meta_config),
                 controller=meta.state_dict())  # fmt: skip

    bar = tqdm(
        range(start_step, config.steps), initial=start_step, total=config.steps,
        desc="train discover", disable=not job.progress,
    )  # fmt: skip
    metrics: dict = {}
    order_cache: dict = {}
    tokens, clock = 0, time.perf_counter()
    for step in bar:
        base.train(config.cotrain)
        meta.train()
        indices = batch_indices(data, config.batch_size, config.seed, step, order_cache)
        batch = to_torch(data.padded(indices), device)
        # the codes' noise is a function of (seed, step): resuming replays it exactly
        generator = torch.Generator(device=device).manual_seed(config.seed * 1_000_003 + step)
        alpha = config.alpha * min(1.0, (step + 1) / max(1, config.kl_warmup_steps))
        loss, metrics, _ = discovery_loss(base, meta, batch, alpha, generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, config.grad_clip)
        optimizer.step()
        scheduler.step()
        tokens += int(batch["mask"].sum())
        metrics["tokens_per_s"] = tokens / (time.perf_counter() - clock)
        metrics["step"] = step + 1
        bar.set_postfix(nll=f"{metrics['action_nll']:.4f}", kl=f"{metrics['kl']:.3f}",
                        sw=f"{metrics['switches_per_episode']:.2f}")  # fmt: skip
        job.record(metrics)
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            save(step + 1, metrics)
    return checkpoint
