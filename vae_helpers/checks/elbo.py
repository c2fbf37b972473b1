"""Checkers for notebook 02's bounds: the negative ELBO of a batch and the IWAE estimate, judged on the learner's own noise."""

from __future__ import annotations

import math
from typing import Callable

import torch

from ..models import VAE, VAEConfig
from ._core import CheckFailed, call_learner, close, compare, expect_tensor, ok, refuses, seeded
from ._judge import Trial, check_fresh_noise


class _RecordingVAE(VAE):
    """A notebook-02 VAE that keeps every z it is asked to decode, so a checker can read the noise a loss drew."""

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        self.decoded: list[torch.Tensor] = []
        self._inside = False

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.decoded.append(z)
        self._inside = True
        try:
            return super().log_likelihood(x, z)
        finally:
            self._inside = False

    def decode(self, z: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if not self._inside:
            self.decoded.append(z)
        return super().decode(z)


def _elbo_references(model: torch.nn.Module, x: torch.Tensor, zs: list[torch.Tensor], mu_l: torch.Tensor,
                     logvar_l: torch.Tensor) -> dict[str, torch.Tensor]:
    """-ELBO on the learner's own draws zs (averaged), with the closed-form KL and with the one-sample KL estimate."""
    from ..losses import gaussian_kl, gaussian_log_likelihood, standard_normal_log_density

    mu, logvar = model.encode(x)
    std = torch.exp(0.5 * logvar)
    closed, sampled = [], []
    for z in zs:
        if z.shape != mu.shape:
            continue
        z_ref = mu + std * ((z.detach() - mu_l.detach()) / torch.exp(0.5 * logvar_l.detach()))  # the learner's eps
        recon = -model.log_likelihood(x, z_ref)
        closed.append(recon + gaussian_kl(mu, logvar))
        sampled.append(recon + gaussian_log_likelihood(z_ref, mu, logvar) - standard_normal_log_density(z_ref))
    if not closed:
        return {}
    return {"closed": torch.stack(closed).mean(0), "sampled": torch.stack(sampled).mean(0)}  # each (B,)


@refuses("losses.vae_loss", "losses.elbo", "flows.flow_vae_loss")
def check_negative_elbo(fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(model, x) -> scalar``: the batch mean of -log p(x|z) + KL, in value and gradient on the learner's own z."""
    from ..losses import gaussian_kl

    with seeded(23):
        model = _RecordingVAE(VAEConfig(input_dim=12, hidden_dim=16, latent_dim=3))
        with torch.no_grad():
            model.encoder.net[-1].bias[3:] += 1.5  # logvar around 1.5, so a wrong scale of eps shows
        x = torch.bernoulli(torch.full((6, 12), 0.4))
    trial = Trial(fn, lambda m, xs: m, (model, x), label="negative_elbo", names=("model", None), seed=23)
    learner_model, reference_model = trial.learner_args[0], trial.reference_args[0]
    got = trial.got
    if type(got) is torch.Tensor and tuple(got.shape) == (6,):
        raise CheckFailed("negative_elbo returned one value per example; return their mean over the batch, "
                          "a scalar, which is what fit minimises")
    if isinstance(got, (int, float)) and not isinstance(got, bool):
        raise CheckFailed("negative_elbo returned a Python number; return the tensor, so that fit can call .backward() on it")
    got = expect_tensor(got, (), "negative_elbo", hint="Return a scalar: the mean over the batch.")
    zs = list(learner_model.decoded)
    if not zs:
        raise CheckFailed("negative_elbo never decoded a z: compute log p(x|z) with model.log_likelihood(x, z)")
    with torch.no_grad():
        mu_l, logvar_l = learner_model.encode(x)
    if all(close(z.detach(), mu_l, rtol=0, atol=1e-6) for z in zs if z.shape == mu_l.shape):
        raise CheckFailed("negative_elbo decodes z = mu: sample z from q(z|x) with the reparameterisation trick, so that "
                          "the loss sees the noise the encoder's logvar describes")
    refs = _elbo_references(reference_model, x, zs, mu_l, logvar_l)
    if not refs:
        raise CheckFailed(f"negative_elbo decoded codes of shape {tuple(zs[0].shape)}; draw one z per input, "
                          f"shape {tuple(mu_l.shape)} like mu")
    chosen = next((value.mean() for value in refs.values() if close(got, value.mean())), None)
    if chosen is None:
        with torch.no_grad():
            mu, logvar = reference_model.encode(x)
            kl = gaussian_kl(mu, logvar)
            closed = refs["closed"].detach()
            recon = closed - kl  # -log p(x|z), (B,)
        ref = closed.mean()
        compare(got, ref, "negative_elbo", {
            "you returned the ELBO; the loss to minimise is its negative": -ref,
            "you summed over the batch; take the mean so the loss does not grow with the batch size": ref * x.shape[0],
            "the KL term is missing": recon.mean(),
            "the KL term has the wrong sign: in the loss it is a cost": (recon - kl).mean(),
            "the reconstruction term -log p(x|z) is missing": kl.mean(),
            "the reconstruction term has the wrong sign: it is minus the log-likelihood": (-recon + kl).mean(),
        }, rtol=1e-4, atol=1e-4)
    if not got.requires_grad:
        raise CheckFailed("no gradient reached the networks: the loss was computed under torch.no_grad() or "
                          "detached; fit needs to call .backward() on it")

    big = x.repeat(3334, 1)[:20_000]  # (20000, 12): many draws of q(z|x) for the same six inputs

    def draw() -> torch.Tensor:
        learner_model.decoded.clear()
        call_learner(fn, learner_model, big, name="negative_elbo")
        zs_big = [z for z in learner_model.decoded if z.shape == (big.shape[0], 3)]
        if not zs_big:
            raise CheckFailed("negative_elbo did not decode one z per input on a larger batch")
        with torch.no_grad():
            mu_b, logvar_b = learner_model.encode(big)
        return ((zs_big[0].detach() - mu_b) / torch.exp(0.5 * logvar_b))

    n = check_fresh_noise(draw, "negative_elbo", hint="draw z with reparameterize, which takes fresh noise on every call")
    trial.check_gradients(expected=[chosen])
    ok(f"negative_elbo: the batch mean of -log p(x|z) + KL in value and in gradient for every weight of both networks, "
       f"on your own draws of z; fresh, standard normal noise on {n} draws")


class _FixedWeights(torch.nn.Module):
    """A stand-in model whose ``log_importance_weights`` returns a fixed ``(k, B)`` table."""

    def __init__(self, log_w: torch.Tensor):
        super().__init__()
        self.log_w = torch.nn.Parameter(log_w.clone())

    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        if k != self.log_w.shape[0]:
            raise ValueError(f"asked for k = {k} weights, but this test model has {self.log_w.shape[0]}")
        return self.log_w * 1.0  # a fresh tensor that carries the gradient to log_w


@refuses("losses.iwae_bound")
def check_iwae_estimate(fn: Callable[[torch.nn.Module, torch.Tensor, int], torch.Tensor]) -> None:
    """Check ``fn(model, x, k) -> (B,)``: log (1/k) sum_i exp(log_w_i) computed stably with a log-sum-exp."""

    g = torch.Generator().manual_seed(24)
    cases = [-700 + 10 * torch.randn(50, 2, generator=g), -100 + 3 * torch.randn(5, 3, generator=g),
             -90 + torch.randn(1, 4, generator=g), torch.full((8, 3), -120.0)]
    for log_w in cases:
        k, batch = log_w.shape
        trial = Trial(fn, lambda m, x, k: torch.logsumexp(m.log_w, 0) - math.log(k), (_FixedWeights(log_w), torch.zeros(batch, 4), k),
                      label="iwae_estimate", names=("log_w", None, None))
        got = trial.got
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (k,) and k != batch:
            raise CheckFailed("iwae_estimate returned one value per sample; the k samples lie along dim 0 of "
                              "log_w (k, B): reduce over dim=0 to get one estimate per input")
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (batch,) and not torch.isfinite(got).all():
            raise CheckFailed("iwae_estimate returned -inf or nan: exp(log_w) underflows to 0 for log-weights near "
                              "-700; never exponentiate a large negative log-weight as it is")
        got = expect_tensor(got, (batch,), "iwae_estimate", hint="Return one estimate per input, shape (B,).")
        ref = torch.logsumexp(log_w, 0) - math.log(k)
        compare(got, ref, "iwae_estimate", {
            "the 1/k is missing: the bound is the log of the average weight, not of the sum": ref + math.log(k),
            "you averaged the log-weights: that is the ELBO estimate; take the log of the average weight instead":
                log_w.mean(0),
            "wrong sign: return the estimate of log p(x), not the negative log-likelihood": -ref,
            "you kept only the largest log-weight (max); the bound adds up all k weights": log_w.max(0).values,
            "you kept only the largest log-weight (max) minus log k; the bound adds up all k weights":
                log_w.max(0).values - math.log(k),
        })
        trial.check_gradients()
    ok(f"iwae_estimate matches log (1/k) sum_i w_i in value and gradient on {len(cases)} cases, stably for log-weights "
       "near -700")
