"""Checkers for notebook 02 (VAE): Gaussian KL and log-likelihood, reparameterisation, latent usage."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ._core import CheckFailed, call_learner, close, compare, expect_tensor, ok, plain_int, refuses
from ._judge import Trial, check_fresh_noise


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
                          "negative: it is already a logarithm, and exp turns it back into a variance")
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
            "wrong sign: a KL divergence is never negative": -ref,
            "you averaged over the latent dimensions; the KL of independent dimensions is their sum": ref / dim,
            "the factor 1/2 in front of the sum is missing": 2 * ref,
            "the constant 1 inside the sum is missing (with it, the KL is 0 when mu = 0 and logvar = 0)": ref + 0.5 * dim,
            "you used logvar where the variance exp(logvar) belongs (variance vs log-variance)":
                -0.5 * torch.sum(1 + logvar - mu2 - logvar, -1),
            "you used the standard deviation exp(logvar / 2) where the variance exp(logvar) belongs":
                -0.5 * torch.sum(1 + logvar - mu2 - torch.exp(0.5 * logvar), -1),
            "you used log(sigma) = logvar / 2 where log(sigma^2) = logvar belongs":
                -0.5 * torch.sum(1 + 0.5 * logvar - mu2 - var, -1),
            "the mu^2 term has the wrong sign: a mean far from 0 must cost more, not less": -0.5 * torch.sum(1 + logvar + mu2 - var, -1),
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
            "the normalising term in logvar (the log of the 1/sigma in front of the density) is missing": ref + 0.5 * logvar.sum(-1),
            "the logvar term has the wrong sign: a wider Gaussian has a lower density at its peak": ref + logvar.sum(-1),
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
        "you scaled eps by the variance; the noise must be scaled by the standard deviation": noise,
        "you used logvar itself as the standard deviation; logvar is the log of the variance": noise / logvar.detach(),
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
                              "dimensions as a Python int (one number), not a tensor")
        out = plain_int(out, "active_units")
        variance = mu.var(0)  # (D,): how much each coordinate of the code moves with the input
        expected = int((variance > threshold).sum())
        assert expected == int((mu.var(0, correction=0) > threshold).sum()), "internal error: a case sits on the threshold"
        if out == expected:
            continue
        hints = [(int((mu.var(1) > threshold).sum()), "the variance is over the data, dim=0 (one value per latent dimension)"),
                 (int((mu.std(0) > threshold).sum()), "compare the variance with the threshold, not the standard deviation"),
                 (int((mu.mean(0).abs() > threshold).sum()), "the mean of mu says where the codes lie, not whether they move with the input"),
                 (int((variance <= threshold).sum()), "you counted the inactive dimensions; count those above the threshold")]
        hint = next((h for count, h in hints if count == out),
                    "your statistic does not tell the dimensions whose mean moves with the input from those whose mean stays put")
        raise CheckFailed(f"active_units gave {out} for a case with {expected} active dimensions of {mu.shape[1]}. "
                          f"Likely mistake: {hint}")
    ok(f"active_units counts the dimensions whose posterior mean varies over the data, on {len(cases)} cases")
