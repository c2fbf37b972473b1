"""Checkers of notebook 04 (planar flows): the reference passes, typical wrong answers are named."""

import pytest
import torch
import torch.nn.functional as F

from vae_helpers import checks
from vae_helpers import flows
from learner_copies import own_copy
from vae_helpers.losses import gaussian_kl, gaussian_log_likelihood, standard_normal_log_density


# right answers as a learner writes them (the references themselves, and pasted copies of them, are refused)
def planar_transform(z, u, w, b):
    h = torch.tanh(z @ w + b)  # (B,)
    return z + u * h[:, None], torch.log(torch.abs(1 + (1 - h**2) * (w @ u)))


def constrain_u(u, w):
    wu = (w * u).sum(-1, keepdim=True)
    return u + (-1 + F.softplus(wu) - wu) * w / (w * w).sum(-1, keepdim=True)


def flow_free_energy(log_px, z0, zK, mu, logvar, log_dets):
    log_dets = log_dets.sum(-1) if log_dets.dim() == 2 else log_dets
    return gaussian_log_likelihood(z0, mu, logvar) - log_dets - standard_normal_log_density(zK) - log_px


@pytest.mark.parametrize("checker, reference", [("planar_transform", flows.planar_transform),
                                                ("constrain_u", flows.constrain_u),
                                                ("flow_free_energy", flows.flow_free_energy)])
def test_a_pasted_copy_of_the_reference_is_refused(checker, reference):
    with pytest.raises(AssertionError, match=f"copy of vae_helpers' own flows.{checker}"):
        getattr(checks, f"check_{checker}")(own_copy(reference))


# ----------------------------------------------------------------------------- planar transform


def _planar_parts(z, u, w, b):
    a = z @ w + b  # (B,)
    h = torch.tanh(a)
    return a, h, z + u * h[:, None]


def planar_sign(z, u, w, b):
    z_new, log_det = planar_transform(z, u, w, b)
    return z_new, -log_det


def planar_no_log(z, u, w, b):
    _, h, z_new = _planar_parts(z, u, w, b)
    return z_new, (1 + (1 - h**2) * (w @ u)).abs()


def planar_no_abs(z, u, w, b):
    _, h, z_new = _planar_parts(z, u, w, b)
    return z_new, torch.log(1 + (1 - h**2) * (w @ u))


def planar_h_instead_of_dh(z, u, w, b):
    _, h, z_new = _planar_parts(z, u, w, b)
    return z_new, torch.log(torch.abs(1 + h * (w @ u)))


def planar_no_one(z, u, w, b):
    _, h, z_new = _planar_parts(z, u, w, b)
    return z_new, torch.log(torch.abs((1 - h**2) * (w @ u)))


def planar_column(z, u, w, b):
    z_new, log_det = planar_transform(z, u, w, b)
    return z_new, log_det[:, None]


def planar_no_b(z, u, w, b):
    _, log_det = planar_transform(z, u, w, b)
    return z + u * torch.tanh(z @ w)[:, None], log_det


def planar_only_z(z, u, w, b):
    return planar_transform(z, u, w, b)[0]


def planar_stub(z, u, w, b):
    raise NotImplementedError()


