"""Checkers for notebook 02 (VAE): Gaussian KL and log-likelihood, reparameterisation, -ELBO, IWAE."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ._core import CheckFailed, call_learner, expect_tensor, seeded, close, compare, ok, refuses


_LOG_2PI = 1.8378770664093453  # log(2 pi)
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


@refuses("losses.gaussian_kl", "losses.gaussian_kl_per_dim")
def check_gaussian_kl(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(mu, logvar) -> (batch,)`` against ``torch.distributions`` and the reference."""
    from torch.distributions import Normal, kl_divergence

    from ..losses import gaussian_kl

    cases = _normal_cases(20)
    for _, mu, logvar in cases:
        batch, dim = mu.shape
        got = _expect_nb02(call_learner(fn, mu.clone(), logvar.clone(), name="gaussian_kl"), (batch,),
                           "gaussian_kl", "one KL per example")
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
    zero = call_learner(fn, torch.zeros(3, 4), torch.zeros(3, 4), name="gaussian_kl")
    if not close(zero, torch.zeros(3)):
        raise CheckFailed("gaussian_kl(0, 0) should be 0: q(z|x) = N(0, I) is exactly the prior")
    ok(f"gaussian_kl matches torch.distributions on {len(cases)} cases and is 0 when q(z|x) is the prior")


