"""Encoders, decoders, the plain autoencoder (notebook 01) and the MLP VAE (notebook 02).

Every VAE-like model offers ``encode(x) -> (mu, logvar)``, ``decode(z)`` (the parameters of
p(x|z)), ``log_likelihood(x, z)``, ``mean_image(z)`` and ``log_importance_weights(x, k)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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


def _expected_images(pixels: int, side: int | None) -> str:
    square = f" or (B, 1, {side}, {side})" if side else ""
    return f"images of shape (B, {pixels}){square} with values in [0, 1]"


def check_images(x: object, pixels: int = 784, side: int | None = 28) -> None:
    """Refuse what an image model cannot take: not a tensor, integer pixels (uint8 0-255), a wrong shape, no images.

    Accepts a float tensor ``(B, pixels)`` or any ``(B, ...)`` with ``pixels`` values per image, B >= 1.
    """
    expected = _expected_images(pixels, side)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected {expected} as a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        hint = ": divide by 255 (x.float() / 255)" if x.dtype == torch.uint8 else ": convert with x.float()"
        raise TypeError(f"expected {expected}, got {x.dtype} pixels{' in [0, 255]' if x.dtype == torch.uint8 else ''}{hint}")
    if x.dim() < 2 or x.shape[1:].numel() != pixels:
        raise ValueError(f"expected {expected}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"expected {expected}, got an empty batch (B = 0)")


def check_codes(z: object, latent_dim: int) -> None:
    """Refuse codes that a decoder with ``latent_dim`` inputs cannot take; accepts a float ``(B, latent_dim)``, B >= 1."""
    if not isinstance(z, torch.Tensor):
        raise TypeError(f"expected codes z of shape (B, {latent_dim}) as a torch.Tensor, got {type(z).__name__}")
    if not z.is_floating_point():
        raise TypeError(f"expected float codes z of shape (B, {latent_dim}), got {z.dtype}: convert with z.float()")
    if z.dim() != 2 or z.shape[1] != latent_dim:
        hint = f" (this model's latent_dim is {latent_dim})" if z.dim() == 2 else ""
        raise ValueError(f"expected codes z of shape (B, {latent_dim}), got shape {tuple(z.shape)}{hint}")
    if z.shape[0] == 0:
        raise ValueError(f"expected codes z of shape (B, {latent_dim}), got an empty batch (B = 0)")


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
        check_images(x, self.config.input_dim, _side(self.config.input_dim))
        return self.encoder(x.reshape(x.shape[0], -1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """``(B, latent_dim) -> (B, 784)`` logits (apply a sigmoid for pixel values)."""
        check_codes(z, self.config.latent_dim)
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


def _side(pixels: int) -> int | None:
    """The side of a square one-channel image with ``pixels`` values (28 for 784), or None."""
    side = int(round(pixels**0.5))
    return side if side * side == pixels else None


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
        if not isinstance(x, torch.Tensor) or not isinstance(z, torch.Tensor):
            raise TypeError("x and z must be torch.Tensors")
        if not x.is_floating_point():
            raise TypeError(f"expected images x with values in [0, 1], got {x.dtype} pixels: divide by 255 (x.float() / 255)"
                            if x.dtype == torch.uint8 else f"expected float images x, got {x.dtype}: convert with x.float()")
        if x.dim() < 1 or z.dim() not in (2, 3) or z.shape[-2] != x.shape[0]:
            raise ValueError(f"z must be (B, D) or (S, B, D) with B = {x.shape[0]} inputs, got shape {tuple(z.shape)}")
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
        """``(B, 784)`` (or ``(B, 1, 28, 28)``) ``-> mu (B, D), logvar (B, D)``."""
        check_images(x, self.config.input_dim, _side(self.config.input_dim))
        mu, logvar = self.encoder(x.reshape(x.shape[0], -1)).chunk(2, dim=-1)  # each (B, D)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(B, D) ->`` logits ``(B, 784)`` (Bernoulli) or ``(mean in [0, 1], logvar)`` each ``(B, 784)`` (Gaussian)."""
        check_codes(z, self.latent_dim)
        out = self.decoder(z)
        if self.likelihood == "bernoulli":
            return out
        raw_mean, raw_logvar = out.chunk(2, dim=-1)
        return torch.sigmoid(raw_mean), self.min_logvar + F.softplus(raw_logvar - self.min_logvar)


# --- notebook 03: convolutional VAE -------------------------------------------------------------


