"""The notebook-02 checkers pass the reference and reject typical wrong answers, naming the mistake."""

import math

import pytest
import torch
from learner_copies import own_copy

from vae_helpers import checks, losses, models

LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- gaussian_kl


def kl_right(mu, logvar):
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


KL_WRONG = {
    "wrong sign": lambda mu, lv: 0.5 * torch.sum(1 + lv - mu**2 - lv.exp(), -1),
    "averaged over the latent": lambda mu, lv: -0.5 * torch.mean(1 + lv - mu**2 - lv.exp(), -1),
    "1/2 in front of the sum is missing": lambda mu, lv: -torch.sum(1 + lv - mu**2 - lv.exp(), -1),
    "constant 1 inside the sum is missing": lambda mu, lv: -0.5 * torch.sum(lv - mu**2 - lv.exp(), -1),
    "variance vs log-variance": lambda mu, lv: -0.5 * torch.sum(1 + lv - mu**2 - lv, -1),
    "standard deviation": lambda mu, lv: -0.5 * torch.sum(1 + lv - mu**2 - torch.exp(lv / 2), -1),
    r"log\(sigma\)": lambda mu, lv: -0.5 * torch.sum(1 + lv / 2 - mu**2 - lv.exp(), -1),
    "mu\\^2 term has the wrong sign": lambda mu, lv: -0.5 * torch.sum(1 + lv + mu**2 - lv.exp(), -1),
    "mu must be squared": lambda mu, lv: -0.5 * torch.sum(1 + lv - mu - lv.exp(), -1),
    "single number": lambda mu, lv: kl_right(mu, lv).mean(),
    "over the batch dimension": lambda mu, lv: (-0.5 * (1 + lv - mu**2 - lv.exp())).sum(0),
    "log or square root of logvar": lambda mu, lv: -0.5 * torch.sum(1 + torch.log(lv) - mu**2 - lv, -1),
    "not implemented yet": lambda mu, lv: (_ for _ in ()).throw(NotImplementedError()),
}


def test_gaussian_kl_checker_passes_the_reference(capsys):
    checks.check_gaussian_kl(kl_right)
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("mistake", list(KL_WRONG))
def test_gaussian_kl_checker_names_the_mistake(mistake):
    with pytest.raises(AssertionError, match=mistake):
        checks.check_gaussian_kl(KL_WRONG[mistake])


def test_gaussian_kl_checker_flags_shape_with_keepdim():
    with pytest.raises(AssertionError, match="shape"):
        checks.check_gaussian_kl(lambda mu, lv: kl_right(mu, lv)[:, None])


# ----------------------------------------------------------------------------- gaussian_log_likelihood


def loglik(x, mu, lv, const=LOG_2PI, scale=lambda lv: lv.exp(), half=0.5, norm=1.0):
    return -half * torch.sum(const + norm * lv + (x - mu) ** 2 / scale(lv), -1)


LL_WRONG = {
    "wrong sign": lambda x, mu, lv: -loglik(x, mu, lv),
    r"log\(2 pi\) per pixel is missing": lambda x, mu, lv: loglik(x, mu, lv, const=0.0),
    "normalising term": lambda x, mu, lv: loglik(x, mu, lv, norm=0.0),
    "logvar term has the wrong sign": lambda x, mu, lv: loglik(x, mu, lv, norm=-1.0),
    "divided by the standard deviation": lambda x, mu, lv: loglik(x, mu, lv, scale=lambda lv: torch.exp(lv / 2)),
    "multiplied the squared error by the variance": lambda x, mu, lv: loglik(x, mu, lv, scale=lambda lv: torch.exp(-lv)),
    "variance vs log-variance": lambda x, mu, lv: loglik(x, mu, lv, scale=lambda lv: lv),
    r"treated logvar as log\(sigma\)": lambda x, mu, lv: loglik(x, mu, lv, norm=2.0, scale=lambda lv: torch.exp(2 * lv)),
    "factor 1/2 is missing$": lambda x, mu, lv: loglik(x, mu, lv, half=1.0),
    "missing on the squared-error term": lambda x, mu, lv: -0.5 * torch.sum(LOG_2PI + lv, -1)
    - torch.sum((x - mu) ** 2 / lv.exp(), -1),
    "averaged over pixels": lambda x, mu, lv: loglik(x, mu, lv) / x.shape[-1],
    "single number": lambda x, mu, lv: loglik(x, mu, lv).sum(),
    "log or square root of logvar": lambda x, mu, lv: loglik(x, mu, torch.log(lv.exp()), scale=lambda v: torch.sqrt(lv)),
}


def test_gaussian_log_likelihood_checker_passes_the_reference(capsys):
    checks.check_gaussian_log_likelihood(loglik)
    checks.check_gaussian_log_likelihood(lambda x, mu, lv: loglik(x, mu, lv))
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("mistake", list(LL_WRONG))
def test_gaussian_log_likelihood_checker_names_the_mistake(mistake):
    with pytest.raises(AssertionError, match=mistake):
        checks.check_gaussian_log_likelihood(LL_WRONG[mistake])


