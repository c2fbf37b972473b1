"""Checkers for notebook 02 (VAE): Gaussian KL and log-likelihood, reparameterisation, -ELBO, IWAE."""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from ._core import CheckFailed, call_learner, close, compare, expect_tensor, ok, plain_int, refuses, seeded
from ._judge import Trial, check_fresh_noise
from ..models import VAE, VAEConfig


_LOG_2PI = 1.8378770664093453  # log(2 pi)
_KL_READY = "your answer uses torch.distributions' KL, the ready-made version of what this exercise asks; " \
            "write the closed form yourself with torch operations on mu and logvar"
READY_KL = {"torch.distributions.kl.kl_divergence": _KL_READY, "torch.distributions.kl._kl_normal_normal": _KL_READY}
_LL_READY = "your answer uses a ready-made Gaussian log-density ({}); write log N(x; mu, exp(logvar)) yourself " \
            "with torch operations"
READY_GAUSSIAN_LL = {path: _LL_READY.format(path.removeprefix("torch.")) for path in (
    "torch.distributions.Normal.log_prob", "torch.distributions.MultivariateNormal.log_prob",
    "torch.distributions.LowRankMultivariateNormal.log_prob", "torch.nn.functional.gaussian_nll_loss")}
_RSAMPLE_READY = "your answer uses torch.distributions' rsample, the ready-made reparameterisation trick; draw " \
                 "eps yourself and build z from mu, logvar and eps"
READY_RSAMPLE = {path: _RSAMPLE_READY for path in ("torch.distributions.Normal.rsample",
                                                   "torch.distributions.MultivariateNormal.rsample",
                                                   "torch.distributions.LowRankMultivariateNormal.rsample")}
# (batch, latent or pixel dims): batch != dims so that a reduction over the wrong axis shows in the shape
_VAE_SHAPES = ((5, 3), (7, 2), (4, 10), (6, 1))


def _expect_nb02(out: Any, shape: tuple[int, ...], label: str, what: str) -> torch.Tensor:
    """``expect_tensor`` with hints for the usual reduction mistakes of notebook 02."""
    if isinstance(out, torch.Tensor) and out.dim() == 0 and shape != ():
        raise CheckFailed(f"{label} returned a single number; it should return {what}, shape {shape}: "
                          "sum over the last dimension only (dim=-1), not over the batch")
    if isinstance(out, torch.Tensor) and out.dim() == 1 and len(shape) == 1 and tuple(out.shape) != shape:
        raise CheckFailed(f"{label} returned shape {tuple(out.shape)}, expected {shape}: you reduced over the "
                          "batch dimension (dim=0); sum over the last dimension (dim=-1) instead")
    if isinstance(out, torch.Tensor) and torch.isnan(out).any():
        raise CheckFailed(f"{label} returned nan: did you take the log or square root of logvar? logvar can be "
                          "negative; the variance is exp(logvar) and the standard deviation exp(logvar / 2)")
    return expect_tensor(out, shape, label, hint=f"Return {what}.")


