"""Disco103: the reinforcement-learning update rule that DeepMind meta-learned (Oh et al.,
"Discovering state-of-the-art reinforcement learning algorithms", Nature 648, 2025), in torch.

Instead of a hand-written loss, a small recurrent meta-network reads a rollout of the agent
(its policy, its predictions y and z, rewards, episode ends, values and advantages) and
emits targets: a policy target pi_hat [T, B, A] and prediction targets y_hat, z_hat [T, B,
600]. The agent is trained towards them by KL divergence, plus an auxiliary next-policy
prediction and a categorical Q-value loss against Retrace targets. This module holds:

- the value machinery: Q as 601 logits over [-300, 300] in signed-hyperbolic space,
  V = sum_a pi(a) Q(a), Retrace targets (lambda 0.95), EMA-normalised advantages;
- the meta-network: input transforms, a per-action 1x1 Conv1D embedding, a trajectory LSTM
  unrolled backwards in time with resets at episode ends, a slow meta-RNN (one step per
  learner step) whose state gates the trajectory features multiplicatively, and the
  pi / y / z target heads;
- the agent loss, and `MetaState` (the meta-RNN state and the two EMA normalisers), which
  the learner carries from one update to the next;
- loading DeepMind's Haiku weights (`disco_103.npz`) with every array checked.

The rule is for discrete actions only. It was written from the published JAX source
(google-deepmind/disco_rl) and checked against outputs of that code (tests/test_disco.py):
the meta-network's targets and the losses agree to 1e-4; the Q-derived quantities agree
to 1e-5 relative, the float32 rounding noise of the reference itself (`signed_parabolic`).
The weights are not part of this package: pass their path or set DISCO103_WEIGHTS.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Environment variable that names the weights file when no path is given.
WEIGHTS_ENV = "DISCO103_WEIGHTS"
#: sha256 of DeepMind's disco_rl/update_rules/weights/disco_103.npz.
WEIGHTS_SHA256 = "dac840a15b81e8805326363458c33979626172618f620d9e6e170315388530aa"

PREDICTION_SIZE = 600  # logits of y and of each action's z
NUM_BINS = 601  # logits of each action's Q
MAX_ABS_VALUE = 300.0  # the bins span [-300, 300] in signed-hyperbolic space
TRAJECTORY_HIDDEN = 256
META_HIDDEN = 128


@dataclass(frozen=True)
class DiscoHyperParams:
    """Disco103's hyper-parameters (disco_rl's get_settings_disco)."""

    discount: float = 0.997
    """gamma of the Retrace targets."""
    td_lambda: float = 0.95
    """lambda of the Retrace traces c_t = lambda min(1, rho_t)."""
    target_coeff: float = 0.9
    """Polyak coefficient of the target network: target <- c target + (1 - c) params."""
    pi_cost: float = 1.0
    """Weight of KL(pi_hat || pi)."""
    y_cost: float = 1.0
    """Weight of KL(y_hat || y)."""
    z_cost: float = 1.0
    """Weight of KL(z_hat || z(a))."""
    aux_policy_cost: float = 1.0
    """Weight of KL(pi_{t+1} || aux_pi(a_t)), the next-policy prediction."""
    value_cost: float = 0.2
    """Weight of the Q-value cross-entropy."""
    ema_decay: float = 0.99
    """Decay of the moving averages that normalise advantages and TD errors."""
    ema_eps: float = 1e-6
    """Added to the moving standard deviation when normalising."""


# -- transforms ----------------------------------------------------------------------------


def signed_hyperbolic(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """h(x) = sign(x)(sqrt(|x| + 1) - 1) + eps x: the space where values are binned."""
    return torch.sign(x) * (torch.sqrt(torch.abs(x) + 1) - 1) + eps * x


def signed_parabolic(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """The inverse of `signed_hyperbolic`.

    The subtraction of two numbers near 500 loses three digits, so in float32 one rounding
    step of sqrt(...) / (2 eps) moves the result by up to 4e-4. To give DeepMind's float32
    numbers, each constant is a tensor of x's dtype (no double-precision scalar arithmetic)
    and the division by 2 eps is a multiplication by its rounded reciprocal, which is what
    XLA compiles the reference's division to. The square root is taken in float64 and
    rounded: exact, like XLA's (torch's vectorised float32 sqrt is off by one ulp at times).
    """
    const = lambda value: torch.tensor(value, dtype=x.dtype, device=x.device)  # noqa: E731
    u = const(1.0) + const(4 * eps) * (const(eps + 1) + torch.abs(x))
    root = torch.sqrt(u.double()).to(x.dtype)
    z = root * const(2 * eps).reciprocal() - const(1 / 2 / eps)
    return torch.sign(x) * (z * z - const(1.0))


def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """sign(x) log(1 + |x|): how the meta-network reads unbounded scalars."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def bin_values(num_bins: int, like: torch.Tensor) -> torch.Tensor:
    return torch.linspace(-MAX_ABS_VALUE, MAX_ABS_VALUE, num_bins, dtype=like.dtype,
                          device=like.device)  # fmt: skip


