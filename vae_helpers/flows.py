"""Planar normalizing flows, a VAE with a planar-flow posterior, and 2-D test energies (notebook 04).

Rezende & Mohamed (2015), "Variational Inference with Normalizing Flows", ICML. A planar map
f(z) = z + û h(wᵀz + b), h = tanh, has log|det ∂f/∂z| = log|1 + ûᵀψ(z)|, ψ(z) = h'(wᵀz + b) w.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._progress import progress_bar
from .losses import elbo, gaussian_log_likelihood, standard_normal_log_density
from .models import VAE, Decoder, Encoder, VAEBase, VAEConfig, reparameterize

Energy = Callable[[torch.Tensor], torch.Tensor]


def _tensors(**named: object) -> None:
    for name, value in named.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def _column(b: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """b with a trailing size-1 dim to broadcast against ``(..., D)``: ``(...)`` or ``(..., 1)`` -> ``(..., 1)``."""
    if b.dim() == w.dim() - 1:
        return b.unsqueeze(-1)
    if b.dim() == w.dim() and b.shape[-1] == 1:
        return b
    raise ValueError(f"b must have shape {tuple(w.shape[:-1])} or {tuple(w.shape[:-1]) + (1,)} to go with w {tuple(w.shape)}, got {tuple(b.shape)}")


def constrain_u(u: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """û = u + (m(wᵀu) - wᵀu) w / ‖w‖², m(x) = -1 + softplus(x), so that wᵀû = m(wᵀu) > -1.

    Rezende & Mohamed (2015), Appendix A.1. Args: u, w ``(..., D)``. Returns û ``(..., D)``.
    """
    _tensors(u=u, w=w)
    if u.shape[-1] != w.shape[-1]:
        raise ValueError(f"u {tuple(u.shape)} and w {tuple(w.shape)} must have the same last dimension")
    wu = (w * u).sum(-1, keepdim=True)  # (..., 1)
    w_sq = w.pow(2).sum(-1, keepdim=True).clamp_min(1e-12)  # ‖w‖², (..., 1)
    return u + (-1.0 + F.softplus(wu) - wu) * w / w_sq


def planar_transform(z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f(z) = z + u tanh(wᵀz + b) and log|1 + uᵀψ(z)|, ψ(z) = (1 - tanh²(wᵀz + b)) w.

    ``u`` is used as given (pass ``constrain_u(u, w)`` for an invertible map); a tiny 1e-8 inside the
    log guards against log 0. Args: z ``(..., D)``;
    u, w broadcastable to it; b ``(...)`` or ``(..., 1)`` matching w's leading dims. Returns
    ``(f(z) (..., D), log_det (...))``.
    """
    _tensors(z=z, u=u, w=w, b=b)
    if not (z.shape[-1] == u.shape[-1] == w.shape[-1]):
        raise ValueError(f"z {tuple(z.shape)}, u {tuple(u.shape)} and w {tuple(w.shape)} must share the last dimension")
    a = (z * w).sum(-1, keepdim=True) + _column(b, w)  # wᵀz + b, (..., 1)
    h = torch.tanh(a)
    psi = (1.0 - h.pow(2)) * w  # h'(a) w, (..., D)
    log_det = torch.log(torch.abs(1.0 + (psi * u).sum(-1)) + 1e-8)  # (...)
    return z + u * h, log_det