def conv_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """Side length after a Conv2d: floor((size + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1."""
    return (size + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def conv_transpose_output_size(size: int, kernel_size: int, stride: int = 1, padding: int = 0,
                               output_padding: int = 0) -> int:
    """Side length after a ConvTranspose2d: (size - 1)*stride - 2*padding + kernel_size + output_padding."""
    return (size - 1) * stride - 2 * padding + kernel_size + output_padding


def interpolate_latents(z_start: torch.Tensor, z_end: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Evenly spaced points on the segment z(t) = (1 - t) z_start + t z_end, t = 0 ... 1: ``(D,), (D,) -> (num_steps, D)``."""
    if z_start.shape != z_end.shape or z_start.dim() != 1:
        raise ValueError(f"z_start and z_end must both be (D,), got {tuple(z_start.shape)} and {tuple(z_end.shape)}")
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 2:
        raise ValueError(f"num_steps must be an int >= 2 (both ends included), got {num_steps!r}")
    t = torch.linspace(0.0, 1.0, num_steps, dtype=z_start.dtype, device=z_start.device)[:, None]  # (num_steps, 1)
    return (1.0 - t) * z_start + t * z_end


_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "elu": nn.ELU}


@dataclass
class ConvVAEConfig:
    """Sizes of the convolutional VAE; the defaults are the seed's 2-D model (notebook 03).

    ``channels[i]`` output channels of encoder conv ``i`` with stride ``strides[i]`` (1 or 2, 'same'
    padding); ``hidden_dim`` the dense layer after flattening; ``decoder_channels`` one stride-2
    transposed conv each, so there must be as many of them as stride-2 encoder layers; ``activation``
    "relu" (the seed's) or "elu" (never dies, so safer at high learning rates).
    """

    latent_dim: int = 2
    channels: tuple[int, ...] = (32, 64, 64, 64)
    strides: tuple[int, ...] = (1, 2, 1, 1)
    hidden_dim: int = 32
    decoder_channels: tuple[int, ...] = (32,)
    kernel_size: int = 3
    image_size: int = 28
    activation: str = "relu"

    def __post_init__(self) -> None:
        self.channels, self.strides = tuple(self.channels), tuple(self.strides)
        self.decoder_channels = tuple(self.decoder_channels)
        for name, value in (("strides", self.strides), ("kernel_size", (self.kernel_size,))):
            if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
                raise ValueError(f"{name} must be int(s), got {getattr(self, name)!r}")
        _check_dims(latent_dim=self.latent_dim, hidden_dim=self.hidden_dim, image_size=self.image_size,
                    **{f"channels[{i}]": c for i, c in enumerate(self.channels)},
                    **{f"decoder_channels[{i}]": c for i, c in enumerate(self.decoder_channels)})
        if not self.channels or len(self.strides) != len(self.channels):
            raise ValueError(f"need one stride per encoder conv: channels {self.channels}, strides {self.strides}")
        if any(s not in (1, 2) for s in self.strides):
            raise ValueError(f"strides must be 1 or 2, got {self.strides}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        if self.kernel_size not in (3, 5):
            raise ValueError(f"kernel_size must be 3 or 5 (odd, so 'same' padding is kernel_size // 2), got {self.kernel_size}")
        downs = sum(s == 2 for s in self.strides)
        if downs != len(self.decoder_channels):
            raise ValueError(f"{downs} stride-2 encoder layer(s) need as many decoder_channels, got {self.decoder_channels}")
        if self.image_size % 2**downs:
            raise ValueError(f"image_size {self.image_size} cannot be halved {downs} times exactly")

    @property
    def feature_size(self) -> int:
        """Side of the last encoder feature map (28 -> 14 -> 7 for each stride 2)."""
        return self.image_size // 2 ** sum(s == 2 for s in self.strides)


class ConvVAE(VAEBase):
    """Convolutional VAE with a Bernoulli decoder: conv stack -> dense -> (mu, logvar); dense -> transposed convs -> logits."""

    def __init__(self, config: ConvVAEConfig | None = None):
        super().__init__()
        self.config = c = config or ConvVAEConfig()
        self.likelihood = "bernoulli"
        self.latent_dim = c.latent_dim
        pad = c.kernel_size // 2
        act = _ACTIVATIONS[c.activation]
        layers: list[nn.Module] = []
        prev = 1
        for width, stride in zip(c.channels, c.strides):
            layers += [nn.Conv2d(prev, width, c.kernel_size, stride=stride, padding=pad), act()]
            prev = width
        flat = prev * c.feature_size**2
        self.encoder = nn.Sequential(*layers, nn.Flatten(), nn.Linear(flat, c.hidden_dim), act())
        self.to_mu = nn.Linear(c.hidden_dim, c.latent_dim)
        self.to_logvar = nn.Linear(c.hidden_dim, c.latent_dim)
        self.from_z = nn.Sequential(nn.Linear(c.latent_dim, flat), act())
        ups: list[nn.Module] = []
        for width in c.decoder_channels:  # each doubles the side: (s - 1)*2 - 2*pad + k + 1 = 2s
            ups += [nn.ConvTranspose2d(prev, width, c.kernel_size, stride=2, padding=pad, output_padding=1), act()]
            prev = width
        self.decoder = nn.Sequential(*ups, nn.Conv2d(prev, 1, c.kernel_size, padding=pad))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x ``(B, 1, 28, 28)`` or ``(B, 784)`` -> mu, logvar each ``(B, latent_dim)``."""
        side = self.config.image_size
        if not isinstance(x, torch.Tensor) or not x.is_floating_point():
            check_images(x, side * side, side)  # raises the TypeError that names what was expected
        if x.dim() >= 1 and x.shape[0] == 0:
            raise ValueError(f"ConvVAE.encode expects {_expected_images(side * side, side)}, got an empty batch (B = 0)")
        if x.dim() == 2 and x.shape[1] == side * side:
            x = x.view(-1, 1, side, side)  # (B, 1, 28, 28)
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, side, side):
            raise ValueError(f"ConvVAE.encode expects (B, 1, {side}, {side}) or (B, {side * side}), got {tuple(x.shape)}")
        h = self.encoder(x)  # (B, hidden_dim)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z ``(B, latent_dim)`` -> Bernoulli logits ``(B, 1, 28, 28)``."""
        c = self.config
        check_codes(z, c.latent_dim)
        h = self.from_z(z)  # (B, C*s*s)
        h = h.view(-1, c.channels[-1], c.feature_size, c.feature_size)  # (B, C, s, s)
        return self.decoder(h)  # (B, 1, 28, 28)


def _dry_run(model: nn.Module, input_shape: tuple[int, ...], handles: list[Any]) -> None:
    """One forward pass of a zero input ``(1, *input_shape)`` in eval mode (encode then decode for a VAE), then
    remove the hooks in ``handles`` and restore the model's mode."""
    param = next(model.parameters(), None)
    x = torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if hasattr(model, "encode") and hasattr(model, "decode"):
                model.decode(model.encode(x)[0])
            else:
                model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def layer_summary(model: nn.Module, input_shape: tuple[int, ...], as_rows: bool = False) -> str | list[tuple[str, str, int]]:
    """Layer-by-layer table (layer, output shape, parameters) from one forward pass of zeros ``(1, *input_shape)``.

    Uses forward hooks on the leaf modules; a model with ``encode``/``decode`` (a VAE) is run as
    ``decode(encode(x)[0])``. Returns the table as text, or the rows when ``as_rows=True``.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(input_shape, (tuple, list)) or not all(isinstance(s, int) and s > 0 for s in input_shape):
        raise ValueError(f"input_shape must be a tuple of positive ints (without the batch), got {input_shape!r}")
    rows: list[tuple[str, str, int]] = []

    def hook(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        name = next(n for n, m in model.named_modules() if m is module)
        shape = tuple(output.shape[1:]) if isinstance(output, torch.Tensor) else "?"
        rows.append((f"{name} ({type(module).__name__})", str(shape), sum(p.numel() for p in module.parameters())))

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    _dry_run(model, input_shape, handles)
    if as_rows:
        return rows
    total = sum(p.numel() for p in model.parameters())
    width = max(len(r[0]) for r in rows + [("layer (type)", "", 0)])
    lines = [f"{'layer (type)':<{width}}  {'output shape':<16}  {'parameters':>10}", "-" * (width + 30)]
    lines += [f"{name:<{width}}  {shape:<16}  {count:>10,}" for name, shape, count in rows]
    lines += ["-" * (width + 30), f"{'total':<{width}}  {'':<16}  {total:>10,}"]
    return "\n".join(lines)


def count_multiply_adds(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass (encoder and decoder of a VAE) for one input ``(1, *input_shape)``.

    Counts the layers that do the arithmetic: ``nn.Linear`` (in x out), ``nn.Conv2d`` (output pixels x
    in-channels x kernel area) and ``nn.ConvTranspose2d`` (input pixels x out-channels x kernel area, one stamp
    per input pixel); activations and biases are left out. Introduced in notebook 03.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(input_shape, (tuple, list)) or not all(isinstance(s, int) and s > 0 for s in input_shape):
        raise ValueError(f"input_shape must be a tuple of positive ints (without the batch), got {input_shape!r}")
    total = [0]

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            total[0] += module.in_features * module.out_features
        elif isinstance(module, nn.ConvTranspose2d):
            kh, kw = module.kernel_size
            total[0] += inputs[0][0].numel() * module.out_channels // module.groups * kh * kw
        elif isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total[0] += output[0].numel() * module.in_channels // module.groups * kh * kw

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d))]
    _dry_run(model, input_shape, handles)
    return total[0]