def two_hot(scalar: torch.Tensor, num_bins: int = NUM_BINS) -> torch.Tensor:
    """A scalar's mass split between its two neighbouring bins (as rlax.transform_to_2hot,
    including its 1e-5 guard, so an exact bin value puts all its mass on that bin)."""
    span = 2 * MAX_ABS_VALUE
    scalar = scalar.clamp(-MAX_ABS_VALUE, MAX_ABS_VALUE)
    position = (scalar + MAX_ABS_VALUE) / span * (num_bins - 1)
    lower, upper = torch.floor(position), torch.ceil(position)
    lower_value = lower / (num_bins - 1.0) * span - MAX_ABS_VALUE
    upper_value = upper / (num_bins - 1.0) * span - MAX_ABS_VALUE
    p_lower = (upper_value - scalar) / (upper_value - lower_value + 1e-5)
    probs = F.one_hot(lower.long(), num_bins).to(scalar.dtype) * p_lower.unsqueeze(-1)
    return probs + F.one_hot(upper.long(), num_bins).to(scalar.dtype) * (1 - p_lower).unsqueeze(-1)


def q_scalars(q_logits: torch.Tensor) -> torch.Tensor:
    """Categorical Q logits [..., 601] -> Q values in reward units [...]. The expectation
    over the bins is summed in float64 and rounded once: DeepMind's float32 sum is more
    accurate than a plain float32 one, and `signed_parabolic` magnifies its error."""
    wide = q_logits.detach().double()
    expected = (torch.softmax(wide, -1) * bin_values(q_logits.shape[-1], wide)).sum(-1)
    return signed_parabolic(expected.to(q_logits.dtype))


