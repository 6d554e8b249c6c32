"""The MetaController: latent controllers that switch at subgoal boundaries (App. D.2).

It reads the frozen base model's residual stream e_1..T at one layer and writes back
e_t <- e_t + U_t e_t, with U_t = A_t B_t^T of low rank, so U_t e_t = A_t (B_t^T e_t): a
matrix-vector product, not a per-channel gain. Per step:

    h_t      = GRU(e_t, h_t-1)                       history (causal)
    s_t      = f_emb(e_1..T)_t                       sequence embedding (non-causal)
    mu, Sigma = f_enc(e_t, h_t-1, s_t)               proposal z~_t ~ N(mu_t, Sigma_t)
    beta_t   = f_switch(e_t, h_t-1, z_t-1)           in [0, 1] (causal)
    z_t      = beta_t z~_t + (1 - beta_t) z_t-1      temporal integration
    A_t, B_t = f_hyp(z_t)                            hypernetwork decoder

Only f_switch and the integration see z_t-1, so only they run in a per-step loop; the GRU,
the embedder, the encoder and the e/h part of f_switch run over whole sequences.

At test time (internal RL, sampling from the prior) there is no encoder: `Controller`
steps one token at a time and asks a `propose` callback for a new z whenever the
binarised switch fires (beta_t > 0.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metacontroller_agents.transformer import CausalTransformer, ModelConfig, ModelOutput
from metacontroller_envs.checks import check_count

#: Switches are read as binary at this threshold (the paper's beta_threshold).
SWITCH_THRESHOLD = 0.5


@dataclass
class MetaControllerConfig:
    """The MetaController's sizes (the paper's, Table A9) and where it acts."""

    width: int
    """The base model's residual width (set from the base model)."""
    layer: int
    """The base model layer whose input stream it reads and rewrites (the paper: depth / 2)."""
    latent_dim: int = 8
    """n_z: size of a controller code z."""
    rank: int = 16
    """Rank of the linear controller U = A B^T."""
    history_dim: int = 32
    """n_h: the GRU history of the stream."""
    embed_dim: int = 32
    """n_s: the non-causal sequence embedding (per direction of its bidirectional GRU)."""
    encoder_hidden: int = 64
    """Hidden units of the encoder f_enc that proposes z~_t ~ N(mu_t, Sigma_t)."""
    decoder_hidden: int = 32
    """Hidden units of the hypernetwork f_hyp: z -> (A, B)."""
    switch_hidden: int = 32
    """Hidden units of the switching unit f_switch (not given in the paper)."""
    force_switch: bool = False
    """Ablation: beta_t = 1 at every step (a new code each step, no temporal abstraction)."""
    switch_noise: bool = False
    """Sample beta in training by the Gumbel-Sigmoid trick, sigmoid(logit + logistic
    noise), a relaxed Bernoulli switch: the paper's rate-distortion runs on the grid world
    (App. C.6, E.1). Off, beta is the switch's probability (the paper's main runs). Acting
    and analysis always use the noiseless sigmoid(logit)."""

    def __post_init__(self) -> None:
        for name in ("width", "latent_dim", "rank", "history_dim", "embed_dim",
                     "encoder_hidden", "decoder_hidden", "switch_hidden"):  # fmt: skip
            check_count(name, getattr(self, name))

    @classmethod
    def for_base(
        cls, base: ModelConfig, layer: int | None = None, **overrides: Any
    ) -> MetaControllerConfig:
        """Sized for `base`, acting at `layer` (default: mid-depth)."""
        layer = base.depth // 2 if layer is None else layer
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= base.depth:
            raise ValueError(
                f"layer must be an integer in 0..{base.depth} (the base model's depth), "
                f"got {layer!r}"
            )
        return cls(width=base.width, layer=layer, **overrides)


@dataclass
class MetaOutput:
    stream: torch.Tensor  # (B, T, width) the controlled stream e + U e
    z: torch.Tensor  # (B, T, n_z) integrated codes
    beta: torch.Tensor  # (B, T) switch gates (1 at t = 0)
    mu: torch.Tensor  # (B, T, n_z) proposal means
    log_var: torch.Tensor  # (B, T, n_z) proposal log-variances

    def kl(self) -> torch.Tensor:
        """(B, T) KL(N(mu, Sigma) || N(0, I)) per step."""
        return 0.5 * (self.log_var.exp() + self.mu**2 - 1.0 - self.log_var).sum(-1)


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, hidden), nn.GELU(), nn.Linear(hidden, outputs))


