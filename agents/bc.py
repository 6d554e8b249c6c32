"""Behaviour cloning of the base model on an expert dataset, readable top to bottom.

loss = sum_t -log p(a_t | o_1..t, a_1..t-1) + lambda * (next-observation loss), averaged over
real steps. AdamW, warm-up then cosine decay, gradient clipping, bfloat16 autocast on CUDA.
The data order is a pure function of (seed, step), so a run resumed from a checkpoint takes
exactly the batches an uninterrupted run would have taken.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym
import torch
import torch.nn.functional as F
from tqdm import tqdm

from metacontroller_agents.checkpoint import model_state
from metacontroller_agents.data import resolve_device, to_torch
from metacontroller_agents.evaluate import evaluate_model
from metacontroller_agents.runs import (
    RunOptions,
    batch_indices,
    dataset_env_spec,
    load_run,
    make_optimizer,
    save_run,
    start_job,
)
from metacontroller_agents.transformer import PRESETS, CausalTransformer, ModelConfig, ModelOutput
from metacontroller_envs.checks import check_count
from metacontroller_envs.data import load_episodes

if TYPE_CHECKING:
    from typing_extensions import Unpack

#: Training defaults per preset: the paper's learning rate, and a faster schedule for small.
TRAIN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"lr": 3e-4, "steps": 20000},
    "small": {"lr": 2e-3, "steps": 6000},
}


@dataclass
class BCConfig:
    """Behaviour cloning: the data, the optimiser and the schedule."""

    RESUME_FREE: ClassVar[frozenset[str]] = frozenset(
        {"device", "amp", "compile", "eval_every", "eval_episodes", "checkpoint_every",
         "snapshot_every"}
    )  # fmt: skip
    """Fields a resumed run may change: where and how fast it computes, how often it
    evaluates and saves. Not `steps`: the cosine decay is scheduled over it."""

    dataset: str
    """Minari dataset id, e.g. pinpad/PinPad-v0/expert-v0."""
    preset: str = field(default="small", metadata={"choices": tuple(PRESETS)})
    """Model size: "small" or "paper" (PRESETS)."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """ModelConfig fields that replace the preset's (e.g. {"depth": 2})."""
    steps: int | None = None
    """Optimiser steps (default: the preset's, TRAIN_PRESETS)."""
    batch_size: int = 64
    """Episodes per batch."""
    lr: float | None = None
    """AdamW peak learning rate (default: the preset's; the paper's is 3e-4)."""
    weight_decay: float = 0.03
    """AdamW weight decay (the paper's 0.03)."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up; then cosine decay to 10%."""
    grad_clip: float = 1.0
    """Gradient norm clipping."""
    obs_loss_weight: float = 0.01
    """lambda: weight of the next-observation loss (the paper uses 0 or 0.01)."""
    token_loss_weight: float = 1.0
    """Weight of an auxiliary loss: a_t predicted from o_t's token alone (see the model's
    token_action_head). 0 turns it off."""
    eval_every: int = 1000
    """Steps between evaluation rollouts (0: only at the end)."""
    eval_episodes: int = 256
    """Episodes per evaluation rollout."""
    checkpoint_every: int = 1000
    """Steps between checkpoints."""
    snapshot_every: int = 0
    """Also keep the checkpoint of every N-th step as <checkpoint stem>.step<N>.pt, for
    measures against training steps (0: none; a multiple of checkpoint_every)."""
    seed: int = 0
    """Seeds the initialisation and the data order."""
    device: str = "auto"
    """"cpu", "cuda" or "auto"."""
    amp: bool = True
    """bfloat16 autocast on CUDA (ignored on CPU, where it measured 8x slower)."""
    compile: bool = False
    """torch.compile the training forward pass (measured 1.65x tokens/s on the 2-core CPU,
    benchmarks/bc_speed.py; about two minutes of compiling first)."""

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}: use one of {list(PRESETS)}")
        for name, value in TRAIN_PRESETS[self.preset].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        for name in ("steps", "batch_size", "eval_episodes", "checkpoint_every"):
            check_count(name, getattr(self, name))
        check_count("snapshot_every", self.snapshot_every, minimum=0)
        if self.snapshot_every % self.checkpoint_every:
            raise ValueError(
                f"snapshot_every ({self.snapshot_every}) must be a multiple of "
                f"checkpoint_every ({self.checkpoint_every}): snapshots are checkpoints kept"
            )
        unknown = set(self.model_overrides) - {f.name for f in dataclasses.fields(ModelConfig)}
        if unknown:
            raise ValueError(f"unknown model fields in model_overrides: {sorted(unknown)}")