def categorical_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(p) || softmax(q)) over the last axis, floored at 0 (as rlax)."""
    log_p = torch.log_softmax(p_logits, -1)
    kl = (log_p.exp() * (log_p - torch.log_softmax(q_logits, -1))).sum(-1)
    return torch.relu(kl)


def pick(table: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """table [T, B, A, ...] at the taken actions [T, B] -> [T, B, ...]."""
    index = actions.long().view(*actions.shape, 1, *([1] * (table.dim() - 3)))
    index = index.expand(*actions.shape, 1, *table.shape[3:])
    return table.gather(2, index).squeeze(2)


def td_pair(x: torch.Tensor) -> torch.Tensor:
    """[T+1, B, C] -> [T, B, 2C]: each step beside its successor."""
    return torch.cat([x[:-1], x[1:]], -1)


# -- rollouts, outputs and state --------------------------------------------------------------


@dataclass
class AgentOutputs:
    """What an agent network emits per step, time-major: [T+1, B, ...]."""

    logits: torch.Tensor  # [T+1, B, A] policy logits
    y: torch.Tensor  # [T+1, B, 600] prediction logits
    z: torch.Tensor  # [T+1, B, A, 600] per-action prediction logits
    q: torch.Tensor  # [T+1, B, A, 601] per-action categorical Q logits
    aux_pi: torch.Tensor  # [T+1, B, A, A] per-action next-policy logits

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> AgentOutputs:
        return AgentOutputs(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})


@dataclass
class RuleInputs:
    """One learner batch: T transitions of B trajectories (time-major)."""

    actions: torch.Tensor  # [T+1, B] (the last one is never used)
    rewards: torch.Tensor  # [T, B] reward of transition t
    is_terminal: torch.Tensor  # [T, B] transition t ended its episode
    agent: AgentOutputs  # the agent being trained, on the T+1 observations
    behaviour_logits: torch.Tensor  # [T+1, B, A] the policy that acted
    target: AgentOutputs  # the Polyak target network, on the T+1 observations


@dataclass
class ValueOutputs:
    """The Retrace machinery's products (Q and V in reward units)."""

    value: torch.Tensor  # [T+1, B] V = sum_a pi(a) Q(a), the agent's Q
    target_q: torch.Tensor  # [T+1, B, A] the target network's Q
    target_value: torch.Tensor  # [T+1, B] sum_a pi(a) Q_target(a)
    q_target: torch.Tensor  # [T, B] Retrace target of Q(s_t, a_t)
    adv: torch.Tensor  # [T, B] q_target - V_target
    normalized_adv: torch.Tensor  # [T, B]
    qv_adv: torch.Tensor  # [T+1, B, A] Q_target - V_target
    normalized_qv_adv: torch.Tensor  # [T+1, B, A]
    q_td: torch.Tensor  # [T, B] q_target - Q(s_t, a_t)


@dataclass
class RuleTargets:
    """What the rule asks of the agent for one batch (no gradient flows into these)."""

    pi: torch.Tensor  # [T, B, A] policy target logits
    y: torch.Tensor  # [T, B, 600]
    z: torch.Tensor  # [T, B, 600]
    values: ValueOutputs


