"""Log-likelihoods, the Gaussian KL, the ELBO and the IWAE bound against independent oracles."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, MultivariateNormal, Normal, kl_divergence

from vae_helpers import losses, models

SHAPES = [(1, 1), (5, 2), (7, 20), (3, 4, 6)]


def draw(shape, seed=0, scale=1.0):
    return scale * torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# ----------------------------------------------------------------------------- KL


@pytest.mark.parametrize("shape", SHAPES)
def test_gaussian_kl_matches_torch_distributions(shape):
    mu, logvar = draw(shape, 1), draw(shape, 2, scale=1.5)
    expected = kl_divergence(Normal(mu, torch.exp(0.5 * logvar)), Normal(0.0, 1.0)).sum(-1)
    got = losses.gaussian_kl(mu, logvar)
    assert got.shape == shape[:-1]
    assert torch.allclose(got, expected)
    assert torch.allclose(losses.gaussian_kl_per_dim(mu, logvar).sum(-1), got)
    assert (losses.gaussian_kl_per_dim(mu, logvar) >= 0).all()


@pytest.mark.parametrize("latent_dim", [1, 2, 8])
def test_gaussian_kl_matches_a_monte_carlo_estimate(latent_dim):
    mu, logvar = draw((3, latent_dim), 3), draw((3, latent_dim), 4, scale=0.7)
    z = models.reparameterize(mu, logvar, num_samples=200_000)  # (S, 3, D)
    log_q = losses.gaussian_log_likelihood(z, mu, logvar)
    log_p = losses.standard_normal_log_density(z)
    estimate = (log_q - log_p).mean(0)
    standard_error = (log_q - log_p).std(0) / math.sqrt(z.shape[0])
    assert ((estimate - losses.gaussian_kl(mu, logvar)).abs() < 5 * standard_error + 1e-3).all()


def test_gaussian_kl_is_zero_at_the_prior_and_positive_elsewhere():
    assert torch.equal(losses.gaussian_kl(torch.zeros(4, 3), torch.zeros(4, 3)), torch.zeros(4))
    assert (losses.gaussian_kl(draw((50, 3), 5), draw((50, 3), 6)) > 0).all()


# ----------------------------------------------------------------------------- log-likelihoods


@pytest.mark.parametrize("shape", SHAPES)
def test_gaussian_log_likelihood_matches_torch_distributions(shape):
    x, mu, logvar = draw(shape, 7), draw(shape, 8), draw(shape, 9)
    expected = Normal(mu, torch.exp(0.5 * logvar)).log_prob(x).sum(-1)
    assert torch.allclose(losses.gaussian_log_likelihood(x, mu, logvar), expected)


def test_gaussian_log_likelihood_broadcasts_over_samples():
    x, mu, logvar = draw((4, 6), 1), draw((3, 4, 6), 2), draw((6,), 3)
    expected = Normal(mu, torch.exp(0.5 * logvar)).log_prob(x).sum(-1)
    assert torch.allclose(losses.gaussian_log_likelihood(x, mu, logvar), expected)


@pytest.mark.parametrize("shape", SHAPES)
def test_standard_normal_log_density_matches_torch_distributions(shape):
    z = draw(shape, 10)
    assert torch.allclose(losses.standard_normal_log_density(z), Normal(0.0, 1.0).log_prob(z).sum(-1))


@pytest.mark.parametrize("shape", SHAPES)
def test_bernoulli_log_likelihood_matches_torch_distributions(shape):
    logits = draw(shape, 11, scale=3.0)
    x = torch.bernoulli(torch.full(shape, 0.3, dtype=torch.float64), generator=torch.Generator().manual_seed(0))
    expected = Bernoulli(logits=logits).log_prob(x).sum(-1)
    assert torch.allclose(losses.bernoulli_log_likelihood(x, logits), expected)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    assert torch.allclose(losses.bernoulli_log_likelihood(x, logits), -bce)


def test_bernoulli_log_likelihood_is_finite_for_extreme_logits():
    logits = torch.tensor([[-200.0, 200.0, 0.0]])
    x = torch.tensor([[1.0, 0.0, 1.0]])
    got = losses.bernoulli_log_likelihood(x, logits)
    assert torch.isfinite(got).all()
    assert torch.allclose(got, torch.tensor([-400.0 - math.log(2)]))
    naive = torch.sum(x * torch.log(torch.sigmoid(logits)) + (1 - x) * torch.log(1 - torch.sigmoid(logits)), -1)
    assert not torch.isfinite(naive).all()  # why we work with logits


def test_bernoulli_log_likelihood_accepts_grey_targets():
    logits, x = draw((2, 5), 12), torch.rand(2, 5, dtype=torch.float64)
    p = torch.sigmoid(logits)
    expected = torch.sum(x * torch.log(p) + (1 - x) * torch.log(1 - p), -1)
    assert torch.allclose(losses.bernoulli_log_likelihood(x, logits), expected)


# ----------------------------------------------------------------------------- ELBO and vae_loss


def test_elbo_terms_and_beta():
    log_px, kl = torch.tensor([-10.0, -20.0]), torch.tensor([1.0, 3.0])
    terms = losses.elbo(log_px, kl, beta=0.5)
    assert torch.equal(terms["elbo"], torch.tensor([-11.0, -23.0]))
    assert torch.equal(terms["reconstruction"], torch.tensor([10.0, 20.0]))
    assert torch.equal(terms["kl"], kl)
    assert torch.equal(terms["loss"], torch.tensor([10.5, 21.5]))
    assert torch.equal(losses.elbo(log_px, kl)["loss"], -losses.elbo(log_px, kl)["elbo"])


@pytest.mark.parametrize("latent_dim", [1, 2, 20])
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_vae_loss_is_the_batch_mean_of_the_elbo_terms(latent_dim, likelihood):
    model = models.VAE(models.VAEConfig(input_dim=10, hidden_dim=8, latent_dim=latent_dim, likelihood=likelihood))
    x = torch.bernoulli(torch.full((6, 10), 0.5))
    torch.manual_seed(0)
    terms = losses.vae_loss(model, x, beta=2.0)
    torch.manual_seed(0)
    mu, logvar = model.encode(x)
    z = models.reparameterize(mu, logvar, 1)
    log_px = model.log_likelihood(x, z).mean(0)
    kl = losses.gaussian_kl(mu, logvar)
    assert set(terms) == {"loss", "elbo", "reconstruction", "kl"}
    assert all(v.dim() == 0 for v in terms.values())
    assert torch.allclose(terms["loss"], (-log_px + 2.0 * kl).mean())
    assert torch.allclose(terms["elbo"], (log_px - kl).mean())


def test_more_monte_carlo_samples_reduce_the_variance_of_the_loss():
    torch.manual_seed(0)
    model = models.VAE(models.VAEConfig(input_dim=10, hidden_dim=8, latent_dim=2))
    x = torch.bernoulli(torch.full((4, 10), 0.5))
    with torch.no_grad():
        one = torch.stack([losses.vae_loss(model, x, num_samples=1)["loss"] for _ in range(200)])
        ten = torch.stack([losses.vae_loss(model, x, num_samples=10)["loss"] for _ in range(200)])
    assert ten.var() < 0.3 * one.var()
    assert abs(ten.mean() - one.mean()) < 4 * (one.std() / math.sqrt(200))


# ----------------------------------------------------------------------------- IWAE


class LinearGaussianVAE(models.VAEBase):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I) with orthogonal columns of W; q(z|x) is the exact posterior."""

    likelihood = "gaussian"

    def __init__(self, input_dim: int = 6, latent_dim: int = 2, s: float = 0.5):
        super().__init__()
        self.latent_dim = latent_dim
        q, _ = torch.linalg.qr(draw((input_dim, latent_dim), 20))
        self.W = q * torch.arange(1.0, latent_dim + 1, dtype=torch.float64)  # W^T W = diag(1, 4, ...)
        self.b = draw((input_dim,), 21)
        self.s2 = s**2
        self.post_var = 1.0 / (1.0 + (self.W**2).sum(0) / self.s2)  # (D,)

    def encode(self, x):
        mu = ((x - self.b) @ self.W / self.s2) * self.post_var  # (B, D)
        return mu, torch.log(self.post_var).expand_as(mu)

    def decode(self, z):
        mean = z @ self.W.T + self.b
        return mean, torch.full_like(mean, math.log(self.s2))

    def exact_log_px(self, x):
        cov = self.W @ self.W.T + self.s2 * torch.eye(self.W.shape[0], dtype=torch.float64)
        return MultivariateNormal(self.b, cov).log_prob(x)