def bc_loss(
    model: CausalTransformer,
    out: ModelOutput,
    batch: dict[str, torch.Tensor],
    obs_weight: float,
    token_weight: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Action NLL (+ obs_weight x next-observation loss + token_weight x the action NLL of
    o_t's token alone), averaged over real steps."""
    mask = batch["mask"].float()
    steps = mask.sum().clamp(min=1)
    actions = batch["actions"]
    if model.discrete:
        nll = F.cross_entropy(out.action.float().transpose(1, 2), actions, reduction="none")
        accuracy = ((out.action.argmax(-1) == actions).float() * mask).sum() / steps
    else:
        nll = -model.action_distribution(out.action).log_prob(actions.float())
        accuracy = torch.zeros(())
    action_loss = (nll * mask).sum() / steps
    loss = action_loss
    metrics = {"action_nll": action_loss.item(), "accuracy": accuracy.item()}
    if token_weight > 0 and model.discrete:
        token_nll = F.cross_entropy(
            out.token_action.float().transpose(1, 2), actions, reduction="none"
        )
        token_loss = (token_nll * mask).sum() / steps
        loss = loss + token_weight * token_loss
        metrics["token_nll"] = token_loss.item()
    if obs_weight > 0:
        config = model.config
        target = batch["observations"][:, 1:].flatten(2).float() / config.obs_high
        prediction = out.next_obs.float()
        if config.binary_obs:
            per_value = F.binary_cross_entropy_with_logits(prediction, target, reduction="none")
        else:
            per_value = (prediction - target) ** 2
        obs_loss = (per_value.mean(-1) * mask).sum() / steps
        loss = loss + obs_weight * obs_loss
        metrics["obs_loss"] = obs_loss.item()
    return loss, metrics


def learning_rate_factor(config: BCConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10% at `config.steps`."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def snapshot_path(checkpoint: Path, step: int) -> Path:
    """Where `snapshot_every` keeps the checkpoint of `step`."""
    return checkpoint.with_name(f"{checkpoint.stem}.step{step}{checkpoint.suffix}")


def train_bc(config: BCConfig, checkpoint: str | Path, **options: Unpack[RunOptions]) -> Path:
    """Train (or resume, if `resume` and the checkpoint exists) and return the checkpoint.
    An existing checkpoint is never replaced by a new run unless `overwrite`."""
    job = start_job(checkpoint, options)
    checkpoint = job.checkpoint
    device = resolve_device(config.device)
    spec = dataset_env_spec(config.dataset)
    env = gym.make(spec)
    data = load_episodes(config.dataset, spec)  # checks the spaces against its own env
    model_config = ModelConfig.for_env(env, config.preset, **config.model_overrides)
    longest = int(data.lengths.max()) + 1
    if model_config.max_len < longest:
        model_config = dataclasses.replace(model_config, max_len=longest)
    torch.manual_seed(config.seed)
    model = CausalTransformer(model_config).to(device)
    optimizer = make_optimizer(
        list(model.parameters()), config.lr, config.weight_decay, betas=(0.9, 0.95)
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: learning_rate_factor(config, step)
    )
    start_step = 0
    if job.resume and checkpoint.exists():
        saved = load_run(checkpoint, "bc", config, device)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        start_step = saved["step"]
    autocast = device.type == "cuda" and config.amp
    eval_every = config.eval_every or config.steps

    def save(step: int, metrics: dict) -> None:
        save_run(checkpoint, "bc", config, spec, optimizer, scheduler, step, metrics,
                 **model_state(model))  # fmt: skip
        if config.snapshot_every and step % config.snapshot_every == 0:
            shutil.copyfile(checkpoint, snapshot_path(checkpoint, step))

    forward = torch.compile(model) if config.compile else model  # shares model's weights

    bar = tqdm(
        range(start_step, config.steps), initial=start_step, total=config.steps,
        desc="train bc", disable=not job.progress,
    )  # fmt: skip
    metrics: dict = {}
    order_cache: dict = {}
    tokens, clock = 0, time.perf_counter()
    for step in bar:
        model.train()
        indices = batch_indices(data, config.batch_size, config.seed, step, order_cache)
        batch = to_torch(data.padded(indices), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = forward(batch["observations"][:, :-1], model.previous_actions(batch["actions"]))
            loss, metrics = bc_loss(
                model, out, batch, config.obs_loss_weight, config.token_loss_weight
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        tokens += int(batch["mask"].sum())
        metrics["tokens_per_s"] = tokens / (time.perf_counter() - clock)
        metrics["step"] = step + 1
        bar.set_postfix(loss=f"{loss.item():.4f}", acc=f"{metrics['accuracy']:.3f}",
                        tok_s=f"{metrics['tokens_per_s']:.0f}")  # fmt: skip
        if (step + 1) % eval_every == 0 or step + 1 == config.steps:
            report = evaluate_model(model, spec, config.eval_episodes, device, seed=10**6)
            metrics.update(success=report.success_rate, eval_return=report.mean_return)
            if report.free_play_successes is not None:
                metrics["free_play"] = report.free_play_successes / report.episodes
            bar.write(f"step {step + 1}: {report.line()}")
        job.record(metrics)
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            save(step + 1, metrics)
    return checkpoint
