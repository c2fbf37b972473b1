"""The catalogue of every checker: cheats and unstable answers it must reject, valid variants it must accept.

Together with the tables of typical mistakes in ``test_checks_{ae,vae,conv,flows}.py`` (wrong sign, sum
vs mean, variance vs log-variance, missing constants, wrong shapes, ...), this is each checker's written
catalogue. Every row below is one test. The categories:

- cheat: the answer calls the ``vae_helpers`` reference of its own exercise (message: "your answer
  calls vae_helpers.<ref>; write it yourself") however it reaches it (with the profiler switched off,
  through a saved alias), pastes the reference's code, uses a library's ready-made version of the very
  thing asked for, builds or holds a ``vae_helpers`` model inside a build exercise, or delegates to the
  method it was asked to write;
- gradient: the value is right but a gradient path is cut (.detach(), .item(), torch.no_grad(), a new
  tensor built from numbers) or changed;
- noise: noise of the wrong shape or correlation, not fresh (re-seeded inside), not from torch's generator;
- loop: a training loop that drops the last partial batch, remakes its optimizer, or steps wrongly;
- unstable: a formula that is right on paper but breaks at extreme inputs (logits ±100, log-weights
  near -700, softplus of 100);
- mistake: an ordinary wrong answer, named;
- valid: a correct answer written another way, which must pass.

Known limit (accepted on purpose): the KL checker stays at |logvar| <= 6, where torch.distributions'
float32 KL is exact.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, Normal, kl_divergence

from learner_copies import own_copy

from vae_helpers import checks, flows, losses, models, train

pytestmark = pytest.mark.usefixtures("one_thread")


def row(checker: str, kind: str, what: str, fn: Callable[..., Any], match: str | None = None) -> Any:
    """One catalogue entry: ``match`` is the message a rejected answer must get (None: must pass)."""
    return pytest.param(checker, fn, match, id=f"{checker}-{kind}-{what}")


# ----------------------------------------------------------------------------- notebook 01


def _ae_via_reference(x, l1, l2, l3, l4):
    model = models.Autoencoder(models.AEConfig(input_dim=l1.in_features, hidden_dim=l1.out_features,
                                               latent_dim=l2.out_features))
    model.encoder.net[0], model.encoder.net[2], model.decoder.net[0], model.decoder.net[2] = l1, l2, l3, l4
    return model.encode(x), model(x)


def _ae_functional(x, l1, l2, l3, l4):
    z = F.linear(F.elu(F.linear(x, l1.weight, l1.bias)), l2.weight, l2.bias)
    return z, torch.sigmoid(F.linear(F.elu(F.linear(z, l3.weight, l3.bias)), l4.weight, l4.bias))


def _ae_sequential(x, l1, l2, l3, l4):
    encoder, decoder = nn.Sequential(l1, nn.ELU(), l2), nn.Sequential(l3, nn.ELU(), l4, nn.Sigmoid())
    z = encoder(x)
    return z, decoder(z)


def _naive_bce(x, logits):
    p = torch.sigmoid(logits)
    return -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).sum(1).mean()


def _step_with_model_zero_grad(model, optimizer, x, loss_fn):
    model.zero_grad()
    loss = loss_fn(model, x)["loss"]
    torch.autograd.backward(loss)
    optimizer.step()
    return float(loss.detach())


def _step_via_fit(model, optimizer, x, loss_fn):
    history = train.fit(model, loss_fn, x, num_epochs=1, batch_size=len(x), optimizer=optimizer, progress=False)
    return history.last()


def _ae_class(activation=F.elu, out=torch.sigmoid, detach_code=False, extra=False):
    class LearnerAE(nn.Module):
        def __init__(self, input_dim=784, hidden_dim=600, latent_dim=60):
            super().__init__()
            self.enc_hidden, self.enc_out = nn.Linear(input_dim, hidden_dim), nn.Linear(hidden_dim, latent_dim)
            self.dec_hidden, self.dec_out = nn.Linear(latent_dim, hidden_dim), nn.Linear(hidden_dim, input_dim)
            if extra:
                self.spare = nn.Linear(hidden_dim, hidden_dim)

        def encode(self, x):
            return self.enc_out(activation(self.enc_hidden(x)))

        def forward(self, x):
            z = self.encode(x)
            return out(self.dec_out(activation(self.dec_hidden(z.detach() if detach_code else z))))
    return LearnerAE


class _SequentialAE(nn.Module):
    def __init__(self, input_dim, hidden_dim, latent_dim):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ELU(), nn.Linear(hidden_dim, latent_dim))
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ELU(), nn.Linear(hidden_dim, input_dim), nn.Sigmoid())

    def encode(self, x):
        return self.encoder(x)

    def forward(self, x):
        return self.decoder(self.encoder(x))


class _ReferenceInside(nn.Module):
    def __init__(self, input_dim, hidden_dim, latent_dim):
        super().__init__()
        self.inner = models.Autoencoder(models.AEConfig(input_dim=input_dim, hidden_dim=hidden_dim, latent_dim=latent_dim))

    def encode(self, x):
        return self.inner.encode(x)

    def forward(self, x):
        return self.inner(x)


def _loop(shuffle=True, mean=True, step=True, replace=False):
    def train_autoencoder(model, x_train, loss_fn, num_epochs, batch_size, lr):
        optimizer = torch.optim.Adam(model.parameters(), lr=lr)
        history = []
        for _ in range(num_epochs):
            n = len(x_train)
            order = torch.randint(0, n, (n,)) if replace else torch.randperm(n) if shuffle else torch.arange(n)
            losses_ = []
            for i in range(0, n, batch_size):
                loss = loss_fn(model, x_train[order[i:i + batch_size]])["loss"]
                optimizer.zero_grad()
                loss.backward()
                if step:
                    optimizer.step()
                losses_.append(loss.item())
            history.append(sum(losses_) / len(losses_) if mean else losses_[-1])
        return history
    return train_autoencoder


def _loop_dataloader(model, x_train, loss_fn, num_epochs, batch_size, lr):
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train), batch_size=batch_size, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    for _ in range(num_epochs):
        total = 0.0
        for (x_batch,) in loader:
            optimizer.zero_grad()
            loss = loss_fn(model, x_batch)["loss"]
            loss.backward()
            optimizer.step()
            total += loss.item()
        history.append(total / len(loader))
    return history


# ----------------------------------------------------------------------------- notebook 02


def _eps_per_row(mu, logvar):
    return mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape[0], 1)  # one eps per example, shared by the dims


def _eps_correlated_dims(mu, logvar):
    eps = torch.randn_like(mu)
    return mu + torch.exp(0.5 * logvar) * (eps + eps.roll(1, dims=1)) / math.sqrt(2)  # unit variance, correlation 0.5


def _eps_antithetic(mu, logvar):
    half = torch.randn((mu.shape[0] + 1) // 2, mu.shape[1])
    return mu + torch.exp(0.5 * logvar) * torch.cat([half, -half])[: mu.shape[0]]  # second half mirrors the first


def _elbo_mc_kl(model, x):
    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    z = mu + std * torch.randn_like(mu)
    kl = Normal(mu, std).log_prob(z).sum(-1) - Normal(0.0, 1.0).log_prob(z).sum(-1)  # unbiased Monte Carlo KL
    return (-model.log_likelihood(x, z) + kl).mean()


def _elbo_distributions(model, x):
    mu, logvar = model.encode(x)
    q = Normal(mu, torch.exp(0.5 * logvar))
    kl = kl_divergence(q, Normal(torch.zeros_like(mu), torch.ones_like(mu))).sum(-1)
    return (kl - model.log_likelihood(x, q.rsample())).mean()


def _iwae_max_shift(model, x, k):
    log_w = model.log_importance_weights(x, k)
    top = log_w.max(0).values
    return top + torch.log(torch.exp(log_w - top).mean(0))


def _vae_class(swap=False, softplus_logvar=False, sigmoid_out=False, wrap=False):
    class LearnerVAE(models.VAEBase):
        def __init__(self, input_dim=784, hidden_dim=500, latent_dim=2):
            super().__init__()
            self.latent_dim = latent_dim
            if wrap:
                self.inner = models.VAE(models.VAEConfig(input_dim=input_dim, hidden_dim=hidden_dim, latent_dim=latent_dim))
                return
            self.enc_hidden, self.enc_out = nn.Linear(input_dim, hidden_dim), nn.Linear(hidden_dim, 2 * latent_dim)
            self.dec_hidden, self.dec_out = nn.Linear(latent_dim, hidden_dim), nn.Linear(hidden_dim, input_dim)

        def encode(self, x):
            if wrap:
                return self.inner.encode(x)
            mu, logvar = self.enc_out(F.elu(self.enc_hidden(x))).chunk(2, dim=-1)
            mu, logvar = (logvar, mu) if swap else (mu, logvar)
            return mu, F.softplus(logvar) if softplus_logvar else logvar

        def decode(self, z):
            if wrap:
                return self.inner.decode(z)
            logits = self.dec_out(F.elu(self.dec_hidden(z)))
            return torch.sigmoid(logits) if sigmoid_out else logits
    return LearnerVAE


class _TwoHeadVAE(models.VAEBase):
    def __init__(self, input_dim=784, hidden_dim=500, latent_dim=2):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ELU())
        self.to_mu, self.to_logvar = nn.Linear(hidden_dim, latent_dim), nn.Linear(hidden_dim, latent_dim)
        self.decoder = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ELU(), nn.Linear(hidden_dim, input_dim))

    def encode(self, x):
        h = self.hidden(x)
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z):
        return self.decoder(z)


# ----------------------------------------------------------------------------- notebook 03


def _decode_unflatten(model, z):
    c = model.config
    return model.decoder(model.from_z(z).unflatten(1, (c.channels[-1], c.feature_size, c.feature_size)))


def _conv_encoder(relu_dense=True, swap=False, one_head=False, stride=2, padding=1):
    class LearnerConvEncoder(nn.Module):
        def __init__(self, latent_dim, channels=(16, 32), hidden_dim=64):
            super().__init__()
            side = (28 + 2 * padding - 3) // stride + 1
            side = (side + 2 * padding - 3) // stride + 1
            self.features = nn.Sequential(
                nn.Conv2d(1, channels[0], 3, stride=stride, padding=padding), nn.ReLU(),
                nn.Conv2d(channels[0], channels[1], 3, stride=stride, padding=padding), nn.ReLU(), nn.Flatten(),
                nn.Linear(channels[1] * side * side, hidden_dim), *([nn.ReLU()] if relu_dense else []))
            if one_head:
                self.heads = nn.Linear(hidden_dim, 2 * latent_dim)
            else:
                self.to_mu, self.to_logvar = nn.Linear(hidden_dim, latent_dim), nn.Linear(hidden_dim, latent_dim)

        def forward(self, x):
            h = self.features(x)
            mu, logvar = self.heads(h).chunk(2, dim=-1) if one_head else (self.to_mu(h), self.to_logvar(h))
            return (logvar, mu) if swap else (mu, logvar)
    return LearnerConvEncoder


class _EncoderViaReference(nn.Module):
    def __init__(self, latent_dim, channels=(16, 32), hidden_dim=64):
        super().__init__()
        self.inner = models.ConvVAE(models.ConvVAEConfig(latent_dim=latent_dim, channels=channels, strides=(2, 2),
                                                         hidden_dim=hidden_dim, decoder_channels=(8, 8)))
        for name in ("from_z", "decoder"):
            setattr(self.inner, name, nn.Identity())

    def forward(self, x):
        return self.inner.encode(x)


# ----------------------------------------------------------------------------- notebook 04


def _planar_slogdet(z, u, w, b):
    h = torch.tanh(z @ w + b)  # (B,)
    psi = (1 - h**2)[:, None] * w  # (B, D)
    jacobian = torch.eye(z.shape[1]) + u[None, :, None] * psi[:, None, :]  # I + u ψᵀ, (B, D, D)
    return z + u * h[:, None], torch.linalg.slogdet(jacobian).logabsdet


def _constrain(softplus: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., torch.Tensor]:
    def constrain_u(u, w):
        wu = (w * u).sum(-1, keepdim=True)
        return u + (-1 + softplus(wu) - wu) * w / (w * w).sum(-1, keepdim=True)
    return constrain_u


def _free_energy_losses(log_px, z0, zK, mu, logvar, log_dets):
    return (losses.gaussian_log_likelihood(z0, mu, logvar) - log_dets.sum(-1)
            - losses.standard_normal_log_density(zK) - log_px)


def _posterior(constrain=True, reverse=False, per_flow=False, sign=1.0, detach=False, noise=True):
    def sample_posterior(model, x):
        mu, logvar, u, w, b = model.encode_all(x)
        eps = torch.randn_like(mu) if noise else torch.zeros_like(mu)
        z0 = mu + torch.exp(0.5 * logvar) * eps
        z0 = z0.detach() if detach else z0
        z, log_dets = z0, []
        order = reversed(range(u.shape[1])) if reverse else range(u.shape[1])
        for k in order:
            u_k = flows.constrain_u(u[:, k], w[:, k]) if constrain else u[:, k]
            z, ld = flows.planar_transform(z, u_k, w[:, k], b[:, k])
            log_dets.append(ld)
        stacked = torch.stack(log_dets, -1) if log_dets else torch.zeros(x.shape[0], 0)
        return z0, z, stacked if per_flow else sign * stacked.sum(-1), mu, logvar
    return sample_posterior


def _posterior_vectorised(model, x):
    mu, logvar, u, w, b = model.encode_all(x)
    z0 = models.reparameterize(mu, logvar)
    u_hat = flows.constrain_u(u, w)  # (B, K, D) at once
    z, total = z0, torch.zeros(x.shape[0])
    for u_k, w_k, b_k in zip(u_hat.unbind(1), w.unbind(1), b.unbind(1)):
        h = torch.tanh((z * w_k).sum(-1) + b_k)  # (B,)
        total = total + torch.log(torch.abs(1 + (1 - h**2) * (w_k * u_k).sum(-1)))
        z = z + u_k * h[:, None]
    return z0, z, total, mu, logvar


def _field(ks, ss):
    r, jump = 1, 1
    for k, s in zip(ks, ss):
        r, jump = r + (k - 1) * jump, jump * s
    return r


def _field_backwards(ks, ss):
    r = 1
    for k, s in reversed(list(zip(ks, ss))):  # from the output back to the input
        r = (r - 1) * s + k
    return r


def _u1(stable=True, sign=-1.0):
    def energy_u1(z):
        ring = 0.5 * ((torch.linalg.vector_norm(z, dim=-1) - 2) / 0.4) ** 2
        a, b = -0.5 * ((z[:, 0] - 2) / 0.6) ** 2, -0.5 * ((z[:, 0] + 2) / 0.6) ** 2
        mix = torch.logaddexp(a, b) if stable else torch.log(torch.exp(a) + torch.exp(b))
        return ring + sign * mix
    return energy_u1


CATALOGUE = [
    # notebook 01
    row("autoencoder_forward", "cheat", "builds models.Autoencoder", _ae_via_reference,
        r"calls vae_helpers.models.Autoencoder.(encode|forward); write it yourself"),
    row("autoencoder_forward", "valid", "F.linear with the weights", _ae_functional),
    row("autoencoder_forward", "valid", "nn.Sequential of the layers", _ae_sequential),
    row("squared_error_loss", "cheat", "losses.squared_error", lambda x, x_hat: losses.squared_error(x, x_hat).mean(),
        r"calls vae_helpers.losses.squared_error; write it yourself"),
    row("squared_error_loss", "valid", "F.mse_loss sum / batch", lambda x, x_hat: F.mse_loss(x_hat, x, reduction="sum") / len(x)),
    row("squared_error_loss", "valid", "einsum", lambda x, x_hat: torch.einsum("bi,bi->b", x - x_hat, x - x_hat).mean()),
    row("cross_entropy_loss", "cheat", "losses.bernoulli_log_likelihood",
        lambda x, logits: -losses.bernoulli_log_likelihood(x, logits).mean(), r"calls vae_helpers.losses.bernoulli_log_likelihood"),
    row("cross_entropy_loss", "unstable", "log(sigmoid) at logits ±100", _naive_bce, "breaks for large ones"),
    row("cross_entropy_loss", "unstable", "clamped log", lambda x, l: -(x * torch.log(torch.sigmoid(l).clamp(1e-7, 1 - 1e-7))
        + (1 - x) * torch.log(1 - torch.sigmoid(l).clamp(1e-7, 1 - 1e-7))).sum(1).mean(), "breaks for large ones"),
    row("cross_entropy_loss", "unstable", "F.binary_cross_entropy of sigmoid",
        lambda x, l: F.binary_cross_entropy(torch.sigmoid(l), x, reduction="sum") / len(x), "breaks for large ones"),
    row("cross_entropy_loss", "valid", "logsigmoid", lambda x, l: -(x * F.logsigmoid(l) + (1 - x) * F.logsigmoid(-l)).sum(1).mean()),
    row("cross_entropy_loss", "valid", "softplus", lambda x, l: (F.softplus(l) - x * l).sum(-1).mean()),
    row("cross_entropy_loss", "cheat", "nn.BCEWithLogitsLoss", lambda x, l: nn.BCEWithLogitsLoss(reduction="sum")(l, x) / x.shape[0],
        "ready-made cross-entropy from logits"),
    row("cross_entropy_loss", "cheat", "F.binary_cross_entropy_with_logits", lambda x, l: F.binary_cross_entropy_with_logits(
        l, x, reduction="none").sum(1).mean(), "ready-made cross-entropy from logits"),
    row("cross_entropy_loss", "valid", "log1p(exp(-|a|)) by hand", lambda x, l: (l.clamp(min=0) - x * l
        + torch.log1p(torch.exp(-l.abs()))).sum(1).mean()),
    row("autoencoder_module", "valid", "four Linear attributes", _ae_class()),
    row("autoencoder_module", "valid", "nn.Sequential halves", _SequentialAE),
    row("autoencoder_module", "cheat", "wraps models.Autoencoder", _ReferenceInside, r"builds vae_helpers' own models.Autoencoder"),
    row("autoencoder_module", "mistake", "ReLU", _ae_class(activation=F.relu), "needs an ELU"),
    row("autoencoder_module", "mistake", "no output sigmoid", _ae_class(out=lambda a: a), r"outside \(0, 1\)"),
    row("autoencoder_module", "mistake", "an extra layer", _ae_class(extra=True), "parameters, expected 303"),
    row("autoencoder_module", "mistake", "code detached", _ae_class(detach_code=True), "no gradient reaches enc_"),
    row("train_autoencoder", "valid", "randperm loop", _loop()),
    row("train_autoencoder", "valid", "DataLoader(shuffle=True)", _loop_dataloader),
    row("train_autoencoder", "cheat", "train.fit", lambda m, x, f, e, b, lr: train.fit(m, f, x, num_epochs=e, batch_size=b, lr=lr,
        progress=False).to_dict(), r"calls vae_helpers.train.fit"),
    row("train_autoencoder", "mistake", "no shuffling", _loop(shuffle=False), "same order every epoch"),
    row("train_autoencoder", "mistake", "batches drawn with replacement", _loop(replace=True), "every training example exactly once"),
    row("train_autoencoder", "mistake", "last batch loss, not the epoch mean", _loop(mean=False), "mean of the epoch"),
    row("train_autoencoder", "mistake", "no optimizer.step", _loop(step=False), "did not change the model"),
    row("training_step", "cheat", "train.fit", _step_via_fit, r"calls vae_helpers.train.fit; write it yourself"),
    row("training_step", "valid", "model.zero_grad and autograd.backward", _step_with_model_zero_grad),
    row("training_step", "mistake", "zero_grad between backward and step", lambda m, opt, x, f: (
        (loss := f(m, x)["loss"]).backward(), opt.zero_grad(), opt.step(), loss.item())[-1], "no gradient reached the parameters"),
    row("cross_entropy_loss", "valid", "softplus of -a for the inked pixels", lambda x, l: (x * F.softplus(-l)
        + (1 - x) * F.softplus(l)).sum(1).mean()),
    # notebook 02
    row("gaussian_kl", "cheat", "losses.gaussian_kl", losses.gaussian_kl, r"calls vae_helpers.losses.gaussian_kl; write it yourself"),
    row("gaussian_kl", "cheat", "losses.gaussian_kl_per_dim", lambda mu, lv: losses.gaussian_kl_per_dim(mu, lv).sum(-1),
        r"calls vae_helpers.losses.gaussian_kl_per_dim"),
    row("gaussian_kl", "cheat", "torch.distributions", lambda mu, lv: kl_divergence(Normal(mu, (0.5 * lv).exp()), Normal(0.0, 1.0)).sum(-1),
        "ready-made version"),
    row("gaussian_kl", "valid", "rearranged", lambda mu, lv: 0.5 * (mu * mu + lv.exp() - 1 - lv).sum(dim=1)),
    row("gaussian_log_likelihood", "cheat", "losses.gaussian_log_likelihood", lambda x, mu, lv: losses.gaussian_log_likelihood(x, mu, lv),
        r"calls vae_helpers.losses.gaussian_log_likelihood"),
    row("gaussian_log_likelihood", "cheat", "Independent(Normal)", lambda x, mu, lv: Independent(Normal(mu, (0.5 * lv).exp()), 1).log_prob(x),
        "ready-made Gaussian log-density"),
    row("reparameterize", "cheat", "models.reparameterize", lambda mu, lv: models.reparameterize(mu, lv),
        r"calls vae_helpers.models.reparameterize; write it yourself"),
    row("reparameterize", "noise", "one eps per row shared across dims", _eps_per_row, "latent dimensions share their noise"),
    row("reparameterize", "noise", "correlated dims", _eps_correlated_dims, "latent dimensions share their noise"),
    row("reparameterize", "noise", "antithetic halves", _eps_antithetic, "share or mirror their noise"),
    row("reparameterize", "noise", "one eps per dim shared across rows", lambda mu, lv: mu + (0.5 * lv).exp() * torch.randn(mu.shape[1]),
        "every example got the same eps"),
    row("reparameterize", "cheat", "rsample", lambda mu, lv: Normal(mu, torch.exp(lv / 2)).rsample(), "ready-made reparameterisation"),
    row("reparameterize", "valid", "randn(shape)", lambda mu, lv: torch.randn(mu.shape) * lv.mul(0.5).exp() + mu),
    row("negative_elbo", "cheat", "losses.vae_loss", lambda m, x: losses.vae_loss(m, x)["loss"], r"calls vae_helpers.losses.vae_loss"),
    row("negative_elbo", "valid", "Monte Carlo KL", _elbo_mc_kl),
    row("negative_elbo", "valid", "torch.distributions", _elbo_distributions),
    row("vae_module", "valid", "one head, chunk", _vae_class()),
    row("vae_module", "valid", "two heads", _TwoHeadVAE),
    row("vae_module", "cheat", "wraps models.VAE", _vae_class(wrap=True), r"builds vae_helpers' own models.VAE"),
    row("vae_module", "valid", "mu and logvar halves the other way round", _vae_class(swap=True)),
    row("vae_module", "mistake", "softplus on logvar", _vae_class(softplus_logvar=True), "raw second half"),
    row("vae_module", "mistake", "sigmoid in decode", _vae_class(sigmoid_out=True), "no sigmoid at the end"),
    row("kl_per_dimension", "valid", "closed form, mean over the batch", lambda mu, lv: (-0.5 * (1 + lv - mu**2 - lv.exp())).mean(0)),
    row("kl_per_dimension", "cheat", "torch.distributions", lambda mu, lv: kl_divergence(Normal(mu, (0.5 * lv).exp()), Normal(0.0, 1.0)).mean(0),
        "ready-made version"),
    row("kl_per_dimension", "cheat", "losses.gaussian_kl_per_dim", lambda mu, lv: losses.gaussian_kl_per_dim(mu, lv).mean(0),
        r"calls vae_helpers.losses.gaussian_kl_per_dim"),
    row("kl_per_dimension", "mistake", "summed over the latent dims", lambda mu, lv: (-0.5 * (1 + lv - mu**2 - lv.exp())).sum(-1),
        "one value per example"),
    row("kl_per_dimension", "mistake", "summed over the batch", lambda mu, lv: (-0.5 * (1 + lv - mu**2 - lv.exp())).sum(0),
        "summed over the batch"),
    row("active_units", "valid", "unbiased variance", lambda mu, t: int((mu.var(0) > t).sum())),
    row("active_units", "valid", "biased variance, a Python loop", lambda mu, t: sum(1 for v in mu.var(0, unbiased=False) if v > t)),
    row("active_units", "mistake", "variance over the wrong axis", lambda mu, t: int((mu.var(1) > t).sum()), "over the data, dim=0"),
    row("active_units", "mistake", "standard deviation", lambda mu, t: int((mu.std(0) > t).sum()), "not the standard deviation"),
    row("active_units", "mistake", "a mask, not a count", lambda mu, t: mu.var(0) > t, "return the number of active"),
    row("active_units", "mistake", "inactive counted", lambda mu, t: int((mu.var(0) <= t).sum()), "counted the inactive"),
    row("iwae_estimate", "cheat", "losses.iwae_bound", lambda m, x, k: losses.iwae_bound(m, x, k), r"calls vae_helpers.losses.iwae_bound"),
    row("iwae_estimate", "unstable", "log-sum-exp without the max", lambda m, x, k: torch.log(torch.exp(m.log_importance_weights(x, k)).mean(0)),
        "never exponentiate a large negative log-weight"),
    row("iwae_estimate", "valid", "max shift by hand", _iwae_max_shift),
    row("iwae_estimate", "valid", "logsumexp of log_w - log k", lambda m, x, k: torch.logsumexp(m.log_importance_weights(x, k) - math.log(k), 0)),
    # notebook 03
    row("conv_output_size", "cheat", "models.conv_output_size", lambda n, k, s, p: models.conv_output_size(n, k, s, p),
        r"calls vae_helpers.models.conv_output_size"),
    row("conv_output_size", "valid", "math.floor", lambda n, k, s, p: math.floor((n + 2 * p - k) / s) + 1),
    row("conv_output_size", "valid", "len(range)", lambda n, k, s, p: len(range(0, n + 2 * p - k + 1, s))),
    row("conv_output_size", "cheat", "a dummy nn.Conv2d", lambda n, k, s, p: nn.Conv2d(1, 1, k, s, p)(torch.zeros(1, 1, n, n)).shape[-1],
        "runs a convolution"),
    row("conv_output_size", "cheat", "F.conv2d", lambda n, k, s, p: F.conv2d(torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k),
        stride=s, padding=p).shape[-1], "runs a convolution"),
    row("conv_decode", "cheat", "model.decode", lambda m, z: m.decode(z), "calls model.decode, the method this exercise asks you to write"),
    row("conv_decode", "cheat", "ConvVAE.decode on the class", lambda m, z: models.ConvVAE.decode(m, z), "calls model.decode"),
    row("conv_decode", "cheat", "logit of model.mean_image", lambda m, z: torch.logit(m.mean_image(z)), "calls model.decode"),
    row("conv_decode", "valid", "unflatten", _decode_unflatten),
    row("conv_encoder", "valid", "two heads", _conv_encoder()),
    row("conv_encoder", "valid", "one head, chunk", _conv_encoder(one_head=True)),
    row("conv_encoder", "cheat", "wraps ConvVAE.encode", _EncoderViaReference, r"builds vae_helpers' own models.ConvVAE"),
    row("conv_encoder", "mistake", "no ReLU after the dense layer", _conv_encoder(relu_dense=False), "needs a ReLU after it"),
    row("conv_encoder", "valid", "heads used the other way round", _conv_encoder(swap=True)),
    row("conv_encoder", "mistake", "stride 1", _conv_encoder(stride=1), "parameters, expected"),
    row("conv_encoder", "mistake", "no padding", _conv_encoder(padding=0), "parameters, expected"),
    row("receptive_field", "valid", "forwards with the jump", _field),
    row("receptive_field", "valid", "backwards from the output", _field_backwards),
    row("receptive_field", "mistake", "strides ignored", lambda ks, ss: 1 + sum(k - 1 for k in ks), "the strides matter"),
    row("receptive_field", "mistake", "own stride counted", lambda ks, ss: 1 + sum((k - 1) * math.prod(ss[: i + 1]) for i, k in enumerate(ks)),
        "own stride does not widen"),
    row("receptive_field", "mistake", "kernel sizes multiplied", lambda ks, ss: math.prod(ks), "adding, not multiplying"),
    row("interpolate_latents", "cheat", "models.interpolate_latents", lambda a, b, n: models.interpolate_latents(a, b, n),
        r"calls vae_helpers.models.interpolate_latents"),
    row("interpolate_latents", "valid", "start + t (end - start)", lambda a, b, n: a + torch.linspace(0, 1, n)[:, None] * (b - a)),
    row("conv_output_size", "valid", "ceil of the steps plus one", lambda n, k, s, p: math.ceil((n + 2 * p - k + 1) / s)),
    row("conv_output_size", "mistake", "padding on one side only", lambda n, k, s, p: (n + p - k) // s + 1,
        "lengthens the row twice"),
    row("conv_output_size", "mistake", "the 1 added before dividing", lambda n, k, s, p: (n + 2 * p - k + 1) // s,
        "added the 1 before dividing"),
    row("conv_decode", "mistake", "reshaped channels last", lambda m, z: m.decoder(m.from_z(z).view(
        len(z), m.config.feature_size, m.config.feature_size, m.config.channels[-1]).permute(0, 3, 1, 2)), "channels first, right after"),
    row("conv_decode", "mistake", "sizes of the seed model hard-coded", lambda m, z: m.decoder(m.from_z(z).view(len(z), 64, 14, 14)),
        "do not hard-code"),
    row("interpolate_latents", "valid", "two outer products", lambda a, b, n: torch.outer(1 - torch.linspace(0, 1, n), a)
        + torch.outer(torch.linspace(0, 1, n), b)),
    row("interpolate_latents", "mistake", "weights that do not add up to 1", lambda a, b, n: a + torch.linspace(0, 1, n)[:, None] * b,
        "do not add up to 1, so the points leave"),
    row("interpolate_latents", "mistake", "arange(n) / n misses the end", lambda a, b, n: a + (torch.arange(n)[:, None] / n) * (b - a),
        "the last step must reach z_end"),
    # notebook 04
    row("planar_transform", "cheat", "flows.planar_transform", lambda z, u, w, b: flows.planar_transform(z, u, w, b),
        r"calls vae_helpers.flows.planar_transform"),
    row("planar_transform", "valid", "slogdet of I + u psi^T", _planar_slogdet),
    row("constrain_u", "cheat", "flows.constrain_u", lambda u, w: flows.constrain_u(u, w), r"calls vae_helpers.flows.constrain_u"),
    row("constrain_u", "unstable", "log(1 + exp(x)) at wᵀu = 100", _constrain(lambda x: torch.log(1 + torch.exp(x))), "use F.softplus"),
    row("constrain_u", "unstable", "log1p(exp(x)) at wᵀu = 100", _constrain(lambda x: torch.log1p(torch.exp(x))), "use F.softplus"),
    row("constrain_u", "valid", "logaddexp(0, x)", _constrain(lambda x: torch.logaddexp(torch.zeros_like(x), x))),
    row("constrain_u", "valid", "nn.Softplus", _constrain(nn.Softplus())),
    row("sample_posterior", "valid", "a loop of planar_transform", _posterior()),
    row("sample_posterior", "valid", "vectorised by hand", _posterior_vectorised),
    row("sample_posterior", "cheat", "model.sample_posterior", lambda m, x: m.sample_posterior(x), "calls model.sample_posterior"),
    row("sample_posterior", "cheat", "flows.planar_flow_sequence", lambda m, x: (lambda mu, lv, u, w, b: (
        (z0 := mu + (0.5 * lv).exp() * torch.randn_like(mu)), *flows.planar_flow_sequence(z0, u, w, b), mu, lv))(*m.encode_all(x)),
        r"calls vae_helpers.flows.planar_flow_sequence"),
    row("sample_posterior", "mistake", "raw u", _posterior(constrain=False), "use constrain_u"),
    row("sample_posterior", "mistake", "reversed flows", _posterior(reverse=True), "wrong order"),
    row("sample_posterior", "mistake", "log-det per flow", _posterior(per_flow=True), "one log-det per flow"),
    row("sample_posterior", "mistake", "log-dets subtracted", _posterior(sign=-1.0), "wrong sign"),
    row("sample_posterior", "mistake", "z0 detached", _posterior(detach=True), "no gradient"),
    row("sample_posterior", "mistake", "no noise", _posterior(noise=False), "z0 is mu"),
    row("energy_u1", "valid", "logaddexp", _u1()),
    row("energy_u1", "valid", "logsumexp of a stack", lambda z: 0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2 - torch.logsumexp(torch.stack(
        [-0.5 * ((z[:, 0] - 2) / 0.6) ** 2, -0.5 * ((z[:, 0] + 2) / 0.6) ** 2]), 0)),
    row("energy_u1", "cheat", "flows.U1", lambda z: flows.U1(z), r"calls vae_helpers.flows.U1"),
    row("energy_u1", "unstable", "log of a sum of exps far from the ring", _u1(stable=False), "logaddexp"),
    row("energy_u1", "mistake", "wrong sign of the mixture", _u1(sign=1.0), "minus sign"),
    row("flow_free_energy", "cheat", "flows.flow_free_energy", lambda *a: flows.flow_free_energy(*a), r"calls vae_helpers.flows.flow_free_energy"),
    row("flow_free_energy", "valid", "the notebook-02 densities from vae_helpers.losses", _free_energy_losses),
    row("flow_free_energy", "valid", "torch.distributions", lambda log_px, z0, zK, mu, lv, ld: Normal(mu, (0.5 * lv).exp()).log_prob(z0).sum(-1)
        - ld.sum(-1) - Normal(0.0, 1.0).log_prob(zK).sum(-1) - log_px),
]


# ----------------------------------------------------------------------------- the judge's classes, every notebook


def _profiler_off(reference: Callable[..., Any]) -> Callable[..., Any]:
    def answer(*args):
        sys.setprofile(None)  # the old guard was a profile hook; this switched it off
        return reference(*args)
    return answer


_saved_conv2d = F.conv2d  # an alias taken before the check runs
_pasted_kl_per_dim = own_copy(losses.gaussian_kl_per_dim)


def _kl_parts(mu, lv, detach_var=False, data_mu=False):
    var = lv.exp().detach() if detach_var else lv.exp()
    m = mu.data if data_mu else mu
    return -0.5 * torch.sum(1 + lv - m.pow(2) - var, dim=-1)


def _elbo(kl_detached=False, sigma_detached=False, as_number=False, samples=1, eps_shape=None):
    def negative_elbo(model, x):
        mu, logvar = model.encode(x)
        std = torch.exp(0.5 * logvar)
        total = 0.0
        for _ in range(samples):
            eps = torch.randn(eps_shape(mu)) if eps_shape else torch.randn_like(mu)
            z = mu + (std.detach() if sigma_detached else std) * eps.reshape(mu.shape)
            total = total - model.log_likelihood(x, z)
        kl = losses.gaussian_kl(mu, logvar)
        loss = (total / samples + (kl.detach() if kl_detached else kl)).mean()
        return torch.tensor(loss.item(), requires_grad=True) if as_number else loss
    return negative_elbo


def _elbo_reseeded(model, x):
    torch.manual_seed(0)
    return _elbo()(model, x)


def _elbo_shared_eps(model, x):
    mu, logvar = model.encode(x)
    z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape[0], 1)  # one eps per example for every dimension
    return (-model.log_likelihood(x, z) + losses.gaussian_kl(mu, logvar)).mean()


def _posterior_detached_flows(model, x):
    mu, logvar, u, w, b = model.encode_all(x)
    z0 = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    zK, log_det = z0, torch.zeros(x.shape[0])
    for k in range(u.shape[1]):
        u_k, w_k, b_k = u[:, k].detach(), w[:, k].detach(), b[:, k].detach()  # the flows would never learn
        zK, ld = flows.planar_transform(zK, flows.constrain_u(u_k, w_k), w_k, b_k)
        log_det = log_det + ld
    return z0, zK, log_det, mu, logvar


def _posterior_reseeded(model, x):
    torch.manual_seed(0)
    return _posterior()(model, x)


def _posterior_shared_eps(model, x):
    mu, logvar, u, w, b = model.encode_all(x)
    z0 = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape[0], 1)
    return (z0, *_posterior_flows(z0, u, w, b), mu, logvar)


def _posterior_flows(z0, u, w, b):
    z, total = z0, torch.zeros(z0.shape[0])
    for k in range(u.shape[1]):
        z, ld = flows.planar_transform(z, flows.constrain_u(u[:, k], w[:, k]), w[:, k], b[:, k])
        total = total + ld
    return z, total


def _posterior_randn_shape(model, x):
    mu, logvar, u, w, b = model.encode_all(x)
    z0 = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape[1], mu.shape[0]).T  # drawn (D, B), transposed
    return (z0, *_posterior_flows(z0, u, w, b), mu, logvar)


def _loop_variant(drop_last=False, fresh="never", zero=True, sgd=False, two_steps=False, weighted=False, split=False):
    def train_autoencoder(model, x_train, loss_fn, num_epochs, batch_size, lr):
        make = (lambda: torch.optim.SGD(model.parameters(), lr=lr)) if sgd else (lambda: torch.optim.Adam(model.parameters(), lr=lr))
        optimizer = make()
        history = []
        n = len(x_train)
        for _ in range(num_epochs):
            if fresh == "epoch":
                optimizer = make()
            order = torch.randperm(n)
            stop = n - batch_size + 1 if drop_last else n
            chunks = order.split(batch_size) if split else [order[i:i + batch_size] for i in range(0, stop, batch_size)]
            total, count = 0.0, 0
            for idx in chunks:
                if fresh == "batch":
                    optimizer = make()
                loss = loss_fn(model, x_train[idx])["loss"]
                if zero:
                    optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if two_steps:
                    optimizer.step()
                total += loss.item() * (len(idx) if weighted else 1)
                count += len(idx) if weighted else 1
            history.append(total / count)
        return history
    return train_autoencoder


class _ParameterAE(nn.Module):
    """An autoencoder of bare nn.Parameter matrices, used as x @ W + b."""

    def __init__(self, input_dim, hidden_dim, latent_dim):
        super().__init__()
        sizes = [(input_dim, hidden_dim), (hidden_dim, latent_dim), (latent_dim, hidden_dim), (hidden_dim, input_dim)]
        self.weights = nn.ParameterList([nn.Parameter(0.1 * torch.randn(a, b)) for a, b in sizes])
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(b)) for _, b in sizes])

    def encode(self, x):
        h = F.elu(x @ self.weights[0] + self.biases[0])
        return h @ self.weights[1] + self.biases[1]

    def forward(self, x):
        h = F.elu(self.encode(x) @ self.weights[2] + self.biases[2])
        return torch.sigmoid(h @ self.weights[3] + self.biases[3])


class _LogvarFirstVAE(models.VAEBase):
    """Two heads, the logvar head registered before the mu head."""

    def __init__(self, input_dim, hidden_dim, latent_dim):
        super().__init__()
        self.hidden = nn.Linear(input_dim, hidden_dim)
        self.to_logvar = nn.Linear(hidden_dim, latent_dim)
        self.to_mu = nn.Linear(hidden_dim, latent_dim)
        self.dec_hidden, self.dec_out = nn.Linear(latent_dim, hidden_dim), nn.Linear(hidden_dim, input_dim)

    def encode(self, x):
        h = F.elu(self.hidden(x))
        return self.to_mu(h), self.to_logvar(h)

    def decode(self, z):
        return self.dec_out(F.elu(self.dec_hidden(z)))


class _DetachedCodeVAE(models.VAEBase):
    """Decodes a detached z: the encoder still gets the KL's gradient, the reconstruction's never reaches it."""

    def __init__(self, input_dim, hidden_dim, latent_dim):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ELU(), nn.Linear(hidden_dim, 2 * latent_dim))
        self.dec = nn.Sequential(nn.Linear(latent_dim, hidden_dim), nn.ELU(), nn.Linear(hidden_dim, input_dim))

    def encode(self, x):
        return self.enc(x).chunk(2, dim=-1)

    def decode(self, z):
        return self.dec(z.detach())


class _InnerNetworksVAE(models.VAEBase):
    """Takes the inner networks of a vae_helpers VAE built inside __init__."""

    def __init__(self, input_dim, hidden_dim, latent_dim):
        super().__init__()
        inner = models.VAE(models.VAEConfig(input_dim=input_dim, hidden_dim=hidden_dim, latent_dim=latent_dim))
        self.enc, self.dec = inner.encoder.net, inner.decoder.net

    def encode(self, x):
        return self.enc(x).chunk(2, dim=-1)

    def decode(self, z):
        return self.dec(z)


_OUTSIDE = {}


class _SharedLayersAE(nn.Module):
    """Reuses layers made once outside the class (so every instance shares them)."""

    def __init__(self, input_dim, hidden_dim, latent_dim):
        super().__init__()
        key = (input_dim, hidden_dim, latent_dim)
        if key not in _OUTSIDE:
            _OUTSIDE[key] = (nn.Linear(input_dim, hidden_dim), nn.Linear(hidden_dim, latent_dim),
                             nn.Linear(latent_dim, hidden_dim), nn.Linear(hidden_dim, input_dim))
        self.l1, self.l2, self.l3, self.l4 = _OUTSIDE[key]

    def encode(self, x):
        return self.l2(F.elu(self.l1(x)))

    def forward(self, x):
        return torch.sigmoid(self.l4(F.elu(self.l3(self.encode(x)))))


def _lazy_conv_encoder():
    class LazyEncoder(nn.Module):
        def __init__(self, latent_dim, channels=(16, 32), hidden_dim=64):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, channels[0], 3, 2, 1), nn.ReLU(), nn.Conv2d(channels[0], channels[1], 3, 2, 1),
                                          nn.ReLU(), nn.Flatten(), nn.LazyLinear(hidden_dim), nn.ReLU())
            self.to_mu, self.to_logvar = nn.Linear(hidden_dim, latent_dim), nn.Linear(hidden_dim, latent_dim)

        def forward(self, x):
            h = self.features(x)
            return self.to_mu(h), self.to_logvar(h)
    return LazyEncoder


class _ChannelsLastEncoder(nn.Module):
    """Flattens the feature map channels last: a different but equally good dense layer."""

    def __init__(self, latent_dim, channels=(16, 32), hidden_dim=64):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(1, channels[0], 3, 2, 1), nn.Conv2d(channels[0], channels[1], 3, 2, 1)
        self.dense = nn.Linear(channels[1] * 49, hidden_dim)
        self.heads = nn.Linear(hidden_dim, 2 * latent_dim)

    def forward(self, x):
        h = torch.relu(self.c2(torch.relu(self.c1(x))))  # (B, C, 7, 7)
        h = torch.relu(self.dense(h.permute(0, 2, 3, 1).flatten(1)))
        return self.heads(h).chunk(2, dim=-1)


CATALOGUE += [
    # delegation that cannot be switched off, pasted code, saved aliases
    row("gaussian_kl", "cheat", "profiler switched off", _profiler_off(losses.gaussian_kl), r"calls vae_helpers.losses.gaussian_kl"),
    row("gaussian_kl", "cheat", "pasted source of gaussian_kl_per_dim", lambda mu, lv: _pasted_kl_per_dim(mu, lv).sum(-1),
        "copy of vae_helpers' own losses.gaussian_kl_per_dim"),
    row("gaussian_kl", "cheat", "the refusal caught, the value computed by hand", lambda mu, lv: _catching(losses.gaussian_kl, mu, lv),
        r"calls vae_helpers.losses.gaussian_kl"),
    row("negative_elbo", "cheat", "profiler switched off", _profiler_off(lambda m, x: losses.vae_loss(m, x)["loss"]),
        r"calls vae_helpers.losses.vae_loss"),
    row("conv_output_size", "cheat", "an alias of F.conv2d taken before the check", lambda n, k, s, p: _saved_conv2d(
        torch.zeros(1, 1, n, n), torch.zeros(1, 1, k, k), stride=s, padding=p).shape[-1], "runs a convolution"),
    row("interpolate_latents", "cheat", "torch.lerp", lambda a, b, n: torch.lerp(a, b, torch.linspace(0, 1, n)[:, None]), "torch.lerp"),
    row("interpolate_latents", "cheat", "Tensor.lerp", lambda a, b, n: a.lerp(b, torch.linspace(0, 1, n)[:, None]), "torch.lerp"),
    row("reparameterize", "cheat", "pasted source", own_copy(models.reparameterize), "copy of vae_helpers' own models.reparameterize"),
    row("vae_module", "gradient", "decode detaches z", _DetachedCodeVAE, "no gradient reaches z"),
    row("vae_module", "cheat", "the inner networks of a models.VAE", _InnerNetworksVAE, r"builds vae_helpers' own models.VAE"),
    row("autoencoder_module", "cheat", "layers made outside the class", _SharedLayersAE, "share their layers"),
    # gradients: the right value with a cut or changed gradient path
    row("autoencoder_forward", "gradient", "under torch.no_grad", lambda x, *layers: torch.no_grad()(_ae_functional)(x, *layers),
        "no gradient reaches"),
    row("squared_error_loss", "gradient", "torch.tensor(loss.item())", lambda x, xh: torch.tensor(((x - xh) ** 2).sum(1).mean().item()),
        "no gradient reaches x_hat"),
    row("squared_error_loss", "gradient", "x_hat detached", lambda x, xh: ((x - xh.detach()) ** 2).sum(1).mean(), "no gradient reaches x_hat"),
    row("cross_entropy_loss", "gradient", "a new tensor with requires_grad", lambda x, l: torch.tensor(
        (F.softplus(l) - x * l).sum(-1).mean().item(), requires_grad=True), "no gradient reaches logits"),
    row("gaussian_kl", "gradient", "the variance detached", lambda mu, lv: _kl_parts(mu, lv, detach_var=True), "gradient with respect to logvar"),
    row("gaussian_kl", "gradient", "mu.data in mu^2", lambda mu, lv: _kl_parts(mu, lv, data_mu=True), "no gradient reaches mu"),
    row("gaussian_log_likelihood", "gradient", "x detached", lambda x, mu, lv: -0.5 * torch.sum(
        math.log(2 * math.pi) + lv + (x.detach() - mu) ** 2 / lv.exp(), -1), "no gradient reaches x"),
    row("reparameterize", "gradient", "sigma detached", lambda mu, lv: mu + torch.exp(0.5 * lv).detach() * torch.randn_like(mu),
        "no gradient reaches logvar"),
    row("negative_elbo", "gradient", "KL detached", _elbo(kl_detached=True), "gradient with respect to model.encoder"),
    row("negative_elbo", "gradient", "sigma detached inside the sample", _elbo(sigma_detached=True), "gradient with respect to model.encoder"),
    row("negative_elbo", "gradient", "a new tensor from loss.item()", _elbo(as_number=True), "no gradient reaches model"),
    row("iwae_estimate", "gradient", "rebuilt from numbers", lambda m, x, k: torch.tensor(
        (torch.logsumexp(m.log_importance_weights(x, k), 0) - math.log(k)).tolist()), "no gradient reaches log_w"),
    row("kl_per_dimension", "gradient", "logvar detached", lambda mu, lv: (-0.5 * (1 + lv.detach() - mu**2 - lv.detach().exp())).mean(0),
        "no gradient reaches logvar"),
    row("conv_decode", "gradient", "z detached", lambda m, z: _decode_unflatten(m, z.detach()), "no gradient reaches z"),
    row("interpolate_latents", "gradient", "rebuilt from lists", lambda a, b, n: torch.tensor(
        [(a + t * (b - a)).tolist() for t in torch.linspace(0, 1, n).tolist()]), "no gradient reaches z_start"),
    row("planar_transform", "gradient", "h detached in the log-det", lambda z, u, w, b: (lambda h: (
        z + u * h[:, None], torch.log(torch.abs(1 + (1 - h.detach() ** 2) * (w @ u)))))(torch.tanh(z @ w + b)),
        "gradient with respect to z is wrong"),
    row("constrain_u", "gradient", "w detached in the correction", lambda u, w: _constrain(F.softplus)(u, w.detach()),
        "no gradient reaches w"),
    row("flow_free_energy", "gradient", "log-dets detached", lambda log_px, z0, zK, mu, lv, ld: _free_energy_losses(
        log_px, z0, zK, mu, lv, ld.detach()), "no gradient reaches log_dets"),
    row("energy_u1", "gradient", "the ring term detached", lambda z: _u1()(z) - (0.5 * ((z.norm(dim=-1) - 2) / 0.4) ** 2)
        + (0.5 * ((z.detach().norm(dim=-1) - 2) / 0.4) ** 2), "gradient with respect to z is wrong"),
    row("sample_posterior", "gradient", "flow parameters detached", _posterior_detached_flows, "gradient with respect to model.encoder"),
    # noise: fresh, from torch's generator, independent
    row("negative_elbo", "noise", "torch.manual_seed inside", _elbo_reseeded, "re-seeds torch's random generator"),
    row("negative_elbo", "noise", "one eps shared by the latent dimensions", _elbo_shared_eps, "share their noise"),
    row("sample_posterior", "noise", "torch.manual_seed inside", _posterior_reseeded, "re-seeds torch's random generator"),
    row("sample_posterior", "noise", "one eps shared by the latent dimensions", _posterior_shared_eps, "share their noise"),
    row("reparameterize", "noise", "a private generator seeded once", lambda mu, lv: mu + torch.exp(0.5 * lv) * torch.randn(
        mu.shape, generator=_private), "different noise after the same torch.manual_seed"),
    # training loops judged by what they do to the model
    row("train_autoencoder", "loop", "drops the last partial batch", _loop_variant(drop_last=True), "last 4 examples"),
    row("train_autoencoder", "loop", "a new Adam every batch", _loop_variant(fresh="batch"), "new optimizer for every batch"),
    row("train_autoencoder", "loop", "a new Adam every epoch", _loop_variant(fresh="epoch"), "new optimizer every epoch"),
    row("train_autoencoder", "loop", "no zero_grad", _loop_variant(zero=False), "gradients add up"),
    row("train_autoencoder", "loop", "SGD", _loop_variant(sgd=True), "plain gradient steps"),
    row("train_autoencoder", "loop", "two steps per batch", _loop_variant(two_steps=True), "not as the loop should"),
    row("train_autoencoder", "valid", "randperm(...).split", _loop_variant(split=True)),
    row("train_autoencoder", "valid", "the epoch mean weighted by batch size", _loop_variant(weighted=True)),
    # right answers written other ways
    row("gaussian_log_likelihood", "valid", "written out", lambda x, mu, lv: -0.5 * ((x - mu) ** 2 * torch.exp(-lv) + lv
        + math.log(2 * math.pi)).sum(-1)),
    row("gaussian_log_likelihood", "valid", "with log sigma", lambda x, mu, lv: (-(x - mu) ** 2 / (2 * lv.exp()) - 0.5 * lv
        - 0.5 * math.log(2 * math.pi)).sum(dim=1)),
    row("negative_elbo", "valid", "eps drawn as randn(B, D)", _elbo(eps_shape=lambda mu: (mu.shape[0], mu.shape[1]))),
    row("negative_elbo", "valid", "two samples averaged", _elbo(samples=2)),
    row("reparameterize", "valid", "eps drawn (D, B) and transposed", lambda mu, lv: mu + torch.exp(lv / 2) * torch.randn(
        mu.shape[1], mu.shape[0]).T),
    row("sample_posterior", "valid", "eps drawn (D, B) and transposed", _posterior_randn_shape),
    row("autoencoder_module", "valid", "nn.Parameter matrices", _ParameterAE),
    row("vae_module", "valid", "logvar head registered first", _LogvarFirstVAE),
    row("conv_encoder", "valid", "nn.LazyLinear", _lazy_conv_encoder()),
    row("conv_encoder", "valid", "flattened channels last", _ChannelsLastEncoder),
    row("conv_output_size", "valid", "a loop over window positions", lambda n, k, s, p: sum(1 for i in range(0, n + 2 * p - k + 1, s))),
    row("training_step", "valid", "zero_grad(set_to_none=False), loss returned as float", lambda m, opt, x, f: (
        opt.zero_grad(set_to_none=False), (loss := f(m, x)["loss"]).backward(), opt.step(), float(loss.detach()))[-1]),
    row("gaussian_kl", "valid", "per-dimension terms summed with einsum", lambda mu, lv: torch.einsum(
        "bd->b", 0.5 * (mu.pow(2) + torch.exp(lv) - lv - 1))),
    row("kl_per_dimension", "valid", "sum over the batch divided by its size", lambda mu, lv: 0.5 * (mu**2 + lv.exp() - lv - 1).sum(0)
        / mu.shape[0]),
    row("conv_decode", "valid", "the decoder's layers one by one", lambda m, z: _layer_by_layer(m, z)),
    row("interpolate_latents", "valid", "a list of steps stacked", lambda a, b, n: torch.stack(
        [(1 - t) * a + t * b for t in [i / (n - 1) for i in range(n)]]) if n > 1 else a[None]),
    row("planar_transform", "valid", "written with einsum", lambda z, u, w, b: (lambda h: (z + torch.outer(h, u), torch.log(
        torch.abs(1 + torch.einsum("d,d->", w, u) * (1 - h**2)))))(torch.tanh(torch.einsum("bd,d->b", z, w) + b))),
    row("iwae_estimate", "valid", "stable by hand with a detached max", lambda m, x, k: (lambda lw: lw.max(0).values.detach() + torch.log(
        torch.exp(lw - lw.max(0).values.detach()).mean(0)))(m.log_importance_weights(x, k))),
]

_private = torch.Generator().manual_seed(0)


def _layer_by_layer(model, z):
    c = model.config
    h = model.from_z(z).reshape(-1, c.channels[-1], c.feature_size, c.feature_size)
    for layer in model.decoder:
        h = layer(h)
    return h


def _catching(reference: Callable[..., Any], *args: Any) -> Any:
    try:
        return reference(*args)
    except Exception:  # noqa: BLE001 - an answer that hides the refusal and computes the value another way
        return -0.5 * torch.sum(1 + args[1] - args[0] ** 2 - args[1].exp(), -1)


@pytest.mark.parametrize("checker, fn, match", CATALOGUE)
def test_catalogue(checker: str, fn: Callable[..., Any], match: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    check = getattr(checks, f"check_{checker}")
    if match is None:
        check(fn)
        assert capsys.readouterr().out.startswith("✓")
    else:
        with pytest.raises(checks.CheckFailed, match=match):
            check(fn)


def test_every_checker_has_a_cheat_and_a_valid_variant_in_the_catalogue() -> None:
    kinds: dict[str, set[str]] = {}
    for param in CATALOGUE:
        checker, kind = param.id.split("-")[:2]
        kinds.setdefault(checker, set()).add(kind)
    all_checkers = {name.removeprefix("check_") for name in checks.__all__ if name.startswith("check_")}
    assert set(kinds) == all_checkers
    # active_units and receptive_field have no vae_helpers reference to call, so no cheat row
    assert all({"cheat", "valid"} <= found or name in ("active_units", "receptive_field") and "valid" in found
               for name, found in kinds.items()), kinds
    valid = [param.id.split("-")[0] for param in CATALOGUE if param.id.split("-")[1] == "valid"]
    assert all(valid.count(name) >= 2 for name in all_checkers), {name: valid.count(name) for name in all_checkers}
    # every checker that takes differentiable inputs has a cut-gradient row
    graded_by_gradient = all_checkers - {"active_units", "conv_output_size", "receptive_field", "training_step",
                                         "train_autoencoder", "autoencoder_module", "conv_encoder"}
    assert graded_by_gradient <= {name for name, found in kinds.items() if "gradient" in found}


def test_a_refused_reference_is_allowed_again_after_its_checker() -> None:
    checks.check_gaussian_kl(lambda mu, lv: 0.5 * (mu * mu + lv.exp() - 1 - lv).sum(-1))
    assert checks.call_learner(losses.gaussian_kl, torch.zeros(2, 3), torch.zeros(2, 3)).shape == (2,)