# ----------------------------------------------------------------------------- reparameterize


REPARAM_WRONG = {
    "carries no gradient": lambda mu, lv: torch.distributions.Normal(mu, torch.exp(lv / 2)).sample(),
    "torch.normal": lambda mu, lv: torch.normal(mu, torch.exp(lv / 2)),
    "noise term": lambda mu, lv: mu + 0 * lv,
    "scaled eps by the variance": lambda mu, lv: mu + lv.exp() * torch.randn_like(mu),
    "used logvar itself as the standard deviation": lambda mu, lv: mu + lv * torch.randn_like(mu),
    "no gradient reaches logvar through the scale": lambda mu, lv: mu + torch.randn_like(mu) + 0 * lv,
    "no gradient reaches logvar through the scale: sigma": lambda mu, lv: mu + torch.exp(lv / 2).detach() * torch.randn_like(mu),
    "re-seeds torch's random generator": lambda mu, lv: (torch.manual_seed(0), mu + torch.exp(lv / 2) * torch.randn_like(mu))[1],
    "drew different noise after the same torch.manual_seed": lambda mu, lv: mu + torch.exp(lv / 2) * torch.from_numpy(
        __import__("numpy").random.standard_normal(tuple(mu.shape))).float(),
    "one number for the whole batch": lambda mu, lv: mu + torch.exp(lv / 2) * torch.randn(1),
    "uniform": lambda mu, lv: mu + torch.exp(lv / 2) * torch.rand_like(mu),
    "same noise whatever the state": lambda mu, lv: mu
    + torch.exp(lv / 2) * torch.randn(mu.shape, generator=torch.Generator().manual_seed(0)),
    "dz/dmu should be 1": lambda mu, lv: 2 * mu + torch.exp(lv / 2) * torch.randn_like(mu),
    "expected \\(5, 3\\) like mu": lambda mu, lv: mu[:, :1] + torch.exp(lv[:, :1] / 2) * torch.randn(mu.shape[0], 1),
}


def test_reparameterize_checker_passes_the_reference_and_keeps_the_global_rng(capsys, global_rng_untouched):
    with global_rng_untouched():
        checks.check_reparameterize(lambda mu, lv: mu + torch.exp(0.5 * lv) * torch.randn_like(mu))
        checks.check_reparameterize(lambda mu, lv: mu + torch.sqrt(torch.exp(lv)) * torch.randn_like(mu))
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("mistake", list(REPARAM_WRONG))
def test_reparameterize_checker_names_the_mistake(mistake):
    with pytest.raises(AssertionError, match=mistake):
        checks.check_reparameterize(REPARAM_WRONG[mistake])


# ----------------------------------------------------------------------------- negative ELBO


def neg_elbo_terms(model, x, z_from_mu=False):
    mu, logvar = model.encode(x)
    z = mu if z_from_mu else models.reparameterize(mu, logvar)
    return -model.log_likelihood(x, z), losses.gaussian_kl(mu, logvar)


NEG_ELBO_WRONG = {
    "returned the ELBO": lambda m, x: -sum(neg_elbo_terms(m, x)).mean(),
    "summed over the batch": lambda m, x: sum(neg_elbo_terms(m, x)).sum(),
    "KL term is missing": lambda m, x: neg_elbo_terms(m, x)[0].mean(),
    "KL term has the wrong sign": lambda m, x: (lambda r, kl: (r - kl).mean())(*neg_elbo_terms(m, x)),
    "reconstruction term -log p\\(x\\|z\\) is missing": lambda m, x: neg_elbo_terms(m, x)[1].mean(),
    "reconstruction term has the wrong sign": lambda m, x: (lambda r, kl: (-r + kl).mean())(*neg_elbo_terms(m, x)),
    "one value per example": lambda m, x: sum(neg_elbo_terms(m, x)),
    "decodes z = mu": lambda m, x: sum(neg_elbo_terms(m, x, z_from_mu=True)).mean(),
    "should be standard normal": lambda m, x: (lambda mu, lv: (
        -m.log_likelihood(x, mu + lv.exp() * torch.randn_like(mu)) + losses.gaussian_kl(mu, lv)).mean())(*m.encode(x)),
    "under torch.no_grad": lambda m, x: torch.no_grad()(lambda: sum(neg_elbo_terms(m, x)).mean())(),
    "no gradient reaches model.decoder": lambda m, x: (lambda mu, lv: (-losses.bernoulli_log_likelihood(
        x, m.decode(models.reparameterize(mu, lv)).detach()) + losses.gaussian_kl(mu, lv)).mean())(*m.encode(x)),
    "gradient with respect to model.encoder.* is wrong": lambda m, x: (lambda mu, lv: (
        -m.log_likelihood(x, models.reparameterize(mu, lv).detach()) + losses.gaussian_kl(mu, lv)).mean())(*m.encode(x)),
}