@dataclass
class Ema:
    """A debiased exponential moving average of a quantity's mean and mean square."""

    moment1: torch.Tensor
    moment2: torch.Tensor
    decay_product: torch.Tensor

    @classmethod
    def zeros(cls, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu") -> Ema:
        zero = torch.zeros((), dtype=dtype, device=device)
        return cls(zero, zero.clone(), torch.ones((), dtype=dtype, device=device))

    def update(self, value: torch.Tensor, decay: float) -> Ema:
        return Ema(
            decay * self.moment1 + (1.0 - decay) * value.mean(),
            decay * self.moment2 + (1.0 - decay) * value.square().mean(),
            self.decay_product * decay,
        )

    def normalize(
        self, value: torch.Tensor, eps: float, subtract_mean: bool = True
    ) -> torch.Tensor:
        debias = 1.0 / (1 - self.decay_product)
        mean = self.moment1 * debias
        variance = torch.clamp(self.moment2 * debias - mean.square(), min=0.0)
        centred = value - mean if subtract_mean else value
        return centred / (torch.sqrt(variance + 1e-12) + eps)


@dataclass
class MetaState:
    """What the rule carries from one learner step to the next: the meta-RNN's LSTM state
    and the moving averages that normalise advantages and TD errors."""

    hidden: torch.Tensor  # [128]
    cell: torch.Tensor  # [128]
    adv_ema: Ema
    td_ema: Ema

    @classmethod
    def initial(
        cls, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
    ) -> MetaState:
        zeros = torch.zeros(META_HIDDEN, dtype=dtype, device=device)
        return cls(zeros, zeros.clone(), Ema.zeros(dtype, device), Ema.zeros(dtype, device))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors, for a checkpoint (torch.load(weights_only=True) reads them)."""
        out = {"hidden": self.hidden, "cell": self.cell}
        for name in ("adv_ema", "td_ema"):
            ema = getattr(self, name)
            out.update({f"{name}.{f.name}": getattr(ema, f.name) for f in fields(Ema)})
        return {key: value.detach().clone() for key, value in out.items()}

    @classmethod
    def from_state_dict(
        cls, state: dict[str, torch.Tensor], device: str | torch.device = "cpu"
    ) -> MetaState:
        try:
            emas = {
                name: Ema(**{f.name: state[f"{name}.{f.name}"].to(device) for f in fields(Ema)})
                for name in ("adv_ema", "td_ema")
            }
            hidden, cell = state["hidden"].to(device), state["cell"].to(device)
        except (KeyError, AttributeError, TypeError) as error:
            raise ValueError(f"not a Disco103 meta state: missing {error}") from None
        if hidden.shape != (META_HIDDEN,) or cell.shape != (META_HIDDEN,):
            raise ValueError(f"meta state of shape {tuple(hidden.shape)}, expected (128,)")
        return cls(hidden, cell, **emas)

    def to(self, dtype: torch.dtype) -> MetaState:
        ema = lambda e: Ema(*(getattr(e, f.name).to(dtype) for f in fields(Ema)))  # noqa: E731
        return MetaState(self.hidden.to(dtype), self.cell.to(dtype), ema(self.adv_ema),
                         ema(self.td_ema))  # fmt: skip


# -- value machinery ---------------------------------------------------------------------------


def retrace(
    target_q_a: torch.Tensor,
    target_value: torch.Tensor,
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    traces: torch.Tensor,
) -> torch.Tensor:
    """Retrace targets [T, B]:
    G_{T-1} = r_{T-1} + gamma_{T-1} V_T and, going back,
    G_t = r_t + gamma_t (V_{t+1} + c_{t+1} (G_{t+1} - Q_{t+1}(a_{t+1}))).
    The trace of step t+1 weighs step t+1's correction (not c_t: that shift is the bug of
    another port)."""
    steps = rewards.shape[0]
    g = rewards[-1] + discounts[-1] * target_value[-1]
    out = [g]
    for t in range(steps - 2, -1, -1):
        c, v, q = traces[t + 1], target_value[t + 1], target_q_a[t + 1]
        g = rewards[t] + discounts[t] * (v - c * q + c * g)
        out.append(g)
    return torch.stack(out[::-1])


def value_outputs(
    batch: RuleInputs, state: MetaState, hyper: DiscoHyperParams
) -> tuple[ValueOutputs, Ema, Ema]:
    """Q, V, Retrace targets and (normalised) advantages; the updated EMAs."""
    actions = batch.actions[:-1].long()
    pi = torch.softmax(batch.agent.logits, -1)
    q = q_scalars(batch.agent.q)  # [T+1, B, A]
    target_q = q_scalars(batch.target.q)
    value = (pi * q).sum(-1)
    target_value = (pi * target_q).sum(-1)
    log_pi = torch.log_softmax(batch.agent.logits[:-1], -1)
    log_mu = torch.log_softmax(batch.behaviour_logits[:-1], -1)
    rho = torch.exp(pick(log_pi, actions) - pick(log_mu, actions))
    clipped_rho = torch.clamp(rho, max=1.0)
    discounts = (1.0 - batch.is_terminal.to(q.dtype)) * hyper.discount
    q_a = pick(q[:-1], actions)
    q_target = retrace(pick(target_q[:-1], actions), target_value, batch.rewards.to(q.dtype),
                       discounts, hyper.td_lambda * clipped_rho)  # fmt: skip
    adv = q_target - target_value[:-1]
    qv_adv = target_q - target_value.unsqueeze(-1)
    q_td = q_target - q_a
    adv_ema = state.adv_ema.update(adv, hyper.ema_decay)
    td_ema = state.td_ema.update(q_td, hyper.ema_decay)
    out = ValueOutputs(
        value=value,
        target_q=target_q,
        target_value=target_value,
        q_target=q_target,
        adv=adv,
        normalized_adv=adv_ema.normalize(adv, hyper.ema_eps),
        qv_adv=qv_adv,
        normalized_qv_adv=adv_ema.normalize(qv_adv, hyper.ema_eps),
        q_td=q_td,
    )
    return out, adv_ema, td_ema


# -- the meta-network ---------------------------------------------------------------------------


class Mlp(nn.Module):
    """Linear layers with ReLU between them (none after the last), as hk.nets.MLP."""

    def __init__(self, sizes: list[int]) -> None:
        super().__init__()
        pairs = zip(sizes[:-1], sizes[1:], strict=True)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == 0 else layer(torch.relu(x))
        return x


class ActionMixer(nn.Module):
    """A 1x1 convolution over the action axis [..., A, C] that also reads the mean over
    actions, then a ReLU: each action's embedding sees its own inputs and everyone's."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * channels_in, channels_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-2, keepdim=True).expand_as(x)
        return torch.relu(self.linear(torch.cat([x, mean], -1)))


