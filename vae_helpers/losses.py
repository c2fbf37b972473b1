"""Log-likelihoods, the Gaussian KL, the ELBO and the importance-weighted bound (notebooks 01-02).

Every function returns one value per example (the leading dims of its input); the caller
reduces. Sums run over the last dimension (pixels or latent dimensions).
"""

from __future__ import annotations

import math
from typing import Protocol

import torch
import torch.nn.functional as F

from ._progress import progress_bar

LOG_2PI = math.log(2 * math.pi)


def _tensors(**named: object) -> None:
    for name, value in named.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def _broadcast(**named: torch.Tensor) -> None:
    try:
        torch.broadcast_shapes(*(t.shape for t in named.values()))
    except RuntimeError:
        shapes = ", ".join(f"{name} {tuple(t.shape)}" for name, t in named.items())
        raise ValueError(f"shapes do not broadcast together: {shapes}") from None


def _check_unit_interval(x: torch.Tensor, name: str = "x") -> None:
    """Refuse Bernoulli targets outside [0, 1] with a hint at the usual cause (0-255 or [-1, 1] images).

    Checked where it costs no wait for a device (tensors on the CPU); on an accelerator the check
    would stall every training step, so it is left out there.
    """
    if x.device.type != "cpu" or x.numel() == 0 or x.dtype == torch.bool:
        return
    low, high = (float(v) for v in torch.aminmax(x.detach()))
    if low >= 0.0 and high <= 1.0:
        return
    if high > 1.0 and low >= 0.0 and high <= 255.0:
        hint = "it looks like 0-255 pixel values: divide by 255"
    elif low >= -1.0 and high <= 1.0:
        hint = "it looks like images scaled to [-1, 1]: use (x + 1) / 2"
    elif low != low or high != high:
        hint = "it holds NaN"
    else:
        hint = "a Bernoulli likelihood needs pixel intensities or 0/1 values"
    raise ValueError(f"expected {name} with values in [0, 1] (pixel intensities or binarised images), "
                     f"got {x.dtype} values in [{low:g}, {high:g}]: {hint}")


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL of each latent dimension, -1/2 (1 + logvar - mu^2 - exp(logvar)): ``(..., D) -> (..., D)`` (notebook 02)."""
    _tensors(mu=mu, logvar=logvar)
    if mu.shape != logvar.shape:
        raise ValueError(f"mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must have the same shape")
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) = -1/2 sum(1 + logvar - mu^2 - exp(logvar)).

    Kingma & Welling (2014), Appendix B. Args: mu, logvar ``(..., D)``. Returns ``(...)``.
    """
    return gaussian_kl_per_dim(mu, logvar).sum(dim=-1)


