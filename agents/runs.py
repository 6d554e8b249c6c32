"""What every trainer of the bundled agent shares: reading its config, the data order, the
optimiser, and a run's checkpoint (start, resume, save).

A config class may declare `RESUME_FREE`, the fields that may change when a run resumes
(device, evaluation and checkpoint cadence, a budget nothing is scheduled over); every
other field defines the run and must match the checkpoint's.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch
from gymnasium.envs.registration import EnvSpec
from torch import nn

from metacontroller_agents.checkpoint import load_checkpoint, save_checkpoint
from metacontroller_envs.data import EpisodeArrays
from metacontroller_envs.data.episodes import open_dataset


def load_config(cls: type, path: str | Path | None, **overrides: Any) -> Any:
    """A config from a JSON file of its fields (unknown keys are an error), then the
    overrides that are not None (the command-line flags that were given)."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise ValueError(f"cannot read config {path}: {error}") from None
        if not isinstance(values, dict):
            raise ValueError(f"config {path} must hold a JSON object of {cls.__name__} fields")
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}: known are {sorted(names)}")
    try:
        return cls(**values)
    except TypeError as error:
        raise ValueError(f"bad {cls.__name__}: {error}") from None


def dataset_env_spec(dataset_id: str) -> EnvSpec:
    """The spec (id and kwargs) of the env a dataset was collected in."""
    spec = open_dataset(dataset_id).spec.env_spec
    if spec is None:
        raise ValueError(f"dataset {dataset_id} does not record its env; collect it with mcenv")
    return spec


#: Batches are cut from groups of this many batches sorted by episode length, so a batch
#: holds episodes of similar length (less padding) while the order stays random.
LENGTH_GROUP = 32