@refuses("losses.gaussian_log_likelihood")
def check_gaussian_log_likelihood(fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(x, mu, logvar) -> (batch,)`` against ``Normal(mu, exp(logvar / 2)).log_prob(x).sum(-1)``."""
    from torch.distributions import Normal

    from ..losses import gaussian_log_likelihood

    cases = _normal_cases(21)
    for x, mu, logvar in cases:
        batch, dim = x.shape
        got = _expect_nb02(call_learner(fn, x.clone(), mu.clone(), logvar.clone(), name="gaussian_log_likelihood"),
                           (batch,), "gaussian_log_likelihood", "one log-density per example")
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
    ok(f"gaussian_log_likelihood matches torch.distributions.Normal on {len(cases)} cases")


@refuses("models.reparameterize")
def check_reparameterize(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(mu, logvar) -> z``: gradients flow to mu and logvar, z ~ N(mu, exp(logvar)), fresh noise."""
    with seeded(22):
        g = torch.Generator().manual_seed(22)
        mu = torch.randn(5, 3, generator=g).requires_grad_()
        logvar = (1.5 * torch.randn(5, 3, generator=g)).requires_grad_()
        z = call_learner(fn, mu, logvar, name="reparameterize")
        if isinstance(z, torch.Tensor) and tuple(z.shape) != (5, 3):
            raise CheckFailed(f"reparameterize returned shape {tuple(z.shape)}, expected {(5, 3)} like mu: draw one "
                              "eps per example and latent dimension, e.g. torch.randn_like(mu)")
        z = expect_tensor(z, (5, 3), "reparameterize")
        if not z.requires_grad:
            raise CheckFailed("z carries no gradient back to mu and logvar: a plain sample (Normal(...).sample(), "
                              "or code under torch.no_grad) blocks it. Draw eps ~ N(0, I) on its own and return "
                              "mu + exp(logvar / 2) * eps")
        if close(z.detach(), mu.detach(), rtol=0, atol=1e-6):
            raise CheckFailed("z equals mu: the noise term exp(logvar / 2) * eps is missing")
        d_mu, d_logvar = torch.autograd.grad(z.sum(), (mu, logvar), allow_unused=True)
        d_mu = torch.zeros_like(mu) if d_mu is None else d_mu
        d_logvar = torch.zeros_like(logvar) if d_logvar is None else d_logvar
        if not close(d_mu, torch.ones_like(mu)):
            hint = (" (torch.normal(mu, std) returns a sample whose gradient is zero)" if close(d_mu, torch.zeros_like(mu)) else "")
            raise CheckFailed("dz/dmu should be 1 for every entry, since z = mu + sigma * eps" + hint)
        noise = (z - mu).detach()
        compare(d_logvar, 0.5 * noise, "dz/dlogvar", {
            "you scaled eps by the variance exp(logvar); the standard deviation is exp(logvar / 2)": noise,
            "you used logvar itself as the standard deviation; it is exp(logvar / 2)": noise / logvar.detach(),
            "the scale does not depend on logvar: use sigma = exp(logvar / 2)": torch.zeros_like(noise),
        })
        # statistics on many draws: eps must be standard normal, independent across entries and calls
        n = 20_000
        mu_big = torch.tensor([0.5, -1.0, 2.0]).repeat(n, 1)
        logvar_big = torch.tensor([-1.0, 0.0, 1.5]).repeat(n, 1)
        z_big = call_learner(fn, mu_big, logvar_big, name="reparameterize").detach()
        eps = (z_big - mu_big) / torch.exp(0.5 * logvar_big)  # (n, 3)
        if (eps.amax(0) - eps.amin(0)).max() < 1e-4:
            raise CheckFailed("every example got the same eps: draw an independent eps for each entry of mu "
                              "(torch.randn_like(mu)), not one number for the whole batch")
        if abs(eps.mean().item() - 0.5) < 0.05 and abs(eps.var().item() - 1 / 12) < 0.02:
            raise CheckFailed("eps looks uniform on [0, 1]: use torch.randn (standard normal), not torch.rand")
        if eps.mean(0).abs().max() > 0.05 or (eps.var(0) - 1).abs().max() > 0.06:
            raise CheckFailed(f"(z - mu) / exp(logvar / 2) should be standard normal, but has mean "
                              f"{eps.mean().item():.3f} and variance {eps.var().item():.3f}")
        corr = torch.corrcoef(eps.T)  # (3, 3): independent dimensions have correlation ~ 0 (sd 0.007 on 20 000 draws)
        if (corr - torch.eye(3)).abs().max() > 0.05:
            raise CheckFailed(f"the latent dimensions share their noise (correlation up to {(corr - torch.eye(3)).abs().max():.2f}): "
                              "draw one eps per entry, eps of shape (B, D) like mu (torch.randn_like(mu)), "
                              "not one eps per example (B, 1) spread over the dimensions")
        for what, a, b in (("neighbouring examples", eps[:-1], eps[1:]), ("the two halves of the batch", eps[: n // 2], eps[n // 2:])):
            r = torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()
            if abs(r) > 0.05:
                raise CheckFailed(f"the examples share or mirror their noise ({what} have correlation {r:.2f}): "
                                  "draw an independent eps for every example and dimension, torch.randn_like(mu)")
        again = call_learner(fn, mu.detach(), logvar.detach(), name="reparameterize")
        if close(again.detach(), z.detach(), rtol=0, atol=1e-7):
            raise CheckFailed("two calls returned the same z: draw fresh noise on every call (no fixed seed inside)")
    ok(f"reparameterize: gradients reach mu and logvar, z ~ N(mu, exp(logvar)) on {n} draws, fresh noise on every call")


class _SharpVAE(torch.nn.Module):
    """A tiny VAE whose posterior is narrow: logvar = -12 (sd 0.0025), so -ELBO is close to its value at z = mu.

    Not narrower: in float32 mu + 1e-9 * eps rounds to mu, which would break a Monte Carlo KL estimate.
    """

    def __init__(self, vae: torch.nn.Module):
        super().__init__()
        self.vae = vae

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, _ = self.vae.encode(x)
        return mu, torch.full_like(mu, -12.0)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.vae.log_likelihood(x, z)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.vae, name)


class _LeafPosterior(_SharpVAE):
    """A tiny VAE whose encoder output is a pair of leaf tensors, so the gradient of a loss w.r.t. mu can be read."""

    def __init__(self, vae: torch.nn.Module, mu: torch.Tensor, logvar: torch.Tensor):
        super().__init__(vae)
        self.mu = torch.nn.Parameter(mu.clone())
        self.logvar = torch.nn.Parameter(logvar.clone())

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mu, self.logvar


@refuses("losses.vae_loss", "losses.elbo")
def check_negative_elbo(fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(model, x) -> scalar``: the batch mean of -log p(x|z) + KL(q(z|x) || p(z)), one z per input."""
    from ..losses import gaussian_kl, vae_loss
    from ..models import VAE, VAEConfig

    with seeded(23):
        vae = VAE(VAEConfig(input_dim=12, hidden_dim=16, latent_dim=3))
        with torch.no_grad():
            vae.encoder.net[-1].bias[3:] += 1.5  # logvar around 1.5, so a wrong scale of eps shows in the mean
        x = torch.bernoulli(torch.full((6, 12), 0.4))
        sharp = _SharpVAE(vae)
        got = call_learner(fn, sharp, x, name="negative_elbo")
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (6,):
            raise CheckFailed("negative_elbo returned one value per example; return their mean over the batch, "
                              "a scalar, which is what fit minimises")
        got = expect_tensor(got, (), "negative_elbo", hint="Return a scalar: the mean over the batch.")
        # the mean of 40 calls, so that a Monte Carlo estimate of the KL (log q(z|x) - log p(z)) passes too
        sharp_draws = torch.stack([got.detach()] + [call_learner(fn, sharp, x, name="negative_elbo").detach().reshape(())
                                                    for _ in range(39)])
        spread = 5 * sharp_draws.std().item() / 40**0.5
        with torch.no_grad():
            mu, logvar = sharp.encode(x)
            log_px = vae.log_likelihood(x, mu)  # (B,): z is within ~0.0025 of mu when logvar = -12
            kl = gaussian_kl(mu, logvar)
        ref = (-log_px + kl).mean()
        compare(sharp_draws.mean(), ref, "negative_elbo", {
            "you returned the ELBO; the loss to minimise is its negative, -log p(x|z) + KL": -ref,
            "you summed over the batch; take the mean so the loss does not grow with the batch size": ref * x.shape[0],
            "the KL term is missing": (-log_px).mean(),
            "the KL must be added: -ELBO = -log p(x|z) + KL(q(z|x) || p(z))": (-log_px - kl).mean(),
            "the reconstruction term -log p(x|z) is missing": kl.mean(),
            "the reconstruction term has the wrong sign: it is minus the log-likelihood": (log_px + kl).mean(),
        }, rtol=1e-4, atol=1e-2 + spread)
        # with a real posterior the loss must be random (a sampled z) and unbiased for -ELBO
        draws = torch.stack([call_learner(fn, vae, x, name="negative_elbo").detach() for _ in range(300)])
        if (draws.max() - draws.min()) < 1e-4 * (1 + draws.abs().max()):
            raise CheckFailed("negative_elbo gives the same value on every call: sample z with "
                              "models.reparameterize(mu, logvar) instead of using z = mu")
        with torch.no_grad():
            expected = vae_loss(vae, x, num_samples=20_000)["loss"]
        tolerance = 5 * draws.std().item() / 300**0.5 + 1e-3
        if abs(draws.mean().item() - expected.item()) > tolerance:
            raise CheckFailed(f"on average over 300 calls your loss is {draws.mean().item():.3f}, but -ELBO is "
                              f"{expected.item():.3f}: check how z is drawn (z = mu + exp(logvar / 2) * eps)")
        with torch.no_grad():
            mu, logvar = vae.encode(x)
        leaf = _LeafPosterior(vae, mu, logvar)
        loss = call_learner(fn, leaf, x, name="negative_elbo")
        if not loss.requires_grad:
            raise CheckFailed("no gradient reached the networks: the loss was computed under torch.no_grad() or "
                              "detached; fit needs to call .backward() on it")
        loss.backward()
        silent = [name for name, p in vae.decoder.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
        if silent:
            raise CheckFailed(f"no gradient reached the decoder ({silent[0]}): build log p(x|z) with "
                              "model.log_likelihood(x, z), without .detach() or torch.no_grad()")
        kl_only = mu / x.shape[0]  # d mean(KL) / d mu: what is left when z is cut off from mu
        if leaf.mu.grad is None or close(leaf.mu.grad, kl_only, rtol=1e-4, atol=1e-6):
            raise CheckFailed("no gradient reached the encoder through z: z must stay connected to mu and logvar "
                              "(no .detach(), no plain sample); that is the point of the reparameterisation trick")
    ok("negative_elbo: the batch mean of -log p(x|z) + KL, with a fresh z each call and gradients for both networks")


class _FixedWeights(torch.nn.Module):
    """A stand-in model whose ``log_importance_weights`` returns a fixed ``(k, B)`` table."""

    def __init__(self, log_w: torch.Tensor):
        super().__init__()
        self.log_w = log_w

    def log_importance_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        if k != self.log_w.shape[0]:
            raise ValueError(f"asked for k = {k} weights, but this test model has {self.log_w.shape[0]}")
        return self.log_w.clone()


@refuses("losses.iwae_bound")
def check_iwae_estimate(fn: Callable[[torch.nn.Module, torch.Tensor, int], torch.Tensor]) -> None:
    """Check ``fn(model, x, k) -> (B,)``: log (1/k) sum_i exp(log_w_i) computed stably with a log-sum-exp."""
    import math

    g = torch.Generator().manual_seed(24)
    cases = [-700 + 10 * torch.randn(50, 2, generator=g), -100 + 3 * torch.randn(5, 3, generator=g),
             -90 + torch.randn(1, 4, generator=g), torch.full((8, 3), -120.0)]
    for log_w in cases:
        k, batch = log_w.shape
        got = call_learner(fn, _FixedWeights(log_w), torch.zeros(batch, 4), k, name="iwae_estimate")
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
    ok(f"iwae_estimate matches log (1/k) sum_i w_i on {len(cases)} cases, stably for log-weights near -700")


@refuses("losses.gaussian_kl_per_dim", "losses.gaussian_kl")
def check_kl_per_dimension(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(mu, logvar) -> (D,)``: the KL of each latent dimension, averaged over the batch."""
    from torch.distributions import Normal, kl_divergence

    cases = _normal_cases(25)
    for _, mu, logvar in cases:
        batch, dim = mu.shape
        got = call_learner(fn, mu.clone(), logvar.clone(), name="kl_per_dimension")
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
    ok(f"kl_per_dimension matches torch.distributions on {len(cases)} cases")


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
        if isinstance(out, torch.Tensor) and out.numel() == 1 and not out.is_floating_point():
            out = out.item()
        if isinstance(out, torch.Tensor):
            raise CheckFailed(f"active_units returned a tensor of shape {tuple(out.shape)}; return the number of active "
                              "dimensions as an int, e.g. int((variance > threshold).sum())")
        if isinstance(out, bool) or not isinstance(out, int):
            raise CheckFailed(f"active_units should return an int, got {type(out).__name__}")
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
