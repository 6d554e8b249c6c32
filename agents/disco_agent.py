"""An agent trained with Disco103 (agents/disco.py) as its update rule, top to bottom.

The actor reads an observation with one of our encoders (PinPad's grid re-centred on the
agent, or an MLP for any vector) and emits what the rule needs: policy logits [A], a
prediction y [600] and, through a one-step action model (an LSTM cell fed each action),
per action a prediction z [A, 600], categorical Q logits [A, 601] and the next policy
aux_pi [A, A] (as DeepMind's MLP agent for Disco103).

`num_envs` envs step together (Gymnasium's next-step autoreset: the step after an episode
ends only resets it; the rule's data format has these steps too and the loss masks them).
Every `rollout_len` steps the new trajectories join a FIFO replay of recent ones; each
learner step samples `batch_size` of them, runs the actor and its Polyak target network
(coefficient 0.9) on them, asks the rule for targets (carrying its meta state from step to
step) and takes an Adam step on the rule's loss, averaged over the real steps.
Success against episodes is logged in the checkpoint's `history`.

The rule is discrete-action only: a continuous action space is refused with a ValueError.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch import nn
from tqdm import tqdm

from metacontroller_agents.checkpoint import load_checkpoint, save_checkpoint
from metacontroller_agents.data import resolve_device
from metacontroller_agents.disco import (
    NUM_BINS,
    PREDICTION_SIZE,
    AgentOutputs,
    Disco103,
    DiscoHyperParams,
    LSTMCell,
    MetaState,
    Mlp,
    RuleInputs,
)
from metacontroller_agents.runs import check_new_run, load_run
from metacontroller_agents.transformer import ENCODER_CLASSES, ModelConfig, goal_mixture
from metacontroller_envs.checks import check_count, check_env_kwargs

KIND = "disco"


@dataclass
class DiscoConfig:
    """Training an agent with the Disco103 update rule."""

    RESUME_FREE: ClassVar[frozenset[str]] = frozenset(
        {"device", "checkpoint_every", "log_every", "episodes", "steps", "until_success"}
    )
    """Fields a resumed run may change: where it computes, how often it saves and logs a
    success point, and its budgets (nothing is scheduled over them: a run simply goes on)."""

    env: str = "PinPad-v0"
    """A registered env id with a Discrete action space (a vector entry point is used when
    the env has one)."""
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of gym.make_vec for `env` (e.g. {"task_in_obs": true})."""
    episodes: int = 20000
    """Budget: finished training episodes."""
    steps: int = 0
    """Stop after this many learner steps as well (0: no limit)."""
    until_success: float = 0.0
    """Stop as well at the first point of the success history, logged in this stage, that
    reaches this (0: never): a curriculum stage then ends on competence rather than at a
    step count that suited one seed. Points from `start_from` or before a resume count
    only if logged since the stage began."""
    num_envs: int = 32
    """Envs stepped side by side."""
    rollout_len: int = 16
    """Transitions per trajectory (T); each rollout adds num_envs trajectories."""
    batch_size: int = 32
    """Trajectories per learner step, drawn uniformly from the replay."""
    replay_capacity: int = 256
    """Trajectories the FIFO replay holds."""
    updates_per_rollout: int = 1
    """Learner steps per rollout (with batch_size / num_envs: how often data is reused)."""
    discount: float = DiscoHyperParams.discount
    """gamma of the Retrace Q targets, whose advantages the meta-network reads (Disco103's
    0.997 by default). Lower values make a longer way to a reward cost more."""
    lr: float = 3e-4
    """Adam learning rate (Disco103's agents used 3e-4; DeepMind's optimiser also clips
    each Adam step to [-1, 1] before scaling by it, which Adam's steps rarely exceed)."""
    width: int = 256
    """Width of the observation encoder's output."""
    model_width: int = 128
    """Hidden size of the action model and of the z, q and aux_pi heads."""
    goal_head: bool = True
    """PinPad: the policy is the base model's goal mixture, p(c) over colours read from the
    features, then the planner's way to c (`metacontroller_agents.transformer.goal_mixture`);
    False: a linear policy head. Other envs have no planner and ignore it."""
    fixed_planner: bool = False
    """With the goal mixture: keep the planner's passability and its weight in the mixture
    at their initial values (PinPad's rule: walls and other colours block), so the rule
    trains the choice of colour and the heads but cannot unlearn the way there."""
    log_every: int = 500
    """Finished episodes per point of the success history."""
    checkpoint_every: int = 100
    """Learner steps between checkpoints."""
    seed: int = 0
    """Seeds the actor's initialisation, the envs, the actions and the replay draws."""
    device: str = "auto"
    """"cpu", "cuda" or "auto"."""

    def __post_init__(self) -> None:
        for name in ("episodes", "num_envs", "rollout_len", "batch_size", "replay_capacity",
                     "updates_per_rollout", "width", "model_width", "log_every",
                     "checkpoint_every"):  # fmt: skip
            check_count(name, getattr(self, name))
        check_count("steps", self.steps, minimum=0)
        if self.rollout_len < 2:
            raise ValueError(f"rollout_len must be at least 2, got {self.rollout_len}")
        if self.replay_capacity < self.batch_size:
            raise ValueError(
                f"replay_capacity ({self.replay_capacity}) must hold a batch "
                f"({self.batch_size} trajectories)"
            )
        if not 0 <= self.until_success <= 1:
            raise ValueError(f"until_success must be in [0, 1], got {self.until_success}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 < self.discount <= 1:
            raise ValueError(f"discount must be in (0, 1], got {self.discount}")


def check_discrete(space: gym.Space, env_id: str) -> int:
    """The number of actions, or a ValueError: the rule's policy targets are over actions."""
    if not isinstance(space, gym.spaces.Discrete):
        raise ValueError(
            f"Disco103 is a discrete-action update rule (its meta-network emits a target "
            f"over actions); {env_id} has the action space {space}"
        )
    return int(space.n)


def start_near_uniform(*heads: nn.Linear) -> None:
    """Small weights and zero biases, so the heads start near uniform, as DeepMind's agents."""
    for head in heads:
        nn.init.trunc_normal_(head.weight, std=1e-2)
        nn.init.zeros_(head.bias)


class DiscoActor(nn.Module):
    """Observation encoder, then the heads the rule reads (time-major, any leading dims)."""

    def __init__(self, model_config: ModelConfig, model_width: int = 128) -> None:
        super().__init__()
        self.model_config = model_config
        width, actions = model_config.width, model_config.num_actions
        self.num_actions = actions
        self.encoder = ENCODER_CLASSES[model_config.encoder](model_config)
        self.policy = nn.Linear(width, actions)
        self.y = nn.Linear(width, PREDICTION_SIZE)
        start_near_uniform(self.policy, self.y)
        self.goal = None
        if model_config.goal_head:  # PinPad: p(c) over colours, then the planner's way there
            self.goal = nn.Linear(width, self.encoder.planner.planes)
            start_near_uniform(self.goal)
            self.goal_scale = nn.Parameter(torch.tensor(2.0))
        self.root = nn.Linear(width, model_width)
        self.transition = LSTMCell(actions, model_width)
        self.z = Mlp([model_width, model_width, PREDICTION_SIZE])
        self.q = Mlp([model_width, model_width, NUM_BINS])
        self.aux_pi = Mlp([model_width, model_width, actions])

    def features(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs [T, B, ...] -> (features [T, B, width], policy logits [T, B, A])."""
        if self.goal is None:
            x = self.encoder(obs)
            return x, self.policy(x)
        x, moves = self.encoder.encode(obs)
        return x, goal_mixture(self.goal(x), self.policy(x), moves, self.goal_scale)

    def logits(self, obs: torch.Tensor) -> torch.Tensor:
        """Policy logits [N, A] of one observation per env [N, ...]: what acting needs."""
        return self.features(obs.unsqueeze(0))[1][0]

    def forward(self, obs: torch.Tensor) -> AgentOutputs:
        """obs [T, B, ...] -> AgentOutputs with leading dims [T, B]."""
        x, logits = self.features(obs)
        cell = self.root(x)  # the model's root state: (tanh(c), c)
        a = self.num_actions
        state = (torch.tanh(cell).unsqueeze(-2).expand(*cell.shape[:-1], a, -1),
                 cell.unsqueeze(-2).expand(*cell.shape[:-1], a, -1))  # fmt: skip
        one_hot = torch.eye(a, dtype=x.dtype, device=x.device).expand(*cell.shape[:-1], a, a)
        after, _ = self.transition(one_hot, state)  # [T, B, A, model_width]: one step per a
        return AgentOutputs(
            logits=logits, y=self.y(x), z=self.z(after), q=self.q(after),
            aux_pi=self.aux_pi(after),
        )  # fmt: skip


class Replay:
    """The latest `capacity` trajectories (FIFO), kept on the device, batch-major."""

    def __init__(self, capacity: int, steps: int, obs_space: gym.Space, actions: int,
                 device: torch.device) -> None:  # fmt: skip
        obs_dtype = torch.from_numpy(np.zeros(0, obs_space.dtype)).dtype
        self.capacity, self.size, self.next = capacity, 0, 0
        self.data = {
            "obs": torch.zeros(capacity, steps + 1, *obs_space.shape, dtype=obs_dtype),
            "actions": torch.zeros(capacity, steps + 1, dtype=torch.long),
            "behaviour_logits": torch.zeros(capacity, steps + 1, actions),
            "rewards": torch.zeros(capacity, steps),
            "is_terminal": torch.zeros(capacity, steps),
            "valid": torch.zeros(capacity, steps),
        }
        self.data = {key: value.to(device) for key, value in self.data.items()}

    def add(self, rollout: dict[str, torch.Tensor]) -> None:
        """rollout: time-major tensors [T(+1), N, ...]."""
        n = rollout["rewards"].shape[1]
        rows = (self.next + torch.arange(n)) % self.capacity
        for key, value in rollout.items():
            self.data[key][rows.to(value.device)] = value.transpose(0, 1)
        self.next = (self.next + n) % self.capacity
        self.size = min(self.capacity, self.size + n)

    def sample(self, batch: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """`batch` trajectories drawn uniformly, time-major."""
        rows = torch.from_numpy(rng.integers(self.size, size=batch))
        return {key: value[rows.to(value.device)].transpose(0, 1) for key, value in
                self.data.items()}  # fmt: skip


def make_envs(config: DiscoConfig) -> gym.vector.VectorEnv:
    check_env_kwargs(config.env, config.env_kwargs)
    spec = gym.spec(config.env)
    mode = "vector_entry_point" if spec.vector_entry_point is not None else "sync"
    envs = gym.make_vec(config.env, num_envs=config.num_envs, vectorization_mode=mode,
                        **config.env_kwargs)  # fmt: skip
    if envs.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP) != AutoresetMode.NEXT_STEP:
        raise ValueError(f"{config.env}: Disco103 training needs next-step autoreset")
    return envs


def finished_success(info: dict, i: int, episode_return: float) -> bool:
    """Whether env i's episode that just ended succeeded: its `success` info where the env
    reports one, else a positive return."""
    if "success" in info and info.get("_success", np.ones(i + 1, bool))[i]:
        return bool(info["success"][i])
    return episode_return > 0


class DiscoRun:
    """One training run's actor, target network, rule, replay and envs."""

    def __init__(self, config: DiscoConfig, weights: str | Path | None = None) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.envs = make_envs(config)
        try:
            actions = check_discrete(self.envs.single_action_space, config.env)
        except ValueError:
            self.envs.close()
            raise
        hyper = DiscoHyperParams(discount=config.discount)
        self.rule = Disco103.from_weights(weights, device=self.device, hyper=hyper)
        probe = gym.make(config.env, **config.env_kwargs)
        self.model_config = ModelConfig.for_env(probe, "small", width=config.width)
        if not config.goal_head:
            self.model_config = dataclasses.replace(self.model_config, goal_head=False)
        probe.close()
        if config.fixed_planner and not self.model_config.goal_head:
            self.envs.close()
            raise ValueError(
                f"fixed_planner needs the goal-mixture policy (PinPad with goal_head); "
                f"{config.env} with goal_head={config.goal_head} has no planner to fix"
            )
        if not np.isfinite(self.model_config.obs_high):  # unbounded observations: unscaled
            self.model_config = dataclasses.replace(self.model_config, obs_high=1.0)
        torch.manual_seed(config.seed)
        self.actor = DiscoActor(self.model_config, config.model_width).to(self.device)
        self.target = DiscoActor(self.model_config, config.model_width).to(self.device)
        self.target.load_state_dict(self.actor.state_dict())
        self.target.requires_grad_(False)
        if config.fixed_planner:
            self.actor.encoder.planner.requires_grad_(False)
            self.actor.goal_scale.requires_grad_(False)
        trained = [p for p in self.actor.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(trained, lr=config.lr)
        self.meta_state = self.rule.initial_state()
        self.replay = Replay(config.replay_capacity, config.rollout_len,
                             self.envs.single_observation_space, actions, self.device)  # fmt: skip
        self.updates = self.episodes = self.env_steps = 0
        self.stage_start = 0  # episodes finished before this curriculum stage began
        self.history: list[dict[str, float]] = []
        self.window: list[tuple[bool, float]] = []  # (success, return) since the last point

    def state(self) -> dict[str, Any]:
        return {
            "model_config": dataclasses.asdict(self.model_config),
            "actor": self.actor.state_dict(),
            "target": self.target.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "meta_state": self.meta_state.state_dict(),
            "updates": self.updates,
            "episodes": self.episodes,
            "env_steps": self.env_steps,
            "history": self.history,
            "stage_start": self.stage_start,
        }

    def load(self, saved: dict[str, Any]) -> None:
        self.actor.load_state_dict(saved["actor"])
        self.target.load_state_dict(saved["target"])
        self.optimizer.load_state_dict(saved["optimizer"])
        for group in self.optimizer.param_groups:  # the moments carry over, the lr is ours
            group["lr"] = self.config.lr
        self.meta_state = MetaState.from_state_dict(saved["meta_state"], self.device)
        self.updates, self.episodes = saved["updates"], saved["episodes"]
        self.env_steps, self.history = saved["env_steps"], list(saved["history"])
        self.stage_start = saved.get("stage_start", 0)  # absent before until_success

    def finished(self) -> bool:
        """Whether a budget is spent or this stage's success reached `until_success`."""
        config = self.config
        if self.episodes >= config.episodes or (config.steps and self.updates >= config.steps):
            return True
        return config.until_success > 0 and any(
            point["success"] >= config.until_success
            for point in self.history
            if point["episodes"] > self.stage_start
        )

    def start(self) -> None:
        """Reset the envs and the per-run randomness from (seed, learner step), so a resumed
        run draws new episodes rather than the first ones again."""
        seed = self.config.seed * 1_000_003 + self.updates
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.rng = np.random.default_rng([self.config.seed, self.updates])
        obs, _ = self.envs.reset(seed=seed % 2**31)
        self.obs = torch.as_tensor(obs, device=self.device)
        self.after_end = torch.zeros(self.config.num_envs, dtype=torch.bool, device=self.device)
        self.returns = np.zeros(self.config.num_envs)

    @torch.no_grad()
    def collect(self) -> dict[str, torch.Tensor]:
        """rollout_len steps of every env with the current policy, time-major."""
        steps: dict[str, list[torch.Tensor]] = {key: [] for key in self.replay.data}
        for _ in range(self.config.rollout_len):
            logits = self.actor.logits(self.obs)
            action = torch.multinomial(torch.softmax(logits, -1), 1, generator=self.generator)
            action = action.squeeze(-1)
            obs, reward, terminated, truncated, info = self.envs.step(action.cpu().numpy())
            done = terminated | truncated
            steps["obs"].append(self.obs)
            steps["actions"].append(action)
            steps["behaviour_logits"].append(logits)
            steps["rewards"].append(torch.as_tensor(reward, dtype=torch.float32))
            steps["is_terminal"].append(torch.as_tensor(done, dtype=torch.float32))
            steps["valid"].append((~self.after_end).float())  # a reset step is no transition
            self.track(reward, done, info)
            self.after_end = torch.as_tensor(done, device=self.device)
            self.obs = torch.as_tensor(obs, device=self.device)
        steps["obs"].append(self.obs)
        steps["actions"].append(torch.zeros_like(action))  # never used by the rule
        steps["behaviour_logits"].append(self.actor.logits(self.obs))
        self.env_steps += self.config.rollout_len * self.config.num_envs
        return {key: torch.stack(value).to(self.device) for key, value in steps.items()}

    def track(self, reward: np.ndarray, done: np.ndarray, info: dict) -> None:
        self.returns += reward
        for i in np.flatnonzero(done):
            self.window.append((finished_success(info, i, self.returns[i]), self.returns[i]))
            self.returns[i] = 0.0
            self.episodes += 1
            if len(self.window) == self.config.log_every:
                success, returns = np.array(self.window).T
                self.history.append({
                    "episodes": self.episodes, "success": float(success.mean()),
                    "return": float(returns.mean()), "env_steps": self.env_steps,
                    "updates": self.updates,
                })  # fmt: skip
                self.window = []

    def learn(self) -> dict[str, float]:
        """One learner step on a batch from the replay."""
        batch = self.replay.sample(self.config.batch_size, self.rng)
        agent = self.actor(batch["obs"])
        with torch.no_grad():
            target = self.target(batch["obs"])
        inputs = RuleInputs(batch["actions"], batch["rewards"], batch["is_terminal"], agent,
                            batch["behaviour_logits"], target)  # fmt: skip
        targets, self.meta_state = self.rule.targets(inputs, self.meta_state)
        loss, value_loss, terms = self.rule.loss(inputs, targets)
        valid = batch["valid"]
        total = ((loss + value_loss) * valid).sum() / (valid.sum() + 1e-8)
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        with torch.no_grad():  # Polyak target, from the parameters before this step
            coeff = self.rule.hyper.target_coeff
            for old, new in zip(self.target.parameters(), self.actor.parameters(), strict=True):
                old.mul_(coeff).add_(new, alpha=1 - coeff)
        self.optimizer.step()
        self.updates += 1
        return {"loss": total.item(), **{k: (v * valid).sum().item() / max(1.0, valid.sum()
                .item()) for k, v in terms.items()}}  # fmt: skip


def earlier_stage(path: str | Path, run: DiscoRun) -> dict[str, Any]:
    """The checkpoint `run` starts from, checked to hold an agent of the same shape."""
    saved = load_checkpoint(path, KIND, run.device)
    theirs = {**saved["model_config"], "model_width": saved["train_config"].get("model_width")}
    ours = {**dataclasses.asdict(run.model_config), "model_width": run.config.model_width}
    differ = [
        f"{k}: {theirs.get(k)!r} there, {ours.get(k)!r} here"
        for k in sorted(ours.keys() | theirs.keys())
        if theirs.get(k) != ours.get(k)
    ]
    if differ:
        raise ValueError(
            f"checkpoint {path} holds an agent of another shape than this run's "
            f"({'; '.join(differ)}): start from a run on the same observations with the same "
            "width, model_width and goal_head"
        )
    return saved


def load_actor(path: str | Path, device: str | torch.device = "cpu") -> DiscoActor:
    """The trained actor of a `train disco` checkpoint, in eval mode (acting needs only
    its policy logits)."""
    return actor_from_checkpoint(load_checkpoint(path, KIND), path, device)


def actor_from_checkpoint(
    saved: dict, path: str | Path, device: str | torch.device = "cpu"
) -> DiscoActor:
    """The actor of an already loaded `train disco` checkpoint (read from `path`)."""
    try:
        config = DiscoConfig(**saved["train_config"])
        actor = DiscoActor(ModelConfig(**saved["model_config"]), config.model_width)
        actor.load_state_dict(saved["actor"])
    except (KeyError, TypeError, RuntimeError) as error:
        raise ValueError(
            f"checkpoint {path} does not hold a usable Disco103 actor: {error}"
        ) from None
    return actor.to(device).eval()


def train_disco(
    config: DiscoConfig,
    checkpoint: str | Path,
    weights: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: list[dict] | None = None,
    start_from: str | Path | None = None,
) -> Path:
    """Train an agent on `config.env` with Disco103 until the episode (or step) budget is
    spent or `config.until_success` is reached; checkpoints (actor, target, optimiser, the
    rule's meta state, history) are written atomically to `checkpoint`. `weights`:
    disco_103.npz (default $DISCO103_WEIGHTS). `start_from`: a `train disco` checkpoint
    whose whole state a new run takes over, to go on under this config (a curriculum
    stage); its counters go on too, so the budget is the total. A run being resumed from
    `checkpoint` ignores it."""
    checkpoint = Path(checkpoint)
    check_new_run(checkpoint, resume, overwrite)
    run = DiscoRun(config, weights)
    if resume and checkpoint.exists():
        run.load(load_run(checkpoint, KIND, config, run.device))
    elif start_from is not None:
        run.load(earlier_stage(start_from, run))
        run.stage_start = run.episodes
    spec = gym.spec(config.env)
    spec = dataclasses.replace(spec, kwargs={**spec.kwargs, **config.env_kwargs})

    def save() -> None:
        save_checkpoint(checkpoint, KIND, train_config=dataclasses.asdict(config),
                        env_spec=spec.to_json(), **run.state())  # fmt: skip

    run.start()
    bar = tqdm(total=config.episodes, initial=min(run.episodes, config.episodes),
               desc="train disco", disable=not progress)  # fmt: skip
    clock, start_steps = time.perf_counter(), run.env_steps
    metrics: dict[str, float] = {}
    while not run.finished():
        before = run.episodes
        run.replay.add(run.collect())
        bar.update(min(run.episodes, config.episodes) - min(before, config.episodes))
        if run.replay.size < config.batch_size:
            continue
        for _ in range(config.updates_per_rollout):
            metrics = run.learn()
            if run.updates % config.checkpoint_every == 0:
                save()
        rate = (run.env_steps - start_steps) / (time.perf_counter() - clock)
        metrics.update(updates=run.updates, episodes=run.episodes, env_steps_per_s=rate)
        if run.history:
            metrics["success"] = run.history[-1]["success"]
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", upd=run.updates, sps=f"{rate:.0f}",
                        success=f"{metrics.get('success', 0.0):.3f}")  # fmt: skip
        if log is not None:
            log.append(dict(metrics))
    bar.close()
    run.envs.close()
    save()
    return checkpoint