class LSTMCell(nn.Module):
    """Haiku's LSTM cell: one Linear over [x, h] gives gates in the order i, g, f, o, and
    the forget gate gets a bias of +1."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.linear = nn.Linear(input_size + hidden_size, 4 * hidden_size)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, cell = state
        i, g, f, o = self.linear(torch.cat([x, hidden], -1)).chunk(4, -1)
        cell = torch.sigmoid(f + 1) * cell + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(cell), cell


class InputEncoder(nn.Module):
    """Turns a rollout into the meta-network's per-step features [T, B, 27] and its
    per-action embedding [T, B, A, 2]. The meta-network has two (one feeds the trajectory
    LSTM, one the meta-RNN), with the same recipe and their own weights.

    y and z (600 logits each) are squeezed to one number by small MLPs after a softmax;
    scalars like values and advantages pass through sign(x) log(1 + |x|); quantities at
    t and t+1 are put side by side so TD-like differences are easy to form.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 2)) -> None:
        super().__init__()
        self.y_net = Mlp([PREDICTION_SIZE, 16, 1])
        self.z_net = Mlp([PREDICTION_SIZE, 16, 1])
        sizes = (9, *channels)
        pairs = zip(sizes[:-1], sizes[1:], strict=True)
        self.action_net = nn.Sequential(*(ActionMixer(a, b) for a, b in pairs))

    def forward(self, batch: RuleInputs, values: ValueOutputs) -> tuple[torch.Tensor, torch.Tensor]:
        a = batch.actions[:-1].long()
        agent, target = batch.agent, batch.target
        pi = torch.softmax(agent.logits, -1)  # [T+1, B, A]
        mu = torch.softmax(batch.behaviour_logits, -1)
        pi_target = torch.softmax(target.logits, -1)
        z_agent = self.z_net(torch.softmax(agent.z, -1))  # [T+1, B, A, 1]
        z_target = self.z_net(torch.softmax(target.z, -1))
        dtype = pi.dtype

        def per_step(x: torch.Tensor) -> torch.Tensor:
            return x.unsqueeze(-1)

        def z_summaries(z: torch.Tensor) -> list[torch.Tensor]:
            return [
                pick(z[:-1], a),  # the taken action's
                td_pair((z * pi.unsqueeze(-1)).sum(2)),  # expected under pi
                td_pair(z.max(2).values),  # the best action's
            ]

        base = [
            per_step(pick(pi[:-1], a)),
            per_step(pick(mu[:-1], a)),
            per_step(signed_log1p(batch.rewards.to(dtype))),
            per_step(1.0 - batch.is_terminal.to(dtype)),
            td_pair(per_step(signed_log1p(values.value))),
            per_step(signed_log1p(values.adv)),
            per_step(values.normalized_adv),
            per_step(pick(pi_target[:-1], a)),
            td_pair(self.y_net(torch.softmax(agent.y, -1))),
            td_pair(self.y_net(torch.softmax(target.y, -1))),
            *z_summaries(z_agent),
            *z_summaries(z_target),
        ]
        per_action = torch.cat(
            [
                per_step(pi[:-1]),
                per_step(mu[:-1]),
                per_step(pi_target[:-1]),
                z_agent[:-1],
                z_target[:-1],
                per_step(signed_log1p(values.target_q[:-1])),
                per_step(signed_log1p(values.qv_adv[:-1])),
                per_step(values.normalized_qv_adv[:-1]),
                per_step(F.one_hot(a, pi.shape[-1]).to(dtype)),
            ],
            -1,
        )
        embedding = self.action_net(per_action)  # [T, B, A, C]
        features = torch.cat([*base, embedding.mean(2), pick(embedding, a)], -1)
        return features, embedding