def test_iwae_and_elbo_are_exact_when_q_is_the_true_posterior():
    model = LinearGaussianVAE()
    x = draw((5, 6), 22, scale=2.0)
    exact = model.exact_log_px(x)
    for k in (1, 10, 100):
        assert torch.allclose(losses.iwae_bound(model, x, k=k), exact, atol=1e-8)
    mu, logvar = model.encode(x)
    z = models.reparameterize(mu, logvar, 20_000)
    elbo = model.log_likelihood(x, z).mean(0) - losses.gaussian_kl(mu, logvar)
    assert torch.allclose(elbo, exact, atol=0.05)


@pytest.mark.parametrize("latent_dim", [2, 5])
def test_iwae_rises_with_k_and_is_never_below_the_elbo_on_average(latent_dim):
    torch.manual_seed(0)
    model = models.VAE(models.VAEConfig(input_dim=20, hidden_dim=16, latent_dim=latent_dim))
    x = torch.bernoulli(torch.full((30, 20), 0.3))
    with torch.no_grad():
        elbo = -losses.vae_loss(model, x, num_samples=2000)["loss"]
    ones = torch.stack([losses.iwae_bound(model, x, k=1) for _ in range(300)])  # (300, 30)
    assert abs(ones.mean() - elbo) < 4 * ones.std() / math.sqrt(ones.numel())  # k = 1 is the ELBO estimate
    means = {k: torch.stack([losses.iwae_bound(model, x, k=k) for _ in range(20)]).mean() for k in (5, 50, 500)}
    assert elbo - 0.05 < means[5] < means[50] < means[500]


