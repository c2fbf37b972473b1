"""Checkers for notebook 04 (planar flows): the transform, the constraint on u, the free energy."""

from __future__ import annotations

from typing import Any, Callable

import torch

from ._core import CheckFailed, _preview, call_learner, close, compare, expect_tensor, ok, refuses, seeded
from ._judge import Trial, check_fresh_noise


def _learner_pair(out: Any, label: str) -> tuple[Any, Any]:
    """Unpack the ``(z_new, log_det)`` pair a planar transform returns, or fail with a clear message."""
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise CheckFailed(f"{label} should return a pair (z_new, log_det), got {type(out).__name__}"
                          + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
    return out[0], out[1]


def _expect_per_example(out: Any, batch: int, label: str, what: str) -> torch.Tensor:
    """``expect_tensor`` for one value per example, with hints for the usual shape mistakes."""
    if isinstance(out, torch.Tensor) and out.dim() == 0:
        raise CheckFailed(f"{label} returned a single number; it should return {what}, shape ({batch},): "
                          "do not sum or average over the batch")
    if isinstance(out, torch.Tensor) and out.dim() == 2 and out.shape[0] == batch:
        raise CheckFailed(f"{label} returned shape {tuple(out.shape)}, expected ({batch},): one value per example; "
                          + ("drop the trailing dimension of size 1 (e.g. .squeeze(-1)) or sum over dim=-1"
                                if out.shape[1] == 1 else "sum over the last dimension (dim=-1)"))
    return expect_tensor(out, (batch,), label, hint=f"Return {what}.")


def _planar_cases(seed: int) -> list[tuple[torch.Tensor, ...]]:
    """(z, u, w, b) for D = 2, 5, 3 with a fixed generator; the last case has 1 + uᵀψ < 0 somewhere."""
    g = torch.Generator().manual_seed(seed)
    cases = []
    for batch, dim in ((6, 2), (4, 5), (7, 3)):
        z = 1.5 * torch.randn(batch, dim, generator=g)
        w = torch.randn(dim, generator=g)
        u = torch.randn(dim, generator=g)
        b = torch.randn(1, generator=g)
        cases.append((z, u, w, b))
    z, _, w, b = cases[-1]
    z[0] = -b * w / w.pow(2).sum()  # wᵀz + b = 0 at the first example, where h' = 1
    cases[-1] = (z, -3.0 * w / w.pow(2).sum(), w, b)  # wᵀu = -3: 1 + uᵀψ = 1 - 3 h' < 0 near wᵀz + b = 0
    return cases


def _autograd_log_det(z: torch.Tensor, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log|det ∂f/∂z| of f(z) = z + u tanh(wᵀz + b) for each row of z, from autograd Jacobians (float64)."""
    u, w, b = u.double(), w.double(), b.double()

    def f(v: torch.Tensor) -> torch.Tensor:
        return v + u * torch.tanh(v @ w + b)

    jacobians = [torch.autograd.functional.jacobian(f, row) for row in z.double()]  # each (D, D)
    return torch.stack([torch.linalg.det(j).abs().log() for j in jacobians])


@refuses("flows.planar_transform", "flows.PlanarFlow.forward")
def check_planar_transform(fn: Callable[..., Any]) -> None:
    """Check ``fn(z, u, w, b) -> (f(z) (B, D), log|det ∂f/∂z| (B,))`` against autograd on D = 2, 5, 3."""
    from ..flows import planar_transform

    cases = _planar_cases(40)
    for z, u, w, b in cases:
        batch, dim = z.shape
        trial = Trial(fn, planar_transform, (z, u, w, b), label="planar_transform", names=("z", "u", "w", "b"))
        z_new, log_det = _learner_pair(trial.got, "planar_transform")
        ref_z, ref_ld = (t.detach() for t in trial.expected)
        oracle = _autograd_log_det(z, u, w, b)
        assert close(ref_ld, oracle), "internal error: reference planar_transform disagrees with autograd"
        a = z @ w + b  # wᵀz + b, (B,)
        h = torch.tanh(a)
        z_new = expect_tensor(z_new, (batch, dim), "planar_transform's z_new", hint="f(z) has the shape of z.")
        compare(z_new, ref_z, "planar_transform's z_new", {
            "b is missing: the argument of h is wᵀz + b": z + u * torch.tanh(z @ w)[:, None],
            "u and w are swapped: f(z) = z + u h(wᵀz + b)": z + w * torch.tanh(z @ u + b)[:, None],
            "the skip connection is missing: f(z) = z + u h(wᵀz + b)": u * h[:, None],
            "you used h'(a) = 1 - tanh²(a) where h(a) = tanh(a) belongs": z + u * (1 - h.pow(2))[:, None],
        })
        det = 1 + (1 - h.pow(2)) * (w @ u)  # 1 + uᵀψ(z), (B,)
        if isinstance(log_det, torch.Tensor) and log_det.shape == (batch,) and torch.isnan(log_det).any() and (det < 0).any():
            raise CheckFailed("planar_transform's log_det is nan where 1 + uᵀψ(z) < 0: the log of a negative number. "
                              "The determinant can be negative; take the log of its absolute value, log|1 + uᵀψ(z)|")
        log_det = _expect_per_example(log_det, batch, "planar_transform's log_det", "one log-determinant per example")
        compare(log_det, oracle.float(), "planar_transform's log_det (compared with log|det J| from autograd)", {
            "wrong sign: the log-determinant is +log|1 + uᵀψ(z)|, not minus": -ref_ld,
            "the log is missing: return log|1 + uᵀψ(z)|, not the determinant itself": det.abs(),
            "the log and the absolute value are missing: return log|1 + uᵀψ(z)|": det,
            "the 1 is missing: det(I + u ψᵀ) = 1 + uᵀψ (matrix determinant lemma)": ((1 - h.pow(2)) * (w @ u)).abs().log(),
            "h'(a) is 1 - tanh²(a), not tanh(a)": (1 + h * (w @ u)).abs().log(),
            "h'(a) is 1 - tanh²(a), not 1 - tanh(a)": (1 + (1 - h) * (w @ u)).abs().log(),
            "b is missing inside h'(wᵀz + b)": (1 + (1 - torch.tanh(z @ w).pow(2)) * (w @ u)).abs().log(),
            "ψ(z) = h'(wᵀz + b) w: the log-det uses uᵀw, not uᵀu or wᵀw":
                (1 + (1 - h.pow(2)) * (u @ u)).abs().log(),
        })
        trial.check_gradients()
    ok(f"planar_transform matches f(z) and log|det ∂f/∂z| from autograd, in value and gradient, on {len(cases)} cases "
       "(D = 2, 5, 3)")


@refuses("flows.constrain_u")
def check_constrain_u(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(u, w) -> û`` (same shape): û from the reference formula and wᵀû = m(wᵀu) > -1."""
    import torch.nn.functional as F

    from ..flows import constrain_u

    g = torch.Generator().manual_seed(41)
    cases = [(torch.randn(2, generator=g), torch.randn(2, generator=g)),
             (torch.randn(5, generator=g), torch.randn(5, generator=g)),
             (torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g))]
    w = torch.randn(4, generator=g)
    cases.append((-3.0 * w / w.pow(2).sum() + 0.1 * torch.randn(4, generator=g), w))  # wᵀu near -3 < -1: not invertible
    cases.append((100.0 * w / w.pow(2).sum(), w))  # wᵀu = 100: log(1 + exp(100)) overflows, softplus does not
    for u, w in cases:
        trial = Trial(fn, constrain_u, (u, w), label="constrain_u", names=("u", "w"))
        got = trial.got
        if isinstance(got, torch.Tensor) and got.shape == u.shape and not torch.isfinite(got).all() \
                and ((w * u).sum(-1) > 80).any():
            raise CheckFailed("constrain_u returned inf or nan for a large wᵀu (here 100): exp(100) overflows, so "
                              "log(1 + exp(x)) does too; use F.softplus(x), which is computed stably")
        got = expect_tensor(got, tuple(u.shape), "constrain_u", hint="û has the shape of u.")
        ref = constrain_u(u, w)
        wu = (w * u).sum(-1, keepdim=True)
        w_sq = w.pow(2).sum(-1, keepdim=True)
        m = -1 + F.softplus(wu)
        compare(got, ref, "constrain_u", {
            "divide by ‖w‖² (the squared norm), not by ‖w‖, so that wᵀû = m(wᵀu) exactly": u + (m - wu) * w / w_sq.sqrt(),
            "m(x) = -1 + softplus(x): the -1 is missing": u + (F.softplus(wu) - wu) * w / w_sq,
            "wrong sign of the correction: û = u + (m(wᵀu) - wᵀu) w / ‖w‖²": u - (m - wu) * w / w_sq,
            "subtract wᵀu inside the bracket: û = u + (m(wᵀu) - wᵀu) w / ‖w‖²": u + m * w / w_sq,
            "softplus(x) = log(1 + exp(x)), not exp(x)": u + (-1 + wu.exp() - wu) * w / w_sq,
            "û is u unchanged: add the correction (m(wᵀu) - wᵀu) w / ‖w‖²": u,
            "the dot product wᵀu is one number per row: sum over the last dimension only (dim=-1, keepdim=True)":
                u + (-1 + F.softplus((w * u).sum()) - (w * u).sum()) * w / w.pow(2).sum(),
        })
        wu_hat = (w * got).sum(-1)
        if not (wu_hat >= -1 - 1e-5).all():
            raise CheckFailed(f"wᵀû should be >= -1 for every row (the planar map is then invertible), got {_preview(wu_hat)}")
        trial.check_gradients()
    ok(f"constrain_u matches the reference in value and gradient on {len(cases)} cases and keeps wᵀû >= -1")


@refuses("flows.flow_free_energy", "flows.flow_vae_loss")
def check_flow_free_energy(fn: Callable[..., torch.Tensor]) -> None:
    """Check ``fn(log_px, z0, zK, mu, logvar, log_dets (B, K)) -> (B,)`` against ``torch.distributions``."""
    from torch.distributions import Normal

    from ..flows import flow_free_energy
    from ..losses import gaussian_kl

    g = torch.Generator().manual_seed(42)
    cases = 0
    for batch, dim, num_flows in ((5, 2, 3), (4, 6, 1), (6, 3, 8)):
        log_px = -50 * torch.rand(batch, generator=g)
        mu = torch.randn(batch, dim, generator=g)
        logvar = torch.randn(batch, dim, generator=g)
        z0 = mu + torch.exp(0.5 * logvar) * torch.randn(batch, dim, generator=g)
        zK = z0 + torch.randn(batch, dim, generator=g)
        log_dets = 0.5 * torch.randn(batch, num_flows, generator=g)
        trial = Trial(fn, flow_free_energy, (log_px, z0, zK, mu, logvar, log_dets), label="flow_free_energy",
                      names=("log_px", "z0", "zK", "mu", "logvar", "log_dets"))
        got = trial.got
        if isinstance(got, torch.Tensor) and tuple(got.shape) == (batch, num_flows) and num_flows > 1:
            raise CheckFailed(f"flow_free_energy returned shape {tuple(got.shape)}, expected ({batch},): "
                              "sum the log-determinants over the K flows (dim=-1) to get one value per example")
        got = _expect_per_example(got, batch, "flow_free_energy", "one free energy per example")
        sum_ld = log_dets.sum(-1)
        log_q0 = Normal(mu, torch.exp(0.5 * logvar)).log_prob(z0).sum(-1)
        log_pzK = Normal(0.0, 1.0).log_prob(zK).sum(-1)
        expected = log_q0 - sum_ld - log_pzK - log_px
        ref = flow_free_energy(log_px, z0, zK, mu, logvar, log_dets)
        assert close(ref, expected), "internal error: reference flow_free_energy disagrees with torch.distributions"
        log_p = lambda z: Normal(0.0, 1.0).log_prob(z).sum(-1)  # noqa: E731
        mistakes = {
            "wrong sign of the log-dets: the flows lower log q_K(z_K) = log q_0(z_0) - Σ log|det|, "
            "so the free energy subtracts them": expected + 2 * sum_ld,
            "you returned the ELBO; the free energy is its negative": -expected,
            "log q_0 is evaluated at z_0 (the sample before the flows), not at z_K":
                Normal(mu, torch.exp(0.5 * logvar)).log_prob(zK).sum(-1) - sum_ld - log_pzK - log_px,
            "the prior p(z) is evaluated at z_K (the sample after the flows), not at z_0": log_q0 - sum_ld - log_p(z0) - log_px,
            "the closed-form KL of q_0 ignores the flows: use log q_0(z_0) - Σ log|det| - log p(z_K)":
                gaussian_kl(mu, logvar) - log_px,
            "the closed-form KL of q_0 does not belong here: use log q_0(z_0) - Σ log|det| - log p(z_K)":
                gaussian_kl(mu, logvar) - sum_ld - log_px,
            "you averaged the log-dets over the flows; they add up (Σ_k)": log_q0 - log_dets.mean(-1) - log_pzK - log_px,
            "logvar is the log-variance: the standard deviation of q_0 is exp(logvar / 2)":
                Normal(mu, torch.exp(logvar)).log_prob(z0).sum(-1) - sum_ld - log_pzK - log_px,
            "the reconstruction term enters with a minus sign: F = ... - log p(x|z_K)": log_q0 - sum_ld - log_pzK + log_px,
        }
        compare(got, expected, "flow_free_energy", mistakes)
        trial.check_gradients()
        cases += 1
    ok(f"flow_free_energy matches torch.distributions in value and gradient on {cases} cases")


@refuses("flows.U1", "flows._neg_logaddexp")
def check_energy_u1(fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Check ``fn(z (N, 2)) -> U_1(z) (N,)`` against the formula of Rezende & Mohamed's Table 1, also far from the ring."""
    from ..flows import U1

    g = torch.Generator().manual_seed(43)
    near = 8 * torch.rand(50, 2, generator=g) - 4  # the square of the figures
    far = torch.tensor([[30.0, 0.0], [-30.0, 1.0], [0.0, 40.0], [12.0, -9.0]])  # both Gaussian bumps underflow to 0 here
    for z, where in ((near, "in the square [-4, 4]²"), (far, "far from the ring (e.g. z = (30, 0))")):
        z64 = z.double()
        ring = 0.5 * ((z64.norm(dim=-1) - 2) / 0.4) ** 2
        a, b = -0.5 * ((z64[:, 0] - 2) / 0.6) ** 2, -0.5 * ((z64[:, 0] + 2) / 0.6) ** 2
        expected = (ring - torch.logaddexp(a, b)).float()  # oracle in float64
        trial = Trial(fn, U1, (z,), label=f"energy_u1 {where}", names=("z",))
        out = trial.got
        if isinstance(out, torch.Tensor) and out.dim() == 2 and tuple(out.shape) == (z.shape[0], 1):
            raise CheckFailed(f"energy_u1 returned shape {tuple(out.shape)}, expected ({z.shape[0]},): one energy per point")
        if isinstance(out, torch.Tensor) and tuple(out.shape) == (z.shape[0],) and not torch.isfinite(out).all():
            raise CheckFailed(f"energy_u1 returned inf or nan {where}: exp(-½((z₁ ∓ 2)/0.6)²) underflows to 0 there and "
                              "-log(0) = inf. Compute -log(e^a + e^b) as -torch.logaddexp(a, b) (or torch.logsumexp)")
        out = expect_tensor(out, (z.shape[0],), "energy_u1", "One energy per point: (N,).")
        compare(out, expected, f"energy_u1 {where}", {
            "the second term enters with a minus sign: U₁ = ½((‖z‖ - 2)/0.4)² - log(e^a + e^b)": (ring + torch.logaddexp(a, b)).float(),
            "‖z‖ is the Euclidean norm, sqrt(z₁² + z₂²), not the squared norm":
                (0.5 * ((z64.pow(2).sum(-1) - 2) / 0.4) ** 2 - torch.logaddexp(a, b)).float(),
            "the factor ½ in the ring term is missing": (2 * ring - torch.logaddexp(a, b)).float(),
            "the two bumps sit at z₁ = +2 and z₁ = -2: use (z₁ - 2) and (z₁ + 2)":
                (ring - torch.logaddexp(a, a)).float(),
        }, rtol=1e-4, atol=1e-3)
        trial.check_gradients()
    ok("energy_u1 matches U₁ of Rezende & Mohamed's Table 1, in value and gradient, in the square and stays finite far "
       "from the ring")


def _posterior_reference(model: Any, x: torch.Tensor, got: Any) -> tuple[torch.Tensor, ...]:
    """``FlowVAE.sample_posterior`` on the learner's own noise (read off its z0): (z0, zK, Σ log-det, mu, logvar)."""
    from ..flows import planar_flow_sequence

    mu, logvar, u, w, b = model.encode_all(x)
    z0_got = got[0] if isinstance(got, (tuple, list)) and got and type(got[0]) is torch.Tensor else None
    std = torch.exp(0.5 * logvar)
    eps = ((z0_got.detach() - mu.detach()) / std.detach()) if z0_got is not None and z0_got.shape == mu.shape \
        else torch.zeros_like(mu)
    z0 = mu + std * eps
    zK, log_det = planar_flow_sequence(z0, u, w, b)
    return z0, zK, log_det, mu, logvar


@refuses("flows.planar_flow_sequence", "flows._planar_log_det",
         flows__FlowVAE__sample_posterior="your sample_posterior calls model.sample_posterior, the method this exercise "
                                          "asks you to write: start from model.encode_all(x)")
def check_sample_posterior(fn: Callable[..., Any]) -> None:
    """Check ``fn(model, x) -> (z0, zK, Σ log-det (B,), mu, logvar)`` for a ``FlowVAE``, in value and gradient."""
    from ..flows import FlowVAE, FlowVAEConfig, constrain_u, planar_transform

    label = "sample_posterior"
    for num_flows in (3, 0):
        with seeded(550 + num_flows):
            model = FlowVAE(FlowVAEConfig(input_dim=12, hidden_dim=10, latent_dim=2, num_flows=num_flows))
            with torch.no_grad():  # flows away from the identity, so that every mistake shows
                model.encoder.net[-1].weight.normal_(0.0, 8.0)
            x = (torch.rand(5, 12) > 0.5).float()
        trial = Trial(fn, _posterior_reference, (model, x), label=label, names=("model", None), seed=550, with_got=True)
        out = trial.got
        if not isinstance(out, (tuple, list)) or len(out) != 5:
            raise CheckFailed(f"{label} should return five things (z0, zK, log_det, mu, logvar), got {type(out).__name__}"
                              + (f" of length {len(out)}" if isinstance(out, (tuple, list)) else ""))
        z0, zK, log_det, mu, logvar = out
        z0 = expect_tensor(z0, (5, 2), f"z0 from {label}", "One code per input: (B, latent_dim).")
        zK = expect_tensor(zK, (5, 2), f"zK from {label}", "One code per input: (B, latent_dim).")
        if type(log_det) is torch.Tensor and tuple(log_det.shape) == (5, num_flows) and num_flows > 1:
            raise CheckFailed(f"{label} returned one log-det per flow, shape (B, K); return their sum over the flows, (B,)")
        log_det = expect_tensor(log_det, (5,), f"the log-det from {label}", "Return Σ_k log|det| per input, (B,).")
        ref_z0, ref_zK, ref_ld, ref_mu, ref_logvar = (t.detach() for t in trial.expected)
        compare(expect_tensor(mu, (5, 2), f"mu from {label}"), ref_mu, f"mu from {label}", {}, atol=1e-5)
        compare(expect_tensor(logvar, (5, 2), f"logvar from {label}"), ref_logvar, f"logvar from {label}", {}, atol=1e-5)
        if not z0.requires_grad:
            raise CheckFailed("z0 carries no gradient back to the encoder: draw it with the reparameterisation "
                              "trick, mu + exp(logvar / 2) * eps (no .sample(), no torch.no_grad())")
        if num_flows and close(z0.detach(), ref_mu, rtol=0, atol=1e-6):
            raise CheckFailed("z0 is mu: add the noise exp(logvar / 2) * eps with eps ~ N(0, I)")
        with torch.no_grad():
            _, _, u, w, b = model.encode_all(x)
            raw_zK, raw_ld = z0.detach(), torch.zeros(5)
            for k in range(num_flows):
                raw_zK, ld = planar_transform(raw_zK, u[:, k], w[:, k], b[:, k])
                raw_ld = raw_ld + ld
            reversed_zK = z0.detach()
            for k in reversed(range(num_flows)):
                reversed_zK, _ = planar_transform(reversed_zK, constrain_u(u[:, k], w[:, k]), w[:, k], b[:, k])
        compare(zK.detach(), ref_zK, f"zK from {label} (the flows applied to your z0)", {
            "u must be made invertible first: use constrain_u(u_k, w_k) in place of the raw u_k": raw_zK,
            "the flows run in the wrong order: apply flow 0 first and flow K-1 last": reversed_zK,
        }, atol=1e-4)
        compare(log_det.detach(), ref_ld, f"the log-det from {label}", {
            "wrong sign: add the flows' log|det|, do not subtract them": -ref_ld,
            "u must be made invertible first: use constrain_u(u_k, w_k) in place of the raw u_k": raw_ld,
        }, atol=1e-4)
        trial.check_gradients(got=[z0, zK, log_det, mu, logvar])
    x_many = x[:1].expand(20_000, -1)  # many draws of q_0(z0|x) for one input

    def draw() -> torch.Tensor:
        z0_many = call_learner(fn, model, x_many, name=label)[0]
        z0_many = expect_tensor(z0_many, (20_000, 2), f"z0 from {label}")
        with torch.no_grad():
            mu_1, logvar_1 = model.encode(x[:1])
        return ((z0_many.detach() - mu_1) / torch.exp(0.5 * logvar_1))

    n = check_fresh_noise(draw, label)
    ok(f"{label}: z0 ~ q_0 with fresh noise ({n} draws), zK and Σ log-det from K constrained planar maps in order, "
       "in value and in gradient for every weight of the encoder, on K = 3 and K = 0")