def epoch_batches(data: EpisodeArrays, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The batches of epoch `epoch`, a pure function of (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(data.num_episodes)
    group = batch_size * LENGTH_GROUP
    batches = []
    for start in range(0, len(order), group):
        chunk = order[start : start + group]
        chunk = chunk[np.argsort(data.lengths[chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    batches = [b for b in batches if len(b) == batch_size] or batches[:1]
    return [batches[i] for i in rng.permutation(len(batches))]


def batch_indices(
    data: EpisodeArrays, batch_size: int, seed: int, step: int, cache: dict
) -> np.ndarray:
    """The episodes of optimiser step `step` (`cache` keeps the current epoch's batches):
    a function of (seed, step), so a resumed run takes the batches an uninterrupted one
    would have taken."""
    per_epoch = max(1, data.num_episodes // batch_size)  # len(epoch_batches(...))
    epoch, offset = divmod(step, per_epoch)
    if cache.get("epoch") != epoch:
        cache["epoch"], cache["batches"] = epoch, epoch_batches(data, batch_size, seed, epoch)
    return cache["batches"][offset]


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


class RunOptions(TypedDict, total=False):
    """The keyword options of every checkpointed trainer (train_bc, train_discovery,
    train_internal_rl, train_evolution)."""

    resume: bool  # continue the run in the checkpoint if it exists (default False)
    overwrite: bool  # a new run may replace an existing checkpoint (default False)
    progress: bool  # show a progress bar (default True)
    log: list[dict] | None  # also append each logged metrics dict here (default None)


@dataclass(frozen=True)
class TrainerJob:
    """A trainer's checkpoint and its RunOptions."""

    checkpoint: Path
    resume: bool = False
    overwrite: bool = False
    progress: bool = True
    log: list[dict] | None = None

    def record(self, metrics: dict) -> None:
        """Hand a copy of `metrics` to the caller's log, if it gave one."""
        if self.log is not None:
            self.log.append(dict(metrics))


def start_job(checkpoint: str | Path, options: RunOptions) -> TrainerJob:
    """The job of a trainer called with `checkpoint` and `options`: a TypeError for an
    unknown option, a ValueError if a new run would replace a checkpoint unasked."""
    known = sorted(RunOptions.__annotations__)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise TypeError(f"unknown trainer options {unknown}: known are {known}")
    job = TrainerJob(Path(checkpoint), **options)
    check_new_run(job.checkpoint, job.resume, job.overwrite)
    return job


def check_new_run(checkpoint: Path, resume: bool, overwrite: bool) -> None:
    """A new run never replaces an existing checkpoint unless asked to."""
    if checkpoint.exists() and not (resume or overwrite):
        raise ValueError(
            f"checkpoint {checkpoint} exists: pass resume=True (--resume) to continue that run "
            "or overwrite=True (--overwrite) to start a new one in its place"
        )


def resume_free(cls: type) -> frozenset[str]:
    """The fields of config class `cls` that may change on resume (its RESUME_FREE)."""
    return frozenset(getattr(cls, "RESUME_FREE", ()))


def config_differences(saved: dict[str, Any], config: object) -> list[str]:
    """The fields that define the run (all but RESUME_FREE) where the checkpoint's config
    `saved` and `config` differ, as 'name: saved value saved, new value now'."""
    cls = type(config)
    # a field added since the checkpoint was written took its default there
    defaults = {f.name: f.default_factory() if f.default_factory is not dataclasses.MISSING
                else f.default for f in dataclasses.fields(cls)}  # fmt: skip
    theirs = {**defaults, **saved}
    ours = dataclasses.asdict(config)
    absent = object()
    differ = []
    for name in sorted((theirs.keys() | ours.keys()) - resume_free(cls)):
        old, new = theirs.get(name, absent), ours.get(name, absent)
        if old != new:
            shown = ["(not a field)" if value is absent else repr(value) for value in (old, new)]
            differ.append(f"{name}: {shown[0]} saved, {shown[1]} now")
    return differ


def load_run(checkpoint: Path, kind: str, config: object, device: torch.device) -> dict:
    """The checkpoint of the run being resumed, whose config must equal `config` in every
    field but those of the config class's RESUME_FREE."""
    saved = load_checkpoint(checkpoint, kind, device)
    differ = config_differences(saved["train_config"], config)
    if differ:
        free = ", ".join(sorted(resume_free(type(config)))) or "none"
        raise ValueError(
            f"checkpoint {checkpoint} was trained with a different config: {'; '.join(differ)} "
            f"(only these fields may change on resume: {free})"
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


#: The runs whose trained policy another run may start from (InternalRLConfig.init_policy).
POLICY_KINDS = ("internal_rl", "evolution")


def load_initial_policy(policy: nn.Module, path: str | Path, device: torch.device) -> None:
    """Start `policy` from the policy an earlier run trained (a curriculum: the previous
    rung's run), or a ValueError that says why it cannot."""
    saved = load_checkpoint(path, POLICY_KINDS, device)
    try:
        policy.load_state_dict(saved["policy"])
    except (KeyError, RuntimeError) as error:
        raise ValueError(
            f"init_policy {path} does not hold a policy of this run's shape (a latent policy "
            f"or, with raw_actions, a base model like this one): {error}"
        ) from None


class PolicyCheckpoint:
    """A policy-training run's checkpoint (internal RL and ES): the policy, its optimiser,
    the history of success against episodes and the iterations done. `resume` picks up an
    existing one."""

    def __init__(
        self, path: Path, kind: str, config: object, policy: nn.Module,
        optimizer: torch.optim.Optimizer, device: torch.device, resume: bool,
    ) -> None:  # fmt: skip
        self.path, self.kind, self.config = path, kind, config
        self.policy, self.optimizer = policy, optimizer
        self.history: list[dict] = []
        self.start = 0
        if resume and path.exists():
            saved = load_run(path, kind, config, device)
            policy.load_state_dict(saved["policy"])
            optimizer.load_state_dict(saved["optimizer"])
            self.history, self.start = saved["history"], saved["iteration"]

    def save(self, iteration: int) -> None:
        save_checkpoint(self.path, self.kind, train_config=dataclasses.asdict(self.config),
                        policy=self.policy.state_dict(), optimizer=self.optimizer.state_dict(),
                        history=self.history, iteration=iteration)  # fmt: skip
