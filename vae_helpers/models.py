"""Encoders, decoders, the plain autoencoder (notebook 01) and the MLP VAE (notebook 02).

Every VAE-like model offers ``encode(x) -> (mu, logvar)``, ``decode(z)`` (the parameters of
p(x|z)), ``log_likelihood(x, z)``, ``mean_image(z)`` and ``log_importance_weights(x, k)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .losses import bernoulli_log_likelihood, gaussian_log_likelihood, standard_normal_log_density

LIKELIHOODS = ("bernoulli", "gaussian")


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
    """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I): a sample that gradients can flow through.

    Args: mu, logvar ``(B, D)``. Returns ``(B, D)``, or ``(S, B, D)`` when ``num_samples=S`` is given.
    """
    if not isinstance(mu, torch.Tensor) or not isinstance(logvar, torch.Tensor):
        raise TypeError("mu and logvar must be torch.Tensors")
    if mu.shape != logvar.shape:
        raise ValueError(f"mu {tuple(mu.shape)} and logvar {tuple(logvar.shape)} must have the same shape")
    shape = mu.shape if num_samples is None else (num_samples, *mu.shape)
    if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1):
        raise ValueError(f"num_samples must be a positive int or None, got {num_samples!r}")
    eps = torch.randn(shape, dtype=mu.dtype, device=mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


def mlp(sizes: list[int], activation: type[nn.Module] = nn.ELU) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (none after the last)."""
    if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"sizes must be at least two positive ints, got {sizes}")
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """x ``(B, input_dim)`` -> ELU hidden layer(s) -> ``(B, output_dim)``."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, depth: int = 1):
        super().__init__()
        self.net = mlp([input_dim] + [hidden_dim] * depth + [output_dim])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """z ``(B, latent_dim)`` -> ELU hidden layer(s) -> logits (or other raw outputs) ``(B, output_dim)``."""

    def __init__(self, latent_dim: int, hidden_dim: int, output_dim: int, depth: int = 1):
        super().__init__()
        self.net = mlp([latent_dim] + [hidden_dim] * depth + [output_dim])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def _check_dims(**dims: int) -> None:
    for name, value in dims.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


@dataclass
class AEConfig:
    """Sizes of the plain autoencoder (the seed's 600 hidden units, latent size 60)."""

    input_dim: int = 784
    hidden_dim: int = 600
    latent_dim: int = 60
    depth: int = 1

    def __post_init__(self) -> None:
        _check_dims(input_dim=self.input_dim, hidden_dim=self.hidden_dim, latent_dim=self.latent_dim, depth=self.depth)


class Autoencoder(nn.Module):
    """Deterministic autoencoder: ``encode(x) -> z``, ``decode(z) -> logits``, ``forward(x) -> sigmoid output``."""

    def __init__(self, config: AEConfig | None = None):
        super().__init__()
        self.config = config or AEConfig()
        c = self.config
        self.encoder = Encoder(c.input_dim, c.hidden_dim, c.latent_dim, c.depth)
        self.decoder = Decoder(c.latent_dim, c.hidden_dim, c.input_dim, c.depth)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 784) -> (B, latent_dim)``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim) -> (B, 784)`` logits (apply a sigmoid for pixel values)."""
        return self.decoder(z)

    def mean_image(self, z: torch.Tensor) -> torch.Tensor:
        """Decoded pixel values in [0, 1]: ``sigmoid(decode(z))``."""
        return torch.sigmoid(self.decode(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruction x_hat in [0, 1], ``(B, 784)``."""
        return self.mean_image(self.encode(x))


def autoencoder_loss(model: Autoencoder, x: torch.Tensor, kind: str = "bce") -> dict[str, torch.Tensor]:
    """Batch-mean reconstruction loss for ``fit``: summed over pixels, averaged over the batch.

    ``kind="mse"``: sum of squared errors of the sigmoid output; ``"bce"``: binary cross-entropy
    from the logits (numerically stable). Both terms are reported; ``loss`` is the chosen one.
    """
    from .losses import squared_error

    if kind not in ("mse", "bce"):
        raise ValueError(f"kind must be 'mse' or 'bce', got {kind!r}")
    logits = model.decode(model.encode(x))
    mse = squared_error(x, torch.sigmoid(logits)).mean()
    bce = -bernoulli_log_likelihood(x, logits).mean()
    return {"loss": mse if kind == "mse" else bce, "mse": mse, "bce": bce}