class SequenceEmbedder(nn.Module):
    """s_t, non-causal: diagonal linear recurrences with learned decays run forwards and
    backwards over each episode (an SSM layer, like the paper's embedder), then an MLP.
    Each direction is one matrix product over the whole sequence, not a per-step loop;
    padding is zeroed, so it never reaches a real step."""

    def __init__(self, width: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.inputs = nn.Linear(width, 2 * dim)
        self.decay_logit = nn.Parameter(torch.linspace(-2.0, 4.0, dim).repeat(2))
        self.output = nn.Sequential(nn.GELU(), nn.Linear(2 * dim, 2 * dim))

    def forward(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.inputs(e) * mask[..., None].to(e.dtype)
        steps = torch.arange(e.shape[1], device=e.device)
        lag = steps[:, None] - steps[None, :]  # t - k
        decay = torch.sigmoid(self.decay_logit)  # (2 dim,)
        # decay^|t-k| for k <= t (first dim channels) and k >= t (the others)
        side = torch.cat([(lag >= 0).expand(self.dim, -1, -1), (lag <= 0).expand(self.dim, -1, -1)])
        kernel = torch.exp(lag.abs() * torch.log(decay)[:, None, None]) * side
        kernel = kernel * (1 - decay)[:, None, None]  # (2 dim, T, T)
        return self.output(torch.einsum("ctk,bkc->btc", kernel, x))


class MetaController(nn.Module):
    def __init__(self, config: MetaControllerConfig) -> None:
        super().__init__()
        self.config = c = config
        self.read_norm = nn.LayerNorm(c.width)  # the stream's scale grows with depth
        self.history = nn.GRU(c.width, c.history_dim, batch_first=True)
        self.embedder = SequenceEmbedder(c.width, c.embed_dim)
        self.encoder = mlp(c.width + c.history_dim + 2 * c.embed_dim, c.encoder_hidden,
                           2 * c.latent_dim)  # fmt: skip
        self.switch_input = nn.Linear(c.width + c.history_dim, c.switch_hidden)
        self.switch_latent = nn.Linear(c.latent_dim, c.switch_hidden, bias=False)
        self.switch_output = nn.Linear(c.switch_hidden, 1)
        self.decoder = mlp(c.latent_dim, c.decoder_hidden, 2 * c.width * c.rank)
        # U = 0 at the start (the base model unchanged), as LoRA starts: A's half of the
        # decoder's last layer is zero, B's half random, so gradients reach A at once
        with torch.no_grad():
            last = self.decoder[-1]
            last.weight[: c.width * c.rank].zero_()
            last.bias.zero_()

    # -- pieces shared by discovery (whole sequences) and control (one step) -------------

    def controller(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A, B (..., width, rank) of U = A B^T from codes z (..., n_z)."""
        c = self.config
        a, b = self.decoder(z).split(c.width * c.rank, dim=-1)
        shape = (*z.shape[:-1], c.width, c.rank)
        return a.reshape(shape) / c.rank**0.5, b.reshape(shape) / c.width**0.5

    def control(self, stream: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """e + U e with U = A B^T from z: A (B^T e), never forming the width x width U."""
        a, b = self.controller(z)
        low = torch.einsum("...wr,...w->...r", b, stream)
        return stream + torch.einsum("...wr,...r->...w", a, low)

    def switch_gate(self, switch_in: torch.Tensor, z_previous: torch.Tensor) -> torch.Tensor:
        """beta from the precomputed e/h part of f_switch and z_t-1."""
        hidden = torch.tanh(switch_in + self.switch_latent(z_previous))
        return torch.sigmoid(self.switch_output(hidden)).squeeze(-1)

    # -- control: one step at a time, split where a new code may be chosen ---------------

    def gate_step(
        self,
        stream: torch.Tensor,
        h: torch.Tensor,
        z_previous: torch.Tensor,
        started: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first half of a step: e_t (the normalised stream) and beta_t, from the stream
        (N, 1, width), h_t-1 (N, n_h) and z_t-1 (N, n_z). beta = 1 where not `started`
        (no code yet). Split from `control_step` so that a caller (Controller, an RL
        policy) can pick z_t after seeing e_t and beta_t."""
        e = self.read_norm(stream[:, 0].float())
        if self.config.force_switch:
            beta = torch.ones_like(e[:, 0])
        else:
            beta = self.switch_gate(self.switch_input(torch.cat([e, h], -1)), z_previous)
        return e, torch.where(started, beta, torch.ones_like(beta))

    def control_step(
        self, stream: torch.Tensor, e: torch.Tensor, h: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The second half: the controlled stream e + U(z_t) e (N, 1, width) and h_t."""
        _, h_next = self.history(e[:, None], h[None].contiguous())
        return self.control(stream, z[:, None].to(stream.dtype)), h_next[0]

    # -- discovery: whole sequences, with the non-causal encoder -------------------------

    def forward(
        self,
        stream: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
        sample: bool = True,
    ) -> MetaOutput:
        """stream (B, T, width) at the controlled layer, mask (B, T) of real steps (each
        row's real steps first). Proposals are sampled with the reparameterisation trick
        (their means if not `sample`)."""
        c = self.config
        if stream.ndim != 3 or stream.shape[-1] != c.width:
            raise ValueError(f"stream must be (batch, time, {c.width}), got {tuple(stream.shape)}")
        if mask.shape != stream.shape[:2]:
            raise ValueError(
                f"mask {tuple(mask.shape)} does not match stream {tuple(stream.shape)}"
            )
        e = self.read_norm(stream.float())
        history, _ = self.history(e)  # h_t
        history_before = F.pad(history, (0, 0, 1, 0))[:, :-1]  # h_t-1 (h_0 = 0)
        embedding = self.sequence_embedding(e, mask)
        mu, log_var = self.encoder(torch.cat([e, history_before, embedding], -1)).chunk(2, -1)
        log_var = log_var.clamp(-8.0, 4.0)
        if sample:
            noise = torch.randn(mu.shape, generator=generator, device=mu.device)
            proposal = mu + (0.5 * log_var).exp() * noise
        else:
            proposal = mu
        switch_in = self.switch_input(torch.cat([e, history_before], -1))
        switch_noise = None
        if sample and c.switch_noise and not c.force_switch:  # Gumbel-Sigmoid: logistic noise
            u = torch.rand(mu.shape[:2], generator=generator, device=mu.device)
            u = u.clamp(1e-6, 1 - 1e-6)
            switch_noise = torch.log(u) - torch.log1p(-u)
        z, beta = self.integrate(switch_in, proposal, switch_noise)
        return MetaOutput(self.control(stream, z.to(stream.dtype)), z, beta, mu, log_var)

    def sequence_embedding(self, e: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.embedder(e, mask)

    def integrate(
        self,
        switch_in: torch.Tensor,
        proposal: torch.Tensor,
        switch_noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The only per-step loop: beta_t needs z_t-1. beta_1 = 1 (no code yet).
        `switch_noise` (B, T): added to the switch's logits (the Gumbel-Sigmoid trick)."""
        if self.config.force_switch:
            return proposal, torch.ones(proposal.shape[:2], device=proposal.device)
        # the loop body is kept to a few fused ops: it runs once per step, in Python
        weight = self.switch_latent.weight.T  # (n_z, hidden)
        out_weight, out_bias = self.switch_output.weight[0], self.switch_output.bias
        inputs, proposals = switch_in.unbind(1), proposal.unbind(1)
        noise = None if switch_noise is None else switch_noise.unbind(1)
        z_previous = proposals[0]
        codes, gates = [z_previous], [torch.ones_like(z_previous[:, 0])]
        for t in range(1, len(proposals)):
            hidden = torch.tanh(torch.addmm(inputs[t], z_previous, weight))
            logit = torch.addmv(out_bias, hidden, out_weight)
            beta = torch.sigmoid(logit if noise is None else logit + noise[t])
            z_previous = torch.lerp(z_previous, proposals[t], beta[:, None])
            codes.append(z_previous)
            gates.append(beta)
        return torch.stack(codes, 1), torch.stack(gates, 1)


def controlled_forward(
    base: CausalTransformer,
    meta: MetaController,
    batch: dict[str, torch.Tensor],
    generator: torch.Generator | None = None,
    sample: bool = True,
) -> tuple[ModelOutput, MetaOutput]:
    """The base model on a padded batch of episodes, its stream rewritten by `meta`."""
    captured: list[MetaOutput] = []

    def intervene(stream: torch.Tensor) -> torch.Tensor:
        captured.append(meta(stream, batch["mask"], generator, sample))
        return captured[-1].stream

    out = base(
        batch["observations"][:, :-1],
        base.previous_actions(batch["actions"]),
        layer=meta.config.layer,
        intervene=intervene,
    )
    return out, captured[0]


Proposer = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""(e_t (N, width) normalised stream, h_t-1 (N, n_h)) -> new codes z (N, n_z)."""


class Controller:
    """The metacontroller at test time, one step at a time, for N parallel episodes.

    Use `intervene` as the base model's `intervene` hook in `step`: it reads e_t, updates
    the history and the switch, draws a new code from `propose` where the binarised switch
    fires (always at t = 0), and returns e_t + U(z_t) e_t. After each step, `switched`
    (N,) says which episodes took a new code and `z` holds the codes in force.
    """

    def __init__(self, metacontroller: MetaController, num: int, propose: Proposer) -> None:
        c = metacontroller.config
        device = next(metacontroller.parameters()).device
        self.meta = metacontroller
        self.propose = propose
        self.h = torch.zeros(1, num, c.history_dim, device=device)
        self.z = torch.zeros(num, c.latent_dim, device=device)
        self.started = torch.zeros(num, dtype=torch.bool, device=device)
        self.switched = torch.zeros(num, dtype=torch.bool, device=device)
        self.beta = torch.zeros(num, device=device)
        self.forced: torch.Tensor | None = None

    @property
    def layer(self) -> int:
        return self.meta.config.layer

    def force(self, z: torch.Tensor | None) -> None:
        """Hold these codes (N, n_z) from now on, whatever the switch says (None: release)."""
        self.forced = z

    def intervene(self, stream: torch.Tensor) -> torch.Tensor:
        h_before = self.h[0]
        e, beta = self.meta.gate_step(stream, h_before, self.z, self.started)
        switched = beta > SWITCH_THRESHOLD
        if switched.any():
            proposal = self.propose(e, h_before)
            self.z = torch.where(switched[:, None], proposal, self.z)
        if self.forced is not None:
            self.z = self.forced
        self.beta, self.switched = beta, switched
        self.started[:] = True
        controlled, h = self.meta.control_step(stream, e, h_before, self.z)
        self.h = h[None]
        return controlled
