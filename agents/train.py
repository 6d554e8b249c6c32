"""Behaviour cloning of the base model on an expert dataset, readable top to bottom.

loss = sum_t -log p(a_t | o_1..t, a_1..t-1) + lambda * (next-observation loss), averaged over
real steps. AdamW, warm-up then cosine decay, gradient clipping, bfloat16 autocast on CUDA.
The data order is a pure function of (seed, step), so a run resumed from a checkpoint takes
exactly the batches an uninterrupted run would have taken.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from gymnasium.envs.registration import EnvSpec
from tqdm import tqdm

from metacontroller_agents.checkpoint import (
    load_checkpoint,
    load_model,
    model_state,
    save_checkpoint,
)
from metacontroller_agents.config import (
    BCConfig,
    DiscoveryConfig,
    MetaControllerConfig,
    ModelConfig,
)
from metacontroller_agents.data import check_dataset_fits, resolve_device, to_torch
from metacontroller_agents.evaluate import evaluate_model
from metacontroller_agents.metacontroller import (
    SWITCH_THRESHOLD,
    MetaController,
    MetaOutput,
    controlled_forward,
)
from metacontroller_agents.transformer import CausalTransformer, ModelOutput
from metacontroller_envs.data import EpisodeArrays, load_episodes
from metacontroller_envs.data.episodes import open_dataset


def dataset_env_spec(dataset_id: str) -> EnvSpec:
    """The spec (id and kwargs) of the env a dataset was collected in."""
    spec = open_dataset(dataset_id).spec.env_spec
    if spec is None:
        raise ValueError(f"dataset {dataset_id} does not record its env; collect it with mcenv")
    return spec


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


#: Batches are cut from groups of this many batches sorted by episode length, so a batch
#: holds episodes of similar length (less padding) while the order stays random.
LENGTH_GROUP = 32


def epoch_batches(data: EpisodeArrays, config: BCConfig, epoch: int) -> list[np.ndarray]:
    """The batches of epoch `epoch`, a pure function of (seed, epoch)."""
    rng = np.random.default_rng([config.seed, epoch])
    order = rng.permutation(data.num_episodes)
    group = config.batch_size * LENGTH_GROUP
    batches = []
    for start in range(0, len(order), group):
        chunk = order[start : start + group]
        chunk = chunk[np.argsort(data.lengths[chunk], kind="stable")]
        batches += [
            chunk[i : i + config.batch_size] for i in range(0, len(chunk), config.batch_size)
        ]
    batches = [b for b in batches if len(b) == config.batch_size] or batches[:1]
    return [batches[i] for i in rng.permutation(len(batches))]


def batch_indices(data: EpisodeArrays, config: BCConfig, step: int, cache: dict) -> np.ndarray:
    """The episodes of optimiser step `step` (`cache` keeps the current epoch's batches)."""
    per_epoch = max(1, data.num_episodes // config.batch_size)  # len(epoch_batches(...))
    epoch, offset = divmod(step, per_epoch)
    if cache.get("epoch") != epoch:
        cache["epoch"], cache["batches"] = epoch, epoch_batches(data, config, epoch)
    return cache["batches"][offset]


def check_new_run(checkpoint: Path, resume: bool, overwrite: bool) -> None:
    """A new run never replaces an existing checkpoint unless asked to."""
    if checkpoint.exists() and not (resume or overwrite):
        raise ValueError(
            f"checkpoint {checkpoint} exists: pass resume=True (--resume) to continue that run "
            "or overwrite=True (--overwrite) to start a new one in its place"
        )


def load_run(
    checkpoint: Path,
    kind: str,
    config: object,
    device: torch.device,
    budget: tuple[str, ...] = (),
) -> dict:
    """The checkpoint of the run being resumed, which must have the same config except for
    the `budget` fields: where nothing is scheduled over the budget, a larger one simply
    continues the run."""
    saved = load_checkpoint(checkpoint, kind, device)
    # a field added since the checkpoint was written took its default there
    defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING
                else f.default for f in dataclasses.fields(config)}  # fmt: skip
    ours = {k: v for k, v in dataclasses.asdict(config).items() if k not in budget}
    theirs = {k: v for k, v in {**defaults, **saved["train_config"]}.items() if k not in budget}
    if ours != theirs:
        raise ValueError(
            f"checkpoint {checkpoint} was trained with a different config: {saved['train_config']}"
        )
    return saved


def save_run(
    checkpoint: Path,
    kind: str,
    config: object,
    spec: EnvSpec,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    step: int,
    metrics: dict,
    **content: object,
) -> None:
    """A training run's checkpoint: what it trained (`content`), its config and env, and the
    optimiser state that `load_run` needs to resume it."""
    save_checkpoint(
        checkpoint,
        kind,
        **content,
        train_config=dataclasses.asdict(config),
        env_spec=spec.to_json(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        step=step,
        metrics=metrics,
    )


def learning_rate_factor(config: BCConfig, step: int) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_optimizer(
    parameters: list[torch.nn.Parameter],
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    """AdamW; weight decay on matrices only (not on norms, biases and embeddings' gains)."""
    decay = [p for p in parameters if p.ndim >= 2]
    other = [p for p in parameters if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other}]
    return torch.optim.AdamW(groups, lr=lr, weight_decay=0.0, betas=betas)


def train_bc(
    config: BCConfig,
    checkpoint: str | Path,
    resume: bool = False,
    progress: bool = True,
    log: list[dict] | None = None,
    overwrite: bool = False,
) -> Path:
    """Train (or resume, if `resume` and the checkpoint exists) and return the checkpoint.
    An existing checkpoint is never replaced by a new run unless `overwrite`."""
    checkpoint = Path(checkpoint)
    check_new_run(checkpoint, resume, overwrite)
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
    if resume and checkpoint.exists():
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

    bar = tqdm(
        range(start_step, config.steps), initial=start_step, total=config.steps,
        desc="train bc", disable=not progress,
    )  # fmt: skip
    metrics: dict = {}
    order_cache: dict = {}
    tokens, clock = 0, time.perf_counter()
    for step in bar:
        model.train()
        batch = to_torch(data.padded(batch_indices(data, config, step, order_cache)), device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out = model(batch["observations"][:, :-1], model.previous_actions(batch["actions"]))
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
        if log is not None:
            log.append(dict(metrics))
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            save(step + 1, metrics)
    return checkpoint


# -- discovery: a MetaController on the frozen base model ---------------------------------


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
    config: DiscoveryConfig,
    checkpoint: str | Path,
    resume: bool = False,
    progress: bool = True,
    log: list[dict] | None = None,
    overwrite: bool = False,
) -> Path:
    """Train a MetaController on `config.base` (frozen unless `cotrain`) and return the
    checkpoint, which also holds the base model so it stands on its own."""
    checkpoint = Path(checkpoint)
    check_new_run(checkpoint, resume, overwrite)
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
    if resume and checkpoint.exists():
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
        desc="train discover", disable=not progress,
    )  # fmt: skip
    metrics: dict = {}
    order_cache: dict = {}
    tokens, clock = 0, time.perf_counter()
    for step in bar:
        base.train(config.cotrain)
        meta.train()
        batch = to_torch(data.padded(batch_indices(data, config, step, order_cache)), device)
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
        if log is not None:
            log.append(dict(metrics))
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            save(step + 1, metrics)
    return checkpoint