def test_reference_planar_transform_passes(capsys):
    checks.check_planar_transform(planar_transform)
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("wrong, message", [
    (planar_sign, "wrong sign"),
    (planar_no_log, "the log is missing"),
    (planar_no_abs, "absolute value"),
    (planar_h_instead_of_dh, r"1 - tanh²\(a\), not tanh\(a\)"),
    (planar_no_one, "the 1 is missing"),
    (planar_column, "trailing dimension"),
    (planar_no_b, "b is missing"),
    (planar_only_z, r"pair \(z_new, log_det\)"),
    (planar_stub, "not implemented yet"),
])
def test_planar_checker_names_the_mistake(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_planar_transform(wrong)


# ----------------------------------------------------------------------------- constrain_u


def _uw(u, w):
    wu = (w * u).sum(-1, keepdim=True)
    return wu, w.pow(2).sum(-1, keepdim=True)


def constrain_norm_not_squared(u, w):
    wu, w_sq = _uw(u, w)
    return u + (-1 + F.softplus(wu) - wu) * w / w_sq.sqrt()


def constrain_no_minus_one(u, w):
    wu, w_sq = _uw(u, w)
    return u + (F.softplus(wu) - wu) * w / w_sq


def constrain_wrong_sign(u, w):
    wu, w_sq = _uw(u, w)
    return u - (-1 + F.softplus(wu) - wu) * w / w_sq


def constrain_global_sum(u, w):
    wu = (w * u).sum()
    return u + (-1 + F.softplus(wu) - wu) * w / w.pow(2).sum()


def constrain_returns_dot(u, w):
    return (w * constrain_u(u, w)).sum(-1)


def constrain_clamps(u, w):
    return u  # leaves u alone: the map need not be invertible


def test_reference_constrain_u_passes(capsys):
    checks.check_constrain_u(constrain_u)
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("wrong, message", [
    (constrain_norm_not_squared, "squared norm"),
    (constrain_no_minus_one, "the -1 is missing"),
    (constrain_wrong_sign, "wrong sign"),
    (constrain_global_sum, "one number per row"),
    (constrain_returns_dot, "shape"),
    (constrain_clamps, "û is u unchanged"),
])
def test_constrain_checker_names_the_mistake(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_constrain_u(wrong)


# ----------------------------------------------------------------------------- flow free energy


def free_energy(log_px, z0, zK, mu, logvar, log_dets):
    return flow_free_energy(log_px, z0, zK, mu, logvar, log_dets)  # sums the (B, K) log-dets itself


def free_energy_log_det_sign(log_px, z0, zK, mu, logvar, log_dets):
    return flow_free_energy(log_px, z0, zK, mu, logvar, -log_dets.sum(-1))


def free_energy_elbo(*args):
    return -free_energy(*args)


def free_energy_q0_at_zK(log_px, z0, zK, mu, logvar, log_dets):
    return gaussian_log_likelihood(zK, mu, logvar) - log_dets.sum(-1) - standard_normal_log_density(zK) - log_px


def free_energy_closed_form_kl(log_px, z0, zK, mu, logvar, log_dets):
    return -log_px + gaussian_kl(mu, logvar)


def free_energy_unsummed(log_px, z0, zK, mu, logvar, log_dets):
    base = gaussian_log_likelihood(z0, mu, logvar) - standard_normal_log_density(zK) - log_px
    return base[:, None] - log_dets


def free_energy_batch_mean(*args):
    return free_energy(*args).mean()


def free_energy_mean_over_flows(log_px, z0, zK, mu, logvar, log_dets):
    return flow_free_energy(log_px, z0, zK, mu, logvar, log_dets.mean(-1))


def test_reference_free_energy_passes(capsys):
    checks.check_flow_free_energy(flow_free_energy)
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("wrong, message", [
    (free_energy_log_det_sign, "wrong sign of the log-dets"),
    (free_energy_elbo, "you returned the ELBO"),
    (free_energy_q0_at_zK, "evaluated at z_0"),
    (free_energy_closed_form_kl, "closed-form KL"),
    (free_energy_unsummed, "sum the log-determinants over the K flows"),
    (free_energy_batch_mean, "single number"),
    (free_energy_mean_over_flows, "averaged the log-dets"),
])
def test_free_energy_checker_names_the_mistake(wrong, message):
    with pytest.raises(AssertionError, match=message):
        checks.check_flow_free_energy(wrong)


def test_checkers_leave_the_global_rng_alone(global_rng_untouched):
    with global_rng_untouched():
        checks.check_planar_transform(planar_transform)
        checks.check_constrain_u(constrain_u)
        checks.check_flow_free_energy(free_energy)
