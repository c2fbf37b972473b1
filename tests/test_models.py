"""The reparameterisation trick and the MLP VAE (both likelihoods) against torch.distributions and autograd."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

from vae_helpers import data, losses, models, train

LIKELIHOODS = ["bernoulli", "gaussian"]


def small_vae(latent_dim=2, likelihood="bernoulli", depth=1, input_dim=784):
    torch.manual_seed(0)
    return models.VAE(models.VAEConfig(input_dim=input_dim, hidden_dim=32, latent_dim=latent_dim, depth=depth,
                                       likelihood=likelihood))


# ----------------------------------------------------------------------------- reparameterize


@pytest.mark.parametrize("shape", [(1, 1), (4, 2), (3, 20)])
@pytest.mark.parametrize("num_samples", [None, 1, 7])
def test_reparameterize_shapes(shape, num_samples):
    z = models.reparameterize(torch.zeros(shape), torch.zeros(shape), num_samples)
    assert z.shape == (shape if num_samples is None else (num_samples, *shape))


def test_reparameterize_draws_from_the_right_gaussian():
    mu, logvar = torch.tensor([[0.5, -1.0, 2.0]]), torch.tensor([[-1.0, 0.0, 1.5]])
    z = models.reparameterize(mu, logvar, num_samples=100_000)[:, 0]  # (S, 3)
    assert torch.allclose(z.mean(0), mu[0], atol=0.03)
    assert torch.allclose(z.var(0), logvar[0].exp(), rtol=0.03)
    # Kolmogorov-Smirnov distance to the true normal CDF of each dimension
    for d in range(3):
        values, _ = torch.sort(z[:, d])
        cdf = Normal(mu[0, d], torch.exp(0.5 * logvar[0, d])).cdf(values)
        empirical = torch.arange(1, len(values) + 1) / len(values)
        assert (cdf - empirical).abs().max() < 0.01


def test_reparameterize_lets_gradients_through():
    mu = torch.randn(4, 3, requires_grad=True)
    logvar = torch.randn(4, 3, requires_grad=True)
    z = models.reparameterize(mu, logvar)
    d_mu, d_logvar = torch.autograd.grad(z.sum(), (mu, logvar))
    assert torch.allclose(d_mu, torch.ones_like(mu))
    assert torch.allclose(d_logvar, 0.5 * (z - mu).detach())  # d/dlogvar of exp(logvar / 2) * eps


def test_reparameterize_gradient_estimate_matches_the_analytic_gradient():
    # d/dmu E[z^2] = 2 mu and d/dlogvar E[z^2] = exp(logvar), with E[z^2] = mu^2 + exp(logvar)
    mu = torch.tensor([0.7], requires_grad=True)
    logvar = torch.tensor([-0.4], requires_grad=True)
    torch.manual_seed(0)
    models.reparameterize(mu, logvar, num_samples=200_000).pow(2).mean().backward()
    assert torch.allclose(mu.grad, 2 * mu.detach(), atol=0.02)
    assert torch.allclose(logvar.grad, logvar.detach().exp(), atol=0.02)


@pytest.mark.parametrize("call, error", [
    (lambda: models.reparameterize([0.0], torch.zeros(1)), TypeError),
    (lambda: models.reparameterize(torch.zeros(2, 3), torch.zeros(3, 2)), ValueError),
    (lambda: models.reparameterize(torch.zeros(2), torch.zeros(2), num_samples=0), ValueError),
    (lambda: models.reparameterize(torch.zeros(2), torch.zeros(2), num_samples=True), ValueError),
    (lambda: models.VAEConfig(latent_dim=0), ValueError),
    (lambda: models.VAEConfig(hidden_dim=2.5), ValueError),
    (lambda: models.VAEConfig(likelihood="poisson"), ValueError),
    (lambda: models.VAE().encode(torch.zeros(3, 100)), ValueError),
    (lambda: models.VAE().encode([0.0]), TypeError),
    (lambda: models.VAE().log_likelihood(torch.zeros(3, 784), torch.zeros(4, 2)), ValueError),
])
def test_bad_inputs_raise_clear_errors(call, error):
    with pytest.raises(error):
        call()


# ----------------------------------------------------------------------------- VAE


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("latent_dim", [1, 2, 20])
@pytest.mark.parametrize("depth", [1, 2])
def test_vae_shapes(likelihood, latent_dim, depth):
    model = small_vae(latent_dim, likelihood, depth)
    x = torch.rand(5, 784)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, latent_dim)
    assert model.encode(x.reshape(5, 1, 28, 28))[0].shape == (5, latent_dim)
    out = model.decode(mu)
    if likelihood == "bernoulli":
        assert out.shape == (5, 784)
    else:
        assert isinstance(out, tuple) and all(o.shape == (5, 784) for o in out)
    x_mean, mu2, logvar2 = model(x)
    assert x_mean.shape == (5, 784) and mu2.shape == (5, latent_dim) and logvar2.shape == (5, latent_dim)
    assert model.log_importance_weights(x, 6).shape == (6, 5)
    assert model.sample_images(torch.randn(3, latent_dim)).shape == (3, 784)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
@pytest.mark.parametrize("num_samples", [None, 3])
def test_vae_log_likelihood_matches_torch_distributions(likelihood, num_samples):
    model = small_vae(3, likelihood)
    x = torch.bernoulli(torch.full((4, 784), 0.2))
    z = torch.randn((4, 3) if num_samples is None else (num_samples, 4, 3))
    with torch.no_grad():
        got = model.log_likelihood(x, z)
        out = model.decoder(z)
        if likelihood == "bernoulli":
            expected = Bernoulli(logits=out).log_prob(x).sum(-1)
        else:
            mean, logvar = model.decode(z.reshape(-1, 3))
            dist = Normal(mean.reshape(*z.shape[:-1], 784), torch.exp(0.5 * logvar).reshape(*z.shape[:-1], 784))
            expected = dist.log_prob(x).sum(-1)
    assert got.shape == z.shape[:-1]
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-3)


def test_gaussian_decoder_mean_is_a_pixel_value_and_its_log_variance_is_floored():
    model = small_vae(2, "gaussian")
    with torch.no_grad():
        for layer in model.decoder.net:
            if isinstance(layer, torch.nn.Linear):
                layer.weight.mul_(50)  # push the raw outputs to extremes
        mean, logvar = model.decode(torch.randn(100, 2))
    assert 0 <= mean.min() and mean.max() <= 1
    assert logvar.min() >= model.min_logvar and torch.isfinite(logvar).all()


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_mean_image_and_samples(likelihood):
    model = small_vae(2, likelihood)
    z = torch.randn(10, 2)
    with torch.no_grad():
        mean = model.mean_image(z)
        samples = torch.stack([model.sample_images(z) for _ in range(300)])  # (300, 10, 784)
    assert 0 <= mean.min() and mean.max() <= 1
    if likelihood == "bernoulli":
        assert set(samples.unique().tolist()) <= {0.0, 1.0}
    standard_error = samples.std(0) / math.sqrt(samples.shape[0])
    assert ((samples.mean(0) - mean).abs() <= 5.5 * standard_error + 1e-3).all()


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_log_importance_weights_are_log_p_x_z_minus_log_q(likelihood):
    model = small_vae(2, likelihood)
    x = torch.bernoulli(torch.full((3, 784), 0.2))
    with torch.no_grad():
        torch.manual_seed(5)
        log_w = model.log_importance_weights(x, 4)
        torch.manual_seed(5)
        mu, logvar = model.encode(x)
        z = models.reparameterize(mu, logvar, 4)
        q = Normal(mu, torch.exp(0.5 * logvar))
        expected = model.log_likelihood(x, z) + Normal(0.0, 1.0).log_prob(z).sum(-1) - q.log_prob(z).sum(-1)
    assert torch.allclose(log_w, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("likelihood", LIKELIHOODS)
def test_a_few_steps_of_fit_raise_the_elbo(likelihood):
    x, _ = data.load_mnist("train", limit=512)
    model = small_vae(2, likelihood)
    binarize = data.stochastic_binarize
    x_eval = binarize(x, generator=torch.Generator().manual_seed(0))
    before = train.evaluate(model, losses.vae_loss, x_eval)["loss"]
    train.fit(model, losses.vae_loss, x, num_epochs=3, batch_size=64, transform=binarize, progress=False, seed=0)
    after = train.evaluate(model, losses.vae_loss, x_eval)["loss"]
    assert after < before - 20


def test_checkpoint_round_trip(tmp_path):
    model = small_vae(2, "gaussian")
    path = train.save_checkpoint(tmp_path / "vae.pt", model, config=model.config)
    torch.manual_seed(1)
    other = models.VAE(models.VAEConfig(hidden_dim=32, latent_dim=2, likelihood="gaussian"))
    meta = train.load_checkpoint(path, other)
    assert models.VAEConfig(**meta["config"]) == model.config
    z = torch.randn(5, 2)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.decode(z), other.decode(z)))
    with pytest.raises(ValueError, match="does not match"):
        train.load_checkpoint(path, small_vae(3, "gaussian"))


def test_vae_base_is_the_interface_other_models_build_on():
    class Tiny(models.VAEBase):
        def __init__(self):
            super().__init__()
            self.latent_dim = 2
            self.enc = torch.nn.Linear(6, 4)
            self.dec = torch.nn.Linear(2, 6)

        def encode(self, x):
            return self.enc(x).chunk(2, dim=-1)

        def decode(self, z):
            return self.dec(z)

    model = Tiny()
    x = torch.bernoulli(torch.full((3, 6), 0.5))
    assert losses.iwae_bound(model, x, k=5).shape == (3,)
    assert losses.vae_loss(model, x, num_samples=2)["loss"].dim() == 0
    assert model.mean_image(torch.zeros(1, 2)).shape == (1, 6)
    assert math.isfinite(losses.vae_loss(model, x)["kl"].item())


# ----------------------------------------------------------------------------- clear errors for bad input (issue 17)


def _models_784():
    return [models.Autoencoder(models.AEConfig(hidden_dim=8, latent_dim=3)),
            models.VAE(models.VAEConfig(hidden_dim=8, latent_dim=3)),
            models.VAE(models.VAEConfig(hidden_dim=8, latent_dim=3, likelihood="gaussian"))]


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("x, err, match", [
    (torch.randint(0, 256, (4, 784), dtype=torch.uint8), TypeError,
     r"expected images of shape \(B, 784\) or \(B, 1, 28, 28\) with values in \[0, 1\], got torch.uint8 pixels in \[0, 255\]: divide by 255"),
    (torch.zeros(4, 3, 28, 28), ValueError, r"expected images of shape \(B, 784\).*got shape \(4, 3, 28, 28\)"),
    (torch.zeros(4, 32, 32), ValueError, r"got shape \(4, 32, 32\)"),
    (torch.zeros(0, 784), ValueError, "empty batch"),
    (torch.zeros(784), ValueError, r"got shape \(784,\)"),
])
def test_encoders_name_what_they_expected(index, x, err, match):
    with pytest.raises(err, match=match):
        _models_784()[index].encode(x)


@pytest.mark.parametrize("index", [0, 1, 2])
@pytest.mark.parametrize("z, err, match", [
    (torch.zeros(4, 5), ValueError, r"expected codes z of shape \(B, 3\), got shape \(4, 5\).*latent_dim is 3"),
    (torch.zeros(3), ValueError, r"shape \(3,\)"),
    (torch.zeros(0, 3), ValueError, "empty batch"),
    (torch.zeros(4, 3, dtype=torch.long), TypeError, "float codes"),
])
def test_decoders_name_what_they_expected(index, z, err, match):
    with pytest.raises(err, match=match):
        _models_784()[index].decode(z)


def test_models_take_flat_and_square_float_images():
    for model in _models_784():
        for x in (torch.rand(2, 784), torch.rand(2, 1, 28, 28), torch.rand(2, 28, 28), torch.rand(2, 784, dtype=torch.float64).float()):
            out = model.encode(x)
            codes = out if isinstance(out, torch.Tensor) else out[0]
            assert codes.shape == (2, 3)
            model.decode(codes)


def test_log_likelihood_names_uint8_images():
    model = models.VAE(models.VAEConfig(hidden_dim=8, latent_dim=3))
    with pytest.raises(TypeError, match="divide by 255"):
        model.log_likelihood(torch.randint(0, 256, (4, 784), dtype=torch.uint8), torch.zeros(4, 3))