def gaussian_log_likelihood(x: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(x; mu, diag(exp(logvar))) = -1/2 sum(log 2pi + logvar + (x - mu)^2 / exp(logvar)).

    Args: x, mu, logvar broadcastable to ``(..., D)``. Returns ``(...)``.
    """
    _tensors(x=x, mu=mu, logvar=logvar)
    _broadcast(x=x, mu=mu, logvar=logvar)
    return -0.5 * torch.sum(LOG_2PI + logvar + (x - mu).pow(2) * torch.exp(-logvar), dim=-1)


def standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dim: ``(..., D) -> (...)``."""
    _tensors(z=z)
    return -0.5 * torch.sum(LOG_2PI + z.pow(2), dim=-1)


def bernoulli_log_likelihood(x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """log Bernoulli(x; sigmoid(logits)) = sum(x * logits - softplus(logits)), stable for any logits.

    This is minus the sigmoid cross-entropy. Args: x in [0, 1] and logits, broadcastable to
    ``(..., D)``. Returns ``(...)``.
    """
    _tensors(x=x, logits=logits)
    _broadcast(x=x, logits=logits)
    _check_unit_interval(x)
    return torch.sum(x * logits - F.softplus(logits), dim=-1)


def squared_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Sum of squared pixel errors ``sum((x - x_hat)^2)``: ``(..., D) -> (...)`` (notebook 01)."""
    _tensors(x=x, x_hat=x_hat)
    if x.shape != x_hat.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} must have the same shape")
    return torch.sum((x - x_hat).pow(2), dim=-1)


def elbo(log_likelihood: torch.Tensor, kl: torch.Tensor, beta: float = 1.0) -> dict[str, torch.Tensor]:
    """The ELBO and its named terms per example, from log p(x|z) and KL(q(z|x) || p(z)), both ``(B,)``.

    Returns ``elbo = log_likelihood - kl``, ``reconstruction = -log_likelihood``, ``kl`` and
    ``loss = -log_likelihood + beta * kl`` (the negative ELBO when beta = 1), each ``(B,)``.
    """
    _tensors(log_likelihood=log_likelihood, kl=kl)
    if log_likelihood.shape != kl.shape:
        raise ValueError(f"log_likelihood {tuple(log_likelihood.shape)} and kl {tuple(kl.shape)} must have the same shape")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise TypeError(f"beta must be a non-negative number (the weight of the KL term), got {beta!r}")
    if not (math.isfinite(beta) and beta >= 0):
        raise ValueError(f"beta must be a finite non-negative number (the weight of the KL term), got {beta!r}")
    return {
        "loss": -log_likelihood + beta * kl,
        "elbo": log_likelihood - kl,
        "reconstruction": -log_likelihood,
        "kl": kl,
    }


class LatentModel(Protocol):
    """What the losses need from a VAE-like model (``models.VAE``, ``models.ConvVAE``, ``flows.FlowVAE``)."""

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...
    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor: ...
    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor: ...


def vae_loss(model: LatentModel, x: torch.Tensor, beta: float = 1.0, num_samples: int = 1) -> dict[str, torch.Tensor]:
    """Batch means of the ELBO terms for ``fit``: ``num_samples`` Monte Carlo draws of z per input."""
    from .models import reparameterize

    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar, num_samples)  # (S, B, D)
    log_px = model.log_likelihood(x, z).mean(0)  # (B,)
    terms = elbo(log_px, gaussian_kl(mu, logvar), beta)
    return {key: value.mean() for key, value in terms.items()}


@torch.no_grad()
def iwae_bound(model: LatentModel, x: torch.Tensor, k: int = 100, batch_size: int | None = None,
               progress: bool = False) -> torch.Tensor:
    """Importance-weighted estimate of log p(x) per example (Burda et al., 2016), in nats, ``(B,)``.

    log p(x) >= E[ log (1/k) sum_i p(x, z_i) / q(z_i|x) ], z_i ~ q(z|x). k = 1 gives the ELBO;
    the bound rises towards log p(x) as k grows. Computed in chunks of ``batch_size`` inputs
    (default: about 20 000 samples per chunk, which bounds the memory) with a log-sum-exp over the k samples.
    ``progress`` shows a bar over the inputs (for evaluations that take more than a few seconds).
    Each chunk goes to the device of the model's parameters; the bound comes back on ``x``'s device.
    """
    _tensors(x=x)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if batch_size is None:
        batch_size = max(1, 20_000 // k)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}")
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    out = []
    params = getattr(model, "parameters", None)
    device = next(iter(params()), x).device if callable(params) else x.device
    bar = progress_bar(x.shape[0], f"IWAE bound, k = {k}", progress, unit="input")
    for start in range(0, x.shape[0], batch_size):
        log_w = model.log_importance_weights(x[start : start + batch_size].to(device), k)  # (k, b)
        out.append((torch.logsumexp(log_w, dim=0) - math.log(k)).to(x.device))
        bar.update(log_w.shape[1])
    bar.close()
    if was_training:
        model.train()
    return torch.cat(out)


@torch.no_grad()
def rate_distortion(model: LatentModel, x: torch.Tensor, batch_size: int = 1000) -> dict[str, torch.Tensor]:
    """Distortion -E_q[log p(x|z)] (one sample), rate KL(q(z|x) || N(0, I)) and the rate of each latent dimension.

    Means over the inputs ``x`` (N, ...) in nats per example, computed in chunks of ``batch_size``; returns
    ``{"distortion": (), "rate": (), "rate_per_dim": (latent_dim,)}``. With beta = 1, distortion + rate is the
    negative ELBO; the beta sweep of notebook 03 plots one point (rate, distortion) per KL weight.
    """
    from .models import reparameterize

    _tensors(x=x)
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one example, got an empty batch")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    params = getattr(model, "parameters", None)
    device = next(iter(params()), x).device if callable(params) else x.device
    distortion, per_dim = torch.zeros(()), None
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size].to(device)
        mu, logvar = model.encode(xb)  # (b, D) each
        z = reparameterize(mu, logvar, 1)  # (1, b, D)
        distortion += -model.log_likelihood(xb, z).sum().cpu()
        kl = gaussian_kl_per_dim(mu, logvar).sum(0).cpu()  # (D,)
        per_dim = kl if per_dim is None else per_dim + kl
    if was_training:
        model.train()
    n = x.shape[0]
    return {"distortion": distortion / n, "rate": per_dim.sum() / n, "rate_per_dim": per_dim / n}