def _normal_cases(seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(x, mu, logvar) triples of the shapes in ``_VAE_SHAPES``, drawn with a fixed generator."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, dim in _VAE_SHAPES:
        x = torch.rand(batch, dim, generator=g)
        mu = torch.randn(batch, dim, generator=g)
        logvar = 1.5 * torch.randn(batch, dim, generator=g)
        cases.append((x, mu, logvar))
    return cases


@refuses("losses.gaussian_kl", "losses.gaussian_kl_per_dim", library=READY_KL)
def check_gaussian_kl(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(mu, logvar) -> (batch,)`` against ``torch.distributions`` and the reference."""
    from torch.distributions import Normal, kl_divergence

    from ..losses import gaussian_kl

    cases = _normal_cases(20)
    for _, mu, logvar in cases:
        batch, dim = mu.shape
        trial = Trial(fn, gaussian_kl, (mu, logvar), label="gaussian_kl", names=("mu", "logvar"))
        got = _expect_nb02(trial.got, (batch,), "gaussian_kl", "one KL per example")
        expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
        ref = gaussian_kl(mu, logvar)
        assert close(ref, expected), "internal error: reference gaussian_kl disagrees with torch.distributions"
        mu2, var = mu.pow(2), logvar.exp()
        mistakes = {
            "wrong sign: a KL divergence is never negative; KL = -1/2 * sum(1 + logvar - mu^2 - exp(logvar))": -ref,
            "you averaged over the latent dimensions; the KL of independent dimensions is their sum": ref / dim,
            "the factor 1/2 in front of the sum is missing": 2 * ref,
            "the constant 1 inside the sum is missing (with it, the KL is 0 when mu = 0 and logvar = 0)": ref + 0.5 * dim,
            "you used logvar where the variance exp(logvar) belongs (variance vs log-variance)":
                -0.5 * torch.sum(1 + logvar - mu2 - logvar, -1),
            "you used the standard deviation exp(logvar / 2) where the variance exp(logvar) belongs":
                -0.5 * torch.sum(1 + logvar - mu2 - torch.exp(0.5 * logvar), -1),
            "you used log(sigma) = logvar / 2 where log(sigma^2) = logvar belongs":
                -0.5 * torch.sum(1 + 0.5 * logvar - mu2 - var, -1),
            "the mu^2 term has the wrong sign: it enters as -mu^2 inside the sum": -0.5 * torch.sum(1 + logvar + mu2 - var, -1),
            "mu must be squared": -0.5 * torch.sum(1 + logvar - mu - var, -1),
        }
        compare(got, ref, "gaussian_kl", mistakes)
        trial.check_gradients()
    zero = call_learner(fn, torch.zeros(3, 4), torch.zeros(3, 4), name="gaussian_kl")
    if not close(zero, torch.zeros(3)):
        raise CheckFailed("gaussian_kl(0, 0) should be 0: q(z|x) = N(0, I) is exactly the prior")
    ok(f"gaussian_kl matches torch.distributions in value and gradient on {len(cases)} cases and is 0 when q(z|x) is the prior")


@refuses("losses.gaussian_log_likelihood", library=READY_GAUSSIAN_LL)
def check_gaussian_log_likelihood(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(x, mu, logvar) -> (batch,)`` against ``Normal(mu, exp(logvar / 2)).log_prob(x).sum(-1)``."""
    from torch.distributions import Normal

    from ..losses import gaussian_log_likelihood

    cases = _normal_cases(21)
    for x, mu, logvar in cases:
        batch, dim = x.shape
        trial = Trial(fn, gaussian_log_likelihood, (x, mu, logvar), label="gaussian_log_likelihood", names=("x", "mu", "logvar"))
        got = _expect_nb02(trial.got, (batch,), "gaussian_log_likelihood", "one log-density per example")
        expected = Normal(mu, torch.exp(0.5 * logvar)).log_prob(x).sum(-1)
        ref = gaussian_log_likelihood(x, mu, logvar)
        assert close(ref, expected), "internal error: reference gaussian_log_likelihood disagrees with torch.distributions"
        sq = (x - mu).pow(2)
        mistakes = {
            "wrong sign: return the log-density log N(x; mu, exp(logvar)), not its negative (the loss)": -ref,
            "the constant -1/2 log(2 pi) per pixel is missing (without it the density does not integrate to 1)":
                ref + 0.5 * dim * _LOG_2PI,
            "the normalising term -1/2 logvar (the log of 1/sigma) is missing": ref + 0.5 * logvar.sum(-1),
            "the logvar term has the wrong sign: log N contains -1/2 logvar": ref + logvar.sum(-1),
            "you divided by the standard deviation exp(logvar / 2) where the variance exp(logvar) belongs":
                -0.5 * torch.sum(_LOG_2PI + logvar + sq * torch.exp(-0.5 * logvar), -1),
            "you multiplied the squared error by the variance instead of dividing by it":
                -0.5 * torch.sum(_LOG_2PI + logvar + sq * logvar.exp(), -1),
            "you used logvar itself as the variance (variance vs log-variance): the variance is exp(logvar)":
                -0.5 * torch.sum(_LOG_2PI + logvar + sq / logvar, -1),
            "you treated logvar as log(sigma); it is log(sigma^2), so sigma = exp(logvar / 2)":
                -0.5 * torch.sum(_LOG_2PI + 2 * logvar + sq * torch.exp(-2 * logvar), -1),
            "the factor 1/2 is missing": 2 * ref,
            "the factor 1/2 is missing on the squared-error term": -0.5 * torch.sum(_LOG_2PI + logvar, -1) - torch.sum(sq / logvar.exp(), -1),
            "you averaged over pixels; independent pixels multiply, so their log-densities add up (sum)": ref / dim,
        }
        compare(got, ref, "gaussian_log_likelihood", mistakes)
        trial.check_gradients()
    ok(f"gaussian_log_likelihood matches torch.distributions.Normal in value and gradient on {len(cases)} cases")


def _noise_reference(mu: torch.Tensor, logvar: torch.Tensor, got: Any) -> torch.Tensor:
    """mu + exp(logvar / 2) * eps with the eps the learner drew, read off its z: the reference on the same noise."""
    z = got.detach() if type(got) is torch.Tensor and got.shape == mu.shape else mu.detach()
    std = torch.exp(0.5 * logvar)
    return mu + std * ((z - mu.detach()) / std.detach())


@refuses("models.reparameterize", library=READY_RSAMPLE)
def check_reparameterize(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(mu, logvar) -> z``: gradients as the reference's on the same noise, z ~ N(mu, exp(logvar)), fresh noise."""
    g = torch.Generator().manual_seed(22)
    mu0 = torch.randn(5, 3, generator=g)
    logvar0 = 1.5 * torch.randn(5, 3, generator=g)
    trial = Trial(fn, _noise_reference, (mu0, logvar0), label="reparameterize", names=("mu", "logvar"), seed=22,
                  with_got=True)
    z, (mu, logvar) = trial.got, trial.learner_args
    if type(z) is torch.Tensor and tuple(z.shape) != (5, 3):
        raise CheckFailed(f"reparameterize returned shape {tuple(z.shape)}, expected {(5, 3)} like mu: draw one "
                          "eps per example and latent dimension, e.g. torch.randn_like(mu)")
    z = expect_tensor(z, (5, 3), "reparameterize")
    if not z.requires_grad:
        raise CheckFailed("z carries no gradient back to mu and logvar: a plain sample (Normal(...).sample(), "
                          "or code under torch.no_grad) blocks it. Draw eps ~ N(0, I) on its own and build z from it")
    if close(z.detach(), mu.detach(), rtol=0, atol=1e-6):
        raise CheckFailed("z equals mu: the noise term is missing")
    d_mu, d_logvar = torch.autograd.grad(z.sum(), (mu, logvar), allow_unused=True, retain_graph=True)
    d_mu = torch.zeros_like(mu) if d_mu is None else d_mu
    d_logvar = torch.zeros_like(logvar) if d_logvar is None else d_logvar
    if not close(d_mu, torch.ones_like(mu)):
        hint = (" (torch.normal(mu, std) returns a sample whose gradient is zero)" if close(d_mu, torch.zeros_like(mu)) else "")
        raise CheckFailed("dz/dmu should be 1 for every entry: z is mu plus noise that does not depend on mu" + hint)
    noise = (z - mu).detach()
    compare(d_logvar, 0.5 * noise, "dz/dlogvar", {
        "you scaled eps by the variance exp(logvar); the standard deviation is exp(logvar / 2)": noise,
        "you used logvar itself as the standard deviation; it is exp(logvar / 2)": noise / logvar.detach(),
        "no gradient reaches logvar through the scale: sigma must stay connected to logvar "
        "(no .detach(), no torch.no_grad())": torch.zeros_like(noise),
    })
    trial.check_gradients()
    mu_big = torch.tensor([0.5, -1.0, 2.0]).repeat(20_000, 1)
    logvar_big = torch.tensor([-1.0, 0.0, 1.5]).repeat(20_000, 1)

    def draw() -> torch.Tensor:
        z_big = expect_tensor(call_learner(fn, mu_big.clone(), logvar_big.clone(), name="reparameterize"),
                              tuple(mu_big.shape), "reparameterize")
        return ((z_big - mu_big) / torch.exp(0.5 * logvar_big)).detach()  # eps, (n, 3)

    n = check_fresh_noise(draw, "reparameterize")
    ok(f"reparameterize: value and gradients as mu + sigma * eps on the same noise, z ~ N(mu, exp(logvar)) on {n} draws, "
       "fresh noise from torch's generator on every call")


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
            "you returned the ELBO; the loss to minimise is its negative, -log p(x|z) + KL": -ref,
            "you summed over the batch; take the mean so the loss does not grow with the batch size": ref * x.shape[0],
            "the KL term is missing": recon.mean(),
            "the KL must be added: -ELBO = -log p(x|z) + KL(q(z|x) || p(z))": (recon - kl).mean(),
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

    n = check_fresh_noise(draw, "negative_elbo", hint="mu + exp(logvar / 2) * torch.randn_like(mu)")
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
                              "-700; use torch.logsumexp, which subtracts the largest log-weight first")
        got = expect_tensor(got, (batch,), "iwae_estimate", hint="Return one estimate per input, shape (B,).")
        ref = torch.logsumexp(log_w, 0) - math.log(k)
        compare(got, ref, "iwae_estimate", {
            "the -log k is missing: the estimate is the log of the AVERAGE weight, (1/k) sum_i w_i": ref + math.log(k),
            "you averaged the log-weights: that is the ELBO estimate; take the log of the average weight instead":
                log_w.mean(0),
            "wrong sign: return the estimate of log p(x), not the negative log-likelihood": -ref,
            "you kept only the largest log-weight (max); add up all k weights with torch.logsumexp": log_w.max(0).values,
            "you kept only the largest log-weight (max) minus log k; add up all k weights with torch.logsumexp":
                log_w.max(0).values - math.log(k),
        })
        trial.check_gradients()
    ok(f"iwae_estimate matches log (1/k) sum_i w_i in value and gradient on {len(cases)} cases, stably for log-weights "
       "near -700")


@refuses("losses.gaussian_kl_per_dim", "losses.gaussian_kl", library=READY_KL)
def check_kl_per_dimension(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(mu, logvar) -> (D,)``: the KL of each latent dimension, averaged over the batch."""
    from torch.distributions import Normal, kl_divergence

    cases = _normal_cases(25)
    for _, mu, logvar in cases:
        batch, dim = mu.shape
        trial = Trial(fn, lambda m, lv: (-0.5 * (1 + lv - m.pow(2) - lv.exp())).mean(0), (mu, logvar),
                      label="kl_per_dimension", names=("mu", "logvar"))
        got = trial.got
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (batch,) and batch != dim:
            raise CheckFailed(f"kl_per_dimension returned one value per example, shape ({batch},); it should return one "
                              f"per latent dimension, ({dim},): average over the batch (dim=0), do not sum over dim=-1")
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (batch, dim):
            raise CheckFailed(f"kl_per_dimension returned shape {(batch, dim)}: average over the batch (dim=0) as well")
        got = expect_tensor(got, (dim,), "kl_per_dimension", "Return one value per latent dimension.")
        per_entry = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0))  # (B, D)
        expected = per_entry.mean(0)
        compare(got, expected, "kl_per_dimension", {
            "you summed over the batch; average over it (mean over dim=0)": per_entry.sum(0),
            "wrong sign: every KL is >= 0": -expected,
            "the factor 1/2 is missing": 2 * expected,
            "you used logvar where the variance exp(logvar) belongs":
                (-0.5 * (1 + logvar - mu.pow(2) - logvar)).mean(0),
        })
        trial.check_gradients()
    ok(f"kl_per_dimension matches torch.distributions in value and gradient on {len(cases)} cases")


def check_active_units(fn: Callable[[torch.Tensor, float], Any]) -> None:
    """Check ``fn(mu (N, D), threshold) -> int``: dimensions whose posterior mean varies over the data (Burda et al., 2016)."""
    g = torch.Generator().manual_seed(26)
    cases = []
    for n, spreads in ((200, (1.0, 0.02, 0.5, 0.002, 3.0)), (50, (0.001,) * 3 + (0.4,)), (120, (2.0,) * 6)):
        spread = torch.tensor(spreads)
        mu = 0.7 * torch.randn(len(spreads), generator=g) + spread.sqrt() * torch.randn(n, len(spreads), generator=g)
        cases.append((mu, 0.01))
    mu, _ = cases[0]
    cases.append((mu, 0.3))  # another threshold
    for mu, threshold in cases:
        out = call_learner(fn, mu.clone(), threshold, name="active_units")
        if isinstance(out, torch.Tensor) and (out.numel() != 1 or out.is_floating_point() or out.dtype == torch.bool):
            raise CheckFailed(f"active_units returned a tensor of shape {tuple(out.shape)}; return the number of active "
                              "dimensions as an int, e.g. int((variance > threshold).sum())")
        out = plain_int(out, "active_units")
        variance = mu.var(0)  # (D,): how much each coordinate of the code moves with the input
        expected = int((variance > threshold).sum())
        assert expected == int((mu.var(0, correction=0) > threshold).sum()), "internal error: a case sits on the threshold"
        if out == expected:
            continue
        hints = [(int((mu.var(1) > threshold).sum()), "the variance is over the data, dim=0 (one value per latent dimension)"),
                 (int((mu.std(0) > threshold).sum()), "compare the variance with the threshold, not the standard deviation"),
                 (int((mu.mean(0).abs() > threshold).sum()), "activity is the variance of mu over the data, not its mean"),
                 (int((variance <= threshold).sum()), "you counted the inactive dimensions; count those above the threshold")]
        hint = next((h for count, h in hints if count == out),
                    "count the dimensions j with Var_x[mu_j(x)] > threshold, the variance taken over dim=0")
        raise CheckFailed(f"active_units gave {out} for a case with {expected} active dimensions of {mu.shape[1]}. "
                          f"Likely mistake: {hint}")
    ok(f"active_units counts the dimensions whose posterior mean varies over the data, on {len(cases)} cases")