def planar_flow_sequence(z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """K planar maps in a row with raw per-example parameters (each u is constrained first).

    The same as K calls of ``planar_transform(z, constrain_u(u_k, w_k), w_k, b_k)``, with the
    per-flow work hoisted out of the loop. Args: z ``(..., B, D)``; u, w ``(B, K, D)``; b ``(B, K)``.
    Returns ``(z_K (..., B, D), Σ_k log_det_k (..., B))``.
    """
    _tensors(z=z, u=u, w=w, b=b)
    if u.dim() != 3 or u.shape != w.shape or tuple(b.shape) != tuple(u.shape[:2]) or z.shape[-1] != u.shape[-1]:
        raise ValueError(f"need z (..., B, D), u and w (B, K, D), b (B, K); got z {tuple(z.shape)}, u {tuple(u.shape)}, "
                         f"w {tuple(w.shape)}, b {tuple(b.shape)}")
    u_hat = constrain_u(u, w)  # (B, K, D)
    wu = (w * u_hat).sum(-1)  # wᵀû, (B, K)
    hs = []
    for u_k, w_k, b_k in zip(u_hat.unbind(1), w.unbind(1), b.unbind(1)):  # (B, D), (B, D), (B,)
        hs.append(torch.tanh(torch.linalg.vecdot(z, w_k) + b_k))  # h(wᵀz + b), (..., B)
        z = z + u_k * hs[-1].unsqueeze(-1)  # (..., B, D)
    if not hs:
        return z, torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
    return z, _planar_log_det(torch.stack(hs, -1), wu)  # (..., B, D), (..., B)


def _planar_log_det(h: torch.Tensor, wu: torch.Tensor) -> torch.Tensor:
    """Σ_k log|1 + ûₖᵀψₖ| with ûᵀψ = (1 - hₖ²) wₖᵀûₖ, from the layers' tanh outputs h ``(..., K)`` and wᵀû (broadcast)."""
    return torch.log(torch.abs(1.0 + (1.0 - h.pow(2)) * wu) + 1e-8).sum(-1)  # 1 + ûᵀψ > 0 as wᵀû > -1


class PlanarFlow(nn.Module):
    """One planar map with its own parameters u, w ``(D,)``, b ``(1,)``, or with per-example ones.

    ``forward(z, u, w, b)`` with u, w ``(B, D)`` and b ``(B,)`` or ``(B, 1)`` uses those (amortised
    flows, where an encoder outputs them). u is always passed through ``constrain_u`` first.
    """

    def __init__(self, dim: int):
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = dim
        bound = 1.0 / math.sqrt(dim)
        self.u = nn.Parameter(torch.empty(dim).uniform_(-bound, bound))
        self.w = nn.Parameter(torch.empty(dim).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.empty(1).uniform_(-bound, bound))

    def forward(self, z: torch.Tensor, u: torch.Tensor | None = None, w: torch.Tensor | None = None,
                b: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``z (B, D) -> (f(z) (B, D), log|det ∂f/∂z| (B,))``."""
        _tensors(z=z)
        if z.dim() < 1 or z.shape[-1] != self.dim:
            raise ValueError(f"z must have shape (B, {self.dim}), got {tuple(z.shape)}")
        given = [p is not None for p in (u, w, b)]
        if any(given) and not all(given):
            raise ValueError("pass all three of u, w, b (per-example parameters) or none of them")
        if not any(given):
            u, w, b = self.u, self.w, self.b
        elif u.shape != w.shape or u.shape[-1] != self.dim:
            raise ValueError(f"u {tuple(u.shape)} and w {tuple(w.shape)} must both be (B, {self.dim})")
        return planar_transform(z, constrain_u(u, w), w, b)


class PlanarFlowSequence(nn.Module):
    """K planar flows with their own parameters, applied in order; the log-dets add up."""

    def __init__(self, dim: int, num_flows: int):
        super().__init__()
        if isinstance(num_flows, bool) or not isinstance(num_flows, int) or num_flows < 0:
            raise ValueError(f"num_flows must be a non-negative int, got {num_flows!r}")
        self.dim = dim
        self.flows = nn.ModuleList(PlanarFlow(dim) for _ in range(num_flows))

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z_0 (B, D) -> (z_K (B, D), Σ_k log|det ∂f_k/∂z_{k-1}| (B,))``."""
        log_det = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
        for flow in self.flows:
            z, ld = flow(z)
            log_det = log_det + ld
        return z, log_det

    def trajectory(self, z: torch.Tensor) -> list[torch.Tensor]:
        """``[z_0, z_1, ..., z_K]``, each ``(B, D)``: the sample cloud after every layer."""
        out = [z]
        for flow in self.flows:
            out.append(flow(out[-1])[0])
        return out


def flow_free_energy(log_px: torch.Tensor, z0: torch.Tensor, zK: torch.Tensor, mu: torch.Tensor,
                     logvar: torch.Tensor, log_det: torch.Tensor) -> torch.Tensor:
    """One-sample negative ELBO (free energy): log q_0(z_0) - Σ_k log-det_k - log p(z_K) - log p(x|z_K).

    Rezende & Mohamed (2015). Args: log_px ``(...)``; z0, zK, mu, logvar ``(..., D)``;
    log_det summed over the flows ``(...)`` or one per flow ``(..., K)``. Returns ``(...)``.
    """
    _tensors(log_px=log_px, z0=z0, zK=zK, mu=mu, logvar=logvar, log_det=log_det)
    if log_det.dim() == log_px.dim() + 1:
        log_det = log_det.sum(-1)  # (..., K) -> (...)
    log_q0 = gaussian_log_likelihood(z0, mu, logvar)
    return -log_px - standard_normal_log_density(zK) + log_q0 - log_det


@dataclass
class FlowVAEConfig(VAEConfig):
    """The 20-D VAE of the series plus ``num_flows`` amortised planar flows on q(z|x)."""

    hidden_dim: int = 500
    latent_dim: int = 20
    depth: int = 2
    likelihood: str = "bernoulli"
    num_flows: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.num_flows, bool) or not isinstance(self.num_flows, int) or self.num_flows < 0:
            raise ValueError(f"num_flows must be a non-negative int, got {self.num_flows!r}")


class FlowVAE(VAEBase):
    """VAE whose encoder outputs mu, logvar and u, w, b of K planar flows per input; num_flows=0 is a plain VAE.

    The flows start as the identity (û = 0), and the encoder's flow outputs are multiplied by
    ``flow_scale``, which makes Adam's steps on them small; with full-size steps the flows change
    too fast and the bound ends up worse than without them.
    """

    flow_scale: float = 0.05

    def __init__(self, config: FlowVAEConfig | None = None):
        super().__init__()
        self.config = config or FlowVAEConfig()
        c = self.config
        self.likelihood, self.latent_dim, self.num_flows = c.likelihood, c.latent_dim, c.num_flows
        self.encoder = Encoder(c.input_dim, c.hidden_dim, 2 * c.latent_dim + c.num_flows * (2 * c.latent_dim + 1), c.depth)
        out = c.input_dim if c.likelihood == "bernoulli" else 2 * c.input_dim
        self.decoder = Decoder(c.latent_dim, c.hidden_dim, out, c.depth)
        self._start_flows_at_identity()

    @torch.no_grad()
    def _start_flows_at_identity(self) -> None:
        """Zero weights for the flow outputs; biases with unit w and wᵀu = log(e - 1), so m(wᵀu) = 0 and û = 0."""
        D, K = self.latent_dim, self.num_flows
        if K == 0:
            return
        last = self.encoder.net[-1]
        w0 = torch.randn(K, D)
        w0 = w0 / w0.norm(dim=-1, keepdim=True)  # (K, D)
        u0 = math.log(math.e - 1) * w0
        last.weight[2 * D :].zero_()
        last.bias[2 * D :] = torch.cat([u0.flatten(), w0.flatten(), torch.zeros(K)]) / self.flow_scale

    def encode_all(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``x (B, ...) -> mu, logvar (B, D), u, w (B, K, D), b (B, K)`` (u raw, before ``constrain_u``)."""
        _tensors(x=x)
        B, D, K = x.shape[0], self.latent_dim, self.num_flows
        h = self.encoder(x.reshape(B, -1))  # (B, 2D + K(2D+1))
        mu, logvar, u, w, b = h.split([D, D, K * D, K * D, K], dim=-1)
        s = self.flow_scale
        return mu, logvar, s * u.reshape(B, K, D), s * w.reshape(B, K, D), s * b

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, ...) -> mu (B, D), logvar (B, D)``: the base distribution q_0(z_0|x)."""
        return self.encode_all(x)[:2]

    decode = VAE.decode  # the same MLP decoder as notebook 02's VAE: logits, or (mean, logvar)

    def sample_posterior(self, x: torch.Tensor, num_samples: int | None = None) -> tuple[torch.Tensor, ...]:
        """Draw z_0 ~ q_0 and push it through the flows: ``(z0, zK, Σ log-det, mu, logvar)``.

        z0, zK are ``(B, D)`` (or ``(S, B, D)`` with ``num_samples=S``), the log-det ``(B,)`` (or ``(S, B)``).
        """
        mu, logvar, u, w, b = self.encode_all(x)
        z0 = reparameterize(mu, logvar, num_samples)
        zK, log_det = planar_flow_sequence(z0, u, w, b)
        return z0, zK, log_det, mu, logvar

    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x|z_K) + log p(z_K) - log q_0(z_0) + Σ log-det for k draws: ``(B, ...) -> (k, B)``."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        z0, zK, log_det, mu, logvar = self.sample_posterior(x, k)
        return -flow_free_energy(self.log_likelihood(x, zK), z0, zK, mu, logvar, log_det)


def flow_vae_loss(model: FlowVAE, x: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
    """Batch means of the flow ELBO terms for ``fit``; ``kl`` is the one-sample log q_K(z_K) - log p(z_K)."""
    z0, zK, log_det, mu, logvar = model.sample_posterior(x)
    log_px = model.log_likelihood(x, zK)  # (B,)
    kl = gaussian_log_likelihood(z0, mu, logvar) - log_det - standard_normal_log_density(zK)
    return {key: value.mean() for key, value in elbo(log_px, kl, beta).items()}


# ----------------------------------------------------------------------------- 2-D target energies


def _check_2d(z: torch.Tensor) -> None:
    _tensors(z=z)
    if z.dim() < 1 or z.shape[-1] != 2:
        raise ValueError(f"z must have shape (N, 2), got {tuple(z.shape)}")


def _w1(z: torch.Tensor) -> torch.Tensor:
    return torch.sin(math.pi * z[..., 0] / 2)


def _neg_logaddexp(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """-log(exp(-a) + exp(-b)), stable."""
    return -torch.logaddexp(-a, -b)


def U1(z: torch.Tensor) -> torch.Tensor:
    """Ring with two lobes (Rezende & Mohamed 2015, Table 1): ``(N, 2) -> (N,)``."""
    _check_2d(z)
    ring = 0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2
    return ring + _neg_logaddexp(0.5 * ((z[..., 0] - 2) / 0.6) ** 2, 0.5 * ((z[..., 0] + 2) / 0.6) ** 2)


def U2(z: torch.Tensor) -> torch.Tensor:
    """Sine wave, ½((z2 - w1(z)) / 0.4)²: ``(N, 2) -> (N,)``."""
    _check_2d(z)
    return 0.5 * ((z[..., 1] - _w1(z)) / 0.4) ** 2


def U3(z: torch.Tensor) -> torch.Tensor:
    """Sine wave splitting into two around z1 = 1: ``(N, 2) -> (N,)``."""
    _check_2d(z)
    w2 = 3 * torch.exp(-0.5 * ((z[..., 0] - 1) / 0.6) ** 2)
    d = z[..., 1] - _w1(z)
    return _neg_logaddexp(0.5 * (d / 0.35) ** 2, 0.5 * ((d + w2) / 0.35) ** 2)


def U4(z: torch.Tensor) -> torch.Tensor:
    """Sine wave and a sigmoid-shifted copy of it: ``(N, 2) -> (N,)``."""
    _check_2d(z)
    w3 = 3 * torch.sigmoid((z[..., 0] - 1) / 0.3)
    d = z[..., 1] - _w1(z)
    return _neg_logaddexp(0.5 * (d / 0.4) ** 2, 0.5 * ((d + w3) / 0.35) ** 2)


ENERGIES: dict[str, Energy] = {"U1": U1, "U2": U2, "U3": U3, "U4": U4}


class PlanarFlowBank(nn.Module):
    """M independent planar flows of up to K layers each, run as one batched computation.

    Model m uses only its first ``num_flows[m]`` layers (the others are switched off: û = 0).
    Parameters u, w ``(M, K, D)``, b ``(M, K)``, uniform in ±``init_scale``; samples are ``(M, N, D)``.
    """

    def __init__(self, num_flows: Sequence[int], dim: int = 2, init_scale: float = 0.1):
        super().__init__()
        if not num_flows or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in num_flows):
            raise ValueError(f"num_flows must be a non-empty list of non-negative ints, got {num_flows!r}")
        M, K, bound = len(num_flows), max(max(num_flows), 1), init_scale
        self.dim = dim
        self.u = nn.Parameter(torch.empty(M, K, dim).uniform_(-bound, bound))
        self.w = nn.Parameter(torch.empty(M, K, dim).uniform_(-bound, bound))
        self.b = nn.Parameter(torch.empty(M, K).uniform_(-bound, bound))
        self.register_buffer("active", (torch.arange(K) < torch.tensor(num_flows)[:, None]).float())  # (M, K)

    def trajectory(self, z: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``z_0 (M, N, D) -> ([z_0, ..., z_K] each (M, N, D), Σ log-det (M, N))``.

        The maths of ``planar_transform`` with û from ``constrain_u``, fused into few tensor ops
        per layer (tiny tensors: the cost is the number of ops, not their size).
        """
        _tensors(z=z)
        if z.dim() != 3 or z.shape[0] != self.u.shape[0] or z.shape[-1] != self.dim:
            raise ValueError(f"z must have shape ({self.u.shape[0]}, N, {self.dim}), got {tuple(z.shape)}")
        u_hat = constrain_u(self.u, self.w) * self.active.unsqueeze(-1)  # (M, K, D); switched-off layers: û = 0
        wu = (self.w * u_hat).sum(-1).unsqueeze(1)  # wᵀû, (M, 1, K)
        ws, bs, us = self.w.unsqueeze(-1).unbind(1), self.b[:, None, None].unbind(-1), u_hat.unsqueeze(2).unbind(1)
        zs, hs = [z], []
        for w, b, u in zip(ws, bs, us):  # (M, D, 1), (M, 1, 1), (M, 1, D)
            hs.append(torch.tanh(torch.baddbmm(b, zs[-1], w)))  # tanh(wᵀz + b), (M, N, 1)
            zs.append(torch.addcmul(zs[-1], hs[-1], u))  # z + û h, (M, N, D)
        return zs, _planar_log_det(torch.cat(hs, -1), wu)  # hs: K x (M, N, 1) -> (M, N, K); log-det (M, N)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``z_0 (M, N, D) -> (z_K (M, N, D), Σ log-det (M, N))``."""
        zs, log_det = self.trajectory(z)
        return zs[-1], log_det

    @torch.no_grad()
    def sample(self, num_samples: int, generator: torch.Generator | None = None, chunk: int = 10_000) -> torch.Tensor:
        """``num_samples`` draws z_K from each flow, ``(M, num_samples, D)``, pushed through in chunks of ``chunk``.

        The chunks bound the memory: ``trajectory`` keeps every layer's output, K x M x N x D numbers.
        """
        for name, value in (("num_samples", num_samples), ("chunk", chunk)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        M = self.u.shape[0]
        sizes = [min(chunk, num_samples - start) for start in range(0, num_samples, chunk)]
        return torch.cat([self(torch.randn(M, n, self.dim, generator=generator))[0] for n in sizes], dim=1)


def box_wall(z: torch.Tensor, limit: float = 4.0, width: float = 0.2) -> torch.Tensor:
    """½ Σ_j (max(|z_j| - limit, 0) / width)²: zero inside the square [-limit, limit]², steep outside. ``(N, 2) -> (N,)``."""
    _check_2d(z)
    return 0.5 * (torch.relu(z.abs() - limit) / width).pow(2).sum(-1)


def fit_planar_flows_2d(energies: Sequence[Energy], num_flows: Sequence[int], num_steps: int = 4000,
                        batch_size: int = 256, lr: float = 2e-2, anneal_steps: int | None = None,
                        box: float | None = 4.0, seed: int = 0, progress: bool = True) -> tuple[PlanarFlowBank, torch.Tensor]:
    """Fit a planar flow from N(0, I) to every (energy, K) pair at once by minimising the reverse KL.

    Minimises E_q0[log q_0(z_0) - Σ log-det + β_t U(z_K)] with β_t rising linearly from 0.01 to 1
    over ``anneal_steps`` (default: the first 30 %); Adam with a cosine decay of the learning rate to
    a tenth. ``box`` adds ``box_wall(z, box)`` to every energy (U2-U4 do not decay along z1).
    Model ``i * len(num_flows) + j`` fits ``energies[i]`` with ``num_flows[j]`` layers. Runs on one
    CPU thread (tiny tensors). ``progress`` shows a bar over the steps. Returns the bank and each
    model's loss at β = 1, i.e. KL(q_K || p) - log Z, per step: ``(num_steps, M)``.
    """
    if not energies or not all(callable(e) for e in energies):
        raise ValueError("energies must be a non-empty list of functions z (N, 2) -> (N,)")
    for name, value in (("num_steps", num_steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        bank = PlanarFlowBank([k for _ in energies for k in num_flows])
    M, J = bank.u.shape[0], len(num_flows)
    anneal = max(1, anneal_steps if anneal_steps is not None else (3 * num_steps) // 10)
    optimizer = torch.optim.Adam(bank.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 0.1 + 0.45 * (1 + math.cos(math.pi * t / num_steps)))
    history = torch.zeros(num_steps, M)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    bar = progress_bar(num_steps, f"{M} flows", progress, unit="step")
    try:
        for step in range(num_steps):
            beta = min(1.0, 0.01 + step / anneal)
            z0 = torch.randn(M, batch_size, 2, generator=generator)
            zK, log_det = bank(z0)
            zK = zK.view(len(energies), J, batch_size, 2)  # (targets, K values, N, 2)
            energy = torch.cat([U(zK[i]) + (box_wall(zK[i], box) if box else 0.0) for i, U in enumerate(energies)])  # (M, N)
            log_qK = standard_normal_log_density(z0) - log_det  # (M, N)
            loss = (log_qK + beta * energy).mean(1)  # (M,)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
            schedule.step()
            history[step] = (log_qK + energy).mean(1).detach()
            if (step + 1) % 50 == 0 or step + 1 == num_steps:
                bar.update(step + 1 - bar.n)
    finally:
        bar.close()
        torch.set_num_threads(threads)
    return bank.eval(), history


def planar_inverse(y: torch.Tensor, u_hat: torch.Tensor, w: torch.Tensor, b: torch.Tensor, num_iters: int = 60) -> torch.Tensor:
    """z with f(z) = y for one invertible planar map (wᵀû > -1), by bisection along w.

    wᵀf(z) = a + wᵀû tanh(a + b) with a = wᵀz is increasing in a, and a lies within |wᵀû| of wᵀy;
    then z = y - û tanh(a + b). Args: y ``(N, D)``; u_hat, w ``(D,)``; b ``(1,)`` or a float. Returns z ``(N, D)``.
    """
    _tensors(y=y, u_hat=u_hat, w=w)
    if y.dim() != 2 or u_hat.shape != (y.shape[-1],) or w.shape != u_hat.shape:
        raise ValueError(f"need y (N, D) and u_hat, w (D,); got y {tuple(y.shape)}, u_hat {tuple(u_hat.shape)}, w {tuple(w.shape)}")
    wu = float(w @ u_hat)
    if wu <= -1:
        raise ValueError(f"the map is not invertible: wᵀû = {wu:.3f} must exceed -1 (use constrain_u)")
    b = torch.as_tensor(b, dtype=y.dtype).reshape(-1)[0]
    t = y @ w  # wᵀy, (N,)
    low, high = t - abs(wu) - 1e-6, t + abs(wu) + 1e-6
    for _ in range(num_iters):
        mid = 0.5 * (low + high)
        above = mid + wu * torch.tanh(mid + b) > t
        low, high = torch.where(above, low, mid), torch.where(above, mid, high)
    a = 0.5 * (low + high)  # wᵀz, (N,)
    return y - u_hat * torch.tanh(a + b)[:, None]


@dataclass
class PosteriorFlow:
    """q_K(z) of one input: z = mu + σ ⊙ f_K ∘ … ∘ f_1(ε), ε ~ N(0, I), with û, w ``(K, D)``, b ``(K,)``.

    A planar map after the diagonal affine map is again a planar map, so this is the VAE's family q_K.
    """

    mu: torch.Tensor
    logvar: torch.Tensor
    u_hat: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor

    @property
    def num_flows(self) -> int:
        return self.u_hat.shape[0]

    def sample(self, num_samples: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``num_samples`` draws z ``(N, D)`` and their log q_K(z) ``(N,)``."""
        eps = torch.randn(num_samples, self.mu.shape[-1], generator=generator, dtype=self.mu.dtype)
        return _push(eps, self.mu, self.logvar, self.u_hat, self.w, self.b)

    @torch.no_grad()
    def log_density(self, z: torch.Tensor) -> torch.Tensor:
        """log q_K(z) at any points z ``(N, D)`` (the flows inverted layer by layer) -> ``(N,)``."""
        _tensors(z=z)
        y = (z - self.mu) * torch.exp(-0.5 * self.logvar)  # (N, D), the flows' output
        log_det = torch.zeros(z.shape[0], dtype=z.dtype)
        for k in reversed(range(self.num_flows)):
            y = planar_inverse(y, self.u_hat[k], self.w[k], self.b[k : k + 1])
            log_det = log_det + planar_transform(y, self.u_hat[k], self.w[k], self.b[k : k + 1])[1]
        return standard_normal_log_density(y) - log_det - 0.5 * self.logvar.sum()


def _push(eps: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, u_hat: torch.Tensor, w: torch.Tensor,
          b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ε ``(N, D)`` -> z = mu + σ ⊙ f(ε) ``(N, D)`` and log q_K(z) ``(N,)``."""
    y, log_det = eps, torch.zeros(eps.shape[0], dtype=eps.dtype)
    for k in range(u_hat.shape[0]):
        y, ld = planar_transform(y, u_hat[k], w[k], b[k : k + 1])
        log_det = log_det + ld
    log_q = standard_normal_log_density(eps) - log_det - 0.5 * logvar.sum()
    return mu + torch.exp(0.5 * logvar) * y, log_q


def fit_posterior_flow(log_joint: Energy, mu: torch.Tensor, logvar: torch.Tensor, num_flows: int, num_steps: int = 1000,
                       batch_size: int = 128, lr: float = 1e-2, anneal_steps: int = 0, seed: int = 0,
                       init_scale: float = 1.0) -> tuple[list[PosteriorFlow], torch.Tensor]:
    """Fit q_K (a diagonal Gaussian for K = 0) to M unnormalised posteriors at once by maximising each ELBO.

    Minimises E_q[log q_K(z) - β_t log_joint(z)] by Monte Carlo with ``batch_size`` samples per posterior
    (β_t rises from 0.01 to 1 over ``anneal_steps``, then stays 1); Adam, starting from ``mu, logvar``
    ``(M, D)`` and random flows (uniform in ±``init_scale``). ``log_joint``: z ``(N, M, D)`` -> log p(x_m, z)
    ``(N, M)``. Returns one ``PosteriorFlow`` per posterior and the -ELBO estimates per step ``(num_steps, M)``.
    """
    _tensors(mu=mu, logvar=logvar)
    if mu.dim() != 2 or logvar.shape != mu.shape:
        raise ValueError(f"mu and logvar must have one shape (M, D), got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    for name, value in (("num_flows", num_flows), ("num_steps", num_steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "num_flows" else 1):
            raise ValueError(f"{name} must be a {'non-negative' if name == 'num_flows' else 'positive'} int, got {value!r}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is fastest, also on a busy machine
    try:
        generator = torch.Generator().manual_seed(seed)
        (M, dim), dtype = mu.shape, mu.dtype
        rand = lambda *shape: (torch.rand(*shape, generator=generator, dtype=dtype) * 2 - 1) * init_scale
        params = [p.requires_grad_() for p in (mu.detach().clone(), logvar.detach().clone(),
                                               rand(M, num_flows, dim), rand(M, num_flows, dim), rand(M, num_flows))]
        optimizer = torch.optim.Adam(params, lr=lr)
        history = torch.zeros(num_steps, M)
        for step in range(num_steps):
            beta = min(1.0, 0.01 + step / anneal_steps) if anneal_steps else 1.0
            m, lv, u, w, b = params
            eps = torch.randn(batch_size, M, dim, generator=generator, dtype=dtype)  # (N, M, D)
            y, log_det = planar_flow_sequence(eps, u, w, b)  # (N, M, D), (N, M)
            log_q = standard_normal_log_density(eps) - log_det - 0.5 * lv.sum(-1)  # (N, M)
            log_p = log_joint(m + torch.exp(0.5 * lv) * y)  # (N, M)
            loss = (log_q - beta * log_p).mean(0)  # (M,)
            optimizer.zero_grad(set_to_none=True)
            loss.sum().backward()
            optimizer.step()
            history[step] = (log_q - log_p).mean(0).detach()
    finally:
        torch.set_num_threads(threads)
    m, lv, u, w, b = (p.detach() for p in params)
    u_hat = constrain_u(u, w)
    return [PosteriorFlow(m[i], lv[i], u_hat[i], w[i], b[i]) for i in range(M)], history

@torch.no_grad()
@torch.no_grad()
def grid_log_joint(model: VAEBase, x: torch.Tensor, grid: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """log p(x, z) = log p(x | z) + log p(z) of a Bernoulli-decoder VAE for every input and grid point.

    The decoder runs once per grid point, not once per pair: log p(x | z) is a matrix product of
    the binary images with log σ(logits) and log σ(-logits). Args: x ``(N, 784)`` in {0, 1}; grid ``(G, D)``.
    Returns ``(N, G)``.
    """
    _tensors(x=x, grid=grid)
    if getattr(model, "likelihood", None) != "bernoulli":
        raise ValueError("grid_log_joint needs a VAE with a Bernoulli decoder")
    if x.dim() != 2 or grid.dim() != 2:
        raise ValueError(f"need x (N, pixels) and grid (G, D), got {tuple(x.shape)} and {tuple(grid.shape)}")
    out = torch.empty(x.shape[0], grid.shape[0])
    x = x.float()
    for start in range(0, grid.shape[0], chunk):
        z = grid[start : start + chunk].float()  # (g, D)
        logits = model.decode(z).reshape(z.shape[0], -1)  # (g, pixels)
        out[:, start : start + z.shape[0]] = x @ F.logsigmoid(logits).T + (1 - x) @ F.logsigmoid(-logits).T \
            + standard_normal_log_density(z)
    return out