class MetaNetwork(nn.Module):
    """Disco103's meta-network. Its parameters come from DeepMind's weights
    (`load_weights`); nothing here is trained."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = InputEncoder()
        self.trajectory_lstm = LSTMCell(27, TRAJECTORY_HIDDEN)
        self.state_gate = nn.Linear(META_HIDDEN, TRAJECTORY_HIDDEN)
        self.meta_input_head = nn.Linear(TRAJECTORY_HIDDEN, 1)
        self.y_head = nn.Linear(TRAJECTORY_HIDDEN, PREDICTION_SIZE)
        self.z_head = nn.Linear(TRAJECTORY_HIDDEN, PREDICTION_SIZE)
        self.policy_mixer = ActionMixer(TRAJECTORY_HIDDEN + 2, 16)
        self.policy_head = nn.Linear(16, 1)
        self.meta_encoder = InputEncoder()
        self.meta_embed = nn.Linear(29, 16)
        self.meta_lstm = LSTMCell(16, META_HIDDEN)
        self.requires_grad_(False)

    def forward(
        self, batch: RuleInputs, values: ValueOutputs, hidden: torch.Tensor, cell: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """-> pi_hat [T, B, A], y_hat, z_hat [T, B, 600], the meta-RNN's next (h, c)."""
        x, action_embedding = self.encoder(batch, values)
        steps, b = x.shape[:2]
        # backwards in time, so step t sees the future it bootstraps from; an episode's
        # last step starts from a fresh state (it must not see the next episode)
        reset = batch.is_terminal.bool().unsqueeze(-1)
        h = c = x.new_zeros(b, TRAJECTORY_HIDDEN)
        outputs = []
        for t in range(steps - 1, -1, -1):
            h, c = torch.where(reset[t], 0.0, h), torch.where(reset[t], 0.0, c)
            h, c = self.trajectory_lstm(x[t], (h, c))
            outputs.append(h)
        x = torch.stack(outputs[::-1]) * self.state_gate(hidden)  # the slow state's gate
        meta_input = self.meta_input_head(x)
        y_hat, z_hat = self.y_head(x), self.z_head(x)
        num_actions = action_embedding.shape[2]
        w = torch.cat([x.unsqueeze(2).expand(-1, -1, num_actions, -1), action_embedding], -1)
        pi_hat = self.policy_head(self.policy_mixer(w)).squeeze(-1)
        # the meta-RNN: one step per learner step, on the batch's average
        meta_x, _ = self.meta_encoder(batch, values)
        y_code = self.meta_encoder.y_net(torch.softmax(y_hat, -1))
        meta_x = self.meta_embed(torch.cat([meta_x, meta_input, y_code], -1)).mean((0, 1))
        return pi_hat, y_hat, z_hat, self.meta_lstm(meta_x, (hidden, cell))


# -- DeepMind's weights ---------------------------------------------------------------------

#: Haiku module path in disco_103.npz -> our module holding its `w` and `b`.
HAIKU_MODULES: dict[str, str] = {
    "lstm/mlp/~/linear_0": "encoder.y_net.layers.0",
    "lstm/mlp/~/linear_1": "encoder.y_net.layers.1",
    "lstm/mlp_1/~/linear_0": "encoder.z_net.layers.0",
    "lstm/mlp_1/~/linear_1": "encoder.z_net.layers.1",
    "lstm/sequential/conv1_d": "encoder.action_net.0.linear",
    "lstm/sequential/conv1_d_1": "encoder.action_net.1.linear",
    "lstm/lstm/linear": "trajectory_lstm.linear",
    "lstm/linear": "state_gate",
    "lstm/linear_1": "meta_input_head",
    "lstm/linear_2": "y_head",
    "lstm/linear_3": "z_head",
    "lstm/sequential_1/conv1_d": "policy_mixer.linear",
    "lstm/linear_4": "policy_head",
    "lstm/~/meta_lstm/~unroll/mlp/~/linear_0": "meta_encoder.y_net.layers.0",
    "lstm/~/meta_lstm/~unroll/mlp/~/linear_1": "meta_encoder.y_net.layers.1",
    "lstm/~/meta_lstm/~unroll/mlp_1/~/linear_0": "meta_encoder.z_net.layers.0",
    "lstm/~/meta_lstm/~unroll/mlp_1/~/linear_1": "meta_encoder.z_net.layers.1",
    "lstm/~/meta_lstm/~unroll/sequential/conv1_d": "meta_encoder.action_net.0.linear",
    "lstm/~/meta_lstm/~unroll/sequential/conv1_d_1": "meta_encoder.action_net.1.linear",
    "lstm/~/meta_lstm/~unroll/mlp_2/~/linear_0": "meta_embed",
    "lstm/~/meta_lstm/~unroll/lstm/linear": "meta_lstm.linear",
}