def test_a_pasted_copy_of_the_reference_is_refused():
    with pytest.raises(AssertionError, match="copy of vae_helpers' own losses.gaussian_log_likelihood"):
        checks.check_gaussian_log_likelihood(own_copy(losses.gaussian_log_likelihood))
    with pytest.raises(AssertionError, match="copy of vae_helpers' own models.reparameterize"):
        checks.check_reparameterize(own_copy(models.reparameterize))


def test_negative_elbo_checker_passes_the_reference(capsys):
    checks.check_negative_elbo(lambda m, x: sum(neg_elbo_terms(m, x)).mean())
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("mistake", list(NEG_ELBO_WRONG))
def test_negative_elbo_checker_names_the_mistake(mistake):
    with pytest.raises(AssertionError, match=mistake):
        checks.check_negative_elbo(NEG_ELBO_WRONG[mistake])


# ----------------------------------------------------------------------------- IWAE estimate


def iwae_right(model, x, k):
    return torch.logsumexp(model.log_importance_weights(x, k), dim=0) - math.log(k)


IWAE_WRONG = {
    "the 1/k is missing": lambda m, x, k: torch.logsumexp(m.log_importance_weights(x, k), 0),
    "averaged the log-weights": lambda m, x, k: m.log_importance_weights(x, k).mean(0),
    "wrong sign": lambda m, x, k: -iwae_right(m, x, k),
    "largest log-weight \\(max\\);": lambda m, x, k: m.log_importance_weights(x, k).max(0).values,
    "largest log-weight \\(max\\) minus log k": lambda m, x, k: m.log_importance_weights(x, k).max(0).values - math.log(k),
    "reduce over dim=0": lambda m, x, k: torch.logsumexp(m.log_importance_weights(x, k), 1) - math.log(k),
    "underflows": lambda m, x, k: torch.log(m.log_importance_weights(x, k).exp().mean(0)),
}


def test_iwae_checker_passes_the_reference(capsys):
    checks.check_iwae_estimate(iwae_right)
    assert capsys.readouterr().out.startswith("✓")


@pytest.mark.parametrize("mistake", list(IWAE_WRONG))
def test_iwae_checker_names_the_mistake(mistake):
    with pytest.raises(AssertionError, match=mistake):
        checks.check_iwae_estimate(IWAE_WRONG[mistake])


def test_iwae_reference_agrees_with_the_library_on_a_real_model():
    torch.manual_seed(0)
    vae = models.VAE(models.VAEConfig(input_dim=12, hidden_dim=8, latent_dim=2))
    x = torch.bernoulli(torch.full((4, 12), 0.3))
    torch.manual_seed(1)
    mine = iwae_right(vae, x, 10)
    torch.manual_seed(1)
    assert torch.allclose(mine, losses.iwae_bound(vae, x, k=10), atol=1e-5)


def test_the_rng_guard_notices_a_draw(global_rng_untouched):
    with pytest.raises(AssertionError, match="global torch RNG"):
        with global_rng_untouched():
            torch.rand(1)


# ----------------------------------------------------------------------------- the ✗ line never gives the formula

# what each exercise asks the learner to derive, as it would appear in a message
GIVEAWAYS = {
    "gaussian_kl": ("1 + logvar - mu^2", "-1/2 * sum"),
    "reparameterize": ("exp(logvar / 2)", "mu + sigma * eps", "mu + exp"),
    "negative_elbo": ("-log p(x|z) + KL", "randn_like(mu)"),
    "iwae_estimate": ("logsumexp",),
}


@pytest.mark.parametrize("exercise, checker, wrong", [
    ("gaussian_kl", checks.check_gaussian_kl, KL_WRONG),
    ("reparameterize", checks.check_reparameterize, REPARAM_WRONG),
    ("negative_elbo", checks.check_negative_elbo, NEG_ELBO_WRONG),
    ("iwae_estimate", checks.check_iwae_estimate, IWAE_WRONG),
])
def test_no_message_gives_the_exercise_formula(exercise, checker, wrong):
    for mistake, answer in wrong.items():
        with pytest.raises(AssertionError) as failure:
            checker(answer)
        for giveaway in GIVEAWAYS[exercise]:
            assert giveaway not in str(failure.value), (mistake, str(failure.value))


def test_no_active_units_message_gives_the_statistic():
    answers = [lambda mu, t: mu.var(0) > t, lambda mu, t: int((mu.mean(0).abs() > t).sum()),
               lambda mu, t: int((mu.abs().max(0).values > t).sum())]
    for answer in answers:
        with pytest.raises(AssertionError) as failure:
            checks.check_active_units(answer)
        for giveaway in ("var(", "Var_x", "variance > threshold", "variance of mu"):
            assert giveaway not in str(failure.value), str(failure.value)