def test_iwae_bound_is_computed_in_chunks_and_restores_training_mode():
    torch.manual_seed(0)
    model = models.VAE(models.VAEConfig(input_dim=10, hidden_dim=8, latent_dim=2))
    x = torch.bernoulli(torch.full((7, 10), 0.5))
    model.train()
    out = losses.iwae_bound(model, x, k=3, batch_size=2)
    assert out.shape == (7,) and model.training and not out.requires_grad


# ----------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("call, error", [
    (lambda: losses.gaussian_kl([0.0], torch.zeros(1)), TypeError),
    (lambda: losses.gaussian_kl(torch.zeros(2, 3), torch.zeros(2, 4)), ValueError),
    (lambda: losses.gaussian_log_likelihood(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2, 4)), ValueError),
    (lambda: losses.gaussian_log_likelihood(torch.zeros(3), 0.0, torch.zeros(3)), TypeError),
    (lambda: losses.bernoulli_log_likelihood(torch.zeros(2, 784), torch.zeros(2, 10)), ValueError),
    (lambda: losses.bernoulli_log_likelihood(None, torch.zeros(2)), TypeError),
    (lambda: losses.elbo(torch.zeros(3), torch.zeros(4)), ValueError),
    (lambda: losses.elbo(torch.zeros(3), torch.zeros(3), beta=-1.0), ValueError),
    (lambda: losses.iwae_bound(models.VAE(), torch.zeros(2, 784), k=0), ValueError),
    (lambda: losses.iwae_bound(models.VAE(), torch.zeros(2, 784), k=2.5), ValueError),
    (lambda: losses.iwae_bound(models.VAE(), torch.zeros(2, 784), k=2, batch_size=0), ValueError),
    (lambda: losses.vae_loss(models.VAE(), torch.zeros(2, 784), num_samples=0), ValueError),
])
def test_bad_inputs_raise_clear_errors(call, error):
    with pytest.raises(error):
        call()


def test_iwae_bound_progress_bar_counts_every_input_and_changes_nothing(capsys):
    from vae_helpers.models import VAE, VAEConfig

    torch.manual_seed(0)
    model, x = VAE(VAEConfig(latent_dim=2, hidden_dim=8)), torch.rand(7, 784)
    torch.manual_seed(1)
    quiet = losses.iwae_bound(model, x, k=5, batch_size=3)
    torch.manual_seed(1)
    shown = losses.iwae_bound(model, x, k=5, batch_size=3, progress=True)
    assert torch.equal(quiet, shown)
    err = capsys.readouterr().err
    assert "IWAE bound, k = 5" in err and "/7 " in err  # a bar over the 7 inputs