def weights_path(path: str | Path | None = None) -> Path:
    """`path`, else $DISCO103_WEIGHTS; a ValueError that says how to get them if neither."""
    chosen = path if path is not None else os.environ.get(WEIGHTS_ENV)
    if not chosen:
        raise ValueError(
            f"no Disco103 weights: pass a path to disco_103.npz or set ${WEIGHTS_ENV}. The "
            "file is DeepMind's (google-deepmind/disco_rl, "
            "disco_rl/update_rules/weights/disco_103.npz, CC-BY 4.0) and is not bundled here"
        )
    return Path(chosen)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_weights(
    path: str | Path | None = None, sha256: str | None = WEIGHTS_SHA256
) -> dict[str, np.ndarray]:
    """The 42 float32 arrays of disco_103.npz, checked: a ValueError naming the file for a
    missing, unreadable, truncated, corrupt, partial or different file. `sha256=None`
    skips the checksum (for weights of the same architecture from elsewhere)."""
    path = weights_path(path)
    if not path.is_file():
        raise ValueError(f"Disco103 weights {path} do not exist (${WEIGHTS_ENV} or --weights)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError) as error:
        raise ValueError(
            f"Disco103 weights {path} are not a readable .npz (truncated or corrupt?): {error}"
        ) from None
    model = MetaNetwork()
    expected = {}
    for haiku, ours in HAIKU_MODULES.items():
        module = model.get_submodule(ours)
        expected[f"{haiku}/w"] = haiku_shape(haiku, module.weight.shape)
        expected[f"{haiku}/b"] = tuple(module.bias.shape)
    missing, unexpected = sorted(set(expected) - set(arrays)), sorted(set(arrays) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"Disco103 weights {path} hold {len(arrays)} arrays, not the 42 of disco_103.npz: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, unexpected "
            f"{unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for name, shape in expected.items():
        array = arrays[name]
        if array.shape != shape or array.dtype != np.float32:
            raise ValueError(
                f"Disco103 weights {path}: {name} is {array.dtype} {array.shape}, expected "
                f"float32 {shape}"
            )
        if not np.isfinite(array).all():
            raise ValueError(f"Disco103 weights {path}: {name} holds non-finite values")
    if sha256 is not None and (digest := sha256_of(path)) != sha256:
        raise ValueError(
            f"Disco103 weights {path} have sha256 {digest}, expected {sha256} "
            "(DeepMind's disco_103.npz): the file is damaged or a different one"
        )
    return arrays


def haiku_shape(haiku_name: str, weight_shape: torch.Size) -> tuple[int, ...]:
    """Haiku stores Linear weights [in, out] and Conv1D weights [1, in, out]."""
    out_size, in_size = weight_shape
    return (1, in_size, out_size) if "conv1_d" in haiku_name else (in_size, out_size)


def load_meta_network(
    path: str | Path | None = None, sha256: str | None = WEIGHTS_SHA256
) -> MetaNetwork:
    """The meta-network with DeepMind's weights, every one of the 42 arrays used once."""
    arrays = read_weights(path, sha256)
    model = MetaNetwork()
    state = {}
    for haiku, ours in HAIKU_MODULES.items():
        weight = arrays[f"{haiku}/w"]
        weight = weight[0] if weight.ndim == 3 else weight
        state[f"{ours}.weight"] = torch.from_numpy(np.ascontiguousarray(weight.T))
        state[f"{ours}.bias"] = torch.from_numpy(arrays[f"{haiku}/b"].copy())
    model.load_state_dict(state, strict=True)  # every parameter, exactly once
    return model.eval()


# -- the rule ---------------------------------------------------------------------------------


class Disco103:
    """The update rule: `targets` reads a batch and the meta state and returns the targets
    and the next meta state; `loss` turns the agent's outputs and those targets into a
    per-step loss whose gradient reaches the agent only.

    `dtype` is the precision of the meta-network and value machinery (float32 matches
    DeepMind's float32 outputs to about 1e-5); targets come back in the agent's dtype.
    """

    def __init__(
        self,
        network: MetaNetwork,
        hyper: DiscoHyperParams | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.network = network.to(dtype).eval()
        self.hyper = hyper or DiscoHyperParams()
        self.dtype = dtype

    @classmethod
    def from_weights(
        cls,
        path: str | Path | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        hyper: DiscoHyperParams | None = None,
    ) -> Disco103:
        return cls(load_meta_network(path).to(device), hyper, dtype)

    @property
    def device(self) -> torch.device:
        return self.network.state_gate.weight.device

    def initial_state(self) -> MetaState:
        return MetaState.initial(self.dtype, self.device)

    @torch.no_grad()
    def targets(self, batch: RuleInputs, state: MetaState) -> tuple[RuleTargets, MetaState]:
        """The meta-network's targets for `batch`, and the meta state after it."""
        dtype = batch.agent.logits.dtype
        cast = lambda x: x.detach().to(self.dtype)  # noqa: E731
        inputs = RuleInputs(
            actions=batch.actions,
            rewards=cast(batch.rewards),
            is_terminal=cast(batch.is_terminal),
            agent=batch.agent.map(cast),
            behaviour_logits=cast(batch.behaviour_logits),
            target=batch.target.map(cast),
        )
        state = state.to(self.dtype)
        values, adv_ema, td_ema = value_outputs(inputs, state, self.hyper)
        pi, y, z, (hidden, cell) = self.network(inputs, values, state.hidden, state.cell)
        back = lambda x: x.to(dtype)  # noqa: E731
        values = ValueOutputs(**{f.name: back(getattr(values, f.name)) for f in fields(values)})
        targets = RuleTargets(back(pi), back(y), back(z), values)
        return targets, MetaState(hidden, cell, adv_ema, td_ema)

    def loss(
        self, batch: RuleInputs, targets: RuleTargets
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """Per-step [T, B] agent loss (the KL terms), value loss (0.2 x cross-entropy of
        Q(s_t, a_t) against the two-hot Retrace target) and the separate terms."""
        h = self.hyper
        agent = batch.agent
        a = batch.actions[:-1].long()
        pi_loss = categorical_kl(targets.pi, agent.logits[:-1])
        y_loss = categorical_kl(targets.y, agent.y[:-1])
        z_loss = categorical_kl(targets.z, pick(agent.z[:-1], a))
        not_last = 1.0 - batch.is_terminal.to(agent.logits.dtype)
        aux_loss = categorical_kl(agent.logits[1:].detach(), pick(agent.aux_pi[:-1], a)) * not_last
        loss = (h.pi_cost * pi_loss + h.y_cost * y_loss + h.z_cost * z_loss
                + h.aux_policy_cost * aux_loss)  # fmt: skip
        q_logits = pick(agent.q[:-1], a)  # [T, B, 601]
        value_target = (q_scalars(q_logits) + targets.values.q_td).detach()
        target_probs = two_hot(signed_hyperbolic(value_target), q_logits.shape[-1])
        cross_entropy = -(target_probs * torch.log_softmax(q_logits, -1)).sum(-1)
        value_loss = h.value_cost * cross_entropy
        terms = {"pi_loss": pi_loss, "y_loss": y_loss, "z_loss": z_loss, "aux_loss": aux_loss,
                 "q_loss": cross_entropy}  # fmt: skip
        return loss, value_loss, terms