@dataclass
class VAEConfig:
    """Sizes and likelihood of the MLP VAE (``VAEConfig(latent_dim=2, hidden_dim=500)``)."""

    input_dim: int = 784
    hidden_dim: int = 500
    latent_dim: int = 2
    depth: int = 1
    likelihood: str = "bernoulli"

    def __post_init__(self) -> None:
        _check_dims(input_dim=self.input_dim, hidden_dim=self.hidden_dim, latent_dim=self.latent_dim, depth=self.depth)
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")


class VAEBase(nn.Module):
    """Shared VAE behaviour; subclasses set ``self.likelihood`` and implement ``encode`` and ``decode``."""

    likelihood: str = "bernoulli"
    latent_dim: int
    min_logvar: float = -6.0  # floor for a Gaussian decoder's log-variance (no infinite densities)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def _decode_flat(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Decoder parameters for codes ``(..., D)``, each flattened to ``(..., pixels)``."""
        lead = z.shape[:-1]
        out = self.decode(z.reshape(-1, z.shape[-1]))
        parts = out if isinstance(out, tuple) else (out,)
        return tuple(p.reshape(*lead, -1) for p in parts)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example: x ``(B, ...)``, z ``(B, D)`` or ``(S, B, D)`` -> ``(B,)`` or ``(S, B)``."""
        params = self._decode_flat(z)
        x_flat = x.reshape(x.shape[0], -1)
        if self.likelihood == "bernoulli":
            return bernoulli_log_likelihood(x_flat, params[0])
        return gaussian_log_likelihood(x_flat, params[0], params[1])

    def mean_image(self, z: torch.Tensor) -> torch.Tensor:
        """E[x|z], pixel values in [0, 1]: ``(B, D) -> (B, pixels)``."""
        params = self._decode_flat(z)
        return torch.sigmoid(params[0]) if self.likelihood == "bernoulli" else params[0]

    def sample_images(self, z: torch.Tensor) -> torch.Tensor:
        """One draw x ~ p(x|z) per code (Bernoulli pixels, or Gaussian noise around the mean): ``(B, pixels)``."""
        params = self._decode_flat(z)
        if self.likelihood == "bernoulli":
            return torch.bernoulli(torch.sigmoid(params[0]))
        return params[0] + torch.exp(0.5 * params[1]) * torch.randn_like(params[0])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass with one sample: returns ``(x_mean (B, pixels), mu (B, D), logvar (B, D))``."""
        mu, logvar = self.encode(x)
        return self.mean_image(reparameterize(mu, logvar)), mu, logvar

    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x, z_i) - log q(z_i|x) for k draws z_i ~ q(z|x): ``(B, ...) -> (k, B)``."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, k)  # (k, B, D)
        log_q = gaussian_log_likelihood(z, mu, logvar)
        return self.log_likelihood(x, z) + standard_normal_log_density(z) - log_q


class VAE(VAEBase):
    """MLP VAE: encoder x -> (mu, logvar), decoder z -> Bernoulli logits or Gaussian (mean, logvar)."""

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config or VAEConfig()
        c = self.config
        self.likelihood = c.likelihood
        self.latent_dim = c.latent_dim
        self.encoder = Encoder(c.input_dim, c.hidden_dim, 2 * c.latent_dim, c.depth)
        out = c.input_dim if c.likelihood == "bernoulli" else 2 * c.input_dim
        self.decoder = Decoder(c.latent_dim, c.hidden_dim, out, c.depth)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, 784) -> mu (B, D), logvar (B, D)``."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(B, D) ->`` logits ``(B, 784)`` (Bernoulli) or ``(mean in [0, 1], logvar)`` each ``(B, 784)`` (Gaussian)."""
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return out
        raw_mean, raw_logvar = out.chunk(2, dim=-1)
        return torch.sigmoid(raw_mean), self.min_logvar + F.softplus(raw_logvar - self.min_logvar)