# ----------------------------------------------------------------------------- silently wrong input (issue 17)


@pytest.mark.parametrize("x, hint", [
    (torch.randint(0, 256, (4, 784)).float(), "divide by 255"),
    (torch.rand(4, 784) * 2 - 1, r"\(x \+ 1\) / 2"),
    (torch.full((4, 784), 3000.0), "pixel intensities or 0/1"),
    (torch.full((4, 784), float("nan")), "NaN"),
])
def test_bernoulli_likelihood_refuses_data_outside_the_unit_interval(x, hint):
    with pytest.raises(ValueError, match=r"expected x with values in \[0, 1\].*" + hint):
        losses.bernoulli_log_likelihood(x, torch.zeros(4, 784))


def test_bernoulli_likelihood_takes_every_valid_target():
    logits = draw((3, 5), 1)
    for x in (torch.rand(3, 5, dtype=torch.float64), torch.zeros(3, 5, dtype=torch.float64),
              torch.ones(3, 5, dtype=torch.float64), torch.randint(0, 2, (3, 5)).double(), torch.rand(3, 5) > 0.5):
        expected = -torch.nn.functional.binary_cross_entropy_with_logits(logits, x.double(), reduction="none").sum(-1)
        assert torch.allclose(losses.bernoulli_log_likelihood(x, logits).double(), expected)


def test_a_vae_trained_on_0_255_images_says_what_to_do():
    model = models.VAE(models.VAEConfig(latent_dim=2, hidden_dim=8))
    with pytest.raises(ValueError, match="divide by 255"):
        losses.vae_loss(model, torch.randint(0, 256, (5, 784)).float())


@pytest.mark.parametrize("beta, err", [(float("nan"), ValueError), (float("inf"), ValueError), (True, TypeError),
                                       ("1", TypeError)])
def test_elbo_refuses_a_beta_that_is_not_a_finite_number(beta, err):
    with pytest.raises(err, match="beta must be"):
        losses.elbo(torch.zeros(3), torch.zeros(3), beta=beta)


def test_iwae_bound_moves_each_chunk_to_the_models_device():
    class OnMeta(torch.nn.Module):
        """Parameters on the 'meta' device, standing in for a GPU; log-weights come back on the CPU."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.empty(1, device="meta"))
            self.seen = []

        def log_importance_weights(self, x, k):
            self.seen.append(x.device.type)
            return torch.zeros(k, x.shape[0])  # (k, b)

    model = OnMeta()
    bound = losses.iwae_bound(model, torch.rand(7, 784), k=4, batch_size=3)
    assert model.seen == ["meta"] * 3
    assert bound.device.type == "cpu" and bound.shape == (7,) and torch.allclose(bound, torch.zeros(7))


def test_rate_distortion_adds_up_to_the_negative_elbo_and_splits_by_dimension():
    torch.manual_seed(0)
    model = models.VAE(models.VAEConfig(latent_dim=3, hidden_dim=16))
    x = torch.bernoulli(torch.rand(10, 784))
    out = losses.rate_distortion(model, x, batch_size=4)  # chunks of 4, 4 and 2
    assert set(out) == {"distortion", "rate", "rate_per_dim"} and out["rate_per_dim"].shape == (3,)
    mu, logvar = model.encode(x)
    assert torch.allclose(out["rate_per_dim"], losses.gaussian_kl_per_dim(mu, logvar).mean(0).detach(), atol=1e-5)
    assert torch.isclose(out["rate"], out["rate_per_dim"].sum(), atol=1e-5)
    torch.manual_seed(1)
    first = losses.rate_distortion(model, x, batch_size=10)
    torch.manual_seed(1)
    loss = losses.vae_loss(model, x)
    assert torch.isclose(first["distortion"], loss["reconstruction"].detach(), atol=1e-4)
    assert model.training


def test_rate_distortion_rejects_bad_input():
    model = models.VAE(models.VAEConfig(latent_dim=2, hidden_dim=8))
    with pytest.raises(ValueError, match="at least one"):
        losses.rate_distortion(model, torch.zeros(0, 784))
    with pytest.raises(ValueError, match="batch_size"):
        losses.rate_distortion(model, torch.zeros(2, 784), batch_size=0)
